/*
 * test_elligator.c - GF(2^255-19) arithmetic (fe25519.h) and the
 * Elligator 2 maps and key generation (elligator.h).
 *
 * Known answers (tests/c/elligator_vectors.h):
 * - RFC 9380 appendix J.7.1/J.7.2 (curve25519_XMD:SHA-512_ELL2_RO_ and
 *   _NU_): each field element u[i] with the map's output Q_i.x. The RFC's
 *   u may exceed 2^254; the map only uses r^2, so |u| (at most (p-1)/2,
 *   254 bits) is the representative.
 * - Monocypher's Elligator vectors (github.com/LoupVaillant/Monocypher,
 *   commit ab2b16d): tests/gen/vectors/elligator_dir and elligator_inv
 *   (hand-written: RFC-draft-derived and Kleshni/Elligator-2 vectors), and
 *   the output of tests/gen/elligator-direct.py and elligator-inverse.py
 *   (deterministic, seed 12345), whose inverse vectors come from dirty
 *   keys of all 8 low-order components, both signs and all padding values.
 * - Field products, sums, differences and inverses computed with Python
 *   integers.
 * Key generation is checked against an X25519 ladder written here (checked
 * itself on RFC 7748's vector), as the C tests do not link libsodium;
 * tests/unit/test_elligator.py repeats it with libsodium's.
 */
#include <string.h>

#include "check.h"
#include "elligator.h"
#include "fe25519.h"

#include "elligator_vectors.h"
#include "x25519_ref.h"

static const uint8_t P_LE[32] = {0xed, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                                 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                                 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f};

static void hex(uint8_t *out, const char *h, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned v;
        sscanf(h + 2 * i, "%2x", &v);
        out[i] = (uint8_t)v;
    }
}

static void hex_be(uint8_t out[32], const char *h)
{
    uint8_t be[32];
    hex(be, h, 32);
    for (int i = 0; i < 32; i++)
        out[i] = be[31 - i];
}

#include "test_rng.h"

static void fe_hex(crust_fe *f, const char *h)
{
    uint8_t b[32];
    hex(b, h, 32);
    crust_fe_frombytes(f, b);
}

static int fe_is(const crust_fe *f, const char *h)
{
    uint8_t a[32], b[32];
    crust_fe_tobytes(a, f);
    hex(b, h, 32);
    return memcmp(a, b, 32) == 0;
}

static void fe_small(crust_fe *f, uint64_t n)
{
    crust_fe_0(f);
    f->v[0] = n;
}

static void fe_random(crust_fe *f)
{
    uint8_t b[32];
    fill(b, 32);
    crust_fe_frombytes(f, b); /* up to 2^255 - 1: non-canonical ones too */
}

/* g(u) = u^3 + A u^2 + u */
static void curve_rhs(crust_fe *g, const crust_fe *u)
{
    crust_fe a, one;
    fe_small(&a, 486662);
    crust_fe_1(&one);
    crust_fe_add(g, u, &a);
    crust_fe_mul(g, g, u);
    crust_fe_add(g, g, &one);
    crust_fe_mul(g, g, u);
}

static int on_curve(const uint8_t u[32])
{
    crust_fe fu, g, isr;
    crust_fe_frombytes(&fu, u);
    curve_rhs(&g, &fu);
    return crust_fe_invsqrt(&isr, &g);
}

/* ---- the field ---- */

static void test_field_known_answers(void)
{
    for (size_t i = 0; i < sizeof field_kat / sizeof field_kat[0]; i++) {
        crust_fe a, b, h;
        fe_hex(&a, field_kat[i].a);
        fe_hex(&b, field_kat[i].b);
        crust_fe_mul(&h, &a, &b);
        CHECK(fe_is(&h, field_kat[i].mul));
        crust_fe_add(&h, &a, &b);
        CHECK(fe_is(&h, field_kat[i].add));
        crust_fe_sub(&h, &a, &b);
        CHECK(fe_is(&h, field_kat[i].sub));
        crust_fe_invert(&h, &a);
        CHECK(fe_is(&h, field_kat[i].inv)); /* 1/0 = 0 is among them */
        crust_fe_sq(&h, &a);
        crust_fe a2;
        crust_fe_mul(&a2, &a, &a);
        CHECK(crust_fe_equal(&h, &a2));
    }
}

static void test_field_encoding_edges(void)
{
    uint8_t in[32], out[32], want[32];
    crust_fe f;
    /* p -> 0, p + 1 -> 1, p - 1 stays, 2^255 - 1 -> 18, bit 255 ignored. */
    memcpy(in, P_LE, 32);
    crust_fe_frombytes(&f, in);
    crust_fe_tobytes(out, &f);
    memset(want, 0, 32);
    CHECK(memcmp(out, want, 32) == 0);
    CHECK(crust_fe_iszero(&f));
    in[0] = 0xee;
    crust_fe_frombytes(&f, in);
    crust_fe_tobytes(out, &f);
    want[0] = 1;
    CHECK(memcmp(out, want, 32) == 0);
    in[0] = 0xec;
    crust_fe_frombytes(&f, in);
    crust_fe_tobytes(out, &f);
    CHECK(memcmp(out, in, 32) == 0);
    memset(in, 0xff, 32);
    in[31] = 0x7f;
    crust_fe_frombytes(&f, in);
    crust_fe_tobytes(out, &f);
    memset(want, 0, 32);
    want[0] = 18;
    CHECK(memcmp(out, want, 32) == 0);
    in[31] = 0xff;
    crust_fe_frombytes(&f, in);
    crust_fe_tobytes(out, &f);
    CHECK(memcmp(out, want, 32) == 0);
    /* Canonical values round-trip; non-canonical ones act as their residue. */
    for (int i = 0; i < 1000; i++) {
        fill(in, 32);
        in[31] &= 0x7f;
        crust_fe_frombytes(&f, in);
        crust_fe_tobytes(out, &f);
        int canonical = 0;
        for (int j = 31; j >= 0; j--)
            if (in[j] != P_LE[j]) {
                canonical = in[j] < P_LE[j];
                break;
            }
        if (canonical)
            CHECK(memcmp(out, in, 32) == 0);
        else {
            crust_fe g;
            crust_fe_frombytes(&g, out);
            CHECK(crust_fe_equal(&f, &g));
        }
    }
    /* The values in [p, 2^255) are all tested, 19 of them. */
    for (int k = 0; k < 19; k++) {
        crust_fe g, s;
        memcpy(in, P_LE, 32);
        in[0] = (uint8_t)(0xed + k);
        crust_fe_frombytes(&f, in);
        crust_fe_tobytes(out, &f);
        memset(want, 0, 32);
        want[0] = (uint8_t)k;
        CHECK(memcmp(out, want, 32) == 0);
        fe_small(&g, (uint64_t)k);
        crust_fe_mul(&s, &f, &f);
        crust_fe_mul(&g, &g, &g);
        CHECK(crust_fe_equal(&s, &g));
    }
}

static void test_field_properties(void)
{
    crust_fe zero, one, m1, h, t;
    crust_fe_0(&zero);
    crust_fe_1(&one);
    crust_fe_neg(&m1, &one);
    /* (p-1)^2 = 1, sqrt(-1)^2 = -1, -0 = 0 */
    crust_fe_sq(&h, &m1);
    CHECK(crust_fe_equal(&h, &one));
    crust_fe_sq(&h, &crust_fe_sqrtm1);
    CHECK(crust_fe_equal(&h, &m1));
    crust_fe_neg(&h, &zero);
    CHECK(crust_fe_iszero(&h));
    CHECK(!crust_fe_iszero(&one));
    crust_fe_invert(&h, &m1);
    CHECK(crust_fe_equal(&h, &m1));
    /* invsqrt of the edges: 0 (zero), 1 (square), -1 (square: p = 1 mod 4),
     * 2 (not a square: p = 5 mod 8). */
    crust_fe isr;
    CHECK(crust_fe_invsqrt(&isr, &zero) == 1 && crust_fe_iszero(&isr));
    CHECK(crust_fe_invsqrt(&isr, &one) == 1);
    crust_fe_sq(&h, &isr);
    CHECK(crust_fe_equal(&h, &one));
    CHECK(crust_fe_invsqrt(&isr, &m1) == 1);
    crust_fe_sq(&h, &isr);
    crust_fe_mul(&h, &h, &m1);
    CHECK(crust_fe_equal(&h, &one));
    fe_small(&t, 2);
    CHECK(crust_fe_invsqrt(&isr, &t) == 0);
    /* the sign convention: (p-1)/2 is the largest "positive" element */
    crust_fe half;
    fe_small(&t, 2);
    crust_fe_invert(&half, &t); /* (p+1)/2 */
    CHECK(crust_fe_isnegative(&half));
    crust_fe_sub(&t, &half, &one); /* (p-1)/2 */
    CHECK(!crust_fe_isnegative(&t));
    CHECK(!crust_fe_isnegative(&zero) && !crust_fe_isnegative(&one) &&
          crust_fe_isnegative(&m1));

    for (int i = 0; i < 2000; i++) {
        crust_fe a, b, c, x, y;
        fe_random(&a);
        fe_random(&b);
        fe_random(&c);
        /* (a + b) - b = a; a - a = 0; a + (-a) = 0 */
        crust_fe_add(&x, &a, &b);
        crust_fe_sub(&x, &x, &b);
        CHECK(crust_fe_equal(&x, &a));
        crust_fe_neg(&x, &a);
        crust_fe_add(&x, &x, &a);
        CHECK(crust_fe_iszero(&x));
        /* a (b + c) = ab + ac, ab = ba */
        crust_fe_add(&x, &b, &c);
        crust_fe_mul(&x, &a, &x);
        crust_fe_mul(&y, &a, &b);
        crust_fe_mul(&t, &a, &c);
        crust_fe_add(&y, &y, &t);
        CHECK(crust_fe_equal(&x, &y));
        crust_fe_mul(&x, &a, &b);
        crust_fe_mul(&y, &b, &a);
        CHECK(crust_fe_equal(&x, &y));
        /* a * (1/a) = 1 */
        crust_fe_invert(&x, &a);
        crust_fe_mul(&x, &x, &a);
        CHECK(crust_fe_equal(&x, &one) == !crust_fe_iszero(&a));
        /* squares have square roots; 2 * square does not */
        crust_fe_sq(&x, &a);
        CHECK(crust_fe_invsqrt(&isr, &x) == 1);
        crust_fe_sq(&y, &isr);
        crust_fe_mul(&y, &y, &x);
        CHECK(crust_fe_equal(&y, &one) == !crust_fe_iszero(&a));
        crust_fe_mul(&y, &x, &isr); /* sqrt(a^2) = +-a */
        crust_fe_abs(&y, &y);
        crust_fe_abs(&t, &a);
        CHECK(crust_fe_equal(&y, &t));
        crust_fe_add(&x, &x, &x);
        if (!crust_fe_iszero(&a)) {
            CHECK(crust_fe_invsqrt(&isr, &x) == 0);
            crust_fe_sq(&y, &isr);
            crust_fe_mul(&y, &y, &x);
            CHECK(crust_fe_equal(&y, &crust_fe_sqrtm1));
        }
        /* abs: a or -a, never negative */
        crust_fe_abs(&x, &a);
        crust_fe_neg(&y, &a);
        CHECK(!crust_fe_isnegative(&x));
        CHECK(crust_fe_equal(&x, &a) || crust_fe_equal(&x, &y));
        CHECK(crust_fe_isnegative(&a) == (crust_fe_iszero(&a) ? 0 : !crust_fe_isnegative(&y)));
        /* cmov */
        crust_fe_copy(&x, &a);
        crust_fe_cmov(&x, &b, 0);
        CHECK(crust_fe_equal(&x, &a));
        crust_fe_cmov(&x, &b, 1);
        CHECK(crust_fe_equal(&x, &b));
        /* mul_small = repeated addition */
        crust_fe_0(&x);
        for (int k = 0; k < 37; k++)
            crust_fe_add(&x, &x, &a);
        crust_fe_mul_small(&y, &a, 37);
        CHECK(crust_fe_equal(&x, &y));
    }
    /* Long chains keep limbs in range: 2^16 doublings of a = a * 2^65536. */
    crust_fe a, x, y;
    fe_random(&a);
    crust_fe_copy(&x, &a);
    for (int i = 0; i < 65536; i++)
        crust_fe_add(&x, &x, &x);
    fe_small(&y, 2);
    for (int i = 0; i < 16; i++)
        crust_fe_sq(&y, &y); /* 2^65536 */
    crust_fe_mul(&y, &y, &a);
    CHECK(crust_fe_equal(&x, &y));
}

/* ---- the maps ---- */

static void test_map_vectors(void)
{
    uint8_t r[32], u[32], want[32];
    for (size_t i = 0; i < sizeof monocypher_map / sizeof monocypher_map[0]; i++) {
        hex(r, monocypher_map[i].rep, 32);
        hex(want, monocypher_map[i].u, 32);
        crust_elligator_map(u, r);
        CHECK(memcmp(u, want, 32) == 0);
        if (memcmp(u, want, 32) != 0)
            fprintf(stderr, "monocypher map vector %zu\n", i);
    }
    for (size_t i = 0; i < sizeof rfc9380_map / sizeof rfc9380_map[0]; i++) {
        crust_fe fr;
        hex_be(r, rfc9380_map[i].r_be);
        crust_fe_frombytes(&fr, r);
        crust_fe_abs(&fr, &fr);
        crust_fe_tobytes(r, &fr);
        CHECK((r[31] & 0xc0) == 0);
        hex_be(want, rfc9380_map[i].u_be);
        crust_elligator_map(u, r);
        CHECK(memcmp(u, want, 32) == 0);
        if (memcmp(u, want, 32) != 0)
            fprintf(stderr, "rfc9380 map vector %zu\n", i);
    }
}

static void test_rev_vectors(void)
{
    size_t failures = 0;
    for (size_t i = 0; i < sizeof monocypher_rev / sizeof monocypher_rev[0]; i++) {
        uint8_t u[32], r[32], want[32], back[32];
        hex(u, monocypher_rev[i].u, 32);
        int rc = crust_elligator_rev(r, u, (uint8_t)monocypher_rev[i].tweak);
        if (monocypher_rev[i].ok) {
            hex(want, monocypher_rev[i].rep, 32);
            CHECK(rc == CRUST_ELLIGATOR_OK);
            CHECK(memcmp(r, want, 32) == 0);
            crust_elligator_map(back, r);
            CHECK(memcmp(back, u, 32) == 0);
        } else {
            failures++;
            CHECK(rc == CRUST_ELLIGATOR_ENOREP);
        }
    }
    CHECK(failures >= 9); /* the hand-written one and one per low-order part */
}

static void test_map_accepts_everything(void)
{
    uint8_t r[32], u[32], u2[32];
    /* the extremes: all zeros (u = 0), all ones, (p-1)/2 and beyond */
    static const uint8_t edges[][32] = {
        {0},
        {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
         0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
         0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff},
        {0xf6, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
         0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
         0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x3f},
        {0x01},
    };
    for (size_t i = 0; i < sizeof edges / sizeof edges[0]; i++) {
        crust_elligator_map(u, edges[i]);
        CHECK(on_curve(u));
        CHECK((u[31] & 0x80) == 0);
    }
    crust_elligator_map(u, edges[0]);
    CHECK(memcmp(u, edges[0], 32) == 0); /* r = 0 -> (0, 0) */
    for (int i = 0; i < 3000; i++) {
        fill(r, 32);
        crust_elligator_map(u, r);
        /* canonical, on the curve, deaf to the padding, and r ~ -r */
        crust_fe fu, fr;
        crust_fe_frombytes(&fu, u);
        uint8_t canon[32];
        crust_fe_tobytes(canon, &fu);
        CHECK(memcmp(canon, u, 32) == 0);
        CHECK(on_curve(u));
        r[31] ^= 0xc0;
        crust_elligator_map(u2, r);
        CHECK(memcmp(u, u2, 32) == 0);
        r[31] &= 0x3f;
        crust_fe_frombytes(&fr, r);
        crust_fe_neg(&fr, &fr);
        crust_fe_tobytes(r, &fr); /* may be >= 2^254: then p - r is not 254 bits */
        if ((r[31] & 0xc0) == 0) {
            crust_elligator_map(u2, r);
            CHECK(memcmp(u, u2, 32) == 0);
        }
    }
}

static void test_round_trip_all_tweaks(void)
{
    /* Points from the map all have representatives: for every tweak the
     * representative maps back to u, carries the tweak's padding, and
     * the one of bit 0's branch containing r is |r|. */
    for (int i = 0; i < 150; i++) {
        uint8_t r[32], u[32], rep[32], back[32];
        fill(r, 32);
        r[31] &= 0x3f;
        crust_elligator_map(u, r);
        crust_fe fr;
        crust_fe_frombytes(&fr, r);
        crust_fe_abs(&fr, &fr);
        uint8_t absr[32];
        crust_fe_tobytes(absr, &fr);
        int found = 0;
        for (unsigned tweak = 0; tweak < 256; tweak++) {
            int rc = crust_elligator_rev(rep, u, (uint8_t)tweak);
            CHECK(rc == CRUST_ELLIGATOR_OK);
            CHECK((rep[31] & 0xc0) == (tweak & 0xc0));
            crust_elligator_map(back, rep);
            CHECK(memcmp(back, u, 32) == 0);
            rep[31] &= 0x3f;
            found |= memcmp(rep, absr, 32) == 0;
            /* the bits 1..5 of the tweak change nothing */
            uint8_t rep2[32];
            crust_elligator_rev(rep2, u, (uint8_t)(tweak & 0xc1));
            rep2[31] &= 0x3f;
            CHECK(memcmp(rep, rep2, 32) == 0);
        }
        CHECK(found);
    }
}

static void test_random_points(void)
{
    /* Random u: about half are on the curve; of those about half have
     * representatives, which round-trip. On the twist a representative
     * may exist but maps to -u - A: rev expects curve points. */
    int curve = 0, representable = 0, twist_rep = 0;
    for (int i = 0; i < 4000; i++) {
        uint8_t u[32], rep[32], back[32];
        fill(u, 32);
        u[31] &= 0x7f;
        crust_fe fu;
        crust_fe_frombytes(&fu, u);
        crust_fe_tobytes(u, &fu);
        int rc = crust_elligator_rev(rep, u, (uint8_t)i);
        if (on_curve(u)) {
            curve++;
            if (rc == CRUST_ELLIGATOR_OK) {
                representable++;
                crust_elligator_map(back, rep);
                CHECK(memcmp(back, u, 32) == 0);
            } else {
                CHECK(rc == CRUST_ELLIGATOR_ENOREP);
                uint8_t zero[32] = {0};
                CHECK(memcmp(rep, zero, 32) == 0);
            }
        } else if (rc == CRUST_ELLIGATOR_OK) {
            twist_rep++;
            crust_fe a, want, got;
            fe_small(&a, 486662);
            crust_fe_add(&want, &fu, &a);
            crust_fe_neg(&want, &want);
            crust_elligator_map(back, rep);
            crust_fe_frombytes(&got, back);
            CHECK(crust_fe_equal(&got, &want));
        }
    }
    /* binomial(4000, 1/2): sd 32; binomial(~2000, 1/2): sd 22 */
    CHECK(curve > 2000 - 200 && curve < 2000 + 200);
    CHECK(representable > curve / 2 - 150 && representable < curve / 2 + 150);
    CHECK(twist_rep > 0);
    /* -A: x = 0, which the square test alone would accept */
    uint8_t mA[32], rep[32];
    crust_fe fa;
    fe_small(&fa, 486662);
    crust_fe_neg(&fa, &fa);
    crust_fe_tobytes(mA, &fa);
    CHECK(crust_elligator_rev(rep, mA, 0) == CRUST_ELLIGATOR_ENOREP);
    CHECK(crust_elligator_rev(rep, mA, 1) == CRUST_ELLIGATOR_ENOREP);
}

/* ---- key generation, on an X25519 written here ---- */


static int test_base_calls;

static int test_scalarmult_base(unsigned char *q, const unsigned char *n)
{
    test_base_calls++;
    x25519(q, n, BASE);
    return 0;
}

static int failing_base(unsigned char *q, const unsigned char *n)
{
    (void)n;
    memset(q, 0, 32);
    return -1;
}

static int identity_base(unsigned char *q, const unsigned char *n)
{
    (void)n;
    memset(q, 0, 32);
    return 0;
}

/* a u that is not on the curve (the twist's) */
static int twist_base(unsigned char *q, const unsigned char *n)
{
    (void)n;
    memset(q, 0, 32);
    q[0] = 2; /* g(2) = 8 + 4A + 2 = 1946658, not a square */
    return 0;
}

/* ell = 2^252 + 27742317777372353535851937790883648493, little-endian */
static const uint8_t ELL[32] = {0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7,
                                0xa2, 0xde, 0xf9, 0xde, 0x14, 0,    0,    0,    0,    0,    0,
                                0,    0,    0,    0,    0,    0,    0,    0,    0,    0x10};

static void test_ladder_vector(void)
{
    /* RFC 7748 section 6.1, Alice */
    uint8_t priv[32], want[32], got[32];
    hex(priv, "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a", 32);
    hex(want, "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a", 32);
    x25519(got, priv, BASE);
    CHECK(memcmp(got, want, 32) == 0);
    /* [ell]B = O (u = 0 as the ladder leaves it) */
    ladder(got, ELL, 253, BASE);
    uint8_t zero[32] = {0};
    CHECK(memcmp(got, zero, 32) == 0);
}

/* Montgomery affine addition (P != +-Q), u and v: checks the table. */
static void add_affine(crust_fe *u3, crust_fe *v3, const crust_fe *u1, const crust_fe *v1,
                       const crust_fe *u2, const crust_fe *v2)
{
    crust_fe lam, t, a;
    fe_small(&a, 486662);
    crust_fe_sub(&t, u2, u1);
    crust_fe_invert(&t, &t);
    crust_fe_sub(&lam, v2, v1);
    crust_fe_mul(&lam, &lam, &t);
    crust_fe_sq(&t, &lam);
    crust_fe_sub(&t, &t, &a);
    crust_fe_sub(&t, &t, u1);
    crust_fe_sub(&t, &t, u2);
    crust_fe nv;
    crust_fe_sub(&nv, u1, &t);
    crust_fe_mul(&nv, &nv, &lam);
    crust_fe_sub(&nv, &nv, v1);
    crust_fe_copy(u3, &t); /* outputs last: they may alias the inputs */
    crust_fe_copy(v3, &nv);
}

/* u of the low-order point T_k, k in 0..7, as the ladder reports it
 * (0 for the identity as for (0, 0)). */
static void low_order_u(uint8_t u[32], unsigned k)
{
    static const char *us[8] = {
        "0000000000000000000000000000000000000000000000000000000000000000",
        "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",
        "0100000000000000000000000000000000000000000000000000000000000000",
        "5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157",
        "0000000000000000000000000000000000000000000000000000000000000000",
        "5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157",
        "0100000000000000000000000000000000000000000000000000000000000000",
        "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",
    };
    hex(u, us[k & 7], 32);
}

static void test_low_order_points(void)
{
    /* The order-8 point T_1 (u from the table's first entry, v recomputed):
     * its multiples by the affine formulas reach (0, 0) at 4 and -T_1 at
     * 7, and each has the u the table (low_order_u) lists. */
    crust_fe u1, v1, g, isr, u, v;
    uint8_t b[32];
    low_order_u(b, 1);
    crust_fe_frombytes(&u1, b);
    curve_rhs(&g, &u1);
    CHECK(crust_fe_invsqrt(&isr, &g) == 1);
    crust_fe_mul(&v1, &g, &isr);
    crust_fe_copy(&u, &u1);
    crust_fe_copy(&v, &v1);
    for (unsigned k = 2; k <= 7; k++) {
        if (k == 2) { /* doubling: slope (3u^2 + 2Au + 1) / 2v */
            crust_fe lam, t, a;
            fe_small(&a, 486662);
            crust_fe_sq(&lam, &u1);
            crust_fe_mul_small(&lam, &lam, 3);
            crust_fe_mul(&t, &a, &u1);
            crust_fe_add(&t, &t, &t);
            crust_fe_add(&lam, &lam, &t);
            crust_fe_1(&t);
            crust_fe_add(&lam, &lam, &t);
            crust_fe_add(&t, &v1, &v1);
            crust_fe_invert(&t, &t);
            crust_fe_mul(&lam, &lam, &t);
            crust_fe_sq(&u, &lam);
            crust_fe_sub(&u, &u, &a);
            crust_fe_sub(&u, &u, &u1);
            crust_fe_sub(&u, &u, &u1);
            crust_fe_sub(&v, &u1, &u);
            crust_fe_mul(&v, &v, &lam);
            crust_fe_sub(&v, &v, &v1);
        } else {
            add_affine(&u, &v, &u, &v, &u1, &v1);
        }
        uint8_t want[32], got[32];
        low_order_u(want, k);
        crust_fe_tobytes(got, &u);
        CHECK(memcmp(got, want, 32) == 0);
        CHECK(on_curve(got));
    }
    crust_fe_add(&v, &v, &v1); /* T_7 = -T_1 */
    CHECK(crust_fe_iszero(&v));
    /* [8]T_1 = O, [4]T_1 = (0, 0) by the ladder too */
    uint8_t eight[1] = {8}, four[1] = {4}, got[32], zero[32] = {0};
    low_order_u(b, 1);
    ladder(got, eight, 4, b);
    CHECK(memcmp(got, zero, 32) == 0);
    ladder(got, four, 3, b);
    CHECK(memcmp(got, zero, 32) == 0);
}

static void test_dirty_keys(void)
{
    /* For each low-order choice: the dirty key is on the curve; [ell] of it
     * is T_{5k} (ell = 5 mod 8) while [ell] of the clean key is O; X25519
     * against it equals X25519 against the clean key. */
    int counts[8] = {0};
    int representable = 0, attempts = 0;
    for (int i = 0; i < 64; i++) {
        uint8_t priv[32], dirty[32], clean[32], got[32], want[32];
        fill(priv, 32);
        unsigned k = priv[0] & 7;
        counts[k]++;
        CHECK(crust_elligator_public_key(dirty, priv, test_scalarmult_base) == CRUST_ELLIGATOR_OK);
        x25519(clean, priv, BASE);
        CHECK(on_curve(dirty));
        CHECK((memcmp(dirty, clean, 32) == 0) == (k == 0));
        ladder(got, ELL, 253, dirty);
        low_order_u(want, (5 * k) % 8);
        CHECK(memcmp(got, want, 32) == 0);
        ladder(got, ELL, 253, clean);
        low_order_u(want, 0);
        CHECK(memcmp(got, want, 32) == 0);
        uint8_t other[32], s1[32], s2[32];
        fill(other, 32);
        x25519(s1, other, dirty);
        x25519(s2, other, clean);
        CHECK(memcmp(s1, s2, 32) == 0);
        /* the key pair: its representative maps to the dirty key */
        uint8_t rep[32], pub[32], back[32];
        uint8_t tweak = (uint8_t)i;
        attempts++;
        int rc = crust_elligator_key_pair(rep, pub, priv, tweak, test_scalarmult_base);
        if (rc == CRUST_ELLIGATOR_OK) {
            representable++;
            CHECK(memcmp(pub, dirty, 32) == 0);
            crust_elligator_map(back, rep);
            CHECK(memcmp(back, dirty, 32) == 0);
            CHECK((rep[31] & 0xc0) == (tweak & 0xc0));
        } else {
            CHECK(rc == CRUST_ELLIGATOR_ENOREP);
            uint8_t zero[32] = {0};
            CHECK(memcmp(rep, zero, 32) == 0 && memcmp(pub, zero, 32) == 0);
        }
    }
    for (int k = 0; k < 8; k++)
        CHECK(counts[k] > 0);
    CHECK(representable > 12 && representable < 52); /* binomial(64, 1/2) +- 5 sd */
    /* errors: no function, a failing one, one giving the identity or a
     * point off the curve */
    uint8_t priv[32] = {1}, pub[32], rep[32];
    CHECK(crust_elligator_public_key(pub, priv, NULL) == CRUST_ELLIGATOR_EINVAL);
    CHECK(crust_elligator_public_key(pub, priv, failing_base) == CRUST_ELLIGATOR_ESODIUM);
    CHECK(crust_elligator_public_key(pub, priv, identity_base) == CRUST_ELLIGATOR_ESODIUM);
    CHECK(crust_elligator_public_key(pub, priv, twist_base) == CRUST_ELLIGATOR_ESODIUM);
    CHECK(crust_elligator_key_pair(rep, pub, priv, 0, failing_base) == CRUST_ELLIGATOR_ESODIUM);
}

int main(void)
{
    test_field_known_answers();
    test_field_encoding_edges();
    test_field_properties();
    test_map_vectors();
    test_rev_vectors();
    test_map_accepts_everything();
    test_round_trip_all_tweaks();
    test_random_points();
    test_ladder_vector();
    test_low_order_points();
    test_dirty_keys();
    return check_summary();
}
