/*
 * test_rng.h - a fixed-seed xorshift64* byte stream for the C tests: the
 * same inputs on every run and every machine, so a failure replays.
 * Not for keys outside tests.
 */
#ifndef CRUST_TEST_RNG_H
#define CRUST_TEST_RNG_H

#include <stddef.h>
#include <stdint.h>

static uint64_t rng = 0x2545F4914F6CDD1DULL;

static void fill(uint8_t *b, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        rng ^= rng >> 12;
        rng ^= rng << 25;
        rng ^= rng >> 27;
        b[i] = (uint8_t)((rng * 0x2545F4914F6CDD1DULL) >> 56);
    }
}

#endif
