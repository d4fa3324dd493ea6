/*
 * fuzz_common.h - shared by the libFuzzer targets in tests/fuzz/: the peer's
 * side of a connection under test (keys, sealing valid packets, opening the
 * engine's packets) and the engine invariants that must hold after every
 * step, whatever the input. A broken invariant aborts, which libFuzzer
 * reports as a crash with the input that caused it.
 *
 * The targets include the engine's internal headers on purpose: invariants
 * such as "bytes in flight equals the sum over the sent-packet ring" can
 * only be checked from inside.
 */
#ifndef CRUST_FUZZ_COMMON_H
#define CRUST_FUZZ_COMMON_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "aead.h"
#include "conn.h"
#include "frame.h"

#define FUZZ_ASSERT(cond)                                                           \
    do {                                                                            \
        if (!(cond)) {                                                              \
            fprintf(stderr, "%s:%d: invariant broken: %s\n", __FILE__, __LINE__, #cond); \
            abort();                                                                \
        }                                                                           \
    } while (0)

static const uint8_t FUZZ_CID_US[CRUST_CID_LEN] = {0xc1, 0xc1, 0xc1, 0xc1, 0xc1, 0xc1, 0xc1, 0xc1};
static const uint8_t FUZZ_CID_PEER[CRUST_CID_LEN] = {0xd2, 0xd2, 0xd2, 0xd2,
                                                     0xd2, 0xd2, 0xd2, 0xd2};

static inline uint64_t fuzz_mix(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

/* Null-AEAD keys of generation gen for one direction (0: peer -> engine,
 * 1: engine -> peer), from a toy ratchet both sides apply alike. */
static inline void fuzz_keys(unsigned dir, uint64_t gen, crust_keys *k)
{
    memset(k, 0, sizeof *k);
    for (int i = 0; i < 4; i++) {
        uint64_t w = fuzz_mix(gen * 8 + (uint64_t)i + dir * 1000);
        memcpy(k->key + 8 * i, &w, 8);
    }
    uint64_t v = fuzz_mix(gen ^ 0x6976 ^ dir), v2 = fuzz_mix(v);
    memcpy(k->iv, &v, 8);
    memcpy(k->iv + 8, &v2, 4);
    k->aead = CRUST_AEAD_NULL;
    k->valid = 1;
}

/* Install generation gen into slot gen & 1 of the engine. */
static inline void fuzz_install(crust_conn *c, uint64_t gen)
{
    crust_keys tx, rx;
    fuzz_keys(1, gen, &tx);
    fuzz_keys(0, gen, &rx);
    FUZZ_ASSERT(crust_conn_set_keys(c, (unsigned)(gen & 1), CRUST_AEAD_NULL, tx.key, tx.iv, rx.key,
                                    rx.iv) == CRUST_OK);
}

/* An embedder's allocator for large messages (crust_conn_set_msg_alloc),
 * counting live buffers so a leak or double free trips an assertion. */
static long fuzz_live_buffers;
static inline uint8_t *fuzz_alloc(void *ctx, uint64_t len, void **handle)
{
    (void)ctx;
    uint8_t *p = malloc((size_t)len);
    if (p)
        fuzz_live_buffers++;
    *handle = p;
    return p;
}
static inline void fuzz_free(void *ctx, void *handle)
{
    (void)ctx;
    FUZZ_ASSERT(handle != NULL && fuzz_live_buffers > 0);
    fuzz_live_buffers--;
    free(handle);
}

/* A connection as after a handshake: generations 0 and 1 installed. */
static inline crust_conn *fuzz_new_conn(const crust_config *cfg, uint64_t now)
{
    crust_conn *c = crust_conn_new(cfg, FUZZ_CID_US, FUZZ_CID_PEER, now);
    FUZZ_ASSERT(c != NULL);
    fuzz_install(c, 0);
    fuzz_install(c, 1);
    return c;
}

/* Seal plaintext frames into a valid packet to the engine: 4-byte packet
 * number, key phase gen & 1. Returns the packet length (0 if too long). */
static inline size_t fuzz_seal(uint8_t *out, size_t cap, uint64_t gen, uint64_t pn, const uint8_t *frames,
                        size_t len)
{
    size_t hdr = 1 + CRUST_CID_LEN + 4;
    if (len > CRUST_MAX_PACKET || hdr + len + CRUST_TAG_LEN > cap)
        return 0;
    out[0] = (uint8_t)(0x40 | ((gen & 1) ? 0x04 : 0) | 3);
    memcpy(out + 1, FUZZ_CID_US, CRUST_CID_LEN);
    for (int i = 0; i < 4; i++)
        out[1 + CRUST_CID_LEN + i] = (uint8_t)(pn >> (8 * (3 - i)));
    crust_keys k;
    fuzz_keys(0, gen, &k);
    memmove(out + hdr, frames, len);
    FUZZ_ASSERT(crust_aead_seal(&k, pn, out + hdr, out + hdr, len, out, hdr) == CRUST_OK);
    return hdr + len + CRUST_TAG_LEN;
}

/* The engine's invariants: accounting that must never drift whatever the
 * peer sends. */
static inline void fuzz_check_invariants(const crust_conn *c)
{
    /* Sent-packet ring and in-flight accounting (recovery.c). */
    const crust_rec *rec = &c->rec;
    FUZZ_ASSERT(rec->sent_lo <= rec->next_pn);
    FUZZ_ASSERT(rec->next_pn - rec->sent_lo <= rec->sent_cap);
    uint64_t in_flight = 0, eliciting = 0;
    for (uint64_t pn = rec->sent_lo; pn < rec->next_pn; pn++) {
        const crust_sent_pkt *p = &rec->sent[pn & (rec->sent_cap - 1)];
        if (p->done)
            continue;
        if (p->flags & SP_IN_FLIGHT)
            in_flight += p->size;
        if (p->flags & SP_ACK_ELICITING)
            eliciting++;
        FUZZ_ASSERT(p->nframes <= CRUST_MAX_SFRAMES);
    }
    FUZZ_ASSERT(in_flight == rec->bytes_in_flight);
    FUZZ_ASSERT(eliciting == rec->ack_eliciting_in_flight);
    FUZZ_ASSERT(rec->largest_acked_plus1 <= rec->next_pn);

    /* Streams and flow control. */
    uint64_t rx_hi = 0, held = 0, tx_hi = 0;
    for (unsigned p = 0; p < CRUST_NUM_PRIO; p++) {
        const crust_recv_stream *r = &c->rs[p];
        FUZZ_ASSERT(r->read <= r->contig && r->contig <= r->hi);
        /* The ring holds the contiguous bytes but a body kept outside;
         * out-of-order bytes sit in chunks inside the tracked ranges, which
         * hold at most twice their bytes (design 0040). */
        uint64_t in_body = 0;
        if (r->dbuf && r->contig > r->dbody)
            in_body = (r->contig < r->dbody + r->dlen ? r->contig : r->dbody + r->dlen) - r->dbody;
        uint64_t span = r->contig - r->read - in_body;
        FUZZ_ASSERT(span <= r->cap || span == 0);
        uint64_t ranged = 0;
        for (uint32_t i = 0; i < r->ooo.n; i++) {
            FUZZ_ASSERT(r->ooo.r[i].lo > r->contig && r->ooo.r[i].hi <= r->hi);
            ranged += r->ooo.r[i].hi - r->ooo.r[i].lo;
        }
        FUZZ_ASSERT(ranged == r->ooo_bytes);
        uint64_t chunked = 0;
        for (uint32_t i = 0; i < r->chunks.n; i++) {
            const crust_chunk *k = &r->chunks.c[i];
            FUZZ_ASSERT(k->len && k->len <= k->cap && k->cap <= 2 * (uint64_t)k->len);
            FUZZ_ASSERT(i == 0 || r->chunks.c[i - 1].lo + r->chunks.c[i - 1].len <= k->lo);
            FUZZ_ASSERT(crust_rs_contains(&r->ooo, k->lo) &&
                        crust_rs_contains(&r->ooo, k->lo + k->len - 1));
            chunked += k->len;
        }
        FUZZ_ASSERT(chunked <= r->ooo_bytes && r->chunks.held <= 2 * r->ooo_bytes);
        rx_hi += r->hi;
        held += r->hi - r->read;
        const crust_send_stream *s = &c->ss[p];
        FUZZ_ASSERT(s->base <= s->sent_hi && s->sent_hi <= s->end);
        FUZZ_ASSERT(s->end - s->base <= s->cap || s->end == s->base);
        if (!crust_rs_empty(&s->lost))
            FUZZ_ASSERT(crust_rs_lowest(&s->lost)->lo >= s->base &&
                        crust_rs_highest(&s->lost)->hi <= s->sent_hi);
        tx_hi += s->sent_hi;
    }
    FUZZ_ASSERT(rx_hi == c->rx_data);
    FUZZ_ASSERT(c->rx_data <= c->rx_max_data);
    FUZZ_ASSERT(held <= c->cfg.recv_window);
    FUZZ_ASSERT(c->rx_max_data - c->rx_consumed <= c->cfg.recv_window);
    if (c->state == ST_OPEN)
        FUZZ_ASSERT(tx_hi == c->tx_data && c->tx_data <= c->tx_max_data);
    crust_stats st;
    crust_conn_get_stats(c, &st);
    FUZZ_ASSERT(st.recv_buffered <= c->cfg.recv_window);
    FUZZ_ASSERT(crust_conn_memory(c) >= sizeof *c);

    /* Keys: we always send with installed keys once we have any, and the
     * "old keys" state implies keys in the other slot. */
    FUZZ_ASSERT(c->tx_phase == (c->key_gen & 1));
    if (c->old_keys)
        FUZZ_ASSERT(c->rx[c->tx_phase ^ 1u].valid);
    FUZZ_ASSERT(c->evq_n <= c->evq_cap);
}

/* Open a datagram the engine sent and check every frame in it parses and
 * every ACK acknowledges only packet numbers below peer_next_pn. Returns
 * the number of frames. */
static inline unsigned fuzz_check_output(const crust_conn *c, const uint8_t *pkt, size_t len,
                                  uint64_t peer_next_pn, uint8_t challenge[8], int *have_challenge)
{
    /* PMTU probes are larger than the current MTU, never than max_mtu.
     * Over a stream there is no MTU: packets fill the caller's buffer. */
    FUZZ_ASSERT(len <= CRUST_MAX_PACKET);
    if (!c->cfg.stream_transport) {
        FUZZ_ASSERT(len <= c->cfg.max_mtu);
        FUZZ_ASSERT(len <= c->mtu || c->pmtu.probe_size == len);
    }
    FUZZ_ASSERT(len >= CRUST_SHORT_HEADER_MIN + CRUST_TAG_LEN);
    FUZZ_ASSERT((pkt[0] & 0xc0) == 0x40);
    FUZZ_ASSERT(memcmp(pkt + 1, FUZZ_CID_PEER, CRUST_CID_LEN) == 0);
    unsigned pnlen = (pkt[0] & 3u) + 1;
    size_t hdr = 1 + CRUST_CID_LEN + pnlen;
    FUZZ_ASSERT(len > hdr + CRUST_TAG_LEN);
    /* The packet was just built: its number is next_pn - 1 and its key
     * generation the current one. */
    uint64_t pn = c->rec.next_pn - 1;
    FUZZ_ASSERT(((pkt[0] & 0x04) != 0) == (c->tx_phase == 1));
    crust_keys k;
    fuzz_keys(1, c->key_gen, &k);
    static uint8_t plain[CRUST_MAX_PACKET];
    FUZZ_ASSERT(crust_aead_open(&k, pn, plain, pkt + hdr, len - hdr, pkt, hdr) == CRUST_OK);
    size_t plen = len - hdr - CRUST_TAG_LEN, off = 0;
    unsigned frames = 0;
    while (off < plen) {
        crust_frame f;
        int n = crust_frame_parse_untrusted(plain + off, plen - off, &f);
        FUZZ_ASSERT(n > 0);
        if (f.type == CRUST_FT_ACK)
            FUZZ_ASSERT(f.ack.largest < peer_next_pn);
        if (f.type == CRUST_FT_STREAM)
            FUZZ_ASSERT(f.stream.off + f.stream.len <= c->ss[f.stream.prio].end ||
                        c->state != ST_OPEN);
        if (f.type == CRUST_FT_PATH_CHALLENGE && challenge) {
            memcpy(challenge, f.path_data, 8);
            *have_challenge = 1;
        }
        off += (size_t)n;
        frames++;
    }
    return frames;
}

#endif
