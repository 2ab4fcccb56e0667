/* DomainDef: the configuration of one VM, parsed from and formatted to
 * libvirt-style domain XML (libxml2). What ferry does not model is kept as XML. */
#pragma once

#include <glib.h>
#include <libxml/tree.h>

#include "util/uuid.h"

#define DOMAIN_FERRY_NS_HREF "http://ferry.dev/xmlns/domain/1"
#define DOMAIN_FERRY_NS_PREFIX "ferry"

/* More vCPUs than this is refused as an unsupported configuration. */
#define DOMAIN_MAX_VCPUS 4096

/* virDomainXMLFlags, so the GET_XML_DESC flags pass straight through. */
typedef enum {
    DOMAIN_DEF_FORMAT_SECURE = 1 << 0,     /* accepted; ferry keeps no secrets in the def */
    DOMAIN_DEF_FORMAT_INACTIVE = 1 << 1,   /* no runtime id: the form `virsh define` takes */
    DOMAIN_DEF_FORMAT_UPDATE_CPU = 1 << 2, /* accepted, no effect */
    DOMAIN_DEF_FORMAT_MIGRATABLE = 1 << 3, /* the form sent to a migration destination */
} DomainDefFormatFlags;

typedef enum {
    DOMAIN_LIFECYCLE_DESTROY,
    DOMAIN_LIFECYCLE_RESTART,
    DOMAIN_LIFECYCLE_RENAME_RESTART,
    DOMAIN_LIFECYCLE_PRESERVE,
    DOMAIN_LIFECYCLE_COREDUMP_DESTROY, /* on_crash only */
    DOMAIN_LIFECYCLE_COREDUMP_RESTART, /* on_crash only */
} DomainLifecycleAction;

typedef enum {
    DOMAIN_VCPU_PLACEMENT_STATIC,
    DOMAIN_VCPU_PLACEMENT_AUTO,
} DomainVcpuPlacement;

typedef enum {
    DOMAIN_WORKLOAD_RANDOM,
    DOMAIN_WORKLOAD_SEQUENTIAL,
} DomainWorkloadPattern;

/* What the simulated guest does to its memory, from
 * <metadata><ferry:workload dirty-rate='200MiB' pattern='random' seed='42'/>.
 * All zero (rate 0, random, seed 0) is the idle default. */
typedef struct {
    guint64 dirty_rate; /* bytes the guest dirties per second; 0 = idle */
    DomainWorkloadPattern pattern;
    guint64 seed;
} DomainWorkload;

typedef struct _DomainDefKept DomainDefKept;

/* Lifetime: a DomainDef is a plain value owned by exactly one holder (a caller,
 * or a DomainObj as its persistent or live def); it is never shared, so it
 * needs no lock. Copy it with domain_def_copy() to hand a second holder one.
 * Callers may change the modelled fields directly. */
typedef struct {
    char *virt_type; /* <domain type='...'>, kept as given: sim, kvm, qemu ... */
    char *name;
    guint8 uuid[FERRY_UUID_LEN];
    char *title;       /* NULL if absent; never contains a newline */
    char *description; /* NULL if absent */
    guint64 memory_kib;         /* <memory>, the maximum */
    guint64 current_memory_kib; /* <currentMemory>, <= memory_kib */
    guint vcpus;                /* <vcpu>, the maximum, >= 1 */
    guint vcpus_current;        /* <vcpu current='...'>, 1..vcpus */
    DomainVcpuPlacement vcpu_placement;
    char *vcpu_cpuset; /* NULL if absent, kept as given */
    char *os_type;     /* "hvm" */
    char *os_arch;     /* defaults to the host's */
    char *os_machine;  /* NULL if absent */
    DomainLifecycleAction on_poweroff;
    DomainLifecycleAction on_reboot;
    DomainLifecycleAction on_crash;
    DomainWorkload workload;
    DomainDefKept *kept; /* private: the XML ferry keeps but does not model */
} DomainDef;

/* Parses a <domain> document. A missing <uuid> is generated; the id attribute
 * of a live document is ignored (the runtime id belongs to the DomainObj).
 * Errors: FERRY_ERR_XML_ERROR for malformed XML, a wrong structure or an
 * invalid value (the message names the element), FERRY_ERR_CONFIG_UNSUPPORTED
 * for well-formed settings ferry cannot run (an OS type other than hvm, an
 * unknown architecture, too many vCPUs). */
DomainDef *domain_def_parse_string(const char *xml, GError **error);

/* The same from a <domain> element of a larger document (the runtime state). */
DomainDef *domain_def_parse_node(xmlNode *node, GError **error);

/* Formats def as `virsh dumpxml` shows it, indented by two spaces per level.
 * id is the runtime id, written as <domain id='...'> unless it is -1 or the
 * flags ask for the INACTIVE or MIGRATABLE form. The output parses back to an
 * equal def. */
char *domain_def_format(const DomainDef *def, int id, guint flags);

/* Appends the formatted def to buf, every line indented by indent spaces. */
void domain_def_format_buf(const DomainDef *def, int id, guint flags, GString *buf, int indent);

DomainDef *domain_def_copy(const DomainDef *def);

/* TRUE if both format to the same inactive XML. */
gboolean domain_def_equal(const DomainDef *a, const DomainDef *b);

void domain_def_free(DomainDef *def);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(DomainDef, domain_def_free)

/* Parses "200MiB", "1G", "4096" (bytes) with libvirt's units (case-insensitive:
 * b/bytes, KB=1000, k/KiB=1024, MB, M/MiB, GB, G/GiB, TB, T/TiB, PB, P/PiB,
 * EB, E/EiB). what names the value in the FERRY_ERR_XML_ERROR message. */
gboolean domain_parse_size(const char *text, guint64 *bytes, const char *what, GError **error);

const char *domain_lifecycle_action_to_string(DomainLifecycleAction action);

/* Shared with the other XML files of the driver (runtime state): */

/* Parses a document without network access, entity expansion or DTDs. what
 * names it in the FERRY_ERR_XML_ERROR message ("malformed domain XML at line 3:
 * ..."). Free with xmlFreeDoc(). */
xmlDoc *domain_xml_read(const char *data, gsize len, const char *what, GError **error);

/* Appends ` name='value'`, escaped so that any string reads back unchanged. */
void domain_xml_append_attr(GString *buf, const char *name, const char *value);
