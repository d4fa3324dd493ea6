/*
 * aead.c - the AEAD function table and the null cipher.
 *
 * The null "cipher" copies the plaintext and appends a 16-byte keyed
 * checksum, not a MAC: it gives tests and engine benchmarks corruption
 * detection at almost no cost. It offers no security, so the handshake
 * never negotiates it; only local code can install it.
 */
#include "aead.h"

#include <string.h>

typedef struct aead_impl {
    crust_aead_seal_fn seal;
    crust_aead_open_fn open;
} aead_impl;

static aead_impl g_aead[CRUST_AEAD_COUNT];

int crust_aead_register(crust_aead_id id, crust_aead_seal_fn seal, crust_aead_open_fn open)
{
    if (id <= CRUST_AEAD_NULL || id >= CRUST_AEAD_COUNT || !seal || !open)
        return CRUST_EINVAL;
    g_aead[id].seal = seal;
    g_aead[id].open = open;
    return CRUST_OK;
}

int crust_aead_available(crust_aead_id id)
{
    if (id == CRUST_AEAD_NULL)
        return 1;
    return id > CRUST_AEAD_NULL && id < CRUST_AEAD_COUNT && g_aead[id].seal != NULL;
}

size_t crust_aead_tag_len(crust_aead_id id)
{
    return id == CRUST_AEAD_AEGIS128L ? 32 : CRUST_TAG_LEN;
}

uint64_t crust_aead_packet_limit(crust_aead_id id)
{
    /* RFC 9001 allows 2^23 AES-GCM packets of up to 2^10 blocks (16 KiB);
     * a stream packet holds up to 2^12 blocks, so a quarter of that. */
    return id == CRUST_AEAD_AES256_GCM ? UINT64_C(1) << 21 : 0;
}

/* The nonce buffer is 16 bytes for AEGIS-128L; the other AEADs read 12.
 * The tail beyond the iv stays zero, so nonces stay unique per packet. */
#define NONCE_BUF 16

static void make_nonce(uint8_t nonce[NONCE_BUF], const uint8_t iv[CRUST_IV_LEN], uint64_t pn)
{
    memset(nonce + CRUST_IV_LEN, 0, NONCE_BUF - CRUST_IV_LEN);
    memcpy(nonce, iv, CRUST_IV_LEN);
    for (int i = 0; i < 8; i++)
        nonce[CRUST_IV_LEN - 1 - i] ^= (uint8_t)(pn >> (8 * i));
}

static uint64_t load64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

/* A keyed Fletcher-style checksum over 64-bit words: two running sums
 * catch every single-bit flip and most reorderings, at about one add per
 * 8 bytes. It stops accidents, not attackers; that is the null AEAD's job. */
static void null_tag(uint8_t tag[CRUST_TAG_LEN], const uint8_t *key, const uint8_t *nonce,
                     const uint8_t *ad, size_t adlen, const uint8_t *m, size_t mlen)
{
    uint64_t s1 = load64(key) ^ load64(nonce), s2 = load64(key + 8) ^ load64(nonce + 4);
    const uint8_t *parts[2] = {ad, m};
    size_t lens[2] = {adlen, mlen};
    for (int p = 0; p < 2; p++) {
        const uint8_t *d = parts[p];
        size_t n = lens[p], i = 0;
        for (; i + 8 <= n; i += 8) {
            s1 += load64(d + i);
            s2 += s1;
        }
        uint64_t w = (uint64_t)n << 56; /* the length keeps tails distinct */
        for (size_t j = 0; i + j < n; j++)
            w |= (uint64_t)d[i + j] << (8 * j);
        s1 += w;
        s2 += s1;
    }
    s2 ^= s2 >> 29;
    s2 *= 0x9e3779b97f4a7c15ull;
    memcpy(tag, &s1, 8);
    memcpy(tag + 8, &s2, 8);
}

int crust_aead_seal(const crust_keys *k, uint64_t pn, uint8_t *c, const uint8_t *m, size_t mlen,
                    const uint8_t *ad, size_t adlen)
{
    if (!k->valid || !crust_aead_available((crust_aead_id)k->aead))
        return CRUST_ENOKEY;
    uint8_t nonce[NONCE_BUF];
    make_nonce(nonce, k->iv, pn);
    if (k->aead == CRUST_AEAD_NULL) {
        if (c != m)
            memcpy(c, m, mlen);
        null_tag(c + mlen, k->key, nonce, ad, adlen, c, mlen);
        return CRUST_OK;
    }
    unsigned long long clen = 0;
    g_aead[k->aead].seal(c, &clen, m, mlen, ad, adlen, NULL, nonce, k->key);
    return CRUST_OK;
}

int crust_aead_open(const crust_keys *k, uint64_t pn, uint8_t *m, const uint8_t *c, size_t clen,
                    const uint8_t *ad, size_t adlen)
{
    if (!k->valid || clen < crust_aead_tag_len((crust_aead_id)k->aead) ||
        !crust_aead_available((crust_aead_id)k->aead))
        return CRUST_EDECRYPT;
    uint8_t nonce[NONCE_BUF];
    make_nonce(nonce, k->iv, pn);
    if (k->aead == CRUST_AEAD_NULL) {
        uint8_t tag[CRUST_TAG_LEN];
        size_t mlen = clen - CRUST_TAG_LEN;
        null_tag(tag, k->key, nonce, ad, adlen, c, mlen);
        if (memcmp(tag, c + mlen, CRUST_TAG_LEN) != 0)
            return CRUST_EDECRYPT;
        memcpy(m, c, mlen);
        return CRUST_OK;
    }
    unsigned long long mlen = 0;
    if (g_aead[k->aead].open(m, &mlen, NULL, c, clen, ad, adlen, nonce, k->key) != 0)
        return CRUST_EDECRYPT;
    return CRUST_OK;
}
