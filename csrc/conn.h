/*
 * conn.h - the connection state shared by the engine's files (internal).
 * conn.c: packet build/parse and the public API; pmtu.c: path MTU search
 * (RFC 8899); pacer.c: the token-bucket pacer. Loss recovery (recovery.h)
 * is a part of the connection that does not see the rest of it.
 */
#ifndef CRUST_CONN_H
#define CRUST_CONN_H

#include <stddef.h>
#include <stdint.h>

#include "aead.h"
#include "cc.h"
#include "crust.h"
#include "ranges.h"
#include "recovery.h"
#include "stream.h"

#define CRUST_REPLAY_BITS 8192
#define CRUST_ACK_RANGES_SENT 32   /* ranges reported in one ACK frame */
#define CRUST_ACK_RANGES_KEPT 256  /* ranges of received pns remembered */
/* A receiver waiting for the rest of a message hears nothing for 2 PTO,
 * within these bounds, before it asks for an acknowledgment. Capped: a
 * receiver's RTT estimate rests on the few packets it sends that elicit
 * acknowledgments (one sample of 180 ms on loopback was seen), and a
 * sender with credit and a message under way is never silent that long
 * on a working path. */
#define CRUST_RX_STALL_MIN_US 50000ull
#define CRUST_RX_STALL_MAX_US 200000ull
#define CRUST_INITIAL_MAX_DATA (256u * 1024u)
/* A lone keepalive PING is probed no sooner than this after it went (or a
 * quarter of the keepalive, if shorter): see pto_deadline in conn.c. */
#define CRUST_KEEPALIVE_PROBE_WAIT_US 1000000ull

typedef enum { ST_OPEN = 0, ST_CLOSING = 1, ST_DRAINING = 2, ST_CLOSED = 3 } conn_state;

typedef struct crust_pmtu {
    uint32_t low, high;         /* confirmed size, largest size still possible */
    uint32_t probe_size;        /* size of the probe in flight, 0 if none */
    uint64_t probe_pn;
    uint32_t fails;             /* consecutive losses of probes of probe_size */
    uint32_t bisect;            /* 0: try `high` first; 1: bisect */
    uint64_t next_probe_us;     /* earliest time for the next probe */
    uint32_t large_lost;        /* packets > CRUST_FLOOR_MTU lost since one
                                   was acknowledged */
    uint32_t small_acked;       /* a small packet was acknowledged since */
} crust_pmtu;

/* Large packets lost in a row, while small ones arrive, that mean a PMTU
 * black hole. */
#define CRUST_BLACK_HOLE_LOSSES 4

typedef struct crust_pacer {
    uint64_t tokens;            /* bytes x 1e6 */
    uint64_t last_us;
    uint64_t wakeup_us;         /* when blocked, the time enough tokens exist */
} crust_pacer;

struct crust_conn {
    crust_config cfg;
    uint8_t local_cid[CRUST_CID_LEN], remote_cid[CRUST_CID_LEN];
    conn_state state;
    uint32_t close_reason;
    uint64_t close_code;
    int close_event_pending, close_event_done;
    int graceful_close;         /* close once everything queued is acked */
    int close_frame_pending;    /* send CLOSE in the next packet */
    uint64_t drain_until;

    /* keys: [phase]. The slot we send with is tx_phase; the other one is
     * empty, holds the previous generation (old_keys) or the next. */
    crust_keys tx[2], rx[2];
    unsigned tx_phase;
    size_t tag_len;             /* of the connection's AEAD (one for all generations) */
    crust_msg_alloc msg_alloc;  /* large messages assembled in the embedder's memory */
    uint64_t aead_packet_limit; /* crust_aead_packet_limit; 0: none */
    uint64_t key_gen;           /* generation we send with (tx_phase = key_gen & 1) */
    uint64_t key_first_pn;      /* first packet number of the current phase */
    uint64_t key_acked_us;      /* first ACK of a current-phase packet ... */
    int key_acked;              /* ... once there was one */
    int key_data;               /* message data went out under the current phase, */
    uint64_t key_data_us;       /* first at this time */
    int old_keys;               /* the other slot holds the previous generation */
    uint64_t old_discard_us;    /* when to wipe them; 0 until the peer uses the new ones */
    int key_update_pending, keys_needed_pending;
    uint32_t key_update_reason; /* 1 we started it, 2 the peer did */
    uint32_t mtu;

    /* sending; packet numbers, the sent packets, RTT and loss recovery
     * (RFC 9002) are rec's */
    crust_rec rec;
    /* When the peer last sent something ack-eliciting (0: never): one side
     * keeps an idle path alive, see keepalive_at() in conn.c. */
    uint64_t last_ack_eliciting_rx;
    uint64_t keepalive_jitter;  /* taken off the next interval, < keepalive/8 */
    uint64_t last_tx_us;
    crust_send_stream ss[CRUST_NUM_PRIO];
    uint64_t tx_max_data;       /* peer's flow-control limit */
    uint64_t tx_data;           /* sum of sent_hi over streams */
    uint64_t next_msg_id;
    int want_send_ready, all_acked_armed;
    uint32_t probes_pending;    /* PTO probe packets to send */
    int ping_pending;
    int keepalive_pending;      /* ... and it is a keepalive */
    uint64_t keepalive_pn1;     /* 1 + packet number of the last bare keepalive PING; 0 none */
    int max_data_pending;
    int path_challenge_pending, path_response_pending;
    uint8_t path_challenge[8], path_response[8];
    uint64_t path_challenge_seq;

    /* congestion control */
    const crust_cc_ops *cc;
    uint64_t cc_state[CRUST_CC_STATE_WORDS];
    crust_pacer pacer;
    crust_pmtu pmtu;

    /* receiving */
    uint64_t rx_largest_plus1;  /* 0 = nothing received */
    /* Set by the endpoint around crust_conn_recv when the packet came from
     * another address than the peer's: its failures are not the peer's
     * (crust_stats.rx_dropped_offpath instead of decrypt/malformed). */
    uint8_t rx_offpath;
    uint64_t replay[CRUST_REPLAY_BITS / 64];
    crust_rangeset rx_pns;      /* pns to acknowledge */
    uint64_t rx_largest_time;   /* when the largest pn arrived */
    uint32_t rx_unacked_eliciting;
    int ack_pending, ack_immediate;
    uint64_t ack_deadline;      /* 0 = unset */
    uint64_t last_ack_sent_us;  /* when an ACK frame last went out */
    uint64_t last_rx_us;
    /* Dead peers (docs/design/0048-dead-peers-noticed.md). Both are 0 when
     * unset and cleared by any authenticated packet from the peer.
     * unanswered_since: when the first packet carrying message data went
     * out after the peer was last heard; lost_timeout_us runs from it.
     * unreachable_deadline: the path reported the peer unreachable; it must
     * be heard from before then. */
    uint64_t unanswered_since;
    uint64_t unreachable_deadline;
    crust_recv_stream rs[CRUST_NUM_PRIO];
    /* Stream transports: the priority of the last packet's first STREAM
     * frame, where the next packet is opened straight into the message
     * being assembled (conn.c, open_in_place). */
    uint8_t rx_pred_prio;
    int quiet_until_heard;      /* crust_conn_quiet_until_heard: until rx_packets */
    uint64_t rx_max_data;       /* limit we advertised */
    uint64_t rx_consumed;       /* bytes given back to the window */
    int manual_credit;          /* crust_conn_set_manual_credit */
    uint64_t rx_held;           /* taken by the embedder, not yet released */
    int hold_messages;          /* crust_conn_hold_messages */
    uint64_t rx_data;           /* sum of hi over streams */

    /* events */
    crust_event *evq;
    uint32_t evq_head, evq_n, evq_cap;
    int path_validated_pending, mtu_event_pending, send_ready_pending, all_acked_pending;
    int closing_tx_budget;      /* CLOSE replies allowed while closing */

    crust_stats st;
    /* Packets are opened into a thread-local buffer (conn.c), not one per
     * connection: idle connections stay small. */
};

/* pmtu.c */
void crust_pmtu_init(crust_conn *c);
uint32_t crust_pmtu_want_probe(const crust_conn *c, uint64_t now); /* size or 0 */
void crust_pmtu_on_probe_sent(crust_conn *c, uint64_t pn, uint32_t size);
void crust_pmtu_on_acked(crust_conn *c, uint64_t now, uint64_t pn);
void crust_pmtu_on_lost(crust_conn *c, uint64_t now, uint64_t pn);
void crust_pmtu_on_black_hole(crust_conn *c, uint64_t now);

/* pacer.c */
void crust_pacer_init(crust_pacer *p, uint64_t now, uint64_t burst_bytes);
/* 1 if a packet of `bytes` may go at now; else 0 and wakeup_us set. */
int crust_pacer_can_send(crust_pacer *p, uint64_t now, uint64_t rate, uint64_t bytes,
                         uint64_t burst_bytes);
void crust_pacer_on_sent(crust_pacer *p, uint64_t bytes);

/* conn.c helper used by endpoint.c: 1 when crust_conn_poll_event would
 * return an event now (it pops nothing). */
int crust_conn_has_event(const crust_conn *c);

/* conn.c helper used by stream_io.c: close with CRUST_CLOSE_PROTOCOL (a
 * stream transport lost a packet, so the data cannot be complete). */
void crust_conn_fail(crust_conn *c, uint64_t now_us);

#endif
