/*
 * crust_endpoint.h - one UDP socket, many connections (public; included at
 * the end of crust.h).
 *
 * An endpoint owns no connections: it references crust_conns the caller
 * created and still owns, and does the per-datagram work for them on one
 * socket. The event loop makes one call when the fd is readable or the
 * endpoint's timer fires:
 *
 *   deadline = crust_endpoint_drive(ep, now)
 *     = recvmmsg batches (until the socket is drained or a budget is spent)
 *       -> ICMP reports from the socket's error queue (IP_RECVERR): a
 *          destination unreachable at a connection's peer address makes it
 *          probe (crust_conn_path_unreachable); never closes it directly
 *       -> demultiplex by destination connection id -> crust_conn_recv
 *       -> crust_conn_handle_timeout for every connection whose timer is due
 *       -> crust_conn_poll_transmit for every connection touched
 *       -> sendmmsg batches (GSO runs where the kernel has UDP_SEGMENT)
 *       -> the earliest connection deadline.
 *
 * then drains what the drive left for it, all O(1) per item:
 *   crust_endpoint_next_ready        connections with events to poll, that
 *                                    finished closing or refused datagrams
 *   crust_endpoint_next_path_change  peers that moved (NAT rebinding)
 *   crust_endpoint_next_unrouted     datagrams for no known connection
 *                                    (long-header handshake packets; unknown
 *                                    connection ids only with
 *                                    route_unknown_cids)
 * and after using connections directly (crust_conn_send, _close, reading
 * messages) calls crust_endpoint_touch for each and crust_endpoint_flush,
 * so the new datagrams leave without waiting for the socket to be readable.
 *
 * Timers sit in a min-heap keyed by each connection's crust_conn_next_timeout,
 * updated only for connections a drive touched (O(log n) each): idle
 * connections cost nothing per drive.
 *
 * The socket layer (csrc/udp_batch.c) is the only code that touches the
 * fd; it never blocks. When the socket buffer is full, datagrams wait in the
 * endpoint and crust_endpoint_want_write says so: wait for the fd to be
 * writable and call crust_endpoint_flush.
 *
 * An endpoint and the connections added to it are one unit for threads:
 * never call into an endpoint, or any connection added to it, from two
 * threads at once. No allocation in drive or flush (only add grows tables).
 */
#ifndef CRUST_ENDPOINT_H
#define CRUST_ENDPOINT_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "crust.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct crust_endpoint crust_endpoint;

/* Tunables with their defaults (crust_endpoint_config_default). */
typedef struct crust_endpoint_config {
    uint32_t batch;            /* 32: datagrams per recvmmsg, entries per
                                  sendmmsg (1..1024)                      */
    uint32_t rx_budget;        /* 1024: datagrams one drive reads at most
                                  before returning (fairness to the event
                                  loop; the fd stays readable)            */
    uint32_t gso;              /* 1: send with UDP_SEGMENT where possible  */
    uint32_t gro;              /* 1: receive with UDP_GRO where possible   */
    uint32_t unrouted_cap;     /* 256: unrouted datagrams kept; more are
                                  dropped and counted                     */
    uint32_t unrouted_max_len; /* 1500: longer unrouted datagrams are
                                  dropped and counted (1..65535)          */
    uint32_t path_change_cap;  /* 256: path changes kept for the caller    */
    uint32_t close_fd;         /* 0: crust_endpoint_free closes the fd if 1 */
    uint32_t route_unknown_cids; /* 0: a short-header datagram whose
                                  connection id is not here is dropped and
                                  counted (rx_dropped_unknown_cid): it can
                                  never start a handshake, so junk costs
                                  only this lookup. 1: queue it as
                                  unrouted (for a relay, say)             */
    uint32_t lh_prefix_len;    /* 0: off. 1..8: a long-header datagram
                                  whose bytes 1.. do not start with
                                  lh_prefix is dropped and counted
                                  (rx_dropped_foreign): crust's handshake
                                  puts its version and network tag there,
                                  so junk and other networks' packets
                                  never leave C                           */
    uint8_t lh_prefix[8];
    uint32_t hold_cap;         /* 32: short-header datagrams for an unknown
                                  connection id kept (0..1024, each up to
                                  CRUST_MAX_PACKET bytes) when they come
                                  within hold_us of a handshake datagram:
                                  a dialler's first packets can share a
                                  receive batch with its final handshake
                                  message, and its connection is added
                                  only after the batch; a drive or flush
                                  after crust_endpoint_add delivers them.
                                  Others (and any past the cap) count as
                                  rx_dropped_unknown_cid                 */
    uint32_t hold_us;          /* 100000: how long a datagram is held     */
    uint32_t route_stun;       /* 0: off. 1: a datagram that is neither a
                                  crust packet nor junk but a STUN message
                                  (RFC 8489: top two bits 0, magic cookie
                                  0x2112A442 at offset 4; crust packets
                                  always set 0x80 or 0x40, so the two
                                  never overlap) is queued as unrouted, so
                                  a STUN client can share the listening
                                  socket and learn that port's mapping    */
} crust_endpoint_config;

void crust_endpoint_config_default(crust_endpoint_config *cfg);

/* Counters since crust_endpoint_new. Datagrams are UDP payloads: a GRO
 * buffer or a GSO send counts once per datagram inside it. */
typedef struct crust_endpoint_stats {
    uint64_t rx_datagrams, rx_bytes;
    uint64_t tx_datagrams, tx_bytes;       /* accepted by the kernel */
    uint64_t rx_batches, tx_batches;       /* recvmmsg/sendmmsg calls with data */
    uint64_t gso_segments;                 /* datagrams sent inside GSO runs */
    uint64_t gro_segments;                 /* datagrams received coalesced */
    uint64_t drives, timers;               /* drive calls; timeouts handled */
    uint64_t unrouted;                     /* datagrams queued as unrouted */
    uint64_t path_changes;                 /* peer address switches */
    uint64_t tx_blocked;                   /* times the socket buffer was full */
    uint64_t gso_refused;                  /* GSO sends refused: GSO turned off */
    /* drops, by reason */
    uint64_t rx_dropped_conn;        /* crust_conn_recv refused it (see the
                                        connection's rx_dropped_* counters) */
    uint64_t rx_dropped_malformed;   /* empty, or short and not long-header */
    uint64_t rx_dropped_truncated;   /* larger than the receive buffer */
    uint64_t rx_dropped_unrouted_full;   /* unrouted queue full */
    uint64_t rx_dropped_unrouted_long;   /* above unrouted_max_len */
    uint64_t rx_errors;              /* recvmmsg errors other than EAGAIN */
    uint64_t tx_dropped;             /* datagrams the kernel refused */
    uint64_t path_changes_dropped;   /* path-change queue full */
    uint64_t rx_dropped_unknown_cid; /* short header, no such connection
                                        (unless route_unknown_cids)        */
    uint64_t rx_dropped_foreign;     /* long header without lh_prefix      */
    uint64_t rx_dropped_offpath;     /* a live connection id, from another
                                        address than the peer's, failing
                                        authentication or parsing          */
    uint64_t junk_sources_full;      /* failures not attributed: more than
                                        64 sources between two drains      */
    uint64_t rx_held;                /* unknown-id datagrams held (hold_cap) */
    uint64_t rx_held_delivered;      /* of those, delivered once their
                                        connection was added               */
    uint64_t rx_held_expired;        /* of those, dropped after hold_us    */
    uint64_t tx_limited_unvalidated; /* sends held back: a peer's new address
                                        has not answered our path challenge
                                        and got 3x what came from it      */
    /* ICMP reports (IP_RECVERR error queue), read by drive. */
    uint64_t icmp_errors;            /* all reports read                   */
    uint64_t icmp_unreachable;       /* destination unreachable, at the
                                        address of a connection's peer: it
                                        probes (crust_conn_path_unreachable) */
    uint64_t icmp_ignored;           /* the others: another kind, or an
                                        address no connection talks to     */
    /* Datagrams that moved application data: a connection received new
     * message bytes, or sent some for the first time. Keepalives, their
     * ACKs and retransmissions do not count. The embedder compares it
     * across drives to tell an idle node (where reads may be coalesced)
     * from a busy one (docs/design/0067-coalesced-reads-when-idle.md). */
    uint64_t activity;
} crust_endpoint_stats;

/* Create an endpoint on fd, a UDP socket (AF_INET or AF_INET6) that must be
 * non-blocking and is normally bound. cfg is copied; NULL means defaults.
 * The fd stays the caller's (closed by crust_endpoint_free only when
 * cfg->close_fd). Returns NULL with errno EINVAL (bad cfg, not a
 * non-blocking datagram socket) or ENOMEM. */
crust_endpoint *crust_endpoint_new(int fd, const crust_endpoint_config *cfg);
/* Free the endpoint. Connections are not touched (the caller owns them);
 * they may be freed before or after. */
void crust_endpoint_free(crust_endpoint *ep);

int crust_endpoint_fd(const crust_endpoint *ep);
/* 1 while GSO (resp. GRO) is in use: asked for, offered by the kernel and,
 * for GSO, not refused by a send since. */
int crust_endpoint_gso_enabled(const crust_endpoint *ep);
int crust_endpoint_gro_enabled(const crust_endpoint *ep);

/* Route datagrams for c's local connection id to c, and send c's datagrams
 * to peer (a sockaddr_in or sockaddr_in6 of peerlen bytes, of a family the
 * socket can reach). The endpoint keeps a pointer to c until
 * crust_endpoint_remove: c must outlive that. Returns CRUST_OK,
 * CRUST_EINVAL (bad address, c already added, or another connection has the
 * same local id) or CRUST_ENOMEM. */
int crust_endpoint_add(crust_endpoint *ep, crust_conn *c, const struct sockaddr *peer,
                       socklen_t peerlen);
/* Forget c: its datagrams become unrouted, it leaves the ready list and the
 * path-change queue. Datagrams it already queued in the endpoint still go.
 * CRUST_EINVAL if c was not added. */
int crust_endpoint_remove(crust_endpoint *ep, crust_conn *c);
/* c's current peer address (it changes on NAT rebinding). Returns CRUST_OK
 * or CRUST_EINVAL if c was not added. */
int crust_endpoint_peer(const crust_endpoint *ep, const crust_conn *c,
                        struct sockaddr_storage *addr, socklen_t *addrlen);

/* Note that the caller used c directly (sent, closed, read messages...):
 * the next drive or flush polls it for datagrams, re-arms its timer and
 * checks it for events. O(1). CRUST_EINVAL if c was not added. */
int crust_endpoint_touch(crust_endpoint *ep, crust_conn *c);

/* Receive until the socket has nothing (or rx_budget datagrams), run due
 * timers, transmit for every connection touched, send. Returns the time
 * at which drive must run again if the fd stays quiet (the earliest
 * connection deadline), UINT64_MAX if none. Never blocks. */
uint64_t crust_endpoint_drive(crust_endpoint *ep, uint64_t now_us);
/* Transmit without reading: run due timers, poll the touched connections
 * and send everything queued (including what waited for a full socket
 * buffer). Returns the next deadline as drive does. */
uint64_t crust_endpoint_flush(crust_endpoint *ep, uint64_t now_us);
/* 1 when datagrams wait for the socket buffer: wait until the fd is
 * writable, then crust_endpoint_flush. */
int crust_endpoint_want_write(const crust_endpoint *ep);

/* Pop the next connection that has events (crust_conn_poll_event would
 * return one when it was listed), or NULL. Drain its events; a drive lists
 * it again when it has new ones. A connection is also listed once when it
 * has finished closing (crust_conn_is_closed: remove and free it then, no
 * scan needed) and whenever it refused datagrams since it was last listed
 * (its rx_dropped_* counters grew: count them against the peer). */
crust_conn *crust_endpoint_next_ready(crust_endpoint *ep);
/* Pop the next path change: a fresh authenticated packet of *c came from a
 * new address, now *c's peer; the endpoint switched to it and started a
 * path validation (crust_conn_probe_path; CRUST_EV_PATH_VALIDATED follows).
 * Returns 1, or 0 when there is none. */
/* Sources of failed datagrams since the last call, one per call: junk
 * (malformed short headers, unknown connection ids) and packets with a
 * live connection id from another address than the peer's that failed
 * authentication or parsing. Such failures are never counted against the
 * connection's peer (crust_stats.rx_dropped_offpath), only against the
 * source, which the caller reports. Returns 1 with *count datagrams from
 * *addr, or 0 when none is left. */
int crust_endpoint_next_junk_source(crust_endpoint *ep, struct sockaddr_storage *addr,
                                    socklen_t *addrlen, uint64_t *count);
int crust_endpoint_next_path_change(crust_endpoint *ep, crust_conn **c,
                                    struct sockaddr_storage *addr, socklen_t *addrlen);
/* Pop the next unrouted datagram into buf: returns its length (> 0) and
 * fills addr, or 0 when there is none, or CRUST_EINVAL if cap is too small
 * (the datagram stays queued; it is at most unrouted_max_len bytes). */
int64_t crust_endpoint_next_unrouted(crust_endpoint *ep, uint8_t *buf, size_t cap,
                                     struct sockaddr_storage *addr, socklen_t *addrlen);
/* Send one datagram the caller built (a handshake packet) to addr: queued
 * behind the connections' datagrams and sent at once. Returns CRUST_OK
 * (sent, or queued until the socket is writable: crust_endpoint_want_write),
 * CRUST_EINVAL (bad address, empty), CRUST_EMSGSIZE (over 65507 bytes) or
 * CRUST_EWOULDBLOCK (the queue is full of datagrams waiting for the
 * socket). */
int crust_endpoint_send_raw(crust_endpoint *ep, const uint8_t *buf, size_t len,
                            const struct sockaddr *addr, socklen_t addrlen);

void crust_endpoint_get_stats(const crust_endpoint *ep, crust_endpoint_stats *st);

/* Two counters of crust_endpoint_stats without copying the rest: what an
 * embedder reads after every drive (rx_datagrams, activity). */
void crust_endpoint_counters(const crust_endpoint *ep, uint64_t *rx_datagrams,
                             uint64_t *activity);

#ifdef __cplusplus
}
#endif
#endif /* CRUST_ENDPOINT_H */
