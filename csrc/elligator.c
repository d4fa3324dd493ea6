/*
 * elligator.c - Elligator 2 for Curve25519 (see elligator.h).
 *
 * Curve25519: v^2 = u^3 + A u^2 + u, A = 486662, over GF(p), p = 2^255-19.
 * Non-square Z = 2 (RFC 9380's choice for curve25519; Monocypher's too).
 */
#include "elligator.h"

#include <string.h>

#include "fe25519.h"

#define CURVE_A 486662

static const crust_fe fe_A = {{CURVE_A, 0, 0, 0, 0}};

static void wipe(void *p, size_t n)
{
    volatile uint8_t *b = p;
    while (n--)
        *b++ = 0;
}

/* Zero the 32 bytes unless keep is 1, without branching on keep: whether a
 * key has a representative is revealed by the return code only, so that
 * tests/engine/test_constant_time.py can follow every secret under
 * Valgrind and find no branch on one. */
static void keep_or_zero(uint8_t b[CRUST_ELLIGATOR_BYTES], unsigned keep)
{
    uint8_t mask = (uint8_t)(0 - (keep & 1));
    for (int i = 0; i < CRUST_ELLIGATOR_BYTES; i++)
        b[i] &= mask;
}

/* code when ok is 0, CRUST_ELLIGATOR_OK (0) when it is 1, as arithmetic. */
static int code_unless(unsigned ok, int code)
{
    return (int)(0u - (1u - (ok & 1))) & code;
}

/*
 * The forward map, one exponentiation. With t1 = 2r^2 and xd = 1 + t1
 * (never 0: -1/2 is not a square), the candidate x1 = -A/xd, and
 * g(x1) = gx1/xd^3 with gx1 = x1n(x1n^2 + A x1n xd + xd^2), x1n = -A.
 * Exactly one of g(x1) and g(x2), x2 = -x1 - A = x1n t1 / xd, is a square;
 * u is x1 when g(x1) is. g(x1) is a square exactly when gx1 * xd is, and
 * one inverse square root isr of gx1 * xd gives 1/xd too:
 *   square:     gx1 xd isr^2 = 1        ->  1/xd = gx1 isr^2
 *   non-square: gx1 xd isr^2 = sqrt(-1) ->  1/xd = -sqrt(-1) gx1 isr^2
 * (r = 0 gives u = 0, the point of order 2, as the paper and the RFC do.)
 */
void crust_elligator_map(uint8_t u[CRUST_ELLIGATOR_BYTES],
                         const uint8_t representative[CRUST_ELLIGATOR_BYTES])
{
    uint8_t rb[CRUST_ELLIGATOR_BYTES];
    memcpy(rb, representative, sizeof rb);
    rb[31] &= 0x3f; /* the two padding bits */
    crust_fe r, t1, xd, x1n, gx1, t, isr, inv_xd, fixed, x2n, xn, out;
    crust_fe_frombytes(&r, rb);
    crust_fe_sq(&t1, &r);
    crust_fe_add(&t1, &t1, &t1); /* 2 r^2 */
    crust_fe_1(&xd);
    crust_fe_add(&xd, &xd, &t1); /* 1 + 2 r^2 */
    crust_fe_neg(&x1n, &fe_A);
    /* gx1 = x1n (x1n^2 + A x1n xd + xd^2) */
    crust_fe_mul(&t, &fe_A, &x1n);
    crust_fe_mul(&t, &t, &xd);
    crust_fe_sq(&gx1, &x1n);
    crust_fe_add(&gx1, &gx1, &t);
    crust_fe_sq(&t, &xd);
    crust_fe_add(&gx1, &gx1, &t);
    crust_fe_mul(&gx1, &gx1, &x1n);

    crust_fe_mul(&t, &gx1, &xd);
    int square = crust_fe_invsqrt(&isr, &t);
    crust_fe_sq(&t, &isr);
    crust_fe_mul(&inv_xd, &gx1, &t);
    crust_fe_mul(&fixed, &inv_xd, &crust_fe_sqrtm1);
    crust_fe_neg(&fixed, &fixed);
    crust_fe_cmov(&inv_xd, &fixed, (unsigned)(1 - square));

    crust_fe_mul(&x2n, &x1n, &t1);
    crust_fe_copy(&xn, &x2n);
    crust_fe_cmov(&xn, &x1n, (unsigned)square);
    crust_fe_mul(&out, &xn, &inv_xd);
    crust_fe_tobytes(u, &out);
}

/*
 * The inverse map, one exponentiation: isr = 1/sqrt(-2u(u+A)) when that is
 * a square, and then u * isr = sqrt(-u/(2(u+A))) and
 * (u+A) * isr = sqrt(-(u+A)/(2u)), the two representatives.
 */
int crust_elligator_rev(uint8_t representative[CRUST_ELLIGATOR_BYTES],
                        const uint8_t u[CRUST_ELLIGATOR_BYTES], uint8_t tweak)
{
    crust_fe fu, t, x, isr, r;
    crust_fe_frombytes(&fu, u);
    crust_fe_add(&t, &fu, &fe_A);
    crust_fe_mul(&x, &fu, &t);
    crust_fe_add(&x, &x, &x);
    crust_fe_neg(&x, &x); /* -2u(u+A) */
    int square = crust_fe_invsqrt(&isr, &x);
    /* u = -A makes x zero, hence "square"; it is not a point of the curve
     * (g(-A) = -A is not a square) and the paper excludes it. */
    int ok = square & (1 - crust_fe_iszero(&t));
    crust_fe_cmov(&fu, &t, tweak & 1u);
    crust_fe_mul(&r, &fu, &isr);
    crust_fe_abs(&r, &r);
    crust_fe_tobytes(representative, &r);
    representative[31] |= (uint8_t)(tweak & 0xc0);
    /* Whether there is one is revealed (such a key is discarded), but only
     * through the return value. */
    keep_or_zero(representative, (unsigned)ok);
    return code_unless((unsigned)ok, CRUST_ELLIGATOR_ENOREP);
}

/*
 * The low-order points T_k = [k]T_1, k = 1..7, of Curve25519 as (u, v),
 * little-endian; T_1 has order 8 (the Edwards point of order 8 with
 * x^2 = (sqrt(d+1)+1)/d carried to Montgomery form), T_4 = (0, 0) has
 * order 2, T_2 and T_6 order 4. The u-coordinates are the well-known
 * low-order X25519 inputs (e0eb7a7c..., 5f9c95bc..., 1, 0).
 * tests/c/test_elligator.c derives the u's from T_1 by the affine law
 * ([8]T_1 = O), and checks through the dirty keys that each entry is
 * right: P + T_k is on the curve and [ell](P + T_k) = T_{5k}.
 */
static const uint8_t low_order[7][2][32] = {
    {{0xe0, 0xeb, 0x7a, 0x7c, 0x3b, 0x41, 0xb8, 0xae, 0x16, 0x56, 0xe3, 0xfa, 0xf1, 0x9f, 0xc4, 0x6a,
      0xda, 0x09, 0x8d, 0xeb, 0x9c, 0x32, 0xb1, 0xfd, 0x86, 0x62, 0x05, 0x16, 0x5f, 0x49, 0xb8, 0x00},
     {0xd3, 0x84, 0xaf, 0x6d, 0x7c, 0xeb, 0x78, 0x97, 0xb2, 0xe4, 0x7f, 0x12, 0xd6, 0x03, 0xc4, 0x6c,
      0xa8, 0x4b, 0xd7, 0x19, 0xeb, 0xd3, 0xb7, 0xd6, 0x5a, 0x7c, 0x61, 0xa9, 0xd6, 0x3e, 0xce, 0x46}},
    {{0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
      0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00},
     {0x15, 0x44, 0x88, 0x9c, 0xef, 0x48, 0xa2, 0xe9, 0x63, 0x93, 0x4a, 0x28, 0xc7, 0x11, 0x5a, 0x63,
      0xef, 0xa6, 0xf4, 0xd7, 0x7a, 0xa7, 0x1f, 0xc2, 0xaf, 0xc2, 0xa9, 0xf9, 0x97, 0xf4, 0xe4, 0x6b}},
    {{0x5f, 0x9c, 0x95, 0xbc, 0xa3, 0x50, 0x8c, 0x24, 0xb1, 0xd0, 0xb1, 0x55, 0x9c, 0x83, 0xef, 0x5b,
      0x04, 0x44, 0x5c, 0xc4, 0x58, 0x1c, 0x8e, 0x86, 0xd8, 0x22, 0x4e, 0xdd, 0xd0, 0x9f, 0x11, 0x57},
     {0x36, 0x9a, 0x7f, 0xfb, 0xbd, 0xc7, 0xef, 0xf0, 0x22, 0x97, 0x55, 0x71, 0xb9, 0xbc, 0x5b, 0xdf,
      0xea, 0xaf, 0x04, 0xba, 0xff, 0x35, 0x39, 0xce, 0x9b, 0x71, 0xba, 0xc2, 0x76, 0x6c, 0x3a, 0x17}},
    {{0}, {0}},
    {{0x5f, 0x9c, 0x95, 0xbc, 0xa3, 0x50, 0x8c, 0x24, 0xb1, 0xd0, 0xb1, 0x55, 0x9c, 0x83, 0xef, 0x5b,
      0x04, 0x44, 0x5c, 0xc4, 0x58, 0x1c, 0x8e, 0x86, 0xd8, 0x22, 0x4e, 0xdd, 0xd0, 0x9f, 0x11, 0x57},
     {0xb7, 0x65, 0x80, 0x04, 0x42, 0x38, 0x10, 0x0f, 0xdd, 0x68, 0xaa, 0x8e, 0x46, 0x43, 0xa4, 0x20,
      0x15, 0x50, 0xfb, 0x45, 0x00, 0xca, 0xc6, 0x31, 0x64, 0x8e, 0x45, 0x3d, 0x89, 0x93, 0xc5, 0x68}},
    {{0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
      0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00},
     {0xd8, 0xbb, 0x77, 0x63, 0x10, 0xb7, 0x5d, 0x16, 0x9c, 0x6c, 0xb5, 0xd7, 0x38, 0xee, 0xa5, 0x9c,
      0x10, 0x59, 0x0b, 0x28, 0x85, 0x58, 0xe0, 0x3d, 0x50, 0x3d, 0x56, 0x06, 0x68, 0x0b, 0x1b, 0x14}},
    {{0xe0, 0xeb, 0x7a, 0x7c, 0x3b, 0x41, 0xb8, 0xae, 0x16, 0x56, 0xe3, 0xfa, 0xf1, 0x9f, 0xc4, 0x6a,
      0xda, 0x09, 0x8d, 0xeb, 0x9c, 0x32, 0xb1, 0xfd, 0x86, 0x62, 0x05, 0x16, 0x5f, 0x49, 0xb8, 0x00},
     {0x1a, 0x7b, 0x50, 0x92, 0x83, 0x14, 0x87, 0x68, 0x4d, 0x1b, 0x80, 0xed, 0x29, 0xfc, 0x3b, 0x93,
      0x57, 0xb4, 0x28, 0xe6, 0x14, 0x2c, 0x48, 0x29, 0xa5, 0x83, 0x9e, 0x56, 0x29, 0xc1, 0x31, 0x39}},
};

/* Constant-time table read: every entry is loaded, the wanted one kept. */
static void select_low_order(crust_fe *u, crust_fe *v, unsigned k)
{
    crust_fe_frombytes(u, low_order[0][0]);
    crust_fe_frombytes(v, low_order[0][1]);
    for (unsigned i = 1; i < 7; i++) {
        crust_fe eu, ev;
        crust_fe_frombytes(&eu, low_order[i][0]);
        crust_fe_frombytes(&ev, low_order[i][1]);
        /* (i + 1 == k) as 0/1 without a branch */
        unsigned diff = (i + 1) ^ k;
        unsigned eq = ((diff - 1) >> 8) & 1;
        crust_fe_cmov(u, &eu, eq);
        crust_fe_cmov(v, &ev, eq);
    }
}

/*
 * P + T_k in affine Montgomery coordinates, u only. The clean key gives u0
 * alone; v0 = sqrt(u0^3 + A u0^2 + u0) picks one of +-P, and either will
 * do: u(-P + T) = u(P - T), and -T_k runs over the same 8 points as T_k,
 * so the sum is still P plus a uniformly chosen low-order point, and X25519
 * ignores the sign of v. The chord's slope (v_T - v0)/(u_T - u0) needs
 * u_T != u0, which holds: P has prime order, T_k low order, so P != +-T_k.
 * k = 0 (the identity, no affine form) adds T_1 and then keeps u0.
 */
int crust_elligator_public_key(uint8_t public_key[CRUST_ELLIGATOR_BYTES],
                               const uint8_t private_key[CRUST_ELLIGATOR_BYTES],
                               crust_elligator_scalarmult_base_fn scalarmult_base)
{
    if (scalarmult_base == NULL)
        return CRUST_ELLIGATOR_EINVAL;
    uint8_t clean[CRUST_ELLIGATOR_BYTES];
    if (scalarmult_base(clean, private_key) != 0) { /* libsodium's X25519 never fails */
        memset(public_key, 0, CRUST_ELLIGATOR_BYTES);
        return CRUST_ELLIGATOR_ESODIUM;
    }
    crust_fe u0, v0, g, t, isr, ut, vt, lam, u3;
    crust_fe_frombytes(&u0, clean);
    /* The identity (u = 0 from a scalar that is a multiple of the group
     * order) has no affine form; it does not happen for a clamped scalar
     * but a broken scalarmult_base must not pass unnoticed. */
    int identity = crust_fe_iszero(&u0);
    crust_fe_add(&g, &u0, &fe_A);
    crust_fe_mul(&g, &g, &u0);
    crust_fe_1(&t);
    crust_fe_add(&g, &g, &t);
    crust_fe_mul(&g, &g, &u0); /* u0^3 + A u0^2 + u0 */
    int on_curve = crust_fe_invsqrt(&isr, &g);
    crust_fe_mul(&v0, &g, &isr); /* g / sqrt(g) */

    unsigned k = private_key[0] & 7u;
    select_low_order(&ut, &vt, k);
    crust_fe_sub(&t, &ut, &u0);
    crust_fe_invert(&t, &t);
    crust_fe_sub(&lam, &vt, &v0);
    crust_fe_mul(&lam, &lam, &t);
    crust_fe_sq(&u3, &lam);
    crust_fe_sub(&u3, &u3, &fe_A);
    crust_fe_sub(&u3, &u3, &u0);
    crust_fe_sub(&u3, &u3, &ut);
    unsigned is_identity = ((k - 1) >> 8) & 1; /* k == 0 */
    crust_fe_cmov(&u3, &u0, is_identity);
    crust_fe_tobytes(public_key, &u3);
    wipe(clean, sizeof clean);
    wipe(&v0, sizeof v0);
    wipe(&lam, sizeof lam);
    /* Off the curve: scalarmult_base is not X25519. */
    unsigned ok = (unsigned)(on_curve & (1 - identity));
    keep_or_zero(public_key, ok);
    return code_unless(ok, CRUST_ELLIGATOR_ESODIUM);
}

int crust_elligator_key_pair(uint8_t representative[CRUST_ELLIGATOR_BYTES],
                             uint8_t public_key[CRUST_ELLIGATOR_BYTES],
                             const uint8_t private_key[CRUST_ELLIGATOR_BYTES], uint8_t tweak,
                             crust_elligator_scalarmult_base_fn scalarmult_base)
{
    /* Both steps run whatever the first gives (a zeroed public key has
     * the representative 0), and the outcome is combined without a branch
     * (see keep_or_zero). */
    if (scalarmult_base == NULL)
        return CRUST_ELLIGATOR_EINVAL;
    int pub_rc = crust_elligator_public_key(public_key, private_key, scalarmult_base);
    int rep_rc = crust_elligator_rev(representative, public_key, tweak);
    /* rc == 0 as 0/1: (x | -x) has its top bit set exactly when x != 0 */
    unsigned pub_ok = ((((unsigned)pub_rc | (0u - (unsigned)pub_rc)) >> 31) & 1u) ^ 1u;
    unsigned rep_ok = ((((unsigned)rep_rc | (0u - (unsigned)rep_rc)) >> 31) & 1u) ^ 1u;
    keep_or_zero(public_key, pub_ok & rep_ok);
    keep_or_zero(representative, pub_ok & rep_ok);
    /* pub_rc when it failed, else rep_rc */
    int pub_mask = (int)(0u - (1u - pub_ok));
    return (pub_rc & pub_mask) | (rep_rc & ~pub_mask);
}
