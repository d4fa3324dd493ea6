/*
 * fe25519.h - arithmetic in GF(2^255 - 19), the field of Curve25519, for
 * the Elligator 2 maps (elligator.h).
 *
 * One concept: field elements and the handful of operations the maps need
 * (add, subtract, multiply, square, invert, inverse square root, the
 * constant-time moves and tests). It is not an X25519: the scalar
 * multiplications come from libsodium.
 *
 * An element is five 51-bit limbs (radix 2^51) in 64-bit words; products
 * are summed in unsigned __int128. Limbs are kept "loosely reduced" (each
 * below 2^52) between operations, so every operation accepts the output of
 * any other; only crust_fe_tobytes produces the canonical value (< p).
 * So an element must come from these functions (crust_fe_frombytes for
 * constants too), not from limbs written by hand beyond 2^51.
 *
 * Constant time: no branch and no memory index depends on an element's
 * value. The exponentiations run a fixed addition chain; selections are
 * masks (crust_fe_cmov); the tests (crust_fe_iszero, crust_fe_isnegative)
 * return 0 or 1 computed without branches. A caller that branches on such
 * a result must only do so on values it may reveal.
 */
#ifndef CRUST_FE25519_H
#define CRUST_FE25519_H

#include <stdint.h>

typedef struct crust_fe {
    uint64_t v[5];
} crust_fe;

/* Little-endian 32 bytes -> element. Bit 255 is ignored (as X25519 does);
 * values in [p, 2^255) are accepted and act as their residue mod p. */
void crust_fe_frombytes(crust_fe *h, const uint8_t s[32]);
/* Element -> its canonical little-endian encoding (< p, bit 255 clear). */
void crust_fe_tobytes(uint8_t s[32], const crust_fe *h);

void crust_fe_0(crust_fe *h);
void crust_fe_1(crust_fe *h);
void crust_fe_copy(crust_fe *h, const crust_fe *f);

/* h = f + g, f - g, -f, f * g, f^2, f * n (n < 2^25). h may alias f or g. */
void crust_fe_add(crust_fe *h, const crust_fe *f, const crust_fe *g);
void crust_fe_sub(crust_fe *h, const crust_fe *f, const crust_fe *g);
void crust_fe_neg(crust_fe *h, const crust_fe *f);
void crust_fe_mul(crust_fe *h, const crust_fe *f, const crust_fe *g);
void crust_fe_sq(crust_fe *h, const crust_fe *f);
void crust_fe_mul_small(crust_fe *h, const crust_fe *f, uint32_t n);

/* h = 1/f (f^(p-2)); 1/0 is 0. */
void crust_fe_invert(crust_fe *h, const crust_fe *f);

/* Inverse square root. Returns 1 and isr = 1/sqrt(f) (either root) when f
 * is a non-zero square; 1 and isr = 0 when f is 0; 0 and
 * isr = sqrt(sqrt(-1)/f) when f is not a square. In every case
 * f * isr^2 is 1 (square), 0 (zero) or sqrt(-1) (non-square), which lets
 * one exponentiation serve as both a square test and a division. */
int crust_fe_invsqrt(crust_fe *isr, const crust_fe *f);

/* f = g when b is 1, unchanged when b is 0 (b must be 0 or 1). */
void crust_fe_cmov(crust_fe *f, const crust_fe *g, unsigned b);

/* 1 when f is 0 mod p, else 0. */
int crust_fe_iszero(const crust_fe *f);
/* 1 when f == g mod p, else 0. */
int crust_fe_equal(const crust_fe *f, const crust_fe *g);
/* 1 when the canonical value of f is above (p-1)/2 (the "negative" half,
 * Elligator's convention), else 0. */
int crust_fe_isnegative(const crust_fe *f);
/* h = f or -f, whichever is in [0, (p-1)/2]. */
void crust_fe_abs(crust_fe *h, const crust_fe *f);

/* sqrt(-1) = 2^((p-1)/4) mod p. */
extern const crust_fe crust_fe_sqrtm1;

#endif
