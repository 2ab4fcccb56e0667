/* Domain XML: the parser, and the promise of domain-def.h that whatever it
 * accepts formats to XML that parses back to an equal definition (in every
 * output form: live, inactive, migratable). */
#include <stdio.h>
#include <stdlib.h>

#include "driver/domain-def.h"
#include "fuzz-common.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    fuzz_init();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    g_autofree char *xml = g_strndup((const char *)data, size);
    g_autoptr(GError) error = NULL;
    g_autoptr(DomainDef) def = domain_def_parse_string(xml, &error);
    if (!def)
        return 0;
    const guint forms[] = {0, DOMAIN_DEF_FORMAT_INACTIVE, DOMAIN_DEF_FORMAT_MIGRATABLE};
    for (guint i = 0; i < G_N_ELEMENTS(forms); i++) {
        g_autofree char *out = domain_def_format(def, 7, forms[i]);
        g_autoptr(GError) again_error = NULL;
        g_autoptr(DomainDef) again = domain_def_parse_string(out, &again_error);
        if (!again) {
            fprintf(stderr, "formatted XML (flags %u) does not parse back: %s\n%s\n", forms[i],
                    again_error->message, out);
            abort();
        }
        if (!domain_def_equal(def, again)) {
            g_autofree char *out2 = domain_def_format(again, 7, forms[i]);
            fprintf(stderr, "formatted XML (flags %u) parses to another definition:\n%s\n---\n%s\n",
                    forms[i], out, out2);
            abort();
        }
    }
    g_autoptr(DomainDef) copy = domain_def_copy(def);
    if (!domain_def_equal(def, copy)) {
        fprintf(stderr, "domain_def_copy made an unequal copy\n");
        abort();
    }
    return 0;
}
