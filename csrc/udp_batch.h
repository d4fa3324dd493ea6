/*
 * udp_batch.h - the socket layer (internal): the only code in crust that
 * touches a socket fd (as quinn-udp is for quinn).
 *
 * Receiving: recvmmsg into preallocated buffers, `batch` datagrams per
 * call. With UDP_GRO the kernel may hand over several datagrams of one flow
 * coalesced in one buffer; the gso_size control message says where to cut
 * (udp_rx_msg.seg), and the caller walks the buffer in steps of seg.
 *
 * Sending: datagrams are built straight into a preallocated arena
 * (udp_tx_buf, then udp_tx_push). Consecutive datagrams to the same
 * address with the same size form a run that goes out as one GSO
 * super-datagram (UDP_SEGMENT control message): the kernel cuts it, one
 * sendmmsg entry carries up to UDP_GSO_MAX_SEGMENTS datagrams. The last
 * datagram of a run may be shorter (the kernel's rule). When the kernel or
 * the socket refuses GSO (EIO, EINVAL), it is switched off for good and the
 * refused run goes again as single datagrams.
 *
 * The fd must be non-blocking; nothing here ever waits. When the socket
 * buffer is full (EAGAIN) the unsent datagrams stay queued in order and
 * udp_tx_flush says UDP_BLOCKED: the caller waits for writability.
 *
 * No allocation after udp_init.
 */
#ifndef CRUST_UDP_BATCH_H
#define CRUST_UDP_BATCH_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* sendmmsg/recvmmsg take at most UIO_MAXIOV (1024) messages per call. */
#define UDP_BATCH_MAX 1024
/* Segments per GSO send: the kernel's UDP_MAX_SEGMENTS was 64 until Linux
 * 6.9 raised it; 64 works everywhere. */
#define UDP_GSO_MAX_SEGMENTS 64
/* Bytes per GSO send: below IPv4's 65507-byte UDP payload limit (and so
 * IPv6's 65527) whatever the segment size. */
#define UDP_GSO_MAX_BYTES 65000
/* A receive buffer with GRO must hold a whole coalesced super-datagram. */
#define UDP_RX_SLOT_GRO 65536
/* Without GRO a buffer holds one datagram: crust packets are at most
 * CRUST_MAX_PACKET bytes; longer datagrams are truncated and dropped. */
#define UDP_RX_SLOT 2048
/* The largest datagram udp_tx_buf can place (a raw datagram of the
 * caller's, crust_endpoint_send_raw). */
#define UDP_TX_MAX_DATAGRAM 65507

enum { UDP_OK = 0, UDP_BLOCKED = 1 };

/* One buffer filled by recvmmsg. */
typedef struct udp_rx_msg {
    const uint8_t *data;
    size_t len;                  /* bytes in the buffer */
    size_t seg;                  /* datagram size (GRO: all but the last) */
    const struct sockaddr *addr; /* sender */
    socklen_t addrlen;
    int truncated;               /* longer than the buffer: dropped */
} udp_rx_msg;

/* A run of datagrams in the arena, all to one address. */
typedef struct udp_run {
    uint32_t off, len;           /* arena bytes */
    uint16_t seg, nseg;          /* segment size; segments */
    uint8_t open;                /* an equal datagram may still join */
    socklen_t addrlen;
    struct sockaddr_storage addr;
} udp_run;

typedef struct udp_counters {
    uint64_t rx_batches, tx_batches;   /* recvmmsg / sendmmsg calls that moved data */
    uint64_t tx_datagrams, tx_bytes;   /* datagrams the kernel accepted */
    uint64_t gso_segments;             /* of those, sent inside GSO runs */
    uint64_t tx_blocked;               /* sendmmsg said EAGAIN */
    uint64_t tx_dropped;               /* refused by the kernel (not EAGAIN) */
    uint64_t rx_errors;                /* recvmmsg errors other than EAGAIN */
    uint64_t gso_refused;              /* GSO sends refused (then GSO is off) */
    uint64_t icmp_errors;              /* reports read from the error queue */
} udp_counters;

typedef struct crust_udp {
    int fd;
    unsigned batch;
    int gso, gro;                /* in use now */
    udp_counters ct;
    /* A send or receive returned the pending error an ICMP report leaves
     * (IP_RECVERR): the error queue has something to read. */
    int err_pending;

    /* receiving: batch slots */
    size_t rx_slot;
    uint8_t *rx_buf;
    struct mmsghdr *rx_mmsg;
    struct iovec *rx_iov;
    struct sockaddr_storage *rx_addr;
    uint8_t *rx_ctrl;
    unsigned rx_used;            /* slots the last call filled (to reset) */
    udp_rx_msg *rx;              /* results of the last udp_recv_batch */

    /* sending */
    uint8_t *arena;
    size_t arena_cap, arena_len;
    udp_run *runs;
    unsigned runs_cap, head, tail;
    unsigned head_seg;           /* segments of runs[head] already sent
                                    (only when GSO went off mid-run) */
    struct mmsghdr *tx_mmsg;
    struct iovec *tx_iov;
    uint8_t *tx_ctrl;
    unsigned *tx_end_run, *tx_end_seg; /* cursor after each entry */
} crust_udp;

/* Set up for fd with `batch` (1..UDP_BATCH_MAX) datagrams per call; gso and
 * gro ask for those offloads, which are used only where the kernel has
 * them (u->gso, u->gro say). Returns 0, or -1 (bad argument, or out of
 * memory) with nothing allocated. */
int udp_init(crust_udp *u, int fd, unsigned batch, int gso, int gro);
void udp_free(crust_udp *u);

/* Read one batch without waiting. Returns the number of buffers filled,
 * described by u->rx[0..n); 0 when the socket has nothing. */
int udp_recv_batch(crust_udp *u);

/* What the network said about a datagram we sent (IP_RECVERR). */
enum { UDP_ERR_OTHER = 0, UDP_ERR_UNREACHABLE = 1 };
/* Pop one report from the socket's error queue (MSG_ERRQUEUE; the endpoint
 * turns IP_RECVERR / IPV6_RECVERR on in udp_init): the destination of the
 * datagram it is about in *dst, and UDP_ERR_UNREACHABLE for an ICMP or
 * ICMPv6 destination unreachable (port, host, network, administratively
 * prohibited), UDP_ERR_OTHER for the rest (too big, TTL exceeded: a low-TTL
 * punch, not a dead peer). Returns 1, or 0 when the queue is empty. */
int udp_recv_error(crust_udp *u, struct sockaddr_storage *dst, socklen_t *dstlen, int *kind);

/* Room for the next datagram of up to `need` bytes, or NULL when the queue
 * is full (udp_tx_flush first). Writing there commits nothing. */
uint8_t *udp_tx_buf(crust_udp *u, size_t need);
/* Queue the `len` bytes just written at udp_tx_buf() for addr. */
void udp_tx_push(crust_udp *u, size_t len, const struct sockaddr *addr, socklen_t addrlen);
/* Send what is queued: UDP_OK when all of it went (or was refused and
 * counted), UDP_BLOCKED when the socket buffer is full and some stays. */
int udp_tx_flush(crust_udp *u);
/* 1 while datagrams wait in the queue. */
static inline int udp_tx_pending(const crust_udp *u) { return u->head < u->tail; }

#endif
