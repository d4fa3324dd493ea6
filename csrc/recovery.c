/*
 * recovery.c - RTT estimation, the sent-packet record, ACK processing and
 * loss detection after RFC 9002 (packet threshold 3, time threshold 9/8 RTT,
 * PTO with exponential backoff, persistent congestion), plus delivery-rate
 * sampling (draft-cheng-iccrg-delivery-rate-estimation) for the controller.
 *
 * Sent packets live in a ring indexed by packet number. Packets that are not
 * ack-eliciting are finished as soon as they are sent: nothing depends on
 * their fate, and a peer that only receives ACKs never acknowledges them.
 *
 * This file sees only its crust_rec: what the packets carried and what
 * congestion means are the owner's, told through crust_rec_ops (conn.c).
 */
#include <stdlib.h>
#include <string.h>

#include "crust.h"
#include "recovery.h"

#define PACKET_THRESHOLD 3

void crust_rec_init(crust_rec *c, uint64_t initial_rtt_us, uint64_t max_ack_delay_us,
                    const crust_rec_ops *ops, void *ctx)
{
    memset(c, 0, sizeof *c);
    c->max_ack_delay_us = max_ack_delay_us;
    c->ops = ops;
    c->ctx = ctx;
    c->srtt = initial_rtt_us;
    c->rttvar = initial_rtt_us / 2;
    c->min_rtt = UINT64_MAX;
}

void crust_rec_free(crust_rec *c)
{
    free(c->sent);
    c->sent = NULL;
    c->sent_cap = 0;
}

size_t crust_rec_memory(const crust_rec *c)
{
    return (size_t)c->sent_cap * sizeof(crust_sent_pkt);
}

static inline crust_sent_pkt *slot(const crust_rec *c, uint64_t pn)
{
    return &c->sent[pn & (c->sent_cap - 1)];
}

crust_sent_pkt *crust_rec_slot(crust_rec *c, int eliciting, crust_sent_pkt *scratch)
{
    uint64_t pn = c->next_pn;
    /* A packet nothing waits for, with nothing outstanding below it, would
     * leave the ring at once (sent_lo moves past it): keep its record in
     * the caller's scratch, so that a connection that only answers (the
     * quiet end of an idle one: ACKs of keepalives) holds no ring. */
    if (!eliciting && c->sent_lo == pn)
        return scratch;
    uint64_t need = pn - c->sent_lo + 1;
    if (need > c->sent_cap) {
        uint64_t ncap = c->sent_cap ? c->sent_cap * 2 : 16;
        while (ncap < need)
            ncap *= 2;
        crust_sent_pkt *ns = malloc((size_t)ncap * sizeof *ns);
        if (!ns)
            return NULL;
        for (uint64_t p = c->sent_lo; p < pn; p++)
            ns[p & (ncap - 1)] = *slot(c, p);
        free(c->sent);
        c->sent = ns;
        c->sent_cap = ncap;
    }
    crust_sent_pkt *s = slot(c, pn);
    memset(s, 0, offsetof(crust_sent_pkt, frames));
    return s;
}

void crust_rec_on_sent(crust_rec *c, uint64_t now, crust_sent_pkt *sp, crust_sent_pkt *info)
{
    uint64_t pn = c->next_pn++;
    if (info->flags & SP_ACK_ELICITING) {
        if (c->bytes_in_flight == 0) {
            c->first_sent_time = now;
            c->delivered_time = now;
        }
        info->delivered = c->delivered;
        info->delivered_time = c->delivered_time;
        info->first_sent_time = c->first_sent_time;
        if (c->app_limited_until)
            info->flags |= SP_APP_LIMITED;
        c->bytes_in_flight += info->size;
        c->ack_eliciting_in_flight++;
        c->last_ack_eliciting_sent = now;
    } else {
        info->done = SP_DONE_ACKED; /* nothing waits for its fate */
    }
    *sp = *info;
    if (!(info->flags & SP_ACK_ELICITING) && c->sent_lo == pn)
        c->sent_lo++;
}

uint64_t crust_rec_pto(const crust_rec *c)
{
    uint64_t v = 4 * c->rttvar;
    if (v < CRUST_GRANULARITY_US)
        v = CRUST_GRANULARITY_US;
    return c->srtt + v + c->max_ack_delay_us;
}

static void update_rtt(crust_rec *c, uint64_t latest, uint64_t ack_delay)
{
    c->latest_rtt = latest;
    if (!c->have_rtt) {
        c->have_rtt = 1;
        c->min_rtt = latest;
        c->srtt = latest;
        c->rttvar = latest / 2;
        return;
    }
    if (latest < c->min_rtt)
        c->min_rtt = latest;
    if (ack_delay > c->max_ack_delay_us)
        ack_delay = c->max_ack_delay_us;
    uint64_t adjusted = latest;
    if (latest >= c->min_rtt + ack_delay)
        adjusted = latest - ack_delay;
    uint64_t diff = c->srtt > adjusted ? c->srtt - adjusted : adjusted - c->srtt;
    c->rttvar = (3 * c->rttvar + diff) / 4;
    c->srtt = (7 * c->srtt + adjusted) / 8;
}

static void finish(crust_rec *c, crust_sent_pkt *p)
{
    if (p->flags & SP_IN_FLIGHT)
        c->bytes_in_flight -= p->size;
    if (p->flags & SP_ACK_ELICITING)
        c->ack_eliciting_in_flight--;
}

static void advance_lo(crust_rec *c)
{
    while (c->sent_lo < c->next_pn && slot(c, c->sent_lo)->done)
        c->sent_lo++;
    /* Nothing outstanding: let the ring go (16 records, 2.3 KB, at the
     * least), as an idle connection needs none; the next packet that must
     * be tracked allocates it again (crust_rec_on_sent). Issue 22: a node
     * with 100,000 idle peers. */
    if (c->sent_lo == c->next_pn && c->sent)
        crust_rec_free(c);
}

static void on_packet_lost(crust_rec *c, uint64_t now, uint64_t pn, crust_sent_pkt *p)
{
    p->done = SP_DONE_LOST;
    finish(c, p);
    c->ops->lost(c->ctx, now, pn, p);
}

/* Declare lost what the thresholds say is lost; returns bytes lost that
 * count as congestion, and sets *largest_lost_sent. */
static uint64_t detect_lost(crust_rec *c, uint64_t now, uint64_t *largest_lost_sent)
{
    c->loss_time = 0;
    if (!c->largest_acked_plus1)
        return 0;
    uint64_t largest = c->largest_acked_plus1 - 1;
    uint64_t rtt = c->latest_rtt > c->srtt ? c->latest_rtt : c->srtt;
    uint64_t loss_delay = rtt + rtt / 8;
    if (loss_delay < CRUST_GRANULARITY_US)
        loss_delay = CRUST_GRANULARITY_US;
    uint64_t lost_bytes = 0;
    /* Persistent congestion: a run of consecutive lost ack-eliciting
     * packets spanning more than 3 PTOs (RFC 9002 7.6.2). */
    uint64_t pc_span = crust_rec_pto(c) * CRUST_PERSISTENT_CONGESTION_THRESHOLD;
    uint64_t run_start = 0;
    int in_run = 0, persistent = 0;
    for (uint64_t pn = c->sent_lo; pn < largest && pn < c->next_pn; pn++) {
        crust_sent_pkt *p = slot(c, pn);
        if (p->done == SP_DONE_ACKED) {
            in_run = 0;
            continue;
        }
        if (p->done)
            continue;
        if (p->time_sent + loss_delay <= now || largest >= pn + PACKET_THRESHOLD) {
            int congestion = (p->flags & SP_IN_FLIGHT) && !(p->flags & SP_MTU_PROBE);
            if (congestion) {
                lost_bytes += p->size;
                if (p->time_sent > *largest_lost_sent)
                    *largest_lost_sent = p->time_sent;
            }
            if (p->flags & SP_ACK_ELICITING && !(p->flags & SP_MTU_PROBE)) {
                if (!in_run) {
                    in_run = 1;
                    run_start = p->time_sent;
                } else if (c->have_rtt && p->time_sent - run_start > pc_span) {
                    persistent = 1;
                }
            }
            on_packet_lost(c, now, pn, p);
        } else {
            in_run = 0;
            uint64_t t = p->time_sent + loss_delay;
            if (!c->loss_time || t < c->loss_time)
                c->loss_time = t;
        }
    }
    if (persistent)
        c->ops->persistent_congestion(c->ctx, now);
    return lost_bytes;
}

static void report_loss(crust_rec *c, uint64_t now, uint64_t lost, uint64_t largest_lost_sent)
{
    if (lost)
        c->ops->loss(c->ctx, now, lost, largest_lost_sent);
}

int crust_rec_on_ack(crust_rec *c, uint64_t now, const crust_ack_frame *f)
{
    uint64_t largest = f->largest;
    if (largest >= c->next_pn)
        return CRUST_EPROTO; /* acknowledges a packet we never sent */
    uint64_t ack_delay = f->delay << CRUST_ACK_DELAY_EXP;
    uint64_t prior_in_flight = c->bytes_in_flight;
    uint64_t newly_acked = 0;
    crust_sent_pkt *largest_pkt = NULL, *rs_pkt = NULL;
    crust_ack_iter it;
    crust_ack_iter_init(&it, f);
    uint64_t lo, hi;
    while (crust_ack_iter_next(&it, &lo, &hi)) {
        if (hi < c->sent_lo)
            break; /* ranges descend: everything further is older still */
        if (lo < c->sent_lo)
            lo = c->sent_lo;
        for (uint64_t pn = hi + 1; pn-- > lo;) {
            crust_sent_pkt *p = slot(c, pn);
            if (p->done == SP_DONE_ACKED)
                continue;
            if (p->done == SP_DONE_LOST) {
                p->done = SP_DONE_ACKED;
                c->ops->acked(c->ctx, now, pn, p, 1);
                continue;
            }
            p->done = SP_DONE_ACKED;
            finish(c, p);
            if (pn == largest)
                largest_pkt = p;
            if (p->flags & SP_IN_FLIGHT) {
                newly_acked += p->size;
                c->delivered += p->size;
                if (!rs_pkt)
                    rs_pkt = p; /* highest pn first: the most recently sent */
            }
            c->ops->acked(c->ctx, now, pn, p, 0);
        }
    }
    c->ops->acks_done(c->ctx, now);
    if (!newly_acked && !largest_pkt) {
        advance_lo(c);
        return CRUST_OK;
    }
    if (largest + 1 > c->largest_acked_plus1)
        c->largest_acked_plus1 = largest + 1;
    if (largest_pkt && (largest_pkt->flags & SP_ACK_ELICITING))
        update_rtt(c, now - largest_pkt->time_sent, ack_delay);

    crust_rate_sample rs;
    memset(&rs, 0, sizeof rs);
    c->delivered_time = now;
    if (rs_pkt) {
        rs.prior_delivered = rs_pkt->delivered;
        rs.is_app_limited = (rs_pkt->flags & SP_APP_LIMITED) != 0;
        rs.rtt_us = now - rs_pkt->time_sent;
        uint64_t send_elapsed = rs_pkt->time_sent - rs_pkt->first_sent_time;
        uint64_t ack_elapsed = now - rs_pkt->delivered_time;
        c->first_sent_time = rs_pkt->time_sent;
        rs.interval_us = send_elapsed > ack_elapsed ? send_elapsed : ack_elapsed;
        rs.delivered = c->delivered - rs.prior_delivered;
        if (rs.interval_us && (c->min_rtt == UINT64_MAX || rs.interval_us >= c->min_rtt))
            rs.delivery_rate =
                (uint64_t)((__uint128_t)rs.delivered * 1000000u / rs.interval_us);
    }
    if (c->app_limited_until && c->delivered > c->app_limited_until)
        c->app_limited_until = 0;

    uint64_t largest_lost_sent = 0;
    uint64_t lost = detect_lost(c, now, &largest_lost_sent);
    report_loss(c, now, lost, largest_lost_sent);
    rs.newly_acked = newly_acked;
    rs.newly_lost = lost;
    rs.prior_in_flight = prior_in_flight;
    rs.bytes_in_flight = c->bytes_in_flight;
    rs.delivered_total = c->delivered;
    c->ops->ack_sample(c->ctx, now, &rs);
    c->pto_count = 0;
    advance_lo(c);
    return CRUST_OK;
}

uint64_t crust_rec_timer(const crust_rec *c)
{
    if (c->loss_time)
        return c->loss_time;
    if (!c->ack_eliciting_in_flight)
        return UINT64_MAX;
    uint64_t pto = crust_rec_pto(c);
    uint32_t shift = c->pto_count < 16 ? c->pto_count : 16;
    uint64_t period = pto << shift;
    /* Back off exponentially, but keep probing at least once a minute, as
     * TCP caps its RTO: a long outage must not leave a live path unprobed
     * for hours (the idle timeout, not the backoff, ends dead paths). */
    if (period > CRUST_MAX_PTO_US && pto < CRUST_MAX_PTO_US)
        period = CRUST_MAX_PTO_US;
    return c->last_ack_eliciting_sent + period;
}

int crust_rec_on_timeout(crust_rec *c, uint64_t now)
{
    if (c->loss_time) {
        if (now < c->loss_time)
            return 0;
        uint64_t largest_lost_sent = 0;
        uint64_t lost = detect_lost(c, now, &largest_lost_sent);
        report_loss(c, now, lost, largest_lost_sent);
        advance_lo(c);
        return 0;
    }
    uint64_t t = crust_rec_timer(c);
    if (t == UINT64_MAX || now < t)
        return 0;
    c->pto_count++;
    return 1;
}

const crust_sent_pkt *crust_rec_oldest_eliciting(const crust_rec *c)
{
    for (uint64_t pn = c->sent_lo; pn < c->next_pn; pn++) {
        const crust_sent_pkt *p = slot(c, pn);
        if (!p->done && (p->flags & SP_ACK_ELICITING))
            return p;
    }
    return NULL;
}
