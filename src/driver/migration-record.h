/* The flight recorder: every migration, on both daemons, leaves a record of
 * what happened (the negotiated terms, each phase, the bytes and the pumps'
 * waits per 100 ms, the VMM's counters, errors, the abort or finish
 * handshake). The hot path only increments the channel's TunnelCounters; a
 * sampler thread per migration copies them every 100 ms into a bounded ring.
 * At the end the record is written as JSON lines (docs/debugging.md, format
 * version 1) into the record directory, of which the newest
 * flight_records_max are kept; a destination also keeps its last records in
 * memory so the source can fetch them (the source's file then holds both
 * sides). ferry-trace reads them. */
#pragma once

#include <glib.h>

#include "driver/driver.h"
#include "tunnel/tunnel-channel.h"

#define FLIGHT_RECORD_FORMAT "ferry-flight-record"
#define FLIGHT_RECORD_VERSION 1
#define FLIGHT_SAMPLE_MS 100
/* 5 minutes at 100 ms: the ring keeps the newest samples. */
#define FLIGHT_SAMPLES_MAX 3000
#define FLIGHT_EVENTS_MAX 400
/* A peer's record the source accepts into its own. */
#define FLIGHT_PEER_RECORD_MAX (4 * 1024 * 1024)

typedef struct FlightRecorder FlightRecorder;

/* Process-wide settings, set once at start (ferryd's config): where records
 * go (NULL: no files, memory only), how many are kept, and whether the
 * recorder runs at all (FALSE: no record, no counting in the pumps). */
void flight_recorder_configure(const char *dir, guint max_records, gboolean enabled);
gboolean flight_recorder_enabled(void);

/* side: "source" or "destination"; id: the migration's record id (the
 * source makes one and sends it in the cookie), NULL makes one. Returns
 * NULL when the recorder is off: every function below accepts NULL. */
FlightRecorder *flight_recorder_new(const char *side, const char *domain, const guint8 *uuid,
                                    const char *id);
void flight_recorder_free(FlightRecorder *fr);
const char *flight_recorder_get_id(FlightRecorder *fr);

/* Starts sampling ch every 100 ms (a reference is taken) until the end. */
void flight_recorder_set_channel(FlightRecorder *fr, TunnelChannel *ch);
/* The VMM's counters as the job's progress saw them. */
void flight_recorder_set_vmm(FlightRecorder *fr, const DriverJobInfo *counters);

/* Events. Each takes key/value string pairs ending with NULL; values are
 * written as JSON strings, except keys starting with '#' (the '#' dropped),
 * whose values are written as they are (numbers, true/false). */
void flight_recorder_event(FlightRecorder *fr, const char *ev, ...) G_GNUC_NULL_TERMINATED;
void flight_recorder_phase(FlightRecorder *fr, const char *phase, gboolean start);
/* An error: where (the phase or hop), the message, its errno (0: none
 * known) and the bytes moved so far. */
void flight_recorder_error(FlightRecorder *fr, const char *where, const GError *error);

/* Ends the record: stops sampling, adds the end event and writes the file.
 * outcome: "completed", "failed", "cancelled". Returns the record's text
 * (JSON lines) for the caller to keep (destination: for the source to
 * fetch). The summary for domjobinfo goes into info (stall times, the
 * bottleneck, the file). */
char *flight_recorder_finish(FlightRecorder *fr, const char *outcome, const GError *error,
                             DriverJobInfo *info);
/* Source: adds the destination's record (text as it sent it) with the
 * clock offset estimated from the fetch's round trip: the destination's
 * clock minus ours, +- uncertainty. Call before flight_recorder_finish. */
void flight_recorder_add_peer(FlightRecorder *fr, const char *text, gint64 offset_us,
                              gint64 uncertainty_us);

/* The same for a record already written (the source after an abort: the
 * destination is asked in the background). */
void flight_record_file_add_peer(const char *path, const char *text, gint64 offset_us,
                                 gint64 uncertainty_us);

/* Destination: the text of a finished record by id, kept in memory for the
 * source to fetch (the newest 16), or NULL. */
char *flight_recorder_lookup(const char *id);
void flight_recorder_keep(const char *id, const char *text);
/* Frees what flight_recorder_keep holds (daemon exit). */
void flight_recorder_shutdown(void);
