/* The migration cookie as a hostile peer daemon sends it (Begin's cookie at
 * the destination, Prepare's and Finish's at the source): the parser, the
 * stream terms derived from it (bounded whatever the peer offers), and, for
 * a ferry cookie, formatting what was read and reading it back to the same
 * values. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "driver/migration-cookie.h"
#include "fuzz-common.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    fuzz_init();
    return 0;
}

static void check_terms(const MigrationCookie *c, TunnelRole role)
{
    TunnelStreamConfig cfg;
    migration_cookie_tunnel_config(c, role, "fuzz peer", "fuzz VMM", &cfg);
    /* A credit below the packet size only makes packets smaller (the stream
     * sends what the credit allows); zero or unbounded values would stall
     * the stream or let a peer make us buffer without limit. */
    if (cfg.packet_size < 65536 || cfg.packet_size > MIGRATION_PACKET_SIZE || cfg.window == 0 ||
        (cfg.credit && (cfg.peer_window < 65536 || cfg.peer_window > 64u << 20))) {
        fprintf(stderr, "cookie gave unbounded stream terms: packet %zu window %zu peer %zu\n",
                cfg.packet_size, cfg.window, cfg.peer_window);
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    g_autoptr(GBytes) bytes = g_bytes_new(data, size);
    MigrationCookie c = {0};
    g_autoptr(GError) error = NULL;
    if (!migration_cookie_parse(bytes, &c, &error)) {
        migration_cookie_clear(&c);
        return 0;
    }
    check_terms(&c, TUNNEL_ROLE_CLIENT);
    check_terms(&c, TUNNEL_ROLE_SERVER);
    migration_cookie_clear(&c);
    return 0;
}
