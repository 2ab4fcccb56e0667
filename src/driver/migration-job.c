/* The job's state, its channel, and abort. */
#include "driver/migration-job.h"

#include <unistd.h>

#include "util/error.h"

MigrationJob *migration_job_new(int operation)
{
    MigrationJob *job = g_new0(MigrationJob, 1);
    job->ref = 1;
    g_mutex_init(&job->lock);
    g_cond_init(&job->cond);
    job->operation = operation;
    job->pending_vmm_fd = -1;
    job->memory_channels = 1;
    for (guint i = 0; i < G_N_ELEMENTS(job->memory_fds); i++)
        job->memory_fds[i] = -1;
    job->postcopy_bandwidth = G_MAXUINT64;
    job->start_us = g_get_monotonic_time();
    job->info.type = DRIVER_JOB_UNBOUNDED;
    job->info.operation = operation;
    return job;
}

MigrationJob *migration_job_ref(MigrationJob *job)
{
    g_atomic_int_inc(&job->ref);
    return job;
}

void migration_job_unref(MigrationJob *job)
{
    if (!job || !g_atomic_int_dec_and_test(&job->ref))
        return;
    flight_recorder_free(job->recorder);
    migration_storage_dest_free(job->storage);
    tunnel_channel_unref(job->channel);
    tunnel_rate_unref(job->rate);
    if (job->extra)
        g_ptr_array_unref(job->extra);
    tunnel_data_listener_free(job->listener);
    if (job->pending_vmm_fd >= 0)
        close(job->pending_vmm_fd);
    for (guint i = 0; i < G_N_ELEMENTS(job->memory_fds); i++)
        if (job->memory_fds[i] >= 0)
            close(job->memory_fds[i]);
    g_clear_error(&job->channel_error);
    g_free(job->token);
    tunnel_resume_withdraw(job->resume_token);
    g_free(job->resume_token);
    tunnel_peer_watch_unref(job->source);
    g_clear_error(&job->abort_reason);
    driver_job_info_clear(&job->info);
    g_mutex_clear(&job->lock);
    g_cond_clear(&job->cond);
    g_free(job->name);
    g_free(job->instance_id);
    g_free(job);
}

/* The channel counts against the job's rate, shared by all its channels
 * (job->lock held). */
static void share_rate_locked(MigrationJob *job, TunnelChannel *channel)
{
    if (!job->rate)
        job->rate = tunnel_rate_new(job->bandwidth);
    else if (tunnel_rate_get(job->rate) != job->bandwidth)
        tunnel_rate_set(job->rate, job->bandwidth);
    tunnel_channel_set_rate(channel, job->rate);
}

void migration_job_set_channel(MigrationJob *job, TunnelChannel *channel)
{
    g_mutex_lock(&job->lock);
    job->channel = tunnel_channel_ref(channel);
    share_rate_locked(job, channel);
    flight_recorder_set_channel(job->recorder, channel);
    GError *early = job->abort_requested ? g_error_copy(job->abort_reason) : NULL;
    g_cond_broadcast(&job->cond);
    g_mutex_unlock(&job->lock);
    if (early) {
        tunnel_channel_abort(channel, early);
        g_error_free(early);
    }
}

static void channel_unref0(gpointer ch)
{
    if (ch)
        tunnel_channel_unref(ch);
}

void migration_job_add_channel(MigrationJob *job, guint index, TunnelChannel *channel)
{
    g_return_if_fail(index >= 1);
    g_mutex_lock(&job->lock);
    if (!job->extra)
        job->extra = g_ptr_array_new_with_free_func(channel_unref0);
    if (job->extra->len < index)
        g_ptr_array_set_size(job->extra, index);
    channel_unref0(job->extra->pdata[index - 1]);
    job->extra->pdata[index - 1] = tunnel_channel_ref(channel);
    share_rate_locked(job, channel);
    GError *early = job->abort_requested ? g_error_copy(job->abort_reason) : NULL;
    g_cond_broadcast(&job->cond);
    g_mutex_unlock(&job->lock);
    if (early) {
        tunnel_channel_abort(channel, early);
        g_error_free(early);
    }
}

/* A reference on each extra channel that exists (job->lock held). */
static GPtrArray *extra_refs_locked(MigrationJob *job)
{
    GPtrArray *refs = g_ptr_array_new_with_free_func((GDestroyNotify)tunnel_channel_unref);
    for (guint i = 0; job->extra && i < job->extra->len; i++)
        if (job->extra->pdata[i])
            g_ptr_array_add(refs, tunnel_channel_ref(job->extra->pdata[i]));
    return refs;
}

gboolean migration_job_check_extra(MigrationJob *job, GError **error)
{
    g_mutex_lock(&job->lock);
    g_autoptr(GPtrArray) refs = extra_refs_locked(job);
    g_mutex_unlock(&job->lock);
    for (guint i = 0; i < refs->len; i++) {
        TunnelChannel *ch = refs->pdata[i];
        if (tunnel_channel_is_over(ch) && !tunnel_channel_wait(ch, g_get_monotonic_time(), error))
            return FALSE;
    }
    return TRUE;
}

gboolean migration_job_wait_extra(MigrationJob *job, guint n, gint64 deadline_us,
                                  GError **error)
{
    return migration_job_wait_channels(job, 1, n, deadline_us, error);
}

gboolean migration_job_wait_channels(MigrationJob *job, guint first, guint last,
                                     gint64 deadline_us, GError **error)
{
    for (guint i = first; i <= last; i++) {
        g_mutex_lock(&job->lock);
        while (!job->extra || job->extra->len < i || !job->extra->pdata[i - 1]) {
            if (!g_cond_wait_until(&job->cond, &job->lock, deadline_us)) {
                g_mutex_unlock(&job->lock);
                g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_TIMEOUT,
                            "channel %u of the migration did not open", i);
                return FALSE;
            }
        }
        g_autoptr(TunnelChannel) ch = tunnel_channel_ref(job->extra->pdata[i - 1]);
        g_mutex_unlock(&job->lock);
        if (!tunnel_channel_wait(ch, deadline_us, error))
            return FALSE;
    }
    return TRUE;
}

void migration_job_set_channel_error(MigrationJob *job, GError *error)
{
    g_mutex_lock(&job->lock);
    g_clear_error(&job->channel_error);
    job->channel_error = error;
    g_cond_broadcast(&job->cond);
    g_mutex_unlock(&job->lock);
}

gboolean migration_job_wait_channel(MigrationJob *job, gint64 deadline_us, GError **error)
{
    g_mutex_lock(&job->lock);
    while (!job->channel && !job->channel_error) {
        if (!deadline_us) {
            g_cond_wait(&job->cond, &job->lock);
        } else if (!g_cond_wait_until(&job->cond, &job->lock, deadline_us)) {
            g_mutex_unlock(&job->lock);
            g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_TIMEOUT,
                        "the data connection is not open yet");
            return FALSE;
        }
    }
    if (job->channel_error) {
        g_propagate_error(error, g_error_copy(job->channel_error));
        g_mutex_unlock(&job->lock);
        return FALSE;
    }
    g_autoptr(TunnelChannel) ch = tunnel_channel_ref(job->channel);
    g_mutex_unlock(&job->lock);
    return tunnel_channel_wait(ch, deadline_us, error);
}

gboolean migration_job_channel_ended(MigrationJob *job)
{
    g_mutex_lock(&job->lock);
    gboolean ended = job->channel_error || (job->channel && tunnel_channel_is_over(job->channel));
    g_mutex_unlock(&job->lock);
    return ended;
}

void migration_job_cut_channel(MigrationJob *job, const GError *why)
{
    g_mutex_lock(&job->lock);
    g_autoptr(TunnelChannel) ch = job->channel ? tunnel_channel_ref(job->channel) : NULL;
    g_autoptr(GPtrArray) extra = extra_refs_locked(job);
    if (job->listener)
        tunnel_data_listener_cancel(job->listener);
    g_mutex_unlock(&job->lock);
    if (ch)
        tunnel_channel_abort(ch, why);
    for (guint i = 0; i < extra->len; i++)
        tunnel_channel_abort(extra->pdata[i], why);
}

gboolean migration_job_peer_heard_end(MigrationJob *job)
{
    g_mutex_lock(&job->lock);
    gboolean heard = job->channel ? tunnel_channel_peer_acknowledged_end(job->channel) : TRUE;
    g_mutex_unlock(&job->lock);
    return heard;
}

void migration_job_set_bandwidth(MigrationJob *job, guint64 bytes_per_second)
{
    g_mutex_lock(&job->lock);
    job->bandwidth = bytes_per_second;
    /* One limit for the sum of the channels; each is woken to see it. */
    if (job->rate)
        tunnel_rate_set(job->rate, bytes_per_second);
    if (job->channel)
        tunnel_channel_set_rate(job->channel, job->rate);
    for (guint i = 0; job->extra && i < job->extra->len; i++)
        if (job->extra->pdata[i])
            tunnel_channel_set_rate(job->extra->pdata[i], job->rate);
    g_mutex_unlock(&job->lock);
}

void migration_job_request_abort(MigrationJob *job, GError *why)
{
    g_mutex_lock(&job->lock);
    if (!job->abort_requested) {
        flight_recorder_event(job->recorder, "abort", "reason", why->message, NULL);
        job->abort_requested = TRUE;
        job->abort_reason = why;
        why = NULL;
    }
    g_cond_broadcast(&job->cond);
    g_mutex_unlock(&job->lock);
    g_clear_error(&why);
    /* Shuts the sockets down and tells the peer: never waits on it. */
    g_autoptr(GError) e = g_error_new_literal(FERRY_ERROR, FERRY_ERR_OPERATION_ABORTED,
                                              "migration aborted");
    migration_job_cut_channel(job, e);
}

gboolean migration_job_try_abort(MigrationJob *job, GError *why, GError **error)
{
    g_mutex_lock(&job->lock);
    gboolean finishing = job->finishing, postcopy = job->postcopy;
    g_mutex_unlock(&job->lock);
    if (postcopy) {
        /* libvirt's words */
        g_error_free(why);
        g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_INVALID,
                    "cannot abort migration in post-copy mode");
        return FALSE;
    }
    if (finishing) {
        g_error_free(why);
        g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_INVALID,
                    "the migration is in its finish phase: the VM's state is on the "
                    "destination already, too late to abort");
        return FALSE;
    }
    migration_job_request_abort(job, why);
    return TRUE;
}

gboolean migration_job_enter_finish(MigrationJob *job)
{
    g_mutex_lock(&job->lock);
    gboolean ok = !job->abort_requested;
    job->finishing = ok;
    g_mutex_unlock(&job->lock);
    return ok;
}

GError *migration_job_abort_error(MigrationJob *job)
{
    g_mutex_lock(&job->lock);
    GError *e = job->abort_requested ? g_error_copy(job->abort_reason) : NULL;
    g_mutex_unlock(&job->lock);
    return e;
}

/* A VMM that counts nothing on its receiving side (QEMU's destination) still
 * has its job show the bytes the channel delivered. */
static void fill_from_channel_locked(MigrationJob *job, DriverJobInfo *info)
{
    if (job->channel) {
        guint reconnections = 0;
        guint64 resent = 0;
        tunnel_channel_get_resume_stats(job->channel, &reconnections, &resent);
        if (reconnections || resent) {
            info->has_resume = TRUE;
            info->reconnections = reconnections;
            info->bytes_resent = resent;
        }
    }
    if (job->operation != DRIVER_JOB_OPERATION_MIGRATION_IN || !job->channel ||
        info->data_processed)
        return;
    guint64 out = 0, in = 0;
    tunnel_channel_get_bytes(job->channel, &out, &in);
    /* Every channel of the memory stream counts. */
    for (guint i = 0; job->memory_channels > 1 && job->extra && i < job->extra->len; i++) {
        guint64 o = 0, n = 0;
        if (i + 1 >= job->memory_first && job->extra->pdata[i]) {
            tunnel_channel_get_bytes(job->extra->pdata[i], &o, &n);
            in += n;
        }
    }
    info->data_processed = info->memory_processed = in;
}

void migration_job_update(MigrationJob *job, const DriverJobInfo *c)
{
    g_mutex_lock(&job->lock);
    DriverJobInfo *i = &job->info;
    i->time_elapsed_ms = (g_get_monotonic_time() - job->start_us) / 1000;
    i->data_total = c->data_total;
    i->data_processed = c->data_processed;
    i->data_remaining = c->data_remaining;
    if (i->has_disk) { /* the disks' mirrors count as data too */
        i->data_total += i->disk_total;
        i->data_processed += i->disk_processed;
        i->data_remaining += i->disk_remaining;
    }
    i->memory_total = c->memory_total;
    i->memory_processed = c->memory_processed;
    i->memory_remaining = c->memory_remaining;
    i->memory_bps = c->memory_bps;
    i->memory_dirty_rate = c->memory_dirty_rate;
    i->memory_iteration = c->memory_iteration;
    i->memory_page_size = c->memory_page_size;
    i->setup_time_ms = c->setup_time_ms;
    if (c->has_downtime) {
        i->downtime_ms = c->downtime_ms;
        i->has_downtime = TRUE;
    }
    if (c->has_compression) {
        i->has_compression = TRUE;
        i->compression_cache = c->compression_cache;
        i->compression_bytes = c->compression_bytes;
        i->compression_pages = c->compression_pages;
        i->compression_cache_misses = c->compression_cache_misses;
        i->compression_overflow = c->compression_overflow;
    }
    if (c->has_throttle) {
        i->has_throttle = TRUE;
        i->auto_converge_throttle = c->auto_converge_throttle;
    }
    if (c->has_postcopy) {
        i->has_postcopy = TRUE;
        i->memory_postcopy_requests = c->memory_postcopy_requests;
    }
    fill_from_channel_locked(job, i);
    flight_recorder_set_vmm(job->recorder, i);
    g_mutex_unlock(&job->lock);
}

void migration_job_get_info(MigrationJob *job, DriverJobInfo *info)
{
    g_mutex_lock(&job->lock);
    driver_job_info_copy(info, &job->info);
    fill_from_channel_locked(job, info);
    info->time_elapsed_ms = (g_get_monotonic_time() - job->start_us) / 1000;
    g_mutex_unlock(&job->lock);
}

MigrationWait migration_job_wait_turn(MigrationJob *job, gint64 deadline_us, guint watch,
                                      guint stall_s, GError **error)
{
    gboolean done = FALSE;
    g_autoptr(GError) ce = NULL;
    if (watch & MIGRATION_WAIT_CHANNEL) {
        done = migration_job_wait_channel(job, deadline_us, &ce);
        /* OPERATION_TIMEOUT is the deadline, unless the channel ended: then
         * it is the channel's own failure (a peer gone silent). */
        if (!done && g_error_matches(ce, FERRY_ERROR, FERRY_ERR_OPERATION_TIMEOUT)) {
            g_clear_error(&ce);
            if (migration_job_channel_ended(job))
                done = migration_job_wait_channel(job, g_get_monotonic_time(), &ce);
        }
    } else {
        g_mutex_lock(&job->lock);
        if (!job->abort_requested) /* woken at once by an abort */
            g_cond_wait_until(&job->cond, &job->lock, deadline_us);
        g_mutex_unlock(&job->lock);
    }
    if (watch & MIGRATION_WAIT_ABORT) {
        GError *aborted = migration_job_abort_error(job);
        if (aborted) {
            g_propagate_error(error, aborted);
            return MIGRATION_WAIT_FAILED;
        }
    }
    if (ce) {
        g_propagate_error(error, g_steal_pointer(&ce));
        return MIGRATION_WAIT_FAILED;
    }
    if (done)
        return MIGRATION_WAIT_DONE;
    if ((watch & MIGRATION_WAIT_EXTRA) && !migration_job_check_extra(job, error))
        return MIGRATION_WAIT_FAILED;
    if (!migration_job_check_moving(job, stall_s, error))
        return MIGRATION_WAIT_FAILED;
    return MIGRATION_WAIT_AGAIN;
}

gboolean migration_job_check_moving(MigrationJob *job, guint stall_s, GError **error)
{
    g_mutex_lock(&job->lock);
    g_autoptr(TunnelChannel) ch = job->channel ? tunnel_channel_ref(job->channel) : NULL;
    if (!ch || !stall_s || tunnel_channel_is_over(ch)) {
        g_mutex_unlock(&job->lock);
        return TRUE;
    }
    guint64 out = 0, in = 0;
    tunnel_channel_get_bytes(ch, &out, &in);
    /* Every channel counts: the VMM's stream waits while the disks copy. */
    for (guint i = 0; job->extra && i < job->extra->len; i++) {
        guint64 o = 0, n = 0;
        if (job->extra->pdata[i])
            tunnel_channel_get_bytes(job->extra->pdata[i], &o, &n);
        out += o;
        in += n;
    }
    gint64 now = g_get_monotonic_time();
    if (tunnel_channel_awaits_resume(ch)) {
        /* Its connection broke: the resume time bounds that, not the stall. */
        job->seen_bytes = out + in;
        job->seen_us = now;
        g_mutex_unlock(&job->lock);
        return TRUE;
    }
    if (!job->seen_us || out + in != job->seen_bytes) {
        job->seen_bytes = out + in;
        job->seen_us = now;
    }
    gboolean moving = now - job->seen_us < (gint64)stall_s * G_USEC_PER_SEC;
    if (moving) {
        g_mutex_unlock(&job->lock);
        return TRUE;
    }
    g_autoptr(GPtrArray) extra = g_ptr_array_new_with_free_func((GDestroyNotify)tunnel_channel_unref);
    for (guint i = 0; job->extra && i < job->extra->len; i++)
        if (job->extra->pdata[i])
            g_ptr_array_add(extra, tunnel_channel_ref(job->extra->pdata[i]));
    g_mutex_unlock(&job->lock);
    g_autofree char *sent = ferry_format_size(out);
    g_autofree char *received = ferry_format_size(in);
    GError *why = g_error_new(FERRY_ERROR, FERRY_ERR_OPERATION_TIMEOUT,
                              "the migration stalled: no data moved for %u s (%s sent, %s "
                              "received)",
                              stall_s, sent, received);
    /* A resumable channel whose peer's host went silent too is behind a
     * broken path its socket did not notice (a receiver with nothing to
     * send keeps no timer running): it waits the resume time instead, as
     * the peer, whose sends time out, reconnects. */
    guint silent_ms = stall_s * 1000 / 2;
    gboolean broke = tunnel_channel_break_silent_path(ch, silent_ms, why);
    for (guint i = 0; i < extra->len; i++)
        broke |= tunnel_channel_break_silent_path(extra->pdata[i], silent_ms, why);
    if (broke) {
        g_error_free(why);
        g_mutex_lock(&job->lock);
        job->seen_us = g_get_monotonic_time();
        g_mutex_unlock(&job->lock);
        return TRUE;
    }
    tunnel_channel_abort(ch, why);
    flight_recorder_error(job->recorder, "stall", why);
    g_propagate_error(error, why);
    return FALSE;
}

void migration_job_note_resume(MigrationJob *job)
{
    g_mutex_lock(&job->lock);
    g_autoptr(TunnelChannel) ch = job->channel ? tunnel_channel_ref(job->channel) : NULL;
    g_mutex_unlock(&job->lock);
    if (!ch || !job->recorder)
        return;
    gboolean waiting = tunnel_channel_awaits_resume(ch);
    guint count = 0;
    guint64 resent = 0;
    tunnel_channel_get_resume_stats(ch, &count, &resent);
    g_mutex_lock(&job->lock);
    gboolean broke = waiting && !job->resume_waiting;
    gboolean resumed = count != job->resume_count;
    job->resume_waiting = waiting;
    job->resume_count = count;
    g_mutex_unlock(&job->lock);
    if (broke)
        flight_recorder_event(job->recorder, "resume", "what",
                              "the connection broke: waiting for the daemons to reconnect", NULL);
    if (resumed) {
        g_autofree char *n = g_strdup_printf("%u", count);
        g_autofree char *r = g_strdup_printf("%" G_GUINT64_FORMAT, resent);
        flight_recorder_event(job->recorder, "resume", "what",
                              "the stream went on over a new connection", "#reconnections", n,
                              "#resent", r, NULL);
    }
}

char *migration_job_end_record(MigrationJob *job, const char *outcome, const GError *error)
{
    DriverJobInfo summary = {0};
    char *text = flight_recorder_finish(job->recorder, outcome, error, &summary);
    if (!text)
        return NULL;
    g_mutex_lock(&job->lock);
    driver_job_info_take_flight(&job->info, &summary);
    g_mutex_unlock(&job->lock);
    driver_job_info_clear(&summary);
    return text;
}

gboolean migration_job_claim(MigrationJob *job)
{
    g_mutex_lock(&job->lock);
    gboolean mine = !job->claimed;
    job->claimed = TRUE;
    g_cond_broadcast(&job->cond);
    g_mutex_unlock(&job->lock);
    return mine;
}
