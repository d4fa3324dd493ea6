/*
 * test_recv_memory.c - the receive stream holds what arrived, never a span
 * a peer implies by an offset or a claimed length (issue 15, design 0040):
 * sparse 1-byte frames up to 32 MiB, a parked maximum-size header, holes
 * filled byte by byte; and reassembly stays exact under random order,
 * duplicates and overlaps with and without an embedder's buffer.
 */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "crust.h"
#include "frame.h"
#include "stream.h"

static long live;
static uint8_t *t_alloc(void *ctx, uint64_t len, void **handle)
{
    (void)ctx;
    uint8_t *p = malloc((size_t)len);
    live += p != NULL;
    *handle = p;
    return p;
}
static void t_free(void *ctx, void *handle)
{
    (void)ctx;
    live--;
    free(handle);
}
static const crust_msg_alloc AL = {t_alloc, t_free, NULL, 1000, 8u << 20};

/* The documented budget (crust.h, crust_conn_memory) for one stream that
 * holds b bytes in at most r out-of-order ranges and delivered nothing. */
static size_t budget(uint64_t b, uint64_t r)
{
    return (size_t)(6 * b + r * CRUST_RECV_RANGE_COST + 4352);
}

static void test_sparse(void)
{
    crust_recv_stream s;
    crust_recv_stream_init(&s);
    uint8_t x = 1;
    uint64_t stored = 0;
    for (uint64_t off = 4096; off <= (32u << 20); off += 4096)
        if (crust_recv_stream_write(&s, off, &x, 1, &AL) == CRUST_OK)
            stored++;
    CHECK(stored == CRUST_RECV_MAX_RANGES); /* the rest: dropped, resent later */
    size_t m = crust_recv_stream_memory(&s);
    if (getenv("VERBOSE"))
        fprintf(stderr, "  sparse: %zu bytes for %llu stored\n", m, (unsigned long long)stored);
    CHECK(m <= budget(stored, stored));
    CHECK(m < 200000); /* was 64 MiB: the ring spanned the highest offset */
    crust_recv_stream_free(&s, &AL);
}

/* A header claiming 8 MiB, then nothing: no buffer, no ring for the body. */
static void test_parked_header(void)
{
    crust_recv_stream s;
    crust_recv_stream_init(&s);
    uint8_t h[9];
    size_t hn = crust_varint_put(h, (uint64_t)(8u << 20) * 2);
    memset(h + hn, 0, sizeof h - hn);
    CHECK(crust_recv_stream_write(&s, 0, h, hn + 1, &AL) == CRUST_OK);
    /* And one byte near the end of the body. */
    CHECK(crust_recv_stream_write(&s, (8u << 20) - 1, h, 1, &AL) == CRUST_OK);
    CHECK(live == 0);
    CHECK(crust_recv_stream_memory(&s) <= budget(hn + 2, 1));
    crust_recv_stream_free(&s, &AL);
}

/* Every other byte, then the ones between: the chunks merge, so filling
 * holes leaves few chunks, not one per byte. */
static void test_fill_holes(void)
{
    crust_recv_stream s;
    crust_recv_stream_init(&s);
    enum { N = 1000 }; /* within CRUST_RECV_MAX_RANGES */
    uint8_t b[2 * N + 2];
    for (unsigned i = 0; i < sizeof b; i++)
        b[i] = (uint8_t)i;
    for (unsigned round = 0; round < 4; round++) {
        uint64_t base = 1 + (uint64_t)round * 2 * N;
        for (unsigned i = 0; i < N; i++)
            CHECK(crust_recv_stream_write(&s, base + 2 * i + 1, &b[1], 1, NULL) == CRUST_OK);
        for (unsigned i = 0; i < N; i++)
            CHECK(crust_recv_stream_write(&s, base + 2 * i, &b[0], 1, NULL) == CRUST_OK);
    }
    CHECK(s.ooo.n == 1 && s.chunks.n <= 2);
    CHECK(crust_recv_stream_memory(&s) <= budget(8 * N, N));
    crust_recv_stream_free(&s, NULL);
}

/* A stream of messages (some large enough for the embedder's buffer),
 * cut into pieces delivered in random order with duplicates and
 * overlapping retransmissions: every message comes out intact. */
static uint64_t rs = 0x9e3779b97f4a7c15ull;
static unsigned rnd(unsigned n)
{
    rs ^= rs << 13, rs ^= rs >> 7, rs ^= rs << 17;
    return (unsigned)(rs % n);
}

static void test_reassembly(const crust_msg_alloc *al)
{
    enum { TOTAL = 3 << 20 };
    uint8_t *wire = malloc(TOTAL), *out = malloc(TOTAL);
    size_t lens[400], nmsg = 0, w = 0;
    while (nmsg < 400) {
        size_t len = rnd(4) ? rnd(3000) : 1000 + rnd(200000);
        if (w + 10 + len > TOTAL)
            break;
        w += crust_varint_put(wire + w, (uint64_t)len * 2);
        for (size_t k = 0; k < len; k++)
            wire[w + k] = (uint8_t)(nmsg * 13 + k);
        w += len;
        lens[nmsg++] = len;
    }
    crust_recv_stream s;
    crust_recv_stream_init(&s);
    size_t got = 0, bad = 0;
    /* Windows of 256 KiB are sent in shuffled 1-1400 byte pieces, a
     * quarter of them twice, some overlapping their neighbours. */
    for (size_t wlo = 0; wlo < w; wlo += 256 << 10) {
        size_t whi = wlo + (256 << 10) < w ? wlo + (256 << 10) : w;
        size_t cuts[2000], nc = 0, at = wlo;
        while (at < whi && nc < 1999) {
            cuts[nc++] = at;
            at += 1 + rnd(1400);
        }
        cuts[nc] = whi;
        size_t *order = malloc(nc * 2 * sizeof *order), no = 0;
        for (size_t i = 0; i < nc; i++) {
            order[no++] = i;
            if (rnd(4) == 0)
                order[no++] = i;
        }
        for (size_t i = no; i > 1; i--) {
            size_t j = rnd((unsigned)i), t = order[i - 1];
            order[i - 1] = order[j], order[j] = t;
        }
        for (size_t i = 0; i < no; i++) {
            size_t lo = cuts[order[i]], hi = order[i] + 1 <= nc ? cuts[order[i] + 1] : whi;
            if (hi > whi)
                hi = whi;
            if (rnd(5) == 0 && hi + 100 <= whi)
                hi += 100;
            CHECK(crust_recv_stream_write(&s, lo, wire + lo, hi - lo, al) == CRUST_OK);
            uint64_t len, hdr;
            while (crust_recv_stream_peek(&s, 8u << 20, &len, &hdr, NULL) == 1) {
                void *handle = NULL;
                const uint8_t *data = out;
                if (al && crust_recv_stream_take(&s, hdr, len, &handle))
                    data = handle;
                else
                    crust_recv_stream_consume(&s, hdr, len, out, al);
                if (len != lens[got])
                    bad++;
                for (size_t k = 0; k < len; k++)
                    if (data[k] != (uint8_t)(got * 13 + k)) {
                        bad++;
                        break;
                    }
                if (handle)
                    t_free(NULL, handle);
                got++;
                crust_recv_stream_adopt(&s, al);
            }
        }
        free(order);
    }
    CHECK(got == nmsg && bad == 0);
    CHECK(s.ooo.n == 0 && s.chunks.n == 0);
    crust_recv_stream_free(&s, al);
    CHECK(live == 0);
    free(wire);
    free(out);
}

int main(void)
{
    test_sparse();
    test_parked_header();
    test_fill_holes();
    test_reassembly(NULL);
    test_reassembly(&AL);
    return check_summary();
}
