/*
 * test_rekey.c - automatic key updates (docs/design/0008-rekey.md): two
 * engine ends with the null AEAD over an in-memory link. Updates happen by
 * packet count and by time; reordered packets of the previous phase are
 * still opened; after 3 PTO the old keys are wiped, a late packet under them
 * is dropped as a decrypt failure, and CRUST_EV_KEYS_NEEDED asks for the
 * next generation; no update starts before a packet of the current phase
 * was acknowledged.
 *
 * Keys come from a toy ratchet (generation n+1 = H(generation n)), applied
 * identically by both ends, as the handshake layer does with BLAKE2b.
 */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "conn.h"

#define MAXQ 8192

static uint64_t mix(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

/* Keys of generation gen for direction dir (0: a->b, 1: b->a). */
static void derive(unsigned dir, uint64_t gen, uint8_t key[CRUST_KEY_LEN], uint8_t iv[CRUST_IV_LEN])
{
    uint64_t s[4] = {dir + 1, 0x1234, 0x5678, 0x9abc};
    for (uint64_t g = 0; g < gen; g++)
        for (int i = 0; i < 4; i++)
            s[i] = mix(s[i] ^ mix(s[(i + 1) % 4] + (uint64_t)i));
    memcpy(key, s, CRUST_KEY_LEN);
    uint64_t v[2] = {mix(s[0] ^ 0x6976), mix(s[1] ^ 0x6976)};
    memcpy(iv, v, CRUST_IV_LEN);
}

typedef struct side {
    crust_conn *c;
    unsigned dir;
    unsigned updates_seen, needed_seen, bad_events;
    int auto_install;           /* answer KEYS_NEEDED at once */
    unsigned got, bad;          /* messages received, wrong ones */
} side;

static void install(side *s, unsigned slot, uint64_t gen)
{
    uint8_t tk[CRUST_KEY_LEN], ti[CRUST_IV_LEN], rk[CRUST_KEY_LEN], ri[CRUST_IV_LEN];
    derive(s->dir, gen, tk, ti);
    derive(s->dir ^ 1u, gen, rk, ri);
    CHECK(crust_conn_set_keys(s->c, slot, CRUST_AEAD_NULL, tk, ti, rk, ri) == CRUST_OK);
}

static crust_config rekey_config(uint64_t packets, uint64_t interval_us)
{
    crust_config cfg;
    crust_config_default(&cfg);
    cfg.idle_timeout_us = 0;
    cfg.lost_timeout_us = 0; /* nor a dead-peer one: runs cut off for long */
    cfg.keepalive_us = 0;
    cfg.rekey_packets = packets;
    cfg.rekey_interval_us = interval_us;
    return cfg;
}

/* Both ends with generations 0 and 1 installed, as after a handshake. */
static void setup(side *a, side *b, const crust_config *cfg)
{
    uint8_t ca[8] = {1, 1, 1, 1, 1, 1, 1, 1}, cb[8] = {2, 2, 2, 2, 2, 2, 2, 2};
    memset(a, 0, sizeof *a);
    memset(b, 0, sizeof *b);
    a->c = crust_conn_new(cfg, ca, cb, 0);
    b->c = crust_conn_new(cfg, cb, ca, 0);
    CHECK(a->c && b->c);
    b->dir = 1;
    a->auto_install = b->auto_install = 1;
    for (unsigned g = 0; g < 2; g++) {
        install(a, g, g);
        install(b, g, g);
    }
}

static void teardown(side *a, side *b)
{
    crust_conn_free(a->c);
    crust_conn_free(b->c);
}

/* Message i: 700 bytes derived from i, so loss, duplication and reordering
 * all show. */
#define MSG_LEN 700
static void fill_msg(uint8_t *m, unsigned i)
{
    for (unsigned k = 0; k < MSG_LEN; k++)
        m[k] = (uint8_t)(i * 13u + k * 7u + (k >> 8));
}

static void drain(side *s)
{
    crust_event ev;
    uint8_t buf[MSG_LEN + 16], want[MSG_LEN];
    while (crust_conn_poll_event(s->c, &ev)) {
        switch (ev.type) {
        case CRUST_EV_MESSAGE: {
            int64_t n = crust_conn_read_message(s->c, ev.prio, buf, sizeof buf);
            fill_msg(want, s->got++);
            if (n != MSG_LEN || memcmp(buf, want, MSG_LEN) != 0)
                s->bad++;
            break;
        }
        case CRUST_EV_KEY_UPDATE:
            s->updates_seen++;
            if (ev.prio != (ev.code & 1) || (ev.reason != 1 && ev.reason != 2))
                s->bad_events++;
            break;
        case CRUST_EV_KEYS_NEEDED:
            s->needed_seen++;
            if (ev.prio != (ev.code & 1))
                s->bad_events++;
            if (s->auto_install)
                install(s, ev.prio, ev.code);
            break;
        default:
            break;
        }
    }
}

/* A one-way link with a fixed delay; every `reorder_every`-th packet takes
 * `extra_us` longer. */
typedef struct wire {
    struct {
        uint64_t at;
        size_t len;
        uint8_t d[CRUST_MAX_PACKET];
    } q[MAXQ];
    size_t n;
    uint64_t delay_us, extra_us;
    unsigned reorder_every, count;
    int blocked;                /* drop everything */
} wire;

static void wire_push(wire *w, uint64_t now, const uint8_t *d, size_t len)
{
    w->count++;
    if (w->blocked || w->n == MAXQ)
        return;
    w->q[w->n].at = now + w->delay_us +
                    (w->reorder_every && w->count % w->reorder_every == 0 ? w->extra_us : 0);
    w->q[w->n].len = len;
    memcpy(w->q[w->n].d, d, len);
    w->n++;
}

static void wire_deliver(wire *w, uint64_t now, side *to)
{
    for (;;) {
        size_t best = w->n;
        for (size_t i = 0; i < w->n; i++)
            if (w->q[i].at <= now && (best == w->n || w->q[i].at < w->q[best].at))
                best = i;
        if (best == w->n)
            return;
        crust_conn_recv(to->c, now, w->q[best].d, w->q[best].len);
        drain(to);
        w->q[best] = w->q[--w->n];
    }
}

static uint64_t wire_next(const wire *w)
{
    uint64_t t = UINT64_MAX;
    for (size_t i = 0; i < w->n; i++)
        if (w->q[i].at < t)
            t = w->q[i].at;
    return t;
}

/* a sends `nmsg` messages (as the send buffer allows) to b until b has them
 * all or `until` passes; `gap_us` spaces the messages out. With `nmsg` 0
 * the two just idle (keepalives, if configured) until `until`. */
static uint64_t run(side *a, side *b, wire *ab, wire *ba, uint64_t now, uint64_t until,
                    unsigned nmsg, uint64_t gap_us)
{
    static uint8_t out[CRUST_MAX_PACKET], m[MSG_LEN];
    unsigned sent = 0;
    uint64_t next_send = now;
    while (now < until && (!nmsg || b->got < nmsg)) {
        while (sent < nmsg && now >= next_send) {
            fill_msg(m, sent);
            if (crust_conn_send(a->c, now, m, MSG_LEN, 0, NULL) != CRUST_OK)
                break;
            sent++;
            next_send = gap_us ? now + gap_us : now;
        }
        size_t n;
        while ((n = crust_conn_poll_transmit(a->c, now, out, sizeof out)))
            wire_push(ab, now, out, n);
        while ((n = crust_conn_poll_transmit(b->c, now, out, sizeof out)))
            wire_push(ba, now, out, n);
        wire_deliver(ab, now, b);
        wire_deliver(ba, now, a);
        drain(a);
        drain(b);
        uint64_t t = crust_conn_next_timeout(a->c);
        uint64_t cand[4] = {crust_conn_next_timeout(b->c), wire_next(ab), wire_next(ba),
                            sent < nmsg && gap_us ? next_send : UINT64_MAX};
        for (int i = 0; i < 4; i++)
            if (cand[i] < t)
                t = cand[i];
        if (crust_conn_poll_transmit(a->c, now, out, 0) || t <= now)
            t = now + 1; /* more to do now: step the clock minimally */
        if (t > until)
            t = until;
        now = t;
        crust_conn_handle_timeout(a->c, now);
        crust_conn_handle_timeout(b->c, now);
        drain(a);
        drain(b);
    }
    return now;
}

static wire *new_wire(uint64_t delay_us)
{
    wire *w = calloc(1, sizeof *w);
    w->delay_us = delay_us;
    return w;
}

static void test_updates_by_packets(void)
{
    crust_config cfg = rekey_config(64, 0);
    side a, b;
    setup(&a, &b, &cfg);
    wire *ab = new_wire(10000), *ba = new_wire(10000);
    ab->reorder_every = 7;
    ab->extra_us = 3000;
    const unsigned nmsg = 20000;
    uint64_t end = run(&a, &b, ab, ba, 0, 600000000ull, nmsg, 200);
    crust_stats sa, sb;
    crust_conn_get_stats(a.c, &sa);
    crust_conn_get_stats(b.c, &sb);
    CHECK(b.got == nmsg && b.bad == 0);
    /* About 4 s of traffic; an update needs 64 packets and 3 PTO (~0.2 s)
     * after the peer acknowledged the current phase. */
    CHECK(sa.key_updates >= 5);
    CHECK(sa.key_updates == sb.key_updates || sa.key_updates == sb.key_updates + 1);
    CHECK(a.updates_seen == sa.key_updates && b.updates_seen == sb.key_updates);
    CHECK(a.needed_seen + 1 >= sa.key_updates && b.needed_seen + 2 >= sb.key_updates);
    CHECK(a.bad_events == 0 && b.bad_events == 0);
    /* b only sends ACKs, so its PTO stays at the initial 1 s and a starts
     * each update before b's old keys time out: b then wipes them early,
     * losing at most the packet that showed it, never more. */
    CHECK(sb.rx_dropped_decrypt <= sb.key_updates);
    CHECK(sa.rx_dropped_decrypt == 0);
    if (getenv("VERBOSE"))
        fprintf(stderr, "packets: %llu/%llu updates, %llu decrypt drops at b, t=%llu\n",
                (unsigned long long)sa.key_updates, (unsigned long long)sb.key_updates,
                (unsigned long long)sb.rx_dropped_decrypt, (unsigned long long)end);
    teardown(&a, &b);
    free(ab);
    free(ba);
}

static void test_updates_by_time(void)
{
    crust_config cfg = rekey_config(0, 1000000);
    side a, b;
    setup(&a, &b, &cfg);
    wire *ab = new_wire(20000), *ba = new_wire(20000);
    /* One message every 100 ms for 20 s, so both ends keep sending. */
    const unsigned nmsg = 200;
    run(&a, &b, ab, ba, 0, 30000000ull, nmsg, 100000);
    crust_stats sa, sb;
    crust_conn_get_stats(a.c, &sa);
    crust_conn_get_stats(b.c, &sb);
    CHECK(b.got == nmsg && b.bad == 0);
    /* A 1 s interval over 20 s; never faster than the interval. */
    CHECK(sa.key_updates >= 8 && sa.key_updates <= 20);
    CHECK(sb.key_updates + 1 >= sa.key_updates && sb.key_updates <= sa.key_updates + 1);
    if (getenv("VERBOSE"))
        fprintf(stderr, "time: %llu/%llu updates, phase %u/%u\n",
                (unsigned long long)sa.key_updates, (unsigned long long)sb.key_updates,
                sa.key_phase, sb.key_phase);
    teardown(&a, &b);
    free(ab);
    free(ba);
}

/* Keys that only sealed keepalives and ACKs protect nothing: an idle
 * connection keeps them past any number of intervals (100,000 idle peers
 * rekeyed 833 times a second, issue 22). Keys that sealed a message are
 * still replaced once the interval has passed since (design note 0077). */
static void test_idle_connection_keeps_its_keys(void)
{
    crust_config cfg = rekey_config(0, 1000000);
    cfg.keepalive_us = 1000000; /* so the idle pair does send */
    side a, b;
    setup(&a, &b, &cfg);
    wire *ab = new_wire(20000), *ba = new_wire(20000);
    uint64_t now = run(&a, &b, ab, ba, 0, 20000000ull, 0, 0);
    crust_stats sa, sb;
    crust_conn_get_stats(a.c, &sa);
    crust_conn_get_stats(b.c, &sb);
    CHECK(sa.tx_packets + sb.tx_packets >= 20); /* keepalives went both ways */
    CHECK(sa.key_updates == 0 && sb.key_updates == 0);
    /* One message, then 20 s idle again: one update, started by a within
     * about an interval plus a keepalive of the message, none after. */
    now = run(&a, &b, ab, ba, now, now + 1000000ull, 1, 0);
    CHECK(b.got == 1);
    run(&a, &b, ab, ba, now, now + 20000000ull, 0, 0);
    crust_conn_get_stats(a.c, &sa);
    crust_conn_get_stats(b.c, &sb);
    CHECK(sa.key_updates == 1 && sb.key_updates == 1 && a.updates_seen == 1);
    CHECK(b.bad == 0 && a.bad_events == 0 && b.bad_events == 0);
    if (getenv("VERBOSE"))
        fprintf(stderr, "idle: %llu/%llu updates, %llu/%llu packets\n",
                (unsigned long long)sa.key_updates, (unsigned long long)sb.key_updates,
                (unsigned long long)sa.tx_packets, (unsigned long long)sb.tx_packets);
    teardown(&a, &b);
    free(ab);
    free(ba);
}

/* Pump a and b over a perfect instant link at time now until quiet. */
static void settle(side *a, side *b, uint64_t now)
{
    uint8_t out[CRUST_MAX_PACKET];
    for (int round = 0; round < 50; round++) {
        size_t n, moved = 0;
        while ((n = crust_conn_poll_transmit(a->c, now, out, sizeof out))) {
            crust_conn_recv(b->c, now, out, n);
            moved++;
        }
        crust_conn_handle_timeout(b->c, now);
        while ((n = crust_conn_poll_transmit(b->c, now, out, sizeof out))) {
            crust_conn_recv(a->c, now, out, n);
            moved++;
        }
        drain(a);
        drain(b);
        if (!moved)
            return;
        now++;
    }
}

static size_t send_one(side *a, uint64_t now, unsigned i, uint8_t *out)
{
    uint8_t m[MSG_LEN];
    fill_msg(m, i);
    CHECK(crust_conn_send(a->c, now, m, MSG_LEN, 0, NULL) == CRUST_OK);
    size_t n = crust_conn_poll_transmit(a->c, now, out, CRUST_MAX_PACKET);
    CHECK(n > 0);
    return n;
}

static void test_reorder_across_switch_and_wipe(void)
{
    crust_config cfg = rekey_config(0, 0);
    cfg.pacing = 0;
    side a, b;
    setup(&a, &b, &cfg);
    uint64_t now = 1000;
    static uint8_t held[3][CRUST_MAX_PACKET], out[CRUST_MAX_PACKET];
    size_t hl[3];
    /* Message 0 goes through; messages 1 and 2 (phase 0) are held back. */
    size_t n = send_one(&a, now, 0, out);
    CHECK(crust_conn_recv(b.c, now, out, n) == CRUST_OK);
    hl[0] = send_one(&a, now, 1, held[0]);
    hl[1] = send_one(&a, now, 2, held[1]);
    CHECK(!(held[0][0] & 0x04));
    /* a updates; message 3 goes out under phase 1 and arrives first. */
    CHECK(crust_conn_update_keys(a.c, now) == CRUST_OK);
    CHECK(crust_conn_update_keys(a.c, now) == CRUST_ENOKEY); /* old keys still held */
    n = send_one(&a, now, 3, out);
    CHECK(out[0] & 0x04);
    CHECK(crust_conn_recv(b.c, now, out, n) == CRUST_OK);
    crust_stats st;
    crust_conn_get_stats(b.c, &st);
    CHECK(st.key_phase == 1 && st.key_updates == 1); /* b followed the peer */
    drain(&b);
    CHECK(b.updates_seen == 1 && b.got == 1);
    /* The reordered phase-0 packet still opens and completes the order. */
    CHECK(crust_conn_recv(b.c, now + 10, held[0], hl[0]) == CRUST_OK);
    drain(&b);
    CHECK(b.got == 2 && b.bad == 0);
    /* After 3 PTO the old keys are wiped and the next ones asked for. */
    b.auto_install = 0;
    uint64_t wipe_at = now + 3 * crust_rec_pto(&b.c->rec), t = now;
    crust_event ev;
    int needed = 0;
    while (!needed && t <= wipe_at) {
        while ((n = crust_conn_poll_transmit(b.c, t, out, sizeof out)))
            crust_conn_recv(a.c, t, out, n); /* ACKs */
        uint64_t next = crust_conn_next_timeout(b.c);
        t = next > t ? next : t + 1;
        crust_conn_handle_timeout(b.c, t);
        while (crust_conn_poll_event(b.c, &ev))
            if (ev.type == CRUST_EV_KEYS_NEEDED && ev.prio == 0 && ev.code == 2)
                needed++;
        CHECK(needed || b.c->rx[0].valid); /* not wiped before */
    }
    CHECK(needed == 1 && t == wipe_at);
    CHECK(!b.c->rx[0].valid && !b.c->tx[0].valid);
    /* A late packet under the wiped keys: dropped and counted, no crash. */
    crust_conn_get_stats(b.c, &st);
    uint64_t dec = st.rx_dropped_decrypt;
    CHECK(crust_conn_recv(b.c, t, held[1], hl[1]) == CRUST_EDECRYPT);
    crust_conn_get_stats(b.c, &st);
    CHECK(st.rx_dropped_decrypt == dec + 1);
    /* With generation 2 installed it still does not open (other keys). */
    install(&b, 0, 2);
    CHECK(crust_conn_recv(b.c, t, held[1], hl[1]) == CRUST_EDECRYPT);
    /* Message 2 is resent under phase 1 and everything arrives once. */
    b.auto_install = 1;
    a.auto_install = 1;
    for (uint64_t s = t; s < t + 20000000 && b.got < 4; s += 100000) {
        crust_conn_handle_timeout(a.c, s);
        settle(&a, &b, s);
    }
    CHECK(b.got == 4 && b.bad == 0);
    teardown(&a, &b);
}

/* Run a alone, its packets lost, until it sent `count` more packets (PTO
 * probes once the window is full). Returns the time reached. */
static uint64_t run_cut_off(side *a, uint64_t now, uint64_t count)
{
    uint8_t out[CRUST_MAX_PACKET];
    uint64_t target = a->c->rec.next_pn + count;
    while (a->c->rec.next_pn < target) {
        while (crust_conn_poll_transmit(a->c, now, out, sizeof out)) {
        }
        drain(a);
        now = crust_conn_next_timeout(a->c);
        crust_conn_handle_timeout(a->c, now);
    }
    return now;
}

static void test_no_update_before_ack(void)
{
    crust_config cfg = rekey_config(16, 0);
    cfg.pacing = 0;
    side a, b;
    setup(&a, &b, &cfg);
    uint8_t m[MSG_LEN];
    uint64_t now = 0;
    crust_stats st;
    /* 40 packets that b never sees: nothing of phase 0 is acknowledged. */
    for (unsigned i = 0; i < 20; i++) {
        fill_msg(m, i);
        CHECK(crust_conn_send(a.c, now, m, MSG_LEN, 0, NULL) == CRUST_OK);
    }
    now = run_cut_off(&a, now, 40);
    crust_conn_get_stats(a.c, &st);
    CHECK(st.key_updates == 0 && st.key_phase == 0);
    /* Delivered and acknowledged: the update waits 3 PTO more, then goes. */
    for (int i = 0; i < 100 && st.key_updates == 0; i++) {
        now += 50000;
        crust_conn_handle_timeout(a.c, now);
        crust_conn_handle_timeout(b.c, now);
        settle(&a, &b, now);
        crust_conn_get_stats(a.c, &st);
        if (!a.c->key_acked && st.key_updates == 0)
            CHECK(a.c->rec.next_pn < 400); /* still waiting for the ACK */
    }
    CHECK(st.key_updates == 1 && st.key_phase == 1);
    /* Install generation 2 at once (dropping a's old keys early) and cut
     * the path: no phase-1 packet of a is acknowledged, so however many
     * packets go out, a stays in phase 1. */
    install(&a, 0, 2);
    uint64_t first = a.c->key_first_pn;
    for (unsigned i = 0; i < 20; i++) {
        fill_msg(m, 100 + i);
        CHECK(crust_conn_send(a.c, now, m, MSG_LEN, 0, NULL) == CRUST_OK);
    }
    run_cut_off(&a, now, 40);
    crust_conn_get_stats(a.c, &st);
    CHECK(a.c->rec.next_pn - first >= 40);
    CHECK(st.key_updates == 1 && st.key_phase == 1 && !a.c->key_acked);
    teardown(&a, &b);
}

static void test_empty_slot_and_config(void)
{
    /* a switches to keys b never got: b drops and counts, and the replay
     * window is not advanced by the failures. */
    crust_config cfg = rekey_config(0, 0);
    side a, b;
    uint8_t ca[8] = {1, 1, 1, 1, 1, 1, 1, 1}, cb[8] = {2, 2, 2, 2, 2, 2, 2, 2};
    memset(&a, 0, sizeof a);
    memset(&b, 0, sizeof b);
    a.c = crust_conn_new(&cfg, ca, cb, 0);
    b.c = crust_conn_new(&cfg, cb, ca, 0);
    b.dir = 1;
    install(&a, 0, 0);
    install(&a, 1, 1);
    install(&b, 0, 0);
    CHECK(crust_conn_update_keys(b.c, 0) == CRUST_ENOKEY);
    CHECK(crust_conn_update_keys(a.c, 0) == CRUST_OK);
    uint8_t out[CRUST_MAX_PACKET];
    size_t n = send_one(&a, 0, 0, out);
    CHECK(crust_conn_recv(b.c, 0, out, n) == CRUST_EDECRYPT);
    crust_stats st;
    crust_conn_get_stats(b.c, &st);
    CHECK(st.rx_dropped_decrypt == 1 && st.key_updates == 0);
    /* Once b has generation 1, the same packet opens and b follows. */
    install(&b, 1, 1);
    CHECK(crust_conn_recv(b.c, 0, out, n) == CRUST_OK);
    crust_conn_get_stats(b.c, &st);
    CHECK(st.key_updates == 1 && st.key_phase == 1);
    teardown(&a, &b);

    crust_config c = rekey_config(0, 0);
    const char *field = NULL;
    CHECK(crust_config_validate(&c, &field) == CRUST_OK);
    c.rekey_interval_us = 999;
    CHECK(crust_config_validate(&c, &field) == CRUST_EINVAL &&
          strcmp(field, "rekey_interval_us") == 0);
    c = rekey_config(15, 0);
    CHECK(crust_config_validate(&c, &field) == CRUST_EINVAL && strcmp(field, "rekey_packets") == 0);
    c = rekey_config((UINT64_C(1) << 62) + 1, 0);
    CHECK(crust_config_validate(&c, &field) == CRUST_EINVAL);
    crust_config_default(&c);
    CHECK(c.rekey_interval_us == 120000000 && c.rekey_packets == (UINT64_C(1) << 30));
}

int main(void)
{
    test_updates_by_packets();
    test_updates_by_time();
    test_idle_connection_keeps_its_keys();
    test_reorder_across_switch_and_wipe();
    test_no_update_before_ack();
    test_empty_slot_and_config();
    return check_summary();
}
