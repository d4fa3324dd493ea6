/*
 * aead.h - packet protection (internal). The AEAD functions come from a
 * table filled at start-up (crust_aead_register); the core links no crypto
 * library. Nonce = iv XOR the 62-bit packet number (big-endian, right
 * aligned), as in QUIC, so a (key, nonce) pair is never reused while packet
 * numbers are never reused.
 */
#ifndef CRUST_AEAD_H
#define CRUST_AEAD_H

#include <stddef.h>
#include <stdint.h>

#include "crust.h"

typedef struct crust_keys {
    uint8_t key[CRUST_KEY_LEN];
    uint8_t iv[CRUST_IV_LEN];
    uint8_t aead;   /* crust_aead_id */
    uint8_t valid;
} crust_keys;

/* Seal plaintext m (mlen) into c: c gets mlen + CRUST_TAG_LEN bytes.
 * c may equal m (in place, as libsodium allows); otherwise they must not
 * overlap. Returns 0 or CRUST_ENOKEY. */
int crust_aead_seal(const crust_keys *k, uint64_t pn, uint8_t *c, const uint8_t *m,
                    size_t mlen, const uint8_t *ad, size_t adlen);
/* Open ciphertext c (clen, tag included) into m (clen - CRUST_TAG_LEN).
 * Returns 0, or CRUST_EDECRYPT when the tag does not verify. */
int crust_aead_open(const crust_keys *k, uint64_t pn, uint8_t *m, const uint8_t *c,
                    size_t clen, const uint8_t *ad, size_t adlen);

#endif
