/* One RPC message on the wire: the length word, the 24-byte header and the
 * payload, held in one buffer so payload bytes are read and written in place
 * (no copy between the socket and the XDR decoder, or the VMM and a stream). */
#pragma once

#include <glib.h>
#include <rpc/rpc.h>
#include <sys/uio.h>

#include "rpc/rpc_protocol.h"

#define RPC_LEN_WORD_SIZE 4
#define RPC_HEADER_SIZE 24
#define RPC_PAYLOAD_OFFSET (RPC_LEN_WORD_SIZE + RPC_HEADER_SIZE) /* 28 */
/* Largest length word accepted: 32 MiB of header + payload plus the word itself. */
#define RPC_MAX_WIRE_LENGTH (RPC_MESSAGE_MAX + RPC_LEN_WORD_SIZE)

typedef struct {
    guint32 prog;
    guint32 vers;
    gint32 proc;
    guint32 type;   /* rpc_message_type */
    guint32 serial;
    guint32 status; /* rpc_message_status */
} RpcHeader;

/* Lifetime: owned by exactly one holder at a time; handing it to a
 * connection's send queue transfers ownership. */
typedef struct RpcMessagePool RpcMessagePool;

typedef struct RpcMessage {
    RpcHeader header;
    guint8 *buf;   /* length word + header + payload */
    gsize len;     /* bytes in use; equals the length word once encoded */
    gsize cap;     /* bytes allocated */
    /* Set on a reply: once written, the connection counts one request less
     * (max_client_requests flow control). */
    gboolean completes_request;
    /* Where rpc_message_free returns the buffer (hot-path reuse), or NULL. */
    RpcMessagePool *pool;
    /* Called by the connection's writer once this message is written, before
     * anything queued after it (e.g. switching a SASL layer on after the last
     * authentication reply). Not called if the message is dropped. */
    void (*after_write)(gpointer data);
    gpointer after_write_data;
    /* A message sits in at most one queue at a time: its own link, so
     * queueing a packet allocates nothing (see rpc_message_queue_push). */
    GList link;
    /* An outgoing payload kept elsewhere (rpc_message_seal_external): buf
     * holds the length word and header only, the writer sends these bytes
     * after them; ext_release(ext_owner) runs when the message is freed. */
    const guint8 *ext_payload;
    void (*ext_release)(gpointer owner);
    gpointer ext_owner;
} RpcMessage;

RpcMessage *rpc_message_new(gsize payload_capacity);
void rpc_message_free(RpcMessage *msg);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(RpcMessage, rpc_message_free)

/* A pool of message buffers of one capacity, so a data stream allocates
 * nothing per packet. Lifetime: refcounted; every message taken from it holds
 * a reference until it is freed (returned). */
RpcMessagePool *rpc_message_pool_new(gsize payload_capacity, guint max_cached);
RpcMessagePool *rpc_message_pool_ref(RpcMessagePool *pool);
void rpc_message_pool_unref(RpcMessagePool *pool);
gsize rpc_message_pool_get_capacity(RpcMessagePool *pool);
/* Messages the pool ever allocated (takes that found no cached buffer). */
guint64 rpc_message_pool_get_allocated(RpcMessagePool *pool);
/* A message with room for the pool's payload capacity; rpc_message_free returns it. */
RpcMessage *rpc_message_pool_take(RpcMessagePool *pool);

/* Queues of messages (GQueue) linked through each message's own link: no
 * allocation per packet. Use only these on such a queue, never
 * g_queue_push_tail or g_queue_clear_full. */
static inline void rpc_message_queue_push(GQueue *queue, RpcMessage *msg)
{
    msg->link.data = msg;
    msg->link.prev = msg->link.next = NULL;
    g_queue_push_tail_link(queue, &msg->link);
}

static inline RpcMessage *rpc_message_queue_pop(GQueue *queue)
{
    GList *l = g_queue_pop_head_link(queue);
    return l ? l->data : NULL;
}

/* Frees every message of the queue and leaves it empty. */
void rpc_message_queue_clear(GQueue *queue);

/* Makes room for a payload of payload_len bytes (keeps existing bytes). */
void rpc_message_reserve(RpcMessage *msg, gsize payload_len);

/* The payload in buf (never an external one, see rpc_message_seal_external). */
static inline guint8 *rpc_message_payload(RpcMessage *msg)
{
    return msg->buf + RPC_PAYLOAD_OFFSET;
}

static inline gsize rpc_message_payload_len(const RpcMessage *msg)
{
    return msg->len > RPC_PAYLOAD_OFFSET ? msg->len - RPC_PAYLOAD_OFFSET : 0;
}

/* Writes the length word and msg->header for a payload of payload_len bytes
 * already in place (e.g. read straight from a VMM socket). */
void rpc_message_seal(RpcMessage *msg, gsize payload_len);

/* Writes the length word and msg->header for a payload of payload_len bytes
 * that stay where they are (e.g. a tunnel stream's send ring): the message
 * holds a reference to their owner, taken with ref(owner) and given back
 * with release(owner) when it is freed, and the bytes must not change until
 * then. Sending one copies nothing into the message. */
void rpc_message_seal_external(RpcMessage *msg, const guint8 *payload, gsize payload_len,
                               gpointer (*ref)(gpointer owner), void (*release)(gpointer owner),
                               gpointer owner);

/* The iovecs that put msg on the wire (1, or 2 with an external payload). */
int rpc_message_wire_iov(const RpcMessage *msg, struct iovec *iov);

/* Encodes msg->header and an XDR payload (filter may be xdr_void). */
gboolean rpc_message_encode(RpcMessage *msg, xdrproc_t filter, void *data, GError **error);

/* Checks a length word read off the socket. */
gboolean rpc_message_check_length(guint32 length, GError **error);

/* Decodes and validates the header of a complete message in msg->buf. */
gboolean rpc_message_decode_header(RpcMessage *msg, GError **error);

/* Decodes the payload; on success the caller frees with xdr_free(filter, data). */
gboolean rpc_message_decode(RpcMessage *msg, xdrproc_t filter, void *data, GError **error);

/* A message answering `call` (same prog, vers, proc, serial). */
RpcMessage *rpc_message_new_reply_to(const RpcHeader *call, guint32 type, guint32 status);

/* Fills an rpc_error from a GError: the one place errors become libvirt
 * errors. Free with xdr_free(xdr_rpc_error, err). */
void rpc_error_from_gerror(rpc_error *err, const GError *gerr);

/* The error a peer sent, as a GError in the FERRY_REMOTE_ERROR domain (its
 * message is complete and is never prefixed again). */
GError *rpc_error_to_gerror(const rpc_error *err);

/* Encodes an ERROR reply (REPLY or STREAM type) for `call`. */
RpcMessage *rpc_message_new_error(const RpcHeader *call, guint32 type, const GError *gerr);

/* Errors received from a peer keep their code and full text here. */
#define FERRY_REMOTE_ERROR (ferry_remote_error_quark())
GQuark ferry_remote_error_quark(void);

const char *rpc_message_type_name(guint32 type);

/* The XDR filter of an empty payload (libtirpc's xdr_void has no arguments). */
bool_t rpc_xdr_void(XDR *xdr, void *data);
#define RPC_XDR_VOID ((xdrproc_t)rpc_xdr_void)
