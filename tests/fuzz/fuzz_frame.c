/*
 * fuzz_frame.c - libFuzzer target: the frame codec over arbitrary bytes.
 *
 * crust_frame_parse_untrusted must never read past its input and must
 * return either CRUST_EMALFORMED or a length within it; an ACK frame it
 * accepts must walk (crust_ack_iter) through exactly its declared ranges,
 * strictly descending and never below packet number 0, consuming exactly
 * the bytes the parser measured. Varints and packet-number decoding are
 * checked alongside on the same bytes.
 */
#include "fuzz_common.h"

static uint64_t load_be(const uint8_t *p, size_t n)
{
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++)
        v = (v << 8) | p[i];
    return v;
}

static void check_ack(const crust_ack_frame *f)
{
    crust_ack_iter it;
    crust_ack_iter_init(&it, f);
    uint64_t lo, hi, prev_lo = 0, ranges = 0;
    int first = 1;
    while (crust_ack_iter_next(&it, &lo, &hi)) {
        FUZZ_ASSERT(lo <= hi);
        if (first)
            FUZZ_ASSERT(hi == f->largest && hi - lo == f->first_range);
        else
            FUZZ_ASSERT(hi + 2 <= prev_lo); /* a gap of at least one */
        prev_lo = lo;
        first = 0;
        FUZZ_ASSERT(++ranges <= f->range_count + 1);
    }
    FUZZ_ASSERT(ranges == f->range_count + 1);
    FUZZ_ASSERT(it.len == 0); /* every range byte consumed, none beyond */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* Copy to an exact-size heap buffer so ASan sees any read past the end. */
    uint8_t *buf = malloc(size ? size : 1);
    FUZZ_ASSERT(buf != NULL);
    memcpy(buf, data, size);

    size_t off = 0;
    while (off < size) {
        crust_frame f;
        int n = crust_frame_parse_untrusted(buf + off, size - off, &f);
        if (n < 0) {
            FUZZ_ASSERT(n == CRUST_EMALFORMED);
            break;
        }
        FUZZ_ASSERT(n > 0 && (size_t)n <= size - off);
        switch (f.type) {
        case CRUST_FT_ACK:
            FUZZ_ASSERT(f.ack.ranges >= buf + off &&
                        f.ack.ranges + f.ack.ranges_len <= buf + off + (size_t)n);
            check_ack(&f.ack);
            break;
        case CRUST_FT_STREAM:
            FUZZ_ASSERT(f.stream.prio < CRUST_NUM_PRIO);
            FUZZ_ASSERT(f.stream.data >= buf + off &&
                        f.stream.data + f.stream.len <= buf + off + (size_t)n);
            FUZZ_ASSERT(f.stream.off + f.stream.len <= CRUST_VARINT_MAX);
            break;
        case CRUST_FT_PATH_CHALLENGE:
        case CRUST_FT_PATH_RESPONSE:
            FUZZ_ASSERT(f.path_data >= buf + off && f.path_data + 8 <= buf + off + (size_t)n);
            break;
        default:
            break;
        }
        off += (size_t)n;
    }

    /* Varints: whatever decodes re-encodes (minimally) to the same value. */
    uint64_t v;
    size_t vn = crust_varint_get(buf, size, &v);
    if (vn) {
        uint8_t enc[8], vn2;
        FUZZ_ASSERT(v <= CRUST_VARINT_MAX);
        size_t m = crust_varint_put(enc, v);
        FUZZ_ASSERT(m == crust_varint_len(v) && m <= vn);
        uint64_t back;
        vn2 = (uint8_t)crust_varint_get(enc, m, &back);
        FUZZ_ASSERT(vn2 == m && back == v);
    }

    /* Packet numbers: the decoded number keeps the truncated bits and lies
     * within half a window of the expected one (RFC 9000 A.3). */
    if (size >= 13) {
        uint64_t largest = load_be(buf, 8) & ((UINT64_C(1) << 62) - 1);
        unsigned nbytes = (buf[8] & 3u) + 1;
        uint64_t trunc = load_be(buf + 9, nbytes);
        uint64_t pn = crust_pn_decode(largest, trunc, nbytes * 8);
        uint64_t win = UINT64_C(1) << (nbytes * 8);
        FUZZ_ASSERT((pn & (win - 1)) == trunc);
        uint64_t dist = pn > largest ? pn - largest : largest - pn;
        if (largest >= win && largest < (UINT64_C(1) << 62) - win)
            FUZZ_ASSERT(dist <= win / 2);
        /* Round trip: a number encoded against the largest acknowledged
         * decodes right at a receiver that got exactly that far. */
        uint64_t acked_plus1 = largest >> 2, next = acked_plus1 + (trunc & 0x3fffffff);
        unsigned len = crust_pn_encode_len(next, acked_plus1);
        FUZZ_ASSERT(len >= 1 && len <= 4);
        uint64_t mask = (UINT64_C(1) << (8 * len)) - 1;
        FUZZ_ASSERT(crust_pn_decode(acked_plus1, next & mask, 8 * len) == next);
    }
    free(buf);
    return 0;
}
