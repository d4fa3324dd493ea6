/*
 * noise.c - Noise_XX / Noise_IK over 25519_ChaChaPoly_BLAKE2b (noise.h).
 *
 * Laid out beside the specification's sections: primitives (DH, HASH,
 * HMAC, HKDF), CipherState, SymmetricState (static helpers on the
 * handshake's ck/h/cs), HandshakeState. Atomicity of read/write comes from
 * working on a copy of the state and committing it only on success.
 */
#include "noise.h"

#include <string.h>

#include "elligator.h"

static crust_noise_sodium sodium;
static int sodium_ready;
/* Relaxed atomics: counts, not synchronisation. */
static uint64_t count_dh, count_ephemeral;

void crust_noise_x25519_counts(uint64_t *dh, uint64_t *ephemeral)
{
    *dh = __atomic_load_n(&count_dh, __ATOMIC_RELAXED);
    *ephemeral = __atomic_load_n(&count_ephemeral, __ATOMIC_RELAXED);
}

/* libsodium's crypto_generichash_blake2b_state: 384 opaque bytes, aligned
 * to 64 (crust_noise_use_sodium refuses a library that wants more). */
typedef struct b2b_state {
    _Alignas(64) unsigned char opaque[CRUST_NOISE_B2B_STATEBYTES];
} b2b_state;

#define BLOCKLEN 128 /* BLAKE2b's block: HMAC pads its key to this */

/* The two patterns: tokens per message, initiator's first. */
enum { T_END = 0, T_E, T_S, T_EE, T_ES, T_SE, T_SS };
#define MAX_TOKENS 5
#define MAX_MESSAGES 3

/* Protocol names. Masked ephemerals change how the DH function's public
 * keys travel, so the DH field carries the change; no Noise document names
 * it. Each name is at most HASHLEN bytes, so InitializeSymmetric pads
 * instead of hashing. */
#define NAME_XX "Noise_XX_25519_ChaChaPoly_BLAKE2b"
#define NAME_IK "Noise_IK_25519_ChaChaPoly_BLAKE2b"
#define NAME_XX_MASKED "Noise_XX_25519elligator2_ChaChaPoly_BLAKE2b"
#define NAME_IK_MASKED "Noise_IK_25519elligator2_ChaChaPoly_BLAKE2b"
_Static_assert(sizeof NAME_XX_MASKED - 1 <= CRUST_NOISE_HASHLEN, "names are padded, not hashed");
_Static_assert(sizeof NAME_IK_MASKED - 1 <= CRUST_NOISE_HASHLEN, "names are padded, not hashed");
/* A representative fills the "e" token's DHLEN bytes, as a key does. */
_Static_assert(CRUST_ELLIGATOR_BYTES == CRUST_NOISE_DHLEN, "one key size");

typedef struct pattern_def {
    const char *name, *masked_name;
    uint8_t nmsgs;
    uint8_t responder_pre_s; /* IK: the responder's static key is a pre-message */
    uint8_t msgs[MAX_MESSAGES][MAX_TOKENS];
} pattern_def;

static const pattern_def PATTERNS[2] = {
    [CRUST_NOISE_XX] = {NAME_XX, NAME_XX_MASKED, 3, 0,
                        {{T_E}, {T_E, T_EE, T_S, T_ES}, {T_S, T_SE}}},
    [CRUST_NOISE_IK] = {NAME_IK, NAME_IK_MASKED, 2, 1,
                        {{T_E, T_ES, T_S, T_SS}, {T_E, T_EE, T_SE}}},
};

void crust_noise_wipe(void *p, size_t len)
{
    /* memset, then a barrier that claims to read the memory, so the
     * compiler cannot drop the stores as dead. (A volatile byte loop did
     * the same at a byte a cycle: 4 % of a handshake, hash states being
     * 384 bytes each.) */
    memset(p, 0, len);
    __asm__ __volatile__("" : : "r"(p) : "memory");
}

int crust_noise_use_sodium(const crust_noise_sodium *fns)
{
    if (!fns || !fns->scalarmult || !fns->scalarmult_base || !fns->b2b_init ||
        !fns->b2b_update || !fns->b2b_final || !fns->seal || !fns->open ||
        fns->b2b_statebytes == 0 || fns->b2b_statebytes > CRUST_NOISE_B2B_STATEBYTES)
        return CRUST_NOISE_EINVAL;
    sodium = *fns;
    sodium_ready = 1;
    return CRUST_NOISE_OK;
}

/* ---- primitives ---------------------------------------------------------- */

int crust_noise_public_key(uint8_t pub[CRUST_NOISE_DHLEN], const uint8_t priv[CRUST_NOISE_DHLEN])
{
    if (!sodium_ready)
        return CRUST_NOISE_ENOSODIUM;
    if (sodium.scalarmult_base(pub, priv) != 0)
        return CRUST_NOISE_EINVAL;
    return CRUST_NOISE_OK;
}

int crust_noise_dh(uint8_t out[CRUST_NOISE_DHLEN], const uint8_t priv[CRUST_NOISE_DHLEN],
                   const uint8_t pub[CRUST_NOISE_DHLEN])
{
    if (!sodium_ready)
        return CRUST_NOISE_ENOSODIUM;
    /* libsodium already returns -1 for an all-zero result; the check is
     * repeated here, in constant time, so the refusal does not depend on
     * the library version. */
    __atomic_fetch_add(&count_dh, 1, __ATOMIC_RELAXED);
    int rc = sodium.scalarmult(out, priv, pub);
    uint8_t acc = 0;
    for (size_t i = 0; i < CRUST_NOISE_DHLEN; i++)
        acc |= out[i];
    if (rc != 0 || acc == 0) {
        crust_noise_wipe(out, CRUST_NOISE_DHLEN);
        return CRUST_NOISE_ELOWORDER;
    }
    return CRUST_NOISE_OK;
}

static int b2b_init(b2b_state *st)
{
    return sodium.b2b_init(st, NULL, 0, CRUST_NOISE_HASHLEN, NULL, NULL) == 0
               ? 0 : CRUST_NOISE_ENOSODIUM;
}

static int b2b_update(b2b_state *st, const uint8_t *in, size_t len)
{
    /* A zero-length update is skipped: callers may pass NULL with it. */
    if (len == 0)
        return 0;
    return sodium.b2b_update(st, in, len) == 0 ? 0 : CRUST_NOISE_ENOSODIUM;
}

static int b2b_final(b2b_state *st, uint8_t out[CRUST_NOISE_HASHLEN])
{
    return sodium.b2b_final(st, out, CRUST_NOISE_HASHLEN) == 0 ? 0 : CRUST_NOISE_ENOSODIUM;
}

/* BLAKE2b-512 of a || b (either may be empty). */
static int hash2(uint8_t out[CRUST_NOISE_HASHLEN], const uint8_t *a, size_t alen,
                 const uint8_t *b, size_t blen)
{
    b2b_state st;
    int rc = b2b_init(&st);
    if (!rc) rc = b2b_update(&st, a, alen);
    if (!rc) rc = b2b_update(&st, b, blen);
    if (!rc) rc = b2b_final(&st, out);
    crust_noise_wipe(&st, sizeof st);
    return rc;
}

int crust_noise_hash(uint8_t out[CRUST_NOISE_HASHLEN], const uint8_t *data, size_t len)
{
    if (!sodium_ready)
        return CRUST_NOISE_ENOSODIUM;
    return hash2(out, data, len, NULL, 0);
}

/* HMAC's two hash states with K xor ipad and K xor opad absorbed, kept so
 * HKDF's three HMACs under one key pad it once. */
typedef struct hmac_key {
    b2b_state inner, outer;
} hmac_key;

static int hmac_key_init(hmac_key *hk, const uint8_t *key, size_t keylen)
{
    uint8_t block[BLOCKLEN], pad[BLOCKLEN];
    int rc = 0;
    memset(block, 0, sizeof block);
    if (keylen > BLOCKLEN)
        rc = hash2(block, key, keylen, NULL, 0);
    else if (keylen)
        memcpy(block, key, keylen);
    for (size_t i = 0; i < BLOCKLEN; i++)
        pad[i] = block[i] ^ 0x36;
    if (!rc) rc = b2b_init(&hk->inner);
    if (!rc) rc = b2b_update(&hk->inner, pad, BLOCKLEN);
    for (size_t i = 0; i < BLOCKLEN; i++)
        pad[i] = block[i] ^ 0x5c;
    if (!rc) rc = b2b_init(&hk->outer);
    if (!rc) rc = b2b_update(&hk->outer, pad, BLOCKLEN);
    crust_noise_wipe(block, sizeof block);
    crust_noise_wipe(pad, sizeof pad);
    return rc;
}

/* HMAC(key, a || b || c) with hk's pads (hk itself is left as it was). */
static int hmac_with(const hmac_key *hk, uint8_t out[CRUST_NOISE_HASHLEN], const uint8_t *a,
                     size_t alen, const uint8_t *b, size_t blen, const uint8_t *c, size_t clen)
{
    b2b_state st;
    uint8_t inner[CRUST_NOISE_HASHLEN];
    memcpy(&st, &hk->inner, sizeof st);
    int rc = b2b_update(&st, a, alen);
    if (!rc) rc = b2b_update(&st, b, blen);
    if (!rc) rc = b2b_update(&st, c, clen);
    if (!rc) rc = b2b_final(&st, inner);
    if (!rc) {
        memcpy(&st, &hk->outer, sizeof st);
        rc = b2b_update(&st, inner, sizeof inner);
        if (!rc) rc = b2b_final(&st, out);
    }
    crust_noise_wipe(&st, sizeof st);
    crust_noise_wipe(inner, sizeof inner);
    return rc;
}

int crust_noise_hmac(uint8_t out[CRUST_NOISE_HASHLEN], const uint8_t *key, size_t keylen,
                     const uint8_t *data, size_t len)
{
    if (!sodium_ready)
        return CRUST_NOISE_ENOSODIUM;
    hmac_key hk;
    int rc = hmac_key_init(&hk, key, keylen);
    if (!rc) rc = hmac_with(&hk, out, data, len, NULL, 0, NULL, 0);
    crust_noise_wipe(&hk, sizeof hk);
    return rc;
}

int crust_noise_hkdf(const uint8_t *ck, size_t cklen, const uint8_t *ikm, size_t ikmlen,
                     uint8_t out1[CRUST_NOISE_HASHLEN], uint8_t out2[CRUST_NOISE_HASHLEN],
                     uint8_t *out3)
{
    if (!sodium_ready)
        return CRUST_NOISE_ENOSODIUM;
    static const uint8_t one = 1, two = 2, three = 3;
    uint8_t temp_key[CRUST_NOISE_HASHLEN];
    hmac_key hk;
    int rc = crust_noise_hmac(temp_key, ck, cklen, ikm, ikmlen);
    if (!rc) rc = hmac_key_init(&hk, temp_key, sizeof temp_key);
    if (!rc) rc = hmac_with(&hk, out1, &one, 1, NULL, 0, NULL, 0);
    if (!rc) rc = hmac_with(&hk, out2, out1, CRUST_NOISE_HASHLEN, &two, 1, NULL, 0);
    if (!rc && out3) rc = hmac_with(&hk, out3, out2, CRUST_NOISE_HASHLEN, &three, 1, NULL, 0);
    crust_noise_wipe(&hk, sizeof hk);
    crust_noise_wipe(temp_key, sizeof temp_key);
    return rc;
}

int crust_noise_hkdf_expand(const uint8_t *secret, size_t secret_len, const uint8_t *info,
                            size_t info_len, uint8_t *out, size_t len)
{
    if (!sodium_ready)
        return CRUST_NOISE_ENOSODIUM;
    if (len == 0 || len > CRUST_NOISE_EXPAND_MAX)
        return CRUST_NOISE_EINVAL;
    /* The secret's pads once for all blocks. */
    hmac_key hk;
    uint8_t block[CRUST_NOISE_HASHLEN];
    size_t prev = 0, done = 0;
    int rc = hmac_key_init(&hk, secret, secret_len);
    for (uint8_t counter = 1; !rc && done < len; counter++) {
        rc = hmac_with(&hk, block, block, prev, info, info_len, &counter, 1);
        if (rc)
            break;
        size_t n = len - done < CRUST_NOISE_HASHLEN ? len - done : CRUST_NOISE_HASHLEN;
        memcpy(out + done, block, n);
        done += n;
        prev = CRUST_NOISE_HASHLEN;
    }
    crust_noise_wipe(&hk, sizeof hk);
    crust_noise_wipe(block, sizeof block);
    return rc;
}

/* ---- CipherState --------------------------------------------------------- */

static void nonce_bytes(uint8_t nonce[12], uint64_t n)
{
    /* ChaChaPoly: 32 bits of zeros, then the counter little-endian. */
    memset(nonce, 0, 4);
    for (int i = 0; i < 8; i++)
        nonce[4 + i] = (uint8_t)(n >> (8 * i));
}

int crust_noise_encrypt(crust_noise_cipher *cs, const uint8_t *ad, size_t adlen,
                        const uint8_t *plaintext, size_t len, uint8_t *out)
{
    if (len > CRUST_NOISE_MAX_MESSAGE)
        return CRUST_NOISE_ETOOBIG;
    if (!cs->has_key) {
        if (len)
            memmove(out, plaintext, len);
        return CRUST_NOISE_OK;
    }
    if (!sodium_ready)
        return CRUST_NOISE_ENOSODIUM;
    if (cs->n == UINT64_MAX)
        return CRUST_NOISE_ENONCE;
    uint8_t nonce[12];
    nonce_bytes(nonce, cs->n);
    if (sodium.seal(out, NULL, plaintext, len, ad, adlen, NULL, nonce, cs->k) != 0)
        return CRUST_NOISE_ENOSODIUM;
    cs->n++;
    return CRUST_NOISE_OK;
}

int crust_noise_decrypt(crust_noise_cipher *cs, const uint8_t *ad, size_t adlen,
                        const uint8_t *ciphertext, size_t len, uint8_t *out)
{
    if (len > CRUST_NOISE_MAX_MESSAGE)
        return CRUST_NOISE_ETOOBIG;
    if (!cs->has_key) {
        if (len)
            memmove(out, ciphertext, len);
        return CRUST_NOISE_OK;
    }
    if (!sodium_ready)
        return CRUST_NOISE_ENOSODIUM;
    if (cs->n == UINT64_MAX)
        return CRUST_NOISE_ENONCE;
    if (len < CRUST_NOISE_TAGLEN)
        return CRUST_NOISE_ESHORT;
    uint8_t nonce[12];
    nonce_bytes(nonce, cs->n);
    if (sodium.open(out, NULL, NULL, ciphertext, len, ad, adlen, nonce, cs->k) != 0)
        return CRUST_NOISE_EDECRYPT;
    cs->n++;
    return CRUST_NOISE_OK;
}

int crust_noise_rekey(crust_noise_cipher *cs)
{
    if (!cs->has_key)
        return CRUST_NOISE_EINVAL;
    if (!sodium_ready)
        return CRUST_NOISE_ENOSODIUM;
    uint8_t zeros[CRUST_NOISE_KEYLEN] = {0}, out[CRUST_NOISE_KEYLEN + CRUST_NOISE_TAGLEN];
    uint8_t nonce[12];
    nonce_bytes(nonce, UINT64_MAX);
    if (sodium.seal(out, NULL, zeros, sizeof zeros, NULL, 0, NULL, nonce, cs->k) != 0)
        return CRUST_NOISE_ENOSODIUM;
    memcpy(cs->k, out, CRUST_NOISE_KEYLEN);
    crust_noise_wipe(out, sizeof out);
    return CRUST_NOISE_OK;
}

/* ---- SymmetricState (on the handshake's ck, h, cs) ----------------------- */

static int mix_hash(crust_noise_hs *hs, const uint8_t *data, size_t len)
{
    return hash2(hs->h, hs->h, CRUST_NOISE_HASHLEN, data, len);
}

static int mix_key(crust_noise_hs *hs, const uint8_t *ikm, size_t len)
{
    uint8_t ck[CRUST_NOISE_HASHLEN], temp_k[CRUST_NOISE_HASHLEN];
    int rc = crust_noise_hkdf(hs->ck, CRUST_NOISE_HASHLEN, ikm, len, ck, temp_k, NULL);
    if (!rc) {
        memcpy(hs->ck, ck, sizeof ck);
        memcpy(hs->cs.k, temp_k, CRUST_NOISE_KEYLEN);
        hs->cs.n = 0;
        hs->cs.has_key = 1;
    }
    crust_noise_wipe(ck, sizeof ck);
    crust_noise_wipe(temp_k, sizeof temp_k);
    return rc;
}

/* EncryptAndHash into out (len + TAGLEN bytes with a key, len without). */
static int encrypt_and_hash(crust_noise_hs *hs, const uint8_t *plaintext, size_t len,
                            uint8_t *out, size_t *out_len)
{
    int rc = crust_noise_encrypt(&hs->cs, hs->h, CRUST_NOISE_HASHLEN, plaintext, len, out);
    if (rc)
        return rc;
    *out_len = len + (hs->cs.has_key ? CRUST_NOISE_TAGLEN : 0);
    return mix_hash(hs, out, *out_len);
}

/* DecryptAndHash of len bytes of ciphertext into out. */
static int decrypt_and_hash(crust_noise_hs *hs, const uint8_t *ciphertext, size_t len,
                            uint8_t *out, size_t *out_len)
{
    int rc = crust_noise_decrypt(&hs->cs, hs->h, CRUST_NOISE_HASHLEN, ciphertext, len, out);
    if (rc)
        return rc;
    *out_len = len - (hs->cs.has_key ? CRUST_NOISE_TAGLEN : 0);
    return mix_hash(hs, ciphertext, len);
}

/* ---- HandshakeState ------------------------------------------------------ */

static int init_state(crust_noise_hs *hs, crust_noise_pattern pattern, int initiator,
                      const uint8_t *prologue, size_t prologue_len,
                      const uint8_t s[CRUST_NOISE_DHLEN], const uint8_t *s_pub,
                      const uint8_t *rs, const uint8_t e[CRUST_NOISE_DHLEN], int masked,
                      uint8_t tweak)
{
    if (!sodium_ready)
        return CRUST_NOISE_ENOSODIUM;
    if ((unsigned)pattern > CRUST_NOISE_IK || !s || !e)
        return CRUST_NOISE_EINVAL;
    const pattern_def *p = &PATTERNS[pattern];
    if (p->responder_pre_s && initiator && !rs)
        return CRUST_NOISE_EINVAL;
    memset(hs, 0, sizeof *hs);
    hs->pattern = (uint8_t)pattern;
    hs->initiator = initiator ? 1 : 0;
    hs->masked = masked ? 1 : 0;
    hs->tweak = tweak;
    memcpy(hs->s, s, CRUST_NOISE_DHLEN);
    memcpy(hs->e, e, CRUST_NOISE_DHLEN);
    int rc = 0;
    if (s_pub)
        memcpy(hs->s_pub, s_pub, CRUST_NOISE_DHLEN);
    else
        rc = crust_noise_public_key(hs->s_pub, s);
    if (rs) {
        memcpy(hs->rs, rs, CRUST_NOISE_DHLEN);
        hs->has_rs = 1;
    }
    /* InitializeSymmetric: every name fits in HASHLEN (asserted above), so
     * h is the name zero-padded and no hash is needed. */
    const char *name = masked ? p->masked_name : p->name;
    memcpy(hs->h, name, strlen(name));
    memcpy(hs->ck, hs->h, CRUST_NOISE_HASHLEN);
    if (!rc) rc = mix_hash(hs, prologue, prologue_len);
    if (!rc && p->responder_pre_s)
        rc = mix_hash(hs, initiator ? hs->rs : hs->s_pub, CRUST_NOISE_DHLEN);
    if (rc)
        crust_noise_wipe(hs, sizeof *hs);
    return rc;
}

int crust_noise_init(crust_noise_hs *hs, crust_noise_pattern pattern, int initiator,
                     const uint8_t *prologue, size_t prologue_len,
                     const uint8_t s[CRUST_NOISE_DHLEN], const uint8_t *s_pub,
                     const uint8_t *rs, const uint8_t e[CRUST_NOISE_DHLEN])
{
    return init_state(hs, pattern, initiator, prologue, prologue_len, s, s_pub, rs, e, 0, 0);
}

int crust_noise_init_masked(crust_noise_hs *hs, crust_noise_pattern pattern, int initiator,
                            const uint8_t *prologue, size_t prologue_len,
                            const uint8_t s[CRUST_NOISE_DHLEN], const uint8_t *s_pub,
                            const uint8_t *rs, const uint8_t e[CRUST_NOISE_DHLEN],
                            uint8_t tweak)
{
    return init_state(hs, pattern, initiator, prologue, prologue_len, s, s_pub, rs, e, 1, tweak);
}

int crust_noise_set_ephemeral(crust_noise_hs *hs, const uint8_t e[CRUST_NOISE_DHLEN],
                              uint8_t tweak)
{
    if (!e)
        return CRUST_NOISE_EINVAL;
    /* Once sent, the key is part of the transcript and of the DHs. */
    if (hs->has_e_pub)
        return CRUST_NOISE_ESTATE;
    memcpy(hs->e, e, CRUST_NOISE_DHLEN);
    hs->tweak = tweak;
    return CRUST_NOISE_OK;
}

int crust_noise_complete(const crust_noise_hs *hs)
{
    return hs->index >= PATTERNS[hs->pattern].nmsgs;
}

int crust_noise_my_turn(const crust_noise_hs *hs)
{
    return !crust_noise_complete(hs) && ((hs->index % 2 == 0) == (hs->initiator != 0));
}

size_t crust_noise_write_len(const crust_noise_hs *hs, size_t payload_len)
{
    if (!crust_noise_my_turn(hs))
        return 0;
    const uint8_t *tok = PATTERNS[hs->pattern].msgs[hs->index];
    size_t n = 0;
    int keyed = hs->cs.has_key;
    for (int i = 0; i < MAX_TOKENS && tok[i] != T_END; i++) {
        if (tok[i] == T_E)
            n += CRUST_NOISE_DHLEN;
        else if (tok[i] == T_S)
            n += (size_t)CRUST_NOISE_DHLEN + (keyed ? (size_t)CRUST_NOISE_TAGLEN : 0);
        else
            keyed = 1; /* a DH token runs MixKey */
    }
    return n + payload_len + (keyed ? (size_t)CRUST_NOISE_TAGLEN : 0);
}

/* The DH of a token "xy" (x the initiator's key, y the responder's): each
 * side uses its own private half and the peer's public half. */
static int dh_token(crust_noise_hs *hs, uint8_t token)
{
    int mine_e, theirs_e;
    switch (token) {
    case T_EE: mine_e = 1; theirs_e = 1; break;
    case T_SS: mine_e = 0; theirs_e = 0; break;
    case T_ES: mine_e = hs->initiator; theirs_e = !hs->initiator; break;
    case T_SE: mine_e = !hs->initiator; theirs_e = hs->initiator; break;
    default: return CRUST_NOISE_EINVAL;
    }
    if ((mine_e && !hs->has_e_pub) || (theirs_e ? !hs->has_re : !hs->has_rs))
        return CRUST_NOISE_ESTATE; /* cannot happen with these patterns */
    uint8_t shared[CRUST_NOISE_DHLEN];
    int rc = crust_noise_dh(shared, mine_e ? hs->e : hs->s, theirs_e ? hs->re : hs->rs);
    if (!rc) rc = mix_key(hs, shared, sizeof shared);
    crust_noise_wipe(shared, sizeof shared);
    return rc;
}

static int split(crust_noise_hs *hs)
{
    uint8_t t1[CRUST_NOISE_HASHLEN], t2[CRUST_NOISE_HASHLEN];
    int rc = crust_noise_hkdf(hs->ck, CRUST_NOISE_HASHLEN, NULL, 0, t1, t2, NULL);
    if (!rc) {
        memcpy(hs->k1, t1, CRUST_NOISE_KEYLEN);
        memcpy(hs->k2, t2, CRUST_NOISE_KEYLEN);
    }
    crust_noise_wipe(t1, sizeof t1);
    crust_noise_wipe(t2, sizeof t2);
    return rc;
}

/* After a message: the next one, and Split when that was the last. */
static int advance(crust_noise_hs *hs)
{
    hs->index++;
    return crust_noise_complete(hs) ? split(hs) : 0;
}

/* The ephemeral public key and the 32 bytes the "e" token sends: the key
 * itself, or (masked) the representative of the dirty key, which the
 * peer's crust_elligator_map turns back into e_pub. */
static int ephemeral(crust_noise_hs *hs, uint8_t wire[CRUST_NOISE_DHLEN])
{
    __atomic_fetch_add(&count_ephemeral, 1, __ATOMIC_RELAXED);
    int rc;
    if (hs->masked) {
        rc = crust_elligator_key_pair(wire, hs->e_pub, hs->e, hs->tweak, sodium.scalarmult_base);
        if (rc == CRUST_ELLIGATOR_ENOREP)
            return CRUST_NOISE_ENOREP;
        if (rc != CRUST_ELLIGATOR_OK)
            return CRUST_NOISE_EINVAL; /* scalarmult_base failed, as in crust_noise_public_key */
    } else {
        rc = crust_noise_public_key(hs->e_pub, hs->e);
        if (rc)
            return rc;
        memcpy(wire, hs->e_pub, CRUST_NOISE_DHLEN);
    }
    hs->has_e_pub = 1;
    return CRUST_NOISE_OK;
}

static int write_tokens(crust_noise_hs *hs, const uint8_t *payload, size_t payload_len,
                        uint8_t *out, size_t *out_len)
{
    const uint8_t *tok = PATTERNS[hs->pattern].msgs[hs->index];
    size_t pos = 0, n;
    int rc = 0;
    for (int i = 0; !rc && i < MAX_TOKENS && tok[i] != T_END; i++) {
        switch (tok[i]) {
        case T_E:
            /* Each side sends "e" once: there is no key yet to reuse. */
            rc = ephemeral(hs, out + pos);
            if (rc)
                break;
            rc = mix_hash(hs, out + pos, CRUST_NOISE_DHLEN);
            pos += CRUST_NOISE_DHLEN;
            break;
        case T_S:
            rc = encrypt_and_hash(hs, hs->s_pub, CRUST_NOISE_DHLEN, out + pos, &n);
            pos += rc ? 0 : n;
            break;
        default:
            rc = dh_token(hs, tok[i]);
        }
    }
    if (!rc) rc = encrypt_and_hash(hs, payload, payload_len, out + pos, &n);
    if (!rc) {
        *out_len = pos + n;
        rc = advance(hs);
    }
    return rc;
}

int crust_noise_write(crust_noise_hs *hs, const uint8_t *payload, size_t payload_len,
                      uint8_t *out, size_t cap, size_t *out_len)
{
    if (!crust_noise_my_turn(hs))
        return CRUST_NOISE_ESTATE;
    size_t need = crust_noise_write_len(hs, payload_len);
    /* payload_len is the caller's, so also guard the sum's wrap-around. */
    if (payload_len > CRUST_NOISE_MAX_MESSAGE || need > CRUST_NOISE_MAX_MESSAGE)
        return CRUST_NOISE_ETOOBIG;
    if (cap < need)
        return CRUST_NOISE_EBUFFER;
    crust_noise_hs work = *hs;
    int rc = write_tokens(&work, payload, payload_len, out, out_len);
    if (!rc)
        *hs = work;
    crust_noise_wipe(&work, sizeof work);
    return rc;
}

static int read_tokens(crust_noise_hs *hs, const uint8_t *msg, size_t len, uint8_t *payload,
                       size_t *payload_len)
{
    const uint8_t *tok = PATTERNS[hs->pattern].msgs[hs->index];
    size_t pos = 0, n, got;
    int rc = 0;
    for (int i = 0; !rc && i < MAX_TOKENS && tok[i] != T_END; i++) {
        switch (tok[i]) {
        case T_E:
            if (len - pos < CRUST_NOISE_DHLEN)
                return CRUST_NOISE_ESHORT;
            /* The wire bytes are hashed as they came; masked, the key
             * for DH is what they decode to (any 32 bytes decode; a
             * low-order result fails the DH's all-zero check). */
            if (hs->masked)
                crust_elligator_map(hs->re, msg + pos);
            else
                memcpy(hs->re, msg + pos, CRUST_NOISE_DHLEN);
            hs->has_re = 1;
            rc = mix_hash(hs, msg + pos, CRUST_NOISE_DHLEN);
            pos += CRUST_NOISE_DHLEN;
            break;
        case T_S:
            n = CRUST_NOISE_DHLEN + (hs->cs.has_key ? CRUST_NOISE_TAGLEN : 0);
            if (len - pos < n)
                return CRUST_NOISE_ESHORT;
            rc = decrypt_and_hash(hs, msg + pos, n, hs->rs, &got);
            if (!rc)
                hs->has_rs = 1;
            pos += n;
            break;
        default:
            rc = dh_token(hs, tok[i]);
        }
    }
    if (rc)
        return rc;
    if (hs->cs.has_key && len - pos < CRUST_NOISE_TAGLEN)
        return CRUST_NOISE_ESHORT;
    rc = decrypt_and_hash(hs, msg + pos, len - pos, payload, payload_len);
    if (!rc)
        rc = advance(hs);
    return rc;
}

int crust_noise_read(crust_noise_hs *hs, const uint8_t *msg, size_t len, uint8_t *payload,
                     size_t cap, size_t *payload_len)
{
    if (crust_noise_complete(hs) || crust_noise_my_turn(hs))
        return CRUST_NOISE_ESTATE;
    if (len > CRUST_NOISE_MAX_MESSAGE)
        return CRUST_NOISE_ETOOBIG;
    /* The payload is never longer than the message. */
    if (cap < len)
        return CRUST_NOISE_EBUFFER;
    crust_noise_hs work = *hs;
    int rc = read_tokens(&work, msg, len, payload, payload_len);
    if (!rc)
        *hs = work;
    crust_noise_wipe(&work, sizeof work);
    return rc;
}
