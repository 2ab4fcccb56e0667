/* The migration protocol's framing (docs/ferry-vmm.md, "Migration protocol"):
 * a 16-byte little-endian header, then `length` payload bytes. The sender sends
 * commands, the receiver answers each with exactly one OK or ERROR. */
#pragma once

#include <glib.h>
#include <string.h>

#define VMM_WIRE_MAGIC 0x47494d46u /* the bytes "FMIG" */
#define VMM_WIRE_PROTOCOL 1
#define VMM_WIRE_HEADER_SIZE 16
/* Limits the receiver enforces; the sender stays within them. */
#define VMM_WIRE_MAX_JSON (64u << 10)
#define VMM_WIRE_MAX_PAGE_DATA (64u << 20)
#define VMM_WIRE_MAX_RANGES 16384u
#define VMM_WIRE_RANGE_SIZE 16  /* u64 first page, u64 page count */
#define VMM_WIRE_PAGES_PREFIX 8 /* u32 round, u32 range count */
/* A migration over several connections (HELLO's "channels") uses at most this many. */
#define VMM_WIRE_MAX_CHANNELS 16

typedef enum {
    VMM_WIRE_HELLO = 1,    /* JSON: protocol, memory, vcpus, page-size, name, uuid */
    VMM_WIRE_PAGES = 2,    /* u32 round, u32 n, n ranges, then the ranges' page data */
    VMM_WIRE_COMPLETE = 3, /* JSON: digest, rounds, dirty-rate, device */
    VMM_WIRE_CHANNEL = 4,  /* JSON: channel (1..channels-1), first on an extra connection */
    VMM_WIRE_END = 5,      /* empty: an extra connection's last command */
    VMM_WIRE_OK = 0x81,    /* empty */
    VMM_WIRE_ERROR = 0x82, /* UTF-8 text, why the receiver gave up */
} VmmWireType;

typedef struct {
    guint16 type;
    guint64 length;
} VmmWireHeader;

static inline void vmm_wire_encode_header(guint8 out[VMM_WIRE_HEADER_SIZE], guint16 type,
                                          guint64 length)
{
    guint32 magic = GUINT32_TO_LE(VMM_WIRE_MAGIC);
    guint16 t = GUINT16_TO_LE(type), reserved = 0;
    guint64 len = GUINT64_TO_LE(length);
    memcpy(out, &magic, 4);
    memcpy(out + 4, &t, 2);
    memcpy(out + 6, &reserved, 2);
    memcpy(out + 8, &len, 8);
}

/* FALSE if the bytes are not a header of this protocol. */
static inline gboolean vmm_wire_decode_header(const guint8 in[VMM_WIRE_HEADER_SIZE],
                                              VmmWireHeader *header)
{
    guint32 magic;
    guint16 type;
    guint64 len;
    memcpy(&magic, in, 4);
    memcpy(&type, in + 4, 2);
    memcpy(&len, in + 8, 8);
    if (GUINT32_FROM_LE(magic) != VMM_WIRE_MAGIC)
        return FALSE;
    header->type = GUINT16_FROM_LE(type);
    header->length = GUINT64_FROM_LE(len);
    return TRUE;
}

static inline void vmm_wire_put_u32(guint8 *out, guint32 v)
{
    v = GUINT32_TO_LE(v);
    memcpy(out, &v, 4);
}

static inline void vmm_wire_put_u64(guint8 *out, guint64 v)
{
    v = GUINT64_TO_LE(v);
    memcpy(out, &v, 8);
}

static inline guint32 vmm_wire_get_u32(const guint8 *in)
{
    guint32 v;
    memcpy(&v, in, 4);
    return GUINT32_FROM_LE(v);
}

static inline guint64 vmm_wire_get_u64(const guint8 *in)
{
    guint64 v;
    memcpy(&v, in, 8);
    return GUINT64_FROM_LE(v);
}
