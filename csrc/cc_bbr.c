/*
 * cc_bbr.c - model-based congestion control in the style of BBR v1
 * (draft-cardwell-iccrg-bbr-congestion-control-00), with BBRv2 touches.
 *
 * BBR paces at its estimate of the bottleneck bandwidth (BtlBw: a windowed
 * max of delivery-rate samples over 10 rounds) and caps what is in flight
 * at a multiple of the estimated BDP (BtlBw x RTprop, RTprop a 10 s
 * windowed min of RTT). Its states:
 *   STARTUP    pacing gain 2.77 until the bandwidth stops growing by 25%
 *              for three rounds;
 *   DRAIN      pacing gain 1/2.77 until the queue STARTUP built is gone;
 *   PROBE_BW   an 8-phase pacing-gain cycle 1.25, 0.75, 1 x6, one RTprop
 *              each: probe for more bandwidth, then drain what the probe
 *              queued;
 *   PROBE_RTT  4 packets in flight for max(200 ms, 1 round) when RTprop
 *              has not been refreshed for 10 s.
 *
 * Design choices:
 *  - Loss is not a rate signal: random loss says nothing about the
 *    bottleneck. Loss recovery only bounds cwnd by a recovery window, as
 *    Chromium's QUIC BBR does (draft section 4.2.3.4): one round of packet
 *    conservation, then growth by what is delivered, until a round passes
 *    without loss. Once the pipe is known to be full the recovery window
 *    never drops below the estimated BDP. So a lossy link keeps its paced
 *    rate, where a new conservation round per loss episode would pin
 *    inflight down for good at a few percent of random loss.
 *  - From BBRv2: STARTUP pacing gain 2.77 (4 ln 2) with cwnd gain 2, and a
 *    round that loses more than 20% of its data caps in-flight data
 *    (inflight_hi) at 0.7 of what it carried and ends STARTUP. This bounds
 *    the damage on shallow buffers and policers; a few percent of random
 *    loss never trips it.
 *  - Gains are fixed point in thousandths; rate x time products use
 *    128-bit arithmetic.
 *  - PROBE_BW's random first phase comes from a hash of the clock and the
 *    delivered count: reproducible under a simulator, yet different for
 *    flows that do not start at the same instant.
 */
#include <string.h>

#include "cc.h"

#define UNIT 1000u                        /* gain 1.0 */
#define STARTUP_PACING_GAIN 2770u         /* 4 ln 2 */
#define STARTUP_CWND_GAIN 2000u
#define DRAIN_PACING_GAIN (UNIT * UNIT / STARTUP_PACING_GAIN)
#define PROBE_BW_CWND_GAIN 2000u
#define CYCLE_LEN 8
#define BTLBW_FILTER_ROUNDS 10            /* CYCLE_LEN + 2 */
#define RTPROP_FILTER_US 10000000u
#define PROBE_RTT_DURATION_US 200000u
#define MIN_PIPE_PKTS 4
#define QUANTA_PKTS 3
#define FULL_BW_ROUNDS 3
#define LOSS_THRESH_PCT 20
#define INFLIGHT_HI_BETA_PCT 70

static const uint32_t cycle_gain[CYCLE_LEN] = {1250, 750, 1000, 1000, 1000, 1000, 1000, 1000};

enum { BBR_STARTUP, BBR_DRAIN, BBR_PROBE_BW, BBR_PROBE_RTT };
enum { REC_NONE, REC_CONSERVATION, REC_GROWTH };

/* One entry of the windowed max filter; t counts rounds. */
typedef struct { uint64_t t, v; } mm_sample;

typedef struct bbr {
    mm_sample btlbw[3];          /* best, 2nd best, 3rd best (bytes/s) */
    uint64_t min_rtt_us;         /* RTprop; UINT64_MAX before a sample */
    uint64_t min_rtt_stamp_us;
    uint64_t cwnd;               /* bytes: what the model asks for */
    uint64_t prior_cwnd;         /* cwnd to restore after ProbeRTT */
    uint64_t recovery_window;    /* bytes: bounds cwnd while recovering */
    uint64_t end_recovery_us;    /* recovery ends after an ACK of a later packet */
    uint64_t pacing_rate;        /* bytes/s */
    uint64_t initial_cwnd;
    uint64_t delivered;          /* latest rs->delivered_total */
    uint64_t next_round_delivered;
    uint64_t round_count;
    uint64_t full_bw;
    uint64_t cycle_stamp_us;
    uint64_t probe_rtt_done_us;  /* 0 = inflight not yet down to 4 packets */
    uint64_t probe_rtt_mark;     /* samples sent before this are ProbeRTT's */
    uint64_t inflight_hi;        /* bytes; UINT64_MAX = no cap */
    uint64_t round_lost, round_acked, round_max_inflight;
    uint32_t pacing_gain, cwnd_gain;
    uint8_t state, cycle_index, full_bw_count;
    uint8_t filled_pipe, round_start, rtprop_expired;
    uint8_t probe_rtt_round_done, recovery, pc_recovery, lost_since_ack;
    uint8_t idle_restart, app_limited, has_seen_rtt;
} bbr;

_Static_assert(sizeof(bbr) <= CRUST_CC_STATE_WORDS * 8, "bbr state too large");

static uint64_t u64_min(uint64_t a, uint64_t b) { return a < b ? a : b; }
static uint64_t u64_max(uint64_t a, uint64_t b) { return a > b ? a : b; }

/* a * b / c without overflow, saturating at UINT64_MAX. */
static uint64_t mul_div(uint64_t a, uint64_t b, uint64_t c)
{
    __extension__ typedef unsigned __int128 u128;
    u128 r = (u128)a * b / (c ? c : 1);
    return r > UINT64_MAX ? UINT64_MAX : (uint64_t)r;
}

static uint64_t env_mtu(const crust_cc_env *env)
{
    return env->mtu ? env->mtu : CRUST_MIN_MTU;
}

/* ---- windowed max filter (Kathleen Nichols' algorithm, as Linux's
 * lib/win_minmax.c): three samples are enough to track the max over a
 * sliding window without storing the window. */
static void mm_reset(mm_sample m[3], uint64_t t, uint64_t v)
{
    m[0].t = m[1].t = m[2].t = t;
    m[0].v = m[1].v = m[2].v = v;
}

static void mm_running_max(mm_sample m[3], uint64_t win, uint64_t t, uint64_t v)
{
    mm_sample s = {t, v};
    if (v >= m[0].v || t - m[2].t > win) {
        mm_reset(m, t, v);
        return;
    }
    if (v >= m[1].v)
        m[2] = m[1] = s;
    else if (v >= m[2].v)
        m[2] = s;
    uint64_t dt = t - m[0].t;
    if (dt > win) {
        /* The best sample left the window: promote the others. */
        m[0] = m[1];
        m[1] = m[2];
        m[2] = s;
        if (t - m[0].t > win) {
            m[0] = m[1];
            m[1] = m[2];
            m[2] = s;
        }
    } else if (m[1].t == m[0].t && dt > win / 4) {
        /* Keep a fresher 2nd and 3rd choice once a quarter window passed. */
        m[2] = m[1] = s;
    } else if (m[2].t == m[1].t && dt > win / 2) {
        m[2] = s;
    }
}

static uint64_t bbr_bw(const bbr *b) { return b->btlbw[0].v; }

static uint64_t bbr_effective_cwnd(const bbr *b)
{
    return b->recovery ? u64_min(b->cwnd, b->recovery_window) : b->cwnd;
}

/* What `gain` times the BDP comes to, plus room for send quanta. */
static uint64_t bbr_inflight(const bbr *b, uint32_t gain, uint64_t mtu)
{
    if (b->min_rtt_us == UINT64_MAX || !bbr_bw(b))
        return b->initial_cwnd;
    uint64_t bdp = mul_div(bbr_bw(b), b->min_rtt_us, 1000000u);
    return mul_div(bdp, gain, UNIT) + QUANTA_PKTS * mtu;
}

/* The recovery window never falls below this: the model's BDP once the
 * pipe is known full (random loss must not cut the rate). */
static uint64_t bbr_recovery_floor(const bbr *b, uint64_t mtu)
{
    uint64_t floor = MIN_PIPE_PKTS * mtu;
    if (b->filled_pipe && !b->pc_recovery)
        floor = u64_max(floor, bbr_inflight(b, UNIT, mtu));
    return floor;
}

static uint64_t nominal_pacing_rate(const bbr *b, const crust_cc_env *env)
{
    uint64_t srtt = env->srtt_us ? env->srtt_us : 1000;
    uint64_t rate = mul_div(b->initial_cwnd, 1000000u, srtt);
    return mul_div(rate, STARTUP_PACING_GAIN, UNIT);
}

static void bbr_enter_startup(bbr *b)
{
    b->state = BBR_STARTUP;
    b->pacing_gain = STARTUP_PACING_GAIN;
    b->cwnd_gain = STARTUP_CWND_GAIN;
}

static void bbr_init(void *st, const crust_cc_env *env, uint64_t now_us)
{
    bbr *b = st;
    memset(b, 0, sizeof *b);
    uint64_t mtu = env_mtu(env);
    uint64_t pkts = env->initial_cwnd_pkts ? env->initial_cwnd_pkts : 10;
    b->initial_cwnd = u64_max(pkts * mtu, MIN_PIPE_PKTS * mtu);
    b->cwnd = b->initial_cwnd;
    b->min_rtt_us = UINT64_MAX;
    b->min_rtt_stamp_us = now_us;
    b->inflight_hi = UINT64_MAX;
    b->pacing_rate = nominal_pacing_rate(b, env);
    bbr_enter_startup(b);
}

static void bbr_save_cwnd(bbr *b)
{
    b->prior_cwnd = bbr_effective_cwnd(b);
}

static void bbr_set_pacing_rate_with_gain(bbr *b, uint32_t gain)
{
    uint64_t rate = mul_div(bbr_bw(b), gain, UNIT);
    /* Until the pipe is full, never slow down on a low early sample. */
    if (rate && (b->filled_pipe || rate > b->pacing_rate))
        b->pacing_rate = rate;
}

static void bbr_advance_cycle_phase(bbr *b, uint64_t now_us)
{
    b->cycle_index = (uint8_t)((b->cycle_index + 1) % CYCLE_LEN);
    b->cycle_stamp_us = now_us;
    b->pacing_gain = cycle_gain[b->cycle_index];
}

static void bbr_enter_probe_bw(bbr *b, uint64_t now_us)
{
    /* splitmix64 finaliser: any phase but the draining 0.75 one, so flows
     * do not march in step and the pipe is not drained twice in a row. */
    uint64_t x = now_us ^ (b->delivered * 0x9e3779b97f4a7c15ull);
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    x ^= x >> 31;
    b->state = BBR_PROBE_BW;
    b->cwnd_gain = PROBE_BW_CWND_GAIN;
    b->cycle_index = (uint8_t)(CYCLE_LEN - 1 - x % (CYCLE_LEN - 1));
    bbr_advance_cycle_phase(b, now_us);
}

static void bbr_update_round(bbr *b, const crust_rate_sample *rs)
{
    b->delivered = rs->delivered_total;
    b->round_start = 0;
    if (rs->newly_acked && rs->prior_delivered >= b->next_round_delivered) {
        b->next_round_delivered = rs->delivered_total;
        b->round_count++;
        b->round_start = 1;
    }
}

/* BBRv2's inflight_hi, reduced to its core: judged once per round. */
static void bbr_check_loss_round(bbr *b, uint64_t mtu)
{
    uint64_t lost = b->round_lost, total = b->round_lost + b->round_acked;
    if (lost > QUANTA_PKTS * mtu && lost * 100 > total * LOSS_THRESH_PCT) {
        uint64_t cap = b->round_max_inflight / 100 * INFLIGHT_HI_BETA_PCT;
        b->inflight_hi = u64_max(cap, MIN_PIPE_PKTS * mtu);
        if (b->state == BBR_STARTUP)
            b->filled_pipe = 1; /* more bandwidth is not to be had here */
    } else if (b->inflight_hi != UINT64_MAX && b->cwnd >= b->inflight_hi) {
        /* Loss was tolerable with the cap binding: probe it back up. */
        b->inflight_hi += u64_max(mtu, b->inflight_hi / 8);
    }
    b->round_lost = b->round_acked = b->round_max_inflight = 0;
}

static int bbr_sample_app_limited(const bbr *b, const crust_rate_sample *rs)
{
    return rs->is_app_limited || rs->prior_delivered < b->probe_rtt_mark;
}

static void bbr_update_btlbw(bbr *b, const crust_rate_sample *rs)
{
    if (!rs->delivery_rate)
        return;
    /* An app-limited sample shows what we sent, not what the path can
     * carry, so it may only raise the estimate. */
    if (rs->delivery_rate >= bbr_bw(b) || !bbr_sample_app_limited(b, rs))
        mm_running_max(b->btlbw, BTLBW_FILTER_ROUNDS, b->round_count, rs->delivery_rate);
}

static void bbr_check_cycle_phase(bbr *b, uint64_t now_us, const crust_rate_sample *rs,
                                  uint64_t mtu)
{
    if (b->state != BBR_PROBE_BW)
        return;
    int full_length = now_us - b->cycle_stamp_us > b->min_rtt_us;
    uint64_t prior = rs->prior_in_flight;
    int next;
    if (b->pacing_gain == UNIT) {
        next = full_length;
    } else if (b->pacing_gain > UNIT) {
        /* Probe until the extra data is really in flight, unless loss or
         * the window says the path will not take it. */
        int lost = b->lost_since_ack || rs->newly_lost;
        next = full_length && (lost || prior >= bbr_inflight(b, b->pacing_gain, mtu) ||
                               prior + mtu > bbr_effective_cwnd(b));
    } else {
        next = full_length || prior <= bbr_inflight(b, UNIT, mtu);
    }
    if (next)
        bbr_advance_cycle_phase(b, now_us);
}

static void bbr_check_full_pipe(bbr *b, const crust_rate_sample *rs)
{
    if (b->filled_pipe || !b->round_start || bbr_sample_app_limited(b, rs))
        return;
    if (bbr_bw(b) >= b->full_bw + b->full_bw / 4) {
        b->full_bw = bbr_bw(b);
        b->full_bw_count = 0;
        return;
    }
    if (++b->full_bw_count >= FULL_BW_ROUNDS)
        b->filled_pipe = 1;
}

static void bbr_check_drain(bbr *b, uint64_t now_us, const crust_rate_sample *rs, uint64_t mtu)
{
    if (b->state == BBR_STARTUP && b->filled_pipe) {
        b->state = BBR_DRAIN;
        b->pacing_gain = DRAIN_PACING_GAIN;
        b->cwnd_gain = STARTUP_CWND_GAIN;
    }
    if (b->state == BBR_DRAIN && rs->bytes_in_flight <= bbr_inflight(b, UNIT, mtu))
        bbr_enter_probe_bw(b, now_us);
}

static void bbr_update_rtprop(bbr *b, uint64_t now_us, const crust_rate_sample *rs)
{
    b->rtprop_expired = now_us > b->min_rtt_stamp_us + RTPROP_FILTER_US;
    /* "<=" matters: on a path without queueing every sample equals the
     * minimum, and each one proves it still holds, so no ProbeRTT is due. */
    if (rs->rtt_us && (rs->rtt_us <= b->min_rtt_us || b->rtprop_expired)) {
        b->min_rtt_us = rs->rtt_us;
        b->min_rtt_stamp_us = now_us;
    }
}

static void bbr_exit_probe_rtt(bbr *b, uint64_t now_us)
{
    if (b->filled_pipe)
        bbr_enter_probe_bw(b, now_us);
    else
        bbr_enter_startup(b);
}

static void bbr_check_probe_rtt(bbr *b, uint64_t now_us, const crust_rate_sample *rs,
                                uint64_t mtu)
{
    if (b->state != BBR_PROBE_RTT && b->rtprop_expired && !b->idle_restart) {
        bbr_save_cwnd(b);
        b->state = BBR_PROBE_RTT;
        b->pacing_gain = UNIT;
        b->cwnd_gain = UNIT;
        b->probe_rtt_done_us = 0;
    }
    if (b->state == BBR_PROBE_RTT) {
        /* What is delivered until the pipe refills says nothing about the
         * bottleneck: treat those samples as app-limited. */
        b->probe_rtt_mark = rs->delivered_total + u64_max(rs->bytes_in_flight, 1);
        if (!b->probe_rtt_done_us && rs->bytes_in_flight <= MIN_PIPE_PKTS * mtu) {
            b->probe_rtt_done_us = u64_max(now_us + PROBE_RTT_DURATION_US, 1);
            b->probe_rtt_round_done = 0;
            b->next_round_delivered = b->delivered;
        } else if (b->probe_rtt_done_us) {
            if (b->round_start)
                b->probe_rtt_round_done = 1;
            if (b->probe_rtt_round_done && now_us > b->probe_rtt_done_us) {
                b->min_rtt_stamp_us = now_us;
                b->cwnd = u64_max(b->cwnd, b->prior_cwnd);
                bbr_exit_probe_rtt(b, now_us);
            }
        }
    }
    b->idle_restart = 0;
}

static void bbr_set_cwnd(bbr *b, const crust_rate_sample *rs, uint64_t mtu)
{
    uint32_t gain = b->cwnd_gain;
    if (b->state == BBR_PROBE_BW && b->pacing_gain > UNIT)
        gain = (uint32_t)((uint64_t)gain * b->pacing_gain / UNIT);
    uint64_t target = bbr_inflight(b, gain, mtu);
    uint64_t acked = rs->newly_acked;
    if (b->filled_pipe) {
        b->cwnd = u64_min(b->cwnd + acked, target);
    } else if (b->cwnd < target || b->delivered < b->initial_cwnd) {
        b->cwnd += acked;
    }
    b->cwnd = u64_min(b->cwnd, b->inflight_hi);
    b->cwnd = u64_max(b->cwnd, MIN_PIPE_PKTS * mtu);
    if (b->state == BBR_PROBE_RTT)
        b->cwnd = u64_min(b->cwnd, MIN_PIPE_PKTS * mtu);
}

/* Per ACK while recovering: conservation sends one for one delivered;
 * growth adds what was delivered, like slow start. */
static void bbr_update_recovery(bbr *b, uint64_t now_us, const crust_rate_sample *rs)
{
    if (!b->recovery)
        return;
    int lossy = b->lost_since_ack || rs->newly_lost;
    if (b->recovery == REC_CONSERVATION && b->round_start)
        b->recovery = REC_GROWTH;
    if (!lossy && rs->newly_acked && rs->rtt_us <= now_us &&
        now_us - rs->rtt_us > b->end_recovery_us) {
        b->recovery = REC_NONE;
        b->pc_recovery = 0;
        return;
    }
    if (b->recovery == REC_GROWTH)
        b->recovery_window += rs->newly_acked;
    b->recovery_window = u64_max(b->recovery_window, rs->bytes_in_flight + rs->newly_acked);
}

static void bbr_on_ack(void *st, const crust_cc_env *env, uint64_t now_us,
                       const crust_rate_sample *rs)
{
    bbr *b = st;
    uint64_t mtu = env_mtu(env);
    if (!b->has_seen_rtt && rs->rtt_us) {
        /* The first RTT sample makes the initial-window rate meaningful. */
        b->has_seen_rtt = 1;
        b->pacing_rate = nominal_pacing_rate(b, env);
    }
    bbr_update_round(b, rs);
    bbr_update_recovery(b, now_us, rs);
    if (b->round_start)
        bbr_check_loss_round(b, mtu);
    b->round_acked += rs->newly_acked;
    b->round_max_inflight = u64_max(b->round_max_inflight, rs->prior_in_flight);

    bbr_update_btlbw(b, rs);
    bbr_check_cycle_phase(b, now_us, rs, mtu);
    bbr_check_full_pipe(b, rs);
    bbr_check_drain(b, now_us, rs, mtu);
    bbr_update_rtprop(b, now_us, rs);
    bbr_check_probe_rtt(b, now_us, rs, mtu);

    bbr_set_pacing_rate_with_gain(b, b->pacing_gain);
    bbr_set_cwnd(b, rs, mtu);
    b->lost_since_ack = 0;
    if (!rs->is_app_limited)
        b->app_limited = 0;
}

static void bbr_on_sent(void *st, const crust_cc_env *env, uint64_t now_us,
                        uint64_t bytes, uint64_t bytes_in_flight)
{
    bbr *b = st;
    (void)env;
    (void)now_us;
    /* Restarting from idle: the model is still good, so resume at the
     * estimated rate rather than a probing or draining one. */
    if (b->app_limited && bytes_in_flight <= bytes) {
        b->idle_restart = 1;
        if (b->state == BBR_PROBE_BW)
            bbr_set_pacing_rate_with_gain(b, UNIT);
    }
}

static void bbr_on_loss(void *st, const crust_cc_env *env, uint64_t now_us,
                        uint64_t lost_bytes, uint64_t largest_lost_sent_us,
                        uint64_t bytes_in_flight)
{
    bbr *b = st;
    uint64_t mtu = env_mtu(env);
    uint64_t floor = bbr_recovery_floor(b, mtu);
    (void)largest_lost_sent_us;
    b->round_lost += lost_bytes;
    b->lost_since_ack = 1;
    /* Any loss extends recovery to what is in flight now. */
    b->end_recovery_us = now_us;
    if (b->recovery) {
        uint64_t rw = b->recovery_window;
        b->recovery_window = u64_max(rw > lost_bytes ? rw - lost_bytes : 0, floor);
        return;
    }
    /* Conservation lasts one full round from now: restart the round. */
    b->recovery = REC_CONSERVATION;
    b->next_round_delivered = b->delivered;
    b->recovery_window = u64_max(bytes_in_flight + mtu, floor);
}

static void bbr_on_persistent_congestion(void *st, const crust_cc_env *env, uint64_t now_us)
{
    bbr *b = st;
    /* Everything sent over several PTOs was lost: the window the model
     * asks for is not to be trusted until a round passes without loss, so
     * recover from the minimum, without the BDP floor. The pacing rate is
     * left to the bandwidth filter to correct. */
    b->recovery = REC_CONSERVATION;
    b->pc_recovery = 1;
    b->end_recovery_us = now_us;
    b->next_round_delivered = b->delivered;
    b->recovery_window = MIN_PIPE_PKTS * env_mtu(env);
}

static void bbr_on_app_limited(void *st, uint64_t now_us)
{
    bbr *b = st;
    (void)now_us;
    b->app_limited = 1;
}

static uint64_t bbr_cwnd(const void *st)
{
    return bbr_effective_cwnd(st);
}

static uint64_t bbr_pacing_rate(const void *st, const crust_cc_env *env)
{
    const bbr *b = st;
    if (!b->has_seen_rtt)
        return nominal_pacing_rate(b, env);
    return b->pacing_rate;
}

const crust_cc_ops crust_cc_bbr = {
    .name = "bbr",
    .init = bbr_init,
    .on_sent = bbr_on_sent,
    .on_ack = bbr_on_ack,
    .on_loss = bbr_on_loss,
    .on_persistent_congestion = bbr_on_persistent_congestion,
    .on_app_limited = bbr_on_app_limited,
    .cwnd = bbr_cwnd,
    .pacing_rate = bbr_pacing_rate,
};
