/*
 * test_header_mask.c - the ChaCha20 block (chacha20.h) and the masked short
 * header (header_mask.h).
 *
 * Known answers:
 * - RFC 8439, section 2.3.2 (a block at counter 1) and appendix A.1's
 *   first vector (all-zero key and nonce, counter 0).
 * - RFC 9001, appendix A.5 (ChaCha20-Poly1305 short header), adapted: the
 *   same header-protection key and the same 16 sample bytes, so
 *   m[0..5) is the RFC's mask aefefe7d03 and the packet number 00bff4
 *   masks to the RFC's fe4189. What differs: our header has an 8-byte
 *   connection id where the RFC's has none (RFC 9000's example id
 *   8394c8f03e515708 here), so the sample sits at offset 13, not 5; the
 *   whole flags byte is masked (0x42 becomes 0xec, not QUIC's 0x4c, which
 *   masks the low 5 bits only); the id is masked with m[5..13), which the
 *   RFC does not give: those 8 bytes were computed with OpenSSL's ChaCha20
 *   (Python's cryptography package), an implementation independent of
 *   this one. The bytes after the header are the RFC's ciphertext, which
 *   would not open under our longer AAD: this vector checks the mask only.
 *   tests/unit/test_header_mask.py repeats the comparison with OpenSSL on
 *   random keys and packets, and seals and opens with the real AEAD.
 *
 * Properties, on packets drawn from a fixed-seed stream (test_rng.h):
 * round trips for every packet-number length; mask and unmask inverse
 * bijections on arbitrary bytes; every flipped bit of header and sample
 * unmasks without a crash, the id changing exactly as the design says;
 * packets shorter than 29 bytes refused untouched (each in a buffer of
 * exactly its length, so the sanitizer build catches an over-read); the
 * masked bytes of one connection's consecutive packets uniform per bit,
 * where the plain ones are not.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "chacha20.h"
#include "check.h"
#include "header_mask.h"
#include "test_rng.h"

static void hex(uint8_t *out, const char *h, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned v;
        sscanf(h + 2 * i, "%2x", &v);
        out[i] = (uint8_t)v;
    }
}

/* RFC 8439 section 2.3.2, then appendix A.1 #1. */
static const struct {
    const char *key, *nonce;
    uint32_t counter;
    const char *block;
} chacha20_kat[] = {
    {"000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
     "000000090000004a00000000", 1,
     "10f1e7e4d13b5915500fdd1fa32071c4c7d1f4c733c068030422aa9ac3d46c4e"
     "d2826446079faa0914c2d705d98b02a2b5129cd1de164eb9cbd083e8a2503c4e"},
    {"0000000000000000000000000000000000000000000000000000000000000000",
     "000000000000000000000000", 0,
     "76b8e0ada0f13d90405d6ae55386bd28bdd219b8a08ded1aa836efcc8b770dc7"
     "da41597c5157488d7724e03fb8d84a376a43b8f41518a11cc387b669b2ee6586"},
};

static void test_chacha20_vectors(void)
{
    for (size_t i = 0; i < sizeof chacha20_kat / sizeof chacha20_kat[0]; i++) {
        uint8_t key[32], nonce[12], out[64], want[64];
        hex(key, chacha20_kat[i].key, 32);
        hex(nonce, chacha20_kat[i].nonce, 12);
        hex(want, chacha20_kat[i].block, 64);
        crust_chacha20_block(out, key, chacha20_kat[i].counter, nonce);
        CHECK(memcmp(out, want, 64) == 0);
    }
}

/* The RFC 9001 A.5 header-protection key and sample. */
#define A5_HP "25a282b9e82f06f21f488917a4fc8f1b73573685608597d0efcb076b0ab7a7a4"
#define A5_SAMPLE "5e5cd55c41f69080575d7999c25a5bfb"

static void test_rfc9001_a5(void)
{
    uint8_t hp[32], m[64];
    hex(hp, A5_HP, 32);
    /* The RFC's mask: counter = 5e5cd55c little-endian, nonce the rest. */
    uint8_t nonce[12];
    hex(nonce, &A5_SAMPLE[8], 12); /* the sample's last 12 bytes, in hex */
    crust_chacha20_block(m, hp, 0x5cd55c5eu, nonce);
    uint8_t rfc_mask[5];
    hex(rfc_mask, "aefefe7d03", 5);
    CHECK(memcmp(m, rfc_mask, 5) == 0);

    /* flags 0x42 (fixed bit, pn length 3), the id, pn 00bff4, the RFC's
     * first ciphertext byte 0x65, then the sample: 29 bytes, the minimum. */
    uint8_t pkt[29], plain[29], want[29];
    hex(plain, "42" "8394c8f03e515708" "00bff4" "65" A5_SAMPLE, 29);
    hex(want, "ec" "673baa7e8a640303" "fe4189" "65" A5_SAMPLE, 29);
    memcpy(pkt, plain, sizeof pkt);
    CHECK(crust_header_mask(hp, pkt, sizeof pkt) == CRUST_OK);
    CHECK(memcmp(pkt, want, sizeof pkt) == 0);
    uint8_t cid[CRUST_CID_LEN];
    CHECK(crust_header_unmask(hp, pkt, sizeof pkt, cid) == 3);
    CHECK(memcmp(pkt, plain, sizeof pkt) == 0);
    CHECK(memcmp(cid, plain + 1, CRUST_CID_LEN) == 0);
}

/* A plain short-header packet: flags (fixed bit, a random key phase,
 * pnlen), a random id and packet number, random bytes standing for the
 * AEAD's output. */
static void plain_packet(uint8_t *pkt, size_t len, unsigned pnlen)
{
    fill(pkt, len);
    pkt[0] = (uint8_t)(0x40 | (pkt[0] & 0x04) | (pnlen - 1));
}

static void test_round_trip(void)
{
    uint8_t key[32], pkt[1500], orig[1500], cid[CRUST_CID_LEN];
    for (unsigned pnlen = 1; pnlen <= 4; pnlen++) {
        for (int n = 0; n < 2000; n++) {
            fill(key, sizeof key);
            uint8_t r[2];
            fill(r, 2);
            size_t len = CRUST_HM_MIN_PACKET + ((size_t)(r[0] | r[1] << 8) % (1500 - 28));
            plain_packet(orig, len, pnlen);
            memcpy(pkt, orig, len);
            CHECK(crust_header_mask(key, pkt, len) == CRUST_OK);
            /* Only the flags, the id and the pn bytes may change. */
            CHECK(memcmp(pkt + CRUST_HM_PN_OFFSET + pnlen, orig + CRUST_HM_PN_OFFSET + pnlen,
                         len - CRUST_HM_PN_OFFSET - pnlen) == 0);
            memset(cid, 0, sizeof cid);
            CHECK(crust_header_unmask(key, pkt, len, cid) == (int)pnlen);
            CHECK(memcmp(pkt, orig, len) == 0);
            CHECK(memcmp(cid, orig + 1, CRUST_CID_LEN) == 0);
        }
    }
}

/* Arbitrary bytes (not packets at all): unmask then mask, and mask then
 * unmask, give them back - what lets a receiver whose lookup misses restore
 * the datagram for the handshake. A NULL cid is allowed. */
static void test_bijection(void)
{
    uint8_t key[32], pkt[64], orig[64];
    for (int n = 0; n < 20000; n++) {
        fill(key, sizeof key);
        size_t len = CRUST_HM_MIN_PACKET + (size_t)(n % (64 - 28));
        fill(orig, len);
        memcpy(pkt, orig, len);
        int pnlen = crust_header_unmask(key, pkt, len, NULL);
        CHECK(pnlen >= 1 && pnlen <= 4);
        CHECK(crust_header_mask(key, pkt, len) == CRUST_OK);
        CHECK(memcmp(pkt, orig, len) == 0);
        CHECK(crust_header_mask(key, pkt, len) == CRUST_OK);
        CHECK(crust_header_unmask(key, pkt, len, NULL) >= 1);
        CHECK(memcmp(pkt, orig, len) == 0);
    }
}

static int bits_differ(const uint8_t *a, const uint8_t *b, size_t n)
{
    int d = 0;
    for (size_t i = 0; i < n; i++)
        d += __builtin_popcount((unsigned)(a[i] ^ b[i]));
    return d;
}

/* Every bit of the header and the sample (and a few beyond), flipped in
 * a masked packet: unmask always succeeds (it cannot tell), and
 * - a bit of the id flips that bit of the unmasked id, nothing else;
 * - a bit of the sample changes the whole mask: the id comes out another
 *   (each of its 64 bits flips with probability 1/2; all 64 staying put
 *   would be a 2^-64 event), so the lookup misses;
 * - a bit of the flags or the packet number leaves the id as it was and
 *   changes the unmasked flags or packet number, which the AEAD (header as
 *   AAD, pn in the nonce) refuses; tests/unit/test_header_mask.py opens
 *   such packets with the real AEAD;
 * - a bit past the sample changes no header byte (the AEAD refuses it). */
static void test_flipped_bits(void)
{
    uint8_t key[32], orig[48], masked[48], pkt[48], cid[CRUST_CID_LEN];
    const size_t len = sizeof orig;
    long sample_id_bits = 0, sample_flips = 0;
    for (unsigned pnlen = 1; pnlen <= 4; pnlen++) {
        for (int n = 0; n < 50; n++) {
            fill(key, sizeof key);
            plain_packet(orig, len, pnlen);
            memcpy(masked, orig, len);
            CHECK(crust_header_mask(key, masked, len) == CRUST_OK);
            for (size_t bit = 0; bit < 8 * len; bit++) {
                size_t at = bit / 8;
                memcpy(pkt, masked, len);
                pkt[at] ^= (uint8_t)(1u << (bit % 8));
                int got = crust_header_unmask(key, pkt, len, cid);
                CHECK(got >= 1 && got <= 4);
                int id_diff = bits_differ(cid, orig + 1, CRUST_CID_LEN);
                if (at >= 1 && at < CRUST_HM_PN_OFFSET) {
                    CHECK(id_diff == 1);
                    CHECK(pkt[at] == (orig[at] ^ (uint8_t)(1u << (bit % 8))));
                    CHECK(got == (int)pnlen);
                } else if (at >= CRUST_HM_SAMPLE_OFFSET && at < CRUST_HM_MIN_PACKET) {
                    CHECK(id_diff > 0);
                    sample_id_bits += id_diff;
                    sample_flips++;
                } else if (at == 0 || at < CRUST_HM_PN_OFFSET + pnlen) {
                    CHECK(id_diff == 0);
                    CHECK(memcmp(pkt, orig, CRUST_HM_PN_OFFSET + pnlen) != 0);
                } else {
                    /* ciphertext before the sample (pnlen < 4) or after it */
                    CHECK(got == (int)pnlen);
                    CHECK(memcmp(pkt, orig, at) == 0);
                    CHECK(memcmp(pkt + at + 1, orig + at + 1, len - at - 1) == 0);
                }
            }
        }
    }
    /* A sample flip scrambles the id: about 32 of its 64 bits change. */
    double mean = (double)sample_id_bits / (double)sample_flips;
    printf("sample bit flips: %ld, mean id bits changed %.2f (32 expected)\n", sample_flips, mean);
    CHECK(fabs(mean - 32.0) < 0.5);
}

/* Shorter than 29 bytes: refused, untouched; each length in a heap buffer
 * of exactly that size, so ASan reports a read past the end. */
static void test_too_short(void)
{
    uint8_t key[32], cid[CRUST_CID_LEN], before[CRUST_HM_MIN_PACKET];
    fill(key, sizeof key);
    for (size_t len = 0; len <= CRUST_HM_MIN_PACKET; len++) {
        uint8_t *pkt = malloc(len ? len : 1);
        fill(pkt, len);
        memcpy(before, pkt, len);
        memset(cid, 0xa5, sizeof cid);
        int m = crust_header_mask(key, pkt, len);
        int u = crust_header_unmask(key, pkt, len, cid);
        if (len < CRUST_HM_MIN_PACKET) {
            CHECK(m == CRUST_EMALFORMED);
            CHECK(u == CRUST_EMALFORMED);
            CHECK(memcmp(pkt, before, len) == 0);
            CHECK(cid[0] == 0xa5 && cid[CRUST_CID_LEN - 1] == 0xa5);
        } else {
            CHECK(m == CRUST_OK);
            CHECK(u >= 1 && u <= 4);
            CHECK(memcmp(pkt, before, len) == 0);
        }
        free(pkt);
    }
    uint8_t pkt[CRUST_HM_MIN_PACKET] = {0};
    CHECK(crust_header_mask(NULL, pkt, sizeof pkt) == CRUST_EINVAL);
    CHECK(crust_header_mask(key, NULL, sizeof pkt) == CRUST_EINVAL);
    CHECK(crust_header_unmask(NULL, pkt, sizeof pkt, cid) == CRUST_EINVAL);
    CHECK(crust_header_unmask(key, NULL, sizeof pkt, cid) == CRUST_EINVAL);
}

/* The largest |frequency of 1 - 1/2| over the 104 bits of the first 13
 * bytes of n packets (or of the XOR of consecutive ones). */
static double worst_bit(uint8_t (*hdr)[CRUST_HM_MASKED_MAX], int n, int delta)
{
    double worst = 0;
    for (unsigned bit = 0; bit < 8 * CRUST_HM_MASKED_MAX; bit++) {
        long ones = 0;
        for (int i = delta; i < n; i++) {
            uint8_t b = hdr[i][bit / 8];
            if (delta)
                b ^= hdr[i - 1][bit / 8];
            ones += (b >> (bit % 8)) & 1;
        }
        double f = fabs((double)ones / (n - delta) - 0.5);
        if (f > worst)
            worst = f;
    }
    return worst;
}

/* One connection: one id, consecutive packet numbers in 2 bytes (as crust
 * sends them), random ciphertext. Masked, each of the 104 header bits is 1
 * half the time, alone and XORed with the previous packet's (which an
 * incrementing pn would fail); the bound 6.3 * 0.5 / sqrt(n) is what a
 * uniform source passes but with probability ~1e-6. The plain headers
 * fail it: the test has power. */
#define DIST_N 20000
static uint8_t dist_plain[DIST_N][CRUST_HM_MASKED_MAX], dist_masked[DIST_N][CRUST_HM_MASKED_MAX];

static void test_distribution(void)
{
    uint8_t key[32], cid[CRUST_CID_LEN], pkt[64];
    fill(key, sizeof key);
    fill(cid, sizeof cid);
    unsigned long distinct_ids = 0;
    for (int i = 0; i < DIST_N; i++) {
        uint16_t pn = (uint16_t)(1000 + i);
        fill(pkt, sizeof pkt);
        pkt[0] = 0x40 | 1;
        memcpy(pkt + 1, cid, sizeof cid);
        pkt[CRUST_HM_PN_OFFSET] = (uint8_t)(pn >> 8);
        pkt[CRUST_HM_PN_OFFSET + 1] = (uint8_t)pn;
        memcpy(dist_plain[i], pkt, CRUST_HM_MASKED_MAX);
        CHECK(crust_header_mask(key, pkt, sizeof pkt) == CRUST_OK);
        memcpy(dist_masked[i], pkt, CRUST_HM_MASKED_MAX);
        if (i && memcmp(dist_masked[i] + 1, dist_masked[i - 1] + 1, CRUST_CID_LEN) != 0)
            distinct_ids++;
    }
    double bound = 6.3 * 0.5 / sqrt((double)DIST_N);
    double masked = worst_bit(dist_masked, DIST_N, 0);
    double masked_delta = worst_bit(dist_masked, DIST_N, 1);
    double plain = worst_bit(dist_plain, DIST_N, 0);
    double plain_delta = worst_bit(dist_plain, DIST_N, 1);
    printf("worst bit |f - 1/2| (bound %.4f): masked %.4f, consecutive xor %.4f; "
           "plain %.4f, %.4f\n",
           bound, masked, masked_delta, plain, plain_delta);
    CHECK(masked < bound);
    CHECK(masked_delta < bound);
    CHECK(plain > bound);       /* fixed flags and id bits */
    CHECK(plain_delta > bound); /* the pn's low bit flips on every packet */
    CHECK(distinct_ids == DIST_N - 1);
}

int main(void)
{
    test_chacha20_vectors();
    test_rfc9001_a5();
    test_round_trip();
    test_bijection();
    test_flipped_bits();
    test_too_short();
    test_distribution();
    return check_summary();
}
