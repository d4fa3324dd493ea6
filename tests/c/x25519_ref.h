/*
 * x25519_ref.h - X25519 written on fe25519.h for the C tests, which do not
 * link libsodium: RFC 7748's Montgomery ladder, constant time (the swaps
 * are masked moves), checked on RFC 7748's vector in test_elligator.c.
 * Static functions: include it from one test program.
 */
#ifndef CRUST_TEST_X25519_REF_H
#define CRUST_TEST_X25519_REF_H

#include <string.h>

#include "fe25519.h"

/* Swap (x2, z2) with (x3, z3) when swap is 1, by masked moves. */
static void cswap(crust_fe *x2, crust_fe *z2, crust_fe *x3, crust_fe *z3, unsigned swap)
{
    crust_fe t;
    crust_fe_copy(&t, x2);
    crust_fe_cmov(x2, x3, swap);
    crust_fe_cmov(x3, &t, swap);
    crust_fe_copy(&t, z2);
    crust_fe_cmov(z2, z3, swap);
    crust_fe_cmov(z3, &t, swap);
}

/* u([k]P), k little-endian of nbits bits, unclamped (RFC 7748's ladder). */
static void ladder(uint8_t out[32], const uint8_t *k, int nbits, const uint8_t u[32])
{
    crust_fe x1, x2, z2, x3, z3, a, aa, b, bb, e, c, d, da, cb, t;
    crust_fe_frombytes(&x1, u);
    crust_fe_1(&x2);
    crust_fe_0(&z2);
    crust_fe_copy(&x3, &x1);
    crust_fe_1(&z3);
    unsigned swap = 0;
    for (int i = nbits - 1; i >= 0; i--) {
        unsigned bit = (k[i / 8] >> (i % 8)) & 1;
        swap ^= bit;
        cswap(&x2, &z2, &x3, &z3, swap);
        swap = bit;
        crust_fe_add(&a, &x2, &z2);
        crust_fe_sq(&aa, &a);
        crust_fe_sub(&b, &x2, &z2);
        crust_fe_sq(&bb, &b);
        crust_fe_sub(&e, &aa, &bb);
        crust_fe_add(&c, &x3, &z3);
        crust_fe_sub(&d, &x3, &z3);
        crust_fe_mul(&da, &d, &a);
        crust_fe_mul(&cb, &c, &b);
        crust_fe_add(&t, &da, &cb);
        crust_fe_sq(&x3, &t);
        crust_fe_sub(&t, &da, &cb);
        crust_fe_sq(&t, &t);
        crust_fe_mul(&z3, &x1, &t);
        crust_fe_mul(&x2, &aa, &bb);
        crust_fe_mul_small(&t, &e, 121665);
        crust_fe_add(&t, &aa, &t);
        crust_fe_mul(&z2, &e, &t);
    }
    cswap(&x2, &z2, &x3, &z3, swap);
    crust_fe_invert(&z2, &z2);
    crust_fe_mul(&x2, &x2, &z2);
    crust_fe_tobytes(out, &x2);
}

static void x25519(uint8_t out[32], const uint8_t priv[32], const uint8_t u[32])
{
    uint8_t k[32];
    memcpy(k, priv, 32);
    k[0] &= 248;
    k[31] &= 127;
    k[31] |= 64;
    ladder(out, k, 255, u);
}

static const uint8_t BASE[32] = {9};

#endif
