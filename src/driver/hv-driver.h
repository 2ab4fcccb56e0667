/* The hypervisor driver base: the VMM-independent domain lifecycle every VMM
 * driver shares (lookups, lists, define/undefine, create, autostart, state and
 * reasons, events, the domain store, reattaching running VMs after a daemon
 * restart, crash reporting). A VMM driver supplies a table of hooks for what
 * only it knows: spawning its VMM, reattaching to one, killing, pausing,
 * powering down, and what its processes cost. */
#pragma once

#include "driver/domain-list.h"
#include "driver/domain-store.h"
#include "driver/driver.h"
#include "driver/vmm-log.h"

/* virDomainEventType and the details ferry sends. */
enum {
    HV_EVENT_DEFINED = 0,
    HV_EVENT_UNDEFINED = 1,
    HV_EVENT_STARTED = 2,
    HV_EVENT_SUSPENDED = 3,
    HV_EVENT_RESUMED = 4,
    HV_EVENT_STOPPED = 5,
    HV_EVENT_SHUTDOWN = 6,
};
enum { HV_DEFINED_ADDED = 0, HV_DEFINED_UPDATED = 1 };
enum { HV_STARTED_BOOTED = 0, HV_STARTED_MIGRATED = 1 };
enum { HV_SUSPENDED_PAUSED = 0, HV_SUSPENDED_MIGRATED = 1 };
enum { HV_RESUMED_UNPAUSED = 0, HV_RESUMED_MIGRATED = 1 };
enum {
    HV_STOPPED_SHUTDOWN = 0,
    HV_STOPPED_DESTROYED = 1,
    HV_STOPPED_CRASHED = 2,
    HV_STOPPED_MIGRATED = 3,
    HV_STOPPED_FAILED = 5,
};
enum { HV_SHUTDOWN_FINISHED = 0 };

typedef struct HvDriver HvDriver;

/* What a VMM driver does for the base. Every hook that takes a DomainObj is
 * called with the object locked. The driver keeps its per-instance data
 * (its VM handle) as the object's priv; the base never looks inside it. */
typedef struct {
    const char *vmm_name; /* for messages: "ferry-vmm", "QEMU" */

    /* Parses domain XML into a def this VMM can run, refusing what it cannot
     * (naming the element or attribute). NULL: domain_def_parse_string(). */
    DomainDef *(*parse_xml)(HvDriver *hv, const char *xml, GError **error);
    /* Starts the VMM for the activated obj (its live def) and sets obj's priv,
     * pid and qmp_path. incoming: paused, waiting for a migration stream. On
     * failure nothing is left running. */
    gboolean (*spawn)(HvDriver *hv, DomainObj *obj, gboolean incoming, GError **error);
    /* Reconnects to obj's VMM left running by a previous daemon (obj->pid,
     * obj->qmp_path) and sets obj's priv. */
    gboolean (*reattach)(HvDriver *hv, DomainObj *obj, GError **error);
    /* The VMM's run status: "running", "paused", "postmigrate" ... */
    char *(*query_status)(HvDriver *hv, DomainObj *obj, GError **error);
    /* Kills obj's VMM (marking that its end is ours, not a crash); wait: until
     * the process is gone (bounded). No priv: kills obj->pid if alive. */
    void (*kill)(HvDriver *hv, DomainObj *obj, gboolean wait);
    /* TRUE if the driver itself is ending obj's VMM (kill, migration hand-over),
     * so its end is no crash. */
    gboolean (*is_stopping)(DomainObj *obj);
    /* The daemon stops: drop the connection to obj's VMM, leave it running,
     * and make sure no "VM gone" notice follows. */
    void (*detach)(HvDriver *hv, DomainObj *obj);
    /* Pause, continue, ACPI power-down, reset of the running guest. */
    gboolean (*suspend)(HvDriver *hv, DomainObj *obj, GError **error);
    gboolean (*resume)(HvDriver *hv, DomainObj *obj, GError **error);
    gboolean (*shutdown)(HvDriver *hv, DomainObj *obj, GError **error);
    gboolean (*reboot)(HvDriver *hv, DomainObj *obj, GError **error); /* optional */
    guint64 (*cpu_time_ns)(DomainObj *obj);
    /* A migration job runs on obj (pause/resume are refused then), and
     * aborting it because the domain is destroyed. Both optional. */
    gboolean (*has_job)(DomainObj *obj);
    void (*abort_job)(HvDriver *hv, DomainObj *obj, const char *why);
    /* Runtime files of an instance besides its state (".qmp", ".pid"),
     * removed when it ends; NULL-terminated. */
    const char *const *runtime_suffixes;
    /* The last words of a VMM that ended unexpectedly (its log's last line),
     * for the crash report; optional, caller frees. */
    char *(*crash_reason)(HvDriver *hv, DomainObj *obj);
} HvDriverHooks;

struct HvDriver {
    Driver base;
    const HvDriverHooks *hooks;
    gpointer owner; /* the concrete driver's state (SimDriver, QemuDriver) */
    DomainList *list;
    DomainStore *store;
    VmmLogConfig *log; /* where the VMMs' logs go, by domain (vmm-log.h) */
    GThreadPool *reaper; /* handles "VM gone" notices off the monitor threads */
};

static inline HvDriver *hv_driver_of(Driver *drv)
{
    return drv->priv;
}

/* Fills the lifecycle entries of ops (lookups, lists, queries, define,
 * create, destroy, suspend, resume, shutdown, autostart, and reboot if the
 * hooks have one); the caller sets the rest (name, type, capabilities,
 * migration). */
void hv_driver_fill_ops(DriverOps *ops, const HvDriverHooks *hooks);

/* Sets up hv (embedded in the concrete driver, owner its state), loads the
 * configs and reattaches running instances. log: where the VMMs' logs go
 * (copied). On failure call hv_driver_cleanup(). */
gboolean hv_driver_init(HvDriver *hv, const DriverOps *ops, const HvDriverHooks *hooks,
                        gpointer owner, const char *config_dir, const char *run_dir,
                        const VmmLogConfig *log, GError **error);
/* Starts the autostart domains with the driver's create entry (which may
 * restore a managed save image): once the driver is complete. */
void hv_driver_autostart(HvDriver *hv);
/* First half of the shutdown: detaches from every running VM (they keep
 * running) and waits for the reaper. */
void hv_driver_detach_all(HvDriver *hv);
/* Second half: frees the list, the store and the Driver. */
void hv_driver_cleanup(HvDriver *hv);

/* A VM's monitor connection ended (any thread): the guest powered off
 * (guest_shutdown) or the VMM died. Handled on the reaper thread. */
void hv_driver_vm_gone(HvDriver *hv, const char *instance_id, gboolean guest_shutdown,
                       const char *why);

/* obj's VMM reported (any thread) that its guest paused or continued on its
 * own (QMP STOP/RESUME): on the reaper thread, the state is reconciled with
 * the VMM's status and listeners are told. Ignored while a job runs. */
void hv_driver_vm_run_state_changed(HvDriver *hv, const char *instance_id);
/* The guest began powering off (QMP SHUTDOWN): the SHUTDOWN event. */
void hv_driver_vm_guest_shutdown(HvDriver *hv, const char *instance_id);

/* Helpers for the concrete drivers (their migration code). */

/* Looks up the domain a DriverDomain names (by UUID); locked + referenced. */
DomainObj *hv_lookup(HvDriver *hv, const DriverDomain *dom, GError **error);
/* Fills a DriverDomain from obj (locked). */
void hv_domain_ref_of(DomainObj *obj, DriverDomain *out);
DriverDomain *hv_domain_ref_new(DomainObj *obj);
void hv_emit(HvDriver *hv, DomainObj *obj, int event, int detail);
gboolean hv_check_active(DomainObj *obj, GError **error);
/* Parses XML with the driver's parse_xml hook. */
DomainDef *hv_parse_xml(HvDriver *hv, const char *xml, GError **error);
/* The log of domain name's VMM (the driver's spawn hook hands it to the VMM;
 * hv_instance_start has rotated it). */
char *hv_log_path(HvDriver *hv, const char *name);
/* Spawns the VMM for the activated obj (locked) and records the instance:
 * state RUNNING/BOOTED, or PAUSED/MIGRATION when incoming; runtime state saved. */
gboolean hv_instance_start(HvDriver *hv, DomainObj *obj, gboolean incoming, GError **error);
/* Ends obj's instance (locked): VMM connection dropped, runtime files removed,
 * obj deactivated with reason (which the domain's log records). The VMM process must already be gone or be
 * killed by the caller first. */
void hv_instance_end(HvDriver *hv, DomainObj *obj, DomainShutoffReason reason);
/* Sets obj's state and saves the runtime state (a failure is logged). */
void hv_set_state(HvDriver *hv, DomainObj *obj, DomainState state, int reason);
