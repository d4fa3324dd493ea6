/*
 * crust_config_fields.h - every field of crust_config, spelled once
 * (docs/design/0065-config-fields-once.md). Included by crust.h.
 *
 * X(type, name, default, min, max, zero_ok): zero_ok 1 means 0 is also
 * accepted ("off"). From this list come the struct (crust.h), the defaults
 * and the per-field range checks (conn.c: crust_config_default,
 * crust_config_validate; the rules between fields are written there), and,
 * through scripts/gen_config.py, the Cython declarations and properties
 * (crust/_crust.pxd, crust/_config.pxi) and the type stub
 * (crust/_core.pyi). Sizes in bytes, times in microseconds. After editing,
 * run `python scripts/gen_config.py` (tests/packaging/test_config_fields.py fails
 * while the generated files are out of date).
 */
#ifndef CRUST_CONFIG_FIELDS_H
#define CRUST_CONFIG_FIELDS_H

/* clang-format off */
#define CRUST_CONFIG_FIELDS(X)                                                          \
    /* Larger messages are refused. */                                                  \
    X(uint64_t, max_message_size, UINT64_C(8) << 20, 1, UINT64_C(1) << 32, 0)           \
    /* Queued + unacknowledged bytes cap. */                                            \
    X(uint64_t, send_buffer, UINT64_C(16) << 20, 65536, UINT64_C(1) << 40, 0)           \
    /* Connection flow-control window; at least the initial window (256 KiB)            \
     * and CRUST_NUM_PRIO x (max_message_size + 8), so that one message per             \
     * priority always fits. */                                                         \
    X(uint64_t, recv_window, UINT64_C(34) << 20, 256u * 1024u, UINT64_C(1) << 40, 0)    \
    /* UDP payload bytes we start with; <= max_mtu. */                                  \
    X(uint32_t, initial_mtu, CRUST_MIN_MTU, CRUST_FLOOR_MTU, CRUST_MAX_PACKET, 0)       \
    /* Probing goes no higher. */                                                       \
    X(uint32_t, max_mtu, 1472, CRUST_MIN_MTU, CRUST_MAX_PACKET, 0)                      \
    /* Ack every N ack-eliciting packets. */                                            \
    X(uint32_t, ack_frequency, 2, 1, 1000, 0)                                           \
    X(uint32_t, max_ack_delay_us, 25000, 0, 1000000, 0)                                 \
    /* RFC 9002's 333 ms. */                                                            \
    X(uint64_t, initial_rtt_us, 333000, 1000, 10000000, 0)                              \
    /* 60 s without hearing from the peer closes; 0: never. */                         \
    X(uint64_t, idle_timeout_us, 60000000, 100000, UINT64_MAX, 1)                       \
    /* 30 s: PING when nothing else was sent; 0: none; < idle_timeout_us. */            \
    X(uint64_t, keepalive_us, 30000000, 10000, UINT64_MAX, 1)                           \
    /* 60 s: unsent messages of priority >= drop_min_prio older than this               \
     * are dropped. */                                                                  \
    X(uint64_t, drop_deadline_us, 60000000, 0, UINT64_MAX, 0)                           \
    X(uint32_t, drop_min_prio, 2, 0, CRUST_NUM_PRIO, 0)                                 \
    /* crust_cc_id. */                                                                  \
    X(uint32_t, cc, CRUST_CC_BBR, 0, CRUST_CC_COUNT - 1, 0)                             \
    /* 1: pace transmissions. */                                                        \
    X(uint32_t, pacing, 1, 0, 1, 0)                                                     \
    X(uint32_t, initial_cwnd_pkts, 10, 2, 1000, 0)                                      \
    /* Automatic key updates (docs/design/0008-rekey.md): the send keys                 \
     * change this long after they first sealed message data (keys that                 \
     * sealed only keepalives and ACKs stay, 0077), or once used for this               \
     * many packets. 0 turns a trigger off (both 0: never, for tests).                  \
     * Tiny values would only be capped by the 3-PTO spacing of updates:                \
     * they are refused as the mistakes they are. */                                    \
    X(uint64_t, rekey_interval_us, UINT64_C(120000000), 1000, UINT64_MAX, 1)            \
    X(uint64_t, rekey_packets, UINT64_C(1) << 30, 16, UINT64_C(1) << 62, 1)             \
    /* 1: the packets travel over a reliable, ordered byte stream (TCP),                \
     * framed by crust_conn_recv_stream/crust_conn_poll_stream. The stream              \
     * loses and reorders nothing and does its own congestion control and               \
     * pacing, so the engine runs no loss detection, no PTO retransmission,             \
     * no congestion window, no pacing and no PMTU probing, and builds                  \
     * packets of up to CRUST_STREAM_MAX_PACKET bytes (fewer, larger AEAD               \
     * calls). ACKs still flow (they release the send buffer), as do flow               \
     * control, keepalive, the idle timeout, key updates (the previous keys             \
     * are dropped as soon as the peer uses the new ones: nothing older can             \
     * follow on a stream) and close. Both ends must agree. */                          \
    X(uint32_t, stream_transport, 0, 0, 1, 0)                                           \
    /* A peer that stops answering while we send: once a packet carrying                \
     * message data went out and nothing at all was heard from the peer for            \
     * this long (or CRUST_LOST_MIN_PTOS probe timeouts at the current RTT              \
     * estimate, if longer: a slow path gets its probes whatever the value),            \
     * the connection closes with CRUST_CLOSE_LOST. Over datagrams this                 \
     * needs a measured round trip (until the first ACK the PTO is only a               \
     * guess). Quiet connections (keepalive PINGs only) are left to                     \
     * idle_timeout_us. 8 s; 0: off. docs/design/0048-dead-peers-noticed.md */          \
    X(uint64_t, lost_timeout_us, 8000000, 100000, UINT64_MAX, 1)
/* clang-format on */

#endif
