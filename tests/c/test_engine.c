/*
 * test_engine.c - two engine ends over a tiny in-memory lossy link with a
 * virtual clock: every message arrives exactly once, in order per priority,
 * byte-exact; replayed, corrupted and truncated packets are dropped and
 * counted; close, idle timeout and stale-message drops behave.
 */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "crust.h"

#define MAXQ 65536

typedef struct pkt {
    uint64_t at;
    size_t len;
    uint8_t data[CRUST_MAX_PACKET];
} pkt;

typedef struct link {
    pkt *q;
    size_t n;
    uint64_t delay_us;
    unsigned loss_pct, dup_pct, reorder_pct, corrupt_pct;
    uint64_t busy_until, per_byte_ns; /* bandwidth as ns per byte */
} link;

static uint64_t rng = 88172645463325252ull;
static unsigned rnd(unsigned n)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (unsigned)(rng % n);
}

static void link_push(link *l, uint64_t now, const uint8_t *d, size_t len)
{
    if (rnd(100) < l->loss_pct || l->n >= MAXQ - 2)
        return;
    uint64_t start = now > l->busy_until ? now : l->busy_until;
    l->busy_until = start + (len * l->per_byte_ns) / 1000;
    uint64_t at = l->busy_until + l->delay_us;
    if (rnd(100) < l->reorder_pct)
        at += l->delay_us / 2 + 1;
    int copies = rnd(100) < l->dup_pct ? 2 : 1;
    for (int i = 0; i < copies; i++) {
        pkt *p = &l->q[l->n++];
        p->at = at + (uint64_t)i;
        p->len = len;
        memcpy(p->data, d, len);
        if (rnd(100) < l->corrupt_pct)
            p->data[rnd((unsigned)len)] ^= (uint8_t)(1u << rnd(8));
    }
}

/* Pop the earliest packet due at or before now. */
static int link_pop(link *l, uint64_t now, pkt *out)
{
    size_t best = l->n;
    for (size_t i = 0; i < l->n; i++)
        if (l->q[i].at <= now && (best == l->n || l->q[i].at < l->q[best].at))
            best = i;
    if (best == l->n)
        return 0;
    *out = l->q[best];
    l->q[best] = l->q[--l->n];
    return 1;
}

static uint64_t link_next(const link *l)
{
    uint64_t t = UINT64_MAX;
    for (size_t i = 0; i < l->n; i++)
        if (l->q[i].at < t)
            t = l->q[i].at;
    return t;
}

static void setup(crust_conn **a, crust_conn **b, const crust_config *cfg, crust_aead_id aead)
{
    uint8_t ca[8] = {1, 1, 1, 1, 1, 1, 1, 1}, cb[8] = {2, 2, 2, 2, 2, 2, 2, 2};
    uint8_t k1[32], k2[32], iv1[12], iv2[12];
    memset(k1, 1, 32);
    memset(k2, 2, 32);
    memset(iv1, 3, 12);
    memset(iv2, 4, 12);
    *a = crust_conn_new(cfg, ca, cb, 0);
    *b = crust_conn_new(cfg, cb, ca, 0);
    CHECK(*a && *b);
    CHECK(crust_conn_set_keys(*a, 0, aead, k1, iv1, k2, iv2) == CRUST_OK);
    CHECK(crust_conn_set_keys(*b, 0, aead, k2, iv2, k1, iv1) == CRUST_OK);
}

/* Message i of priority p: length and content derived from (p, i). */
static size_t msg_len(unsigned p, unsigned i) { return 1 + (size_t)((i * 7919u + p * 31u) % 5000u); }
static uint8_t msg_byte(unsigned p, unsigned i, size_t k) { return (uint8_t)(p * 17 + i * 3 + k); }

typedef struct run_result {
    unsigned got[CRUST_NUM_PRIO];
    int bad;
    uint64_t end_time;
} run_result;

/* An embedder's allocator for crust_conn_set_msg_alloc: plain malloc, with
 * a count of live buffers so a leak or double free shows. */
static long live_buffers;
static uint8_t *test_alloc(void *ctx, uint64_t len, void **handle)
{
    (void)ctx;
    uint8_t *p = malloc((size_t)len);
    if (p)
        live_buffers++;
    *handle = p;
    return p;
}
static void test_free(void *ctx, void *handle)
{
    (void)ctx;
    live_buffers--;
    free(handle);
}

static run_result transfer(const crust_config *cfg, link *ab, link *ba, unsigned nmsg,
                           uint64_t limit_us, int direct)
{
    crust_conn *a, *b;
    setup(&a, &b, cfg, CRUST_AEAD_NULL);
    /* direct: messages of 1000+ bytes are assembled in test_alloc buffers;
     * odd ones are taken (handle handed over), even ones read (copied out
     * and released by the engine), so both ways are covered. */
    if (direct)
        crust_conn_set_msg_alloc(b, test_alloc, test_free, NULL, 1000);
    run_result res;
    memset(&res, 0, sizeof res);
    unsigned next[CRUST_NUM_PRIO] = {0};
    static uint8_t buf[1 << 16];
    uint64_t now = 0;
    while (now < limit_us) {
        for (unsigned p = 0; p < CRUST_NUM_PRIO; p++)
            while (next[p] < nmsg) {
                size_t len = msg_len(p, next[p]);
                for (size_t k = 0; k < len; k++)
                    buf[k] = msg_byte(p, next[p], k);
                if (crust_conn_send(a, now, buf, len, p, NULL) != CRUST_OK)
                    break;
                next[p]++;
            }
        uint8_t out[CRUST_MAX_PACKET];
        size_t n;
        while ((n = crust_conn_poll_transmit(a, now, out, sizeof out)))
            link_push(ab, now, out, n);
        while ((n = crust_conn_poll_transmit(b, now, out, sizeof out)))
            link_push(ba, now, out, n);
        pkt p;
        while (link_pop(ab, now, &p))
            crust_conn_recv(b, now, p.data, p.len);
        while (link_pop(ba, now, &p))
            crust_conn_recv(a, now, p.data, p.len);
        crust_event ev;
        while (crust_conn_poll_event(b, &ev)) {
            if (ev.type != CRUST_EV_MESSAGE)
                continue;
            unsigned i = res.got[ev.prio]++;
            void *handle = NULL;
            uint64_t taken = 0;
            int64_t m;
            if (direct && (i & 1) && crust_conn_take_message(b, ev.prio, &handle, &taken)) {
                CHECK(taken >= 1000 && taken <= sizeof buf);
                memcpy(buf, handle, (size_t)taken);
                test_free(NULL, handle);
                m = (int64_t)taken;
            } else {
                m = crust_conn_read_message(b, ev.prio, buf, sizeof buf);
            }
            if (m != (int64_t)msg_len(ev.prio, i)) {
                res.bad++;
                continue;
            }
            for (int64_t k = 0; k < m; k++)
                if (buf[k] != msg_byte(ev.prio, i, (size_t)k)) {
                    res.bad++;
                    break;
                }
        }
        while (crust_conn_poll_event(a, &ev)) {
        }
        unsigned done = 0;
        for (unsigned q = 0; q < CRUST_NUM_PRIO; q++)
            done += res.got[q] == nmsg;
        if (done == CRUST_NUM_PRIO)
            break;
        while ((n = crust_conn_poll_transmit(a, now, out, sizeof out)))
            link_push(ab, now, out, n);
        while ((n = crust_conn_poll_transmit(b, now, out, sizeof out)))
            link_push(ba, now, out, n);
        uint64_t t = crust_conn_next_timeout(a);
        uint64_t tb = crust_conn_next_timeout(b);
        if (tb < t)
            t = tb;
        uint64_t tl = link_next(ab), tl2 = link_next(ba);
        if (tl < t)
            t = tl;
        if (tl2 < t)
            t = tl2;
        if (t <= now)
            t = now + 1;
        now = t;
        if (crust_conn_next_timeout(a) <= now)
            crust_conn_handle_timeout(a, now);
        if (crust_conn_next_timeout(b) <= now)
            crust_conn_handle_timeout(b, now);
    }
    res.end_time = now;
    crust_conn_free(a);
    crust_conn_free(b);
    return res;
}

static void test_transfer(unsigned loss, unsigned dup, unsigned reorder, unsigned corrupt,
                          int direct)
{
    crust_config cfg;
    crust_config_default(&cfg);
    cfg.idle_timeout_us = 0;
    cfg.lost_timeout_us = 0; /* nor a dead-peer one: runs cut off for long */
    cfg.keepalive_us = 0;
    link ab = {calloc(MAXQ, sizeof(pkt)), 0, 20000, loss, dup, reorder, corrupt, 0, 800};
    link ba = {calloc(MAXQ, sizeof(pkt)), 0, 20000, loss, dup, reorder, corrupt, 0, 800};
    run_result r = transfer(&cfg, &ab, &ba, 200, 600000000ull, direct);
    CHECK(live_buffers == 0); /* every buffer taken or released, none twice */
    for (unsigned p = 0; p < CRUST_NUM_PRIO; p++)
        CHECK(r.got[p] == 200);
    CHECK(r.bad == 0);
    if (getenv("VERBOSE") || r.got[3] != 200)
        fprintf(stderr, "  loss=%u dup=%u reorder=%u corrupt=%u direct=%d got %u %u %u %u at t=%llu\n",
                loss, dup, reorder, corrupt, direct, r.got[0], r.got[1], r.got[2], r.got[3],
                (unsigned long long)r.end_time);
    free(ab.q);
    free(ba.q);
}

static void test_replay_and_junk(void)
{
    crust_conn *a, *b;
    setup(&a, &b, NULL, CRUST_AEAD_NULL);
    CHECK(crust_conn_send(a, 0, (const uint8_t *)"hello", 5, 0, NULL) == CRUST_OK);
    uint8_t out[CRUST_MAX_PACKET];
    size_t n = crust_conn_poll_transmit(a, 0, out, sizeof out);
    CHECK(n > 0);
    uint8_t copy[CRUST_MAX_PACKET];
    memcpy(copy, out, n);
    /* Corrupt each byte in turn: always rejected. */
    for (size_t i = 0; i < n; i++) {
        copy[i] ^= 0x10;
        CHECK(crust_conn_recv(b, 1, copy, n) < 0);
        copy[i] ^= 0x10;
    }
    for (size_t k = 0; k < n; k++)
        CHECK(crust_conn_recv(b, 1, copy, k) < 0); /* truncations */
    CHECK(crust_conn_recv(b, 1, out, n) == CRUST_OK);
    CHECK(crust_conn_recv(b, 1, out, n) == CRUST_EDUPLICATE);
    crust_event ev;
    CHECK(crust_conn_poll_event(b, &ev) && ev.type == CRUST_EV_MESSAGE && ev.len == 5);
    uint8_t m[8];
    CHECK(crust_conn_read_message(b, 0, m, sizeof m) == 5 && memcmp(m, "hello", 5) == 0);
    CHECK(!crust_conn_poll_event(b, &ev));
    /* Random junk: dropped, counted, never delivered. */
    for (int i = 0; i < 100000; i++) {
        uint8_t j[256];
        size_t len = rnd(256);
        for (size_t k = 0; k < len; k++)
            j[k] = (uint8_t)rnd(256);
        if (len > 9 && rnd(2)) {
            j[0] = 0x40 | (j[0] & 0x07);
            memcpy(j + 1, (uint8_t[8]){2, 2, 2, 2, 2, 2, 2, 2}, 8); /* right cid */
        }
        CHECK(crust_conn_recv(b, 2, j, len) < 0);
    }
    CHECK(!crust_conn_poll_event(b, &ev));
    crust_stats st;
    crust_conn_get_stats(b, &st);
    CHECK(st.rx_dropped_decrypt + st.rx_dropped_malformed + st.rx_dropped_notours +
              st.rx_dropped_duplicate + st.rx_dropped_old >= 100000);
    CHECK(st.rx_msgs == 1);
    crust_conn_free(a);
    crust_conn_free(b);
}

static void test_stale_drop_and_close(void)
{
    crust_config cfg;
    crust_config_default(&cfg);
    cfg.drop_deadline_us = 1000000;
    crust_conn *a, *b;
    setup(&a, &b, &cfg, CRUST_AEAD_NULL);
    uint64_t id0 = 0, id1 = 0;
    CHECK(crust_conn_send(a, 0, (const uint8_t *)"stale", 5, 3, &id0) == CRUST_OK);
    CHECK(crust_conn_send(a, 0, (const uint8_t *)"keep", 4, 1, &id1) == CRUST_OK);
    CHECK(crust_conn_next_timeout(a) <= 1000000);
    crust_conn_handle_timeout(a, 2000000);
    crust_event ev;
    int dropped = 0;
    while (crust_conn_poll_event(a, &ev))
        if (ev.type == CRUST_EV_MESSAGE_DROPPED && ev.msg_id == id0 && ev.len == 5 && ev.prio == 3)
            dropped++;
    CHECK(dropped == 1);
    uint8_t out[CRUST_MAX_PACKET];
    size_t n;
    while ((n = crust_conn_poll_transmit(a, 2000000, out, sizeof out)))
        crust_conn_recv(b, 2000000, out, n);
    int got = 0;
    while (crust_conn_poll_event(b, &ev))
        if (ev.type == CRUST_EV_MESSAGE) {
            uint8_t m[8];
            CHECK(ev.prio == 1 && crust_conn_read_message(b, ev.prio, m, 8) == 4);
            got++;
        }
    CHECK(got == 1);
    /* Abrupt close: the peer sees CLOSED with our code. */
    CHECK(crust_conn_close(a, 2000000, 42, 0) == CRUST_OK);
    CHECK(crust_conn_send(a, 2000000, out, 1, 0, NULL) == CRUST_ECLOSED);
    while ((n = crust_conn_poll_transmit(a, 2000001, out, sizeof out)))
        crust_conn_recv(b, 2000001, out, n);
    int closed = 0;
    while (crust_conn_poll_event(b, &ev))
        if (ev.type == CRUST_EV_CLOSED && ev.reason == CRUST_CLOSE_REMOTE && ev.code == 42)
            closed++;
    CHECK(closed == 1);
    crust_conn_handle_timeout(b, crust_conn_next_timeout(b));
    CHECK(crust_conn_is_closed(b));
    /* Idle timeout on a. */
    crust_conn_handle_timeout(a, crust_conn_next_timeout(a));
    CHECK(crust_conn_is_closed(a));
    crust_conn_free(a);
    crust_conn_free(b);

    /* Idle timeout when the peer vanishes. */
    setup(&a, &b, NULL, CRUST_AEAD_NULL);
    uint64_t t = 0;
    for (int i = 0; i < 100 && !crust_conn_is_closed(a); i++) {
        t = crust_conn_next_timeout(a);
        crust_conn_handle_timeout(a, t);
        while (crust_conn_poll_transmit(a, t, out, sizeof out)) {
        }
    }
    CHECK(crust_conn_is_closed(a) && t == 60000000);
    int idle = 0;
    while (crust_conn_poll_event(a, &ev))
        idle += ev.type == CRUST_EV_CLOSED && ev.reason == CRUST_CLOSE_IDLE;
    CHECK(idle == 1);
    crust_conn_free(a);
    crust_conn_free(b);
}

static void test_config(void)
{
    crust_config cfg;
    const char *field = NULL;
    crust_config_default(&cfg);
    CHECK(crust_config_validate(&cfg, &field) == CRUST_OK);
    cfg.recv_window = cfg.max_message_size;
    CHECK(crust_config_validate(&cfg, &field) == CRUST_EINVAL && strcmp(field, "recv_window") == 0);
    crust_config_default(&cfg);
    cfg.initial_mtu = 500; /* below CRUST_FLOOR_MTU */
    CHECK(crust_config_validate(&cfg, &field) == CRUST_EINVAL && strcmp(field, "initial_mtu") == 0);
    uint8_t cid[8] = {0};
    CHECK(crust_conn_new(&cfg, cid, cid, 0) == NULL);
}

/* A message assembled in an embedder's buffer but never read is released
 * by crust_conn_free. The buffer is not allocated on a header alone: on a
 * fresh connection one packet of a 100 kB message commits nothing; once the
 * stream has delivered a message that large, the next one's buffer comes
 * with its first packet (docs/design/0040). */
static void test_direct_unread_freed(void)
{
    crust_config cfg;
    crust_config_default(&cfg);
    crust_conn *a, *b;
    setup(&a, &b, &cfg, CRUST_AEAD_NULL);
    crust_conn_set_msg_alloc(b, test_alloc, test_free, NULL, 1000);
    static uint8_t big[100000], got[100000];
    memset(big, 7, sizeof big);
    uint8_t out[CRUST_MAX_PACKET];
    uint64_t now = 0;
    for (int round = 0; round < 2; round++) {
        CHECK(crust_conn_send(a, now, big, sizeof big, 0, NULL) == CRUST_OK);
        size_t n = crust_conn_poll_transmit(a, now += 1000, out, sizeof out);
        CHECK(n > 0 && crust_conn_recv(b, now, out, n) == CRUST_OK);
        CHECK(live_buffers == round); /* round 0: no credit yet */
        if (round == 0) {
            /* The rest of it: the buffer comes at half, the message is read. */
            int moved = 1;
            while (moved) {
                moved = 0;
                while ((n = crust_conn_poll_transmit(a, now += 1000, out, sizeof out)) > 0) {
                    moved = 1;
                    CHECK(crust_conn_recv(b, now, out, n) == CRUST_OK);
                }
                while ((n = crust_conn_poll_transmit(b, now += 1000, out, sizeof out)) > 0) {
                    moved = 1;
                    CHECK(crust_conn_recv(a, now, out, n) == CRUST_OK);
                }
            }
            CHECK(crust_conn_read_message(b, 0, got, sizeof got) == (int64_t)sizeof big);
            CHECK(memcmp(got, big, sizeof big) == 0 && live_buffers == 0);
            while ((n = crust_conn_poll_transmit(b, now += 1000, out, sizeof out)) > 0)
                CHECK(crust_conn_recv(a, now, out, n) == CRUST_OK);
        }
    }
    crust_conn_free(b);
    CHECK(live_buffers == 0);
    crust_conn_free(a);
}

/* Over a stream transport, large messages are opened straight into their
 * own buffers (conn.c, open_in_place) and crust_conn_recv_stream stops
 * after each one completes (CRUST_MSG_READY) so the next is placed too.
 * Messages of mixed sizes, the stream fed in chunks of awkward sizes:
 * every byte arrives intact, in order, and most bytes were placed. */
static void test_stream_in_place(void)
{
    crust_config cfg;
    crust_config_default(&cfg);
    cfg.stream_transport = 1;
    cfg.idle_timeout_us = 0;
    cfg.lost_timeout_us = 0; /* nor a dead-peer one: runs cut off for long */
    cfg.keepalive_us = 0;
    cfg.pacing = 0;
    crust_conn *a, *b;
    setup(&a, &b, &cfg, CRUST_AEAD_NULL);
    crust_conn_set_msg_alloc(b, test_alloc, test_free, NULL, 1000);
    static const size_t sizes[] = {300000, 5, 150000, 70000, 3, 1000, 999, 250000, 65536, 1};
    enum { NMSG = 40 };
    static uint8_t msg[300000];
    static uint8_t wire[1 << 21];
    static uint8_t back[1 << 16];
    size_t wlen = 0, wpos = 0;
    unsigned sent = 0, got = 0, ready_stops = 0, bad = 0;
    uint64_t total = 0;
    uint32_t rnd = 12345;
    uint64_t now = 0;
    for (int round = 0; round < 100000 && got < NMSG; round++) {
        now += 200; /* µs: a steady 128 KiB per 200 µs or so */
        while (sent < NMSG) {
            size_t len = sizes[sent % 10];
            for (size_t k = 0; k < len; k++)
                msg[k] = (uint8_t)(sent * 31 + k * 7);
            if (crust_conn_send(a, now, msg, len, sent % 2, NULL) != CRUST_OK)
                break;
            total += len;
            sent++;
        }
        if (wpos == wlen)
            wpos = wlen = 0;
        wlen += crust_conn_poll_stream(a, now, wire + wlen, sizeof wire - wlen);
        /* Feed b a chunk of pseudo-random size (1 byte .. 128 KiB). */
        rnd = rnd * 1103515245u + 12345u;
        size_t chunk = 1 + (rnd >> 8) % (128 << 10);
        if (chunk > wlen - wpos)
            chunk = wlen - wpos;
        size_t done = 0;
        while (done < chunk) {
            size_t used = 0;
            int rc = crust_conn_recv_stream(b, now, wire + wpos + done, chunk - done, &used);
            CHECK(rc == CRUST_OK || rc == CRUST_MSG_READY);
            done += used;
            ready_stops += rc == CRUST_MSG_READY;
            crust_event ev;
            while (crust_conn_poll_event(b, &ev)) {
                if (ev.type != CRUST_EV_MESSAGE)
                    continue;
                void *handle = NULL;
                uint64_t taken = 0;
                const uint8_t *data = msg;
                if (crust_conn_take_message(b, ev.prio, &handle, &taken))
                    data = handle;
                else
                    CHECK(crust_conn_read_message(b, ev.prio, msg, sizeof msg) == (int64_t)ev.len);
                /* Priorities 0 and 1 interleave: find the message by its length and first bytes. */
                size_t len = (size_t)ev.len;
                unsigned id = (unsigned)-1;
                for (unsigned i = 0; i < sent && id == (unsigned)-1; i++)
                    if (sizes[i % 10] == len && i % 2 == ev.prio && data[0] == (uint8_t)(i * 31))
                        id = i;
                if (id == (unsigned)-1) {
                    bad++;
                } else {
                    for (size_t k = 0; k < len; k++)
                        if (data[k] != (uint8_t)(id * 31 + k * 7)) {
                            bad++;
                            break;
                        }
                }
                if (handle)
                    test_free(NULL, handle);
                got++;
            }
            if (rc != CRUST_MSG_READY)
                break; /* the rest is a partial frame: wait for more */
        }
        wpos += done;
        size_t n = crust_conn_poll_stream(b, now, back, sizeof back);
        size_t used = 0;
        CHECK(crust_conn_recv_stream(a, now, back, n, &used) == CRUST_OK && used == n);
        crust_event ev;
        while (crust_conn_poll_event(a, &ev)) {
        }
    }
    crust_stats st;
    crust_conn_get_stats(b, &st);
    CHECK(got == NMSG && bad == 0);
    CHECK(ready_stops > 0);
    /* Most bytes of the large messages were opened in place. */
    CHECK(st.rx_placed_bytes > total / 2);
    if (getenv("VERBOSE"))
        fprintf(stderr, "  stream in place: %llu of %llu bytes placed, %u early stops\n",
                (unsigned long long)st.rx_placed_bytes, (unsigned long long)total, ready_stops);
    crust_conn_free(a);
    crust_conn_free(b);
    CHECK(live_buffers == 0);
}

/* A quiet-until-heard connection (IK responder over UDP) sends nothing,
 * and asks for no timer but the idle one, until the peer's first packet;
 * then what it queued goes out. */
static void test_quiet_until_heard(void)
{
    crust_config cfg;
    crust_config_default(&cfg);
    crust_conn *a, *b;
    setup(&a, &b, &cfg, CRUST_AEAD_NULL);
    crust_conn_quiet_until_heard(b);
    CHECK(crust_conn_send(b, 0, (const uint8_t *)"early", 5, 0, NULL) == CRUST_OK);
    uint8_t out[CRUST_MAX_PACKET];
    CHECK(crust_conn_poll_transmit(b, 0, out, sizeof out) == 0);
    CHECK(crust_conn_next_timeout(b) == cfg.idle_timeout_us);
    crust_conn_handle_timeout(b, 5000000);
    CHECK(crust_conn_poll_transmit(b, 5000000, out, sizeof out) == 0);
    /* a's first packet (its flow-control credit) wakes b up. */
    size_t n = crust_conn_poll_transmit(a, 5000000, out, sizeof out);
    CHECK(n > 0 && crust_conn_recv(b, 5000000, out, n) == CRUST_OK);
    int delivered = 0;
    while ((n = crust_conn_poll_transmit(b, 5000000, out, sizeof out)))
        CHECK(crust_conn_recv(a, 5000000, out, n) == CRUST_OK);
    crust_event ev;
    while (crust_conn_poll_event(a, &ev))
        if (ev.type == CRUST_EV_MESSAGE) {
            uint8_t msg[8];
            delivered += crust_conn_read_message(a, ev.prio, msg, sizeof msg) == 5;
        }
    CHECK(delivered == 1);
    crust_conn_free(a);
    crust_conn_free(b);
}

/* Move packets both ways until neither end has anything to send, running
 * the timers on a virtual clock that advances 1 ms a round. */
static uint64_t exchange(crust_conn *a, crust_conn *b, uint64_t now, unsigned rounds)
{
    uint8_t out[CRUST_MAX_PACKET];
    for (unsigned r = 0; r < rounds; r++, now += 1000) {
        crust_conn_handle_timeout(a, now);
        crust_conn_handle_timeout(b, now);
        size_t n;
        while ((n = crust_conn_poll_transmit(a, now, out, sizeof out)))
            crust_conn_recv(b, now, out, n);
        while ((n = crust_conn_poll_transmit(b, now, out, sizeof out)))
            crust_conn_recv(a, now, out, n);
    }
    return now;
}

/* Take every message b has ready; returns the bytes taken. */
static uint64_t take_all(crust_conn *b, unsigned *msgs)
{
    static uint8_t buf[1 << 16];
    crust_event ev;
    uint64_t got = 0;
    while (crust_conn_poll_event(b, &ev))
        if (ev.type == CRUST_EV_MESSAGE) {
            int64_t n = crust_conn_read_message(b, ev.prio, buf, sizeof buf);
            CHECK(n == (int64_t)ev.len);
            got += (uint64_t)n;
            ++*msgs;
        }
    return got;
}

/* Manual credit (design note 0028): messages the embedder took stay
 * charged to the window until released, so a receiver that holds them
 * stops the sender at one window; releasing lets it go on. Held messages
 * yield no event and stay in the engine until resumed. */
static void test_manual_credit_and_hold(void)
{
    crust_config cfg;
    crust_config_default(&cfg);
    cfg.max_message_size = 16384;
    cfg.recv_window = 256 * 1024; /* the least allowed; >= 4 x (16 KiB + 8) */
    crust_conn *a, *b;
    setup(&a, &b, &cfg, CRUST_AEAD_NULL);
    crust_conn_set_manual_credit(b, 1);
    static uint8_t msg[16384];
    unsigned queued = 0, taken = 0;
    uint64_t now = 0, got = 0;
    for (int round = 0; round < 200; round++) {
        while (crust_conn_send(a, now, msg, sizeof msg, round % 2, NULL) == CRUST_OK)
            queued++;
        now = exchange(a, b, now, 5);
        got += take_all(b, &taken);
    }
    crust_stats st;
    crust_conn_get_stats(b, &st);
    /* Everything taken is still held; the sender is stuck at one window. */
    CHECK(st.recv_held == taken * crust_conn_message_charge(sizeof msg));
    CHECK(got + st.recv_buffered <= cfg.recv_window);
    CHECK(got >= cfg.recv_window / 2);
    CHECK(taken < queued);
    uint64_t stuck = got;
    now = exchange(a, b, now, 50);
    CHECK(take_all(b, &taken) == 0 && got == stuck);
    /* Give it all back: the window reopens and the rest flows. */
    CHECK(crust_conn_release(b, st.recv_held) == 1);
    now = exchange(a, b, now, 20);
    got += take_all(b, &taken);
    CHECK(got > stuck);
    /* Releasing more than is held gives back only what is held. */
    crust_conn_get_stats(b, &st);
    crust_conn_release(b, st.recv_held + 12345);
    crust_conn_get_stats(b, &st);
    CHECK(st.recv_held == 0);
    /* Hold: complete messages stay in the engine, no event, until resumed. */
    crust_conn_hold_messages(b, 1);
    unsigned before = taken;
    for (int round = 0; round < 20; round++) {
        while (crust_conn_send(a, now, msg, 100, 0, NULL) == CRUST_OK)
            queued++;
        now = exchange(a, b, now, 5);
        CHECK(take_all(b, &taken) == 0);
    }
    CHECK(taken == before);
    crust_conn_hold_messages(b, 0);
    CHECK(take_all(b, &taken) > 0 && taken > before);
    crust_conn_free(a);
    crust_conn_free(b);
}

int main(void)
{
    test_config();
    test_replay_and_junk();
    test_stale_drop_and_close();
    test_transfer(0, 0, 0, 0, 0);
    test_transfer(10, 0, 0, 0, 0);
    test_transfer(5, 5, 10, 5, 0);
    test_transfer(30, 10, 20, 2, 0);
    test_transfer(0, 0, 0, 0, 1);
    test_transfer(10, 0, 0, 0, 1);
    test_transfer(5, 5, 10, 5, 1);
    test_transfer(30, 10, 20, 2, 1);
    test_direct_unread_freed();
    test_stream_in_place();
    test_quiet_until_heard();
    test_manual_credit_and_hold();
    return check_summary();
}
