/*
 * pmtu.c - packetization-layer path MTU discovery (RFC 8899, simplified).
 *
 * Start at initial_mtu (1200, which every path must carry), then search
 * upward with probe packets (PING + PADDING) that carry no data, so losing
 * one costs nothing but the probe. The first probe tries max_mtu (most
 * paths carry a full Ethernet frame); after three losses of one size the
 * ceiling drops below it and the search continues by bisection. A probe's
 * loss is not a congestion signal. When large packets keep vanishing while
 * small ones arrive (a black hole), the size drops to CRUST_FLOOR_MTU and
 * the search starts again a second later.
 */
#include "conn.h"

#define PMTU_RAISE_US (600ull * 1000000ull)   /* re-search period */
#define PMTU_MAX_PROBES 3
#define PMTU_STEP 16                          /* stop when within this */
/* After falling back, search again soon: the loss may have been an outage
 * rather than a black hole, and the floor size costs throughput. */
#define PMTU_BLACK_HOLE_RETRY_US (1000000ull)

void crust_pmtu_init(crust_conn *c)
{
    c->pmtu.low = c->cfg.initial_mtu;
    c->pmtu.high = c->cfg.max_mtu;
    c->pmtu.probe_size = 0;
    c->pmtu.fails = 0;
    c->pmtu.bisect = 0;
    c->pmtu.next_probe_us = 0;
    c->mtu = c->cfg.initial_mtu;
}

static uint32_t candidate(const crust_pmtu *p)
{
    if (!p->bisect)
        return p->high;
    return p->low + (p->high - p->low + 1) / 2;
}

uint32_t crust_pmtu_want_probe(const crust_conn *c, uint64_t now)
{
    const crust_pmtu *p = &c->pmtu;
    if (p->probe_size || !c->rec.have_rtt || now < p->next_probe_us)
        return 0;
    if (p->high < p->low + PMTU_STEP)
        return 0;
    return candidate(p);
}

void crust_pmtu_on_probe_sent(crust_conn *c, uint64_t pn, uint32_t size)
{
    c->pmtu.probe_size = size;
    c->pmtu.probe_pn = pn;
}

static void set_mtu(crust_conn *c, uint32_t mtu)
{
    if (c->mtu != mtu) {
        c->mtu = mtu;
        c->mtu_event_pending = 1;
    }
}

void crust_pmtu_on_acked(crust_conn *c, uint64_t now, uint64_t pn)
{
    crust_pmtu *p = &c->pmtu;
    if (!p->probe_size || pn != p->probe_pn)
        return;
    p->low = p->probe_size;
    p->probe_size = 0;
    p->fails = 0;
    set_mtu(c, p->low);
    if (p->high < p->low + PMTU_STEP) {
        /* Search complete; look again later in case the path grew. */
        p->next_probe_us = now + PMTU_RAISE_US;
        p->high = c->cfg.max_mtu;
        p->bisect = 0;
        if (p->high < p->low + PMTU_STEP)
            p->high = p->low;
    }
}

void crust_pmtu_on_lost(crust_conn *c, uint64_t now, uint64_t pn)
{
    crust_pmtu *p = &c->pmtu;
    if (!p->probe_size || pn != p->probe_pn)
        return;
    uint32_t size = p->probe_size;
    p->probe_size = 0;
    if (++p->fails >= PMTU_MAX_PROBES) {
        p->fails = 0;
        p->high = size - 1;
        p->bisect = 1;
        if (p->high < p->low + PMTU_STEP)
            p->next_probe_us = now + PMTU_RAISE_US;
    }
}

void crust_pmtu_on_black_hole(crust_conn *c, uint64_t now)
{
    crust_pmtu *p = &c->pmtu;
    if (c->mtu <= CRUST_FLOOR_MTU)
        return;
    p->low = CRUST_FLOOR_MTU;
    p->high = c->cfg.max_mtu;
    p->bisect = 0;
    p->probe_size = 0;
    p->fails = 0;
    p->large_lost = 0;
    p->small_acked = 0;
    p->next_probe_us = now + PMTU_BLACK_HOLE_RETRY_US;
    set_mtu(c, CRUST_FLOOR_MTU);
}
