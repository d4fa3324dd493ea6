/*
 * ct_header_mask.c - constant time of csrc/header_mask.c and
 * csrc/chacha20.c under Valgrind's memcheck (the method of
 * ct_elligator.c): the key and every byte of the packet are marked
 * undefined, and memcheck reports every conditional jump and memory
 * address that depends on them. What the receiver learns anyway (the
 * packet-number length it returns) is marked defined before it is used.
 *
 *     valgrind --error-exitcode=1 ct_header_mask ct ROUNDS
 *     valgrind --error-exitcode=1 ct_header_mask leaky
 *
 * "ct" must run clean; "leaky" unmasks the packet number the obvious way,
 * with a loop bound on the unmasked length, and must be reported: the
 * check sees exactly what header_mask.c's selects avoid.
 * tests/engine/test_constant_time.py builds and runs it.
 */
#include "chacha20.h"
#include "ct_harness.h"
#include "header_mask.h"
#include "test_rng.h"

static int round_ct(void)
{
    uint8_t key[CRUST_HM_KEY_LEN], pkt[64], cid[CRUST_CID_LEN];
    fill(key, sizeof key);
    fill(pkt, sizeof pkt);
    SECRET(key, sizeof key);
    SECRET(pkt, sizeof pkt);
    int rc = crust_header_mask(key, pkt, sizeof pkt);
    PUBLIC(&rc, sizeof rc);
    if (rc != CRUST_OK)
        return -1;
    rc = crust_header_unmask(key, pkt, sizeof pkt, cid);
    PUBLIC(&rc, sizeof rc);
    return rc >= 1 && rc <= 4 ? 0 : -1;
}

static volatile uint8_t sink;

/* The positive control: the packet-number unmask with a secret loop bound. */
static void round_leaky(void)
{
    uint8_t key[CRUST_HM_KEY_LEN], pkt[64], m[CRUST_CHACHA20_BLOCK_LEN];
    fill(key, sizeof key);
    fill(pkt, sizeof pkt);
    SECRET(pkt, sizeof pkt);
    crust_chacha20_block(m, key, 1, pkt + CRUST_HM_SAMPLE_OFFSET + 4);
    unsigned pnlen = ((pkt[0] ^ m[0]) & 3u) + 1;
    for (unsigned j = 0; j < pnlen; j++)
        pkt[CRUST_HM_PN_OFFSET + j] ^= m[1 + j];
    sink = pkt[CRUST_HM_PN_OFFSET];
}

int main(int argc, char **argv)
{
    return ct_main(argc, argv, round_ct, round_leaky, NULL);
}
