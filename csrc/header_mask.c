/* header_mask.c - the masked short header; see header_mask.h. */
#include "header_mask.h"

#include <string.h>

#include "chacha20.h"

/* Bytes of the block used: flags, 4 packet-number bytes, the id. */
#define MASK_LEN (1 + 4 + CRUST_CID_LEN)
#define MASK_PN 1
#define MASK_CID 5

_Static_assert(CRUST_HM_SAMPLE_LEN == 4 + CRUST_CHACHA20_NONCE_LEN,
               "the sample is a block counter and a nonce");
_Static_assert(MASK_LEN <= CRUST_CHACHA20_BLOCK_LEN, "one block covers the header");
_Static_assert(CRUST_HM_MASKED_MAX == CRUST_HM_PN_OFFSET + 4,
               "the longest header ends where the sample starts");

/* RFC 9001, section 5.4.4: the sample's first 4 bytes are the block counter
 * (little-endian), the other 12 the nonce. */
static void block_mask(uint8_t m[CRUST_CHACHA20_BLOCK_LEN], const uint8_t key[CRUST_HM_KEY_LEN],
                       const uint8_t *pkt)
{
    const uint8_t *sample = pkt + CRUST_HM_SAMPLE_OFFSET;
    uint32_t counter = (uint32_t)sample[0] | (uint32_t)sample[1] << 8 |
                       (uint32_t)sample[2] << 16 | (uint32_t)sample[3] << 24;
    crust_chacha20_block(m, key, counter, sample + 4);
}

/* XOR the id and the first pnlen packet-number bytes; pnlen (1-4) is a
 * secret of the receiver's, so every one of the 4 bytes is visited and the
 * mask selected, not branched on. */
static void apply(uint8_t *pkt, const uint8_t *m, unsigned pnlen)
{
    for (unsigned i = 0; i < CRUST_CID_LEN; i++)
        pkt[1 + i] ^= m[MASK_CID + i];
    for (unsigned j = 0; j < 4; j++) {
        /* all ones when j < pnlen: (j - pnlen) wraps to a value with the
         * top bit set exactly then, both being at most 4 */
        uint8_t sel = (uint8_t)(0u - ((j - pnlen) >> (sizeof(unsigned) * 8 - 1)));
        pkt[CRUST_HM_PN_OFFSET + j] ^= (uint8_t)(m[MASK_PN + j] & sel);
    }
}

/* Both directions: the packet-number length comes from the plain flags,
 * which the sender has and the receiver gets by unmasking byte 0 first.
 * The status (public: it depends on the length only) is returned apart
 * from the length (secret): a caller branching on one value carrying both
 * would branch on the secret. */
static int run(const uint8_t key[CRUST_HM_KEY_LEN], uint8_t *pkt, size_t len, int unmasking,
               unsigned *pnlen)
{
    if (!key || !pkt)
        return CRUST_EINVAL;
    if (len < CRUST_HM_MIN_PACKET)
        return CRUST_EMALFORMED;
    uint8_t m[CRUST_CHACHA20_BLOCK_LEN];
    block_mask(m, key, pkt);
    uint8_t plain_flags = unmasking ? (uint8_t)(pkt[0] ^ m[0]) : pkt[0];
    *pnlen = (plain_flags & 3u) + 1;
    pkt[0] ^= m[0];
    apply(pkt, m, *pnlen);
    return CRUST_OK;
}

int crust_header_mask(const uint8_t key[CRUST_HM_KEY_LEN], uint8_t *pkt, size_t len)
{
    unsigned pnlen;
    return run(key, pkt, len, 0, &pnlen);
}

int crust_header_unmask(const uint8_t key[CRUST_HM_KEY_LEN], uint8_t *pkt, size_t len,
                        uint8_t cid[CRUST_CID_LEN])
{
    unsigned pnlen;
    int rc = run(key, pkt, len, 1, &pnlen);
    if (rc != CRUST_OK)
        return rc;
    if (cid)
        memcpy(cid, pkt + 1, CRUST_CID_LEN);
    return (int)pnlen;
}
