/* UUID parsing, formatting and generation (RFC 4122 text forms, random v4). */
#include "util/uuid.h"

#include "util/error.h"

#include <string.h>
#include <sys/random.h>

static int hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

gboolean ferry_uuid_parse(const char *str, guint8 uuid[FERRY_UUID_LEN], GError **error)
{
    /* Positions of the dashes in the 36-character form. */
    static const gboolean dash_at[36] = {[8] = TRUE, [13] = TRUE, [18] = TRUE, [23] = TRUE};
    size_t len = str ? strlen(str) : 0;
    guint8 out[FERRY_UUID_LEN];
    size_t n = 0;

    if (len != 36 && len != 32)
        goto invalid;
    for (size_t i = 0; i < len; i++) {
        if (len == 36 && dash_at[i]) {
            if (str[i] != '-')
                goto invalid;
            continue;
        }
        int hi = hex_value(str[i]);
        int lo = hex_value(str[i + 1]);
        if (hi < 0 || lo < 0)
            goto invalid;
        out[n++] = (guint8)(hi << 4 | lo);
        i++;
    }
    g_assert(n == FERRY_UUID_LEN);
    memcpy(uuid, out, FERRY_UUID_LEN);
    return TRUE;

invalid:
    g_set_error(error, FERRY_ERROR, FERRY_ERR_INVALID_ARG,
                "invalid UUID '%s': expected 32 hexadecimal digits, optionally as "
                "8-4-4-4-12 groups",
                str ? str : "");
    return FALSE;
}

void ferry_uuid_format(const guint8 uuid[FERRY_UUID_LEN], char out[FERRY_UUID_STRING_LEN])
{
    g_snprintf(out, FERRY_UUID_STRING_LEN,
               "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", uuid[0],
               uuid[1], uuid[2], uuid[3], uuid[4], uuid[5], uuid[6], uuid[7], uuid[8], uuid[9],
               uuid[10], uuid[11], uuid[12], uuid[13], uuid[14], uuid[15]);
}

char *ferry_uuid_to_string(const guint8 uuid[FERRY_UUID_LEN])
{
    char buf[FERRY_UUID_STRING_LEN];
    ferry_uuid_format(uuid, buf);
    return g_strdup(buf);
}

void ferry_uuid_generate(guint8 uuid[FERRY_UUID_LEN])
{
    size_t got = 0;
    while (got < FERRY_UUID_LEN) {
        ssize_t r = getrandom(uuid + got, FERRY_UUID_LEN - got, 0);
        if (r < 0)
            break;
        got += (size_t)r;
    }
    /* getrandom() only fails on ancient kernels or seccomp filters; GLib's
     * generator (seeded from /dev/urandom) is still unique enough for ids. */
    for (; got < FERRY_UUID_LEN; got++)
        uuid[got] = (guint8)g_random_int_range(0, 256);

    uuid[6] = (uuid[6] & 0x0f) | 0x40; /* version 4 */
    uuid[8] = (uuid[8] & 0x3f) | 0x80; /* RFC 4122 variant */
}

gboolean ferry_uuid_is_null(const guint8 uuid[FERRY_UUID_LEN])
{
    for (int i = 0; i < FERRY_UUID_LEN; i++)
        if (uuid[i])
            return FALSE;
    return TRUE;
}

guint ferry_uuid_hash(gconstpointer uuid)
{
    /* FNV-1a over all bytes: hand-written UUIDs (aaaaaaaa-...-000000000001)
     * differ only at the end, so no subset of the bytes is enough. */
    const guint8 *p = uuid;
    guint32 h = 2166136261u;
    for (int i = 0; i < FERRY_UUID_LEN; i++) {
        h ^= p[i];
        h *= 16777619u;
    }
    return h;
}

gboolean ferry_uuid_equal(gconstpointer a, gconstpointer b)
{
    return memcmp(a, b, FERRY_UUID_LEN) == 0;
}
