/*
 * test_endpoint.c - endpoints on real loopback sockets (null AEAD, so the
 * sanitizer build checks endpoint.c and udp_batch.c): bulk transfers with
 * GSO/GRO on and off, a kernel refusing GSO, unrouted and junk datagrams,
 * removal, many connections on one endpoint, and a client moving to a new
 * socket (NAT rebinding).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "crust.h"

static uint64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static int udp_socket(struct sockaddr_in *addr)
{
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int big = 4 << 20;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &big, sizeof big);
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &big, sizeof big);
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) != 0)
        return -1;
    socklen_t l = sizeof *addr;
    getsockname(fd, (struct sockaddr *)addr, &l);
    return fd;
}

static crust_conn *conn(uint8_t local, uint8_t remote, uint32_t i)
{
    uint8_t lc[CRUST_CID_LEN], rc[CRUST_CID_LEN], k1[32], k2[32], iv1[12], iv2[12];
    memset(lc, local, sizeof lc);
    memset(rc, remote, sizeof rc);
    memcpy(lc, &i, sizeof i);
    memcpy(rc, &i, sizeof i);
    memset(k1, 1, sizeof k1);
    memset(k2, 2, sizeof k2);
    memset(iv1, 3, sizeof iv1);
    memset(iv2, 4, sizeof iv2);
    crust_config cfg;
    crust_config_default(&cfg);
    cfg.idle_timeout_us = 0;
    cfg.lost_timeout_us = 0; /* nor a dead-peer one: runs cut off for long */
    cfg.keepalive_us = 0;
    crust_conn *c = crust_conn_new(&cfg, lc, rc, now_us());
    if (local < remote)
        crust_conn_set_keys(c, 0, CRUST_AEAD_NULL, k1, iv1, k2, iv2);
    else
        crust_conn_set_keys(c, 0, CRUST_AEAD_NULL, k2, iv2, k1, iv1);
    return c;
}

/* Drive the endpoints until done() or max_us; the application step runs
 * after every round. */
typedef int (*step_fn)(void *arg, uint64_t now);

static int run(crust_endpoint **eps, int n, step_fn step, void *arg, uint64_t max_us)
{
    uint64_t start = now_us();
    for (;;) {
        uint64_t now = now_us(), deadline = UINT64_MAX;
        for (int i = 0; i < n; i++) {
            uint64_t d = crust_endpoint_drive(eps[i], now);
            deadline = d < deadline ? d : deadline;
        }
        if (step(arg, now))
            return 1;
        for (int i = 0; i < n; i++) {
            uint64_t d = crust_endpoint_flush(eps[i], now);
            deadline = d < deadline ? d : deadline;
        }
        if (now - start > max_us)
            return 0;
        struct pollfd pf[4];
        for (int i = 0; i < n; i++) {
            pf[i].fd = crust_endpoint_fd(eps[i]);
            pf[i].events = POLLIN | (crust_endpoint_want_write(eps[i]) ? POLLOUT : 0);
        }
        now = now_us();
        int wait = deadline <= now ? 0 : deadline - now > 20000 ? 20 : (int)((deadline - now) / 1000);
        poll(pf, (nfds_t)n, wait);
    }
}

/* ---- bulk transfer ------------------------------------------------------- */

#define MSG 65536

typedef struct bulk {
    crust_endpoint *ea, *eb;
    crust_conn *a, *b;
    uint64_t total, queued, received;
    int corrupt;
    uint8_t *buf;
} bulk;

static void fill(uint8_t *p, uint64_t off, size_t n)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)((off + i) * 2654435761u >> 13);
}

static int bulk_step(void *arg, uint64_t now)
{
    bulk *t = arg;
    while (t->queued < t->total) {
        fill(t->buf, t->queued, MSG);
        if (crust_conn_send(t->a, now, t->buf, MSG, 0, NULL) != CRUST_OK)
            break;
        t->queued += MSG;
    }
    crust_endpoint_touch(t->ea, t->a);
    crust_conn *c;
    while ((c = crust_endpoint_next_ready(t->eb))) {
        crust_event ev;
        while (crust_conn_poll_event(c, &ev)) {
            if (ev.type != CRUST_EV_MESSAGE)
                continue;
            int64_t m = crust_conn_read_message(c, ev.prio, t->buf, MSG);
            uint8_t want[MSG];
            fill(want, t->received, MSG);
            if (m != MSG || memcmp(want, t->buf, MSG) != 0)
                t->corrupt = 1;
            t->received += MSG;
        }
        crust_endpoint_touch(t->eb, c);
    }
    while ((c = crust_endpoint_next_ready(t->ea))) {
        crust_event ev;
        while (crust_conn_poll_event(c, &ev)) {
        }
    }
    return t->received >= t->total;
}

static void test_bulk(int gso, int gro, int refuse_gso)
{
    struct sockaddr_in aa, ba;
    int fa = udp_socket(&aa), fb = udp_socket(&ba);
    CHECK(fa >= 0 && fb >= 0);
    if (refuse_gso) {
        /* The kernel refuses GSO without UDP checksums (EINVAL): the
         * endpoint must fall back to plain datagrams. */
        int one = 1;
        setsockopt(fa, SOL_SOCKET, SO_NO_CHECK, &one, sizeof one);
    }
    crust_endpoint_config cfg;
    crust_endpoint_config_default(&cfg);
    cfg.gso = (uint32_t)gso;
    cfg.gro = (uint32_t)gro;
    bulk t = {0};
    t.ea = crust_endpoint_new(fa, &cfg);
    t.eb = crust_endpoint_new(fb, &cfg);
    CHECK(t.ea && t.eb);
    t.a = conn(1, 2, 0);
    t.b = conn(2, 1, 0);
    CHECK(crust_endpoint_add(t.ea, t.a, (struct sockaddr *)&ba, sizeof ba) == CRUST_OK);
    CHECK(crust_endpoint_add(t.eb, t.b, (struct sockaddr *)&aa, sizeof aa) == CRUST_OK);
    CHECK(crust_endpoint_add(t.eb, t.b, (struct sockaddr *)&aa, sizeof aa) == CRUST_EINVAL);
    t.total = 16u << 20;
    t.buf = malloc(MSG);
    crust_endpoint *eps[2] = {t.ea, t.eb};
    CHECK(run(eps, 2, bulk_step, &t, 30000000));
    CHECK(!t.corrupt);
    CHECK(t.received == t.total);
    crust_endpoint_stats sa, sb;
    crust_endpoint_get_stats(t.ea, &sa);
    crust_endpoint_get_stats(t.eb, &sb);
    printf("bulk gso=%d gro=%d refuse=%d: a tx %llu dgrams in %llu batches (gso %llu, refused "
           "%llu), b rx %llu (gro %llu), drives %llu/%llu\n",
           gso, gro, refuse_gso, (unsigned long long)sa.tx_datagrams,
           (unsigned long long)sa.tx_batches, (unsigned long long)sa.gso_segments,
           (unsigned long long)sa.gso_refused, (unsigned long long)sb.rx_datagrams,
           (unsigned long long)sb.gro_segments, (unsigned long long)sa.drives,
           (unsigned long long)sb.drives);
    CHECK(sa.tx_datagrams > (16u << 20) / 1500);
    CHECK(sb.rx_dropped_conn + sb.rx_dropped_malformed + sb.unrouted == 0);
    if (refuse_gso) {
        CHECK(sa.gso_refused >= 1);
        CHECK(!crust_endpoint_gso_enabled(t.ea));
    } else if (gso) {
        CHECK(crust_endpoint_gso_enabled(t.ea));
        CHECK(sa.gso_segments > 0);
    } else {
        CHECK(sa.gso_segments == 0);
    }
    if (!gro)
        CHECK(sb.gro_segments == 0);
    CHECK(crust_endpoint_remove(t.ea, t.a) == CRUST_OK);
    CHECK(crust_endpoint_remove(t.ea, t.a) == CRUST_EINVAL);
    crust_endpoint_free(t.ea);
    crust_endpoint_free(t.eb);
    crust_conn_free(t.a);
    crust_conn_free(t.b);
    free(t.buf);
    close(fa);
    close(fb);
}

/* ---- unrouted and junk ---------------------------------------------------- */

static void test_unrouted(void)
{
    struct sockaddr_in ea_addr, ja, sa;
    int fd = udp_socket(&ea_addr), junk = udp_socket(&ja), sink = udp_socket(&sa);
    crust_endpoint_config cfg;
    crust_endpoint_config_default(&cfg);
    cfg.unrouted_cap = 8;
    cfg.route_unknown_cids = 1; /* by default they are dropped: see below */
    crust_endpoint *ep = crust_endpoint_new(fd, &cfg);
    CHECK(ep != NULL);
    /* Its peer is another socket: whatever it sends never reaches junk. */
    crust_conn *c = conn(5, 6, 0);
    CHECK(crust_endpoint_add(ep, c, (struct sockaddr *)&sa, sizeof sa) == CRUST_OK);

    uint8_t lh[40] = {0xc0, 1, 2, 3};
    uint8_t unknown[60] = {0x40, 9, 9, 9, 9, 9, 9, 9, 9, 1};
    uint8_t known[60] = {0x40};
    memset(known + 1 + 4, 5, 4); /* conn(5, 6, 0)'s local id: 0 0 0 0 5 5 5 5 */
    uint8_t bad[30] = {0x00, 1};
    sendto(junk, lh, sizeof lh, 0, (struct sockaddr *)&ea_addr, sizeof ea_addr);
    sendto(junk, unknown, sizeof unknown, 0, (struct sockaddr *)&ea_addr, sizeof ea_addr);
    sendto(junk, known, sizeof known, 0, (struct sockaddr *)&ea_addr, sizeof ea_addr);
    sendto(junk, bad, sizeof bad, 0, (struct sockaddr *)&ea_addr, sizeof ea_addr);
    sendto(junk, bad, 0, 0, (struct sockaddr *)&ea_addr, sizeof ea_addr);
    usleep(20000);
    crust_endpoint_drive(ep, now_us());
    uint8_t buf[2048];
    struct sockaddr_storage from;
    socklen_t fl;
    CHECK(crust_endpoint_next_unrouted(ep, buf, 10, &from, &fl) == CRUST_EINVAL);
    CHECK(crust_endpoint_next_unrouted(ep, buf, sizeof buf, &from, &fl) == sizeof lh);
    CHECK(memcmp(buf, lh, sizeof lh) == 0);
    CHECK(fl == sizeof(struct sockaddr_in) &&
          ((struct sockaddr_in *)&from)->sin_port == ja.sin_port);
    CHECK(crust_endpoint_next_unrouted(ep, buf, sizeof buf, &from, &fl) == sizeof unknown);
    CHECK(memcmp(buf, unknown, sizeof unknown) == 0);
    CHECK(crust_endpoint_next_unrouted(ep, buf, sizeof buf, &from, &fl) == 0);
    crust_endpoint_stats st;
    crust_endpoint_get_stats(ep, &st);
    CHECK(st.rx_datagrams == 5);
    CHECK(st.rx_dropped_conn == 1);      /* the known id, failing authentication */
    CHECK(st.rx_dropped_malformed == 2); /* no fixed bit; empty */
    CHECK(st.unrouted == 2);

    /* A flood of junk: counted, bounded, never answered. */
    uint64_t x = 12345;
    for (int round = 0; round < 20; round++) {
        for (int i = 0; i < 500; i++) {
            uint8_t d[200];
            size_t len = 1 + (size_t)(x % sizeof d);
            for (size_t k = 0; k < len; k++) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                d[k] = (uint8_t)x;
            }
            sendto(junk, d, len, 0, (struct sockaddr *)&ea_addr, sizeof ea_addr);
        }
        crust_endpoint_drive(ep, now_us());
    }
    usleep(20000);
    crust_endpoint_drive(ep, now_us());
    crust_endpoint_get_stats(ep, &st);
    CHECK(st.rx_datagrams > 5000);
    CHECK(st.rx_datagrams == st.unrouted + st.rx_dropped_unrouted_full +
                                 st.rx_dropped_malformed + st.rx_dropped_conn);
    CHECK(st.rx_dropped_unrouted_full > 0);
    CHECK(recv(junk, buf, sizeof buf, MSG_DONTWAIT) < 0 && errno == EAGAIN);

    /* Removed: its datagrams are unrouted now. */
    while (crust_endpoint_next_unrouted(ep, buf, sizeof buf, &from, &fl) > 0) {
    }
    CHECK(crust_endpoint_remove(ep, c) == CRUST_OK);
    sendto(junk, known, sizeof known, 0, (struct sockaddr *)&ea_addr, sizeof ea_addr);
    usleep(20000);
    crust_endpoint_drive(ep, now_us());
    CHECK(crust_endpoint_next_unrouted(ep, buf, sizeof buf, &from, &fl) == sizeof known);

    /* send_raw reaches the address as is. */
    CHECK(crust_endpoint_send_raw(ep, lh, sizeof lh, (struct sockaddr *)&ja, sizeof ja) ==
          CRUST_OK);
    CHECK(crust_endpoint_send_raw(ep, lh, 0, (struct sockaddr *)&ja, sizeof ja) == CRUST_EINVAL);
    usleep(20000);
    CHECK(recv(junk, buf, sizeof buf, MSG_DONTWAIT) == sizeof lh);

    crust_endpoint_free(ep);
    crust_conn_free(c);
    close(fd);
    close(junk);
    close(sink);
}

/* By default a short-header datagram for no connection here is dropped and
 * counted in C: it cannot start a handshake, so only junk would go up. */
static void test_unknown_cids_dropped(void)
{
    struct sockaddr_in ea_addr, ja;
    int fd = udp_socket(&ea_addr), junk = udp_socket(&ja);
    crust_endpoint *ep = crust_endpoint_new(fd, NULL);
    CHECK(ep != NULL);
    uint8_t lh[40] = {0xc0, 1, 2, 3};
    uint8_t unknown[60] = {0x40, 9, 9, 9, 9, 9, 9, 9, 9, 1};
    sendto(junk, unknown, sizeof unknown, 0, (struct sockaddr *)&ea_addr, sizeof ea_addr);
    sendto(junk, lh, sizeof lh, 0, (struct sockaddr *)&ea_addr, sizeof ea_addr);
    usleep(20000);
    crust_endpoint_drive(ep, now_us());
    uint8_t buf[2048];
    struct sockaddr_storage from;
    socklen_t fl;
    CHECK(crust_endpoint_next_unrouted(ep, buf, sizeof buf, &from, &fl) == sizeof lh);
    CHECK(crust_endpoint_next_unrouted(ep, buf, sizeof buf, &from, &fl) == 0);
    crust_endpoint_stats st;
    crust_endpoint_get_stats(ep, &st);
    CHECK(st.rx_datagrams == 2 && st.unrouted == 1 && st.rx_dropped_unknown_cid == 1);
    crust_endpoint_free(ep);

    /* With a long-header prefix, only long headers carrying it go up. */
    crust_endpoint_config cfg;
    crust_endpoint_config_default(&cfg);
    CHECK(cfg.route_unknown_cids == 0 && cfg.lh_prefix_len == 0);
    cfg.lh_prefix_len = 9;
    CHECK(crust_endpoint_new(fd, &cfg) == NULL);
    cfg.route_unknown_cids = 2;
    cfg.lh_prefix_len = 2;
    CHECK(crust_endpoint_new(fd, &cfg) == NULL);
    cfg.route_unknown_cids = 0;
    cfg.lh_prefix[0] = 1;
    cfg.lh_prefix[1] = 2;
    ep = crust_endpoint_new(fd, &cfg);
    CHECK(ep != NULL);
    uint8_t foreign[40] = {0xc0, 1, 3, 3};
    uint8_t cut[2] = {0xc0, 1};
    sendto(junk, foreign, sizeof foreign, 0, (struct sockaddr *)&ea_addr, sizeof ea_addr);
    sendto(junk, cut, sizeof cut, 0, (struct sockaddr *)&ea_addr, sizeof ea_addr);
    sendto(junk, lh, sizeof lh, 0, (struct sockaddr *)&ea_addr, sizeof ea_addr);
    usleep(20000);
    crust_endpoint_drive(ep, now_us());
    CHECK(crust_endpoint_next_unrouted(ep, buf, sizeof buf, &from, &fl) == sizeof lh);
    CHECK(crust_endpoint_next_unrouted(ep, buf, sizeof buf, &from, &fl) == 0);
    crust_endpoint_get_stats(ep, &st);
    CHECK(st.rx_datagrams == 3 && st.unrouted == 1 && st.rx_dropped_foreign == 2);
    crust_endpoint_free(ep);
    close(fd);
    close(junk);
}

/* route_stun: STUN messages (top bits 00, magic cookie, length matching the
 * header) go up; off by default, and other datagrams stay dropped in C. */
static void test_route_stun(void)
{
    struct sockaddr_in ea_addr, ja;
    int fd = udp_socket(&ea_addr), junk = udp_socket(&ja);
    /* A binding success header with 12 bytes of attributes. */
    uint8_t stun[32] = {0x01, 0x01, 0x00, 0x0c, 0x21, 0x12, 0xa4, 0x42};
    uint8_t no_cookie[32] = {0x01, 0x01, 0x00, 0x0c, 0x21, 0x12, 0xa4, 0x43};
    uint8_t bad_len[32] = {0x01, 0x01, 0x00, 0x10, 0x21, 0x12, 0xa4, 0x42};
    uint8_t buf[2048];
    struct sockaddr_storage from;
    socklen_t fl;
    crust_endpoint_stats st;
    crust_endpoint_config cfg;
    crust_endpoint_config_default(&cfg);
    CHECK(cfg.route_stun == 0);
    cfg.route_stun = 2;
    CHECK(crust_endpoint_new(fd, &cfg) == NULL);
    for (uint32_t route = 0; route <= 1; route++) {
        cfg.route_stun = route;
        crust_endpoint *ep = crust_endpoint_new(fd, &cfg);
        CHECK(ep != NULL);
        sendto(junk, no_cookie, sizeof no_cookie, 0, (struct sockaddr *)&ea_addr, sizeof ea_addr);
        sendto(junk, bad_len, sizeof bad_len, 0, (struct sockaddr *)&ea_addr, sizeof ea_addr);
        sendto(junk, stun, sizeof stun, 0, (struct sockaddr *)&ea_addr, sizeof ea_addr);
        usleep(20000);
        crust_endpoint_drive(ep, now_us());
        if (route) {
            CHECK(crust_endpoint_next_unrouted(ep, buf, sizeof buf, &from, &fl) == sizeof stun);
            CHECK(memcmp(buf, stun, sizeof stun) == 0);
        }
        CHECK(crust_endpoint_next_unrouted(ep, buf, sizeof buf, &from, &fl) == 0);
        crust_endpoint_get_stats(ep, &st);
        CHECK(st.rx_datagrams == 3 && st.unrouted == route);
        CHECK(st.rx_dropped_malformed == 3 - route);
        crust_endpoint_free(ep);
    }
    close(fd);
    close(junk);
}

/* ---- many connections, and a client that moves ------------------------------ */

#define NCONN 300

typedef struct many {
    crust_endpoint *ea, *eb;
    crust_conn *a[NCONN], *b[NCONN];
    int got_a[NCONN], got_b[NCONN];
    int n;
} many;

static int many_step(void *arg, uint64_t now)
{
    (void)now;
    many *m = arg;
    crust_endpoint *eps[2] = {m->ea, m->eb};
    for (int s = 0; s < 2; s++) {
        crust_conn *c;
        while ((c = crust_endpoint_next_ready(eps[s]))) {
            crust_event ev;
            while (crust_conn_poll_event(c, &ev)) {
                if (ev.type != CRUST_EV_MESSAGE)
                    continue;
                uint8_t buf[64];
                int64_t len = crust_conn_read_message(c, ev.prio, buf, sizeof buf);
                uint32_t i;
                memcpy(&i, buf, sizeof i);
                if (len == 4 && i < NCONN && (s ? m->b[i] : m->a[i]) == c) {
                    (s ? m->got_b : m->got_a)[i] = 1;
                    m->n++;
                }
            }
        }
    }
    return m->n == 2 * NCONN;
}

static void test_many(void)
{
    struct sockaddr_in aa, ba;
    int fa = udp_socket(&aa), fb = udp_socket(&ba);
    static many m;
    memset(&m, 0, sizeof m);
    m.ea = crust_endpoint_new(fa, NULL);
    m.eb = crust_endpoint_new(fb, NULL);
    uint64_t now = now_us();
    for (uint32_t i = 0; i < NCONN; i++) {
        m.a[i] = conn(7, 8, i);
        m.b[i] = conn(8, 7, i);
        CHECK(crust_endpoint_add(m.ea, m.a[i], (struct sockaddr *)&ba, sizeof ba) == CRUST_OK);
        CHECK(crust_endpoint_add(m.eb, m.b[i], (struct sockaddr *)&aa, sizeof aa) == CRUST_OK);
        CHECK(crust_conn_send(m.a[i], now, (uint8_t *)&i, 4, 0, NULL) == CRUST_OK);
        CHECK(crust_conn_send(m.b[i], now, (uint8_t *)&i, 4, 1, NULL) == CRUST_OK);
    }
    /* Remove and re-add some: the table and heap must stay consistent. */
    for (uint32_t i = 0; i < NCONN; i += 3) {
        CHECK(crust_endpoint_remove(m.ea, m.a[i]) == CRUST_OK);
        CHECK(crust_endpoint_add(m.ea, m.a[i], (struct sockaddr *)&ba, sizeof ba) == CRUST_OK);
    }
    crust_endpoint *eps[2] = {m.ea, m.eb};
    CHECK(run(eps, 2, many_step, &m, 20000000));
    CHECK(m.n == 2 * NCONN);

    /* The client moves to a new socket (a NAT rebinding, as seen from the
     * server): same connection, new source port. */
    struct sockaddr_in na;
    int fn = udp_socket(&na);
    crust_endpoint *en = crust_endpoint_new(fn, NULL), *ea_old = m.ea;
    CHECK(crust_endpoint_remove(m.ea, m.a[0]) == CRUST_OK);
    CHECK(crust_endpoint_add(en, m.a[0], (struct sockaddr *)&ba, sizeof ba) == CRUST_OK);
    uint32_t zero = 0;
    CHECK(crust_conn_send(m.a[0], now_us(), (uint8_t *)&zero, 4, 0, NULL) == CRUST_OK);
    m.n--;
    m.ea = en;
    eps[0] = en;
    CHECK(run(eps, 2, many_step, &m, 10000000));
    crust_conn *pc = NULL;
    struct sockaddr_storage to;
    socklen_t tl = 0;
    CHECK(crust_endpoint_next_path_change(m.eb, &pc, &to, &tl) == 1);
    CHECK(pc == m.b[0]);
    CHECK(tl == sizeof na && ((struct sockaddr_in *)&to)->sin_port == na.sin_port);
    CHECK(crust_endpoint_next_path_change(m.eb, &pc, &to, &tl) == 0);
    CHECK(crust_endpoint_peer(m.eb, m.b[0], &to, &tl) == CRUST_OK &&
          ((struct sockaddr_in *)&to)->sin_port == na.sin_port);

    crust_endpoint_free(en);
    crust_endpoint_free(eps[1]);
    /* The endpoint in which a[1..] still sit is freed after them: it never
     * touches its connections when freed. */
    for (int i = 0; i < NCONN; i++) {
        crust_conn_free(m.a[i]);
        crust_conn_free(m.b[i]);
    }
    crust_endpoint_free(ea_old);
    close(fa);
    close(fb);
    close(fn);
}

static void test_bad_arguments(void)
{
    crust_endpoint_config cfg;
    crust_endpoint_config_default(&cfg);
    int blocking = socket(AF_INET, SOCK_DGRAM, 0);
    CHECK(crust_endpoint_new(blocking, &cfg) == NULL && errno == EINVAL);
    int stream = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    CHECK(crust_endpoint_new(stream, &cfg) == NULL && errno == EINVAL);
    CHECK(crust_endpoint_new(-1, &cfg) == NULL);
    int fd = socket(AF_INET6, SOCK_DGRAM | SOCK_NONBLOCK, 0);
    cfg.batch = 0;
    CHECK(crust_endpoint_new(fd, &cfg) == NULL);
    crust_endpoint_config_default(&cfg);
    cfg.close_fd = 1;
    crust_endpoint *ep = crust_endpoint_new(fd, &cfg);
    CHECK(ep != NULL);
    crust_conn *c = conn(1, 2, 0);
    struct sockaddr_in6 short_addr = {.sin6_family = AF_INET6};
    CHECK(crust_endpoint_add(ep, c, (struct sockaddr *)&short_addr, 8) == CRUST_EINVAL);
    CHECK(crust_endpoint_add(ep, NULL, (struct sockaddr *)&short_addr, sizeof short_addr) ==
          CRUST_EINVAL);
    CHECK(crust_endpoint_touch(ep, c) == CRUST_EINVAL);
    CHECK(crust_endpoint_next_ready(ep) == NULL);
    crust_endpoint_free(ep); /* closes fd */
    CHECK(close(fd) != 0 && errno == EBADF);
    crust_conn_free(c);
    close(blocking);
    close(stream);
}

int main(void)
{
    test_bad_arguments();
    test_bulk(1, 1, 0);
    test_bulk(0, 0, 0);
    test_bulk(1, 0, 0);
    test_bulk(1, 1, 1);
    test_unrouted();
    test_unknown_cids_dropped();
    test_route_stun();
    test_many();
    return check_summary();
}
