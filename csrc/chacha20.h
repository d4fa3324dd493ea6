/*
 * chacha20.h - the ChaCha20 block function (RFC 8439, section 2.3).
 *
 * One concept: 64 bytes of keystream from a 256-bit key, a 32-bit block
 * counter and a 96-bit nonce. The masked short header (header_mask.h) takes
 * its mask from one block, as QUIC's ChaCha20 header protection does
 * (RFC 9001, section 5.4.4).
 *
 * Written here rather than reached through libsodium because PyNaCl's cffi
 * module, where crust takes its libsodium functions (crust/_sodium.py),
 * declares no raw ChaCha20: no crypto_stream_chacha20_*, no
 * crypto_core_hchacha20 (docs/design/0083). A block is 20 rounds of 32-bit
 * additions, rotations and XORs: no table lookups and no branches, so it
 * runs in the same time for every key, counter and nonce.
 *
 * Not a stream cipher: one block, no counter increment, no message. The
 * stack is not wiped: the one key it serves (header_mask.h) is given to
 * every peer. Tests: RFC 8439's block vectors and RFC 9001's A.5 mask in
 * tests/c/test_header_mask.c, OpenSSL's ChaCha20 (through the cryptography
 * package) on random inputs in tests/unit/test_header_mask.py, constant
 * time in tests/c/ct_header_mask.c.
 */
#ifndef CRUST_CHACHA20_H
#define CRUST_CHACHA20_H

#include <stdint.h>

#define CRUST_CHACHA20_KEY_LEN 32
#define CRUST_CHACHA20_NONCE_LEN 12
#define CRUST_CHACHA20_BLOCK_LEN 64

/* out = ChaCha20(key, counter, nonce), one 64-byte block. The key and the
 * nonce are read as little-endian 32-bit words, as RFC 8439 says. */
void crust_chacha20_block(uint8_t out[CRUST_CHACHA20_BLOCK_LEN],
                          const uint8_t key[CRUST_CHACHA20_KEY_LEN], uint32_t counter,
                          const uint8_t nonce[CRUST_CHACHA20_NONCE_LEN]);

#endif
