/*
 * ooo.h - stream bytes received out of order, kept as the chunks they
 * arrived in (internal).
 *
 * A receive stream holds its contiguous prefix in a ring; what lies above
 * a hole lives here instead, so memory follows the bytes actually received
 * and never a span implied by an offset: a 1-byte frame at offset 32 MiB
 * costs one small chunk, not a 32 MiB ring. Bytes that continue a chunk
 * are appended to it (capacity doubling up to CRUST_OOO_CHUNK_MAX), so an
 * honest sender's run of packets after a loss makes a few large chunks,
 * not one per packet. Chunks are kept sorted by offset and never overlap;
 * the caller (recv_stream.c) only stores bytes it does not hold yet.
 */
#ifndef CRUST_OOO_H
#define CRUST_OOO_H

#include <stddef.h>
#include <stdint.h>

/* Appending stops growing a chunk here: realloc copies stay bounded and a
 * drain hands the ring pieces of at most this size. */
#define CRUST_OOO_CHUNK_MAX 65536u
/* What one chunk costs beyond its bytes: its array slot (counted through
 * the array's capacity) and the allocator's header, estimated. */
#define CRUST_OOO_MALLOC_OVERHEAD 16u

typedef struct crust_chunk {
    uint64_t lo;
    uint32_t len, cap;
    uint8_t *p;
} crust_chunk;

typedef struct crust_ooo {
    crust_chunk *c;
    uint32_t n, cap;
    uint64_t held; /* sum of the chunks' capacities */
} crust_ooo;

/* Receives the bytes of [off, off + n) from a chunk being drained or
 * moved. */
typedef void (*crust_ooo_fn)(void *ctx, uint64_t off, const uint8_t *d, size_t n);

void crust_ooo_init(crust_ooo *o);
void crust_ooo_free(crust_ooo *o);
/* Store [off, off + n), none of which is stored yet. CRUST_ENOMEM when
 * memory ran out (nothing stored). */
int crust_ooo_put(crust_ooo *o, uint64_t off, const uint8_t *d, size_t n);
/* Hand every chunk starting below x to fn, in order, and free it. */
void crust_ooo_drain(crust_ooo *o, uint64_t x, crust_ooo_fn fn, void *ctx);
/* Hand the parts of chunks inside [lo, hi) to fn; free the chunks that lie
 * wholly inside (their bytes now live elsewhere). */
void crust_ooo_move(crust_ooo *o, uint64_t lo, uint64_t hi, crust_ooo_fn fn, void *ctx);
size_t crust_ooo_memory(const crust_ooo *o);

#endif
