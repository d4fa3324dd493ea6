# cython: language_level=3
# Declarations of csrc/crust.h for Cython, in the header's order. Keep the
# two in step: every public name of the header appears here once.

from libc.stdint cimport int64_t, uint8_t, uint32_t, uint64_t


cdef extern from "crust.h" nogil:
    enum:
        CRUST_VERSION_MAJOR
        CRUST_VERSION_MINOR

    enum:
        CRUST_CID_LEN
        CRUST_NUM_PRIO
        CRUST_SEND_CONTROL
        CRUST_KEY_LEN
        CRUST_IV_LEN
        CRUST_TAG_LEN
        CRUST_MIN_MTU
        CRUST_FLOOR_MTU
        CRUST_MAX_MTU
        CRUST_MAX_PACKET
        CRUST_SHORT_HEADER_MIN
        CRUST_STREAM_FRAME_HDR
        CRUST_STREAM_MAX_PACKET
        CRUST_MSG_READY

    # ---- error codes ----
    enum:
        CRUST_OK
        CRUST_EINVAL
        CRUST_EWOULDBLOCK
        CRUST_EMSGSIZE
        CRUST_ECLOSED
        CRUST_ENOMEM
        CRUST_ENOKEY
        CRUST_EDECRYPT
        CRUST_EMALFORMED
        CRUST_EDUPLICATE
        CRUST_ETOOOLD
        CRUST_ENOTOURS
        CRUST_EPROTO

    const char *crust_strerror(int err)

    # ---- AEAD function table ----
    ctypedef int (*crust_aead_seal_fn)(unsigned char *c, unsigned long long *clen,
                                       const unsigned char *m, unsigned long long mlen,
                                       const unsigned char *ad, unsigned long long adlen,
                                       const unsigned char *nsec, const unsigned char *npub,
                                       const unsigned char *k)
    ctypedef int (*crust_aead_open_fn)(unsigned char *m, unsigned long long *mlen,
                                       unsigned char *nsec,
                                       const unsigned char *c, unsigned long long clen,
                                       const unsigned char *ad, unsigned long long adlen,
                                       const unsigned char *npub, const unsigned char *k)

    ctypedef enum crust_aead_id:
        CRUST_AEAD_NULL
        CRUST_AEAD_CHACHA20_POLY1305
        CRUST_AEAD_AES256_GCM
        CRUST_AEAD_AEGIS128L
        CRUST_AEAD_COUNT

    int crust_aead_register(crust_aead_id id, crust_aead_seal_fn seal,
                            crust_aead_open_fn open)
    int crust_aead_available(crust_aead_id id)
    size_t crust_aead_tag_len(crust_aead_id id)

    # ---- configuration ----
    ctypedef enum crust_cc_id:
        CRUST_CC_BBR
        CRUST_CC_CUBIC
        CRUST_CC_COUNT

    ctypedef struct crust_config:
        uint64_t max_message_size
        uint64_t send_buffer
        uint64_t recv_window
        uint32_t initial_mtu
        uint32_t max_mtu
        uint32_t ack_frequency
        uint32_t max_ack_delay_us
        uint64_t initial_rtt_us
        uint64_t idle_timeout_us
        uint64_t keepalive_us
        uint64_t drop_deadline_us
        uint32_t drop_min_prio
        uint32_t cc
        uint32_t pacing
        uint32_t initial_cwnd_pkts
        uint64_t rekey_interval_us
        uint64_t rekey_packets
        uint32_t stream_transport
        uint64_t lost_timeout_us

    void crust_config_default(crust_config *cfg)
    int crust_config_validate(const crust_config *cfg, const char **field)

    # ---- events ----
    ctypedef enum crust_event_type:
        CRUST_EV_NONE
        CRUST_EV_MESSAGE
        CRUST_EV_MESSAGE_DROPPED
        CRUST_EV_SEND_READY
        CRUST_EV_PATH_VALIDATED
        CRUST_EV_MTU
        CRUST_EV_ALL_ACKED
        CRUST_EV_CLOSED
        CRUST_EV_KEY_UPDATE
        CRUST_EV_KEYS_NEEDED
        CRUST_EV_CONTROL

    ctypedef enum crust_close_reason:
        CRUST_CLOSE_LOCAL
        CRUST_CLOSE_REMOTE
        CRUST_CLOSE_IDLE
        CRUST_CLOSE_PROTOCOL
        CRUST_CLOSE_UNREACHABLE
        CRUST_CLOSE_LOST

    ctypedef struct crust_event:
        uint32_t type
        uint32_t prio
        uint64_t len
        uint64_t msg_id
        uint32_t reason
        uint64_t code

    # ---- statistics ----
    ctypedef struct crust_stats:
        uint64_t srtt_us
        uint64_t rttvar_us
        uint64_t min_rtt_us
        uint64_t latest_rtt_us
        uint64_t cwnd
        uint64_t bytes_in_flight
        uint64_t pacing_rate
        uint64_t tx_packets
        uint64_t tx_bytes
        uint64_t rx_packets
        uint64_t rx_bytes
        uint64_t tx_msgs
        uint64_t rx_msgs
        uint64_t tx_msg_bytes
        uint64_t rx_msg_bytes
        uint64_t lost_packets
        uint64_t retransmitted_bytes
        uint64_t spurious_losses
        uint64_t pto_count
        uint64_t persistent_congestion
        uint64_t rx_dropped_decrypt
        uint64_t rx_dropped_malformed
        uint64_t rx_dropped_duplicate
        uint64_t rx_dropped_old
        uint64_t rx_dropped_notours
        uint64_t rx_dropped_offpath
        uint64_t dropped_msgs
        uint64_t key_updates
        uint64_t send_buffered
        uint64_t recv_buffered
        uint64_t recv_held
        uint64_t send_buffer_peak
        uint64_t recv_buffer_peak
        uint64_t rx_placed_bytes
        uint64_t protocol_errors
        uint64_t rx_stall_pings
        uint64_t unreachable_reports
        uint32_t mtu
        uint32_t key_phase
        uint32_t cc
        uint32_t state

    # ---- connections ----
    ctypedef struct crust_conn:
        pass

    crust_conn *crust_conn_new(const crust_config *cfg,
                               const uint8_t *local_cid,
                               const uint8_t *remote_cid,
                               uint64_t now_us)
    void crust_conn_free(crust_conn *c)

    int crust_conn_set_keys(crust_conn *c, unsigned phase, crust_aead_id aead,
                            const uint8_t *tx_key, const uint8_t *tx_iv,
                            const uint8_t *rx_key, const uint8_t *rx_iv)
    int crust_conn_update_keys(crust_conn *c, uint64_t now_us)

    int crust_conn_send(crust_conn *c, uint64_t now_us, const uint8_t *msg,
                        size_t len, unsigned prio, uint64_t *msg_id)
    uint64_t crust_conn_send_capacity(const crust_conn *c)

    int crust_conn_recv(crust_conn *c, uint64_t now_us, const uint8_t *pkt,
                        size_t len)
    size_t crust_conn_poll_transmit(crust_conn *c, uint64_t now_us, uint8_t *out,
                                    size_t cap)
    int crust_conn_recv_stream(crust_conn *c, uint64_t now_us, const uint8_t *buf,
                               size_t len, size_t *consumed)
    size_t crust_conn_poll_stream(crust_conn *c, uint64_t now_us, uint8_t *out,
                                  size_t cap)
    int crust_conn_poll_event(crust_conn *c, crust_event *ev)
    int64_t crust_conn_read_message(crust_conn *c, unsigned prio, uint8_t *buf,
                                    size_t cap)
    ctypedef uint8_t *(*crust_msg_alloc_fn)(void *ctx, uint64_t len, void **handle) noexcept
    ctypedef void (*crust_msg_free_fn)(void *ctx, void *handle) noexcept
    void crust_conn_set_msg_alloc(crust_conn *c, crust_msg_alloc_fn alloc,
                                  crust_msg_free_fn free_fn, void *ctx, uint64_t min_len)
    int crust_conn_take_message(crust_conn *c, unsigned prio, void **handle, uint64_t *len)
    void crust_conn_set_manual_credit(crust_conn *c, int on)
    int crust_conn_release(crust_conn *c, uint64_t bytes)
    uint64_t crust_conn_message_charge(uint64_t len)
    void crust_conn_hold_messages(crust_conn *c, int hold)

    uint64_t crust_conn_next_timeout(const crust_conn *c)
    void crust_conn_handle_timeout(crust_conn *c, uint64_t now_us)

    int crust_conn_close(crust_conn *c, uint64_t now_us, uint64_t code,
                         int graceful)
    int crust_conn_probe_path(crust_conn *c, uint64_t now_us)
    int crust_conn_path_changed(crust_conn *c, uint64_t now_us)
    int crust_conn_path_unreachable(crust_conn *c, uint64_t now_us)
    void crust_conn_quiet_until_heard(crust_conn *c)
    void crust_conn_set_keepalive(crust_conn *c, uint64_t keepalive_us)
    uint64_t crust_conn_keepalive(const crust_conn *c)

    void crust_conn_get_stats(const crust_conn *c, crust_stats *st)
    size_t crust_conn_memory(const crust_conn *c)
    int crust_conn_is_closed(const crust_conn *c)

    int crust_packet_cid(const uint8_t *pkt, size_t len, uint8_t *cid)


# ---- endpoints (csrc/crust_endpoint.h, included by crust.h) ----

cdef extern from "<sys/socket.h>" nogil:
    ctypedef unsigned int socklen_t
    ctypedef unsigned short sa_family_t
    struct sockaddr:
        sa_family_t sa_family
    struct sockaddr_storage:
        sa_family_t ss_family
    enum:
        AF_INET
        AF_INET6

cdef extern from "<netinet/in.h>" nogil:
    struct in_addr:
        uint32_t s_addr
    struct in6_addr:
        pass
    struct sockaddr_in:
        sa_family_t sin_family
        unsigned short sin_port
        in_addr sin_addr
    struct sockaddr_in6:
        sa_family_t sin6_family
        unsigned short sin6_port
        uint32_t sin6_flowinfo
        in6_addr sin6_addr
        uint32_t sin6_scope_id
    unsigned short htons(unsigned short x)
    unsigned short ntohs(unsigned short x)
    uint32_t htonl(uint32_t x)
    uint32_t ntohl(uint32_t x)

cdef extern from "<arpa/inet.h>" nogil:
    enum:
        INET6_ADDRSTRLEN
    int inet_pton(int af, const char *src, void *dst)
    const char *inet_ntop(int af, const void *src, char *dst, socklen_t size)

cdef extern from "crust.h" nogil:
    ctypedef struct crust_endpoint:
        pass

    ctypedef struct crust_endpoint_config:
        uint32_t batch
        uint32_t rx_budget
        uint32_t gso
        uint32_t gro
        uint32_t unrouted_cap
        uint32_t unrouted_max_len
        uint32_t path_change_cap
        uint32_t close_fd
        uint32_t route_unknown_cids
        uint32_t lh_prefix_len
        uint8_t lh_prefix[8]
        uint32_t hold_cap
        uint32_t hold_us
        uint32_t route_stun

    void crust_endpoint_config_default(crust_endpoint_config *cfg)

    ctypedef struct crust_endpoint_stats:
        uint64_t rx_datagrams
        uint64_t rx_bytes
        uint64_t tx_datagrams
        uint64_t tx_bytes
        uint64_t rx_batches
        uint64_t tx_batches
        uint64_t gso_segments
        uint64_t gro_segments
        uint64_t drives
        uint64_t timers
        uint64_t unrouted
        uint64_t path_changes
        uint64_t tx_blocked
        uint64_t gso_refused
        uint64_t rx_dropped_conn
        uint64_t rx_dropped_malformed
        uint64_t rx_dropped_truncated
        uint64_t rx_dropped_unrouted_full
        uint64_t rx_dropped_unrouted_long
        uint64_t rx_errors
        uint64_t tx_dropped
        uint64_t path_changes_dropped
        uint64_t rx_dropped_unknown_cid
        uint64_t rx_dropped_foreign
        uint64_t rx_dropped_offpath
        uint64_t junk_sources_full
        uint64_t rx_held
        uint64_t rx_held_delivered
        uint64_t rx_held_expired
        uint64_t tx_limited_unvalidated
        uint64_t icmp_errors
        uint64_t icmp_unreachable
        uint64_t icmp_ignored

    crust_endpoint *crust_endpoint_new(int fd, const crust_endpoint_config *cfg)
    void crust_endpoint_free(crust_endpoint *ep)
    int crust_endpoint_fd(const crust_endpoint *ep)
    int crust_endpoint_gso_enabled(const crust_endpoint *ep)
    int crust_endpoint_gro_enabled(const crust_endpoint *ep)

    int crust_endpoint_add(crust_endpoint *ep, crust_conn *c, const sockaddr *peer,
                           socklen_t peerlen)
    int crust_endpoint_remove(crust_endpoint *ep, crust_conn *c)
    int crust_endpoint_peer(const crust_endpoint *ep, const crust_conn *c,
                            sockaddr_storage *addr, socklen_t *addrlen)
    int crust_endpoint_touch(crust_endpoint *ep, crust_conn *c)

    uint64_t crust_endpoint_drive(crust_endpoint *ep, uint64_t now_us)
    uint64_t crust_endpoint_flush(crust_endpoint *ep, uint64_t now_us)
    int crust_endpoint_want_write(const crust_endpoint *ep)

    crust_conn *crust_endpoint_next_ready(crust_endpoint *ep)
    int crust_endpoint_next_junk_source(crust_endpoint *ep, sockaddr_storage *addr,
                                        socklen_t *addrlen, uint64_t *count)
    int crust_endpoint_next_path_change(crust_endpoint *ep, crust_conn **c,
                                        sockaddr_storage *addr, socklen_t *addrlen)
    int64_t crust_endpoint_next_unrouted(crust_endpoint *ep, uint8_t *buf, size_t cap,
                                         sockaddr_storage *addr, socklen_t *addrlen)
    int crust_endpoint_send_raw(crust_endpoint *ep, const uint8_t *buf, size_t len,
                                const sockaddr *addr, socklen_t addrlen)

    void crust_endpoint_get_stats(const crust_endpoint *ep, crust_endpoint_stats *st)


# ---- benchmark drivers (csrc/bench/, compiled into the extension only) ----
cdef extern from "bench/crust_bench.h" nogil:
    int64_t crust_bench_pair(crust_conn *a, crust_conn *b, uint64_t bytes,
                             size_t msg_len, uint64_t *elapsed_ns)
    int64_t crust_bench_aead(crust_aead_id aead, size_t pkt_len, uint64_t count,
                             uint64_t *elapsed_ns)
