/* recv_stream.c - the receiving half of a priority stream; see stream.h. */
#include <string.h>

#include "crust.h"
#include "frame.h"
#include "ring.h"
#include "stream.h"

/* Holes above the contiguous prefix we track; a packet that would need more
 * is dropped unacknowledged, so the sender retransmits it later. */
#define RECV_MAX_RANGES 1024

void crust_recv_stream_init(crust_recv_stream *s)
{
    memset(s, 0, sizeof *s);
    crust_rs_init(&s->ooo, RECV_MAX_RANGES);
}

void crust_recv_stream_free(crust_recv_stream *s)
{
    free(s->buf);
    crust_rs_free(&s->ooo);
    memset(s, 0, sizeof *s);
}

int crust_recv_stream_write(crust_recv_stream *s, uint64_t off, const uint8_t *data, size_t n)
{
    uint64_t hi = off + n;
    if (hi <= s->contig || n == 0)
        return CRUST_OK; /* all duplicate */
    if (off < s->contig) {
        data += s->contig - off;
        n -= (size_t)(s->contig - off);
        off = s->contig;
    }
    if (off > s->contig && crust_rs_add(&s->ooo, off, hi) != CRUST_OK)
        return CRUST_ENOMEM;
    uint64_t keep_hi = s->hi > s->read ? s->hi : s->read;
    if (crust_ring_reserve(&s->buf, &s->cap, s->read, keep_hi, hi - s->read)) {
        if (off > s->contig)
            crust_rs_remove(&s->ooo, off, hi);
        return CRUST_ENOMEM;
    }
    crust_ring_write(s->buf, s->cap, off, data, n);
    if (hi > s->hi)
        s->hi = hi;
    if (off == s->contig) {
        s->contig = hi;
        while (!crust_rs_empty(&s->ooo) && crust_rs_lowest(&s->ooo)->lo <= s->contig) {
            if (crust_rs_lowest(&s->ooo)->hi > s->contig)
                s->contig = crust_rs_lowest(&s->ooo)->hi;
            crust_rs_pop_lowest(&s->ooo);
        }
    }
    return CRUST_OK;
}

int crust_recv_stream_peek(const crust_recv_stream *s, uint64_t max, uint64_t *len, uint64_t *hdr,
                           int *control)
{
    uint64_t avail = s->contig - s->read;
    if (avail == 0)
        return 0;
    uint8_t h[8];
    size_t hn = avail < 8 ? (size_t)avail : 8;
    crust_ring_read(s->buf, s->cap, s->read, h, hn);
    uint64_t v;
    size_t used = crust_varint_get(h, hn, &v);
    if (!used)
        return 0;
    int ctl = (int)(v & 1);
    v >>= 1;
    if (v > max)
        return CRUST_EMSGSIZE;
    if (avail - used < v)
        return 0;
    *len = v;
    *hdr = used;
    if (control)
        *control = ctl;
    return 1;
}

void crust_recv_stream_consume(crust_recv_stream *s, uint64_t hdr, uint64_t len, uint8_t *dst)
{
    crust_ring_read(s->buf, s->cap, s->read + hdr, dst, (size_t)len);
    s->read += hdr + len;
}

size_t crust_recv_stream_memory(const crust_recv_stream *s)
{
    return (size_t)s->cap + crust_rs_memory(&s->ooo);
}
