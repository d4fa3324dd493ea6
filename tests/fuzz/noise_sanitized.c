/*
 * noise_sanitized.c - csrc/noise.c under AddressSanitizer and UBSan, with
 * the real libsodium: PyNaCl's module is dlopen()ed (it exports libsodium's
 * symbols) and its functions handed to crust_noise_use_sodium, as
 * crust/_sodium.py does through cffi.
 *
 *     noise_sanitized PATH/TO/nacl/_sodium.abi3.so HANDSHAKES SEED
 *
 * Runs XX and IK handshakes, plain and with masked ephemerals (Elligator
 * representatives on the wire, docs/design/0082), with random keys and
 * payloads; before each
 * genuine message the reader gets hostile copies of it (truncated,
 * extended, one bit flipped, random bytes), each read from a copy that
 * ends at a PROT_NONE page into a buffer of exactly the size
 * crust_noise_read is promised, ending at another: an overrun faults even
 * inside libsodium, which ASan does not instrument. A refused read must leave the state byte for byte as it was;
 * an accepted one may only be XX's first message (it carries no MAC) or
 * the genuine bytes. Both sides must end with the same keys and hash; a
 * masked "e" field must be the representative crust_elligator_key_pair
 * gives for the writer's key, and decode to the key the reader uses.
 * tests/engine/test_noise_sanitized.py builds and runs it.
 */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "elligator.h"
#include "noise.h"

#define CHECK(cond)                                                               \
    do {                                                                          \
        if (!(cond)) {                                                            \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
            abort();                                                              \
        }                                                                         \
    } while (0)

static void *sym(void *lib, const char *name)
{
    void *p = dlsym(lib, name);
    if (!p) {
        fprintf(stderr, "libsodium symbol %s not found\n", name);
        exit(2);
    }
    return p;
}

static uint64_t rng_state;

static uint32_t rnd(void)
{
    /* xorshift64*: reproducible from the seed on the command line. */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return (uint32_t)((rng_state * 0x2545F4914F6CDD1DULL) >> 32);
}

static void fill(uint8_t *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        b[i] = (uint8_t)rnd();
}

/* A buffer of n bytes that ends where a PROT_NONE page begins: libsodium
 * is not instrumented, so ASan cannot see its reads and writes, but any
 * access past the end faults. Two such areas (message in, payload out). */
#define AREA 8192
static uint8_t *guarded[2];

static uint8_t *tail_of(int which, size_t n)
{
    if (!guarded[which]) {
        long page = sysconf(_SC_PAGESIZE);
        uint8_t *p = mmap(NULL, AREA + (size_t)page, PROT_READ | PROT_WRITE,
                          MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        CHECK(p != MAP_FAILED);
        CHECK(mprotect(p + AREA, (size_t)page, PROT_NONE) == 0);
        guarded[which] = p;
    }
    CHECK(n <= AREA);
    return guarded[which] + AREA - n;
}

/* Read msg (len bytes) from a copy that ends at a guard page into a
 * buffer of exactly len bytes that ends at another. */
static int read_exact(crust_noise_hs *hs, const uint8_t *msg, size_t len, uint8_t *copy_out,
                      size_t *got)
{
    uint8_t *in = tail_of(0, len), *out = tail_of(1, len);
    if (len)
        memcpy(in, msg, len);
    int rc = crust_noise_read(hs, in, len, out, len, got);
    if (rc == 0 && copy_out)
        memcpy(copy_out, out, *got);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: %s SODIUM_SO HANDSHAKES SEED\n", argv[0]);
        return 2;
    }
    /* Lazy: the module's Python symbols stay unresolved; only libsodium's
     * own functions are called. */
    void *lib = dlopen(argv[1], RTLD_LAZY | RTLD_LOCAL);
    if (!lib) {
        fprintf(stderr, "%s\n", dlerror());
        return 2;
    }
    CHECK(((int (*)(void))sym(lib, "sodium_init"))() >= 0);
    crust_noise_sodium fns = {
        .scalarmult = (crust_noise_scalarmult_fn)sym(lib, "crypto_scalarmult"),
        .scalarmult_base = (crust_noise_scalarmult_base_fn)sym(lib, "crypto_scalarmult_base"),
        .b2b_init = (crust_noise_b2b_init_fn)sym(lib, "crypto_generichash_blake2b_init_salt_personal"),
        .b2b_update = (crust_noise_b2b_update_fn)sym(lib, "crypto_generichash_blake2b_update"),
        .b2b_final = (crust_noise_b2b_final_fn)sym(lib, "crypto_generichash_blake2b_final"),
        .seal = (crust_noise_seal_fn)sym(lib, "crypto_aead_chacha20poly1305_ietf_encrypt"),
        .open = (crust_noise_open_fn)sym(lib, "crypto_aead_chacha20poly1305_ietf_decrypt"),
        .b2b_statebytes = ((size_t (*)(void))sym(lib, "crypto_generichash_statebytes"))(),
    };
    CHECK(crust_noise_use_sodium(&fns) == 0);
    int handshakes = atoi(argv[2]);
    rng_state = strtoull(argv[3], NULL, 10) | 1;

    static uint8_t msgs[3][1024], buf[1200], payload[256], got_payload[1024];
    long refused = 0, accepted = 0, redrawn = 0;
    for (int it = 0; it < handshakes; it++) {
        crust_noise_pattern pat = (it & 1) ? CRUST_NOISE_IK : CRUST_NOISE_XX;
        int masked = (it & 2) != 0;
        uint8_t si[32], sr[32], ei[32], er[32], sr_pub[32], prologue[40];
        size_t plen = rnd() % sizeof prologue;
        fill(si, 32), fill(sr, 32), fill(ei, 32), fill(er, 32), fill(prologue, plen);
        CHECK(crust_noise_public_key(sr_pub, sr) == 0);
        crust_noise_hs a, b;
        const uint8_t *rs = pat == CRUST_NOISE_IK ? sr_pub : NULL;
        if (masked) {
            CHECK(crust_noise_init_masked(&a, pat, 1, prologue, plen, si, NULL, rs, ei,
                                          (uint8_t)rnd()) == 0);
            CHECK(crust_noise_init_masked(&b, pat, 0, prologue, plen, sr, sr_pub, NULL, er,
                                          (uint8_t)rnd()) == 0);
        } else {
            CHECK(crust_noise_init(&a, pat, 1, prologue, plen, si, NULL, rs, ei) == 0);
            CHECK(crust_noise_init(&b, pat, 0, prologue, plen, sr, sr_pub, NULL, er) == 0);
        }
        crust_noise_hs *w = &a, *r = &b;
        for (int n = 0; !crust_noise_complete(&a); n++) {
            size_t pl = rnd() % sizeof payload, len, got;
            fill(payload, pl);
            size_t need = crust_noise_write_len(w, pl);
            /* One byte short is refused, and refused without a trace. */
            crust_noise_hs saved = *w;
            CHECK(crust_noise_write(w, payload, pl, msgs[n], need - 1, &len) == CRUST_NOISE_EBUFFER);
            CHECK(memcmp(&saved, w, sizeof saved) == 0);
            int rc;
            /* Masked: a key without a representative is refused without a
             * trace, and another one installed, until one has. */
            while ((rc = crust_noise_write(w, payload, pl, msgs[n], need, &len)) ==
                   CRUST_NOISE_ENOREP) {
                CHECK(masked && memcmp(&saved, w, sizeof saved) == 0);
                uint8_t e[32];
                fill(e, 32);
                CHECK(crust_noise_set_ephemeral(w, e, (uint8_t)rnd()) == 0);
                saved = *w;
                redrawn++;
            }
            CHECK(rc == 0 && len == need);
            int has_e = n < 2; /* XX and IK: "e" in the first two messages */
            if (masked && has_e) {
                uint8_t rep[32], pub[32], u[32];
                CHECK(crust_elligator_key_pair(rep, pub, w->e, w->tweak,
                                               fns.scalarmult_base) == 0);
                CHECK(memcmp(rep, msgs[n], 32) == 0 && memcmp(pub, w->e_pub, 32) == 0);
                crust_elligator_map(u, msgs[n]);
                CHECK(memcmp(u, w->e_pub, 32) == 0);
                CHECK(crust_noise_set_ephemeral(w, w->e, 0) == CRUST_NOISE_ESTATE);
            } else if (has_e) {
                CHECK(memcmp(msgs[n], w->e_pub, 32) == 0);
            }
            CHECK(!crust_noise_my_turn(r) && !crust_noise_complete(r)); /* r must read now */
            for (int k = 0; k < 24; k++) {
                size_t blen = len;
                memcpy(buf, msgs[n], len);
                switch (k % 4) {
                case 0: blen = rnd() % (len + 1); break;
                case 1: blen += 1 + rnd() % 100; fill(buf + len, blen - len); break;
                case 2: buf[rnd() % len] ^= (uint8_t)(1u << (rnd() % 8)); break;
                default: blen = rnd() % sizeof buf; fill(buf, blen); break;
                }
                crust_noise_hs before = *r;
                if (read_exact(r, buf, blen, NULL, &got) == 0) {
                    int genuine = blen == len && memcmp(buf, msgs[n], len) == 0;
                    CHECK(genuine || (pat == CRUST_NOISE_XX && n == 0));
                    *r = before;
                    accepted++;
                } else {
                    CHECK(memcmp(&before, r, sizeof before) == 0);
                    refused++;
                }
            }
            CHECK(read_exact(r, msgs[n], len, got_payload, &got) == 0);
            CHECK(got == pl && memcmp(got_payload, payload, pl) == 0);
            if (has_e)
                CHECK(memcmp(r->re, w->e_pub, 32) == 0);
            crust_noise_hs *t = w;
            w = r;
            r = t;
        }
        CHECK(crust_noise_complete(&b));
        CHECK(memcmp(a.k1, b.k1, 32) == 0 && memcmp(a.k2, b.k2, 32) == 0);
        CHECK(memcmp(a.h, b.h, 64) == 0);
        CHECK(memcmp(a.rs, sr_pub, 32) == 0);
        crust_noise_wipe(&a, sizeof a);
        crust_noise_wipe(&b, sizeof b);
    }
    printf("noise_sanitized: %d handshakes, %ld hostile reads refused, %ld accepted, "
           "%ld masked ephemeral keys redrawn\n",
           handshakes, refused, accepted, redrawn);
    dlclose(lib);
    return 0;
}
