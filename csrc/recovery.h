/*
 * recovery.h - loss recovery on its own (internal): the sent-packet record,
 * RTT estimation, ACK processing, loss detection and PTO after RFC 9002,
 * and delivery-rate sampling. It knows nothing of connections: what a
 * packet carried is the caller's business, told back through crust_rec_ops
 * as packets are acknowledged or declared lost, and congestion signals go
 * the same way (docs/design/0064-recovery-on-its-own.md).
 */
#ifndef CRUST_RECOVERY_H
#define CRUST_RECOVERY_H

#include <stddef.h>
#include <stdint.h>

#include "cc.h"
#include "frame.h"

/* STREAM frames one sent packet can carry (and we can requeue if lost). */
#define CRUST_MAX_SFRAMES 6
#define CRUST_GRANULARITY_US 1000
#define CRUST_MAX_PTO_US (60ull * 1000000ull)
#define CRUST_PERSISTENT_CONGESTION_THRESHOLD 3

enum { SP_ACK_ELICITING = 1, SP_IN_FLIGHT = 2, SP_APP_LIMITED = 4, SP_MTU_PROBE = 8,
       SP_MAX_DATA = 16, SP_PATH_CHALLENGE = 32, SP_PATH_RESPONSE = 64, SP_HAS_ACK = 128 };
enum { SP_DONE_ACKED = 1, SP_DONE_LOST = 2 };

typedef struct crust_sframe {
    uint64_t off;
    uint32_t len;
    uint8_t prio;
} crust_sframe;

typedef struct crust_sent_pkt {
    uint64_t time_sent;
    uint64_t delivered, delivered_time, first_sent_time; /* rate sampling */
    uint64_t ack_largest;       /* largest pn our ACK frame in it reported */
    uint32_t size;
    uint8_t flags, done, nframes;
    crust_sframe frames[CRUST_MAX_SFRAMES];
} crust_sent_pkt;

/* What recovery tells its owner, in this order within one ACK frame:
 * acked for each newly acknowledged packet (highest first), acks_done,
 * then lost for each packet declared lost (lowest first),
 * persistent_congestion, loss (once, if any lost packet counts as
 * congestion) and ack_sample. Loss detection by timer calls lost,
 * persistent_congestion and loss. Callbacks must not call back into the
 * crust_rec (they may read it). */
typedef struct crust_rec_ops {
    /* pn was acknowledged; was_lost: it had been declared lost (a
     * spurious loss), so it was no longer in flight. */
    void (*acked)(void *ctx, uint64_t now, uint64_t pn, const crust_sent_pkt *p, int was_lost);
    void (*lost)(void *ctx, uint64_t now, uint64_t pn, const crust_sent_pkt *p);
    void (*acks_done)(void *ctx, uint64_t now);
    /* A run of lost ack-eliciting packets spanning more than 3 PTO
     * (RFC 9002 7.6.2). */
    void (*persistent_congestion)(void *ctx, uint64_t now);
    /* lost_bytes: in-flight bytes declared lost (MTU probes excluded). */
    void (*loss)(void *ctx, uint64_t now, uint64_t lost_bytes, uint64_t largest_lost_sent);
    void (*ack_sample)(void *ctx, uint64_t now, const crust_rate_sample *rs);
} crust_rec_ops;

typedef struct crust_rec {
    uint64_t max_ack_delay_us;
    const crust_rec_ops *ops;
    void *ctx;

    uint64_t next_pn;           /* number of the next packet sent */
    crust_sent_pkt *sent;       /* ring indexed by pn & (sent_cap - 1) */
    uint64_t sent_cap;
    uint64_t sent_lo;           /* lowest pn still in the ring */
    uint64_t largest_acked_plus1; /* 0 = nothing acked yet */
    uint64_t bytes_in_flight;
    uint64_t ack_eliciting_in_flight;
    uint64_t last_ack_eliciting_sent;

    uint64_t srtt, rttvar, min_rtt, latest_rtt;
    int have_rtt;
    uint64_t loss_time;         /* 0 = unset */
    uint32_t pto_count;
    uint64_t delivered, delivered_time, first_sent_time, app_limited_until;
} crust_rec;

void crust_rec_init(crust_rec *r, uint64_t initial_rtt_us, uint64_t max_ack_delay_us,
                    const crust_rec_ops *ops, void *ctx);
void crust_rec_free(crust_rec *r);
/* Where to record packet next_pn: a ring slot, or *scratch for a packet
 * nothing waits for (not ack-eliciting) with nothing outstanding below
 * it, so that a connection that only answers holds no ring. NULL when out
 * of memory (nothing changed). */
crust_sent_pkt *crust_rec_slot(crust_rec *r, int eliciting, crust_sent_pkt *scratch);
/* Packet next_pn went out: completes *info (size, time_sent, flags and
 * frames set by the caller; SP_ACK_ELICITING marks one that is tracked),
 * stores it in slot (from crust_rec_slot) and moves next_pn on. */
void crust_rec_on_sent(crust_rec *r, uint64_t now, crust_sent_pkt *slot, crust_sent_pkt *info);
/* An ACK frame (validated by the parser). CRUST_EPROTO when it
 * acknowledges a packet never sent. */
int crust_rec_on_ack(crust_rec *r, uint64_t now, const crust_ack_frame *ack);
/* The loss or PTO timer at now. Returns 1 when a PTO fired (the caller
 * sends probes), else 0. */
int crust_rec_on_timeout(crust_rec *r, uint64_t now);
/* The oldest packet still awaiting its fate that elicits an ACK, or NULL. */
const crust_sent_pkt *crust_rec_oldest_eliciting(const crust_rec *r);
uint64_t crust_rec_timer(const crust_rec *r);
uint64_t crust_rec_pto(const crust_rec *r);
size_t crust_rec_memory(const crust_rec *r);

#endif
