/*
 * fe25519.c - GF(2^255 - 19) in radix 2^51 (see fe25519.h).
 *
 * The reduction rests on 2^255 = 19 (mod p): a carry out of the top limb
 * re-enters the bottom one multiplied by 19, and the product terms a_i*b_j
 * with i + j >= 5 are folded the same way.
 */
#include "fe25519.h"

#include <string.h>

#define MASK51 ((uint64_t)0x7ffffffffffff)

typedef unsigned __int128 u128;

/* 2^((p-1)/4): b0a00e4a271beec478e42fad0618432fa7d7fb3d99004d2b0bdfc14f8024832b
 * (little-endian), checked by tests/c/test_elligator.c. */
const crust_fe crust_fe_sqrtm1 = {{0x61b274a0ea0b0ULL, 0xd5a5fc8f189dULL, 0x7ef5e9cbd0c60ULL,
                                   0x78595a6804c9eULL, 0x2b8324804fc1dULL}};

static uint64_t load64(const uint8_t *s)
{
    uint64_t x = 0;
    for (int i = 7; i >= 0; i--)
        x = (x << 8) | s[i];
    return x;
}

/* One carry pass: every limb below 2^51 except v[0], which may get up to
 * 19 * (v[4] >> 51) on top. */
static void carry(crust_fe *h)
{
    uint64_t c;
    c = h->v[0] >> 51; h->v[0] &= MASK51; h->v[1] += c;
    c = h->v[1] >> 51; h->v[1] &= MASK51; h->v[2] += c;
    c = h->v[2] >> 51; h->v[2] &= MASK51; h->v[3] += c;
    c = h->v[3] >> 51; h->v[3] &= MASK51; h->v[4] += c;
    c = h->v[4] >> 51; h->v[4] &= MASK51; h->v[0] += 19 * c;
}

void crust_fe_frombytes(crust_fe *h, const uint8_t s[32])
{
    uint64_t w0 = load64(s), w1 = load64(s + 8), w2 = load64(s + 16), w3 = load64(s + 24);
    h->v[0] = w0 & MASK51;
    h->v[1] = ((w0 >> 51) | (w1 << 13)) & MASK51;
    h->v[2] = ((w1 >> 38) | (w2 << 26)) & MASK51;
    h->v[3] = ((w2 >> 25) | (w3 << 39)) & MASK51;
    h->v[4] = (w3 >> 12) & MASK51; /* bit 255 dropped */
}

void crust_fe_tobytes(uint8_t s[32], const crust_fe *f)
{
    crust_fe t = *f;
    /* Two passes bring the value below 2^255 with every limb below 2^51:
     * after the first, v[1..4] < 2^51 and v[0] barely above; the second
     * carries at most 1 along the chain, and a carry out of v[4] (19 back
     * into v[0]) needs v[0] to have overflowed, leaving it small. */
    carry(&t);
    carry(&t);
    /* q = 1 exactly when t >= p, i.e. when t + 19 reaches 2^255. */
    uint64_t q = (t.v[0] + 19) >> 51;
    q = (t.v[1] + q) >> 51;
    q = (t.v[2] + q) >> 51;
    q = (t.v[3] + q) >> 51;
    q = (t.v[4] + q) >> 51;
    /* t - q*p = t + 19q - q*2^255: add 19q, carry, and drop bit 255. */
    t.v[0] += 19 * q;
    uint64_t c;
    c = t.v[0] >> 51; t.v[0] &= MASK51; t.v[1] += c;
    c = t.v[1] >> 51; t.v[1] &= MASK51; t.v[2] += c;
    c = t.v[2] >> 51; t.v[2] &= MASK51; t.v[3] += c;
    c = t.v[3] >> 51; t.v[3] &= MASK51; t.v[4] += c;
    t.v[4] &= MASK51;
    uint64_t w[4] = {
        t.v[0] | (t.v[1] << 51),
        (t.v[1] >> 13) | (t.v[2] << 38),
        (t.v[2] >> 26) | (t.v[3] << 25),
        (t.v[3] >> 39) | (t.v[4] << 12),
    };
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 8; j++)
            s[8 * i + j] = (uint8_t)(w[i] >> (8 * j));
}

void crust_fe_0(crust_fe *h)
{
    memset(h, 0, sizeof *h);
}

void crust_fe_1(crust_fe *h)
{
    memset(h, 0, sizeof *h);
    h->v[0] = 1;
}

void crust_fe_copy(crust_fe *h, const crust_fe *f)
{
    *h = *f;
}

void crust_fe_add(crust_fe *h, const crust_fe *f, const crust_fe *g)
{
    for (int i = 0; i < 5; i++)
        h->v[i] = f->v[i] + g->v[i];
    carry(h);
}

void crust_fe_sub(crust_fe *h, const crust_fe *f, const crust_fe *g)
{
    /* f + 2p - g: 2p's limbs (2^52 - 38, 2^52 - 2, ...) exceed any loosely
     * reduced g's, so no limb goes below zero. */
    h->v[0] = (f->v[0] + 0xfffffffffffdaULL) - g->v[0];
    h->v[1] = (f->v[1] + 0xffffffffffffeULL) - g->v[1];
    h->v[2] = (f->v[2] + 0xffffffffffffeULL) - g->v[2];
    h->v[3] = (f->v[3] + 0xffffffffffffeULL) - g->v[3];
    h->v[4] = (f->v[4] + 0xffffffffffffeULL) - g->v[4];
    carry(h);
}

void crust_fe_neg(crust_fe *h, const crust_fe *f)
{
    crust_fe zero;
    crust_fe_0(&zero);
    crust_fe_sub(h, &zero, f);
}

/* Fold a 5-limb 128-bit accumulator back to loosely reduced limbs. */
static void reduce128(crust_fe *h, u128 r0, u128 r1, u128 r2, u128 r3, u128 r4)
{
    r1 += (uint64_t)(r0 >> 51);
    r2 += (uint64_t)(r1 >> 51);
    r3 += (uint64_t)(r2 >> 51);
    r4 += (uint64_t)(r3 >> 51);
    uint64_t c = (uint64_t)(r4 >> 51);
    uint64_t h0 = ((uint64_t)r0 & MASK51) + 19 * c;
    h->v[1] = ((uint64_t)r1 & MASK51) + (h0 >> 51);
    h->v[0] = h0 & MASK51;
    h->v[2] = (uint64_t)r2 & MASK51;
    h->v[3] = (uint64_t)r3 & MASK51;
    h->v[4] = (uint64_t)r4 & MASK51;
}

void crust_fe_mul(crust_fe *h, const crust_fe *f, const crust_fe *g)
{
    const uint64_t *a = f->v, *b = g->v;
    uint64_t b1_19 = 19 * b[1], b2_19 = 19 * b[2], b3_19 = 19 * b[3], b4_19 = 19 * b[4];
    u128 r0 = (u128)a[0] * b[0] + (u128)a[1] * b4_19 + (u128)a[2] * b3_19 +
              (u128)a[3] * b2_19 + (u128)a[4] * b1_19;
    u128 r1 = (u128)a[0] * b[1] + (u128)a[1] * b[0] + (u128)a[2] * b4_19 +
              (u128)a[3] * b3_19 + (u128)a[4] * b2_19;
    u128 r2 = (u128)a[0] * b[2] + (u128)a[1] * b[1] + (u128)a[2] * b[0] +
              (u128)a[3] * b4_19 + (u128)a[4] * b3_19;
    u128 r3 = (u128)a[0] * b[3] + (u128)a[1] * b[2] + (u128)a[2] * b[1] +
              (u128)a[3] * b[0] + (u128)a[4] * b4_19;
    u128 r4 = (u128)a[0] * b[4] + (u128)a[1] * b[3] + (u128)a[2] * b[2] +
              (u128)a[3] * b[1] + (u128)a[4] * b[0];
    reduce128(h, r0, r1, r2, r3, r4);
}

void crust_fe_sq(crust_fe *h, const crust_fe *f)
{
    const uint64_t *a = f->v;
    uint64_t d0 = 2 * a[0], d1 = 2 * a[1], d2 = 2 * a[2];
    uint64_t a3_19 = 19 * a[3], a4_19 = 19 * a[4];
    u128 r0 = (u128)a[0] * a[0] + (u128)d1 * a4_19 + (u128)d2 * a3_19;
    u128 r1 = (u128)d0 * a[1] + (u128)d2 * a4_19 + (u128)a[3] * a3_19;
    u128 r2 = (u128)d0 * a[2] + (u128)a[1] * a[1] + (u128)(2 * a[3]) * a4_19;
    u128 r3 = (u128)d0 * a[3] + (u128)d1 * a[2] + (u128)a[4] * a4_19;
    u128 r4 = (u128)d0 * a[4] + (u128)d1 * a[3] + (u128)a[2] * a[2];
    reduce128(h, r0, r1, r2, r3, r4);
}

void crust_fe_mul_small(crust_fe *h, const crust_fe *f, uint32_t n)
{
    u128 r[5];
    for (int i = 0; i < 5; i++)
        r[i] = (u128)f->v[i] * n;
    reduce128(h, r[0], r[1], r[2], r[3], r[4]);
}

/* h = f^(2^n) */
static void sq_times(crust_fe *h, const crust_fe *f, int n)
{
    crust_fe_sq(h, f);
    for (int i = 1; i < n; i++)
        crust_fe_sq(h, h);
}

/* The common part of both exponentiations: z11 = f^11 and
 * z250 = f^(2^250 - 1), by the usual chain of 254 squarings and 11
 * multiplications. */
static void pow_2_250_1(crust_fe *z11, crust_fe *z250, const crust_fe *f)
{
    crust_fe z2, z9, t, z5, z10, z20, z50, z100;
    crust_fe_sq(&z2, f);             /* 2 */
    sq_times(&t, &z2, 2);            /* 8 */
    crust_fe_mul(&z9, &t, f);        /* 9 */
    crust_fe_mul(z11, &z9, &z2);     /* 11 */
    crust_fe_sq(&t, z11);            /* 22 */
    crust_fe_mul(&z5, &t, &z9);      /* 2^5 - 1 */
    sq_times(&t, &z5, 5);
    crust_fe_mul(&z10, &t, &z5);     /* 2^10 - 1 */
    sq_times(&t, &z10, 10);
    crust_fe_mul(&z20, &t, &z10);    /* 2^20 - 1 */
    sq_times(&t, &z20, 20);
    crust_fe_mul(&t, &t, &z20);      /* 2^40 - 1 */
    sq_times(&t, &t, 10);
    crust_fe_mul(&z50, &t, &z10);    /* 2^50 - 1 */
    sq_times(&t, &z50, 50);
    crust_fe_mul(&z100, &t, &z50);   /* 2^100 - 1 */
    sq_times(&t, &z100, 100);
    crust_fe_mul(&t, &t, &z100);     /* 2^200 - 1 */
    sq_times(&t, &t, 50);
    crust_fe_mul(z250, &t, &z50);    /* 2^250 - 1 */
}

void crust_fe_invert(crust_fe *h, const crust_fe *f)
{
    crust_fe z11, t;
    pow_2_250_1(&z11, &t, f);
    sq_times(&t, &t, 5);             /* 2^255 - 32 */
    crust_fe_mul(h, &t, &z11);       /* 2^255 - 21 = p - 2 */
}

/* h = f^((p-5)/8) = f^(2^252 - 3) */
static void pow22523(crust_fe *h, const crust_fe *f)
{
    crust_fe z11, t;
    pow_2_250_1(&z11, &t, f);
    sq_times(&t, &t, 2);             /* 2^252 - 4 */
    crust_fe_mul(h, &t, f);          /* 2^252 - 3 */
}

int crust_fe_invsqrt(crust_fe *isr, const crust_fe *f)
{
    /* isr = f^((p-5)/8); quartic = f * isr^2 = f^((p-1)/4), a fourth root
     * of unity: 1 or -1 when f is a square, +-sqrt(-1) when it is not.
     * Multiplying isr by sqrt(-1) turns -1 into 1 and -sqrt(-1) into
     * sqrt(-1) (f * (isr*sqrt(-1))^2 = -quartic). */
    crust_fe quartic, t, one, m1, msqrtm1, fixed;
    pow22523(isr, f);
    crust_fe_sq(&t, isr);
    crust_fe_mul(&quartic, &t, f);
    crust_fe_1(&one);
    crust_fe_neg(&m1, &one);
    crust_fe_neg(&msqrtm1, &crust_fe_sqrtm1);
    int p1 = crust_fe_equal(&quartic, &one);
    int n1 = crust_fe_equal(&quartic, &m1);
    int ni = crust_fe_equal(&quartic, &msqrtm1);
    crust_fe_mul(&fixed, isr, &crust_fe_sqrtm1);
    crust_fe_cmov(isr, &fixed, (unsigned)(n1 | ni));
    return p1 | n1 | crust_fe_iszero(f);
}

void crust_fe_cmov(crust_fe *f, const crust_fe *g, unsigned b)
{
    uint64_t mask = (uint64_t)0 - (uint64_t)(b & 1);
    for (int i = 0; i < 5; i++)
        f->v[i] ^= mask & (f->v[i] ^ g->v[i]);
}

int crust_fe_iszero(const crust_fe *f)
{
    uint8_t s[32];
    crust_fe_tobytes(s, f);
    unsigned acc = 0;
    for (int i = 0; i < 32; i++)
        acc |= s[i];
    /* acc in [0, 255]: acc - 1 borrows into bit 8 only when acc is 0. */
    return (int)(((acc - 1) >> 8) & 1);
}

int crust_fe_equal(const crust_fe *f, const crust_fe *g)
{
    crust_fe d;
    crust_fe_sub(&d, f, g);
    return crust_fe_iszero(&d);
}

int crust_fe_isnegative(const crust_fe *f)
{
    /* f > (p-1)/2 exactly when 2f wraps past p, which makes 2f mod p odd
     * (2f - p is odd; an unwrapped 2f is even). */
    crust_fe twice;
    uint8_t s[32];
    crust_fe_add(&twice, f, f);
    crust_fe_tobytes(s, &twice);
    return s[0] & 1;
}

void crust_fe_abs(crust_fe *h, const crust_fe *f)
{
    crust_fe neg;
    crust_fe_neg(&neg, f);
    int n = crust_fe_isnegative(f);
    crust_fe_copy(h, f);
    crust_fe_cmov(h, &neg, (unsigned)n);
}
