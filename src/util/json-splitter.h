/* Splits a byte stream into top-level JSON values, as QMP frames them: there is
 * no length prefix or delimiter, a value ends where its outermost brace closes. */
#pragma once

#include <glib.h>

typedef struct _FerryJsonSplitter FerryJsonSplitter;

typedef enum {
    FERRY_JSON_SPLIT_NEED_MORE, /* no complete value buffered yet */
    FERRY_JSON_SPLIT_VALUE,     /* *out is the text of one complete value */
    FERRY_JSON_SPLIT_GARBAGE,   /* *out is a token found outside any object; it was skipped */
    FERRY_JSON_SPLIT_TOO_BIG,   /* a value exceeded the size or nesting limit; the stream
                                 * cannot be resynchronised and should be closed */
} FerryJsonSplitResult;

/* max_value_size bounds the memory one peer can make us hold. */
FerryJsonSplitter *ferry_json_splitter_new(gsize max_value_size);
void ferry_json_splitter_free(FerryJsonSplitter *splitter);
void ferry_json_splitter_feed(FerryJsonSplitter *splitter, const char *data, gsize len);
/* Call until it returns NEED_MORE; *out (VALUE, GARBAGE) is the caller's to free. */
FerryJsonSplitResult ferry_json_splitter_next(FerryJsonSplitter *splitter, char **out);

G_DEFINE_AUTOPTR_CLEANUP_FUNC(FerryJsonSplitter, ferry_json_splitter_free)
