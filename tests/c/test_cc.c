/*
 * test_cc.c - unit tests of the congestion controllers (cc_cubic.c,
 * cc_bbr.c), driven only through their crust_cc_ops tables.
 *
 * CUBIC is fed idealised rounds (a window-limited sender, one ACK per
 * packet) so its arithmetic can be checked against RFC 9438. BBR is a
 * model-based controller, so it is run against a small packet-level model
 * of a path: one FIFO bottleneck of fixed rate with a tail-drop queue, a
 * fixed base RTT, optional random loss, and delivery-rate samples computed
 * here as draft-cheng-iccrg-delivery-rate-estimation (and recovery.c) do.
 *
 * Build: cc -O2 -Wall -Wextra -Werror -Icsrc tests/c/test_cc.c
 *           csrc/cc_cubic.c csrc/cc_bbr.c -lm -o /tmp/test_cc
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "cc.h"

static int passed, failed;

#define CHECK(cond)                                                      \
    do {                                                                 \
        if (cond) {                                                      \
            passed++;                                                    \
        } else {                                                         \
            failed++;                                                    \
            printf("%s:%d: FAIL: %s\n", __FILE__, __LINE__, #cond);      \
        }                                                                \
    } while (0)

/* Check lo <= v <= hi and show the value when it is not. */
#define CHECK_RANGE(v, lo, hi)                                                \
    do {                                                                      \
        double v_ = (double)(v), lo_ = (double)(lo), hi_ = (double)(hi);      \
        if (v_ >= lo_ && v_ <= hi_) {                                         \
            passed++;                                                         \
        } else {                                                              \
            failed++;                                                         \
            printf("%s:%d: FAIL: %s = %.4g not in [%.4g, %.4g]\n", __FILE__,  \
                   __LINE__, #v, v_, lo_, hi_);                               \
        }                                                                     \
    } while (0)

#define MTU 1200u
#define MS 1000u
#define SEC 1000000u

/* A controller and the environment the connection would give it. */
typedef struct ctl {
    const crust_cc_ops *ops;
    uint64_t st[CRUST_CC_STATE_WORDS];
    crust_cc_env env;
    uint64_t delivered;   /* connection's delivered count */
} ctl;

static void ctl_init(ctl *c, const crust_cc_ops *ops, uint64_t srtt_us, uint64_t now)
{
    memset(c, 0, sizeof *c);
    c->ops = ops;
    c->env.mtu = MTU;
    c->env.initial_cwnd_pkts = 10;
    c->env.srtt_us = srtt_us;
    c->env.min_rtt_us = UINT64_MAX;
    ops->init(c->st, &c->env, now);
}

static uint64_t cwnd(const ctl *c) { return c->ops->cwnd(c->st); }
static uint64_t pacing(const ctl *c) { return c->ops->pacing_rate(c->st, &c->env); }

/* One round trip of a window-limited sender on an ideal path. The window
 * at the start of the round is sent evenly over one RTT, each send filling
 * the window, and each packet is acked exactly `rtt` later, one ACK per
 * packet, so every RTT sample is `rtt`. */
static void cubic_round(ctl *c, uint64_t *now, uint64_t rtt, int app_limited)
{
    uint64_t n = cwnd(c) / MTU, prior = c->delivered;
    if (n == 0)
        n = 1;
    c->env.srtt_us = rtt;
    c->env.min_rtt_us = c->env.min_rtt_us < rtt ? c->env.min_rtt_us : rtt;
    for (uint64_t i = 0; i < n; i++) {
        uint64_t t = *now + rtt + i * rtt / n;
        c->ops->on_sent(c->st, &c->env, t - rtt, MTU, n * MTU);
        c->delivered += MTU;
        crust_rate_sample rs = {
            .delivery_rate = n * MTU * SEC / rtt,
            .delivered = (i + 1) * MTU,
            .interval_us = rtt,
            .rtt_us = rtt,
            .prior_delivered = prior,
            .newly_acked = MTU,
            .prior_in_flight = n * MTU,
            .bytes_in_flight = (n - i - 1) * MTU,
            .delivered_total = c->delivered,
            .is_app_limited = app_limited,
        };
        c->ops->on_ack(c->st, &c->env, t, &rs);
    }
    *now += rtt;
}

/* ---- CUBIC ------------------------------------------------------------ */

static void test_cubic_init(void)
{
    ctl c;
    ctl_init(&c, &crust_cc_cubic, 100 * MS, 0);
    CHECK(strcmp(crust_cc_cubic.name, "cubic") == 0);
    CHECK(cwnd(&c) == 10 * MTU);
    /* Slow start paces at twice the window's rate. */
    CHECK(pacing(&c) == 10 * MTU * 2 * 10);
}

static void test_cubic_slow_start(void)
{
    ctl c;
    uint64_t now = 0;
    ctl_init(&c, &crust_cc_cubic, 100 * MS, now);
    for (int r = 0; r < 4; r++) {
        uint64_t before = cwnd(&c);
        cubic_round(&c, &now, 100 * MS, 0);
        CHECK(cwnd(&c) == 2 * before);
    }
    CHECK(cwnd(&c) == 160 * MTU);
}

/* HyStart++: an RTT rise of more than max(4 ms, min(rtt/8, 16 ms)) moves
 * to conservative slow start (growth / 4), and 5 rounds later to
 * congestion avoidance without any loss. */
static void test_cubic_hystart(void)
{
    ctl c;
    uint64_t now = 0;
    ctl_init(&c, &crust_cc_cubic, 100 * MS, now);
    for (int r = 0; r < 3; r++)
        cubic_round(&c, &now, 100 * MS, 0);
    CHECK(cwnd(&c) == 80 * MTU);
    /* A queue builds: 130 ms > 100 + 12.5 ms. The 8th sample of the round
     * shows it, so 7 ACKs still double and the other 73 grow a quarter. */
    cubic_round(&c, &now, 130 * MS, 0);
    CHECK(cwnd(&c) == (80 + 7) * MTU + 73 * (MTU / 4));
    uint64_t before = cwnd(&c);
    cubic_round(&c, &now, 130 * MS, 0);
    CHECK_RANGE((double)cwnd(&c) / (double)before, 1.24, 1.26);
    CHECK(pacing(&c) == cwnd(&c) * 2 * SEC / (130 * MS)); /* still slow start */
    for (int r = 0; r < 4; r++)
        cubic_round(&c, &now, 130 * MS, 0);
    /* In congestion avoidance now: the pacing gain drops to 1.25 and the
     * window grows by far less than a quarter per round. */
    CHECK(pacing(&c) == cwnd(&c) * 125 / 100 * SEC / (130 * MS));
    before = cwnd(&c);
    cubic_round(&c, &now, 130 * MS, 0);
    CHECK(cwnd(&c) > before);
    CHECK(cwnd(&c) < before + before / 8);
}

/* HyStart++ must not leave slow start on RTT samples that do not rise. */
static void test_cubic_hystart_flat_rtt(void)
{
    ctl c;
    uint64_t now = 0;
    ctl_init(&c, &crust_cc_cubic, 50 * MS, now);
    for (int r = 0; r < 8; r++)
        cubic_round(&c, &now, 50 * MS, 0);
    CHECK(cwnd(&c) == (10u << 8) * MTU);
}

/* A fresh controller slow-started to at least `pkts` packets (the window
 * doubles per round, so it lands on a power-of-two multiple of 10). */
static void cubic_grow_to(ctl *c, uint64_t *now, uint64_t rtt, uint64_t pkts)
{
    ctl_init(c, &crust_cc_cubic, rtt, *now);
    while (cwnd(c) < pkts * MTU)
        cubic_round(c, now, rtt, 0);
}

static void test_cubic_loss_once_per_recovery(void)
{
    ctl c;
    uint64_t now = 0;
    cubic_grow_to(&c, &now, 100 * MS, 100);
    uint64_t w = cwnd(&c); /* 160 packets after the slow-start rounds */
    now += 1;
    c.ops->on_loss(c.st, &c.env, now, MTU, now - 50 * MS, w - MTU);
    CHECK(cwnd(&c) == w * 7 / 10);
    /* More losses of packets sent before the recovery period began (even
     * at its very instant) do not reduce again. */
    c.ops->on_loss(c.st, &c.env, now + 10, 3 * MTU, now - 1, w);
    c.ops->on_loss(c.st, &c.env, now + 20, MTU, now, w);
    CHECK(cwnd(&c) == w * 7 / 10);
    /* ACKs of packets sent before recovery began do not grow it either. */
    crust_rate_sample rs = {.rtt_us = 100 * MS, .newly_acked = 10 * MTU,
                            .prior_delivered = c.delivered,
                            .delivered_total = c.delivered + 10 * MTU,
                            .prior_in_flight = w, .bytes_in_flight = w};
    c.ops->on_ack(c.st, &c.env, now + 50 * MS, &rs);
    CHECK(cwnd(&c) == w * 7 / 10);
    /* A loss of a packet sent after recovery began is a new episode. */
    uint64_t w2 = cwnd(&c);
    c.ops->on_loss(c.st, &c.env, now + 200 * MS, MTU, now + 1, w2);
    CHECK(cwnd(&c) == w2 * 7 / 10);
    /* The window never drops below the RFC 9002 minimum. */
    for (int i = 1; i < 40; i++)
        c.ops->on_loss(c.st, &c.env, now + 200 * MS + (uint64_t)i * 1000,
                       MTU, now + 200 * MS + (uint64_t)i * 1000 - 1, MTU);
    CHECK(cwnd(&c) == CRUST_CC_MIN_CWND(MTU));
}

/* After a loss at W_max, the window follows W(t) = C (t - K)^3 + W_max
 * with K = cbrt(W_max (1 - beta) / C), in packets and seconds. */
static void test_cubic_curve(void)
{
    ctl c;
    uint64_t now = 0;
    const uint64_t rtt = 100 * MS;
    cubic_grow_to(&c, &now, rtt, 100);
    /* Loss at 160 packets: W_max = 160, cwnd = 112. */
    double wmax = (double)cwnd(&c) / MTU;
    c.ops->on_loss(c.st, &c.env, now, MTU, now - 1, cwnd(&c));
    CHECK(cwnd(&c) == (uint64_t)(wmax * 0.7) * MTU);
    double k = cbrt(wmax * 0.3 / 0.4);
    now += 1;
    uint64_t epoch = now; /* the first round after the loss starts the epoch */
    double worst = 0;
    int points = 0;
    while (now - epoch < (uint64_t)((k + 1.5) * SEC)) {
        cubic_round(&c, &now, rtt, 0);
        double t = (double)(now - epoch) / SEC;
        double expect = 0.4 * pow(t - k, 3) + wmax;
        double got = (double)cwnd(&c) / MTU;
        double err = fabs(got - expect) / expect;
        worst = err > worst ? err : worst;
        points++;
    }
    CHECK(points > 40);
    CHECK_RANGE(worst, 0, 0.05);
    /* Around t = K the window sits at the old maximum (the plateau). */
    CHECK(cwnd(&c) > (uint64_t)(wmax * MTU));
}

/* With a short RTT, AIMD would outgrow the cubic curve: the Reno-friendly
 * estimate (alpha 0.53 up to cwnd_prior, then 1 packet per RTT) rules. */
static void test_cubic_reno_friendly(void)
{
    ctl c;
    uint64_t now = 0;
    const uint64_t rtt = 1 * MS;
    ctl_init(&c, &crust_cc_cubic, rtt, now);
    cubic_round(&c, &now, rtt, 0);
    cubic_round(&c, &now, rtt, 0); /* 40 packets */
    c.ops->on_loss(c.st, &c.env, now, MTU, now - 1, cwnd(&c));
    CHECK(cwnd(&c) == 28 * MTU);
    now += 1;
    for (int r = 0; r < 100; r++)
        cubic_round(&c, &now, rtt, 0);
    /* W_est: 28 -> 40 at 0.53/RTT (~23 RTTs), then +1/RTT: ~117. The cubic
     * curve alone (K = 3.1 s) would be at about 29 packets. */
    CHECK_RANGE((double)cwnd(&c) / MTU, 105, 125);
}

static void test_cubic_app_limited(void)
{
    ctl c;
    uint64_t now = 0;
    ctl_init(&c, &crust_cc_cubic, 100 * MS, now);
    c.ops->on_app_limited(c.st, now);
    cubic_round(&c, &now, 100 * MS, 1);
    CHECK(cwnd(&c) == 10 * MTU);
    /* on_app_limited alone stops growth too, until a send fills the window. */
    c.ops->on_app_limited(c.st, now);
    crust_rate_sample rs = {.rtt_us = 100 * MS, .newly_acked = MTU,
                            .prior_delivered = c.delivered,
                            .delivered_total = c.delivered + MTU,
                            .prior_in_flight = 2 * MTU, .bytes_in_flight = MTU};
    c.ops->on_ack(c.st, &c.env, now + 1, &rs);
    CHECK(cwnd(&c) == 10 * MTU);
    cubic_round(&c, &now, 100 * MS, 0); /* its first send fills the window */
    CHECK(cwnd(&c) == 20 * MTU);

    /* In avoidance, app-limited time does not count on the cubic clock. */
    ctl a, b;
    uint64_t ta = 0, tb;
    cubic_grow_to(&a, &ta, 100 * MS, 100);
    a.ops->on_loss(a.st, &a.env, ta, MTU, ta - 1, cwnd(&a));
    ta += 1;
    cubic_round(&a, &ta, 100 * MS, 0);
    b = a;
    tb = ta;
    for (int r = 0; r < 20; r++)
        cubic_round(&b, &tb, 100 * MS, 1);
    CHECK(cwnd(&b) == cwnd(&a));
    for (int r = 0; r < 10; r++) {
        cubic_round(&a, &ta, 100 * MS, 0);
        cubic_round(&b, &tb, 100 * MS, 0);
    }
    CHECK_RANGE((double)cwnd(&b) / (double)cwnd(&a), 0.98, 1.02);
}

static void test_cubic_persistent_congestion(void)
{
    ctl c;
    uint64_t now = 0;
    cubic_grow_to(&c, &now, 100 * MS, 100);
    uint64_t w = cwnd(&c);
    /* recovery.c reports persistent congestion before the loss itself. */
    c.ops->on_persistent_congestion(c.st, &c.env, now);
    c.ops->on_loss(c.st, &c.env, now, 20 * MTU, now - 1, w);
    CHECK(cwnd(&c) == CRUST_CC_MIN_CWND(MTU));
    /* Slow start (2 -> 4 -> ... -> 64 packets) back up to ssthresh, 0.7 of
     * the old window, then congestion avoidance. */
    now += 1;
    for (int r = 0; r < 5; r++)
        cubic_round(&c, &now, 100 * MS, 0);
    CHECK(cwnd(&c) == 64 * MTU);
    cubic_round(&c, &now, 100 * MS, 0);
    CHECK(cwnd(&c) > w * 7 / 10);
    CHECK(cwnd(&c) < w * 7 / 10 + w / 20);
}

/* ---- a packet-level path model ------------------------------------------
 * Time in nanoseconds so a 1200-byte packet at 12.5 MB/s takes exactly
 * 96 us. The receiver acks every packet, or every second one (with a
 * 25 ms delayed-ACK timer) as crust does by default. A dropped packet is
 * declared lost when a later packet of its flow is acked, or 1.25 RTT
 * after it was sent if none is. As recovery.c does, on_loss comes before
 * the on_ack of the same ACK, and rate samples come from the most recently
 * sent packet an ACK covers. */

#define NS 1000u
#define SIM_FLOWS 2
#define SIM_RING 16384
#define ACK_DELAY_NS (25ull * MS * NS)
#define RTT_BUCKET_US 50
#define RTT_BUCKETS 40000
#define RATE_BUCKETS 2000 /* pacing rate / link rate in 1/500 steps */
#define NEVER UINT64_MAX

typedef struct pkt {
    uint64_t sent_ns, event_ns; /* event: arrival of its ACK, or loss deadline */
    uint64_t delivered, delivered_time, first_sent_time;
    uint8_t dropped, pair_first; /* pair_first: its ACK waits for the next */
} pkt;

typedef struct flow {
    ctl c;
    pkt ring[SIM_RING];
    uint64_t head, tail, received;
    uint64_t inflight, delivered_time_ns, first_sent_ns, next_send_ns;
    uint64_t start_ns;
    uint64_t srtt_ns, min_rtt_ns;
    int have_rtt;
    uint64_t acked_in_window; /* bytes delivered inside the measurement window */
    uint64_t sent_pkts, dropped_pkts;
    uint32_t rtt_hist[RTT_BUCKETS];
    uint32_t rate_hist[RATE_BUCKETS];
    uint32_t cwnd_hist[RATE_BUCKETS]; /* cwnd / BDP in 1/500 steps */
    uint64_t rtt_samples, rate_samples;
    double max_rate_ratio;
    uint64_t min_cwnd;
} flow;

typedef struct sim {
    uint64_t link_bps;    /* bottleneck rate, bytes/s */
    uint64_t base_rtt_ns;
    uint64_t queue_bytes; /* tail-drop limit */
    uint32_t loss_ppm;    /* random loss before the bottleneck */
    int ack_every;        /* 1 or 2 */
    uint64_t rng;
    uint64_t now;
    uint64_t free_ns;     /* when the bottleneck has sent its backlog */
    uint64_t window_start_ns, window_end_ns;
    int nflows;
    flow f[SIM_FLOWS];
} sim;

static sim the_sim; /* large: keep it off the stack */

static uint32_t sim_rand(sim *s)
{
    s->rng ^= s->rng << 13;
    s->rng ^= s->rng >> 7;
    s->rng ^= s->rng << 17;
    return (uint32_t)(s->rng >> 11);
}

static void sim_setup(sim *s, uint64_t mbit, uint64_t rtt_ms, double queue_bdp,
                      uint32_t loss_ppm, int nflows, const crust_cc_ops *ops)
{
    memset(s, 0, sizeof *s);
    s->link_bps = mbit * 1000000 / 8;
    s->base_rtt_ns = rtt_ms * 1000000;
    s->queue_bytes = (uint64_t)(queue_bdp * (double)s->link_bps * (double)rtt_ms / 1000.0);
    s->loss_ppm = loss_ppm;
    s->ack_every = 1;
    s->rng = 0x2545f4914f6cdd1dull;
    s->nflows = nflows;
    for (int i = 0; i < nflows; i++) {
        flow *f = &s->f[i];
        ctl_init(&f->c, ops, 333 * MS, 0);
        f->min_rtt_ns = NEVER;
        f->srtt_ns = 333 * MS * NS;
    }
}

static void sim_send(sim *s, flow *f, uint64_t now)
{
    if (f->inflight == 0) {
        f->first_sent_ns = now;
        f->delivered_time_ns = now;
    }
    pkt *p = &f->ring[f->tail++ % SIM_RING];
    p->sent_ns = now;
    p->delivered = f->c.delivered;
    p->delivered_time = f->delivered_time_ns;
    p->first_sent_time = f->first_sent_ns;
    p->dropped = 0;
    p->pair_first = 0;
    uint64_t backlog = s->free_ns > now ? s->free_ns - now : 0;
    uint64_t queued = backlog * s->link_bps / 1000000000u;
    if (s->loss_ppm && sim_rand(s) % 1000000u < s->loss_ppm) {
        p->dropped = 1;
    } else if (queued + MTU > s->queue_bytes) {
        p->dropped = 1;
    } else {
        s->free_ns = (s->free_ns > now ? s->free_ns : now) + MTU * 1000000000ull / s->link_bps;
        p->event_ns = s->free_ns + s->base_rtt_ns;
        p->pair_first = s->ack_every == 2 && f->received++ % 2 == 0;
    }
    if (p->dropped) {
        p->event_ns = now + s->base_rtt_ns + s->base_rtt_ns / 4;
        f->dropped_pkts++;
    }
    f->sent_pkts++;
    f->inflight += MTU;
    f->c.env.srtt_us = f->srtt_ns / NS;
    f->c.ops->on_sent(f->c.st, &f->c.env, now / NS, MTU, f->inflight);
    uint64_t rate = pacing(&f->c);
    uint64_t gap = rate ? MTU * 1000000000ull / rate : 0;
    f->next_send_ns = (f->next_send_ns > now ? f->next_send_ns : now) + gap;
}

/* Ring index of the first packet from i on that was not dropped. */
static uint64_t flow_next_delivered(const flow *f, uint64_t i)
{
    while (i < f->tail && f->ring[i % SIM_RING].dropped)
        i++;
    return i;
}

/* When the ACK covering delivered packet i arrives: at once, or for the
 * first of a pair with the second, or when the delayed-ACK timer fires. */
static uint64_t flow_ack_time(const flow *f, uint64_t i)
{
    const pkt *p = &f->ring[i % SIM_RING];
    if (!p->pair_first)
        return p->event_ns;
    uint64_t t = p->event_ns + ACK_DELAY_NS;
    uint64_t j = flow_next_delivered(f, i + 1);
    if (j < f->tail && f->ring[j % SIM_RING].event_ns < t)
        t = f->ring[j % SIM_RING].event_ns;
    return t;
}

/* When the flow next learns something: the ACK of its oldest delivered
 * packet, or the loss deadline of an older dropped one. */
static uint64_t flow_next_event(const flow *f)
{
    if (f->head == f->tail)
        return NEVER;
    uint64_t j = flow_next_delivered(f, f->head);
    uint64_t t = j < f->tail ? flow_ack_time(f, j) : NEVER;
    if (j > f->head && f->ring[f->head % SIM_RING].event_ns < t)
        t = f->ring[f->head % SIM_RING].event_ns;
    return t;
}

static void flow_record(sim *s, flow *f, uint64_t now, uint64_t acked, uint64_t rtt_ns)
{
    if (now < s->window_start_ns || now >= s->window_end_ns)
        return;
    f->acked_in_window += acked;
    uint64_t b = rtt_ns / NS / RTT_BUCKET_US;
    f->rtt_hist[b < RTT_BUCKETS ? b : RTT_BUCKETS - 1]++;
    f->rtt_samples++;
    double ratio = (double)pacing(&f->c) / (double)s->link_bps;
    uint64_t rb = (uint64_t)(ratio * 500);
    f->rate_hist[rb < RATE_BUCKETS ? rb : RATE_BUCKETS - 1]++;
    f->rate_samples++;
    if (ratio > f->max_rate_ratio)
        f->max_rate_ratio = ratio;
    double bdp = (double)s->link_bps * (double)s->base_rtt_ns / 1e9;
    uint64_t cb = (uint64_t)((double)cwnd(&f->c) / bdp * 500);
    f->cwnd_hist[cb < RATE_BUCKETS ? cb : RATE_BUCKETS - 1]++;
    if (!f->min_cwnd || cwnd(&f->c) < f->min_cwnd)
        f->min_cwnd = cwnd(&f->c);
}

/* Resolve what the flow learns at time now: losses, then one ACK. */
static void flow_on_event(sim *s, flow *f, uint64_t now)
{
    uint64_t lost = 0, largest_lost_sent = 0, acked = 0;
    uint64_t prior_inflight = f->inflight;
    pkt *last = NULL;
    uint64_t j = flow_next_delivered(f, f->head);
    int ack_due = j < f->tail && flow_ack_time(f, j) <= now;
    /* Everything up to the ACK's newest packet is resolved by it. */
    uint64_t end = j;
    if (ack_due) {
        end = j + 1;
        if (f->ring[j % SIM_RING].pair_first) {
            uint64_t k = flow_next_delivered(f, j + 1);
            if (k < f->tail && f->ring[k % SIM_RING].event_ns <= now)
                end = k + 1;
        }
    }
    for (; f->head < end || (f->head < f->tail && f->ring[f->head % SIM_RING].dropped &&
                             f->ring[f->head % SIM_RING].event_ns <= now);
         f->head++) {
        pkt *p = &f->ring[f->head % SIM_RING];
        f->inflight -= MTU;
        if (p->dropped) {
            lost += MTU;
            largest_lost_sent = p->sent_ns;
        } else {
            acked += MTU;
            f->c.delivered += MTU;
            last = p;
        }
    }
    uint64_t now_us = now / NS;
    f->c.env.srtt_us = f->srtt_ns / NS;
    f->c.env.min_rtt_us = f->min_rtt_ns == NEVER ? UINT64_MAX : f->min_rtt_ns / NS;
    if (lost)
        f->c.ops->on_loss(f->c.st, &f->c.env, now_us, lost, largest_lost_sent / NS, f->inflight);
    if (!last)
        return;
    f->delivered_time_ns = now;
    uint64_t rtt = now - last->sent_ns;
    if (!f->have_rtt) {
        f->have_rtt = 1;
        f->srtt_ns = rtt;
    } else {
        f->srtt_ns = (7 * f->srtt_ns + rtt) / 8;
    }
    if (rtt < f->min_rtt_ns)
        f->min_rtt_ns = rtt;
    f->c.env.srtt_us = f->srtt_ns / NS;
    f->c.env.min_rtt_us = f->min_rtt_ns / NS;
    uint64_t send_elapsed = last->sent_ns - last->first_sent_time;
    uint64_t ack_elapsed = now - last->delivered_time;
    f->first_sent_ns = last->sent_ns;
    uint64_t interval = send_elapsed > ack_elapsed ? send_elapsed : ack_elapsed;
    crust_rate_sample rs = {
        .delivered = f->c.delivered - last->delivered,
        .interval_us = interval / NS,
        .rtt_us = now_us - last->sent_ns / NS,
        .prior_delivered = last->delivered,
        .newly_acked = acked,
        .newly_lost = lost,
        .prior_in_flight = prior_inflight,
        .bytes_in_flight = f->inflight,
        .delivered_total = f->c.delivered,
    };
    if (interval && interval >= f->min_rtt_ns)
        rs.delivery_rate = rs.delivered * 1000000000ull / interval;
    f->c.ops->on_ack(f->c.st, &f->c.env, now_us, &rs);
    flow_record(s, f, now, acked, rtt);
}

static void sim_run(sim *s, uint64_t end_ns)
{
    for (;;) {
        uint64_t best = NEVER;
        int who = -1, is_send = 0;
        for (int i = 0; i < s->nflows; i++) {
            flow *f = &s->f[i];
            uint64_t ev = flow_next_event(f);
            if (ev < best) {
                best = ev;
                who = i;
                is_send = 0;
            }
            if (f->inflight + MTU <= cwnd(&f->c) && f->tail - f->head < SIM_RING) {
                uint64_t t = f->next_send_ns > f->start_ns ? f->next_send_ns : f->start_ns;
                t = t > s->now ? t : s->now;
                if (t < best) {
                    best = t;
                    who = i;
                    is_send = 1;
                }
            }
        }
        if (who < 0 || best >= end_ns)
            break;
        s->now = best;
        if (is_send)
            sim_send(s, &s->f[who], s->now);
        else
            flow_on_event(s, &s->f[who], s->now);
    }
    s->now = end_ns;
}

static double flow_median_rtt_ms(const flow *f)
{
    uint64_t seen = 0;
    for (int b = 0; b < RTT_BUCKETS; b++) {
        seen += f->rtt_hist[b];
        if (seen * 2 >= f->rtt_samples)
            return (b + 0.5) * RTT_BUCKET_US / 1000.0;
    }
    return 0;
}

static double hist_median(const uint32_t *hist, uint64_t samples)
{
    uint64_t seen = 0;
    for (int b = 0; b < RATE_BUCKETS; b++) {
        seen += hist[b];
        if (seen * 2 >= samples)
            return (b + 0.5) / 500.0;
    }
    return 0;
}

static double sim_utilisation(const sim *s)
{
    uint64_t bytes = 0;
    for (int i = 0; i < s->nflows; i++)
        bytes += s->f[i].acked_in_window;
    double secs = (double)(s->window_end_ns - s->window_start_ns) / 1e9;
    return (double)bytes / ((double)s->link_bps * secs);
}

/* ---- BBR ------------------------------------------------------------------ */

static void test_bbr_init(void)
{
    ctl c;
    ctl_init(&c, &crust_cc_bbr, 333 * MS, 0);
    CHECK(strcmp(crust_cc_bbr.name, "bbr") == 0);
    CHECK(cwnd(&c) == 10 * MTU);
    /* initial_cwnd / srtt x 2.77 before the first RTT sample. */
    CHECK_RANGE(pacing(&c), 10.0 * MTU / 0.333 * 2.77 * 0.999, 10.0 * MTU / 0.333 * 2.77 * 1.001);
    c.env.srtt_us = 100 * MS;
    CHECK_RANGE(pacing(&c), 10.0 * MTU / 0.1 * 2.77 * 0.999, 10.0 * MTU / 0.1 * 2.77 * 1.001);
}

/* 100 Mbit/s, 40 ms, a 4-BDP queue: the model converges, STARTUP's queue
 * is drained, and the RTT stays near the base RTT. */
static void test_bbr_converges(void)
{
    for (int ack_every = 1; ack_every <= 2; ack_every++) {
        sim *s = &the_sim;
        sim_setup(s, 100, 40, 4.0, 0, 1, &crust_cc_bbr);
        s->ack_every = ack_every;
        s->window_start_ns = 5ull * SEC * NS;
        s->window_end_ns = 20ull * SEC * NS;
        sim_run(s, s->window_end_ns);
        flow *f = &s->f[0];
        /* In 6 of the 8 PROBE_BW phases pacing = BtlBw (less a 0.2%
         * margin): the median is BtlBw. */
        double bw = hist_median(f->rate_hist, f->rate_samples);
        double cw = hist_median(f->cwnd_hist, f->rate_samples);
        double util = sim_utilisation(s), rtt = flow_median_rtt_ms(f);
        printf("  bbr 100 Mbit/s 40 ms 4-BDP queue, ACK every %d: BtlBw %.3f x link, "
               "util %.1f%%, median RTT %.1f ms, cwnd %.2f BDP\n",
               ack_every, bw, util * 100, rtt, cw);
        CHECK_RANGE(bw, 0.95, 1.05);
        /* Out of STARTUP (2.77x) and DRAIN: at most the 1.25 probing gain. */
        CHECK_RANGE(f->max_rate_ratio, 1.0, 1.25 * 1.05);
        CHECK_RANGE(cw, 1.9, 2.15);
        /* Every RTT sample of a queue-free path equals the minimum and so
         * refreshes it: no ProbeRTT (4 packets in flight) is needed. */
        CHECK(f->min_cwnd > 4 * MTU);
        CHECK_RANGE(util, 0.95, 1.01);
        CHECK_RANGE(rtt, 40, 40 * 1.5);
    }
}

/* A 1-BDP tail-drop queue: STARTUP's overshoot costs losses, but the
 * bottleneck must stay busy. */
static void test_bbr_shallow_queue(void)
{
    for (int ack_every = 1; ack_every <= 2; ack_every++) {
        sim *s = &the_sim;
        sim_setup(s, 100, 40, 1.0, 0, 1, &crust_cc_bbr);
        s->ack_every = ack_every;
        s->window_start_ns = 0;
        s->window_end_ns = 30ull * SEC * NS;
        sim_run(s, s->window_end_ns);
        double util = sim_utilisation(s);
        printf("  bbr 1-BDP queue, ACK every %d, 30 s from start: util %.1f%%, "
               "median RTT %.1f ms\n", ack_every, util * 100, flow_median_rtt_ms(&s->f[0]));
        CHECK_RANGE(util, 0.95, 1.01);
    }
}

/* Random loss is not congestion: the rate must hold. */
static void test_bbr_random_loss(void)
{
    static const uint32_t ppm[] = {10000, 50000};
    static const double need[] = {0.80, 0.60};
    for (int i = 0; i < 2; i++) {
        sim *s = &the_sim;
        sim_setup(s, 100, 40, 1.0, ppm[i], 1, &crust_cc_bbr);
        s->window_start_ns = 0;
        s->window_end_ns = 30ull * SEC * NS;
        sim_run(s, s->window_end_ns);
        double util = sim_utilisation(s);
        printf("  bbr %.0f%% random loss: goodput %.1f%% of link\n", ppm[i] / 1e4, util * 100);
        CHECK_RANGE(util, need[i], 1.01);
    }
}

/* An isolated loss changes neither the pacing rate nor, beyond packet
 * conservation above the BDP, the window: compare twin states. */
static void test_bbr_ignores_isolated_loss(void)
{
    sim *s = &the_sim;
    sim_setup(s, 100, 40, 4.0, 0, 1, &crust_cc_bbr);
    s->window_start_ns = s->window_end_ns = 0;
    sim_run(s, 5ull * SEC * NS);
    flow *f = &s->f[0];
    double bdp = (double)s->link_bps * 0.040;
    ctl a = f->c, b = f->c;
    uint64_t now = 5 * SEC;
    crust_rate_sample rs = {
        .delivery_rate = s->link_bps, .delivered = (uint64_t)bdp, .interval_us = 40 * MS,
        .rtt_us = 40 * MS, .prior_delivered = a.delivered - (uint64_t)bdp,
        .newly_acked = MTU, .prior_in_flight = (uint64_t)bdp,
        .bytes_in_flight = (uint64_t)bdp - MTU, .delivered_total = a.delivered + MTU,
    };
    b.ops->on_loss(b.st, &b.env, now, MTU, now - 10 * MS, (uint64_t)bdp - MTU);
    rs.newly_lost = 0;
    a.ops->on_ack(a.st, &a.env, now, &rs);
    rs.newly_lost = MTU;
    rs.bytes_in_flight -= MTU;
    b.ops->on_ack(b.st, &b.env, now, &rs);
    CHECK(pacing(&a) == pacing(&b));
    CHECK((double)cwnd(&b) >= bdp);
}

/* Persistent congestion collapses the window to BBR's minimum (4 packets);
 * it regrows as packets are delivered, and the model's window (cut to 0.7
 * of the in-flight peak for the heavy loss) returns once a packet sent
 * afterwards is acknowledged without loss. */
static void test_bbr_persistent_congestion(void)
{
    sim *s = &the_sim;
    sim_setup(s, 100, 40, 4.0, 0, 1, &crust_cc_bbr);
    sim_run(s, 3ull * SEC * NS);
    ctl c = s->f[0].c;
    uint64_t now = 3 * SEC, before = cwnd(&c);
    c.ops->on_persistent_congestion(c.st, &c.env, now);
    c.ops->on_loss(c.st, &c.env, now, 100 * MTU, now - 1, 0);
    CHECK(cwnd(&c) == 4 * MTU);
    CHECK(cwnd(&c) >= CRUST_CC_MIN_CWND(MTU));
    CHECK(pacing(&c) > 0);
    /* A late ACK of an old packet: packet conservation. */
    crust_rate_sample rs = {.rtt_us = 40 * MS, .newly_acked = 2 * MTU,
                            .prior_delivered = c.delivered - 400 * MTU,
                            .prior_in_flight = 5 * MTU,
                            .bytes_in_flight = 3 * MTU, .delivered_total = c.delivered + 2 * MTU};
    c.ops->on_ack(c.st, &c.env, now + 10 * MS, &rs);
    CHECK(cwnd(&c) == 5 * MTU);
    /* A packet sent after the collapse gets through without loss. */
    rs.prior_delivered = rs.delivered_total;
    rs.delivered_total += MTU;
    rs.newly_acked = MTU;
    rs.prior_in_flight = 3 * MTU;
    rs.bytes_in_flight = 2 * MTU;
    c.ops->on_ack(c.st, &c.env, now + 50 * MS, &rs);
    CHECK(cwnd(&c) >= before / 4);
}

/* App-limited samples show what we sent, not what the path carries: they
 * must not drag BtlBw down, where the same samples from a busy sender do
 * once the 10-round window has passed. */
static void test_bbr_app_limited(void)
{
    sim *s = &the_sim;
    sim_setup(s, 100, 40, 4.0, 0, 1, &crust_cc_bbr);
    sim_run(s, 3ull * SEC * NS);
    ctl busy = s->f[0].c, idle = s->f[0].c;
    uint64_t now = 3 * SEC, delivered = busy.delivered;
    for (int round = 0; round < 30; round++) {
        now += 40 * MS;
        crust_rate_sample rs = {
            .delivery_rate = s->link_bps / 10, .delivered = MTU, .interval_us = 40 * MS,
            .rtt_us = 40 * MS, .prior_delivered = delivered, .newly_acked = MTU,
            .prior_in_flight = 2 * MTU, .bytes_in_flight = MTU,
            .delivered_total = delivered + MTU,
        };
        delivered += MTU;
        busy.ops->on_ack(busy.st, &busy.env, now, &rs);
        rs.is_app_limited = 1;
        idle.ops->on_ack(idle.st, &idle.env, now, &rs);
    }
    CHECK_RANGE((double)pacing(&idle) / (double)s->link_bps, 0.7, 1.3);
    CHECK_RANGE((double)pacing(&busy) / (double)s->link_bps, 0, 0.15);
}

/* Two flows sharing the bottleneck for 30 s: Jain's index >= 0.9, even
 * when the second one starts into the queue the first has built. */
static void test_bbr_fairness(void)
{
    static const double queues[] = {1.0, 4.0};
    for (int q = 0; q < 2; q++) {
        for (int ack_every = 1; ack_every <= 2; ack_every++) {
            sim *s = &the_sim;
            sim_setup(s, 100, 40, queues[q], 0, 2, &crust_cc_bbr);
            s->ack_every = ack_every;
            s->f[1].start_ns = 100ull * MS * NS;
            s->window_start_ns = 0;
            s->window_end_ns = 30ull * SEC * NS;
            sim_run(s, s->window_end_ns);
            double x = (double)s->f[0].acked_in_window, y = (double)s->f[1].acked_in_window;
            double jain = (x + y) * (x + y) / (2 * (x * x + y * y));
            printf("  bbr x2, %.0f-BDP queue, ACK every %d: shares %.1f%% / %.1f%%, "
                   "Jain %.3f, util %.1f%%\n", queues[q], ack_every, x * 100 / (x + y),
                   y * 100 / (x + y), jain, sim_utilisation(s) * 100);
            CHECK_RANGE(jain, 0.9, 1.0);
            CHECK_RANGE(sim_utilisation(s), 0.9, 1.01);
            /* Two flows keep a standing queue in a deep buffer, so RTprop
             * expires and ProbeRTT (4 packets in flight) must run. */
            if (queues[q] > 2)
                CHECK(s->f[0].min_cwnd == 4 * MTU && s->f[1].min_cwnd == 4 * MTU);
        }
    }
}

/* CUBIC on the same path, as a sanity check of the whole loop. */
static void test_cubic_on_path(void)
{
    sim *s = &the_sim;
    sim_setup(s, 100, 40, 1.0, 0, 1, &crust_cc_cubic);
    s->window_start_ns = 5ull * SEC * NS;
    s->window_end_ns = 30ull * SEC * NS;
    sim_run(s, s->window_end_ns);
    double util = sim_utilisation(s);
    printf("  cubic 1-BDP queue: util %.1f%%, median RTT %.1f ms\n", util * 100,
           flow_median_rtt_ms(&s->f[0]));
    CHECK_RANGE(util, 0.85, 1.01);
}

int main(void)
{
    test_cubic_init();
    test_cubic_slow_start();
    test_cubic_hystart();
    test_cubic_hystart_flat_rtt();
    test_cubic_loss_once_per_recovery();
    test_cubic_curve();
    test_cubic_reno_friendly();
    test_cubic_app_limited();
    test_cubic_persistent_congestion();
    test_cubic_on_path();
    test_bbr_init();
    test_bbr_converges();
    test_bbr_shallow_queue();
    test_bbr_random_loss();
    test_bbr_ignores_isolated_loss();
    test_bbr_persistent_congestion();
    test_bbr_app_limited();
    test_bbr_fairness();
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
