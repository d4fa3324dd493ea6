/*
 * test_recovery.c - loss recovery (RFC 9002) on its own: a crust_rec with
 * a recording crust_rec_ops, no connection. RTT estimation, the packet and
 * time thresholds, PTO with backoff, persistent congestion and the
 * sent-packet ring. ACK frames are crafted by hand so each
 * rule is checked in isolation.
 */
#include <string.h>

#include "check.h"
#include "frame.h"
#include "recovery.h"

#define MAX_EVENTS 256
#define PKT 1000

/* What the owner was told, in order. */
typedef struct rec_log {
    char kind[MAX_EVENTS];      /* 'a' acked, 's' spurious, 'l' lost, 'd' acks done,
                                   'p' persistent congestion, 'L' loss, 'S' ack sample */
    uint64_t pn[MAX_EVENTS];
    uint64_t bytes[MAX_EVENTS]; /* lost bytes ('L'), newly acked bytes ('S') */
    uint32_t frame_len[MAX_EVENTS];
    int n;
} rec_log;

static void log_event(rec_log *g, char kind, uint64_t pn, uint64_t bytes, uint32_t frame_len)
{
    CHECK(g->n < MAX_EVENTS);
    if (g->n >= MAX_EVENTS)
        return;
    g->kind[g->n] = kind;
    g->pn[g->n] = pn;
    g->bytes[g->n] = bytes;
    g->frame_len[g->n] = frame_len;
    g->n++;
}

static void on_acked(void *ctx, uint64_t now, uint64_t pn, const crust_sent_pkt *p, int was_lost)
{
    (void)now;
    log_event(ctx, was_lost ? 's' : 'a', pn, p->size, p->nframes ? p->frames[0].len : 0);
}

static void on_lost(void *ctx, uint64_t now, uint64_t pn, const crust_sent_pkt *p)
{
    (void)now;
    log_event(ctx, 'l', pn, p->size, p->nframes ? p->frames[0].len : 0);
}

static void on_acks_done(void *ctx, uint64_t now)
{
    (void)now;
    log_event(ctx, 'd', 0, 0, 0);
}

static void on_persistent(void *ctx, uint64_t now)
{
    (void)now;
    log_event(ctx, 'p', 0, 0, 0);
}

static void on_loss(void *ctx, uint64_t now, uint64_t lost, uint64_t largest_lost_sent)
{
    (void)now;
    log_event(ctx, 'L', largest_lost_sent, lost, 0);
}

static void on_sample(void *ctx, uint64_t now, const crust_rate_sample *rs)
{
    (void)now;
    log_event(ctx, 'S', 0, rs->newly_acked, 0);
}

static const crust_rec_ops ops = {on_acked, on_lost, on_acks_done, on_persistent, on_loss,
                                  on_sample};

static void setup(crust_rec *r, rec_log *g)
{
    memset(g, 0, sizeof *g);
    crust_rec_init(r, 333000, 25000, &ops, g);
}

/* Send one packet at t: ack-eliciting, of PKT bytes, carrying a STREAM
 * frame of data_len bytes (none if 0). Returns its number. */
static uint64_t send_one(crust_rec *r, uint64_t t, int eliciting, uint32_t data_len)
{
    crust_sent_pkt scratch, info;
    memset(&info, 0, sizeof info);
    crust_sent_pkt *sp = crust_rec_slot(r, eliciting, &scratch);
    CHECK(sp != NULL);
    uint64_t pn = r->next_pn;
    info.size = PKT;
    info.time_sent = t;
    if (eliciting)
        info.flags = SP_ACK_ELICITING | SP_IN_FLIGHT;
    if (data_len) {
        info.nframes = 1;
        info.frames[0].off = pn * 100;
        info.frames[0].len = data_len;
    }
    crust_rec_on_sent(r, t, sp, &info);
    CHECK(r->next_pn == pn + 1);
    return pn;
}

/* An ACK frame of [lo, hi] (inclusive), or of two ranges [lo2, hi2] and
 * [lo, hi] when lo2 <= hi2 (hi2 < lo - 1). */
static int ack2(crust_rec *r, uint64_t t, uint64_t lo, uint64_t hi, uint64_t lo2, uint64_t hi2,
                uint64_t delay_us)
{
    uint8_t f[64];
    size_t n = 0;
    int two = lo2 <= hi2;
    f[n++] = CRUST_FT_ACK;
    n += crust_varint_put(f + n, hi);
    n += crust_varint_put(f + n, delay_us >> CRUST_ACK_DELAY_EXP);
    n += crust_varint_put(f + n, two ? 1 : 0);
    n += crust_varint_put(f + n, hi - lo);
    if (two) {
        n += crust_varint_put(f + n, lo - hi2 - 2);
        n += crust_varint_put(f + n, hi2 - lo2);
    }
    crust_frame fr;
    CHECK(crust_frame_parse_untrusted(f, n, &fr) == (int)n);
    CHECK(fr.type == CRUST_FT_ACK);
    return crust_rec_on_ack(r, t, &fr.ack);
}

static int ack(crust_rec *r, uint64_t t, uint64_t lo, uint64_t hi, uint64_t delay_us)
{
    return ack2(r, t, lo, hi, 1, 0, delay_us);
}

static int count(const rec_log *g, char kind)
{
    int k = 0;
    for (int i = 0; i < g->n; i++)
        k += g->kind[i] == kind;
    return k;
}

static void test_rtt(void)
{
    crust_rec r;
    rec_log g;
    setup(&r, &g);
    CHECK(r.srtt == 333000 && r.rttvar == 166500 && !r.have_rtt);
    uint64_t pn = send_one(&r, 0, 1, 0);
    CHECK(ack(&r, 100000, pn, pn, 0) == CRUST_OK);
    CHECK(r.have_rtt && r.srtt == 100000 && r.rttvar == 50000 && r.min_rtt == 100000);
    pn = send_one(&r, 200000, 1, 0);
    CHECK(ack(&r, 320000, pn, pn, 10000) == CRUST_OK); /* 120 ms, 10 ms of it ack delay */
    /* adjusted = 110 ms: srtt = 7/8*100 + 1/8*110 = 101.25 ms */
    CHECK(r.srtt == 101250);
    CHECK(r.latest_rtt == 120000 && r.min_rtt == 100000);
    /* An ack delay beyond max_ack_delay counts as max_ack_delay only. */
    pn = send_one(&r, 400000, 1, 0);
    CHECK(ack(&r, 540000, pn, pn, 1000000) == CRUST_OK); /* 140 - 25 = 115 ms */
    CHECK(r.srtt == (7 * 101250 + 115000) / 8);
    /* An ACK of a packet never sent is a protocol violation. */
    CHECK(ack(&r, 600000, r.next_pn, r.next_pn, 0) == CRUST_EPROTO);
    crust_rec_free(&r);
}

static void test_ack_callbacks(void)
{
    crust_rec r;
    rec_log g;
    setup(&r, &g);
    uint64_t p0 = send_one(&r, 0, 1, 10);
    send_one(&r, 0, 1, 20);
    send_one(&r, 0, 1, 30);
    CHECK(r.bytes_in_flight == 3 * PKT && r.ack_eliciting_in_flight == 3);
    CHECK(ack(&r, 50000, p0, p0 + 2, 0) == CRUST_OK);
    /* Highest first, then done, then the sample for the congestion
     * controller with all the bytes newly acknowledged. */
    CHECK(g.n == 5);
    CHECK(g.kind[0] == 'a' && g.pn[0] == p0 + 2 && g.frame_len[0] == 30);
    CHECK(g.kind[1] == 'a' && g.pn[1] == p0 + 1 && g.frame_len[1] == 20);
    CHECK(g.kind[2] == 'a' && g.pn[2] == p0 && g.frame_len[2] == 10);
    CHECK(g.kind[3] == 'd' && g.kind[4] == 'S' && g.bytes[4] == 3 * PKT);
    CHECK(r.bytes_in_flight == 0 && r.ack_eliciting_in_flight == 0 && r.delivered == 3 * PKT);
    /* Nothing outstanding: the ring is let go. */
    CHECK(r.sent == NULL && crust_rec_memory(&r) == 0 && r.sent_lo == r.next_pn);
    CHECK(crust_rec_timer(&r) == UINT64_MAX);
    /* The same ACK again tells nothing new. */
    g.n = 0;
    CHECK(ack(&r, 60000, p0, p0 + 2, 0) == CRUST_OK);
    CHECK(count(&g, 'a') == 0 && count(&g, 'S') == 0);
    /* Two ranges with a gap: each range highest first, the gap untouched
     * (one packet behind the largest is not lost yet). */
    uint64_t p3 = send_one(&r, 70000, 1, 0);
    send_one(&r, 70000, 1, 0);
    send_one(&r, 70000, 1, 0);
    g.n = 0;
    CHECK(ack2(&r, 80000, p3 + 2, p3 + 2, p3, p3, 0) == CRUST_OK);
    CHECK(g.kind[0] == 'a' && g.pn[0] == p3 + 2 && g.kind[1] == 'a' && g.pn[1] == p3);
    CHECK(count(&g, 'a') == 2 && count(&g, 'l') == 0 && r.bytes_in_flight == PKT);
    CHECK(r.sent_lo == p3 + 1 && r.loss_time != 0);
    crust_rec_free(&r);
}

static void test_non_eliciting(void)
{
    crust_rec r;
    rec_log g;
    setup(&r, &g);
    /* Nothing outstanding: a packet nothing waits for needs no ring. */
    crust_sent_pkt scratch;
    CHECK(crust_rec_slot(&r, 0, &scratch) == &scratch);
    uint64_t p0 = send_one(&r, 0, 0, 0);
    CHECK(r.sent == NULL && r.sent_lo == p0 + 1 && r.bytes_in_flight == 0);
    /* Behind an outstanding packet it takes a slot, already finished. */
    uint64_t p1 = send_one(&r, 0, 1, 5);
    CHECK(crust_rec_slot(&r, 0, &scratch) != &scratch);
    send_one(&r, 0, 0, 0);
    CHECK(r.bytes_in_flight == PKT && r.ack_eliciting_in_flight == 1);
    CHECK(crust_rec_oldest_eliciting(&r) != NULL &&
          crust_rec_oldest_eliciting(&r)->frames[0].len == 5);
    CHECK(ack(&r, 10000, p1, p1, 0) == CRUST_OK);
    CHECK(count(&g, 'a') == 1 && r.sent_lo == r.next_pn && r.sent == NULL);
    CHECK(crust_rec_oldest_eliciting(&r) == NULL);
    crust_rec_free(&r);
}

static void test_packet_threshold(void)
{
    crust_rec r;
    rec_log g;
    setup(&r, &g);
    uint64_t p0 = send_one(&r, 0, 1, 7); /* p0 .. p0+4 */
    for (int i = 0; i < 4; i++)
        send_one(&r, 0, 1, 0);
    CHECK(ack(&r, 50000, p0 + 1, p0 + 3, 0) == CRUST_OK); /* p0 missing, 3 later acked */
    /* p0 lost (largest acked >= p0 + 3), after the acks, with its frames,
     * and reported as congestion before the rate sample. */
    CHECK(count(&g, 'l') == 1 && r.loss_time == 0);
    CHECK(g.kind[3] == 'd' && g.kind[4] == 'l' && g.pn[4] == p0 && g.frame_len[4] == 7);
    CHECK(g.kind[5] == 'L' && g.bytes[5] == PKT && g.pn[5] == 0 && g.kind[6] == 'S');
    CHECK(count(&g, 'p') == 0);
    CHECK(r.bytes_in_flight == PKT && r.ack_eliciting_in_flight == 1); /* p0 + 4 */
    /* p0 and all below p0 + 4 are settled, so the ring starts at p0 + 4:
     * a late ACK of p0 tells nothing (its data went again already). */
    CHECK(r.sent_lo == p0 + 4);
    g.n = 0;
    CHECK(ack(&r, 60000, p0, p0 + 3, 0) == CRUST_OK);
    CHECK(count(&g, 'a') == 0 && count(&g, 's') == 0 && count(&g, 'l') == 0);
    CHECK(r.bytes_in_flight == PKT);
    crust_rec_free(&r);
}

static void test_time_threshold(void)
{
    crust_rec r;
    rec_log g;
    setup(&r, &g);
    uint64_t p0 = send_one(&r, 0, 1, 0);
    send_one(&r, 10000, 1, 0);
    /* p0 missing, only one later packet acked: no packet threshold. The
     * RTT sample is 90 ms, so p0 is lost 9/8 x 90 = 101.25 ms after its
     * sending, not before. */
    CHECK(ack(&r, 100000, p0 + 1, p0 + 1, 0) == CRUST_OK);
    CHECK(count(&g, 'l') == 0);
    CHECK(r.loss_time == 101250 && crust_rec_timer(&r) == 101250);
    CHECK(crust_rec_on_timeout(&r, 101249) == 0 && count(&g, 'l') == 0);
    g.n = 0;
    CHECK(crust_rec_on_timeout(&r, 101250) == 0); /* a loss, not a PTO */
    CHECK(g.n == 2 && g.kind[0] == 'l' && g.pn[0] == p0 && g.kind[1] == 'L');
    CHECK(r.loss_time == 0 && r.bytes_in_flight == 0 && r.sent == NULL);
    crust_rec_free(&r);
}

static void test_pto_backoff(void)
{
    crust_rec r;
    rec_log g;
    setup(&r, &g);
    send_one(&r, 0, 1, 0);
    uint64_t pto = crust_rec_pto(&r); /* 333 + 4*166.5 + 25 ms */
    CHECK(pto == 333000 + 666000 + 25000);
    CHECK(crust_rec_timer(&r) == pto);
    CHECK(crust_rec_on_timeout(&r, pto - 1) == 0 && r.pto_count == 0);
    CHECK(crust_rec_on_timeout(&r, pto) == 1 && r.pto_count == 1);
    CHECK(g.n == 0); /* a PTO declares nothing lost */
    send_one(&r, pto, 1, 0);
    send_one(&r, pto, 1, 0);
    /* The next timeout doubles, counted from the last probe. */
    CHECK(crust_rec_timer(&r) == pto + 2 * pto);
    CHECK(crust_rec_on_timeout(&r, 3 * pto) == 1 && r.pto_count == 2);
    CHECK(crust_rec_timer(&r) == pto + 4 * pto);
    /* However long the backoff, a probe goes at least once a minute. */
    r.pto_count = 12;
    CHECK(crust_rec_timer(&r) == pto + CRUST_MAX_PTO_US);
    /* An acknowledgment resets the backoff. */
    CHECK(ack(&r, 4 * pto, 0, 0, 0) == CRUST_OK && r.pto_count == 0);
    crust_rec_free(&r);
}

static void test_persistent_congestion(void)
{
    crust_rec r;
    rec_log g;
    setup(&r, &g);
    uint64_t ms = 1000;
    uint64_t p0 = send_one(&r, 0, 1, 0);
    CHECK(ack(&r, 100 * ms, p0, p0, 0) == CRUST_OK); /* srtt 100 ms: PTO 325 ms */
    CHECK(crust_rec_pto(&r) == 325 * ms);
    /* p1..p3 span 1100 ms > 3 PTO (975 ms) and are all lost when p4 is
     * acknowledged (p1 by the packet threshold, p2 and p3 by time). */
    send_one(&r, 200 * ms, 1, 0);
    send_one(&r, 700 * ms, 1, 0);
    send_one(&r, 1300 * ms, 1, 0);
    uint64_t p4 = send_one(&r, 1400 * ms, 1, 0);
    g.n = 0;
    CHECK(ack(&r, 1500 * ms, p4, p4, 0) == CRUST_OK);
    CHECK(count(&g, 'l') == 3 && count(&g, 'p') == 1);
    CHECK(g.kind[5] == 'p' && g.kind[6] == 'L' && g.bytes[6] == 3 * PKT &&
          g.pn[6] == 1300 * ms);
    crust_rec_free(&r);

    /* The same losses within 3 PTO are not persistent congestion. */
    setup(&r, &g);
    p0 = send_one(&r, 0, 1, 0);
    CHECK(ack(&r, 100 * ms, p0, p0, 0) == CRUST_OK);
    send_one(&r, 200 * ms, 1, 0);
    send_one(&r, 300 * ms, 1, 0);
    send_one(&r, 400 * ms, 1, 0);
    p4 = send_one(&r, 900 * ms, 1, 0);
    g.n = 0;
    CHECK(ack(&r, 1000 * ms, p4, p4, 0) == CRUST_OK);
    CHECK(count(&g, 'l') == 3 && count(&g, 'p') == 0);
    crust_rec_free(&r);
}

static void test_ring_grows(void)
{
    crust_rec r;
    rec_log g;
    setup(&r, &g);
    /* Far more outstanding packets than the first ring holds: records
     * survive the growth. */
    for (uint32_t i = 0; i < 100; i++)
        send_one(&r, i, 1, i + 1);
    CHECK(r.sent_cap >= 100 && crust_rec_memory(&r) == r.sent_cap * sizeof(crust_sent_pkt));
    CHECK(ack(&r, 1000, 0, 99, 0) == CRUST_OK);
    CHECK(count(&g, 'a') == 100);
    int ok = 1;
    for (int i = 0; i < 100; i++)
        ok &= g.kind[i] == 'a' && g.pn[i] == (uint64_t)(99 - i) && g.frame_len[i] == 100u - i;
    CHECK(ok);
    crust_rec_free(&r);
}

int main(void)
{
    test_rtt();
    test_ack_callbacks();
    test_non_eliciting();
    test_packet_threshold();
    test_time_threshold();
    test_pto_backoff();
    test_persistent_congestion();
    test_ring_grows();
    return check_summary();
}
