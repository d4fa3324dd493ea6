/* test_codec.c - varints, frames, ACK ranges, packet numbers, range sets. */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "crust.h"
#include "frame.h"
#include "ranges.h"

static void test_varint(void)
{
    const uint64_t vals[] = {0, 1, 63, 64, 16383, 16384, 1073741823, 1073741824, CRUST_VARINT_MAX};
    for (size_t i = 0; i < sizeof vals / sizeof vals[0]; i++) {
        uint8_t b[8];
        size_t n = crust_varint_put(b, vals[i]);
        CHECK(n == crust_varint_len(vals[i]));
        uint64_t v = 0;
        CHECK(crust_varint_get(b, n, &v) == n && v == vals[i]);
        CHECK(crust_varint_get(b, n - 1, &v) == 0 || n == 1); /* truncated */
    }
    /* RFC 9000 A.1 examples */
    const uint8_t ex[] = {0xc2, 0x19, 0x7c, 0x5e, 0xff, 0x14, 0xe8, 0x8c};
    uint64_t v;
    CHECK(crust_varint_get(ex, 8, &v) == 8 && v == 151288809941952652ull);
    const uint8_t ex2[] = {0x7b, 0xbd};
    CHECK(crust_varint_get(ex2, 2, &v) == 2 && v == 15293);
}

static void test_pn(void)
{
    /* RFC 9000 A.3: largest 0xa82f30ea, truncated 0x9b32 (16 bits) */
    CHECK(crust_pn_decode(0xa82f30eaull + 1, 0x9b32, 16) == 0xa82f9b32ull);
    for (uint64_t largest = 0; largest < 5000; largest += 7)
        for (uint64_t pn = largest + 1; pn < largest + 100; pn++) {
            unsigned len = crust_pn_encode_len(pn, largest + 1);
            uint64_t mask = (len == 4) ? 0xffffffffull : ((1ull << (8 * len)) - 1);
            CHECK(crust_pn_decode(largest + 1, pn & mask, 8 * len) == pn);
        }
}

static void test_frames(void)
{
    uint8_t b[64];
    crust_frame f;
    size_t n = crust_frame_put_stream_header(b, sizeof b, 2, 1000, 5);
    memcpy(b + n, "hello", 5);
    CHECK(crust_frame_parse_untrusted(b, n + 5, &f) == (int)(n + 5));
    CHECK(f.type == CRUST_FT_STREAM && f.stream.prio == 2 && f.stream.off == 1000 &&
          f.stream.len == 5);
    CHECK(memcmp(f.stream.data, "hello", 5) == 0);
    /* Every truncation of a valid frame fails cleanly. */
    for (size_t k = 0; k < n + 5; k++)
        CHECK(crust_frame_parse_untrusted(b, k, &f) < 0);
    /* ACK: largest 100, first range 10 (90..100), gap 4 -> next largest 84,
     * range 3 -> 81..84 */
    uint8_t a[] = {CRUST_FT_ACK, 0x40, 100, 7, 1, 10, 4, 3};
    CHECK(crust_frame_parse_untrusted(a, sizeof a, &f) == (int)sizeof a);
    crust_ack_iter it;
    crust_ack_iter_init(&it, &f.ack);
    uint64_t lo, hi;
    CHECK(crust_ack_iter_next(&it, &lo, &hi) && lo == 90 && hi == 100);
    CHECK(crust_ack_iter_next(&it, &lo, &hi) && lo == 81 && hi == 84);
    CHECK(!crust_ack_iter_next(&it, &lo, &hi));
    /* A range running below zero is malformed. */
    uint8_t bad[] = {CRUST_FT_ACK, 5, 0, 1, 2, 1, 3};
    CHECK(crust_frame_parse_untrusted(bad, sizeof bad, &f) < 0);
    uint8_t bad2[] = {CRUST_FT_ACK, 5, 0, 0, 6};
    CHECK(crust_frame_parse_untrusted(bad2, sizeof bad2, &f) < 0);
    uint8_t unknown[] = {0x3f};
    CHECK(crust_frame_parse_untrusted(unknown, 1, &f) < 0);
    /* Random bytes never crash and never claim more than they have. */
    srand(1);
    for (int i = 0; i < 200000; i++) {
        uint8_t r[24];
        size_t len = (size_t)(rand() % 24);
        for (size_t j = 0; j < len; j++)
            r[j] = (uint8_t)rand();
        if (len && (r[0] & 0x20))
            r[0] &= 0x1f; /* steer towards real frame types */
        int m = crust_frame_parse_untrusted(r, len, &f);
        CHECK(m < 0 || (size_t)m <= len);
        if (m > 0 && f.type == CRUST_FT_ACK) {
            crust_ack_iter_init(&it, &f.ack);
            int guard = 0;
            while (crust_ack_iter_next(&it, &lo, &hi) && guard++ < 100)
                CHECK(lo <= hi);
        }
    }
}

static void test_ranges(void)
{
    crust_rangeset s;
    crust_rs_init(&s, 8);
    CHECK(crust_rs_add(&s, 10, 20) == 0);
    CHECK(crust_rs_add(&s, 30, 40) == 0);
    CHECK(crust_rs_add(&s, 20, 30) == 0); /* merges all */
    CHECK(s.n == 1 && s.r[0].lo == 10 && s.r[0].hi == 40);
    CHECK(crust_rs_remove(&s, 15, 25) == 0); /* split */
    CHECK(s.n == 2 && s.r[0].hi == 15 && s.r[1].lo == 25);
    CHECK(crust_rs_contains(&s, 14) && !crust_rs_contains(&s, 15) && crust_rs_contains(&s, 25));
    CHECK(crust_rs_overlaps(&s, 12, 30) && !crust_rs_overlaps(&s, 15, 25));
    crust_rs_remove_below(&s, 30);
    CHECK(s.n == 1 && s.r[0].lo == 30 && s.r[0].hi == 40);
    for (uint64_t i = 0; i < 7; i++)
        CHECK(crust_rs_add(&s, 100 + 10 * i, 105 + 10 * i) == 0);
    CHECK(s.n == 8);
    CHECK(crust_rs_add(&s, 500, 501) == CRUST_ENOMEM && s.n == 8); /* capped, unchanged */
    CHECK(crust_rs_add(&s, 0, 1000) == 0 && s.n == 1);
    crust_rs_free(&s);

    /* Against a bitmap model. */
    crust_rs_init(&s, 1 << 20);
    static uint8_t model[2048];
    memset(model, 0, sizeof model);
    srand(7);
    for (int i = 0; i < 20000; i++) {
        uint64_t lo = (uint64_t)(rand() % 2000), hi = lo + (uint64_t)(rand() % 40);
        int add = rand() % 3 != 0;
        if (add)
            crust_rs_add(&s, lo, hi);
        else
            crust_rs_remove(&s, lo, hi);
        for (uint64_t x = lo; x < hi; x++)
            model[x] = (uint8_t)add;
        if (i % 97 == 0) {
            int ok = 1;
            for (uint64_t x = 0; x < 2048; x++)
                ok &= crust_rs_contains(&s, x) == model[x];
            for (uint32_t k = 0; k + 1 < s.n; k++)
                ok &= s.r[k].hi < s.r[k + 1].lo && s.r[k].lo < s.r[k].hi;
            CHECK(ok);
        }
    }
    crust_rs_free(&s);
}

int main(void)
{
    test_varint();
    test_pn();
    test_frames();
    test_ranges();
    return check_summary();
}
