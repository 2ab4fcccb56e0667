/* Message framing, header coding and XDR payloads (WIRE.md sections 1-2). */
#include "rpc/rpc-message.h"

#include <string.h>

#include "util/error.h"

G_DEFINE_QUARK(ferry-remote-error-quark, ferry_remote_error)

RpcMessage *rpc_message_new(gsize payload_capacity)
{
    RpcMessage *msg = g_new0(RpcMessage, 1);
    msg->cap = RPC_PAYLOAD_OFFSET + payload_capacity;
    msg->buf = g_malloc(msg->cap);
    return msg;
}

struct RpcMessagePool {
    gint ref;
    gsize capacity; /* payload bytes */
    guint max_cached;
    GMutex lock;
    GPtrArray *cached; /* free messages, used as a stack */
    guint64 allocated;
};

RpcMessagePool *rpc_message_pool_new(gsize payload_capacity, guint max_cached)
{
    RpcMessagePool *pool = g_new0(RpcMessagePool, 1);
    pool->ref = 1;
    pool->capacity = payload_capacity;
    pool->max_cached = max_cached;
    g_mutex_init(&pool->lock);
    pool->cached = g_ptr_array_new();
    return pool;
}

RpcMessagePool *rpc_message_pool_ref(RpcMessagePool *pool)
{
    g_atomic_int_inc(&pool->ref);
    return pool;
}

/* Gives back an external payload's owner (rpc_message_seal_external). */
static void release_external(RpcMessage *msg)
{
    if (msg->ext_release)
        msg->ext_release(msg->ext_owner);
    msg->ext_payload = NULL;
    msg->ext_release = NULL;
    msg->ext_owner = NULL;
}

static void message_free_now(RpcMessage *msg)
{
    g_free(msg->buf);
    g_free(msg);
}

void rpc_message_pool_unref(RpcMessagePool *pool)
{
    if (!pool || !g_atomic_int_dec_and_test(&pool->ref))
        return;
    for (guint i = 0; i < pool->cached->len; i++)
        message_free_now(pool->cached->pdata[i]);
    g_ptr_array_free(pool->cached, TRUE);
    g_mutex_clear(&pool->lock);
    g_free(pool);
}

gsize rpc_message_pool_get_capacity(RpcMessagePool *pool)
{
    return pool->capacity;
}

guint64 rpc_message_pool_get_allocated(RpcMessagePool *pool)
{
    g_mutex_lock(&pool->lock);
    guint64 n = pool->allocated;
    g_mutex_unlock(&pool->lock);
    return n;
}

RpcMessage *rpc_message_pool_take(RpcMessagePool *pool)
{
    g_mutex_lock(&pool->lock);
    RpcMessage *msg = pool->cached->len ? g_ptr_array_steal_index_fast(pool->cached, pool->cached->len - 1)
                                        : NULL;
    if (!msg)
        pool->allocated++;
    g_mutex_unlock(&pool->lock);
    if (!msg) {
        msg = g_new0(RpcMessage, 1);
        msg->cap = RPC_PAYLOAD_OFFSET + pool->capacity;
        msg->buf = g_malloc(msg->cap);
    } else {
        memset(&msg->header, 0, sizeof(msg->header));
    }
    msg->len = 0;
    msg->completes_request = FALSE;
    msg->pool = rpc_message_pool_ref(pool);
    return msg;
}

void rpc_message_free(RpcMessage *msg)
{
    if (!msg)
        return;
    release_external(msg);
    RpcMessagePool *pool = msg->pool;
    if (pool) {
        msg->pool = NULL;
        g_mutex_lock(&pool->lock);
        gboolean keep = pool->cached->len < pool->max_cached &&
                        msg->cap >= RPC_PAYLOAD_OFFSET + pool->capacity;
        if (keep)
            g_ptr_array_add(pool->cached, msg);
        g_mutex_unlock(&pool->lock);
        rpc_message_pool_unref(pool);
        if (keep)
            return;
    }
    message_free_now(msg);
}

void rpc_message_queue_clear(GQueue *queue)
{
    RpcMessage *msg;
    while ((msg = rpc_message_queue_pop(queue)))
        rpc_message_free(msg);
}

void rpc_message_reserve(RpcMessage *msg, gsize payload_len)
{
    gsize need = RPC_PAYLOAD_OFFSET + payload_len;
    if (need <= msg->cap)
        return;
    msg->buf = g_realloc(msg->buf, need);
    msg->cap = need;
}

static inline void put_u32(guint8 *p, guint32 v)
{
    v = GUINT32_TO_BE(v);
    memcpy(p, &v, 4);
}

static inline guint32 get_u32(const guint8 *p)
{
    guint32 v;
    memcpy(&v, p, 4);
    return GUINT32_FROM_BE(v);
}

static void write_header(RpcMessage *msg)
{
    guint8 *p = msg->buf;
    put_u32(p, (guint32)msg->len);
    put_u32(p + 4, msg->header.prog);
    put_u32(p + 8, msg->header.vers);
    put_u32(p + 12, (guint32)msg->header.proc);
    put_u32(p + 16, msg->header.type);
    put_u32(p + 20, msg->header.serial);
    put_u32(p + 24, msg->header.status);
}

void rpc_message_seal(RpcMessage *msg, gsize payload_len)
{
    g_assert(RPC_PAYLOAD_OFFSET + payload_len <= msg->cap);
    g_assert(!msg->ext_payload);
    msg->len = RPC_PAYLOAD_OFFSET + payload_len;
    write_header(msg);
}

void rpc_message_seal_external(RpcMessage *msg, const guint8 *payload, gsize payload_len,
                               gpointer (*ref)(gpointer owner), void (*release)(gpointer owner),
                               gpointer owner)
{
    g_assert(RPC_PAYLOAD_OFFSET <= msg->cap);
    release_external(msg);
    msg->ext_payload = payload;
    msg->ext_owner = ref(owner);
    msg->ext_release = release;
    msg->len = RPC_PAYLOAD_OFFSET + payload_len;
    write_header(msg);
}

int rpc_message_wire_iov(const RpcMessage *msg, struct iovec *iov)
{
    iov[0].iov_base = msg->buf;
    if (!msg->ext_payload) {
        iov[0].iov_len = msg->len;
        return 1;
    }
    iov[0].iov_len = RPC_PAYLOAD_OFFSET;
    iov[1].iov_base = (void *)msg->ext_payload;
    iov[1].iov_len = msg->len - RPC_PAYLOAD_OFFSET;
    return 2;
}

gboolean rpc_message_encode(RpcMessage *msg, xdrproc_t filter, void *data, GError **error)
{
    /* XDR cannot tell the size up front: try, and grow the buffer on overflow. */
    for (;;) {
        XDR xdr;
        gsize room = msg->cap - RPC_PAYLOAD_OFFSET;
        xdrmem_create(&xdr, (char *)rpc_message_payload(msg), (u_int)room, XDR_ENCODE);
        gboolean ok = filter(&xdr, data, 0);
        gsize used = xdr_getpos(&xdr);
        xdr_destroy(&xdr);
        if (ok) {
            rpc_message_seal(msg, used);
            return TRUE;
        }
        if (room >= RPC_MESSAGE_PAYLOAD_MAX) {
            g_set_error(error, FERRY_ERROR, FERRY_ERR_RPC,
                        "unable to encode message payload: larger than the %d byte limit",
                        RPC_MESSAGE_PAYLOAD_MAX);
            return FALSE;
        }
        rpc_message_reserve(msg, MIN(MAX(room * 4, (gsize)RPC_MESSAGE_INITIAL),
                                     (gsize)RPC_MESSAGE_PAYLOAD_MAX));
    }
}

gboolean rpc_message_check_length(guint32 length, GError **error)
{
    if (length < RPC_PAYLOAD_OFFSET) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_RPC,
                    "malformed message: length %u is shorter than the %d byte header", length,
                    RPC_PAYLOAD_OFFSET);
        return FALSE;
    }
    if (length > RPC_MAX_WIRE_LENGTH) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_RPC,
                    "malformed message: length %u exceeds the %d byte limit", length,
                    RPC_MAX_WIRE_LENGTH);
        return FALSE;
    }
    return TRUE;
}

gboolean rpc_message_decode_header(RpcMessage *msg, GError **error)
{
    if (msg->len < RPC_PAYLOAD_OFFSET) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_RPC, "truncated message header (%zu bytes)",
                    msg->len);
        return FALSE;
    }
    const guint8 *p = msg->buf;
    if (!rpc_message_check_length(get_u32(p), error))
        return FALSE;
    msg->header.prog = get_u32(p + 4);
    msg->header.vers = get_u32(p + 8);
    msg->header.proc = (gint32)get_u32(p + 12);
    msg->header.type = get_u32(p + 16);
    msg->header.serial = get_u32(p + 20);
    msg->header.status = get_u32(p + 24);
    if (msg->header.type > RPC_STREAM_HOLE) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_RPC, "malformed message: unknown type %u",
                    msg->header.type);
        return FALSE;
    }
    if (msg->header.status > RPC_CONTINUE) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_RPC, "malformed message: unknown status %u",
                    msg->header.status);
        return FALSE;
    }
    return TRUE;
}

gboolean rpc_message_decode(RpcMessage *msg, xdrproc_t filter, void *data, GError **error)
{
    XDR xdr;
    xdrmem_create(&xdr, (char *)rpc_message_payload(msg), (u_int)rpc_message_payload_len(msg),
                  XDR_DECODE);
    gboolean ok = filter(&xdr, data, 0);
    xdr_destroy(&xdr);
    if (!ok) {
        /* Release whatever the filter allocated before it failed. */
        xdr_free(filter, data);
        g_set_error(error, FERRY_ERROR, FERRY_ERR_RPC,
                    "unable to decode the payload of procedure %d (%zu bytes)",
                    msg->header.proc, rpc_message_payload_len(msg));
        return FALSE;
    }
    return TRUE;
}

RpcMessage *rpc_message_new_reply_to(const RpcHeader *call, guint32 type, guint32 status)
{
    RpcMessage *msg = rpc_message_new(256);
    msg->header = *call;
    msg->header.type = type;
    msg->header.status = status;
    rpc_message_seal(msg, 0);
    return msg;
}

static rpc_string dup_string(const char *s)
{
    if (!s)
        return NULL;
    rpc_string p = malloc(sizeof(*p));
    *p = strdup(s);
    return p;
}

void rpc_error_from_gerror(rpc_error *err, const GError *gerr)
{
    memset(err, 0, sizeof(*err));
    if (gerr && gerr->domain == FERRY_REMOTE_ERROR) {
        /* Relayed from a peer: keep its code and text as they are. */
        err->code = gerr->code;
        err->domain = FERRY_FROM_REMOTE;
        err->message = dup_string(gerr->message);
    } else if (gerr && gerr->domain == FERRY_ERROR) {
        err->code = gerr->code;
        err->domain = ferry_error_default_origin(gerr->code);
        g_autofree char *text = g_strconcat(ferry_error_prefix(gerr->code), gerr->message, NULL);
        err->message = dup_string(text);
    } else {
        err->code = FERRY_ERR_INTERNAL_ERROR;
        err->domain = FERRY_FROM_RPC;
        g_autofree char *text = g_strconcat(ferry_error_prefix(FERRY_ERR_INTERNAL_ERROR),
                                            gerr ? gerr->message : "unknown error", NULL);
        err->message = dup_string(text);
    }
    err->level = 2; /* VIR_ERR_ERROR */
    err->int1 = -1;
    err->int2 = -1;
}

GError *rpc_error_to_gerror(const rpc_error *err)
{
    const char *text = err->message && *err->message ? *err->message : "unknown error from peer";
    int code = err->code;
    /* The libvirt clients turn "unknown procedure" into "not supported"; so do we. */
    if ((err->domain == FERRY_FROM_RPC || err->domain == FERRY_FROM_REMOTE) &&
        code == FERRY_ERR_RPC && g_str_has_prefix(text, "unknown procedure"))
        code = FERRY_ERR_NO_SUPPORT;
    return g_error_new_literal(FERRY_REMOTE_ERROR, code, text);
}

RpcMessage *rpc_message_new_error(const RpcHeader *call, guint32 type, const GError *gerr)
{
    rpc_error err;
    rpc_error_from_gerror(&err, gerr);
    RpcMessage *msg = rpc_message_new(256);
    msg->header = *call;
    msg->header.type = type;
    msg->header.status = RPC_ERROR;
    g_autoptr(GError) enc_error = NULL;
    if (!rpc_message_encode(msg, (xdrproc_t)xdr_rpc_error, &err, &enc_error)) {
        /* Only a message over 32 MiB fails here; send the bare code instead. */
        free(*err.message);
        *err.message = strdup("error message too long to send");
        rpc_message_encode(msg, (xdrproc_t)xdr_rpc_error, &err, NULL);
    }
    xdr_free((xdrproc_t)xdr_rpc_error, (char *)&err);
    return msg;
}

const char *rpc_message_type_name(guint32 type)
{
    static const char *const names[] = {"CALL",           "REPLY",  "MESSAGE",    "STREAM",
                                        "CALL_WITH_FDS", "REPLY_WITH_FDS", "STREAM_HOLE"};
    return type < G_N_ELEMENTS(names) ? names[type] : "UNKNOWN";
}

bool_t rpc_xdr_void(XDR *xdr, void *data)
{
    return TRUE;
}
