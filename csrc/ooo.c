/* ooo.c - out-of-order stream bytes in chunks; see ooo.h. */
#include "ooo.h"

#include <stdlib.h>
#include <string.h>

#include "crust.h"

void crust_ooo_init(crust_ooo *o) { memset(o, 0, sizeof *o); }

void crust_ooo_free(crust_ooo *o)
{
    for (uint32_t i = 0; i < o->n; i++)
        free(o->c[i].p);
    free(o->c);
    memset(o, 0, sizeof *o);
}

/* Index of the first chunk starting above x. */
static uint32_t upper_bound(const crust_ooo *o, uint64_t x)
{
    uint32_t lo = 0, hi = o->n;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (o->c[mid].lo <= x)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* Remove chunks [i, j), freeing their bytes. */
static void erase(crust_ooo *o, uint32_t i, uint32_t j)
{
    for (uint32_t k = i; k < j; k++) {
        o->held -= o->c[k].cap;
        free(o->c[k].p);
    }
    memmove(&o->c[i], &o->c[j], (size_t)(o->n - j) * sizeof *o->c);
    o->n -= j - i;
}

/* Make chunk k hold at least need bytes: doubling, up to the cap unless
 * need alone is more. */
static int grow(crust_ooo *o, uint32_t k, uint32_t need)
{
    crust_chunk *c = &o->c[k];
    if (need <= c->cap)
        return CRUST_OK;
    uint32_t ncap = c->cap * 2 > CRUST_OOO_CHUNK_MAX ? CRUST_OOO_CHUNK_MAX : c->cap * 2;
    if (ncap < need)
        ncap = need;
    uint8_t *p = realloc(c->p, ncap);
    if (!p)
        return CRUST_ENOMEM;
    o->held += ncap - c->cap;
    c->p = p;
    c->cap = ncap;
    return CRUST_OK;
}

/* Chunk k absorbs the next one when they touch and fit together. Keeps
 * the invariant that two touching chunks hold more than CRUST_OOO_CHUNK_MAX
 * bytes between them, so filling the holes between many small chunks
 * cannot leave many small chunks behind: their number stays below the
 * ranges plus two per CRUST_OOO_CHUNK_MAX bytes. */
static void merge_next(crust_ooo *o, uint32_t k)
{
    if (k + 1 >= o->n)
        return;
    crust_chunk *a = &o->c[k], *b = &o->c[k + 1];
    if (a->lo + a->len != b->lo || (uint64_t)a->len + b->len > CRUST_OOO_CHUNK_MAX)
        return;
    if (grow(o, k, a->len + b->len) != CRUST_OK)
        return; /* two chunks instead of one: still correct */
    a = &o->c[k];
    b = &o->c[k + 1];
    memcpy(a->p + a->len, b->p, b->len);
    a->len += b->len;
    erase(o, k + 1, k + 2);
}

int crust_ooo_put(crust_ooo *o, uint64_t off, const uint8_t *d, size_t n)
{
    if (!n)
        return CRUST_OK;
    if (n > CRUST_OOO_CHUNK_MAX * 2)
        return CRUST_ENOMEM; /* larger than any packet */
    uint32_t i = upper_bound(o, off);
    if (i && o->c[i - 1].lo + o->c[i - 1].len == off &&
        (uint64_t)o->c[i - 1].len + n <= CRUST_OOO_CHUNK_MAX) {
        /* Continues a chunk: append, growing it geometrically. */
        if (grow(o, i - 1, o->c[i - 1].len + (uint32_t)n) != CRUST_OK)
            return CRUST_ENOMEM;
        memcpy(o->c[i - 1].p + o->c[i - 1].len, d, n);
        o->c[i - 1].len += (uint32_t)n;
        merge_next(o, i - 1);
        return CRUST_OK;
    }
    if (o->n == o->cap) {
        uint32_t ncap = o->cap ? o->cap * 2 : 4;
        crust_chunk *c = realloc(o->c, (size_t)ncap * sizeof *c);
        if (!c)
            return CRUST_ENOMEM;
        o->c = c;
        o->cap = ncap;
    }
    /* A new chunk is exactly as large as its bytes: a sparse sender pays
     * for what it sent, no more. */
    uint8_t *p = malloc(n);
    if (!p)
        return CRUST_ENOMEM;
    memcpy(p, d, n);
    memmove(&o->c[i + 1], &o->c[i], (size_t)(o->n - i) * sizeof *o->c);
    o->c[i] = (crust_chunk){.lo = off, .len = (uint32_t)n, .cap = (uint32_t)n, .p = p};
    o->n++;
    o->held += n;
    merge_next(o, i);
    return CRUST_OK;
}

void crust_ooo_drain(crust_ooo *o, uint64_t x, crust_ooo_fn fn, void *ctx)
{
    uint32_t j = 0;
    while (j < o->n && o->c[j].lo < x) {
        fn(ctx, o->c[j].lo, o->c[j].p, o->c[j].len);
        j++;
    }
    if (j)
        erase(o, 0, j);
}

void crust_ooo_move(crust_ooo *o, uint64_t lo, uint64_t hi, crust_ooo_fn fn, void *ctx)
{
    uint32_t i = upper_bound(o, lo);
    if (i && o->c[i - 1].lo + o->c[i - 1].len > lo)
        i--;
    uint32_t first_inside = o->n, end_inside = o->n;
    for (uint32_t k = i; k < o->n && o->c[k].lo < hi; k++) {
        const crust_chunk *c = &o->c[k];
        uint64_t a = c->lo > lo ? c->lo : lo, b = c->lo + c->len < hi ? c->lo + c->len : hi;
        fn(ctx, a, c->p + (a - c->lo), (size_t)(b - a));
        if (c->lo >= lo && c->lo + c->len <= hi) {
            if (first_inside == o->n)
                first_inside = k;
            end_inside = k + 1;
        }
    }
    /* Chunks wholly inside form one run: only the first and last of the
     * visited chunks can stick out of [lo, hi). */
    if (first_inside < end_inside)
        erase(o, first_inside, end_inside);
}

size_t crust_ooo_memory(const crust_ooo *o)
{
    return (size_t)o->cap * sizeof(crust_chunk) + (size_t)o->held +
           (size_t)o->n * CRUST_OOO_MALLOC_OVERHEAD;
}
