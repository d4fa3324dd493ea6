/* chacha20.c - the ChaCha20 block function; see chacha20.h. */
#include "chacha20.h"

static uint32_t load32_le(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void store32_le(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

#define ROTL(v, n) (((v) << (n)) | ((v) >> (32 - (n))))

/* The quarter round of RFC 8439, section 2.1, on four local variables: a
 * function taking the state as an array (x[a] += x[b], ...) kept it in
 * memory under gcc -O2 and ran 2.7 times slower (docs/design/0083). */
#define QUARTER(a, b, c, d)   \
    do {                      \
        a += b;               \
        d = ROTL(d ^ a, 16);  \
        c += d;               \
        b = ROTL(b ^ c, 12);  \
        a += b;               \
        d = ROTL(d ^ a, 8);   \
        c += d;               \
        b = ROTL(b ^ c, 7);   \
    } while (0)

void crust_chacha20_block(uint8_t out[CRUST_CHACHA20_BLOCK_LEN],
                          const uint8_t key[CRUST_CHACHA20_KEY_LEN], uint32_t counter,
                          const uint8_t nonce[CRUST_CHACHA20_NONCE_LEN])
{
    uint32_t s[16];
    /* "expand 32-byte k" */
    s[0] = 0x61707865u;
    s[1] = 0x3320646eu;
    s[2] = 0x79622d32u;
    s[3] = 0x6b206574u;
    for (unsigned i = 0; i < 8; i++)
        s[4 + i] = load32_le(key + 4 * i);
    s[12] = counter;
    for (unsigned i = 0; i < 3; i++)
        s[13 + i] = load32_le(nonce + 4 * i);
    uint32_t x0 = s[0], x1 = s[1], x2 = s[2], x3 = s[3], x4 = s[4], x5 = s[5], x6 = s[6],
             x7 = s[7], x8 = s[8], x9 = s[9], x10 = s[10], x11 = s[11], x12 = s[12],
             x13 = s[13], x14 = s[14], x15 = s[15];
    for (unsigned i = 0; i < 10; i++) { /* 20 rounds: a column and a diagonal round each */
        QUARTER(x0, x4, x8, x12);
        QUARTER(x1, x5, x9, x13);
        QUARTER(x2, x6, x10, x14);
        QUARTER(x3, x7, x11, x15);
        QUARTER(x0, x5, x10, x15);
        QUARTER(x1, x6, x11, x12);
        QUARTER(x2, x7, x8, x13);
        QUARTER(x3, x4, x9, x14);
    }
    const uint32_t x[16] = {x0, x1, x2, x3, x4, x5, x6, x7, x8, x9, x10, x11, x12, x13, x14, x15};
    for (unsigned i = 0; i < 16; i++)
        store32_le(out + 4 * i, x[i] + s[i]);
}
