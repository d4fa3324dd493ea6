/*
 * frame.h - frame codec (internal). Parsers take untrusted bytes: they
 * return a negative CRUST_EMALFORMED and never read past `len`.
 *
 * Frame types (one byte, then QUIC varints):
 *   0x00 PADDING
 *   0x01 PING
 *   0x02 ACK            largest, delay (us >> 3), range_count, first_range,
 *                       range_count x (gap, length)   as RFC 9000 19.3
 *   0x08+p STREAM       priority p in 0..3: offset, length, data
 *   0x10 MAX_DATA       maximum total stream bytes the peer may send
 *   0x1a PATH_CHALLENGE 8 bytes
 *   0x1b PATH_RESPONSE  8 bytes
 *   0x1c CLOSE          reason (crust_close_reason), code
 *
 * Each stream carries length-prefixed messages: varint length, then bytes.
 */
#ifndef CRUST_FRAME_H
#define CRUST_FRAME_H

#include <stddef.h>
#include <stdint.h>

#define CRUST_FT_PADDING 0x00
#define CRUST_FT_PING 0x01
#define CRUST_FT_ACK 0x02
#define CRUST_FT_STREAM 0x08 /* ..0x0b */
#define CRUST_FT_MAX_DATA 0x10
#define CRUST_FT_PATH_CHALLENGE 0x1a
#define CRUST_FT_PATH_RESPONSE 0x1b
#define CRUST_FT_CLOSE 0x1c

#define CRUST_VARINT_MAX ((UINT64_C(1) << 62) - 1)
#define CRUST_ACK_DELAY_EXP 3

/* ---- varints (RFC 9000 16) ---- */
static inline size_t crust_varint_len(uint64_t v)
{
    return v < 64 ? 1 : v < 16384 ? 2 : v < 1073741824 ? 4 : 8;
}
/* Write v (<= CRUST_VARINT_MAX) at p; returns bytes written. */
size_t crust_varint_put(uint8_t *p, uint64_t v);
/* Read a varint; returns bytes consumed or 0 if truncated. */
size_t crust_varint_get(const uint8_t *p, size_t len, uint64_t *v);

/* A parsed frame: `type`, then the fields of that type only. For ACK,
 * the ranges stay in the packet and are walked with crust_ack_iter
 * (already validated by the parser). */
typedef struct crust_ack_frame {
    uint64_t largest;
    uint64_t delay;          /* in units of 2^CRUST_ACK_DELAY_EXP us */
    uint64_t range_count;    /* ranges after the first */
    uint64_t first_range;    /* the first range is [largest - first_range, largest] */
    const uint8_t *ranges;   /* range_count (gap, length) varint pairs */
    size_t ranges_len;
} crust_ack_frame;

typedef struct crust_stream_frame {
    uint64_t off;
    size_t len;              /* bytes at data, inside the parsed buffer */
    const uint8_t *data;
    uint8_t prio;            /* 0 .. CRUST_NUM_PRIO - 1 */
} crust_stream_frame;

typedef struct crust_close_frame {
    uint64_t reason, code;
} crust_close_frame;

typedef struct crust_frame {
    uint8_t type;            /* CRUST_FT_*; every STREAM type is CRUST_FT_STREAM */
    union {
        crust_ack_frame ack;             /* ACK */
        crust_stream_frame stream;       /* STREAM */
        uint64_t max_data;               /* MAX_DATA */
        const uint8_t *path_data;        /* PATH_CHALLENGE / PATH_RESPONSE: 8 bytes */
        crust_close_frame close;         /* CLOSE */
    };
} crust_frame;

/* Parse one frame at p. Returns bytes consumed (> 0) or CRUST_EMALFORMED.
 * Runs of PADDING are consumed as one frame. */
int crust_frame_parse_untrusted(const uint8_t *p, size_t len, crust_frame *f);

/* Walk an ACK frame's ranges from the highest down: each call yields one
 * range [lo, hi] (inclusive). Returns 1 while ranges remain, 0 at end. */
typedef struct crust_ack_iter {
    const uint8_t *p;
    size_t len;
    uint64_t remaining;
    uint64_t next_hi;        /* largest pn of the next range */
    int first;
    uint64_t first_range;
} crust_ack_iter;
void crust_ack_iter_init(crust_ack_iter *it, const crust_ack_frame *f);
int crust_ack_iter_next(crust_ack_iter *it, uint64_t *lo, uint64_t *hi);

/* Writers return bytes written, or 0 when the frame does not fit in cap. */
size_t crust_frame_put_stream_header(uint8_t *p, size_t cap, unsigned prio,
                                     uint64_t off, uint64_t len);
/* Space a STREAM header needs for this offset and length. */
static inline size_t crust_frame_stream_overhead(uint64_t off, uint64_t len)
{
    return 1 + crust_varint_len(off) + crust_varint_len(len);
}
size_t crust_frame_put_max_data(uint8_t *p, size_t cap, uint64_t max);
size_t crust_frame_put_path(uint8_t *p, size_t cap, uint8_t type, const uint8_t data[8]);
size_t crust_frame_put_close(uint8_t *p, size_t cap, uint64_t reason, uint64_t code);

/* Packet numbers (RFC 9000 17.1 and appendix A). */
unsigned crust_pn_encode_len(uint64_t pn, uint64_t largest_acked_plus1);
uint64_t crust_pn_decode(uint64_t largest_rx_plus1, uint64_t truncated, unsigned nbits);

#endif
