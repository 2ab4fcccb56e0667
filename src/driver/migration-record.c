/* The flight recorder: events and a 100 ms sample ring per migration,
 * written as JSON lines when the migration ends. */
#include "driver/migration-record.h"

#include <errno.h>
#include <glib/gstdio.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <json-glib/json-glib.h>

#include "rpc/rpc-transport.h"
#include "util/error.h"
#include "util/log.h"
#include "util/thread.h"
#include "util/uuid.h"

#define FERRY_LOG_MODULE "migration.record"

#define KEPT_IN_MEMORY 16

typedef struct {
    gint64 t_us; /* since the record's start */
    TunnelCounters c;
    guint64 queued;
    gint64 peer_rx_age_us; /* -1: unknown */
    gint64 ka_rtt_us;
    gint64 ka_age_us; /* since the last answered keepalive; -1: none */
    guint64 vmm_remaining, vmm_processed, vmm_iteration, vmm_dirty_rate, vmm_bps;
} FlightSample;

struct FlightRecorder {
    char *side;
    char *domain;
    char *uuid;
    char *id;
    gint64 start_mono_us;
    gint64 start_real_us;

    GMutex lock;
    GCond cond;
    gboolean stop;
    gboolean finished; /* events after the end are dropped */
    GThread *sampler;
    TunnelChannel *channel;
    const char *mode;
    DriverJobInfo vmm; /* the last counters (strings unused) */
    FlightSample *ring;
    guint ring_start, ring_len;
    guint64 samples_dropped;
    GPtrArray *events; /* char*, JSON objects */
    guint64 events_dropped;
    char *peer_text;
    gint64 peer_offset_us, peer_uncertainty_us;
};

/* ---- settings and the in-memory records a source may fetch ---- */

static GMutex settings_lock;
static char *records_dir;
static guint records_max = 50;
static GQueue kept = G_QUEUE_INIT; /* KeptRecord*, newest last */

typedef struct {
    char *id;
    char *text;
} KeptRecord;

void flight_recorder_configure(const char *dir, guint max_records, gboolean enabled)
{
    g_mutex_lock(&settings_lock);
    g_free(records_dir);
    records_dir = g_strdup(dir);
    records_max = max_records;
    g_mutex_unlock(&settings_lock);
    __atomic_store_n(&tunnel_counters_enabled, enabled, __ATOMIC_RELAXED);
    __atomic_store_n(&rpc_transport_crypto_timing, enabled, __ATOMIC_RELAXED);
}

gboolean flight_recorder_enabled(void)
{
    return tunnel_counters_on();
}

static void kept_free(KeptRecord *k)
{
    g_free(k->id);
    g_free(k->text);
    g_free(k);
}

void flight_recorder_keep(const char *id, const char *text)
{
    KeptRecord *k = g_new0(KeptRecord, 1);
    k->id = g_strdup(id);
    k->text = g_strdup(text);
    g_mutex_lock(&settings_lock);
    g_queue_push_tail(&kept, k);
    while (g_queue_get_length(&kept) > KEPT_IN_MEMORY)
        kept_free(g_queue_pop_head(&kept));
    g_mutex_unlock(&settings_lock);
}

char *flight_recorder_lookup(const char *id)
{
    char *text = NULL;
    g_mutex_lock(&settings_lock);
    for (GList *l = kept.tail; l && id; l = l->prev) {
        KeptRecord *k = l->data;
        if (g_str_equal(k->id, id)) {
            text = g_strdup(k->text);
            break;
        }
    }
    g_mutex_unlock(&settings_lock);
    return text;
}

void flight_recorder_shutdown(void)
{
    g_mutex_lock(&settings_lock);
    g_queue_clear_full(&kept, (GDestroyNotify)kept_free);
    g_clear_pointer(&records_dir, g_free);
    g_mutex_unlock(&settings_lock);
}

/* ---- JSON bits ---- */

static void append_json_string(GString *s, const char *v)
{
    g_string_append_c(s, '"');
    for (const guchar *p = (const guchar *)v; *p; p++) {
        switch (*p) {
        case '"':
            g_string_append(s, "\\\"");
            break;
        case '\\':
            g_string_append(s, "\\\\");
            break;
        case '\n':
            g_string_append(s, "\\n");
            break;
        default:
            if (*p < 0x20)
                g_string_append_printf(s, "\\u%04x", *p);
            else
                g_string_append_c(s, (char)*p);
        }
    }
    g_string_append_c(s, '"');
}

static double seconds_since_start(FlightRecorder *fr, gint64 mono_us)
{
    return (double)(mono_us - fr->start_mono_us) / G_USEC_PER_SEC;
}

static void add_event_locked(FlightRecorder *fr, char *json)
{
    if (fr->finished) {
        g_free(json);
        return;
    }
    if (fr->events->len >= FLIGHT_EVENTS_MAX) {
        fr->events_dropped++;
        g_free(json);
        return;
    }
    g_ptr_array_add(fr->events, json);
}

static void event_va(FlightRecorder *fr, const char *ev, va_list ap)
{
    GString *s = g_string_new(NULL);
    g_string_append_printf(s, "{\"t\":%.3f,\"side\":\"%s\",\"ev\":",
                           seconds_since_start(fr, g_get_monotonic_time()), fr->side);
    append_json_string(s, ev);
    const char *key;
    while ((key = va_arg(ap, const char *))) {
        const char *value = va_arg(ap, const char *);
        gboolean raw = key[0] == '#';
        g_string_append_c(s, ',');
        append_json_string(s, raw ? key + 1 : key);
        g_string_append_c(s, ':');
        if (!value)
            g_string_append(s, "null");
        else if (raw)
            g_string_append(s, value);
        else
            append_json_string(s, value);
    }
    g_string_append_c(s, '}');
    g_mutex_lock(&fr->lock);
    add_event_locked(fr, g_string_free(s, FALSE));
    g_mutex_unlock(&fr->lock);
}

void flight_recorder_event(FlightRecorder *fr, const char *ev, ...)
{
    if (!fr)
        return;
    va_list ap;
    va_start(ap, ev);
    event_va(fr, ev, ap);
    va_end(ap);
}

void flight_recorder_phase(FlightRecorder *fr, const char *phase, gboolean start)
{
    flight_recorder_event(fr, "phase", "phase", phase, "edge", start ? "start" : "end", NULL);
}

/* Errors carry their OS error as text (g_strerror at the end of the
 * message): find its number for the record. */
static int errno_of(const char *message)
{
    for (int e = 1; e < 134; e++) {
        const char *text = g_strerror(e);
        if (text && *text && g_str_has_suffix(message, text))
            return e;
    }
    return 0;
}

void flight_recorder_error(FlightRecorder *fr, const char *where, const GError *error)
{
    if (!fr || !error)
        return;
    TunnelChannelSample cs = {0};
    g_mutex_lock(&fr->lock);
    TunnelChannel *ch = fr->channel ? tunnel_channel_ref(fr->channel) : NULL;
    g_mutex_unlock(&fr->lock);
    if (ch) {
        tunnel_channel_sample(ch, &cs);
        tunnel_channel_unref(ch);
    }
    g_autofree char *en = g_strdup_printf("%d", errno_of(error->message));
    g_autofree char *code = g_strdup_printf("%d", error->code);
    g_autofree char *out = g_strdup_printf("%" G_GUINT64_FORMAT, cs.counters.bytes_out);
    g_autofree char *in = g_strdup_printf("%" G_GUINT64_FORMAT, cs.counters.bytes_in);
    flight_recorder_event(fr, "error", "where", where, "message", error->message, "#errno", en,
                          "#code", code, "#bytes_out", out, "#bytes_in", in, NULL);
}

/* ---- the sampler ---- */

static void sample_locked(FlightRecorder *fr, TunnelChannel *ch)
{
    FlightSample smp = {0};
    gint64 now = g_get_monotonic_time();
    smp.t_us = now - fr->start_mono_us;
    smp.peer_rx_age_us = -1;
    smp.ka_age_us = -1;
    if (ch) {
        TunnelChannelSample cs;
        tunnel_channel_sample(ch, &cs);
        fr->mode = cs.mode;
        smp.c = cs.counters;
        smp.queued = cs.queued_bytes;
        if (cs.peer_last_rx_us)
            smp.peer_rx_age_us = MAX(0, now - cs.peer_last_rx_us);
        smp.ka_rtt_us = cs.keepalive_rtt_us;
        if (cs.keepalive_pong_us)
            smp.ka_age_us = MAX(0, now - cs.keepalive_pong_us);
    }
    smp.vmm_remaining = fr->vmm.memory_remaining;
    smp.vmm_processed = fr->vmm.memory_processed;
    smp.vmm_iteration = fr->vmm.memory_iteration;
    smp.vmm_dirty_rate = fr->vmm.memory_dirty_rate;
    smp.vmm_bps = fr->vmm.memory_bps;
    if (fr->ring_len == FLIGHT_SAMPLES_MAX) {
        fr->ring[fr->ring_start] = smp;
        fr->ring_start = (fr->ring_start + 1) % FLIGHT_SAMPLES_MAX;
        fr->samples_dropped++;
    } else {
        fr->ring[(fr->ring_start + fr->ring_len) % FLIGHT_SAMPLES_MAX] = smp;
        fr->ring_len++;
    }
}

static gpointer sampler_thread(gpointer data)
{
    FlightRecorder *fr = data;
    g_mutex_lock(&fr->lock);
    gint64 next = g_get_monotonic_time() + FLIGHT_SAMPLE_MS * 1000;
    while (!fr->stop) {
        if (g_cond_wait_until(&fr->cond, &fr->lock, next) || fr->stop)
            continue;
        /* The channel is sampled under the recorder's lock: its reads are
         * atomic loads and the connection's lock, never a wait. */
        sample_locked(fr, fr->channel);
        next += FLIGHT_SAMPLE_MS * 1000;
        gint64 now = g_get_monotonic_time();
        if (next < now) /* a stalled process: skip, don't burst */
            next = now + FLIGHT_SAMPLE_MS * 1000;
    }
    g_mutex_unlock(&fr->lock);
    return NULL;
}

FlightRecorder *flight_recorder_new(const char *side, const char *domain, const guint8 *uuid,
                                    const char *id)
{
    if (!flight_recorder_enabled())
        return NULL;
    FlightRecorder *fr = g_new0(FlightRecorder, 1);
    fr->side = g_strdup(side);
    fr->domain = g_strdup(domain);
    fr->uuid = uuid ? ferry_uuid_to_string(uuid) : g_strdup("");
    if (id && *id) {
        fr->id = g_strdup(id);
    } else {
        guint8 rid[16];
        ferry_uuid_generate(rid);
        fr->id = ferry_uuid_to_string(rid);
    }
    fr->start_mono_us = g_get_monotonic_time();
    fr->start_real_us = g_get_real_time();
    g_mutex_init(&fr->lock);
    g_cond_init(&fr->cond);
    fr->ring = g_new0(FlightSample, FLIGHT_SAMPLES_MAX);
    fr->events = g_ptr_array_new_with_free_func(g_free);
    g_autoptr(GError) error = NULL;
    fr->sampler = ferry_thread_try_new("flight-recorder", sampler_thread, fr, &error);
    if (!fr->sampler)
        flight_recorder_event(fr, "note", "text", error->message, NULL);
    return fr;
}

static void stop_sampler(FlightRecorder *fr)
{
    g_mutex_lock(&fr->lock);
    fr->stop = TRUE;
    g_cond_broadcast(&fr->cond);
    GThread *t = g_steal_pointer(&fr->sampler);
    g_mutex_unlock(&fr->lock);
    if (t)
        g_thread_join(t);
}

void flight_recorder_free(FlightRecorder *fr)
{
    if (!fr)
        return;
    stop_sampler(fr);
    tunnel_channel_unref(fr->channel);
    g_ptr_array_unref(fr->events);
    g_free(fr->ring);
    g_free(fr->peer_text);
    g_mutex_clear(&fr->lock);
    g_cond_clear(&fr->cond);
    g_free(fr->side);
    g_free(fr->domain);
    g_free(fr->uuid);
    g_free(fr->id);
    g_free(fr);
}

const char *flight_recorder_get_id(FlightRecorder *fr)
{
    return fr ? fr->id : NULL;
}

void flight_recorder_set_channel(FlightRecorder *fr, TunnelChannel *ch)
{
    if (!fr)
        return;
    g_mutex_lock(&fr->lock);
    if (!fr->channel)
        fr->channel = tunnel_channel_ref(ch);
    g_mutex_unlock(&fr->lock);
}

void flight_recorder_set_vmm(FlightRecorder *fr, const DriverJobInfo *c)
{
    if (!fr)
        return;
    g_mutex_lock(&fr->lock);
    fr->vmm.memory_remaining = c->memory_remaining;
    fr->vmm.memory_processed = c->memory_processed;
    fr->vmm.memory_iteration = c->memory_iteration;
    fr->vmm.memory_dirty_rate = c->memory_dirty_rate;
    fr->vmm.memory_bps = c->memory_bps;
    g_mutex_unlock(&fr->lock);
}

/* Only lines that are JSON objects of the destination's side. */
static char *peer_lines(const char *text)
{
    GString *clean = g_string_new(NULL);
    g_auto(GStrv) lines = g_strsplit(text, "\n", -1);
    g_autoptr(JsonParser) parser = json_parser_new();
    for (guint i = 0; lines[i]; i++) {
        if (!*lines[i])
            continue;
        if (!json_parser_load_from_data(parser, lines[i], -1, NULL))
            continue;
        JsonNode *root = json_parser_get_root(parser);
        if (!root || !JSON_NODE_HOLDS_OBJECT(root))
            continue;
        const char *side = json_object_get_string_member_with_default(
            json_node_get_object(root), "side", "");
        if (!g_str_equal(side, "destination"))
            continue;
        g_string_append(clean, lines[i]);
        g_string_append_c(clean, '\n');
    }
    return g_string_free(clean, FALSE);
}

static char *peer_header(gint64 offset_us, gint64 uncertainty_us)
{
    return g_strdup_printf("{\"t\":0,\"side\":\"source\",\"ev\":\"peer_record\","
                           "\"clock_offset_us\":%" G_GINT64_FORMAT
                           ",\"clock_uncertainty_us\":%" G_GINT64_FORMAT "}\n",
                           offset_us, uncertainty_us);
}

void flight_recorder_add_peer(FlightRecorder *fr, const char *text, gint64 offset_us,
                              gint64 uncertainty_us)
{
    if (!fr || !text)
        return;
    char *clean = peer_lines(text);
    g_mutex_lock(&fr->lock);
    g_free(fr->peer_text);
    fr->peer_text = clean;
    fr->peer_offset_us = offset_us;
    fr->peer_uncertainty_us = uncertainty_us;
    g_mutex_unlock(&fr->lock);
}

/* ---- the end: summary and file ---- */

typedef struct {
    guint64 src_vmm, dst_vmm, network, credit, bandwidth, crypto; /* microseconds */
    double transfer_s;
    guint64 bytes;
    gboolean have_peer;
    guint64 peer_vmm_write, peer_net_recv, peer_crypto;
} Summary;

/* The pumps' waits of the sending direction over the record, ours and,
 * when known, the destination's last sample. */
static void summarize_locked(FlightRecorder *fr, Summary *sum)
{
    memset(sum, 0, sizeof(*sum));
    if (fr->ring_len == 0)
        return;
    const FlightSample *first = &fr->ring[fr->ring_start];
    const FlightSample *last = &fr->ring[(fr->ring_start + fr->ring_len - 1) % FLIGHT_SAMPLES_MAX];
    gboolean source = g_str_equal(fr->side, "source");
    sum->transfer_s = (double)(last->t_us - first->t_us) / G_USEC_PER_SEC;
    if (source) {
        sum->src_vmm = last->c.wait_vmm_read_us;
        sum->network = last->c.wait_net_send_us;
        sum->credit = last->c.wait_credit_us;
        sum->bandwidth = last->c.wait_throttle_us;
        sum->bytes = last->c.bytes_out;
        sum->crypto = last->c.wait_crypto_us;
    } else {
        sum->dst_vmm = last->c.wait_vmm_write_us;
        sum->network = last->c.wait_net_recv_us;
        sum->bytes = last->c.bytes_in;
        sum->crypto = last->c.wait_crypto_us;
    }
}

/* The destination's last sample's waits, from its record's text. */
static void peer_waits(const char *text, guint64 *vmm_write, guint64 *net_recv, guint64 *crypto)
{
    *vmm_write = *net_recv = *crypto = 0;
    const char *p = text ? g_strrstr(text, "\"ev\":\"sample\"") : NULL;
    if (!p)
        return;
    const char *line = p;
    while (line > text && line[-1] != '\n')
        line--;
    const char *end = strchr(p, '\n');
    g_autofree char *one = end ? g_strndup(line, end - line) : g_strdup(line);
    g_autoptr(JsonParser) parser = json_parser_new();
    if (!json_parser_load_from_data(parser, one, -1, NULL))
        return;
    JsonNode *root = json_parser_get_root(parser);
    if (!root || !JSON_NODE_HOLDS_OBJECT(root))
        return;
    JsonObject *o = json_node_get_object(root);
    *vmm_write = (guint64)json_object_get_int_member_with_default(o, "w_vmm_write", 0);
    *net_recv = (guint64)json_object_get_int_member_with_default(o, "w_net_recv", 0);
    *crypto = (guint64)json_object_get_int_member_with_default(o, "w_crypto", 0);
}

/* The bottleneck in words: what the sending side waited on most. */
static char *bottleneck_words(FlightRecorder *fr, const Summary *s)
{
    double total = s->transfer_s * G_USEC_PER_SEC;
    if (total <= 0)
        return g_strdup("unknown (no data moved)");
    gboolean source = g_str_equal(fr->side, "source");
    if (!source) {
        if (s->dst_vmm > total * 0.2 && s->dst_vmm >= s->network && s->dst_vmm >= s->crypto)
            return g_strdup("the destination VMM (it took the data slower than it arrived)");
        if (s->crypto > total * 0.2 && s->crypto >= s->network)
            return g_strdup("encryption (the destination waited for its connection to decrypt "
                            "the data)");
        if (s->network > total * 0.2)
            return g_strdup("the source or the network (the destination waited for data)");
        return g_strdup("none (the destination kept up)");
    }
    guint64 max = MAX(MAX(MAX(s->src_vmm, s->network), MAX(s->credit, s->bandwidth)), s->crypto);
    if ((double)max < total * 0.2)
        return g_strdup("the daemons' own processing (no pump waited more than 20% of the time)");
    if (max == s->bandwidth)
        return g_strdup("the migration's bandwidth limit");
    if (max == s->crypto)
        return g_strdup("encryption (the source waited for its connection to encrypt the data)");
    if (max == s->src_vmm)
        return g_strdup("the source VMM (it produced data slower than the path carried it)");
    if (s->have_peer) {
        if (s->peer_crypto > s->peer_vmm_write && s->peer_crypto > s->peer_net_recv)
            return g_strdup("encryption (the destination waited for its connection to decrypt "
                            "the data)");
        if (s->peer_vmm_write > s->peer_net_recv)
            return g_strdup("the destination VMM (it took the data slower than the network "
                            "carried it)");
        return g_strdup("the network (the destination waited for data while the source waited "
                        "to send)");
    }
    return g_strdup("the network or the destination (the source waited to send)");
}

static void append_sample(GString *s, FlightRecorder *fr, const FlightSample *smp)
{
    g_string_append_printf(
        s,
        "{\"t\":%.3f,\"side\":\"%s\",\"ev\":\"sample\",\"ch\":0,\"out\":%" G_GUINT64_FORMAT
        ",\"in\":%" G_GUINT64_FORMAT ",\"resent\":%" G_GUINT64_FORMAT
        ",\"w_vmm_read\":%" G_GUINT64_FORMAT
        ",\"w_vmm_write\":%" G_GUINT64_FORMAT ",\"w_net_send\":%" G_GUINT64_FORMAT
        ",\"w_net_recv\":%" G_GUINT64_FORMAT ",\"w_credit\":%" G_GUINT64_FORMAT
        ",\"w_throttle\":%" G_GUINT64_FORMAT ",\"w_crypto\":%" G_GUINT64_FORMAT
        ",\"queued\":%" G_GUINT64_FORMAT ",\"peer_rx_age_ms\":%" G_GINT64_FORMAT
        ",\"keepalive_rtt_ms\":%.3f,\"keepalive_age_ms\":%" G_GINT64_FORMAT
        ",\"vmm_remaining\":%" G_GUINT64_FORMAT
        ",\"vmm_processed\":%" G_GUINT64_FORMAT ",\"vmm_iteration\":%" G_GUINT64_FORMAT
        ",\"vmm_dirty_rate\":%" G_GUINT64_FORMAT ",\"vmm_bps\":%" G_GUINT64_FORMAT "}\n",
        (double)smp->t_us / G_USEC_PER_SEC, fr->side, smp->c.bytes_out, smp->c.bytes_in,
        smp->c.bytes_resent, smp->c.wait_vmm_read_us, smp->c.wait_vmm_write_us, smp->c.wait_net_send_us,
        smp->c.wait_net_recv_us, smp->c.wait_credit_us, smp->c.wait_throttle_us,
        smp->c.wait_crypto_us, smp->queued,
        smp->peer_rx_age_us < 0 ? (gint64)-1 : smp->peer_rx_age_us / 1000,
        (double)smp->ka_rtt_us / 1000.0, smp->ka_age_us < 0 ? (gint64)-1 : smp->ka_age_us / 1000,
        smp->vmm_remaining, smp->vmm_processed,
        smp->vmm_iteration, smp->vmm_dirty_rate, smp->vmm_bps);
}

static char *format_locked(FlightRecorder *fr, const char *outcome, const char *bottleneck,
                           const Summary *sum)
{
    GString *s = g_string_new(NULL);
    g_autoptr(GDateTime) start = g_date_time_new_from_unix_utc(fr->start_real_us / G_USEC_PER_SEC);
    g_autofree char *iso = g_date_time_format(start, "%Y-%m-%dT%H:%M:%SZ");
    g_autofree char *host = driver_node_get_hostname();
    g_string_append_printf(s, "{\"format\":\"%s\",\"version\":%d,\"side\":\"%s\",\"id\":",
                           FLIGHT_RECORD_FORMAT, FLIGHT_RECORD_VERSION, fr->side);
    append_json_string(s, fr->id);
    g_string_append(s, ",\"domain\":");
    append_json_string(s, fr->domain ? fr->domain : "");
    g_string_append(s, ",\"uuid\":");
    append_json_string(s, fr->uuid);
    g_string_append(s, ",\"host\":");
    append_json_string(s, host ? host : "");
    g_string_append_printf(s,
                           ",\"pid\":%d,\"start_utc\":\"%s\",\"start_unix_us\":%" G_GINT64_FORMAT
                           ",\"sample_ms\":%d,\"mode\":\"%s\",\"outcome\":\"%s\"",
                           (int)getpid(), iso, fr->start_real_us, FLIGHT_SAMPLE_MS,
                           fr->mode ? fr->mode : "none", outcome);
    g_string_append(s, ",\"bottleneck\":");
    append_json_string(s, bottleneck);
    g_string_append_printf(s,
                           ",\"stall_ms\":{\"source_vmm\":%" G_GUINT64_FORMAT
                           ",\"destination_vmm\":%" G_GUINT64_FORMAT
                           ",\"network\":%" G_GUINT64_FORMAT ",\"credit\":%" G_GUINT64_FORMAT
                           ",\"bandwidth_limit\":%" G_GUINT64_FORMAT
                           ",\"encryption\":%" G_GUINT64_FORMAT "}",
                           sum->src_vmm / 1000, sum->dst_vmm / 1000, sum->network / 1000,
                           sum->credit / 1000, sum->bandwidth / 1000, sum->crypto / 1000);
    g_string_append_printf(s,
                           ",\"samples_dropped\":%" G_GUINT64_FORMAT
                           ",\"events_dropped\":%" G_GUINT64_FORMAT "}\n",
                           fr->samples_dropped, fr->events_dropped);
    /* Events and samples, merged by time. */
    guint ei = 0, si = 0;
    for (;;) {
        const char *ev = ei < fr->events->len ? fr->events->pdata[ei] : NULL;
        const FlightSample *smp =
            si < fr->ring_len ? &fr->ring[(fr->ring_start + si) % FLIGHT_SAMPLES_MAX] : NULL;
        if (!ev && !smp)
            break;
        double ev_t = ev ? g_ascii_strtod(ev + 5, NULL) : 0; /* {"t": */
        if (ev && (!smp || ev_t <= (double)smp->t_us / G_USEC_PER_SEC)) {
            g_string_append(s, ev);
            g_string_append_c(s, '\n');
            ei++;
        } else {
            append_sample(s, fr, smp);
            si++;
        }
    }
    if (fr->peer_text) {
        g_autofree char *h = peer_header(fr->peer_offset_us, fr->peer_uncertainty_us);
        g_string_append(s, h);
        g_string_append(s, fr->peer_text);
    }
    return g_string_free(s, FALSE);
}

static char *safe_name(const char *name)
{
    char *s = g_strdup(name && *name ? name : "unnamed");
    for (char *p = s; *p; p++)
        if (!g_ascii_isalnum(*p) && *p != '-' && *p != '_' && *p != '.')
            *p = '_';
    if (s[0] == '.')
        s[0] = '_';
    return s;
}

static gint compare_names(gconstpointer a, gconstpointer b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Keeps the newest records_max files (names start with the UTC time). */
static void prune(const char *dir, guint max)
{
    g_autoptr(GDir) d = g_dir_open(dir, 0, NULL);
    if (!d)
        return;
    g_autoptr(GPtrArray) names = g_ptr_array_new_with_free_func(g_free);
    const char *n;
    while ((n = g_dir_read_name(d)))
        if (g_str_has_suffix(n, ".flight.jsonl"))
            g_ptr_array_add(names, g_strdup(n));
    if (names->len <= max)
        return;
    g_ptr_array_sort(names, compare_names);
    for (guint i = 0; i < names->len - max; i++) {
        g_autofree char *path = g_build_filename(dir, names->pdata[i], NULL);
        g_unlink(path);
    }
}

static char *write_file(FlightRecorder *fr, const char *text)
{
    g_mutex_lock(&settings_lock);
    g_autofree char *dir = g_strdup(records_dir);
    guint max = records_max;
    g_mutex_unlock(&settings_lock);
    if (!dir || max == 0)
        return NULL;
    if (g_mkdir_with_parents(dir, 0700) < 0) {
        FERRY_WARN("cannot create the flight record directory %s: %s", dir, g_strerror(errno));
        return NULL;
    }
    g_autoptr(GDateTime) start = g_date_time_new_from_unix_utc(fr->start_real_us / G_USEC_PER_SEC);
    g_autofree char *when = g_date_time_format(start, "%Y%m%dT%H%M%SZ");
    g_autofree char *dom = safe_name(fr->domain);
    g_autofree char *name =
        g_strdup_printf("%s-%s-%s-%.8s.flight.jsonl", when, dom, fr->side, fr->id);
    char *path = g_build_filename(dir, name, NULL);
    g_autoptr(GError) error = NULL;
    if (!g_file_set_contents_full(path, text, -1, G_FILE_SET_CONTENTS_CONSISTENT, 0600,
                                  &error)) {
        FERRY_WARN("cannot write the flight record: %s", error->message);
        g_free(path);
        return NULL;
    }
    prune(dir, max);
    FERRY_INFO("flight record of the migration of domain '%s' (%s): %s", fr->domain, fr->side,
               path);
    return path;
}

char *flight_recorder_finish(FlightRecorder *fr, const char *outcome, const GError *error,
                             DriverJobInfo *info)
{
    if (!fr)
        return NULL;
    g_mutex_lock(&fr->lock);
    gboolean again = fr->finished;
    g_mutex_unlock(&fr->lock);
    if (again)
        return NULL;
    if (error)
        flight_recorder_event(fr, "end", "outcome", outcome, "message", error->message, NULL);
    else
        flight_recorder_event(fr, "end", "outcome", outcome, NULL);
    stop_sampler(fr);
    g_mutex_lock(&fr->lock);
    if (fr->finished) { /* two enders raced: the first one writes */
        g_mutex_unlock(&fr->lock);
        return NULL;
    }
    fr->finished = TRUE;
    sample_locked(fr, fr->channel); /* the last word */
    Summary sum;
    summarize_locked(fr, &sum);
    if (fr->peer_text) {
        sum.have_peer = TRUE;
        peer_waits(fr->peer_text, &sum.peer_vmm_write, &sum.peer_net_recv, &sum.peer_crypto);
        sum.dst_vmm = sum.peer_vmm_write;
    }
    g_autofree char *bottleneck = bottleneck_words(fr, &sum);
    char *text = format_locked(fr, outcome, bottleneck, &sum);
    g_mutex_unlock(&fr->lock);
    g_autofree char *path = write_file(fr, text);
    if (info) {
        info->has_flight = TRUE;
        info->stall_source_vmm_ms = sum.src_vmm / 1000;
        info->stall_dest_vmm_ms = sum.dst_vmm / 1000;
        info->stall_network_ms = sum.network / 1000;
        info->stall_credit_ms = sum.credit / 1000;
        info->stall_bandwidth_ms = sum.bandwidth / 1000;
        info->stall_encryption_ms = sum.crypto / 1000;
        g_free(info->bottleneck);
        info->bottleneck = g_strdup(bottleneck);
        g_free(info->flight_record);
        info->flight_record = g_steal_pointer(&path);
    }
    return text;
}

void flight_record_file_add_peer(const char *path, const char *text, gint64 offset_us,
                                 gint64 uncertainty_us)
{
    if (!path || !text)
        return;
    g_autofree char *clean = peer_lines(text);
    g_autofree char *h = peer_header(offset_us, uncertainty_us);
    FILE *f = fopen(path, "ae");
    if (!f) {
        FERRY_WARN("cannot add the destination's record to %s: %s", path, g_strerror(errno));
        return;
    }
    fputs(h, f);
    fputs(clean, f);
    if (fclose(f) != 0)
        FERRY_WARN("cannot add the destination's record to %s: %s", path, g_strerror(errno));
}
