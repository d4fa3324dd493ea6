/* ranges.c - sorted disjoint range set; see ranges.h. */
#include "ranges.h"

#include <stdlib.h>
#include <string.h>

#include "crust.h"

void crust_rs_init(crust_rangeset *s, uint32_t max_ranges)
{
    s->r = NULL;
    s->n = s->cap = 0;
    s->max = max_ranges;
}

void crust_rs_free(crust_rangeset *s)
{
    free(s->r);
    s->r = NULL;
    s->n = s->cap = 0;
}

int crust_rs_reserve(crust_rangeset *s, uint32_t need)
{
    if (need <= s->cap)
        return CRUST_OK;
    if (need > s->max)
        return CRUST_ENOMEM;
    uint32_t cap = s->cap ? s->cap : 4;
    while (cap < need)
        cap *= 2;
    if (cap > s->max)
        cap = s->max;
    crust_range *r = realloc(s->r, (size_t)cap * sizeof *r);
    if (!r)
        return CRUST_ENOMEM;
    s->r = r;
    s->cap = cap;
    return CRUST_OK;
}

/* Index of the first range whose hi >= x (so it touches or follows x). */
static uint32_t lower_bound_hi(const crust_rangeset *s, uint64_t x)
{
    uint32_t lo = 0, hi = s->n;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (s->r[mid].hi < x)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

int crust_rs_add(crust_rangeset *s, uint64_t lo, uint64_t hi)
{
    if (lo >= hi)
        return CRUST_OK;
    /* Fast path: appending to or extending the highest range, the common
     * case for in-order packet numbers and stream bytes. */
    if (s->n && s->r[s->n - 1].hi == lo) {
        s->r[s->n - 1].hi = hi;
        return CRUST_OK;
    }
    if (s->n == 0 || s->r[s->n - 1].hi < lo) {
        if (crust_rs_reserve(s, s->n + 1))
            return CRUST_ENOMEM;
        s->r[s->n].lo = lo;
        s->r[s->n].hi = hi;
        s->n++;
        return CRUST_OK;
    }
    uint32_t i = lower_bound_hi(s, lo);
    /* Ranges i..j-1 touch or overlap [lo, hi) and merge into one. */
    uint32_t j = i;
    while (j < s->n && s->r[j].lo <= hi)
        j++;
    if (i == j) {
        if (crust_rs_reserve(s, s->n + 1))
            return CRUST_ENOMEM;
        memmove(&s->r[i + 1], &s->r[i], (size_t)(s->n - i) * sizeof *s->r);
        s->r[i].lo = lo;
        s->r[i].hi = hi;
        s->n++;
        return CRUST_OK;
    }
    if (s->r[i].lo < lo)
        lo = s->r[i].lo;
    if (s->r[j - 1].hi > hi)
        hi = s->r[j - 1].hi;
    s->r[i].lo = lo;
    s->r[i].hi = hi;
    memmove(&s->r[i + 1], &s->r[j], (size_t)(s->n - j) * sizeof *s->r);
    s->n -= (j - i - 1);
    return CRUST_OK;
}

int crust_rs_remove(crust_rangeset *s, uint64_t lo, uint64_t hi)
{
    if (lo >= hi || s->n == 0)
        return CRUST_OK;
    uint32_t i = lower_bound_hi(s, lo + 1);
    if (i < s->n && s->r[i].lo < lo && s->r[i].hi > hi) {
        /* Split one range in two. */
        if (crust_rs_reserve(s, s->n + 1))
            return CRUST_ENOMEM;
        memmove(&s->r[i + 1], &s->r[i], (size_t)(s->n - i) * sizeof *s->r);
        s->n++;
        s->r[i].hi = lo;
        s->r[i + 1].lo = hi;
        return CRUST_OK;
    }
    uint32_t first_del = i, last_del = i; /* [first_del, last_del) erased */
    if (i < s->n && s->r[i].lo < lo) {
        s->r[i].hi = lo; /* trim the tail of a range starting before lo */
        first_del = last_del = i + 1;
    }
    uint32_t j = first_del;
    while (j < s->n && s->r[j].hi <= hi)
        j++;
    last_del = j;
    if (j < s->n && s->r[j].lo < hi)
        s->r[j].lo = hi;
    if (last_del > first_del) {
        memmove(&s->r[first_del], &s->r[last_del], (size_t)(s->n - last_del) * sizeof *s->r);
        s->n -= last_del - first_del;
    }
    return CRUST_OK;
}

void crust_rs_remove_below(crust_rangeset *s, uint64_t x)
{
    uint32_t k = 0;
    while (k < s->n && s->r[k].hi <= x)
        k++;
    if (k) {
        memmove(&s->r[0], &s->r[k], (size_t)(s->n - k) * sizeof *s->r);
        s->n -= k;
    }
    if (s->n && s->r[0].lo < x)
        s->r[0].lo = x;
}

void crust_rs_pop_lowest(crust_rangeset *s)
{
    if (!s->n)
        return;
    memmove(&s->r[0], &s->r[1], (size_t)(s->n - 1) * sizeof *s->r);
    s->n--;
}

const crust_range *crust_rs_next(const crust_rangeset *s, uint64_t x)
{
    uint32_t i = lower_bound_hi(s, x + 1);
    return i < s->n ? &s->r[i] : NULL;
}

int crust_rs_contains(const crust_rangeset *s, uint64_t x)
{
    uint32_t i = lower_bound_hi(s, x + 1);
    return i < s->n && s->r[i].lo <= x;
}

int crust_rs_overlaps(const crust_rangeset *s, uint64_t lo, uint64_t hi)
{
    if (lo >= hi)
        return 0;
    uint32_t i = lower_bound_hi(s, lo + 1);
    return i < s->n && s->r[i].lo < hi;
}

size_t crust_rs_memory(const crust_rangeset *s) { return (size_t)s->cap * sizeof(crust_range); }
