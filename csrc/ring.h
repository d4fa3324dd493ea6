/*
 * ring.h - byte ring indexed by a 64-bit stream offset (internal).
 * Capacity is a power of two; byte at offset o lives at buf[o & (cap-1)].
 */
#ifndef CRUST_RING_H
#define CRUST_RING_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static inline void crust_ring_write(uint8_t *buf, uint64_t cap, uint64_t off, const uint8_t *src,
                                    size_t n)
{
    size_t at = (size_t)(off & (cap - 1));
    size_t first = (size_t)cap - at < n ? (size_t)cap - at : n;
    memcpy(buf + at, src, first);
    if (n > first)
        memcpy(buf, src + first, n - first);
}

static inline void crust_ring_read(const uint8_t *buf, uint64_t cap, uint64_t off, uint8_t *dst,
                                   size_t n)
{
    size_t at = (size_t)(off & (cap - 1));
    size_t first = (size_t)cap - at < n ? (size_t)cap - at : n;
    memcpy(dst, buf + at, first);
    if (n > first)
        memcpy(dst + first, buf, n - first);
}

/* Make the ring hold offsets [lo, lo + need) keeping the bytes of
 * [lo, keep_hi). Amortised: capacity doubles. Returns 0 or -1 (no memory;
 * the ring is unchanged). */
static inline int crust_ring_reserve(uint8_t **buf, uint64_t *cap, uint64_t lo, uint64_t keep_hi,
                                     uint64_t need)
{
    if (need <= *cap)
        return 0;
    uint64_t ncap = *cap ? *cap : 4096;
    while (ncap < need)
        ncap *= 2;
    uint8_t *nb = malloc((size_t)ncap);
    if (!nb)
        return -1;
    if (*buf && keep_hi > lo) {
        /* Copy in at most two pieces so wrap-around in either ring works. */
        uint64_t o = lo;
        while (o < keep_hi) {
            size_t at_old = (size_t)(o & (*cap - 1));
            size_t chunk = (size_t)(*cap - at_old);
            if (chunk > keep_hi - o)
                chunk = (size_t)(keep_hi - o);
            crust_ring_write(nb, ncap, o, *buf + at_old, chunk);
            o += chunk;
        }
    }
    free(*buf);
    *buf = nb;
    *cap = ncap;
    return 0;
}

#endif
