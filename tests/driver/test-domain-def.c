/* Domain XML: round trips, defaults, units, kept XML, and every kind of bad
 * XML refused with a message that names the element. */
#include "test-helpers.h"

#include <dlfcn.h>
#include <stdio.h>
#include <libxml/xmlstring.h>
#include <sys/utsname.h>
#include <unistd.h>

/* Counts libxml2 string comparisons made by the code under test (it is
 * linked into this program, so this definition is the one it calls): the
 * measure of parsing work that cannot vary with the machine's load. */
static guint64 str_equal_calls;

int xmlStrEqual(const xmlChar *a, const xmlChar *b)
{
    static int (*real)(const xmlChar *, const xmlChar *);
    if (!real)
        real = (int (*)(const xmlChar *, const xmlChar *))dlsym(RTLD_NEXT, "xmlStrEqual");
    str_equal_calls++;
    return real(a, b);
}

/* A document with every modelled element, metadata of two namespaces (one
 * declared on the root), unknown top-level elements and devices. */
static const char *const full_xml =
    "<domain type='kvm' id='7' xmlns:app='http://example.com/app'>\n"
    "  <name>vm1</name>\n"
    "  <uuid>c7a5fdbd-edaf-9455-926a-d65c16db1809</uuid>\n"
    "  <title>web &amp; mail</title>\n"
    "  <description>line one\nline 'two' &lt;x&gt;</description>\n"
    "  <metadata>\n"
    "    <app:owner team=\"ops\"><app:contact>a@b.c</app:contact></app:owner>\n"
    "    <ferry:workload xmlns:ferry='http://ferry.dev/xmlns/domain/1' dirty-rate='200MiB' "
    "pattern='sequential' seed='42'/>\n"
    "    <other xmlns='urn:other'><x a='1'/></other>\n"
    "  </metadata>\n"
    "  <memory unit='GiB'>2</memory>\n"
    "  <currentMemory unit='MiB'>1024</currentMemory>\n"
    "  <vcpu placement='static' current='2' cpuset='0-3'>4</vcpu>\n"
    "  <os>\n"
    "    <type arch='x86_64' machine='pc-i440fx-7.2'>hvm</type>\n"
    "    <boot dev='hd'/>\n"
    "  </os>\n"
    "  <features><acpi/><apic/></features>\n"
    "  <clock offset='utc'/>\n"
    "  <on_poweroff>destroy</on_poweroff>\n"
    "  <on_reboot>restart</on_reboot>\n"
    "  <on_crash>coredump-restart</on_crash>\n"
    "  <devices>\n"
    "    <!-- the boot disk -->\n"
    "    <disk type='file' device='disk'>\n"
    "      <source file='/var/lib/ferry/vm1.img'/>\n"
    "      <target dev='vda' bus='virtio'/>\n"
    "    </disk>\n"
    "    <interface type='network'><source network='default'/></interface>\n"
    "  </devices>\n"
    "  <seclabel type='none'/>\n"
    "</domain>\n";

/* How ferry writes it back: libvirt's element order and layout. */
static const char *const full_xml_formatted =
    "<domain type='kvm' id='7'>\n"
    "  <name>vm1</name>\n"
    "  <uuid>c7a5fdbd-edaf-9455-926a-d65c16db1809</uuid>\n"
    "  <title>web &amp; mail</title>\n"
    "  <description>line one\nline 'two' &lt;x&gt;</description>\n"
    "  <metadata>\n"
    "    <ferry:workload xmlns:ferry='http://ferry.dev/xmlns/domain/1' dirty-rate='200MiB' "
    "pattern='sequential' seed='42'/>\n"
    "    <app:owner xmlns:app='http://example.com/app' team='ops'>\n"
    "      <app:contact>a@b.c</app:contact>\n"
    "    </app:owner>\n"
    "    <other xmlns='urn:other'>\n"
    "      <x a='1'/>\n"
    "    </other>\n"
    "  </metadata>\n"
    "  <memory unit='KiB'>2097152</memory>\n"
    "  <currentMemory unit='KiB'>1048576</currentMemory>\n"
    "  <vcpu placement='static' cpuset='0-3' current='2'>4</vcpu>\n"
    "  <os>\n"
    "    <type arch='x86_64' machine='pc-i440fx-7.2'>hvm</type>\n"
    "    <boot dev='hd'/>\n"
    "  </os>\n"
    "  <features>\n"
    "    <acpi/>\n"
    "    <apic/>\n"
    "  </features>\n"
    "  <clock offset='utc'/>\n"
    "  <on_poweroff>destroy</on_poweroff>\n"
    "  <on_reboot>restart</on_reboot>\n"
    "  <on_crash>coredump-restart</on_crash>\n"
    "  <devices>\n"
    "    <!-- the boot disk -->\n"
    "    <disk type='file' device='disk'>\n"
    "      <source file='/var/lib/ferry/vm1.img'/>\n"
    "      <target dev='vda' bus='virtio'/>\n"
    "    </disk>\n"
    "    <interface type='network'>\n"
    "      <source network='default'/>\n"
    "    </interface>\n"
    "  </devices>\n"
    "  <seclabel type='none'/>\n"
    "</domain>\n";

static DomainDef *parse_ok(const char *xml)
{
    GError *err = NULL;
    DomainDef *def = domain_def_parse_string(xml, &err);
    ck_assert_no_error(err);
    ck_assert_ptr_nonnull(def);
    return def;
}

/* format -> parse -> format gives the same text, and an equal def. */
static void assert_round_trip(const DomainDef *def, int id, guint flags)
{
    g_autofree char *once = domain_def_format(def, id, flags);
    g_autoptr(DomainDef) back = parse_ok(once);
    g_autofree char *twice = domain_def_format(back, id, flags);
    ck_assert_str_eq(once, twice);
    ck_assert(domain_def_equal(def, back));
}

START_TEST(test_full_xml_formats_like_libvirt_and_round_trips)
{
    g_autoptr(DomainDef) def = parse_ok(full_xml);
    ck_assert_str_eq(def->virt_type, "kvm");
    ck_assert_str_eq(def->name, "vm1");
    ck_assert_str_eq(def->title, "web & mail");
    ck_assert_str_eq(def->description, "line one\nline 'two' <x>");
    ck_assert_uint_eq(def->memory_kib, 2097152);
    ck_assert_uint_eq(def->current_memory_kib, 1048576);
    ck_assert_uint_eq(def->vcpus, 4);
    ck_assert_uint_eq(def->vcpus_current, 2);
    ck_assert_str_eq(def->vcpu_cpuset, "0-3");
    ck_assert_str_eq(def->os_arch, "x86_64");
    ck_assert_str_eq(def->os_machine, "pc-i440fx-7.2");
    ck_assert_int_eq(def->on_crash, DOMAIN_LIFECYCLE_COREDUMP_RESTART);
    ck_assert_uint_eq(def->workload.dirty_rate, 200ull * 1024 * 1024);
    ck_assert_int_eq(def->workload.pattern, DOMAIN_WORKLOAD_SEQUENTIAL);
    ck_assert_uint_eq(def->workload.seed, 42);

    g_autofree char *xml = domain_def_format(def, 7, 0);
    ck_assert_str_eq(xml, full_xml_formatted);
    assert_round_trip(def, 7, 0);
    assert_round_trip(def, -1, DOMAIN_DEF_FORMAT_INACTIVE);
}
END_TEST

/* What `virsh dumpxml` printed for libvirt's own test driver domain. */
START_TEST(test_libvirt_dumpxml_output_is_accepted_and_kept)
{
    static const char *const libvirt_xml =
        "<domain type='test' id='1'>\n"
        "  <name>test</name>\n"
        "  <uuid>6695eb01-f6a4-8304-79aa-97f2502e193f</uuid>\n"
        "  <memory unit='KiB'>8388608</memory>\n"
        "  <currentMemory unit='KiB'>2097152</currentMemory>\n"
        "  <vcpu placement='static'>2</vcpu>\n"
        "  <os>\n"
        "    <type arch='i686'>hvm</type>\n"
        "    <boot dev='hd'/>\n"
        "  </os>\n"
        "  <clock offset='utc'/>\n"
        "  <on_poweroff>destroy</on_poweroff>\n"
        "  <on_reboot>restart</on_reboot>\n"
        "  <on_crash>destroy</on_crash>\n"
        "  <devices>\n"
        "    <disk type='file' device='disk'>\n"
        "      <source file='/guest/diskimage1'/>\n"
        "      <target dev='vda' bus='virtio'/>\n"
        "      <address type='pci' domain='0x0000' bus='0x01' slot='0x00' function='0x0'/>\n"
        "    </disk>\n"
        "    <memballoon model='virtio'>\n"
        "      <address type='pci' domain='0x0000' bus='0x00' slot='0x02' function='0x0'/>\n"
        "    </memballoon>\n"
        "  </devices>\n"
        "</domain>\n";
    g_autoptr(DomainDef) def = parse_ok(libvirt_xml);
    g_autofree char *xml = domain_def_format(def, 1, 0);
    ck_assert_str_eq(xml, libvirt_xml);
}
END_TEST

START_TEST(test_minimal_xml_gets_libvirt_defaults)
{
    g_autoptr(DomainDef) def =
        parse_ok("<domain type='sim'><name>m</name><memory>1024</memory></domain>");
    ck_assert(!ferry_uuid_is_null(def->uuid)); /* generated */
    ck_assert_uint_eq(def->memory_kib, 1024);  /* KiB by default */
    ck_assert_uint_eq(def->current_memory_kib, 1024);
    ck_assert_uint_eq(def->vcpus, 1);
    ck_assert_uint_eq(def->vcpus_current, 1);
    ck_assert_int_eq(def->vcpu_placement, DOMAIN_VCPU_PLACEMENT_STATIC);
    ck_assert_str_eq(def->os_type, "hvm");
    struct utsname u;
    uname(&u);
    if (g_str_equal(u.machine, "x86_64") || g_str_equal(u.machine, "aarch64"))
        ck_assert_str_eq(def->os_arch, u.machine);
    ck_assert_ptr_null(def->os_machine);
    ck_assert_ptr_null(def->title);
    ck_assert_int_eq(def->on_poweroff, DOMAIN_LIFECYCLE_DESTROY);
    ck_assert_int_eq(def->on_reboot, DOMAIN_LIFECYCLE_RESTART);
    ck_assert_int_eq(def->on_crash, DOMAIN_LIFECYCLE_DESTROY);
    ck_assert_uint_eq(def->workload.dirty_rate, 0); /* idle */

    g_autofree char *xml = domain_def_format(def, -1, 0);
    ck_assert_ptr_null(strstr(xml, "<metadata>")); /* idle workload: nothing to say */
    ck_assert_ptr_nonnull(strstr(xml, "<vcpu placement='static'>1</vcpu>"));
    assert_round_trip(def, -1, 0);

    /* A UUID that is given is kept, even the null one. */
    g_autoptr(DomainDef) null_uuid = parse_ok("<domain type='sim'><name>m</name><memory>1024"
                                              "</memory><uuid>00000000000000000000000000000000"
                                              "</uuid></domain>");
    ck_assert(ferry_uuid_is_null(null_uuid->uuid));

    /* Two parses without <uuid> get two different UUIDs. */
    g_autoptr(DomainDef) other =
        parse_ok("<domain type='sim'><name>m</name><memory>1024</memory></domain>");
    ck_assert_mem_ne(def->uuid, other->uuid, FERRY_UUID_LEN);
}
END_TEST

START_TEST(test_memory_units_scale_like_libvirt)
{
    static const struct {
        const char *unit;
        const char *value;
        guint64 kib;
    } cases[] = {
        {"b", "1024", 1},
        {"bytes", "1025", 2}, /* rounded up to whole KiB */
        {"KB", "1024", 1000},
        {"k", "7", 7},
        {"KiB", "7", 7},
        {"kib", "7", 7}, /* units are case-insensitive */
        {"MB", "1", 977},
        {"M", "3", 3072},
        {"MiB", "3", 3072},
        {"GB", "1", 976563},
        {"G", "2", 2097152},
        {"GiB", "2", 2097152},
        {"TB", "1", 976562500},
        {"T", "1", 1073741824},
        {"TiB", "1", 1073741824},
        {NULL, " 4096 ", 4096}, /* surrounding blanks are fine */
    };
    for (gsize i = 0; i < G_N_ELEMENTS(cases); i++) {
        g_autofree char *unit =
            cases[i].unit ? g_strdup_printf(" unit='%s'", cases[i].unit) : g_strdup("");
        g_autofree char *xml = g_strdup_printf(
            "<domain type='sim'><name>u</name><memory%s>%s</memory></domain>", unit,
            cases[i].value);
        g_autoptr(DomainDef) def = parse_ok(xml);
        ck_assert_msg(def->memory_kib == cases[i].kib, "%s %s: got %" G_GUINT64_FORMAT " KiB",
                      cases[i].value, cases[i].unit, def->memory_kib);
        assert_round_trip(def, -1, 0);
    }
}
END_TEST

START_TEST(test_workload_rate_units_and_formatting)
{
    static const struct {
        const char *rate;
        guint64 bytes;
        const char *formatted;
    } cases[] = {
        {"200MiB", 200ull << 20, "200MiB"},
        {"1G", 1ull << 30, "1GiB"},
        {"4096", 4096, "4KiB"},
        {"1000", 1000, "1000"},
        {"1500KB", 1500000, "1500000"},
        {"2 MiB", 2ull << 20, "2MiB"},
    };
    for (gsize i = 0; i < G_N_ELEMENTS(cases); i++) {
        g_autofree char *xml = g_strdup_printf(
            "<domain type='sim'><name>w</name><memory>1024</memory><metadata>"
            "<f:workload xmlns:f='http://ferry.dev/xmlns/domain/1' dirty-rate='%s'/>"
            "</metadata></domain>",
            cases[i].rate);
        g_autoptr(DomainDef) def = parse_ok(xml);
        ck_assert_uint_eq(def->workload.dirty_rate, cases[i].bytes);
        ck_assert_int_eq(def->workload.pattern, DOMAIN_WORKLOAD_RANDOM);
        ck_assert_uint_eq(def->workload.seed, 0);
        g_autofree char *out = domain_def_format(def, -1, 0);
        g_autofree char *expect = g_strdup_printf(
            "<ferry:workload xmlns:ferry='http://ferry.dev/xmlns/domain/1' dirty-rate='%s' "
            "pattern='random' seed='0'/>",
            cases[i].formatted);
        ck_assert_msg(strstr(out, expect), "%s not in\n%s", expect, out);
        assert_round_trip(def, -1, 0);
    }
}
END_TEST

START_TEST(test_metadata_keeps_first_namespaced_child_per_namespace)
{
    g_autoptr(DomainDef) def = parse_ok(
        "<domain type='sim'><name>md</name><memory>1024</memory><metadata>"
        "<plain>dropped: no namespace</plain>"
        "<a:one xmlns:a='urn:a'>first</a:one>"
        "<a:two xmlns:a='urn:a'>second of urn:a: dropped</a:two>"
        "<b:x xmlns:b='urn:b' xmlns:c='urn:c' c:attr='v'>mixed <b:y/> text</b:x>"
        "</metadata></domain>");
    g_autofree char *xml = domain_def_format(def, -1, 0);
    ck_assert_ptr_null(strstr(xml, "plain"));
    ck_assert_ptr_null(strstr(xml, "a:two"));
    ck_assert_ptr_nonnull(strstr(xml, "    <a:one xmlns:a='urn:a'>first</a:one>\n"));
    /* Mixed content is kept exactly, whitespace included. */
    ck_assert_ptr_nonnull(
        strstr(xml, "<b:x xmlns:b='urn:b' xmlns:c='urn:c' c:attr='v'>mixed <b:y/> text</b:x>"));
    assert_round_trip(def, -1, 0);
}
END_TEST

START_TEST(test_unknown_elements_are_kept_in_libvirt_order)
{
    g_autoptr(DomainDef) def = parse_ok(
        "<domain type='sim' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>"
        "<qemu:commandline><qemu:arg value='-S'/></qemu:commandline>"
        "<pm><suspend-to-mem enabled='no'/></pm>"
        "<cpu mode='host-model'/>"
        "<memoryBacking><hugepages/></memoryBacking>"
        "<genid>43dc0cf8-809b-4adb-9bea-a9abb5f3d90d</genid>"
        "<name>order</name><memory>1024</memory>"
        "<iothreads>2</iothreads>"
        "<weird attr='x &amp; &apos;y&apos;&#10;z'/>"
        "</domain>");
    g_autofree char *xml = domain_def_format(def, -1, 0);
    const char *order[] = {"<uuid>",        "<genid>",    "<memory ",
                           "<memoryBacking>", "<vcpu ",   "<iothreads>",
                           "<os>",           "<cpu ",     "<on_poweroff>",
                           "<pm>",           "<qemu:commandline", "<weird "};
    const char *prev = xml;
    for (gsize i = 0; i < G_N_ELEMENTS(order); i++) {
        const char *at = strstr(xml, order[i]);
        ck_assert_msg(at != NULL, "%s missing in\n%s", order[i], xml);
        ck_assert_msg(at >= prev, "%s out of order in\n%s", order[i], xml);
        prev = at;
    }
    ck_assert_ptr_nonnull(strstr(
        xml, "<qemu:commandline xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>"));
    ck_assert_ptr_nonnull(strstr(xml, "<weird attr='x &amp; &apos;y&apos;&#10;z'/>"));
    assert_round_trip(def, -1, 0);
}
END_TEST

START_TEST(test_names_with_markup_characters_round_trip)
{
    g_autoptr(DomainDef) def = parse_ok("<domain type='sim'><name>a &amp; &lt;b&gt; 'c' \"d\" "
                                        "</name><memory>1024</memory></domain>");
    ck_assert_str_eq(def->name, "a & <b> 'c' \"d\" "); /* not stripped, as libvirt */
    assert_round_trip(def, -1, 0);
}
END_TEST

START_TEST(test_live_form_has_id_inactive_and_migratable_forms_do_not)
{
    g_autoptr(DomainDef) def = parse_ok(full_xml);
    g_autofree char *live = domain_def_format(def, 3, 0);
    g_autofree char *inactive = domain_def_format(def, 3, DOMAIN_DEF_FORMAT_INACTIVE);
    g_autofree char *migratable = domain_def_format(def, 3, DOMAIN_DEF_FORMAT_MIGRATABLE);
    g_autofree char *stopped = domain_def_format(def, -1, 0);
    ck_assert(g_str_has_prefix(live, "<domain type='kvm' id='3'>\n"));
    ck_assert(g_str_has_prefix(inactive, "<domain type='kvm'>\n"));
    ck_assert(g_str_has_prefix(migratable, "<domain type='kvm'>\n"));
    ck_assert(g_str_has_prefix(stopped, "<domain type='kvm'>\n"));
    /* The workload travels with a migrating domain. */
    ck_assert_ptr_nonnull(strstr(migratable, "dirty-rate='200MiB'"));
    /* The id of a live document is not part of the def. */
    g_autoptr(DomainDef) back = parse_ok(live);
    ck_assert(domain_def_equal(def, back));
}
END_TEST

START_TEST(test_copy_is_deep_and_equal)
{
    g_autoptr(DomainDef) def = parse_ok(full_xml);
    g_autoptr(DomainDef) copy = domain_def_copy(def);
    ck_assert(domain_def_equal(def, copy));
    g_free(copy->name);
    copy->name = g_strdup("renamed");
    copy->memory_kib = 1;
    ck_assert_str_eq(def->name, "vm1");
    ck_assert(!domain_def_equal(def, copy));
    /* The kept XML was copied too: freeing the original leaves the copy whole. */
    g_clear_pointer(&def, domain_def_free);
    g_autofree char *xml = domain_def_format(copy, -1, 0);
    ck_assert_ptr_nonnull(strstr(xml, "<app:contact>a@b.c</app:contact>"));
    ck_assert_ptr_nonnull(strstr(xml, "<target dev='vda' bus='virtio'/>"));
}
END_TEST

/* ---- bad XML ---------------------------------------------------------------- */

#define DOM(body) "<domain type='sim'>" body "</domain>"
#define NAMED(body) DOM("<name>vm</name><memory>1024</memory>" body)

static const struct {
    const char *xml;
    int code;
    const char *message;
} bad_cases[] = {
    {"<domain type='sim'><name>x</name>", FERRY_ERR_XML_ERROR, "malformed domain XML at line 1"},
    {"", FERRY_ERR_XML_ERROR, "malformed domain XML"},
    {"<foo/>", FERRY_ERR_XML_ERROR, "expected <domain> as root element, found <foo>"},
    {"<x:domain xmlns:x='urn:x'/>", FERRY_ERR_XML_ERROR,
     "expected <domain> as root element, found <x:domain>"},
    {"<!DOCTYPE domain [<!ENTITY e 'x'>]><domain type='sim'/>", FERRY_ERR_XML_ERROR,
     "a DOCTYPE is not allowed in domain XML"},
    {"<domain><name>vm</name><memory>1</memory></domain>", FERRY_ERR_XML_ERROR,
     "missing attribute 'type' in <domain>"},
    {"<domain type='a b'/>", FERRY_ERR_XML_ERROR,
     "invalid value 'a b' for attribute 'type' of <domain>"},
    {DOM("<memory>1024</memory>"), FERRY_ERR_XML_ERROR, "missing <name> element in domain XML"},
    {DOM("<name></name><memory>1024</memory>"), FERRY_ERR_XML_ERROR,
     "empty <name> element in domain XML"},
    {DOM("<name>a/b</name><memory>1024</memory>"), FERRY_ERR_XML_ERROR,
     "invalid value 'a/b' for <name>: a domain name cannot contain '/'"},
    {DOM("<name>a&#9;b</name><memory>1024</memory>"), FERRY_ERR_XML_ERROR,
     "invalid value 'a\\tb' for <name>: a domain name cannot contain control characters"},
    {DOM("<name>a</name><name>b</name><memory>1024</memory>"), FERRY_ERR_XML_ERROR,
     "duplicate <name> element in domain XML"},
    {DOM("<name>vm</name>"), FERRY_ERR_XML_ERROR, "missing <memory> element in domain XML"},
    {DOM("<name>vm</name><memory>abc</memory>"), FERRY_ERR_XML_ERROR,
     "invalid value 'abc' for <memory>: expected a number"},
    {DOM("<name>vm</name><memory>-1</memory>"), FERRY_ERR_XML_ERROR,
     "invalid value '-1' for <memory>: expected a number"},
    {DOM("<name>vm</name><memory unit='XB'>1</memory>"), FERRY_ERR_XML_ERROR,
     "unknown unit 'XB' in <memory unit='XB'>"},
    {DOM("<name>vm</name><memory>0</memory>"), FERRY_ERR_XML_ERROR,
     "invalid value '0' for <memory>"},
    {DOM("<name>vm</name><memory unit='EiB'>100</memory>"), FERRY_ERR_XML_ERROR,
     "invalid value '100' for <memory>: too large"},
    {DOM("<name>vm</name><memory>99999999999999999999999</memory>"), FERRY_ERR_XML_ERROR,
     "for <memory>: expected a number"},
    {NAMED("<currentMemory unit='GiB'>2</currentMemory>"), FERRY_ERR_XML_ERROR,
     "<currentMemory> (2097152 KiB) may not exceed <memory> (1024 KiB)"},
    {NAMED("<currentMemory unit='Q'>2</currentMemory>"), FERRY_ERR_XML_ERROR,
     "unknown unit 'Q' in <currentMemory unit='Q'>"},
    {NAMED("<uuid>not-a-uuid</uuid>"), FERRY_ERR_XML_ERROR,
     "invalid value 'not-a-uuid' for <uuid>: expected a UUID"},
    {NAMED("<title>a\nb</title>"), FERRY_ERR_XML_ERROR,
     "invalid value for <title>: a title cannot contain a newline"},
    {NAMED("<vcpu>abc</vcpu>"), FERRY_ERR_XML_ERROR,
     "invalid value 'abc' for <vcpu>: expected a number"},
    {NAMED("<vcpu>0</vcpu>"), FERRY_ERR_XML_ERROR, "invalid value '0' for <vcpu>"},
    {NAMED("<vcpu current='3'>2</vcpu>"), FERRY_ERR_XML_ERROR,
     "invalid value '3' for attribute 'current' of <vcpu>: expected a number from 1 to 2"},
    {NAMED("<vcpu placement='dynamic'>2</vcpu>"), FERRY_ERR_XML_ERROR,
     "invalid value 'dynamic' for attribute 'placement' of <vcpu>"},
    {NAMED("<vcpu>5000</vcpu>"), FERRY_ERR_CONFIG_UNSUPPORTED,
     "5000 vCPUs requested in <vcpu>, ferry supports at most 4096"},
    {NAMED("<os><type>xen</type></os>"), FERRY_ERR_CONFIG_UNSUPPORTED,
     "OS type 'xen' in <os><type> is not supported"},
    {NAMED("<os><type>dos</type></os>"), FERRY_ERR_XML_ERROR,
     "invalid value 'dos' for <os><type>: expected 'hvm'"},
    {NAMED("<os><type arch='z80'>hvm</type></os>"), FERRY_ERR_CONFIG_UNSUPPORTED,
     "unknown architecture 'z80' in <os><type arch='z80'>"},
    {NAMED("<os><type>hvm</type><type>hvm</type></os>"), FERRY_ERR_XML_ERROR,
     "duplicate <type> element in <os>"},
    {NAMED("<on_poweroff>explode</on_poweroff>"), FERRY_ERR_XML_ERROR,
     "invalid value 'explode' for <on_poweroff>: expected destroy, restart, rename-restart or "
     "preserve"},
    {NAMED("<on_reboot>coredump-destroy</on_reboot>"), FERRY_ERR_XML_ERROR,
     "invalid value 'coredump-destroy' for <on_reboot>"},
    {NAMED("<on_crash>explode</on_crash>"), FERRY_ERR_XML_ERROR,
     "invalid value 'explode' for <on_crash>"},
    {NAMED("<devices/><devices/>"), FERRY_ERR_XML_ERROR,
     "duplicate <devices> element in domain XML"},
    {NAMED("<metadata><f:workload xmlns:f='http://ferry.dev/xmlns/domain/1' "
           "dirty-rate='fast'/></metadata>"),
     FERRY_ERR_XML_ERROR,
     "invalid value 'fast' for attribute 'dirty-rate' of <ferry:workload>: expected a number"},
    {NAMED("<metadata><f:workload xmlns:f='http://ferry.dev/xmlns/domain/1' "
           "dirty-rate='5XB'/></metadata>"),
     FERRY_ERR_XML_ERROR,
     "invalid value '5XB' for attribute 'dirty-rate' of <ferry:workload>: unknown unit 'XB'"},
    {NAMED("<metadata><f:workload xmlns:f='http://ferry.dev/xmlns/domain/1' "
           "pattern='zigzag'/></metadata>"),
     FERRY_ERR_XML_ERROR,
     "invalid value 'zigzag' for attribute 'pattern' of <ferry:workload>: expected 'random' or "
     "'sequential'"},
    {NAMED("<metadata><f:workload xmlns:f='http://ferry.dev/xmlns/domain/1' "
           "seed='-1'/></metadata>"),
     FERRY_ERR_XML_ERROR, "invalid value '-1' for attribute 'seed' of <ferry:workload>"},
    {NAMED("<metadata><f:workload xmlns:f='http://ferry.dev/xmlns/domain/1'/>"
           "<f:workload xmlns:f='http://ferry.dev/xmlns/domain/1'/></metadata>"),
     FERRY_ERR_XML_ERROR, "duplicate <ferry:workload> element in <metadata>"},
    {NAMED("<metadata><f:speed xmlns:f='http://ferry.dev/xmlns/domain/1'/></metadata>"),
     FERRY_ERR_XML_ERROR, "unknown element <ferry:speed> in <metadata>"},
};

START_TEST(test_bad_xml_is_rejected_with_element_named)
{
    GError *err = NULL;
    DomainDef *def = domain_def_parse_string(bad_cases[_i].xml, &err);
    ck_assert_msg(def == NULL, "accepted: %s", bad_cases[_i].xml);
    ck_assert_ferry_error(err, bad_cases[_i].code, bad_cases[_i].message);
    /* The RPC boundary adds libvirt's "XML error: " prefix itself. */
    ck_assert(!g_str_has_prefix(err->message, "XML error"));
    g_error_free(err);
}
END_TEST

/* <metadata> with n children, each in a namespace of its own (the worst
 * case for de-duplicating by namespace), plus one repeat that is dropped. */
static char *metadata_document(guint n)
{
    GString *s = g_string_new("<domain type='sim'><name>md</name><memory>1024</memory><metadata>");
    for (guint i = 0; i < n; i++)
        g_string_append_printf(s, "<x%u:e xmlns:x%u='urn:ns:%u'/>", i, i, i);
    g_string_append(s, "<y:e xmlns:y='urn:ns:0'/></metadata></domain>");
    return g_string_free(s, FALSE);
}

static guint64 comparisons_to_parse(guint n)
{
    g_autofree char *xml = metadata_document(n);
    GError *err = NULL;
    guint64 before = str_equal_calls;
    DomainDef *def = domain_def_parse_string(xml, &err);
    guint64 used = str_equal_calls - before;
    ck_assert_msg(def != NULL, "%s", err ? err->message : "");
    g_autofree char *out = domain_def_format(def, -1, DOMAIN_DEF_FORMAT_INACTIVE);
    ck_assert_ptr_nonnull(strstr(out, "urn:ns:4095"));
    ck_assert_ptr_null(strstr(out, "<y:e")); /* the repeat of urn:ns:0 was dropped */
    domain_def_free(def);
    return used;
}

/* Parsing work grows linearly with the number of namespaced <metadata>
 * children: doubling them at most doubles the comparisons (plus slack), where
 * a scan of the kept children per child quadruples them. */
START_TEST(test_metadata_parsing_is_linear_in_its_children)
{
    guint64 small = comparisons_to_parse(4096);
    guint64 large = comparisons_to_parse(8192);
    ck_assert_msg(large < small * 5 / 2,
                  "%" G_GUINT64_FORMAT " comparisons for 4096 children, %" G_GUINT64_FORMAT
                  " for 8192",
                  small, large);
}
END_TEST

START_TEST(test_null_document_is_rejected)
{
    GError *err = NULL;
    ck_assert_ptr_null(domain_def_parse_string(NULL, &err));
    ck_assert_ferry_error(err, FERRY_ERR_XML_ERROR, "malformed domain XML");
    g_error_free(err);
}
END_TEST

/* Found by fuzz-migration-cookie: libxml2 printed "encoding error : input
 * conversion failed ..." to stderr (the daemon's log) for every document
 * with bytes its declared encoding cannot convert, whatever the parse
 * options, so a client or a peer could write lines to the log at will. */
START_TEST(test_bad_encoding_is_an_error_and_prints_nothing)
{
    static const char xml[] = "<?xml version='1.0' encoding='ISO-2022-JP'?>"
                              "<domain type='sim'><name>\x1b$B\xff\xfe</name></domain>";
    fflush(stderr);
    int saved = dup(STDERR_FILENO);
    FILE *capture = tmpfile();
    ck_assert(saved >= 0 && capture);
    dup2(fileno(capture), STDERR_FILENO);
    GError *err = NULL;
    DomainDef *def = domain_def_parse_string(xml, &err);
    fflush(stderr);
    dup2(saved, STDERR_FILENO);
    close(saved);
    long printed = ftell(capture) >= 0 ? (fseek(capture, 0, SEEK_END), ftell(capture)) : -1;
    fclose(capture);
    ck_assert_ptr_null(def);
    ck_assert_ferry_error(err, FERRY_ERR_XML_ERROR, "malformed domain XML");
    g_error_free(err);
    ck_assert_int_eq(printed, 0);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("domain-def");
    TCase *tc = tcase_create("domain-def");
    tcase_add_test(tc, test_full_xml_formats_like_libvirt_and_round_trips);
    tcase_add_test(tc, test_libvirt_dumpxml_output_is_accepted_and_kept);
    tcase_add_test(tc, test_minimal_xml_gets_libvirt_defaults);
    tcase_add_test(tc, test_memory_units_scale_like_libvirt);
    tcase_add_test(tc, test_workload_rate_units_and_formatting);
    tcase_add_test(tc, test_metadata_keeps_first_namespaced_child_per_namespace);
    tcase_add_test(tc, test_metadata_parsing_is_linear_in_its_children);
    tcase_add_test(tc, test_unknown_elements_are_kept_in_libvirt_order);
    tcase_add_test(tc, test_names_with_markup_characters_round_trip);
    tcase_add_test(tc, test_live_form_has_id_inactive_and_migratable_forms_do_not);
    tcase_add_test(tc, test_copy_is_deep_and_equal);
    tcase_add_loop_test(tc, test_bad_xml_is_rejected_with_element_named, 0,
                        G_N_ELEMENTS(bad_cases));
    tcase_add_test(tc, test_null_document_is_rejected);
    tcase_add_test(tc, test_bad_encoding_is_an_error_and_prints_nothing);
    suite_add_tcase(s, tc);
    return test_run_suite(s);
}
