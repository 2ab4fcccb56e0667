/* DomainList: the thread-safe set of domains a driver knows, indexed by name,
 * UUID, runtime id and instance id, with libvirt's uniqueness rules. */
#pragma once

#include <glib.h>

#include "driver/domain-obj.h"

/* virConnectListAllDomainsFlags. Both flags of a pair = no filtering on it. */
typedef enum {
    DOMAIN_LIST_ACTIVE = 1 << 0,
    DOMAIN_LIST_INACTIVE = 1 << 1,
    DOMAIN_LIST_PERSISTENT = 1 << 2,
    DOMAIN_LIST_TRANSIENT = 1 << 3,
    DOMAIN_LIST_RUNNING = 1 << 4,
    DOMAIN_LIST_PAUSED = 1 << 5,
    DOMAIN_LIST_SHUTOFF = 1 << 6,
    DOMAIN_LIST_OTHER = 1 << 7,
    DOMAIN_LIST_MANAGEDSAVE = 1 << 8,
    DOMAIN_LIST_NO_MANAGEDSAVE = 1 << 9,
    DOMAIN_LIST_AUTOSTART = 1 << 10,
    DOMAIN_LIST_NO_AUTOSTART = 1 << 11,
    DOMAIN_LIST_HAS_SNAPSHOT = 1 << 12,
    DOMAIN_LIST_NO_SNAPSHOT = 1 << 13,
    DOMAIN_LIST_HAS_CHECKPOINT = 1 << 14,
    DOMAIN_LIST_NO_CHECKPOINT = 1 << 15,
} DomainListFilter;
#define DOMAIN_LIST_FILTERS_ALL 0xffffu

typedef enum {
    /* The def is the live def of a new running instance (create, or a start
     * from XML of a defined domain), not a persistent definition. */
    DOMAIN_LIST_ADD_LIVE = 1 << 0,
    /* An incoming instance (migration destination): live, and invisible to
     * name/UUID/id lookups and listings until domain_list_reveal(). */
    DOMAIN_LIST_ADD_HIDDEN = 1 << 1,
    /* With HIDDEN: the visible instance of the same domain may be running
     * (a local migration, both instances on this host). */
    DOMAIN_LIST_ADD_ALLOW_RUNNING_TWIN = 1 << 2,
} DomainListAddFlags;

/* Lifetime: created by the driver at start, freed at shutdown after every
 * worker has stopped; freeing drops the list's reference on each object. */
typedef struct _DomainList DomainList;

DomainList *domain_list_new(void);
void domain_list_free(DomainList *list);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(DomainList, domain_list_free)

/* Adds *def, taking it (*def = NULL) on success; on failure *def stays the
 * caller's. Returns the object locked and with a reference for the caller.
 *
 * Without flags (define): a new persistent domain, or the new persistent def
 * of the domain with the same name and UUID (the previous one goes to
 * *old_def if old_def is not NULL, else it is freed); a running transient
 * domain becomes persistent.
 * With LIVE: activates a new transient domain, or the existing inactive one.
 * With HIDDEN: always a new object, active and hidden.
 *
 * Errors, as libvirt: FERRY_ERR_OPERATION_FAILED "domain 'a' is already
 * defined with uuid U" (UUID taken by another name), "domain 'a' already
 * exists with uuid U" (name taken by another UUID); FERRY_ERR_OPERATION_INVALID
 * "domain 'a' is already active" (LIVE, or HIDDEN without
 * ALLOW_RUNNING_TWIN, while the domain runs), or a second incoming instance. */
DomainObj *domain_list_add(DomainList *list, DomainDef **def, guint flags, DomainDef **old_def,
                           GError **error);

/* Starts a new instance of the inactive obj (locked by the caller): takes
 * *live_def, allocates a runtime id and an instance id, and sets the state to
 * PAUSED/STARTING_UP until the caller says otherwise. */
gboolean domain_list_activate(DomainList *list, DomainObj *obj, DomainDef **live_def,
                              GError **error);

/* Ends obj's instance (locked by the caller): frees the live def and the
 * instance data, state SHUTOFF with the given reason. A transient or hidden
 * object then leaves the list, as in libvirt. */
void domain_list_deactivate(DomainList *list, DomainObj *obj, DomainShutoffReason reason);

/* Drops obj's persistent def (locked by the caller). An inactive object leaves
 * the list; an active one becomes transient and leaves when it stops. */
void domain_list_undefine(DomainList *list, DomainObj *obj);

/* Takes obj (locked by the caller) out of the list: no longer found, marked
 * removed. Its instance, if any, is the caller's to stop. */
void domain_list_remove(DomainList *list, DomainObj *obj);

/* Makes a hidden incoming instance (locked by the caller) the visible one.
 * A visible domain with the same UUID is displaced: an inactive one leaves the
 * list, a running one (the source of a local migration) becomes hidden and
 * transient. incoming keeps its persistent def if it has one, otherwise adopts
 * the displaced one's, and takes over its autostart and managed-save flags.
 * Locks the displaced object itself: the caller must not hold its lock. */
gboolean domain_list_reveal(DomainList *list, DomainObj *incoming, GError **error);

/* Re-attaches an instance found by a restarted daemon: like activate, but with
 * the runtime id and instance id it had. The domain with the same UUID, if
 * visible, must be inactive (it gets the instance) unless hidden is set.
 * Returns the object locked, with a reference for the caller. */
DomainObj *domain_list_restore(DomainList *list, DomainDef **live_def, int id,
                               const char *instance_id, gboolean hidden, GError **error);

/* Lookups of visible domains. Each returns the object locked, with a
 * reference, or NULL and FERRY_ERR_NO_DOMAIN ("no domain with matching name
 * 'x'"). Do not call them while holding another domain's lock. */
DomainObj *domain_list_lookup_by_name(DomainList *list, const char *name, GError **error);
DomainObj *domain_list_lookup_by_uuid(DomainList *list, const guint8 *uuid, GError **error);
DomainObj *domain_list_lookup_by_id(DomainList *list, int id, GError **error);
/* Finds hidden instances too. */
DomainObj *domain_list_lookup_by_instance(DomainList *list, const char *instance_id,
                                          GError **error);

/* The visible domains that pass the DomainListFilter flags (0 = all), sorted
 * by name, each with a reference (unlocked). Locks every object in turn, so
 * the caller must hold no domain lock. Unknown flags: FERRY_ERR_INVALID_ARG. */
GPtrArray *domain_list_collect(DomainList *list, guint filter, GError **error);

/* Every running instance, hidden ones included, each with a reference. */
GPtrArray *domain_list_get_instances(DomainList *list);

int domain_list_count_active(DomainList *list);
int domain_list_count_inactive(DomainList *list);
/* Runtime ids of the visible active domains, ascending. */
GArray *domain_list_active_ids(DomainList *list);
/* Names of the visible inactive domains, sorted; NULL-terminated. */
char **domain_list_inactive_names(DomainList *list);
