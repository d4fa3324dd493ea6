/*
 * test_recovery.c - loss recovery (RFC 9002) through the engine's internal
 * API: RTT estimation, the packet and time thresholds, PTO with backoff,
 * and the replay window. ACK frames are crafted by hand so each rule is
 * checked in isolation.
 */
#include <string.h>

#include "check.h"
#include "conn.h"
#include "frame.h"

static crust_conn *new_conn(void)
{
    crust_config cfg;
    crust_config_default(&cfg);
    cfg.pacing = 0;
    cfg.idle_timeout_us = 0;
    cfg.lost_timeout_us = 0; /* nor a dead-peer one: runs cut off for long */
    cfg.keepalive_us = 0;
    uint8_t a[8] = {1, 1, 1, 1, 1, 1, 1, 1}, b[8] = {2, 2, 2, 2, 2, 2, 2, 2}, k[32] = {0},
            iv[12] = {0};
    crust_conn *c = crust_conn_new(&cfg, a, b, 0);
    crust_conn_set_keys(c, 0, CRUST_AEAD_NULL, k, iv, k, iv);
    return c;
}

/* Send n data packets at time t; returns the first packet number. */
static uint64_t send_n(crust_conn *c, uint64_t t, int n)
{
    uint8_t msg[1000] = {0}, out[CRUST_MAX_PACKET];
    uint64_t first = c->next_pn;
    for (int i = 0; i < n; i++) {
        crust_conn_send(c, t, msg, sizeof msg, 0, NULL);
        while (crust_conn_poll_transmit(c, t, out, sizeof out)) {
        }
    }
    return first;
}

/* Acknowledge [lo, hi] (inclusive) with an ACK frame of one range. */
static void ack(crust_conn *c, uint64_t t, uint64_t lo, uint64_t hi, uint64_t delay_us)
{
    uint8_t f[32];
    size_t n = 0;
    f[n++] = CRUST_FT_ACK;
    n += crust_varint_put(f + n, hi);
    n += crust_varint_put(f + n, delay_us >> CRUST_ACK_DELAY_EXP);
    n += crust_varint_put(f + n, 0);
    n += crust_varint_put(f + n, hi - lo);
    crust_frame fr;
    CHECK(crust_frame_parse_untrusted(f, n, &fr) == (int)n);
    CHECK(crust_rec_on_ack(c, t, &fr) == CRUST_OK);
}

static void test_rtt(void)
{
    crust_conn *c = new_conn();
    CHECK(c->srtt == 333000 && !c->have_rtt);
    uint64_t pn = send_n(c, 0, 1);
    ack(c, 100000, pn, pn, 0);
    CHECK(c->have_rtt && c->srtt == 100000 && c->rttvar == 50000 && c->min_rtt == 100000);
    pn = send_n(c, 200000, 1);
    ack(c, 320000, pn, c->next_pn - 1, 10000); /* 120 ms, 10 ms of it ack delay */
    /* adjusted = 110 ms: srtt = 7/8*100 + 1/8*110 = 101.25 ms */
    CHECK(c->srtt == 101250);
    CHECK(c->latest_rtt == 120000 && c->min_rtt == 100000);
    /* An ACK of a packet never sent is a protocol violation. */
    uint8_t f[8] = {CRUST_FT_ACK, 0x3f, 0, 0, 0};
    crust_frame fr;
    crust_frame_parse_untrusted(f, 5, &fr);
    CHECK(crust_rec_on_ack(c, 400000, &fr) == CRUST_EPROTO);
    crust_conn_free(c);
}

static void test_packet_threshold(void)
{
    crust_conn *c = new_conn();
    uint64_t p0 = send_n(c, 0, 5); /* p0 .. p0+4 */
    ack(c, 50000, p0 + 1, p0 + 3, 0); /* p0 missing, 3 later acked */
    CHECK(c->st.lost_packets == 1);    /* p0: largest acked >= p0 + 3 */
    CHECK(c->loss_time == 0);
    /* The data of p0 is queued again. */
    CHECK(!crust_rs_empty(&c->ss[0].lost));
    crust_conn_free(c);
}

static void test_time_threshold(void)
{
    crust_conn *c = new_conn();
    uint64_t p0 = send_n(c, 0, 1);
    send_n(c, 10000, 1);
    /* p0 missing, only one later packet acked: no packet threshold. The
     * RTT sample is 90 ms, so p0 is lost 9/8 x 90 = 101.25 ms after its
     * sending, not before. */
    ack(c, 100000, p0 + 1, p0 + 1, 0);
    CHECK(c->st.lost_packets == 0);
    CHECK(c->loss_time == 101250);
    CHECK(crust_conn_next_timeout(c) == 101250);
    crust_conn_handle_timeout(c, 101249);
    CHECK(c->st.lost_packets == 0);
    crust_conn_handle_timeout(c, 101250);
    CHECK(c->st.lost_packets == 1);
    crust_conn_free(c);
}

static void test_pto_backoff(void)
{
    crust_conn *c = new_conn();
    send_n(c, 0, 1);
    uint64_t pto = crust_rec_pto(c); /* 333 + 4*166.5 + 25 ms */
    CHECK(pto == 333000 + 666000 + 25000);
    CHECK(crust_rec_timer(c) == pto);
    crust_conn_handle_timeout(c, pto);
    CHECK(c->pto_count == 1 && c->probes_pending == 2);
    uint8_t out[CRUST_MAX_PACKET];
    int probes = 0;
    while (crust_conn_poll_transmit(c, pto, out, sizeof out))
        probes++;
    CHECK(probes == 2 && c->probes_pending == 0);
    /* The next timeout doubles, counted from the last probe. */
    CHECK(crust_rec_timer(c) == pto + 2 * pto);
    crust_conn_free(c);
}

static void test_replay_window(void)
{
    crust_conn *a = new_conn();
    uint8_t ca[8] = {2, 2, 2, 2, 2, 2, 2, 2}, cb[8] = {1, 1, 1, 1, 1, 1, 1, 1}, k[32] = {0},
            iv[12] = {0};
    crust_config cfg;
    crust_config_default(&cfg);
    crust_conn *b = crust_conn_new(&cfg, ca, cb, 0);
    crust_conn_set_keys(b, 0, CRUST_AEAD_NULL, k, iv, k, iv);
    static uint8_t pkts[9000][64];
    static size_t lens[9000];
    for (int i = 0; i < 9000; i++) {
        a->ping_pending = 1;
        a->probes_pending = 1; /* bypass the window: this is a replay test */
        lens[i] = crust_conn_poll_transmit(a, 0, pkts[i], 64);
        CHECK(lens[i] > 0);
    }
    /* (Packet numbers go out in at least 2 bytes, which decode correctly
     * this far behind the largest.) */
    CHECK(crust_conn_recv(b, 1, pkts[8999], lens[8999]) == CRUST_OK);
    CHECK(crust_conn_recv(b, 1, pkts[1000], lens[1000]) == CRUST_OK); /* in window */
    CHECK(crust_conn_recv(b, 1, pkts[1000], lens[1000]) == CRUST_EDUPLICATE);
    CHECK(crust_conn_recv(b, 1, pkts[500], lens[500]) == CRUST_ETOOOLD); /* 8499 behind */
    CHECK(crust_conn_recv(b, 1, pkts[8999], lens[8999]) == CRUST_EDUPLICATE);
    CHECK(b->st.rx_dropped_duplicate == 2 && b->st.rx_dropped_old == 1);
    crust_conn_free(a);
    crust_conn_free(b);
}

int main(void)
{
    test_rtt();
    test_packet_threshold();
    test_time_threshold();
    test_pto_backoff();
    test_replay_window();
    return check_summary();
}
