/*
 * ranges.h - a set of disjoint half-open uint64 ranges [lo, hi), sorted.
 *
 * Used for received packet numbers (ACK ranges), received stream bytes
 * above the contiguous prefix, and acknowledged / lost stream bytes on the
 * sending side. The array grows by doubling up to `max` ranges; it is empty
 * (no allocation) until first used, so idle connections cost nothing.
 */
#ifndef CRUST_RANGES_H
#define CRUST_RANGES_H

#include <stddef.h>
#include <stdint.h>

typedef struct crust_range {
    uint64_t lo, hi;
} crust_range;

typedef struct crust_rangeset {
    crust_range *r;
    uint32_t n, cap, max;
} crust_rangeset;

void crust_rs_init(crust_rangeset *s, uint32_t max_ranges);
void crust_rs_free(crust_rangeset *s);
/* Add [lo, hi), merging neighbours. CRUST_ENOMEM if the set would need more
 * than `max` ranges or memory ran out (the set is then unchanged). */
int crust_rs_add(crust_rangeset *s, uint64_t lo, uint64_t hi);
/* Make room for `need` ranges: CRUST_ENOMEM past `max` or out of memory.
 * Lets a caller check that one more range fits before it commits to other
 * state (recv_stream.c). */
int crust_rs_reserve(crust_rangeset *s, uint32_t need);
/* The first range ending above x (containing x or after it), or NULL. */
const crust_range *crust_rs_next(const crust_rangeset *s, uint64_t x);
/* Remove [lo, hi). May split a range: CRUST_ENOMEM as above. */
int crust_rs_remove(crust_rangeset *s, uint64_t lo, uint64_t hi);
/* Drop every value below x. */
void crust_rs_remove_below(crust_rangeset *s, uint64_t x);
/* Drop the lowest range (used to cap ACK state). */
void crust_rs_pop_lowest(crust_rangeset *s);
int crust_rs_contains(const crust_rangeset *s, uint64_t x);
/* 1 if any value of [lo, hi) is in the set. */
int crust_rs_overlaps(const crust_rangeset *s, uint64_t lo, uint64_t hi);
size_t crust_rs_memory(const crust_rangeset *s);

static inline int crust_rs_empty(const crust_rangeset *s) { return s->n == 0; }
static inline const crust_range *crust_rs_lowest(const crust_rangeset *s) { return s->r; }
static inline const crust_range *crust_rs_highest(const crust_rangeset *s)
{
    return &s->r[s->n - 1];
}

#endif
