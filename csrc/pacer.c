/*
 * pacer.c - token-bucket pacing. Tokens are kept in bytes x 1e6 so that
 * rate (bytes/s) x elapsed (us) adds exact integers: no drift at any rate.
 * The bucket holds a small burst (the caller passes it: about 2 packets, or
 * 250 us of sending at high rates) so bursts stay short enough not to fill
 * a bottleneck queue, yet a sender woken late can catch up a little.
 */
#include "conn.h"

#define SCALE 1000000u

void crust_pacer_init(crust_pacer *p, uint64_t now, uint64_t burst_bytes)
{
    p->tokens = burst_bytes * SCALE; /* the first flight goes out at once */
    p->last_us = now;
    p->wakeup_us = 0;
}

int crust_pacer_can_send(crust_pacer *p, uint64_t now, uint64_t rate, uint64_t bytes,
                         uint64_t burst_bytes)
{
    if (rate == 0)
        return 1;
    uint64_t elapsed = now > p->last_us ? now - p->last_us : 0;
    p->last_us = now;
    uint64_t cap = burst_bytes * SCALE;
    if (p->tokens < cap) {
        if (elapsed > SCALE)
            elapsed = SCALE; /* one second refills any bucket; avoids overflow */
        __uint128_t t = (__uint128_t)p->tokens + (__uint128_t)rate * elapsed;
        p->tokens = t > cap ? cap : (uint64_t)t;
    }
    uint64_t need = bytes * SCALE;
    if (p->tokens >= need) {
        p->wakeup_us = 0;
        return 1;
    }
    p->wakeup_us = now + (need - p->tokens + rate - 1) / rate;
    if (p->wakeup_us <= now)
        p->wakeup_us = now + 1;
    return 0;
}

void crust_pacer_on_sent(crust_pacer *p, uint64_t bytes)
{
    uint64_t spend = bytes * SCALE;
    p->tokens = p->tokens > spend ? p->tokens - spend : 0;
}
