/*
 * cc_bbr.c - BBR v1 (draft-cardwell-iccrg-bbr-congestion-control-00) with
 * BBRv2 touches.
 *
 * Paces at BtlBw (max delivery rate over 10 rounds) and caps inflight near
 * 2 x BtlBw x RTprop (min RTT over 10 s), through STARTUP (pacing 2.77x,
 * 4 ln 2 as in v2) -> DRAIN -> PROBE_BW (gains 1.25, 0.75, 1 x6), with
 * PROBE_RTT (4 packets) when RTprop went 10 s without a refresh.
 * Departures from the draft, each for a reason measured in tests/c:
 *  - Random loss is not congestion. Recovery only bounds cwnd by a recovery
 *    window, as Chromium's QUIC BBR does: a round of packet conservation,
 *    then growth, until a loss-free round; never below the BDP once the
 *    pipe is full. (A conservation round per loss episode starves at 5%.)
 *  - Loss is congestion when a round loses >= 1% while its queue never
 *    drained (its fastest RTT >= 1.25 RTprop), or > 20% (a policer). Then,
 *    as v2's inflight_hi, inflight is capped at 0.7 of the round's peak (and
 *    with a queue STARTUP ends); the cap regrows by 2, 4, 8... packets per
 *    clean round.
 *    Proportional cuts and equal regrowth let flows in shallow buffers
 *    converge.
 *  - cwnd gain is 2 x 1.25 while probing, so a flow held back by a standing
 *    queue in a deep buffer can still win share.
 *  - Probes drain to the bare BDP and pacing runs 0.2% under BtlBw (Linux
 *    uses 1%; that costs goodput), so rounding in the estimate cannot
 *    build a queue and a lone flow sees the bare RTT, never needing
 *    PROBE_RTT.
 * Gains are in thousandths; rate x time products use 128-bit arithmetic.
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
#define HEAVY_LOSS_PCT 20                 /* of a round: congestion, queue or not */
#define QUEUE_LOSS_PERMILLE 10            /* of a round, with a standing queue */
#define INFLIGHT_HI_BETA_PCT 70
#define PACING_MARGIN_PERMILLE 2

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
    uint64_t conservation_end;   /* delivered count: conservation lasts a round */
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
    uint64_t round_lost, round_acked, round_max_inflight, round_min_rtt;
    uint64_t clean_rounds;       /* rounds since the last congested one */
    uint64_t extra_acked[2];     /* ack aggregation: max excess per window */
    uint64_t ack_epoch_us;       /* start of the current aggregation epoch */
    uint64_t ack_epoch_acked;    /* bytes acknowledged since then */
    uint8_t extra_acked_win_rtts, extra_acked_win_idx;
    uint32_t pacing_gain, cwnd_gain;
    uint8_t state, cycle_index, full_bw_count;
    uint8_t filled_pipe, round_start, rtprop_expired;
    uint8_t probe_rtt_round_done, recovery, pc_recovery, lost_since_ack;
    uint8_t idle_restart, app_limited, has_seen_rtt, round_app_limited;
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

/* Windowed max filter (Kathleen Nichols' algorithm, as Linux's
 * lib/win_minmax.c): three samples track the max over a sliding window. */
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
        m[0] = m[1];
        m[1] = m[2];
        m[2] = s;
        if (t - m[0].t > win) {
            m[0] = m[1];
            m[1] = m[2];
            m[2] = s;
        }
    } else if (m[1].t == m[0].t && dt > win / 4) {
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

static int bbr_has_model(const bbr *b)
{
    return b->min_rtt_us != UINT64_MAX && bbr_bw(b);
}

static uint64_t bbr_bdp(const bbr *b)
{
    return mul_div(bbr_bw(b), b->min_rtt_us, 1000000u);
}

/* What `gain` times the BDP comes to, plus room for send quanta. */
static uint64_t bbr_inflight(const bbr *b, uint32_t gain, uint64_t mtu)
{
    if (!bbr_has_model(b))
        return b->initial_cwnd;
    return mul_div(bbr_bdp(b), gain, UNIT) + QUANTA_PKTS * mtu;
}

/* No more in flight than the pipe holds: whatever queue we built is gone
 * (the draft leaves 3 send quanta queued). */
static int bbr_queue_drained(const bbr *b, uint64_t inflight)
{
    return inflight <= (bbr_has_model(b) ? bbr_bdp(b) : b->initial_cwnd);
}

/* Random loss must not cut the rate: once the pipe is known full the
 * recovery window never falls below the model's BDP. */
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
    b->round_min_rtt = UINT64_MAX;
    b->pacing_rate = nominal_pacing_rate(b, env);
    bbr_enter_startup(b);
}

static void bbr_save_cwnd(bbr *b)
{
    b->prior_cwnd = bbr_effective_cwnd(b);
}

static void bbr_set_pacing_rate_with_gain(bbr *b, uint32_t gain)
{
    uint64_t rate = mul_div(bbr_bw(b), (uint64_t)gain * (1000 - PACING_MARGIN_PERMILLE), UNIT * 1000);
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
    /* A hash of clock and delivered count, not an RNG: reproducible under a
     * simulator, yet flows starting apart do not march in step. Any phase
     * but the draining 0.75 one. */
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

/* Even the round's fastest packet waited in a queue (1 ms of slack
 * absorbs jitter on short paths). An app-limited round may have seen
 * only delayed ACKs, so it proves nothing. */
static int bbr_round_queued(const bbr *b)
{
    return !b->round_app_limited && b->min_rtt_us != UINT64_MAX &&
           b->round_min_rtt != UINT64_MAX &&
           b->round_min_rtt >= b->min_rtt_us + u64_max(b->min_rtt_us / 4, 1000);
}

static void bbr_check_loss_round(bbr *b, uint64_t mtu)
{
    uint64_t lost = b->round_lost, total = b->round_lost + b->round_acked;
    /* A round without a single ACK (a black hole, a handshake) says nothing
     * about congestion; persistent congestion deals with it. */
    int heavy = b->round_acked && lost > QUANTA_PKTS * mtu &&
                lost * 100 > total * HEAVY_LOSS_PCT;
    int queued = b->round_acked && lost > mtu &&
                 lost * 1000 >= total * QUEUE_LOSS_PERMILLE && bbr_round_queued(b);
    if (heavy || queued) {
        uint64_t cap = mul_div(b->round_max_inflight, INFLIGHT_HI_BETA_PCT, 100);
        b->inflight_hi = u64_max(cap, MIN_PIPE_PKTS * mtu);
        b->clean_rounds = 0;
        /* Only a queue proves the pipe full; loss alone may be the path's. */
        if (queued && b->state == BBR_STARTUP)
            b->filled_pipe = 1;
    } else if (b->inflight_hi != UINT64_MAX) {
        b->clean_rounds++;
        if (b->round_max_inflight + mtu >= b->inflight_hi)
            b->inflight_hi += mtu << u64_min(b->clean_rounds, 16);
    }
    b->round_lost = b->round_acked = b->round_max_inflight = 0;
    b->round_min_rtt = UINT64_MAX;
    b->round_app_limited = 0;
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
        /* Probe until the extra data is in flight, unless loss or the
         * window says the path will not take it. */
        int lost = b->lost_since_ack || rs->newly_lost;
        next = full_length && (lost || prior >= mul_div(bbr_bdp(b), b->pacing_gain, UNIT) ||
                               prior + mtu > bbr_effective_cwnd(b));
    } else {
        next = full_length || bbr_queue_drained(b, prior);
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

static void bbr_check_drain(bbr *b, uint64_t now_us, const crust_rate_sample *rs)
{
    if (b->state == BBR_STARTUP && b->filled_pipe) {
        b->state = BBR_DRAIN;
        b->pacing_gain = DRAIN_PACING_GAIN;
        b->cwnd_gain = STARTUP_CWND_GAIN;
    }
    if (b->state == BBR_DRAIN && bbr_queue_drained(b, rs->bytes_in_flight))
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
        /* Samples until the pipe refills are app-limited in effect. */
        b->probe_rtt_mark = rs->delivered_total + u64_max(rs->bytes_in_flight, 1);
        if (!b->probe_rtt_done_us && rs->bytes_in_flight <= MIN_PIPE_PKTS * mtu) {
            b->probe_rtt_done_us = now_us + PROBE_RTT_DURATION_US;
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

/* Ack aggregation (as Linux's bbr_update_ack_aggregation): when ACKs come
 * in bursts - an event loop that reads a batch of datagrams, a receiver
 * that acknowledges late - more data is acknowledged at once than the
 * bandwidth model expects. Track the largest such excess over ~10 rounds
 * (two windows of 5) and let cwnd cover it, or the sender idles between
 * bursts and its own slower delivery rate shrinks the model further. */
#define EXTRA_ACKED_WIN_ROUNDS 5
#define EXTRA_ACKED_MAX_US 100000u

static void bbr_update_ack_aggregation(bbr *b, uint64_t now_us, const crust_rate_sample *rs)
{
    if (!rs->newly_acked)
        return;
    if (b->round_start && ++b->extra_acked_win_rtts >= EXTRA_ACKED_WIN_ROUNDS) {
        b->extra_acked_win_rtts = 0;
        b->extra_acked_win_idx ^= 1;
        b->extra_acked[b->extra_acked_win_idx] = 0;
    }
    uint64_t epoch = now_us > b->ack_epoch_us ? now_us - b->ack_epoch_us : 0;
    uint64_t expected = mul_div(bbr_bw(b), epoch, 1000000u);
    if (b->ack_epoch_acked <= expected || b->ack_epoch_acked > (UINT64_C(1) << 40)) {
        b->ack_epoch_acked = 0;
        b->ack_epoch_us = now_us;
        expected = 0;
    }
    b->ack_epoch_acked += rs->newly_acked;
    uint64_t extra = u64_min(b->ack_epoch_acked - expected, b->cwnd);
    if (extra > b->extra_acked[b->extra_acked_win_idx])
        b->extra_acked[b->extra_acked_win_idx] = extra;
}

static uint64_t bbr_ack_aggregation_cwnd(const bbr *b)
{
    if (!b->filled_pipe)
        return 0;
    uint64_t extra = u64_max(b->extra_acked[0], b->extra_acked[1]);
    return u64_min(extra, mul_div(bbr_bw(b), EXTRA_ACKED_MAX_US, 1000000u));
}

static void bbr_set_cwnd(bbr *b, const crust_rate_sample *rs, uint64_t mtu)
{
    uint32_t gain = b->cwnd_gain;
    if (b->state == BBR_PROBE_BW && b->pacing_gain > UNIT)
        gain = gain * b->pacing_gain / UNIT; /* room to probe past a queue */
    uint64_t target = bbr_inflight(b, gain, mtu) + bbr_ack_aggregation_cwnd(b);
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

static void bbr_update_recovery(bbr *b, uint64_t now_us, const crust_rate_sample *rs)
{
    if (!b->recovery)
        return;
    int lossy = b->lost_since_ack || rs->newly_lost;
    if (b->recovery == REC_CONSERVATION && rs->newly_acked &&
        rs->prior_delivered >= b->conservation_end)
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
        b->has_seen_rtt = 1;
        b->pacing_rate = nominal_pacing_rate(b, env);
    }
    bbr_update_round(b, rs);
    bbr_update_recovery(b, now_us, rs);
    if (b->round_start)
        bbr_check_loss_round(b, mtu);
    b->round_acked += rs->newly_acked;
    b->round_max_inflight = u64_max(b->round_max_inflight, rs->prior_in_flight);
    if (rs->rtt_us)
        b->round_min_rtt = u64_min(b->round_min_rtt, rs->rtt_us);
    b->round_app_limited |= (uint8_t)(rs->is_app_limited != 0);

    bbr_update_btlbw(b, rs);
    bbr_update_ack_aggregation(b, now_us, rs);
    bbr_check_cycle_phase(b, now_us, rs, mtu);
    bbr_check_full_pipe(b, rs);
    bbr_check_drain(b, now_us, rs);
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
    /* Conservation lasts until what is sent from now on is acknowledged. */
    b->recovery = REC_CONSERVATION;
    b->conservation_end = b->delivered;
    b->recovery_window = u64_max(bytes_in_flight + mtu, floor);
}

static void bbr_on_persistent_congestion(void *st, const crust_cc_env *env, uint64_t now_us)
{
    bbr *b = st;
    /* The model's window is not to be trusted until a round passes without
     * loss: recover from the minimum, without the BDP floor. */
    b->recovery = REC_CONSERVATION;
    b->pc_recovery = 1;
    b->end_recovery_us = now_us;
    b->conservation_end = b->delivered;
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
