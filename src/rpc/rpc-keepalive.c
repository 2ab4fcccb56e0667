/* A single ticker thread for all keepalive connections of the process. */
#include "rpc/rpc-keepalive.h"

#include "util/log.h"

#define FERRY_LOG_MODULE "rpc.keepalive"

#define TICK_MS 200

static GMutex registry_lock;
static GPtrArray *registry; /* RpcConnection refs */
static GThread *ticker;

static gpointer ticker_thread(gpointer data)
{
    for (;;) {
        g_usleep(TICK_MS * 1000);
        /* Tick outside the registry lock: a tick may close a connection. */
        g_mutex_lock(&registry_lock);
        g_autoptr(GPtrArray) snapshot = g_ptr_array_new_full(registry->len, NULL);
        for (guint i = 0; i < registry->len; i++)
            g_ptr_array_add(snapshot, rpc_connection_ref(registry->pdata[i]));
        g_mutex_unlock(&registry_lock);

        gint64 now = g_get_monotonic_time();
        for (guint i = 0; i < snapshot->len; i++) {
            RpcConnection *conn = snapshot->pdata[i];
            if (!rpc_connection_keepalive_tick(conn, now)) {
                g_mutex_lock(&registry_lock);
                if (g_ptr_array_remove_fast(registry, conn))
                    rpc_connection_unref(conn);
                g_mutex_unlock(&registry_lock);
            }
            rpc_connection_unref(conn);
        }
    }
    return NULL;
}

void rpc_keepalive_register(RpcConnection *conn)
{
    g_mutex_lock(&registry_lock);
    if (!registry)
        registry = g_ptr_array_new();
    g_ptr_array_add(registry, rpc_connection_ref(conn));
    if (!ticker) {
        /* Out of threads: the connections stay registered, and the next
         * registration tries again. */
        g_autoptr(GError) error = NULL;
        ticker = g_thread_try_new("rpc-keepalive", ticker_thread, NULL, &error);
        if (!ticker)
            FERRY_ERROR_LOG("cannot start the keepalive thread: %s", error->message);
    }
    g_mutex_unlock(&registry_lock);
}
