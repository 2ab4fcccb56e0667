/* The QMP stream splitter: tracks brace depth and string state across reads, so
 * a value split over many reads, or many values in one read, come out whole. */
#include "util/json-splitter.h"

#include <string.h>

/* Deeper nesting is refused: JSON parsers recurse per level. */
#define JSON_SPLITTER_MAX_DEPTH 1024
#define JSON_SPLITTER_MAX_GARBAGE_TOKEN 64

struct _FerryJsonSplitter {
    GByteArray *buf;
    gsize max_value_size;
    gsize scan;  /* next byte to look at */
    guint depth; /* 0 = between values */
    gboolean in_string;
    gboolean escape;
    gboolean broken; /* after TOO_BIG, everything is refused */
};

FerryJsonSplitter *ferry_json_splitter_new(gsize max_value_size)
{
    FerryJsonSplitter *s = g_new0(FerryJsonSplitter, 1);
    s->buf = g_byte_array_new();
    s->max_value_size = max_value_size;
    return s;
}

void ferry_json_splitter_free(FerryJsonSplitter *splitter)
{
    if (!splitter)
        return;
    g_byte_array_unref(splitter->buf);
    g_free(splitter);
}

void ferry_json_splitter_feed(FerryJsonSplitter *splitter, const char *data, gsize len)
{
    if (splitter->broken)
        return;
    g_byte_array_append(splitter->buf, (const guint8 *)data, len);
}

static char *json_splitter_take(FerryJsonSplitter *s, gsize len)
{
    char *text = g_strndup((const char *)s->buf->data, len);
    g_byte_array_remove_range(s->buf, 0, len);
    s->scan = 0;
    return text;
}

static gboolean json_splitter_is_space(guint8 c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

FerryJsonSplitResult ferry_json_splitter_next(FerryJsonSplitter *splitter, char **out)
{
    FerryJsonSplitter *s = splitter;
    *out = NULL;
    if (s->broken)
        return FERRY_JSON_SPLIT_TOO_BIG;

    while (s->scan < s->buf->len) {
        guint8 c = s->buf->data[s->scan];

        if (s->depth == 0) {
            if (json_splitter_is_space(c)) {
                /* Drop separators at once so the buffer starts at the next value. */
                gsize n = 0;
                while (n < s->buf->len && json_splitter_is_space(s->buf->data[n]))
                    n++;
                g_byte_array_remove_range(s->buf, 0, n);
                continue;
            }
            if (c == '{' || c == '[') {
                s->depth = 1;
                s->scan++;
                continue;
            }
            /* Anything else between values is a stray token: report it and go on. */
            gsize end = 0;
            while (end < s->buf->len && !json_splitter_is_space(s->buf->data[end]) &&
                   s->buf->data[end] != '{' && s->buf->data[end] != '[')
                end++;
            char *token = json_splitter_take(s, end);
            if (strlen(token) > JSON_SPLITTER_MAX_GARBAGE_TOKEN)
                token[JSON_SPLITTER_MAX_GARBAGE_TOKEN] = '\0';
            *out = token;
            return FERRY_JSON_SPLIT_GARBAGE;
        }

        if (s->in_string) {
            if (s->escape)
                s->escape = FALSE;
            else if (c == '\\')
                s->escape = TRUE;
            else if (c == '"')
                s->in_string = FALSE;
        } else if (c == '"') {
            s->in_string = TRUE;
        } else if (c == '{' || c == '[') {
            if (++s->depth > JSON_SPLITTER_MAX_DEPTH) {
                s->broken = TRUE;
                g_byte_array_set_size(s->buf, 0);
                return FERRY_JSON_SPLIT_TOO_BIG;
            }
        } else if (c == '}' || c == ']') {
            if (--s->depth == 0) {
                *out = json_splitter_take(s, s->scan + 1);
                return FERRY_JSON_SPLIT_VALUE;
            }
        }
        s->scan++;
        if (s->scan > s->max_value_size) {
            s->broken = TRUE;
            g_byte_array_set_size(s->buf, 0);
            return FERRY_JSON_SPLIT_TOO_BIG;
        }
    }
    return FERRY_JSON_SPLIT_NEED_MORE;
}
