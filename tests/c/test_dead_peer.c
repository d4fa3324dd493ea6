/*
 * test_dead_peer.c - a peer that stops answering is noticed in bounded time
 * (docs/design/0048-dead-peers-noticed.md):
 *   - message data unanswered for max(lost_timeout_us (8 s),
 *     CRUST_LOST_MIN_PTOS PTOs) closes with CRUST_CLOSE_LOST, so a slow
 *     path gets its probes first;
 *   - a quiet connection (keepalives only) is left to the idle timeout;
 *   - a path-unreachable report (ICMP) only makes the connection probe:
 *     unanswered, CRUST_CLOSE_UNREACHABLE after max(3 PTO, 1 s); answered
 *     (a forged report, a live peer), nothing happens;
 *   - over a stream the lost timeout applies without PTOs; over datagrams
 *     only once a round trip was measured.
 */
#include <string.h>

#include "check.h"
#include "conn.h"

#define MS 1000ull
#define SEC 1000000ull
#define STEP (5 * MS)

static crust_config config(int stream)
{
    crust_config cfg;
    crust_config_default(&cfg);
    cfg.pacing = 0;
    cfg.stream_transport = (uint32_t)stream;
    return cfg;
}

static void setup(crust_conn **a, crust_conn **b, const crust_config *cfg)
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
    CHECK(crust_conn_set_keys(*a, 0, CRUST_AEAD_NULL, k1, iv1, k2, iv2) == CRUST_OK);
    CHECK(crust_conn_set_keys(*b, 0, CRUST_AEAD_NULL, k2, iv2, k1, iv1) == CRUST_OK);
}

/* Move what `from` sends at t to `to` (NULL: the peer is gone). Returns
 * the number of packets (or stream chunks). */
static int pump(crust_conn *from, crust_conn *to, uint64_t t)
{
    static uint8_t out[CRUST_STREAM_FRAME_HDR + CRUST_STREAM_MAX_PACKET];
    int n = 0;
    for (;;) {
        size_t len;
        if (from->cfg.stream_transport) {
            len = crust_conn_poll_stream(from, t, out, sizeof out);
            if (len && to) {
                size_t used = 0;
                crust_conn_recv_stream(to, t, out, len, &used);
            }
        } else {
            len = crust_conn_poll_transmit(from, t, out, CRUST_MAX_PACKET);
            if (len && to)
                crust_conn_recv(to, t, out, len);
        }
        if (!len)
            return n;
        n++;
    }
}

static void timers(crust_conn *c, uint64_t t)
{
    if (crust_conn_next_timeout(c) <= t)
        crust_conn_handle_timeout(c, t);
}

static void drain_events(crust_conn *c)
{
    crust_event ev;
    uint8_t buf[4096];
    while (crust_conn_poll_event(c, &ev))
        if (ev.type == CRUST_EV_MESSAGE)
            crust_conn_read_message(c, ev.prio, buf, sizeof buf);
}

/* a sends a message every step and both ends talk until `until`: an RTT
 * estimate of a few ms. Returns the time reached. */
static uint64_t converse(crust_conn *a, crust_conn *b, uint64_t t, uint64_t until)
{
    uint8_t msg[1000] = {0};
    for (; t < until; t += STEP) {
        timers(a, t);
        timers(b, t);
        crust_conn_send(a, t, msg, sizeof msg, 0, NULL);
        pump(a, b, t);
        pump(b, a, t);
        drain_events(a);
        drain_events(b);
    }
    return t;
}

/* A fresh pair that talked for 1.1 s (an RTT estimate, everything
 * acknowledged): returns the time reached. */
static uint64_t talked(crust_conn **a, crust_conn **b, const crust_config *cfg)
{
    setup(a, b, cfg);
    uint64_t t = converse(*a, *b, 0, 1 * SEC);
    return converse(*a, *b, t, t + 100 * MS);
}

/* Only a runs from t on, and nothing it sends arrives; returns the time it
 * closed (0 if it did not by `limit`) and its close reason. */
static uint64_t alone(crust_conn *a, uint64_t t, uint64_t limit, uint32_t *reason)
{
    *reason = 0;
    while (!crust_conn_is_closed(a)) {
        uint64_t next = crust_conn_next_timeout(a);
        if (next == UINT64_MAX || next > limit)
            return 0;
        CHECK(next >= t); /* never a deadline in the past: no spinning */
        t = next;
        crust_conn_handle_timeout(a, t);
        pump(a, NULL, t);
        crust_event ev;
        while (crust_conn_poll_event(a, &ev))
            if (ev.type == CRUST_EV_CLOSED)
                *reason = ev.reason;
        if (*reason)
            return t;
    }
    return t;
}

static void test_silent_peer_while_sending(void)
{
    crust_config cfg = config(0);
    crust_conn *a, *b;
    setup(&a, &b, &cfg);
    uint64_t t = converse(a, b, 0, 1 * SEC);
    /* b vanishes; a still has a message to send. */
    uint8_t msg[1000] = {0};
    CHECK(crust_conn_send(a, t, msg, sizeof msg, 0, NULL) == CRUST_OK);
    CHECK(pump(a, NULL, t) > 0);
    uint64_t since = a->unanswered_since;
    CHECK(since && since <= t && since + 50 * MS > t);
    uint32_t reason;
    uint64_t closed = alone(a, t, t + 120 * SEC, &reason);
    CHECK(reason == CRUST_CLOSE_LOST);
    /* Exactly lost_timeout_us after the first unanswered data packet: the
     * PTO on a few-ms path fired many times by then. */
    CHECK(closed == since + cfg.lost_timeout_us);
    CHECK(a->st.pto_count >= CRUST_LOST_MIN_PTOS);
    crust_conn_free(a);
    crust_conn_free(b);
}

static void test_slow_path_gets_its_probes(void)
{
    crust_config cfg = config(0);
    crust_conn *a, *b;
    setup(&a, &b, &cfg);
    uint64_t t = converse(a, b, 0, 1 * SEC);
    /* The estimator says this path takes 3 s a round trip: PTO ~5 s, so
     * three of them take longer than 8 s. */
    a->rec.srtt = 3 * SEC;
    a->rec.rttvar = SEC / 2;
    uint64_t pto = crust_rec_pto(&a->rec);
    uint8_t msg[1000] = {0};
    crust_conn_send(a, t, msg, sizeof msg, 0, NULL);
    pump(a, NULL, t);
    uint64_t since = a->unanswered_since;
    uint32_t reason;
    uint64_t closed = alone(a, t, t + 300 * SEC, &reason);
    CHECK(reason == CRUST_CLOSE_LOST);
    CHECK(closed == since + CRUST_LOST_MIN_PTOS * pto);
    CHECK(closed > since + cfg.lost_timeout_us);
    CHECK(a->st.pto_count >= 2); /* probed at t+P and t+3P */
    crust_conn_free(a);
    crust_conn_free(b);
}

static void test_quiet_link_keeps_the_idle_timeout(void)
{
    crust_config cfg = config(0);
    crust_conn *a, *b;
    /* Everything was acknowledged; b vanishes and a sends no more data:
     * only keepalive PINGs go unanswered, which is the idle timeout's job. */
    uint64_t t = talked(&a, &b, &cfg);
    uint64_t heard = a->last_rx_us;
    uint32_t reason;
    uint64_t closed = alone(a, t, t + 120 * SEC, &reason);
    CHECK(reason == CRUST_CLOSE_IDLE);
    CHECK(closed == heard + cfg.idle_timeout_us);
    CHECK(a->st.pto_count > 0); /* the keepalive PINGs were probed */
    crust_conn_free(a);
    crust_conn_free(b);

    /* And a live quiet link stays up far past lost_timeout_us. */
    setup(&a, &b, &cfg);
    t = converse(a, b, 0, 1 * SEC);
    for (uint64_t end = t + 200 * SEC; t < end; t += 100 * MS) {
        timers(a, t);
        timers(b, t);
        pump(a, b, t);
        pump(b, a, t);
    }
    CHECK(!crust_conn_is_closed(a) && !crust_conn_is_closed(b));
    crust_conn_free(a);
    crust_conn_free(b);
}

/* Both directions delayed by `delay_us` from t on, for `span_us`: the
 * PTOs both ends count meanwhile. */
static uint64_t idle_with_delay(crust_conn *a, crust_conn *b, uint64_t t, uint64_t span_us,
                                uint64_t delay_us)
{
    enum { Q = 64 };
    static struct {
        uint64_t at;
        size_t len;
        int to_b;
        uint8_t d[CRUST_MAX_PACKET];
    } q[Q];
    unsigned n = 0;
    uint64_t ptos = a->st.pto_count + b->st.pto_count;
    for (uint64_t end = t + span_us; t < end; t += STEP) {
        timers(a, t);
        timers(b, t);
        for (int side = 0; side < 2; side++) {
            size_t len;
            while (n < Q && (len = crust_conn_poll_transmit(side ? b : a, t, q[n].d,
                                                              CRUST_MAX_PACKET))) {
                q[n].at = t + delay_us;
                q[n].len = len;
                q[n].to_b = !side;
                n++;
            }
        }
        for (unsigned i = 0; i < n;)
            if (q[i].at <= t) {
                crust_conn_recv(q[i].to_b ? b : a, t, q[i].d, q[i].len);
                q[i] = q[--n];
            } else {
                i++;
            }
    }
    CHECK(!crust_conn_is_closed(a) && !crust_conn_is_closed(b));
    return a->st.pto_count + b->st.pto_count - ptos;
}

/* A keepalive answered late (the peer busy: 300 ms against a round trip of
 * a few ms) is not probed: its loss would matter only against the idle
 * timeout, and a node with 100,000 idle peers probed every one slower than
 * its PTO (issue 22). One unanswered past CRUST_KEEPALIVE_PROBE_WAIT_US is. */
static void test_late_keepalive_answer_is_not_probed(void)
{
    crust_config cfg = config(0);
    crust_conn *a, *b;
    uint64_t t = talked(&a, &b, &cfg);
    uint64_t pings = a->st.tx_packets + b->st.tx_packets;
    CHECK(idle_with_delay(a, b, t, 70 * SEC, 150 * MS) == 0);
    CHECK(a->st.tx_packets + b->st.tx_packets >= pings + 4); /* keepalives went */
    crust_conn_free(a);
    crust_conn_free(b);

    t = talked(&a, &b, &cfg);
    CHECK(idle_with_delay(a, b, t, 70 * SEC, 1500 * MS) >= 1);
    crust_conn_free(a);
    crust_conn_free(b);
}

static void test_unreachable_unanswered(void)
{
    crust_config cfg = config(0);
    crust_conn *a, *b;
    setup(&a, &b, &cfg);
    uint64_t t = converse(a, b, 0, 1 * SEC);
    CHECK(crust_rec_pto(&a->rec) * CRUST_UNREACHABLE_PTOS < CRUST_UNREACHABLE_FLOOR_US);
    CHECK(crust_conn_path_unreachable(a, t) == 1);
    CHECK(crust_conn_path_unreachable(a, t + 1) == 0); /* already probing */
    CHECK(pump(a, NULL, t) >= 1);                      /* the PING, at once */
    uint32_t reason;
    uint64_t closed = alone(a, t, t + 120 * SEC, &reason);
    CHECK(reason == CRUST_CLOSE_UNREACHABLE);
    CHECK(closed == t + CRUST_UNREACHABLE_FLOOR_US);
    CHECK(a->st.unreachable_reports == 1);
    crust_conn_free(a);
    crust_conn_free(b);
}

static void test_forged_unreachable_is_harmless(void)
{
    crust_config cfg = config(0);
    crust_conn *a, *b;
    setup(&a, &b, &cfg);
    uint64_t t = converse(a, b, 0, 1 * SEC);
    /* A report every 10 ms for 5 s, for a peer that is alive and talking. */
    uint64_t end = t + 5 * SEC;
    int started = 0;
    for (; t < end; t += 10 * MS) {
        started += crust_conn_path_unreachable(a, t);
        t = converse(a, b, t, t + 10 * MS) - 10 * MS;
    }
    CHECK(!crust_conn_is_closed(a));
    /* Each report while a probe waits is ignored: about one per round
     * trip (the peer answers within a few steps), never one per report. */
    CHECK(started >= 2 && started <= 500);
    CHECK(a->st.unreachable_reports == (uint64_t)started);
    /* A quiet live peer answers the PING too. */
    CHECK(crust_conn_path_unreachable(a, t) == 1);
    for (uint64_t stop = t + 3 * SEC; t < stop; t += STEP) {
        timers(a, t);
        timers(b, t);
        pump(a, b, t);
        pump(b, a, t);
    }
    CHECK(!crust_conn_is_closed(a) && a->unreachable_deadline == 0);
    crust_conn_free(a);
    crust_conn_free(b);
}

static void test_stream_lost_without_ptos(void)
{
    crust_config cfg = config(1);
    crust_conn *a, *b;
    setup(&a, &b, &cfg);
    uint64_t t = converse(a, b, 0, 1 * SEC);
    uint8_t msg[1000] = {0};
    crust_conn_send(a, t, msg, sizeof msg, 0, NULL);
    pump(a, NULL, t);
    uint64_t since = a->unanswered_since;
    CHECK(since && since <= t);
    uint32_t reason;
    uint64_t closed = alone(a, t, t + 120 * SEC, &reason);
    CHECK(reason == CRUST_CLOSE_LOST);
    CHECK(closed == since + cfg.lost_timeout_us);
    CHECK(a->st.pto_count == 0);
    crust_conn_free(a);
    crust_conn_free(b);
}

static void test_no_rtt_sample_no_lost_timer(void)
{
    /* The peer never answered anything: the PTO is a guess from
     * initial_rtt_us, so the lost timer waits for a measured round trip
     * and the idle timeout ends the connection. */
    crust_config cfg = config(0);
    crust_conn *a, *b;
    setup(&a, &b, &cfg);
    uint8_t msg[1000] = {0};
    crust_conn_send(a, 0, msg, sizeof msg, 0, NULL);
    pump(a, NULL, 0);
    CHECK(a->unanswered_since && !a->rec.have_rtt);
    uint32_t reason;
    uint64_t closed = alone(a, 0, 120 * SEC, &reason);
    CHECK(reason == CRUST_CLOSE_IDLE && closed == cfg.idle_timeout_us);
    crust_conn_free(a);
    crust_conn_free(b);
}

static void test_config(void)
{
    crust_config cfg;
    const char *field = NULL;
    crust_config_default(&cfg);
    CHECK(cfg.lost_timeout_us == 8 * SEC);
    cfg.lost_timeout_us = 50 * MS;
    CHECK(crust_config_validate(&cfg, &field) == CRUST_EINVAL && field &&
          strcmp(field, "lost_timeout_us") == 0);
    cfg.lost_timeout_us = 0; /* off */
    CHECK(crust_config_validate(&cfg, NULL) == CRUST_OK);

    /* Off: a silent peer is left to the idle timeout. */
    cfg.pacing = 0;
    crust_conn *a, *b;
    setup(&a, &b, &cfg);
    uint64_t t = converse(a, b, 0, 1 * SEC);
    uint8_t msg[1000] = {0};
    crust_conn_send(a, t, msg, sizeof msg, 0, NULL);
    pump(a, NULL, t);
    uint32_t reason;
    alone(a, t, t + 120 * SEC, &reason);
    CHECK(reason == CRUST_CLOSE_IDLE);
    crust_conn_free(a);
    crust_conn_free(b);
}

int main(void)
{
    test_silent_peer_while_sending();
    test_slow_path_gets_its_probes();
    test_quiet_link_keeps_the_idle_timeout();
    test_late_keepalive_answer_is_not_probed();
    test_unreachable_unanswered();
    test_forged_unreachable_is_harmless();
    test_stream_lost_without_ptos();
    test_no_rtt_sample_no_lost_timer();
    test_config();
    return check_summary();
}
