/*
 * noise.h - the Noise handshake (Noise Protocol Framework, revision 34) in C.
 *
 * One concept: a Noise_XX or Noise_IK handshake over 25519_ChaChaPoly_BLAKE2b,
 * its key schedule (MixHash, MixKey, HKDF over HMAC-BLAKE2b, EncryptAndHash,
 * DecryptAndHash, Split) and the CipherState operations it is built from.
 * No PSK modes, no other suites.
 *
 * The core links no crypto library: libsodium's X25519, BLAKE2b and
 * ChaCha20-Poly1305 are reached through function pointers handed over once
 * with crust_noise_use_sodium() (crust/_sodium.py takes them from PyNaCl's
 * cffi module, as it does for the packet AEADs). Until then every function
 * that needs one returns CRUST_NOISE_ENOSODIUM.
 *
 * Sans-IO and clock-free: the caller supplies the ephemeral private key
 * (32 random bytes) when it creates a handshake, so the code draws no
 * randomness and is deterministic under test vectors.
 *
 * Masked ephemerals (crust_noise_init_masked; docs/design/0082): the 32
 * bytes of each "e" token are the Elligator 2 representative of a dirty
 * ephemeral public key (elligator.h), which cannot be told from random
 * bytes, instead of the key itself. MixHash takes those wire bytes, as
 * received (padding bits included), and the reader decodes them with
 * crust_elligator_map to the u-coordinate it uses in DH. Everything else
 * (static keys, the DH tokens, the key schedule) is unchanged. Both ends
 * must be masked: the protocol name is another one (its DH field reads
 * "25519elligator2"), so a masked end and a plain one never agree on a key
 * and the first authenticated message fails with CRUST_NOISE_EDECRYPT. Only
 * about half the private keys have a representative: the write of the
 * "e" token then fails with CRUST_NOISE_ENOREP, the state untouched, and
 * the caller installs another private key (crust_noise_set_ephemeral) and
 * writes again, as lazily as the plain mode computes its ephemeral key.
 *
 * Two strengthenings over the bare specification (kept from the Python
 * implementation this replaces):
 * - crust_noise_write and crust_noise_read are atomic: when they fail the
 *   handshake state is exactly as before the call, so a forged or damaged
 *   message cannot derail a handshake in progress; the caller drops it.
 * - every DH output is checked against all-zero (what a low-order public
 *   key produces); such a DH fails with CRUST_NOISE_ELOWORDER.
 *
 * Every length that comes with a message is checked before it is used: the
 * bytes are an attacker's. Not thread-safe per object; distinct objects may
 * be used from distinct threads once crust_noise_use_sodium() has returned.
 */
#ifndef CRUST_NOISE_H
#define CRUST_NOISE_H

#include <stddef.h>
#include <stdint.h>

#define CRUST_NOISE_DHLEN 32
#define CRUST_NOISE_HASHLEN 64
#define CRUST_NOISE_KEYLEN 32
#define CRUST_NOISE_TAGLEN 16
/* The largest Noise message, handshake or transport (the specification's). */
#define CRUST_NOISE_MAX_MESSAGE 65535

/* ---- error codes (all negative; 0 is success) ---- */
#define CRUST_NOISE_OK 0
#define CRUST_NOISE_EINVAL (-1)     /* bad argument: a key length, a pattern, IK without rs */
#define CRUST_NOISE_ESTATE (-2)     /* wrong turn, or already complete */
#define CRUST_NOISE_ESHORT (-3)     /* message too short for what its pattern carries */
#define CRUST_NOISE_ETOOBIG (-4)    /* message longer than CRUST_NOISE_MAX_MESSAGE */
#define CRUST_NOISE_EDECRYPT (-5)   /* authentication failed */
#define CRUST_NOISE_ELOWORDER (-6)  /* DH produced all-zero: a low-order public key */
#define CRUST_NOISE_ENONCE (-7)     /* nonce 2^64-1 reached: rekey or new session */
#define CRUST_NOISE_ENOSODIUM (-8)  /* crust_noise_use_sodium() not called (or a hash call failed) */
#define CRUST_NOISE_ENOTDONE (-9)   /* split before the handshake is complete */
#define CRUST_NOISE_EBUFFER (-10)   /* the caller's output buffer is too small */
#define CRUST_NOISE_ENOREP (-11)    /* masked: the ephemeral key has no representative */

/* ---- libsodium's functions, with libsodium's own signatures ---- */
typedef int (*crust_noise_scalarmult_fn)(unsigned char *q, const unsigned char *n,
                                         const unsigned char *p);
typedef int (*crust_noise_scalarmult_base_fn)(unsigned char *q, const unsigned char *n);
/* crypto_generichash_blake2b_init_salt_personal / _update / _final; the
 * state is opaque, CRUST_NOISE_B2B_STATEBYTES bytes aligned to 64. */
typedef int (*crust_noise_b2b_init_fn)(void *state, const unsigned char *key, size_t keylen,
                                       size_t outlen, const unsigned char *salt,
                                       const unsigned char *personal);
typedef int (*crust_noise_b2b_update_fn)(void *state, const unsigned char *in,
                                         unsigned long long inlen);
typedef int (*crust_noise_b2b_final_fn)(void *state, unsigned char *out, size_t outlen);
/* crypto_aead_chacha20poly1305_ietf_encrypt / _decrypt (combined mode). */
typedef int (*crust_noise_seal_fn)(unsigned char *c, unsigned long long *clen,
                                   const unsigned char *m, unsigned long long mlen,
                                   const unsigned char *ad, unsigned long long adlen,
                                   const unsigned char *nsec, const unsigned char *npub,
                                   const unsigned char *k);
typedef int (*crust_noise_open_fn)(unsigned char *m, unsigned long long *mlen,
                                   unsigned char *nsec, const unsigned char *c,
                                   unsigned long long clen, const unsigned char *ad,
                                   unsigned long long adlen, const unsigned char *npub,
                                   const unsigned char *k);

#define CRUST_NOISE_B2B_STATEBYTES 384

typedef struct crust_noise_sodium {
    crust_noise_scalarmult_fn scalarmult;           /* crypto_scalarmult */
    crust_noise_scalarmult_base_fn scalarmult_base; /* crypto_scalarmult_base */
    crust_noise_b2b_init_fn b2b_init;
    crust_noise_b2b_update_fn b2b_update;
    crust_noise_b2b_final_fn b2b_final;
    crust_noise_seal_fn seal;
    crust_noise_open_fn open;
    size_t b2b_statebytes; /* crypto_generichash_statebytes(): refused if larger than ours */
} crust_noise_sodium;

/* Install the functions (all must be non-NULL). Call once, before any other
 * function here, from one thread. CRUST_NOISE_EINVAL if one is missing or
 * libsodium's BLAKE2b state is larger than CRUST_NOISE_B2B_STATEBYTES. */
int crust_noise_use_sodium(const crust_noise_sodium *fns);

/* ---- primitives ---- */

/* X25519 public key of a private key. */
int crust_noise_public_key(uint8_t pub[CRUST_NOISE_DHLEN], const uint8_t priv[CRUST_NOISE_DHLEN]);
/* DH: X25519; CRUST_NOISE_ELOWORDER (out zeroed) when the result is all-zero. */
int crust_noise_dh(uint8_t out[CRUST_NOISE_DHLEN], const uint8_t priv[CRUST_NOISE_DHLEN],
                   const uint8_t pub[CRUST_NOISE_DHLEN]);
/* HASH: BLAKE2b-512 of data. */
int crust_noise_hash(uint8_t out[CRUST_NOISE_HASHLEN], const uint8_t *data, size_t len);
/* HMAC-HASH (RFC 2104 over BLAKE2b-512, not BLAKE2b's keyed mode). */
int crust_noise_hmac(uint8_t out[CRUST_NOISE_HASHLEN], const uint8_t *key, size_t keylen,
                     const uint8_t *data, size_t len);
/* HKDF(chaining_key, ikm, 2 or 3): out3 NULL for two outputs. */
int crust_noise_hkdf(const uint8_t *ck, size_t cklen, const uint8_t *ikm, size_t ikmlen,
                     uint8_t out1[CRUST_NOISE_HASHLEN], uint8_t out2[CRUST_NOISE_HASHLEN],
                     uint8_t *out3);

/* HKDF-Expand (RFC 5869) over the same HMAC: len bytes (at most
 * CRUST_NOISE_EXPAND_MAX) of T(1) || T(2) || ..., where
 * T(i) = HMAC(secret, T(i-1) || info || i). Not part of Noise: crust's
 * packet-key schedule (crust/handshake/keys.py) is built on it.
 * CRUST_NOISE_EINVAL when len is 0 or too large. */
#define CRUST_NOISE_EXPAND_MAX (255 * CRUST_NOISE_HASHLEN)
int crust_noise_hkdf_expand(const uint8_t *secret, size_t secret_len, const uint8_t *info,
                            size_t info_len, uint8_t *out, size_t len);

/* ---- CipherState ---- */
typedef struct crust_noise_cipher {
    uint8_t k[CRUST_NOISE_KEYLEN];
    uint64_t n;
    uint8_t has_key;
} crust_noise_cipher;

/* ENCRYPT(k, n, ad, plaintext) into out (len + TAGLEN bytes; a copy when
 * there is no key), then n += 1. out must not overlap plaintext. */
int crust_noise_encrypt(crust_noise_cipher *cs, const uint8_t *ad, size_t adlen,
                        const uint8_t *plaintext, size_t len, uint8_t *out);
/* DECRYPT into out (len - TAGLEN bytes); on failure n is not advanced. */
int crust_noise_decrypt(crust_noise_cipher *cs, const uint8_t *ad, size_t adlen,
                        const uint8_t *ciphertext, size_t len, uint8_t *out);
/* REKEY: k = the first 32 bytes of ENCRYPT(k, 2^64-1, "", 32 zeros). */
int crust_noise_rekey(crust_noise_cipher *cs);

/* ---- HandshakeState ---- */
typedef enum crust_noise_pattern {
    CRUST_NOISE_XX = 0,
    CRUST_NOISE_IK = 1,
} crust_noise_pattern;

/* Plain data: copy, embed or zero it freely; crust_noise_wipe before freeing. */
typedef struct crust_noise_hs {
    uint8_t ck[CRUST_NOISE_HASHLEN];
    uint8_t h[CRUST_NOISE_HASHLEN];
    crust_noise_cipher cs;
    uint8_t s[CRUST_NOISE_DHLEN], s_pub[CRUST_NOISE_DHLEN];
    uint8_t e[CRUST_NOISE_DHLEN], e_pub[CRUST_NOISE_DHLEN];
    uint8_t re[CRUST_NOISE_DHLEN], rs[CRUST_NOISE_DHLEN];
    uint8_t has_e_pub, has_re, has_rs;
    uint8_t pattern, initiator, index;
    /* Masked ephemerals, and the Elligator tweak that goes with e. */
    uint8_t masked, tweak;
    /* Split()'s two keys (initiator->responder, responder->initiator),
     * valid once complete. */
    uint8_t k1[CRUST_NOISE_KEYLEN], k2[CRUST_NOISE_KEYLEN];
} crust_noise_hs;

/* Initialize: s is the static private key; s_pub its public key when the
 * caller has it (NULL: computed, one scalar multiplication), and it must
 * be exactly that; rs the responder's static public key (IK initiator:
 * required; otherwise NULL); e the ephemeral private key (32 fresh random
 * bytes; its public key is computed when the "e" token is written).
 * CRUST_NOISE_EINVAL for an unknown pattern or IK initiator without rs. */
int crust_noise_init(crust_noise_hs *hs, crust_noise_pattern pattern, int initiator,
                     const uint8_t *prologue, size_t prologue_len,
                     const uint8_t s[CRUST_NOISE_DHLEN], const uint8_t *s_pub,
                     const uint8_t *rs, const uint8_t e[CRUST_NOISE_DHLEN]);

/* crust_noise_init for masked ephemerals (see the top of this file):
 * the protocol name is Noise_XX_25519elligator2_ChaChaPoly_BLAKE2b (or
 * _IK_), e must come with a random tweak byte (elligator.h:
 * crust_elligator_key_pair's), and e's public key is the dirty one
 * whose representative goes on the wire. */
int crust_noise_init_masked(crust_noise_hs *hs, crust_noise_pattern pattern, int initiator,
                            const uint8_t *prologue, size_t prologue_len,
                            const uint8_t s[CRUST_NOISE_DHLEN], const uint8_t *s_pub,
                            const uint8_t *rs, const uint8_t e[CRUST_NOISE_DHLEN],
                            uint8_t tweak);

/* Replace the ephemeral private key (and, masked, its tweak) before the
 * "e" token is written: what a masked writer does after
 * CRUST_NOISE_ENOREP, with fresh random bytes. CRUST_NOISE_ESTATE once
 * the key has been sent. */
int crust_noise_set_ephemeral(crust_noise_hs *hs, const uint8_t e[CRUST_NOISE_DHLEN],
                              uint8_t tweak);

int crust_noise_complete(const crust_noise_hs *hs);
/* True when the next message is ours to write. */
int crust_noise_my_turn(const crust_noise_hs *hs);
/* Length of the message crust_noise_write would produce for a payload of
 * payload_len bytes now (0 when it is not our turn). */
size_t crust_noise_write_len(const crust_noise_hs *hs, size_t payload_len);

/* Write the next message with the payload into out (cap bytes, at least
 * crust_noise_write_len). *out_len gets its length. Atomic.
 * CRUST_NOISE_ENOREP (masked only): the ephemeral key has no
 * representative; crust_noise_set_ephemeral, then write again. */
int crust_noise_write(crust_noise_hs *hs, const uint8_t *payload, size_t payload_len,
                      uint8_t *out, size_t cap, size_t *out_len);
/* Read the peer's message; its payload goes to payload (cap bytes; len
 * bytes always suffice), *payload_len gets its length. Atomic. */
int crust_noise_read(crust_noise_hs *hs, const uint8_t *msg, size_t len, uint8_t *payload,
                     size_t cap, size_t *payload_len);

/* X25519 operations done in this process so far: DHs (crust_noise_dh, each
 * DH token) and ephemeral public keys (each "e" token written; masked,
 * each attempt, so about two per token). Tests use
 * them to check that junk costs a responder no Diffie-Hellman. */
void crust_noise_x25519_counts(uint64_t *dh, uint64_t *ephemeral);

/* Zero len bytes at p (not optimised away): for keys going out of scope. */
void crust_noise_wipe(void *p, size_t len);

#endif
