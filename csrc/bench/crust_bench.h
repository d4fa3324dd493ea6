/*
 * crust_bench.h - in-process benchmark drivers (csrc/bench/bench.c).
 * Not part of the engine or its public header: the engine reads no clock,
 * these do. Built into the Python extension only (crust._core.bench_pair,
 * bench_aead, bench_header_mask), never into the crust_core library the C tests link.
 */
#ifndef CRUST_BENCH_H
#define CRUST_BENCH_H

#include <stddef.h>
#include <stdint.h>

#include "crust.h"

/* Move `bytes` of messages of size msg_len from a to b over a perfect
 * in-memory link, driving both ends; returns packets carried a->b, or a
 * negative error. *elapsed_ns gets the wall time. */
int64_t crust_bench_pair(crust_conn *a, crust_conn *b, uint64_t bytes,
                         size_t msg_len, uint64_t *elapsed_ns);
/* Seal and open `count` packets of pkt_len bytes with the AEAD alone. */
int64_t crust_bench_aead(crust_aead_id aead, size_t pkt_len, uint64_t count,
                         uint64_t *elapsed_ns);
/* Mask and unmask (header_mask.h) `count` packets of pkt_len bytes, each
 * with another sample, as a sender and its receiver would. */
int64_t crust_bench_header_mask(size_t pkt_len, uint64_t count, uint64_t *elapsed_ns);

#endif
