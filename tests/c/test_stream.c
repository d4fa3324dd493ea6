/*
 * test_stream.c - the stream-transport mode (crust_config.stream_transport)
 * and its framing: crust_conn_poll_stream output fed back through
 * crust_conn_recv_stream in chunks of every size delivers every message
 * byte-exact; frames hold packets up to CRUST_STREAM_MAX_PACKET; a frame
 * holding a long-header packet stops the parser; a damaged frame closes
 * the connection; nothing is ever retransmitted.
 */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "crust.h"

#define STREAM_CAP (8u << 20)

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint64_t rnd64(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}
static size_t rnd(size_t n) { return (size_t)(rnd64() % n); }

static uint8_t pattern(uint64_t msg, uint64_t i) { return (uint8_t)(msg * 131 + i * 7 + (i >> 9)); }

typedef struct end {
    crust_conn *c;
    uint8_t *in; /* bytes received and not yet consumed */
    size_t in_len;
    uint64_t got_msgs, got_bytes, bad;
    int closed;
    uint32_t close_reason;
} end;

static void pair(crust_conn **a, crust_conn **b, crust_aead_id aead)
{
    crust_config cfg;
    crust_config_default(&cfg);
    cfg.stream_transport = 1;
    cfg.idle_timeout_us = 0;
    cfg.lost_timeout_us = 0; /* nor a dead-peer one: runs cut off for long */
    cfg.keepalive_us = 0;
    uint8_t ca[CRUST_CID_LEN] = {1, 2, 3, 4, 5, 6, 7, 8}, cb[CRUST_CID_LEN] = {9, 9, 9, 9, 9, 9, 9, 9};
    uint8_t k1[CRUST_KEY_LEN], k2[CRUST_KEY_LEN], iv1[CRUST_IV_LEN], iv2[CRUST_IV_LEN];
    memset(k1, 1, sizeof k1);
    memset(k2, 2, sizeof k2);
    memset(iv1, 3, sizeof iv1);
    memset(iv2, 4, sizeof iv2);
    *a = crust_conn_new(&cfg, ca, cb, 0);
    *b = crust_conn_new(&cfg, cb, ca, 0);
    CHECK(*a && *b);
    CHECK(crust_conn_set_keys(*a, 0, aead, k1, iv1, k2, iv2) == CRUST_OK);
    CHECK(crust_conn_set_keys(*b, 0, aead, k2, iv2, k1, iv1) == CRUST_OK);
}

static void end_init(end *e, crust_conn *c)
{
    memset(e, 0, sizeof *e);
    e->c = c;
    e->in = malloc(STREAM_CAP);
}

static void end_drain(end *e, uint8_t *msgbuf, size_t cap)
{
    crust_event ev;
    while (crust_conn_poll_event(e->c, &ev)) {
        if (ev.type == CRUST_EV_MESSAGE) {
            int64_t n = crust_conn_read_message(e->c, ev.prio, msgbuf, cap);
            CHECK(n == (int64_t)ev.len);
            for (int64_t i = 0; i < n; i++)
                if (msgbuf[i] != pattern(e->got_msgs, (uint64_t)i)) {
                    e->bad++;
                    break;
                }
            e->got_msgs++;
            e->got_bytes += (uint64_t)n;
        } else if (ev.type == CRUST_EV_CLOSED) {
            e->closed = 1;
            e->close_reason = ev.reason;
        }
    }
}

/* Append data to e's input and let the connection consume whole frames. */
static int end_feed(end *e, uint64_t now, const uint8_t *d, size_t n)
{
    if (e->in_len + n > STREAM_CAP)
        return -1;
    memcpy(e->in + e->in_len, d, n);
    e->in_len += n;
    size_t used = 99;
    int rc = crust_conn_recv_stream(e->c, now, e->in, e->in_len, &used);
    CHECK(used <= e->in_len);
    memmove(e->in, e->in + used, e->in_len - used);
    e->in_len -= used;
    return rc;
}

/* Move what src has to send into dst, cut into random pieces. */
static size_t move(end *src, end *dst, uint64_t now, uint8_t *wire, size_t cap, size_t max_piece)
{
    size_t n = crust_conn_poll_stream(src->c, now, wire, cap);
    CHECK(n <= cap);
    /* Walk the frames: each is a short-header packet of at most 64 KiB. */
    for (size_t pos = 0; pos < n;) {
        size_t len = ((size_t)wire[pos] << 8) | wire[pos + 1];
        CHECK(len > 0 && pos + 2 + len <= n && (wire[pos + 2] & 0xc0) == 0x40);
        pos += 2 + len;
    }
    for (size_t pos = 0; pos < n;) {
        size_t piece = 1 + rnd(max_piece);
        if (piece > n - pos)
            piece = n - pos;
        CHECK(end_feed(dst, now, wire + pos, piece) == CRUST_OK);
        pos += piece;
    }
    return n;
}

static void test_transfer(crust_aead_id aead, size_t max_piece, size_t wire_cap, size_t big)
{
    crust_conn *a, *b;
    pair(&a, &b, aead);
    end ea, eb;
    end_init(&ea, a);
    end_init(&eb, b);
    uint8_t *wire = malloc(wire_cap);
    size_t msg_cap = 3u << 20;
    uint8_t *msg = malloc(msg_cap), *rbuf = malloc(msg_cap);
    const unsigned nmsgs = 60;
    uint64_t want = 0, sent = 0, now = 0;
    size_t sizes[60];
    for (unsigned i = 0; i < nmsgs; i++) {
        size_t s = i % 7 == 0 ? rnd(big) : rnd(5000);
        sizes[i] = s;
        want += s;
    }
    int progress = 1;
    for (int round = 0; round < 100000 && eb.got_msgs < nmsgs && progress; round++) {
        while (sent < nmsgs) {
            size_t s = sizes[sent];
            for (size_t i = 0; i < s; i++)
                msg[i] = pattern(sent, i);
            if (crust_conn_send(a, now, msg, s, 1, NULL) != CRUST_OK)
                break;
            sent++;
        }
        now += 100;
        size_t moved = move(&ea, &eb, now, wire, wire_cap, max_piece);
        end_drain(&eb, rbuf, msg_cap);
        moved += move(&eb, &ea, now, wire, wire_cap, max_piece);
        end_drain(&ea, rbuf, msg_cap);
        progress = moved > 0 || sent < nmsgs || eb.got_msgs < nmsgs;
    }
    CHECK(eb.got_msgs == nmsgs);
    CHECK(eb.got_bytes == want);
    CHECK(eb.bad == 0);
    CHECK(!ea.closed && !eb.closed);
    crust_stats st;
    crust_conn_get_stats(a, &st);
    CHECK(st.retransmitted_bytes == 0 && st.lost_packets == 0 && st.pto_count == 0);
    CHECK(st.mtu == CRUST_STREAM_MAX_PACKET);
    CHECK(crust_conn_next_timeout(a) == UINT64_MAX); /* no PTO, no keepalive */
    crust_conn_get_stats(b, &st);
    CHECK(st.rx_dropped_decrypt == 0 && st.rx_dropped_malformed == 0);
    crust_conn_free(a);
    crust_conn_free(b);
    free(ea.in);
    free(eb.in);
    free(wire);
    free(msg);
    free(rbuf);
}

static void test_long_header_and_damage(void)
{
    crust_conn *a, *b;
    pair(&a, &b, CRUST_AEAD_NULL);
    static uint8_t wire[1 << 18], buf[1 << 18];
    uint8_t m[100] = {0};
    CHECK(crust_conn_send(a, 0, m, sizeof m, 0, NULL) == CRUST_OK);
    size_t n1 = crust_conn_poll_stream(a, 0, wire, sizeof wire);
    CHECK(n1 > 0);
    /* A handshake frame, then another engine frame. */
    size_t pos = n1;
    wire[pos++] = 0;
    wire[pos++] = 20;
    wire[pos] = 0xc0;
    memset(wire + pos + 1, 7, 19);
    pos += 20;
    CHECK(crust_conn_send(a, 0, m, sizeof m, 0, NULL) == CRUST_OK);
    size_t n2 = crust_conn_poll_stream(a, 0, wire + pos, sizeof wire - pos);
    CHECK(n2 > 0);
    size_t used = 0;
    CHECK(crust_conn_recv_stream(b, 0, wire, pos + n2, &used) == CRUST_ENOTOURS);
    CHECK(used == n1);
    CHECK(crust_conn_recv_stream(b, 0, wire + n1 + 22, n2, &used) == CRUST_OK);
    CHECK(used == n2);
    /* A partial frame is left alone. */
    CHECK(crust_conn_send(a, 0, m, sizeof m, 0, NULL) == CRUST_OK);
    size_t n3 = crust_conn_poll_stream(a, 0, wire, sizeof wire);
    CHECK(crust_conn_recv_stream(b, 0, wire, n3 - 1, &used) == CRUST_OK && used == 0);
    CHECK(crust_conn_recv_stream(b, 0, wire, 1, &used) == CRUST_OK && used == 0);
    /* A flipped bit: the packet is rejected and the connection closes. */
    wire[n3 - 5] ^= 0x10;
    CHECK(crust_conn_recv_stream(b, 0, wire, n3, &used) == CRUST_EDECRYPT);
    CHECK(used == n3);
    crust_event ev;
    int msgs = 0, closed = 0;
    while (crust_conn_poll_event(b, &ev)) {
        if (ev.type == CRUST_EV_MESSAGE) {
            CHECK(crust_conn_read_message(b, ev.prio, buf, sizeof buf) == 100);
            msgs++;
        }
        if (ev.type == CRUST_EV_CLOSED) {
            closed = 1;
            CHECK(ev.reason == CRUST_CLOSE_PROTOCOL);
        }
    }
    CHECK(msgs == 2 && closed);
    /* It tells the peer, which closes too. */
    size_t nc = crust_conn_poll_stream(b, 0, wire, sizeof wire);
    CHECK(nc > 0);
    CHECK(crust_conn_recv_stream(a, 0, wire, nc, &used) == CRUST_OK && used == nc);
    closed = 0;
    while (crust_conn_poll_event(a, &ev))
        closed |= ev.type == CRUST_EV_CLOSED;
    CHECK(closed);
    /* Bad arguments. */
    CHECK(crust_conn_recv_stream(b, 0, wire, 10, NULL) == CRUST_EINVAL);
    CHECK(crust_conn_recv_stream(b, 0, NULL, 10, &used) == CRUST_EINVAL);
    CHECK(crust_conn_poll_stream(b, 0, NULL, 10) == 0);
    crust_conn_free(a);
    crust_conn_free(b);
}

static void test_datagram_mode_refuses_big_packets(void)
{
    crust_conn *a, *b;
    pair(&a, &b, CRUST_AEAD_NULL);
    crust_config cfg;
    crust_config_default(&cfg);
    uint8_t ca[CRUST_CID_LEN] = {1, 2, 3, 4, 5, 6, 7, 8}, cb[CRUST_CID_LEN] = {9, 9, 9, 9, 9, 9, 9, 9};
    uint8_t k1[CRUST_KEY_LEN], k2[CRUST_KEY_LEN], iv1[CRUST_IV_LEN], iv2[CRUST_IV_LEN];
    memset(k1, 1, sizeof k1);
    memset(k2, 2, sizeof k2);
    memset(iv1, 3, sizeof iv1);
    memset(iv2, 4, sizeof iv2);
    crust_conn *d = crust_conn_new(&cfg, cb, ca, 0);
    CHECK(crust_conn_set_keys(d, 0, CRUST_AEAD_NULL, k2, iv2, k1, iv1) == CRUST_OK);
    static uint8_t msg[200000], wire[65537 + 1000]; /* no room for a second */
    CHECK(crust_conn_send(a, 0, msg, sizeof msg, 0, NULL) == CRUST_OK);
    size_t n = crust_conn_poll_stream(a, 0, wire, sizeof wire);
    /* Control frames (the initial MAX_DATA) travel in a small packet of
     * their own, then comes one full-size data packet. */
    size_t len0 = ((size_t)wire[0] << 8) | wire[1];
    CHECK(len0 < 100 && crust_conn_recv(b, 0, wire + 2, len0) == CRUST_OK);
    uint8_t *big = wire + 2 + len0;
    size_t len = ((size_t)big[0] << 8) | big[1];
    CHECK(len == CRUST_STREAM_MAX_PACKET && n == 2 + len0 + 2 + len);
    CHECK(crust_conn_recv(d, 0, big + 2, len) == CRUST_EMALFORMED);
    CHECK(crust_conn_recv(b, 0, big + 2, len) == CRUST_OK);
    /* The datagram API still builds datagram-sized packets in stream mode. */
    uint8_t dg[CRUST_MAX_PACKET];
    size_t m = crust_conn_poll_transmit(a, 0, dg, sizeof dg);
    CHECK(m > 0 && m <= CRUST_MAX_PACKET);
    crust_config bad = cfg;
    bad.stream_transport = 2;
    const char *field = NULL;
    CHECK(crust_config_validate(&bad, &field) == CRUST_EINVAL && strcmp(field, "stream_transport") == 0);
    crust_conn_free(a);
    crust_conn_free(b);
    crust_conn_free(d);
}

int main(void)
{
    /* (piece sizes, poll_stream buffer, largest big message) */
    test_transfer(CRUST_AEAD_NULL, 1, 4096, 100000);
    test_transfer(CRUST_AEAD_NULL, 70000, 1u << 20, 3u << 20);
    test_transfer(CRUST_AEAD_NULL, 3000, 200000, 3u << 20);
    test_transfer(CRUST_AEAD_NULL, 65536, 3000, 1u << 20);
    test_long_header_and_damage();
    test_datagram_mode_refuses_big_packets();
    return check_summary();
}
