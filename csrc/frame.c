/* frame.c - frame and varint codecs; every parser here takes untrusted
 * input and bounds-checks each read. */
#include "frame.h"

#include <string.h>

#include "crust.h"

size_t crust_varint_put(uint8_t *p, uint64_t v)
{
    if (v < 64) {
        p[0] = (uint8_t)v;
        return 1;
    }
    if (v < 16384) {
        p[0] = (uint8_t)(0x40 | (v >> 8));
        p[1] = (uint8_t)v;
        return 2;
    }
    if (v < 1073741824) {
        p[0] = (uint8_t)(0x80 | (v >> 24));
        p[1] = (uint8_t)(v >> 16);
        p[2] = (uint8_t)(v >> 8);
        p[3] = (uint8_t)v;
        return 4;
    }
    p[0] = (uint8_t)(0xc0 | ((v >> 56) & 0x3f));
    for (int i = 1; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * (7 - i)));
    return 8;
}

size_t crust_varint_get(const uint8_t *p, size_t len, uint64_t *v)
{
    if (len == 0)
        return 0;
    size_t n = (size_t)1 << (p[0] >> 6);
    if (len < n)
        return 0;
    uint64_t x = p[0] & 0x3f;
    for (size_t i = 1; i < n; i++)
        x = (x << 8) | p[i];
    *v = x;
    return n;
}

#define GETV(dst)                                        \
    do {                                                 \
        size_t n_ = crust_varint_get(p + off, len - off, &(dst)); \
        if (!n_)                                         \
            return CRUST_EMALFORMED;                     \
        off += n_;                                       \
    } while (0)

int crust_frame_parse_untrusted(const uint8_t *p, size_t len, crust_frame *f)
{
    size_t off = 1;
    if (len == 0)
        return CRUST_EMALFORMED;
    memset(f, 0, sizeof *f);
    f->type = p[0];
    switch (p[0]) {
    case CRUST_FT_PADDING:
        while (off < len && p[off] == 0)
            off++;
        break;
    case CRUST_FT_PING:
        break;
    case CRUST_FT_ACK: {
        crust_ack_frame *a = &f->ack;
        GETV(a->largest);
        GETV(a->delay);
        GETV(a->range_count);
        GETV(a->first_range);
        if (a->first_range > a->largest)
            return CRUST_EMALFORMED;
        /* Validate every range now so the iterator cannot fail later. */
        uint64_t smallest = a->largest - a->first_range;
        size_t start = off;
        if (a->range_count > len) /* each range needs >= 2 bytes */
            return CRUST_EMALFORMED;
        for (uint64_t i = 0; i < a->range_count; i++) {
            uint64_t gap, rlen;
            GETV(gap);
            GETV(rlen);
            /* next largest = smallest - gap - 2; must stay >= rlen */
            if (smallest < gap + 2 || smallest - gap - 2 < rlen)
                return CRUST_EMALFORMED;
            smallest = smallest - gap - 2 - rlen;
        }
        a->ranges = p + start;
        a->ranges_len = off - start;
        break;
    }
    case CRUST_FT_STREAM:
    case CRUST_FT_STREAM + 1:
    case CRUST_FT_STREAM + 2:
    case CRUST_FT_STREAM + 3: {
        crust_stream_frame *st = &f->stream;
        uint64_t slen;
        f->type = CRUST_FT_STREAM;
        st->prio = (uint8_t)(p[0] - CRUST_FT_STREAM);
        GETV(st->off);
        GETV(slen);
        if (slen > len - off || st->off + slen > CRUST_VARINT_MAX)
            return CRUST_EMALFORMED;
        st->data = p + off;
        st->len = (size_t)slen;
        off += (size_t)slen;
        break;
    }
    case CRUST_FT_MAX_DATA:
        GETV(f->max_data);
        break;
    case CRUST_FT_PATH_CHALLENGE:
    case CRUST_FT_PATH_RESPONSE:
        if (len - off < 8)
            return CRUST_EMALFORMED;
        f->path_data = p + off;
        off += 8;
        break;
    case CRUST_FT_CLOSE:
        GETV(f->close.reason);
        GETV(f->close.code);
        break;
    default:
        return CRUST_EMALFORMED;
    }
    return (int)off;
}

void crust_ack_iter_init(crust_ack_iter *it, const crust_ack_frame *f)
{
    it->p = f->ranges;
    it->len = f->ranges_len;
    it->remaining = f->range_count;
    it->next_hi = f->largest;
    it->first = 1;
    it->first_range = f->first_range;
}

int crust_ack_iter_next(crust_ack_iter *it, uint64_t *lo, uint64_t *hi)
{
    if (it->first) {
        it->first = 0;
        *hi = it->next_hi;
        *lo = it->next_hi - it->first_range;
        it->next_hi = *lo; /* smallest of this range, for the next gap */
        return 1;
    }
    if (!it->remaining)
        return 0;
    uint64_t gap = 0, rlen = 0;
    size_t n = crust_varint_get(it->p, it->len, &gap);
    it->p += n;
    it->len -= n;
    n = crust_varint_get(it->p, it->len, &rlen);
    it->p += n;
    it->len -= n;
    it->remaining--;
    *hi = it->next_hi - gap - 2;
    *lo = *hi - rlen;
    it->next_hi = *lo;
    return 1;
}

size_t crust_frame_put_stream_header(uint8_t *p, size_t cap, unsigned prio, uint64_t off,
                                     uint64_t len)
{
    size_t need = crust_frame_stream_overhead(off, len);
    if (need > cap)
        return 0;
    p[0] = (uint8_t)(CRUST_FT_STREAM + prio);
    size_t n = 1 + crust_varint_put(p + 1, off);
    return n + crust_varint_put(p + n, len);
}

size_t crust_frame_put_max_data(uint8_t *p, size_t cap, uint64_t max)
{
    if (cap < 1 + crust_varint_len(max))
        return 0;
    p[0] = CRUST_FT_MAX_DATA;
    return 1 + crust_varint_put(p + 1, max);
}

size_t crust_frame_put_path(uint8_t *p, size_t cap, uint8_t type, const uint8_t data[8])
{
    if (cap < 9)
        return 0;
    p[0] = type;
    memcpy(p + 1, data, 8);
    return 9;
}

size_t crust_frame_put_close(uint8_t *p, size_t cap, uint64_t reason, uint64_t code)
{
    if (code > CRUST_VARINT_MAX)
        code = CRUST_VARINT_MAX;
    if (cap < 1 + crust_varint_len(reason) + crust_varint_len(code))
        return 0;
    p[0] = CRUST_FT_CLOSE;
    size_t n = 1 + crust_varint_put(p + 1, reason);
    return n + crust_varint_put(p + n, code);
}

unsigned crust_pn_encode_len(uint64_t pn, uint64_t largest_acked_plus1)
{
    /* Enough bits to represent twice the unacknowledged span. */
    uint64_t span = pn + 1 - largest_acked_plus1;
    if (largest_acked_plus1 == 0)
        span = pn + 1;
    span *= 2;
    /* Never fewer than 2 bytes: 1 byte decodes only within 128 packets of
     * the receiver's largest, and fast paths reorder further than that
     * while ACKs still keep the unacknowledged span small. */
    if (span < (UINT64_C(1) << 16))
        return 2;
    if (span < (UINT64_C(1) << 24))
        return 3;
    return 4;
}

uint64_t crust_pn_decode(uint64_t largest_rx_plus1, uint64_t truncated, unsigned nbits)
{
    uint64_t expected = largest_rx_plus1;
    uint64_t win = UINT64_C(1) << nbits;
    uint64_t hwin = win / 2;
    uint64_t mask = win - 1;
    uint64_t candidate = (expected & ~mask) | truncated;
    if (candidate + hwin <= expected && candidate < (UINT64_C(1) << 62) - win)
        return candidate + win;
    if (candidate > expected + hwin && candidate >= win)
        return candidate - win;
    return candidate;
}
