/*
 * cc_cubic.c - CUBIC (RFC 9438) with HyStart++ (RFC 9406).
 *
 * beta 0.7, C 0.4, fast convergence, and the Reno-friendly W_est. Windows
 * are bytes; the curve is evaluated in MTU-sized segments with doubles, as
 * C is defined per segment and K needs a cube root anyway. One reduction
 * per loss episode (RFC 9002 7.3.2); an ACKed packet's send time is
 * now - rs->rtt_us. HyStart++ runs with L infinite since we pace. While
 * app-limited the window does not grow and the cubic clock stops, so the
 * window does not leap when data returns (RFC 9438 5.8).
 */
#include <math.h>
#include <string.h>

#include "cc.h"

#define CUBIC_C 0.4
#define CUBIC_BETA 0.7
#define CUBIC_ALPHA (3.0 * (1.0 - CUBIC_BETA) / (1.0 + CUBIC_BETA))
/* Far above any real path; keeps double -> integer conversions defined. */
#define CUBIC_MAX_CWND ((uint64_t)1 << 40)

/* HyStart++ constants (RFC 9406 section 4.3). */
#define HS_MIN_RTT_THRESH_US 4000
#define HS_MAX_RTT_THRESH_US 16000
#define HS_MIN_RTT_DIVISOR 8
#define HS_N_RTT_SAMPLE 8
#define HS_CSS_GROWTH_DIVISOR 4
#define HS_CSS_ROUNDS 5

typedef struct cubic {
    uint64_t cwnd;              /* bytes */
    uint64_t ssthresh;          /* bytes; UINT64_MAX until slow start ends */
    uint64_t w_max;             /* bytes: the plateau of the cubic curve */
    uint64_t cwnd_prior;        /* bytes: cwnd when the last congestion hit */
    double w_est;               /* bytes: Reno-friendly window estimate */
    double k_s;                 /* seconds from epoch start to the plateau */
    double frac;                /* growth below one byte, carried to later ACKs */
    uint64_t epoch_start_us;
    uint64_t recovery_start_us;
    uint64_t last_ack_us;
    /* HyStart++ per-round RTT tracking. */
    uint64_t next_round_delivered;
    uint64_t last_round_min_rtt;
    uint64_t cur_round_min_rtt;
    uint64_t css_baseline_min_rtt;
    uint32_t rtt_sample_count;
    uint32_t css_rounds;
    uint8_t in_css;             /* HyStart++ conservative slow start */
    uint8_t have_epoch;         /* a congestion-avoidance epoch is running */
    uint8_t have_recovery;      /* recovery_start_us is meaningful */
    uint8_t app_limited;        /* told so, and the window not refilled since */
} cubic;

_Static_assert(sizeof(cubic) <= CRUST_CC_STATE_WORDS * 8, "cubic state too large");

static uint64_t u64_min(uint64_t a, uint64_t b) { return a < b ? a : b; }
static uint64_t u64_max(uint64_t a, uint64_t b) { return a > b ? a : b; }

static uint64_t env_mtu(const crust_cc_env *env)
{
    return env->mtu ? env->mtu : CRUST_MIN_MTU;
}

static uint64_t min_cwnd(const crust_cc_env *env)
{
    return CRUST_CC_MIN_CWND(env_mtu(env));
}

/* a * b / c without overflow, saturating at UINT64_MAX. */
static uint64_t mul_div(uint64_t a, uint64_t b, uint64_t c)
{
    __extension__ typedef unsigned __int128 u128;
    u128 r = (u128)a * b / (c ? c : 1);
    return r > UINT64_MAX ? UINT64_MAX : (uint64_t)r;
}

/* RFC 9002 7.3.2: packets sent before the period began belong to it. */
static int in_recovery(const cubic *c, uint64_t sent_us)
{
    return c->have_recovery && sent_us <= c->recovery_start_us;
}

/* W_cubic(t) in bytes, t in seconds since the epoch. */
static double w_cubic(const cubic *c, double t, double seg)
{
    double d = t - c->k_s;
    return CUBIC_C * d * d * d * seg + (double)c->w_max;
}

static void cubic_init(void *st, const crust_cc_env *env, uint64_t now_us)
{
    cubic *c = st;
    memset(c, 0, sizeof *c);
    uint64_t pkts = env->initial_cwnd_pkts ? env->initial_cwnd_pkts : 10;
    c->cwnd = u64_max(u64_min(pkts * env_mtu(env), CUBIC_MAX_CWND), min_cwnd(env));
    c->ssthresh = UINT64_MAX;
    c->last_round_min_rtt = UINT64_MAX;
    c->cur_round_min_rtt = UINT64_MAX;
    c->css_baseline_min_rtt = UINT64_MAX;
    c->last_ack_us = now_us;
}

static void cubic_on_sent(void *st, const crust_cc_env *env, uint64_t now_us,
                          uint64_t bytes, uint64_t bytes_in_flight)
{
    cubic *c = st;
    (void)now_us;
    (void)bytes;
    /* Filling the window ends an app-limited spell: growth is earned again. */
    if (bytes_in_flight + env_mtu(env) > c->cwnd)
        c->app_limited = 0;
}

/* RFC 9406 4.2: slow down (CSS) once the round's minimum RTT rises. */
static void hystart_on_ack(cubic *c, const crust_rate_sample *rs)
{
    if (rs->prior_delivered >= c->next_round_delivered) {
        c->next_round_delivered = rs->delivered_total;
        c->last_round_min_rtt = c->cur_round_min_rtt;
        c->cur_round_min_rtt = UINT64_MAX;
        c->rtt_sample_count = 0;
        /* The partial round in which CSS began counts toward the limit. */
        if (c->in_css && ++c->css_rounds >= HS_CSS_ROUNDS) {
            c->in_css = 0;
            c->ssthresh = c->cwnd;
            return;
        }
    }
    if (rs->rtt_us) {
        c->cur_round_min_rtt = u64_min(c->cur_round_min_rtt, rs->rtt_us);
        c->rtt_sample_count++;
    }
    if (c->rtt_sample_count < HS_N_RTT_SAMPLE || c->cur_round_min_rtt == UINT64_MAX)
        return;
    if (!c->in_css) {
        if (c->last_round_min_rtt == UINT64_MAX)
            return;
        uint64_t thresh = c->last_round_min_rtt / HS_MIN_RTT_DIVISOR;
        thresh = u64_max(HS_MIN_RTT_THRESH_US, u64_min(thresh, HS_MAX_RTT_THRESH_US));
        if (c->cur_round_min_rtt >= c->last_round_min_rtt + thresh) {
            c->in_css = 1;
            c->css_rounds = 0;
            c->css_baseline_min_rtt = c->cur_round_min_rtt;
        }
    } else if (c->cur_round_min_rtt < c->css_baseline_min_rtt) {
        /* The RTT rise was a blip, not a queue: resume slow start. */
        c->in_css = 0;
        c->css_baseline_min_rtt = UINT64_MAX;
    }
}

static void cubic_start_epoch(cubic *c, uint64_t now_us, double seg)
{
    c->have_epoch = 1;
    c->epoch_start_us = now_us;
    c->w_est = (double)c->cwnd;
    c->frac = 0;
    if (c->w_max <= c->cwnd) {
        /* Slow start ended without loss, or the window already passed the
         * old plateau: start on the convex part at once (K = 0). */
        c->w_max = c->cwnd;
        c->k_s = 0;
    } else {
        c->k_s = cbrt((double)(c->w_max - c->cwnd) / seg / CUBIC_C);
    }
}

static void cubic_avoid(cubic *c, const crust_cc_env *env, uint64_t now_us, uint64_t acked)
{
    double seg = (double)env_mtu(env);
    if (!c->have_epoch)
        cubic_start_epoch(c, now_us, seg);
    double cwnd = (double)c->cwnd;
    double t = (double)(now_us - c->epoch_start_us) / 1e6;
    double rtt = (double)env->srtt_us / 1e6;

    double alpha = c->w_est >= (double)c->cwnd_prior ? 1.0 : CUBIC_ALPHA;
    c->w_est += alpha * (double)acked * seg / cwnd;

    double inc;
    if (w_cubic(c, t, seg) < c->w_est) {
        /* Reno-friendly region: standard AIMD would do better here. */
        inc = c->w_est > cwnd ? c->w_est - cwnd : 0;
    } else {
        double target = w_cubic(c, t + rtt, seg);
        if (target < cwnd)
            target = cwnd;
        if (target > 1.5 * cwnd)
            target = 1.5 * cwnd;
        inc = (target - cwnd) * (double)acked / cwnd;
    }
    inc += c->frac;
    if (inc > (double)CUBIC_MAX_CWND)
        inc = (double)CUBIC_MAX_CWND;
    uint64_t whole = (uint64_t)inc;
    c->frac = inc - (double)whole;
    c->cwnd = u64_min(c->cwnd + whole, CUBIC_MAX_CWND);
}

static void cubic_on_ack(void *st, const crust_cc_env *env, uint64_t now_us,
                         const crust_rate_sample *rs)
{
    cubic *c = st;
    uint64_t since_last = now_us > c->last_ack_us ? now_us - c->last_ack_us : 0;
    c->last_ack_us = now_us;
    if (!rs->newly_acked)
        return;
    uint64_t sent_us = rs->rtt_us <= now_us ? now_us - rs->rtt_us : 0;
    if (in_recovery(c, sent_us))
        return;
    if (c->app_limited || rs->is_app_limited) {
        if (c->have_epoch)
            c->epoch_start_us += since_last;
        return;
    }
    if (c->cwnd < c->ssthresh) {
        /* HyStart++ only in the first slow start: later ones know ssthresh. */
        if (c->ssthresh == UINT64_MAX)
            hystart_on_ack(c, rs);
        if (c->cwnd < c->ssthresh) {
            uint64_t inc = c->in_css ? rs->newly_acked / HS_CSS_GROWTH_DIVISOR
                                     : rs->newly_acked;
            c->cwnd = u64_min(c->cwnd + inc, u64_min(c->ssthresh, CUBIC_MAX_CWND));
            return;
        }
    }
    cubic_avoid(c, env, now_us, rs->newly_acked);
}

/* RFC 9438 section 4.6 (with 4.7, fast convergence). */
static void cubic_congestion_event(cubic *c, const crust_cc_env *env, uint64_t now_us)
{
    c->have_recovery = 1;
    c->recovery_start_us = now_us;
    c->have_epoch = 0;
    c->in_css = 0;
    c->cwnd_prior = c->cwnd;
    if (c->cwnd < c->w_max)
        c->w_max = (uint64_t)((double)c->cwnd * (1.0 + CUBIC_BETA) / 2.0);
    else
        c->w_max = c->cwnd;
    c->ssthresh = u64_max((uint64_t)((double)c->cwnd * CUBIC_BETA), min_cwnd(env));
    c->cwnd = c->ssthresh;
}

static void cubic_on_loss(void *st, const crust_cc_env *env, uint64_t now_us,
                          uint64_t lost_bytes, uint64_t largest_lost_sent_us,
                          uint64_t bytes_in_flight)
{
    cubic *c = st;
    (void)lost_bytes;
    (void)bytes_in_flight;
    if (in_recovery(c, largest_lost_sent_us))
        return;
    cubic_congestion_event(c, env, now_us);
}

static void cubic_on_persistent_congestion(void *st, const crust_cc_env *env,
                                           uint64_t now_us)
{
    cubic *c = st;
    /* The same loss also reaches on_loss, before or after this: react once
     * per instant. What is still in flight belongs to this episode. */
    if (!(c->have_recovery && c->recovery_start_us == now_us))
        cubic_congestion_event(c, env, now_us);
    c->cwnd = min_cwnd(env);
    c->frac = 0;
}

static void cubic_on_app_limited(void *st, uint64_t now_us)
{
    cubic *c = st;
    (void)now_us;
    c->app_limited = 1;
}

static uint64_t cubic_cwnd(const void *st)
{
    const cubic *c = st;
    return c->cwnd;
}

static uint64_t cubic_pacing_rate(const void *st, const crust_cc_env *env)
{
    const cubic *c = st;
    /* Slow start doubles per round: pace at twice the window's rate. */
    uint64_t gain_pct = c->cwnd < c->ssthresh ? 200 : 125;
    uint64_t srtt = env->srtt_us ? env->srtt_us : 1;
    return mul_div(c->cwnd, 10000u * gain_pct, srtt);
}

const crust_cc_ops crust_cc_cubic = {
    .name = "cubic",
    .init = cubic_init,
    .on_sent = cubic_on_sent,
    .on_ack = cubic_on_ack,
    .on_loss = cubic_on_loss,
    .on_persistent_congestion = cubic_on_persistent_congestion,
    .on_app_limited = cubic_on_app_limited,
    .cwnd = cubic_cwnd,
    .pacing_rate = cubic_pacing_rate,
};
