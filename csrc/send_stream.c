/* send_stream.c - the sending half of a priority stream; see stream.h. */
#include <stdlib.h>
#include <string.h>

#include "crust.h"
#include "frame.h"
#include "ring.h"
#include "stream.h"

/* Bound the bookkeeping for heavily fragmented loss; beyond this a lost
 * range is merged coarsely rather than refused (see crust_send_stream_lose). */
#define SEND_MAX_RANGES 4096

void crust_send_stream_init(crust_send_stream *s)
{
    memset(s, 0, sizeof *s);
    crust_rs_init(&s->acked, SEND_MAX_RANGES);
    crust_rs_init(&s->lost, SEND_MAX_RANGES);
}

void crust_send_stream_free(crust_send_stream *s)
{
    free(s->buf);
    free(s->pend);
    crust_rs_free(&s->acked);
    crust_rs_free(&s->lost);
    memset(s, 0, sizeof *s);
}

static int pend_push(crust_send_stream *s, const crust_pending_msg *m)
{
    if (s->pend_n == s->pend_cap) {
        uint32_t ncap = s->pend_cap ? s->pend_cap * 2 : 16;
        crust_pending_msg *np = malloc((size_t)ncap * sizeof *np);
        if (!np)
            return CRUST_ENOMEM;
        for (uint32_t i = 0; i < s->pend_n; i++)
            np[i] = s->pend[(s->pend_head + i) % s->pend_cap];
        free(s->pend);
        s->pend = np;
        s->pend_cap = ncap;
        s->pend_head = 0;
    }
    s->pend[(s->pend_head + s->pend_n) % s->pend_cap] = *m;
    s->pend_n++;
    return CRUST_OK;
}

int crust_send_stream_push(crust_send_stream *s, const uint8_t *msg, size_t len, int control,
                           uint64_t id, uint64_t now_us, int track)
{
    uint8_t hdr[8];
    size_t hlen = crust_varint_put(hdr, (uint64_t)len * 2 + (control ? 1 : 0));
    uint64_t need = s->end + hlen + len - s->base;
    if (crust_ring_reserve(&s->buf, &s->cap, s->base, s->end, need))
        return CRUST_ENOMEM;
    if (track) {
        crust_pending_msg m = {id, s->end, s->end + hlen + len, now_us, len};
        if (pend_push(s, &m))
            return CRUST_ENOMEM;
    }
    crust_ring_write(s->buf, s->cap, s->end, hdr, hlen);
    crust_ring_write(s->buf, s->cap, s->end + hlen, msg, len);
    s->end += hlen + len;
    return CRUST_OK;
}

void crust_send_stream_copy(const crust_send_stream *s, uint64_t off, size_t n, uint8_t *dst)
{
    crust_ring_read(s->buf, s->cap, off, dst, n);
}

uint64_t crust_send_stream_ack(crust_send_stream *s, uint64_t off, uint64_t n)
{
    uint64_t hi = off + n;
    if (hi <= s->base)
        return 0;
    if (off < s->base)
        off = s->base;
    crust_rs_remove(&s->lost, off, hi);
    uint64_t old = s->base;
    if (off == s->base) {
        s->base = hi;
    } else if (crust_rs_add(&s->acked, off, hi) != CRUST_OK) {
        /* Out of range slots: forgetting an ACK only costs a spurious
         * retransmission later, never correctness. */
        return 0;
    }
    while (!crust_rs_empty(&s->acked) && crust_rs_lowest(&s->acked)->lo <= s->base) {
        if (crust_rs_lowest(&s->acked)->hi > s->base)
            s->base = crust_rs_lowest(&s->acked)->hi;
        crust_rs_pop_lowest(&s->acked);
    }
    if (!crust_rs_empty(&s->lost))
        crust_rs_remove_below(&s->lost, s->base);
    return s->base - old;
}

int crust_send_stream_lose(crust_send_stream *s, uint64_t off, uint64_t n)
{
    uint64_t hi = off + n;
    if (off < s->base)
        off = s->base;
    if (off >= hi)
        return CRUST_OK;
    /* Queue the parts of [off, hi) that are not acknowledged. */
    const crust_rangeset *a = &s->acked;
    uint64_t cur = off;
    for (uint32_t i = 0; i < a->n && cur < hi; i++) {
        if (a->r[i].hi <= cur)
            continue;
        if (a->r[i].lo >= hi)
            break;
        if (a->r[i].lo > cur && crust_rs_add(&s->lost, cur, a->r[i].lo))
            goto coarse;
        cur = a->r[i].hi;
    }
    if (cur < hi && crust_rs_add(&s->lost, cur, hi))
        goto coarse;
    return CRUST_OK;
coarse:
    /* Too fragmented to track exactly: resend everything unacknowledged
     * from the lowest lost byte. Wasteful, bounded, and never loses data. */
    {
        uint64_t lo = crust_rs_empty(&s->lost) ? off : crust_rs_lowest(&s->lost)->lo;
        if (off < lo)
            lo = off;
        crust_rs_free(&s->lost);
        crust_rs_init(&s->lost, SEND_MAX_RANGES);
        return crust_rs_add(&s->lost, lo, s->sent_hi);
    }
}

void crust_send_stream_sent(crust_send_stream *s)
{
    while (s->pend_n && s->pend[s->pend_head].start < s->sent_hi) {
        s->pend_head = (s->pend_head + 1) % s->pend_cap;
        s->pend_n--;
    }
}

const crust_pending_msg *crust_send_stream_oldest_pending(const crust_send_stream *s)
{
    return s->pend_n ? &s->pend[s->pend_head] : NULL;
}

uint64_t crust_send_stream_drop_oldest(crust_send_stream *s)
{
    crust_pending_msg m = s->pend[s->pend_head];
    s->pend_head = (s->pend_head + 1) % s->pend_cap;
    s->pend_n--;
    /* Unsent bytes after the message move down over it; their offsets were
     * never on the wire, so the peer sees a seamless stream. */
    uint64_t k = m.end - m.start;
    uint8_t tmp[512];
    for (uint64_t o = m.end; o < s->end;) {
        size_t c = (size_t)(s->end - o < sizeof tmp ? s->end - o : sizeof tmp);
        crust_ring_read(s->buf, s->cap, o, tmp, c);
        crust_ring_write(s->buf, s->cap, o - k, tmp, c);
        o += c;
    }
    s->end -= k;
    for (uint32_t i = 0; i < s->pend_n; i++) {
        crust_pending_msg *p = &s->pend[(s->pend_head + i) % s->pend_cap];
        p->start -= k;
        p->end -= k;
    }
    return m.body_len;
}

size_t crust_send_stream_memory(const crust_send_stream *s)
{
    return (size_t)s->cap + (size_t)s->pend_cap * sizeof(crust_pending_msg) +
           crust_rs_memory(&s->acked) + crust_rs_memory(&s->lost);
}
