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

void crust_recv_stream_free(crust_recv_stream *s, const crust_msg_alloc *al)
{
    if (s->dbuf && al && al->free_fn)
        al->free_fn(al->ctx, s->dhandle);
    free(s->buf);
    crust_rs_free(&s->ooo);
    memset(s, 0, sizeof *s);
}

/* Store [off, off + n): the body of a message being assembled outside goes
 * to its buffer, everything else to the ring. */
static void put(crust_recv_stream *s, uint64_t off, const uint8_t *data, size_t n)
{
    if (s->dbuf) {
        uint64_t lo = s->dbody, hi = s->dbody + s->dlen;
        if (off < lo && n) {
            size_t k = lo - off < n ? (size_t)(lo - off) : n;
            crust_ring_write(s->buf, s->cap, off, data, k);
            off += k, data += k, n -= k;
        }
        if (off < hi && n) {
            size_t k = hi - off < n ? (size_t)(hi - off) : n;
            /* Opened in place (conn.c, open_in_place): already there. */
            if (s->dbuf + (off - lo) != data)
                memcpy(s->dbuf + (off - lo), data, k);
            off += k, data += k, n -= k;
        }
    }
    if (n)
        crust_ring_write(s->buf, s->cap, off, data, n);
}

/* Copy what the ring holds of [lo, hi) into the new message buffer. */
static void ring_to_dbuf(crust_recv_stream *s, uint64_t lo, uint64_t hi)
{
    uint64_t blo = s->dbody, bhi = s->dbody + s->dlen;
    if (lo < blo)
        lo = blo;
    if (hi > bhi)
        hi = bhi;
    if (lo < hi)
        crust_ring_read(s->buf, s->cap, lo, s->dbuf + (lo - blo), (size_t)(hi - lo));
}

/* The header of the message at `read`, if all of it arrived: its value
 * (length * 2 + control) in *v; returns its size, or 0. */
static size_t read_header(const crust_recv_stream *s, uint64_t *v)
{
    uint64_t avail = s->contig - s->read;
    if (avail == 0)
        return 0;
    uint8_t h[8];
    size_t hn = avail < 8 ? (size_t)avail : 8;
    crust_ring_read(s->buf, s->cap, s->read, h, hn);
    return crust_varint_get(h, hn, v);
}

void crust_recv_stream_adopt(crust_recv_stream *s, const crust_msg_alloc *al)
{
    if (s->dbuf || !al || !al->alloc)
        return;
    uint64_t v;
    size_t used = read_header(s, &v);
    if (!used)
        return;
    uint64_t avail = s->contig - s->read;
    uint64_t len = v >> 1;
    /* Too small to be worth it, already whole, or oversized (an error the
     * reader reports). */
    if (len < al->min_len || len > al->max_len || avail - used >= len)
        return;
    void *handle = NULL;
    uint8_t *buf = al->alloc(al->ctx, len, &handle);
    if (!buf)
        return;
    s->dbuf = buf;
    s->dhandle = handle;
    s->dbody = s->read + used;
    s->dlen = len;
    /* What already arrived of the body: the contiguous part, then the
     * ranges received out of order. */
    ring_to_dbuf(s, s->dbody, s->contig);
    for (uint32_t i = 0; i < s->ooo.n; i++)
        ring_to_dbuf(s, s->ooo.r[i].lo, s->ooo.r[i].hi);
}

int crust_recv_stream_write(crust_recv_stream *s, uint64_t off, const uint8_t *data, size_t n,
                            const crust_msg_alloc *al)
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
    put(s, off, data, n);
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
    crust_recv_stream_adopt(s, al);
    return CRUST_OK;
}

int crust_recv_stream_peek(const crust_recv_stream *s, uint64_t max, uint64_t *len, uint64_t *hdr,
                           int *control)
{
    uint64_t v;
    size_t used = read_header(s, &v);
    if (!used)
        return 0;
    uint64_t avail = s->contig - s->read;
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

void crust_recv_stream_consume(crust_recv_stream *s, uint64_t hdr, uint64_t len, uint8_t *dst,
                               const crust_msg_alloc *al)
{
    if (s->dbuf && s->dbody == s->read + hdr) {
        if (len)
            memcpy(dst, s->dbuf, (size_t)len);
        if (al && al->free_fn)
            al->free_fn(al->ctx, s->dhandle);
        s->dbuf = NULL;
        s->dhandle = NULL;
    } else {
        crust_ring_read(s->buf, s->cap, s->read + hdr, dst, (size_t)len);
    }
    s->read += hdr + len;
}

int crust_recv_stream_take(crust_recv_stream *s, uint64_t hdr, uint64_t len, void **handle)
{
    if (!s->dbuf || s->dbody != s->read + hdr || s->dlen != len)
        return 0;
    *handle = s->dhandle;
    s->dbuf = NULL;
    s->dhandle = NULL;
    s->read += hdr + len;
    return 1;
}

size_t crust_recv_stream_memory(const crust_recv_stream *s)
{
    return (size_t)s->cap + crust_rs_memory(&s->ooo);
}
