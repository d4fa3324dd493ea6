/* recv_stream.c - the receiving half of a priority stream; see stream.h.
 *
 * Memory follows the bytes received, never offsets or lengths a peer
 * claims (docs/security.md, "Memory"): the ring holds the contiguous
 * prefix not yet read, out-of-order bytes sit in chunks of their own
 * (ooo.h), and a large message gets its own buffer only once at least half
 * of its length is here. */
#include <string.h>

#include "crust.h"
#include "frame.h"
#include "ring.h"
#include "stream.h"

/* Holes above the contiguous prefix we track; a packet that would need more
 * is dropped unacknowledged, so the sender retransmits it later. */
#define RECV_MAX_RANGES CRUST_RECV_MAX_RANGES

void crust_recv_stream_init(crust_recv_stream *s)
{
    memset(s, 0, sizeof *s);
    crust_rs_init(&s->ooo, RECV_MAX_RANGES);
    crust_ooo_init(&s->chunks);
}

void crust_recv_stream_free(crust_recv_stream *s, const crust_msg_alloc *al)
{
    if (s->dbuf && al && al->free_fn)
        al->free_fn(al->ctx, s->dhandle);
    free(s->buf);
    crust_rs_free(&s->ooo);
    crust_ooo_free(&s->chunks);
    memset(s, 0, sizeof *s);
}

/* Ring position of stream offset x. The ring holds no byte of a body
 * assembled in an embedder's buffer, nor of the bodies taken before: the
 * positions skip them, so a large message costs the ring nothing. */
static uint64_t rpos(const crust_recv_stream *s, uint64_t x)
{
    uint64_t p = x - s->shift;
    if (s->dbuf && x > s->dbody)
        p -= x - s->dbody < s->dlen ? x - s->dbody : s->dlen;
    return p;
}

/* Store [off, off + n) of the contiguous prefix (the ring has room): the
 * body of a message being assembled outside goes to its buffer, everything
 * else to the ring. */
static void put(crust_recv_stream *s, uint64_t off, const uint8_t *data, size_t n)
{
    if (s->dbuf) {
        uint64_t lo = s->dbody, hi = s->dbody + s->dlen;
        if (off < lo && n) {
            size_t k = lo - off < n ? (size_t)(lo - off) : n;
            crust_ring_write(s->buf, s->cap, rpos(s, off), data, k);
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
        crust_ring_write(s->buf, s->cap, rpos(s, off), data, n);
}

static void put_cb(void *ctx, uint64_t off, const uint8_t *d, size_t n)
{
    put(ctx, off, d, n);
}

/* Store [off, off + n), above the contiguous prefix and not held yet: in
 * the message buffer for its body, in chunks otherwise. */
static int put_ooo(crust_recv_stream *s, uint64_t off, const uint8_t *data, size_t n)
{
    if (s->dbuf) {
        /* off > contig >= dbody: nothing lies below the body. */
        uint64_t hi = s->dbody + s->dlen;
        if (off < hi) {
            size_t k = hi - off < n ? (size_t)(hi - off) : n;
            memcpy(s->dbuf + (off - s->dbody), data, k);
            off += k, data += k, n -= k;
        }
    }
    return crust_ooo_put(&s->chunks, off, data, n);
}

/* Out of order: store the parts of [off, off + n) not held yet and record
 * them as received, one gap at a time so a failure leaves the range set
 * and the stored bytes in agreement. */
static int write_ooo(crust_recv_stream *s, uint64_t off, const uint8_t *data, size_t n)
{
    uint64_t hi = off + n;
    /* At most one new range: the first gap may stand alone, the others
     * touch the ranges they fill up to. */
    if (crust_rs_reserve(&s->ooo, s->ooo.n + 1) != CRUST_OK &&
        !crust_rs_overlaps(&s->ooo, off - 1, hi + 1))
        return CRUST_ENOMEM;
    uint64_t at = off;
    while (at < hi) {
        const crust_range *r = crust_rs_next(&s->ooo, at);
        if (r && r->lo <= at) {
            at = r->hi;
            continue;
        }
        uint64_t end = r && r->lo < hi ? r->lo : hi;
        int rc = put_ooo(s, at, data + (at - off), (size_t)(end - at));
        if (rc)
            return rc;
        crust_rs_add(&s->ooo, at, end); /* merges, or uses the slot reserved */
        s->ooo_bytes += end - at;
        at = end;
    }
    return CRUST_OK;
}

/* In order from contig: extend the prefix through the ranges it reaches,
 * moving their chunks into the ring. */
static int write_in_order(crust_recv_stream *s, uint64_t off, const uint8_t *data, size_t n)
{
    uint64_t nc = off + n;
    for (uint32_t i = 0; i < s->ooo.n && s->ooo.r[i].lo <= nc; i++)
        if (s->ooo.r[i].hi > nc)
            nc = s->ooo.r[i].hi;
    if (crust_ring_reserve(&s->buf, &s->cap, rpos(s, s->read), rpos(s, s->contig),
                           rpos(s, nc) - rpos(s, s->read)))
        return CRUST_ENOMEM;
    put(s, off, data, n);
    while (!crust_rs_empty(&s->ooo) && crust_rs_lowest(&s->ooo)->lo <= nc) {
        s->ooo_bytes -= crust_rs_lowest(&s->ooo)->hi - crust_rs_lowest(&s->ooo)->lo;
        crust_rs_pop_lowest(&s->ooo);
    }
    crust_ooo_drain(&s->chunks, nc, put_cb, s);
    s->contig = nc;
    return CRUST_OK;
}

static void to_dbuf_cb(void *ctx, uint64_t off, const uint8_t *d, size_t n)
{
    crust_recv_stream *s = ctx;
    memcpy(s->dbuf + (off - s->dbody), d, n);
}

/* The header of the message at `read`, if all of it arrived: its value
 * (length * 2 + control) in *v; returns its size, or 0. */
static size_t read_header(const crust_recv_stream *s, uint64_t *v)
{
    uint64_t avail = s->contig - s->read;
    if (avail == 0)
        return 0;
    uint8_t h[8];
    /* Past the header the ring may hold other bytes (a body lives
     * elsewhere): the varint reads only its own. */
    size_t hn = avail < 8 ? (size_t)avail : 8;
    crust_ring_read(s->buf, s->cap, rpos(s, s->read), h, hn);
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
    /* A header alone claims up to max_message_size, so the buffer must not
     * come with it: it comes once this stream holds half the length (then
     * it costs at most twice what arrived), or earlier against bytes this
     * stream already delivered (credit, capped at max_len): a bulk
     * sender's messages after the first are still assembled in place from
     * their first packet, and a peer pins ahead of its data no more than
     * it sent before (docs/design/0040). */
    uint64_t ahead = len - (avail - used);
    uint64_t credit = s->credit < al->max_len ? s->credit : al->max_len;
    int earned = 2 * (avail + s->ooo_bytes) >= len;
    if (!earned && ahead > credit)
        return;
    void *handle = NULL;
    uint8_t *buf = al->alloc(al->ctx, len, &handle);
    if (!buf)
        return;
    uint64_t body = s->read + used;
    /* The contiguous part of the body, read before the ring's positions
     * start skipping it. */
    if (s->contig > body)
        crust_ring_read(s->buf, s->cap, rpos(s, body), buf, (size_t)(s->contig - body));
    if (!earned)
        s->credit = credit - ahead;
    s->dbuf = buf;
    s->dhandle = handle;
    s->dbody = body;
    s->dlen = len;
    /* Then what arrived out of order inside the body. */
    crust_ooo_move(&s->chunks, body, body + len, to_dbuf_cb, s);
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
    int rc = off > s->contig ? write_ooo(s, off, data, n) : write_in_order(s, off, data, n);
    if (rc)
        return rc;
    if (hi > s->hi)
        s->hi = hi;
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

/* A message of len bytes was delivered: the credit adopt() may spend. */
static void delivered(crust_recv_stream *s, uint64_t len)
{
    s->credit = s->credit + len < s->credit ? UINT64_MAX : s->credit + len;
}

/* The adopted message at `read` is gone: later positions skip its body. */
static void release_dbuf(crust_recv_stream *s)
{
    s->shift += s->dlen;
    s->dbuf = NULL;
    s->dhandle = NULL;
}

void crust_recv_stream_consume(crust_recv_stream *s, uint64_t hdr, uint64_t len, uint8_t *dst,
                               const crust_msg_alloc *al)
{
    if (s->dbuf && s->dbody == s->read + hdr) {
        if (len)
            memcpy(dst, s->dbuf, (size_t)len);
        if (al && al->free_fn)
            al->free_fn(al->ctx, s->dhandle);
        release_dbuf(s);
    } else {
        crust_ring_read(s->buf, s->cap, rpos(s, s->read + hdr), dst, (size_t)len);
    }
    s->read += hdr + len;
    delivered(s, len);
}

int crust_recv_stream_take(crust_recv_stream *s, uint64_t hdr, uint64_t len, void **handle)
{
    if (!s->dbuf || s->dbody != s->read + hdr || s->dlen != len)
        return 0;
    *handle = s->dhandle;
    release_dbuf(s);
    s->read += hdr + len;
    delivered(s, len);
    return 1;
}

size_t crust_recv_stream_memory(const crust_recv_stream *s)
{
    return (size_t)s->cap + crust_rs_memory(&s->ooo) + crust_ooo_memory(&s->chunks) +
           (s->dbuf ? (size_t)s->dlen : 0);
}
