/* udp_batch.c - recvmmsg/sendmmsg batches with GRO/GSO; see udp_batch.h. */
#define _GNU_SOURCE
#include <errno.h>
#include <time.h> /* linux/errqueue.h uses struct timespec */
#include <linux/errqueue.h>
#include <netinet/icmp6.h>
#include <netinet/in.h>
#include <netinet/ip_icmp.h>
#include <netinet/udp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include "udp_batch.h"

#ifndef SOL_UDP
#define SOL_UDP 17
#endif
#ifndef UDP_SEGMENT
#define UDP_SEGMENT 103
#endif
#ifndef UDP_GRO
#define UDP_GRO 104
#endif

/* Room for the GRO size plus whatever else the caller's socket options
 * add (a truncated control area only loses those extras: MSG_CTRUNC). */
#define RX_CTRL 64
#define TX_CTRL CMSG_SPACE(sizeof(uint16_t))
/* The arena holds several full GSO runs, so one sendmmsg moves hundreds of
 * datagrams; without GSO, `batch` datagrams (and at least one raw datagram
 * of the largest size). */
#define TX_ARENA_GSO (512u * 1024u)
#define TX_SLOT_PLAIN 1536u

static void *zalloc(size_t n) { return calloc(1, n ? n : 1); }

void udp_free(crust_udp *u)
{
    free(u->rx_buf);
    free(u->rx_mmsg);
    free(u->rx_iov);
    free(u->rx_addr);
    free(u->rx_ctrl);
    free(u->rx);
    free(u->arena);
    free(u->runs);
    free(u->tx_mmsg);
    free(u->tx_iov);
    free(u->tx_ctrl);
    free(u->tx_end_run);
    free(u->tx_end_seg);
    memset(u, 0, sizeof *u);
    u->fd = -1;
}

static void rx_reset(crust_udp *u, unsigned i)
{
    struct msghdr *h = &u->rx_mmsg[i].msg_hdr;
    h->msg_name = &u->rx_addr[i];
    h->msg_namelen = sizeof u->rx_addr[i];
    h->msg_iov = &u->rx_iov[i];
    h->msg_iovlen = 1;
    h->msg_control = u->rx_ctrl + (size_t)i * RX_CTRL;
    h->msg_controllen = RX_CTRL;
    h->msg_flags = 0;
}

int udp_init(crust_udp *u, int fd, unsigned batch, int gso, int gro)
{
    memset(u, 0, sizeof *u);
    u->fd = -1;
    if (fd < 0 || batch < 1 || batch > UDP_BATCH_MAX)
        return -1;
    int one = 1, zero = 0;
    if (gro)
        gro = setsockopt(fd, SOL_UDP, UDP_GRO, &one, sizeof one) == 0;
    else
        /* The socket may come with GRO on; our small buffers would then
         * truncate coalesced datagrams. Failure means no GRO at all. */
        (void)setsockopt(fd, SOL_UDP, UDP_GRO, &zero, sizeof zero);
    if (gso) {
        /* Kernels with UDP_SEGMENT (4.18+) answer this getsockopt; it is
         * how quinn-udp detects GSO without sending anything. */
        int v = 0;
        socklen_t vl = sizeof v;
        gso = getsockopt(fd, SOL_UDP, UDP_SEGMENT, &v, &vl) == 0;
    }
    /* ICMP errors about our datagrams go to the error queue, with the
     * destination they concern, instead of being lost on an unconnected
     * socket: a dead peer's "port unreachable" is how we notice it in
     * seconds (docs/design/0048-dead-peers-noticed.md). A dual-stack IPv6
     * socket needs both (IPv4-mapped peers report through ICMPv4).
     * Failure only means dead peers are noticed by timeout. */
    (void)setsockopt(fd, SOL_IP, IP_RECVERR, &one, sizeof one);
    (void)setsockopt(fd, SOL_IPV6, IPV6_RECVERR, &one, sizeof one);
    /* Don't-fragment on every datagram, and the kernel's own path-MTU cache
     * ignored: the engine finds the path MTU itself (0005, RFC 8899), which
     * needs a too-large probe to be dropped, not fragmented by a router on
     * the way (IPv4 did until now, so a smaller path MTU was never found
     * and every full packet travelled as two fragments). DF packets also
     * skip the kernel's per-datagram IP id hash. As quinn and ngtcp2 do.
     * Failure (an old kernel) leaves the old behaviour. */
    int probe = IP_PMTUDISC_PROBE, probe6 = IPV6_PMTUDISC_PROBE;
    (void)setsockopt(fd, SOL_IP, IP_MTU_DISCOVER, &probe, sizeof probe);
    (void)setsockopt(fd, SOL_IPV6, IPV6_MTU_DISCOVER, &probe6, sizeof probe6);
    u->fd = fd;
    u->batch = batch;
    u->gso = gso;
    u->gro = gro;
    u->rx_slot = gro ? UDP_RX_SLOT_GRO : UDP_RX_SLOT;
    /* Sized for GSO even when it is off now: GSO never comes back, but the
     * arena must be allocated before we know whether sends will take it. */
    u->arena_cap = (size_t)batch * TX_SLOT_PLAIN;
    if (gso && u->arena_cap < TX_ARENA_GSO)
        u->arena_cap = TX_ARENA_GSO;
    if (u->arena_cap < UDP_TX_MAX_DATAGRAM)
        u->arena_cap = UDP_TX_MAX_DATAGRAM;
    u->runs_cap = batch;

    u->rx_buf = malloc(batch * u->rx_slot);
    u->rx_mmsg = zalloc(batch * sizeof *u->rx_mmsg);
    u->rx_iov = zalloc(batch * sizeof *u->rx_iov);
    u->rx_addr = zalloc(batch * sizeof *u->rx_addr);
    u->rx_ctrl = zalloc((size_t)batch * RX_CTRL);
    u->rx = zalloc(batch * sizeof *u->rx);
    u->arena = malloc(u->arena_cap);
    u->runs = zalloc(u->runs_cap * sizeof *u->runs);
    u->tx_mmsg = zalloc(batch * sizeof *u->tx_mmsg);
    u->tx_iov = zalloc(batch * sizeof *u->tx_iov);
    u->tx_ctrl = zalloc(batch * TX_CTRL);
    u->tx_end_run = zalloc(batch * sizeof *u->tx_end_run);
    u->tx_end_seg = zalloc(batch * sizeof *u->tx_end_seg);
    if (!u->rx_buf || !u->rx_mmsg || !u->rx_iov || !u->rx_addr || !u->rx_ctrl || !u->rx ||
        !u->arena || !u->runs || !u->tx_mmsg || !u->tx_iov || !u->tx_ctrl || !u->tx_end_run ||
        !u->tx_end_seg) {
        udp_free(u);
        return -1;
    }
    for (unsigned i = 0; i < batch; i++) {
        u->rx_iov[i].iov_base = u->rx_buf + (size_t)i * u->rx_slot;
        u->rx_iov[i].iov_len = u->rx_slot;
        rx_reset(u, i);
    }
    return 0;
}

/* ---- receiving ------------------------------------------------------------ */

static size_t gro_size(struct msghdr *h, size_t len)
{
    for (struct cmsghdr *cm = CMSG_FIRSTHDR(h); cm; cm = CMSG_NXTHDR(h, cm)) {
        if (cm->cmsg_level == SOL_UDP && cm->cmsg_type == UDP_GRO &&
            cm->cmsg_len >= CMSG_LEN(sizeof(int))) {
            int v;
            memcpy(&v, CMSG_DATA(cm), sizeof v);
            if (v > 0 && (size_t)v < len)
                return (size_t)v;
        }
    }
    return len;
}

/* Errors an ICMP report leaves pending on the socket (IP_RECVERR): the
 * next send or receive returns it once, whatever it carries. */
static int socket_error(int e)
{
    return e == ECONNREFUSED || e == EHOSTUNREACH || e == ENETUNREACH || e == EHOSTDOWN ||
           e == ENONET || e == EPROTO || e == EACCES || e == EMSGSIZE;
}

int udp_recv_batch(crust_udp *u)
{
    /* recvmmsg rewrote the name and control lengths of the slots it
     * filled last time; the others are still as set. */
    for (unsigned i = 0; i < u->rx_used; i++)
        rx_reset(u, i);
    u->rx_used = 0;
    int n;
    /* A pending socket error (e.g. ICMP reported through IP_RECVERR) is
     * returned once and consumed: try again a few times. */
    for (int tries = 0;; tries++) {
        n = recvmmsg(u->fd, u->rx_mmsg, u->batch, MSG_DONTWAIT, NULL);
        if (n >= 0)
            break;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return 0;
        if (errno == EINTR)
            continue;
        if (socket_error(errno))
            u->err_pending = 1; /* consumed; the report waits in the queue */
        else
            u->ct.rx_errors++;
        if (tries >= 3)
            return 0;
    }
    if (n == 0)
        return 0;
    u->rx_used = (unsigned)n;
    u->ct.rx_batches++;
    for (int i = 0; i < n; i++) {
        struct msghdr *h = &u->rx_mmsg[i].msg_hdr;
        udp_rx_msg *m = &u->rx[i];
        m->data = u->rx_iov[i].iov_base;
        m->len = u->rx_mmsg[i].msg_len;
        m->addr = (const struct sockaddr *)&u->rx_addr[i];
        m->addrlen = h->msg_namelen;
        m->truncated = (h->msg_flags & MSG_TRUNC) != 0;
        if (m->len > u->rx_slot)
            m->len = u->rx_slot;
        m->seg = m->len ? gro_size(h, m->len) : 0;
    }
    return n;
}

int udp_recv_error(crust_udp *u, struct sockaddr_storage *dst, socklen_t *dstlen, int *kind)
{
    uint8_t body[64];
    union {
        struct cmsghdr align;
        uint8_t buf[CMSG_SPACE(sizeof(struct sock_extended_err) + sizeof(struct sockaddr_in6)) +
                    64];
    } ctrl;
    struct iovec iov = {body, sizeof body};
    struct msghdr h;
    for (;;) {
        memset(&h, 0, sizeof h);
        memset(dst, 0, sizeof *dst);
        h.msg_name = dst;
        h.msg_namelen = sizeof *dst;
        h.msg_iov = &iov;
        h.msg_iovlen = 1;
        h.msg_control = ctrl.buf;
        h.msg_controllen = sizeof ctrl.buf;
        if (recvmsg(u->fd, &h, MSG_ERRQUEUE | MSG_DONTWAIT) >= 0)
            break;
        if (errno != EINTR) {
            u->err_pending = 0; /* EAGAIN: empty */
            return 0;
        }
    }
    u->ct.icmp_errors++;
    *dstlen = h.msg_namelen;
    *kind = UDP_ERR_OTHER;
    for (struct cmsghdr *cm = CMSG_FIRSTHDR(&h); cm; cm = CMSG_NXTHDR(&h, cm)) {
        if (!((cm->cmsg_level == SOL_IP && cm->cmsg_type == IP_RECVERR) ||
              (cm->cmsg_level == SOL_IPV6 && cm->cmsg_type == IPV6_RECVERR)) ||
            cm->cmsg_len < CMSG_LEN(sizeof(struct sock_extended_err)))
            continue;
        struct sock_extended_err ee;
        memcpy(&ee, CMSG_DATA(cm), sizeof ee);
        if (ee.ee_origin == SO_EE_ORIGIN_ICMP && ee.ee_type == ICMP_DEST_UNREACH &&
            ee.ee_code != ICMP_FRAG_NEEDED)
            *kind = UDP_ERR_UNREACHABLE;
        else if (ee.ee_origin == SO_EE_ORIGIN_ICMP6 && ee.ee_type == ICMP6_DST_UNREACH)
            *kind = UDP_ERR_UNREACHABLE;
    }
    return 1;
}

/* ---- sending ---------------------------------------------------------------- */

uint8_t *udp_tx_buf(crust_udp *u, size_t need)
{
    /* A free run slot is required even though the datagram might join the
     * last run: deciding needs its length, which is not known yet. */
    if (u->tail >= u->runs_cap || u->arena_cap - u->arena_len < need)
        return NULL;
    return u->arena + u->arena_len;
}

void udp_tx_push(crust_udp *u, size_t len, const struct sockaddr *addr, socklen_t addrlen)
{
    udp_run *r = u->tail > u->head ? &u->runs[u->tail - 1] : NULL;
    if (u->gso && r && r->open && len <= r->seg && r->nseg < UDP_GSO_MAX_SEGMENTS &&
        r->len + len <= UDP_GSO_MAX_BYTES && r->addrlen == addrlen &&
        memcmp(&r->addr, addr, addrlen) == 0 && !(r == &u->runs[u->head] && u->head_seg)) {
        r->len += (uint32_t)len;
        r->nseg++;
        if (len < r->seg)
            r->open = 0; /* only the last segment may be shorter */
    } else {
        r = &u->runs[u->tail++];
        r->off = (uint32_t)u->arena_len;
        r->len = (uint32_t)len;
        r->seg = (uint16_t)(len > UINT16_MAX ? UINT16_MAX : len);
        r->nseg = 1;
        /* A datagram too large to be a segment stays alone. */
        r->open = len <= UINT16_MAX;
        r->addrlen = addrlen;
        memcpy(&r->addr, addr, addrlen);
    }
    u->arena_len += len;
}

/* Fill up to `batch` sendmmsg entries from the cursor. */
static unsigned tx_build(crust_udp *u)
{
    unsigned n = 0, r = u->head, s = u->head_seg;
    while (n < u->batch && r < u->tail) {
        udp_run *run = &u->runs[r];
        struct msghdr *h = &u->tx_mmsg[n].msg_hdr;
        memset(h, 0, sizeof *h);
        h->msg_name = &run->addr;
        h->msg_namelen = run->addrlen;
        h->msg_iov = &u->tx_iov[n];
        h->msg_iovlen = 1;
        if (run->nseg == 1 || (u->gso && s == 0)) {
            u->tx_iov[n].iov_base = u->arena + run->off;
            u->tx_iov[n].iov_len = run->len;
            if (run->nseg > 1) {
                uint8_t *ctrl = u->tx_ctrl + (size_t)n * TX_CTRL;
                memset(ctrl, 0, TX_CTRL);
                h->msg_control = ctrl;
                h->msg_controllen = TX_CTRL;
                struct cmsghdr *cm = CMSG_FIRSTHDR(h);
                cm->cmsg_level = SOL_UDP;
                cm->cmsg_type = UDP_SEGMENT;
                cm->cmsg_len = CMSG_LEN(sizeof(uint16_t));
                uint16_t seg = run->seg;
                memcpy(CMSG_DATA(cm), &seg, sizeof seg);
            }
            r++;
            s = 0;
        } else {
            /* GSO is off: one datagram of the run per entry. */
            size_t at = (size_t)s * run->seg;
            size_t left = run->len - at;
            u->tx_iov[n].iov_base = u->arena + run->off + at;
            u->tx_iov[n].iov_len = left < run->seg ? left : run->seg;
            if (++s == run->nseg) {
                r++;
                s = 0;
            }
        }
        u->tx_end_run[n] = r;
        u->tx_end_seg[n] = s;
        n++;
    }
    return n;
}

/* Datagrams carried by entry i of the last tx_build. */
static unsigned entry_segments(const crust_udp *u, unsigned i)
{
    const struct msghdr *h = &u->tx_mmsg[i].msg_hdr;
    if (!h->msg_controllen)
        return 1;
    uint16_t seg;
    memcpy(&seg, CMSG_DATA(CMSG_FIRSTHDR(h)), sizeof seg);
    return (unsigned)((h->msg_iov->iov_len + seg - 1) / seg);
}

/* Move the cursor past the first n entries of the last tx_build, counting
 * their datagrams as sent or as dropped. */
static void tx_advance(crust_udp *u, unsigned n, int sent)
{
    for (unsigned i = 0; i < n; i++) {
        unsigned nseg = entry_segments(u, i);
        if (!sent) {
            u->ct.tx_dropped += nseg;
            continue;
        }
        u->ct.tx_datagrams += nseg;
        u->ct.tx_bytes += u->tx_mmsg[i].msg_hdr.msg_iov->iov_len;
        if (nseg > 1)
            u->ct.gso_segments += nseg;
    }
    u->head = u->tx_end_run[n - 1];
    u->head_seg = u->tx_end_seg[n - 1];
}

int udp_tx_flush(crust_udp *u)
{
    int retried = 0;
    while (u->head < u->tail) {
        unsigned n = tx_build(u);
        int rc = sendmmsg(u->fd, u->tx_mmsg, n, MSG_DONTWAIT);
        if (rc > 0) {
            u->ct.tx_batches++;
            tx_advance(u, (unsigned)rc, 1);
            retried = 0;
            continue;
        }
        /* rc < 0: the first entry failed (later ones were not tried). */
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            /* Socket buffer full: keep the datagrams, in order, for when
             * the socket is writable. */
            u->ct.tx_blocked++;
            return UDP_BLOCKED;
        }
        if (u->tx_mmsg[0].msg_hdr.msg_controllen && (errno == EIO || errno == EINVAL)) {
            /* The device cannot checksum GSO segments (EIO), or the kernel
             * or socket refuses UDP_SEGMENT (EINVAL): off for good, and the
             * same datagrams go again one by one. */
            u->gso = 0;
            u->ct.gso_refused++;
            continue;
        }
        if (!retried && socket_error(errno)) {
            /* Most likely the pending error of an earlier datagram's ICMP
             * report, consumed now: this one was not even tried. */
            retried = 1;
            u->err_pending = 1;
            continue;
        }
        /* Refused for its own sake (EMSGSIZE above the path MTU, an
         * unreachable or wrong-family address, ENOBUFS...): drop that entry
         * only; the engine's loss recovery treats it as lost. */
        tx_advance(u, 1, 0);
        retried = 0;
    }
    /* Everything went: start the arena from the beginning again. */
    u->head = u->tail = u->head_seg = 0;
    u->arena_len = 0;
    return UDP_OK;
}
