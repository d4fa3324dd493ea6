/*
 * cc.h - congestion control behind a function table (internal).
 *
 * The connection (conn.c) owns loss detection and RTT estimation
 * (recovery.c) and reports what happened; a controller only turns those
 * reports into a congestion window and a pacing rate. Controllers are
 * clock-free like the rest of the engine: every call carries now_us.
 *
 * Delivery-rate samples follow draft-cheng-iccrg-delivery-rate-estimation:
 * conn.c stamps each sent packet with the connection's delivered count and
 * times, and on every ACK builds one crust_rate_sample from the most
 * recently sent packet that the ACK newly acknowledges.
 */
#ifndef CRUST_CC_H
#define CRUST_CC_H

#include <stdint.h>
#include "crust.h"

typedef struct crust_rate_sample {
    uint64_t delivery_rate;   /* bytes/s, 0 when no valid sample          */
    uint64_t delivered;       /* bytes delivered over the sample interval */
    uint64_t interval_us;     /* max(send elapsed, ack elapsed)           */
    uint64_t rtt_us;          /* RTT of the packet the sample came from   */
    uint64_t prior_delivered; /* conn delivered count when it was sent    */
    uint64_t newly_acked;     /* bytes this ACK acknowledged              */
    uint64_t newly_lost;      /* bytes this ACK declared lost             */
    uint64_t prior_in_flight; /* bytes in flight before this ACK          */
    uint64_t bytes_in_flight; /* bytes in flight after this ACK           */
    uint64_t delivered_total; /* conn delivered count after this ACK      */
    int is_app_limited;       /* the sample was taken while app-limited   */
} crust_rate_sample;

/* What a controller may read of the connection. */
typedef struct crust_cc_env {
    uint32_t mtu;             /* current max datagram size (bytes)        */
    uint32_t initial_cwnd_pkts;
    uint64_t srtt_us;         /* smoothed RTT, initial_rtt before samples */
    uint64_t min_rtt_us;      /* UINT64_MAX before the first sample       */
} crust_cc_env;

/* Controller state lives inline in the connection: no allocation. */
#define CRUST_CC_STATE_WORDS 64

typedef struct crust_cc_ops {
    const char *name;
    void (*init)(void *st, const crust_cc_env *env, uint64_t now_us);
    /* A packet of `bytes` went out; bytes_in_flight includes it. */
    void (*on_sent)(void *st, const crust_cc_env *env, uint64_t now_us,
                    uint64_t bytes, uint64_t bytes_in_flight);
    /* An ACK arrived that newly acknowledged or declared lost some bytes. */
    void (*on_ack)(void *st, const crust_cc_env *env, uint64_t now_us,
                   const crust_rate_sample *rs);
    /* Packets were declared lost; largest_lost_sent_us is the send time of
     * the newest of them (a loss of packets sent before the current
     * recovery period started must not reduce the window again). */
    void (*on_loss)(void *st, const crust_cc_env *env, uint64_t now_us,
                    uint64_t lost_bytes, uint64_t largest_lost_sent_us,
                    uint64_t bytes_in_flight);
    /* RFC 9002 7.6: collapse to the minimum window. */
    void (*on_persistent_congestion)(void *st, const crust_cc_env *env,
                                     uint64_t now_us);
    /* The sender had less data than the window allowed. */
    void (*on_app_limited)(void *st, uint64_t now_us);
    uint64_t (*cwnd)(const void *st);                 /* bytes   */
    uint64_t (*pacing_rate)(const void *st, const crust_cc_env *env); /* bytes/s */
} crust_cc_ops;

extern const crust_cc_ops crust_cc_cubic;
extern const crust_cc_ops crust_cc_bbr;

/* Minimum window per RFC 9002: 2 datagrams. */
#define CRUST_CC_MIN_CWND(mtu) (2u * (uint64_t)(mtu))

#endif /* CRUST_CC_H */
