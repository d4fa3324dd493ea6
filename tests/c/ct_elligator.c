/*
 * ct_elligator.c - constant time of csrc/elligator.c and csrc/fe25519.c
 * checked with Valgrind's memcheck (the "ctgrind" method): secret inputs
 * are marked undefined, and memcheck reports every conditional jump and
 * every memory address that depends on them. The outcome a caller may see
 * (the return code) is marked defined again before it is used.
 *
 *     valgrind --error-exitcode=1 ct_elligator ct ROUNDS
 *     valgrind --error-exitcode=1 ct_elligator leaky
 *
 * "ct" must run clean; "leaky" branches on a secret and indexes a table
 * with one, and must be reported: the check can fail.
 * tests/engine/test_constant_time.py builds and runs it. Not a test_*.c:
 * it needs Valgrind's header and is meaningless outside Valgrind.
 */
#include "ct_harness.h"
#include "elligator.h"
#include "fe25519.h"
#include "test_rng.h"
#include "x25519_ref.h"

static int ref_base(unsigned char *q, const unsigned char *n)
{
    x25519(q, n, BASE);
    return 0;
}

static int round_ct(void)
{
    uint8_t priv[32], rep[32], u[32], out[32], pub[32], tweak;
    int rc, representable = 0;

    /* the forward map of a secret representative */
    fill(rep, 32);
    SECRET(rep, 32);
    crust_elligator_map(u, rep);

    /* the inverse map of a secret point and tweak (u from the map has a
     * representative; a random one half the time) */
    fill(&tweak, 1);
    SECRET(&tweak, 1);
    rc = crust_elligator_rev(out, u, tweak);
    PUBLIC(&rc, sizeof rc);
    if (rc != CRUST_ELLIGATOR_OK)
        return -1;
    fill(u, 32);
    SECRET(u, 32);
    rc = crust_elligator_rev(out, u, tweak);
    PUBLIC(&rc, sizeof rc);

    /* key generation from a secret private key and tweak */
    fill(priv, 32);
    fill(&tweak, 1);
    SECRET(priv, 32);
    SECRET(&tweak, 1);
    rc = crust_elligator_key_pair(out, pub, priv, tweak, ref_base);
    PUBLIC(&rc, sizeof rc);
    if (rc == CRUST_ELLIGATOR_OK)
        representable = 1;
    else if (rc != CRUST_ELLIGATOR_ENOREP)
        return -1;

    /* the field operations with secret operands */
    crust_fe a, b, h;
    crust_fe_frombytes(&a, priv);
    crust_fe_frombytes(&b, rep);
    crust_fe_invert(&h, &a);
    crust_fe_mul(&h, &h, &b);
    (void)crust_fe_invsqrt(&h, &h);
    crust_fe_abs(&h, &h);
    crust_fe_cmov(&h, &a, priv[1] & 1);
    crust_fe_tobytes(out, &h);
    return representable;
}

static volatile int sink;
static const uint8_t table[256] = {1};

/* The positive control: what memcheck must catch. */
static void round_leaky(void)
{
    uint8_t secret[2];
    fill(secret, 2);
    SECRET(secret, 2);
    if (secret[0] & 1) /* a branch on a secret */
        sink++;
    sink += table[secret[1]]; /* an index from a secret */
}

int main(int argc, char **argv)
{
    return ct_main(argc, argv, round_ct, round_leaky, "representable keys");
}
