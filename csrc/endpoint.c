/*
 * endpoint.c - one UDP socket, many connections; see crust_endpoint.h.
 *
 * Per connection the endpoint keeps an ep_conn: its peer address, its place
 * in the timer heap and two intrusive list links (touched, ready). Tables:
 *
 *   by_cid   open addressing, linear probing, keyed by the local connection
 *            id: one probe sequence per received datagram, never an
 *            allocation (it grows in crust_endpoint_add only)
 *   heap     4-ary min-heap of connection deadlines (keys inline)
 *   touched  connections that got input (datagram, timer, the caller) and
 *            must be polled for datagrams, re-timed and checked for events
 *   ready    connections with events, for the caller
 *
 * The endpoint reads a few engine fields (the local id, the largest packet
 * number received) through conn.h: it is part of the core, not a client of
 * crust.h.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "conn.h"
#include "crust_endpoint.h"
#include "udp_batch.h"

/* crust.h's wire format: byte 0 bit 0x80 marks a long (handshake) header. */
#define LONG_HEADER 0x80
#define NO_HEAP UINT32_MAX

typedef struct ep_conn ep_conn;
typedef struct ep_link {
    ep_conn *prev, *next;
} ep_link;
typedef struct ep_list {
    ep_conn *head, *tail;
} ep_list;
typedef struct heap_slot {
    uint64_t at;                 /* the connection's next deadline */
    ep_conn *e;
} heap_slot;

struct ep_conn {
    crust_conn *c;
    uint64_t cid;                /* local connection id: the table key */
    struct sockaddr_storage peer;
    socklen_t peerlen;
    uint32_t heap_idx;           /* its slot in the timer heap, or NO_HEAP */
    uint8_t touched, ready;
    /* Reasons to list it as ready besides events: it finished closing (listed
     * once, so the caller can free it without scanning), or it refused a
     * datagram since it was last listed (the caller counts those against
     * the peer without reading every connection's counters). */
    uint8_t closed_listed, refused;
    /* The peer moved to an address that has not answered our path
     * challenge yet: until it does, what we send there is limited to 3x
     * what came from there (RFC 9000 8.1), so a peer (or anyone rewriting
     * one of its packets) cannot aim our traffic at a third party. */
    uint8_t unvalidated;
    uint32_t av_rx, av_tx;
    ep_link touch_link, ready_link;
};

typedef struct path_change {
    crust_conn *c;
    socklen_t addrlen;
    struct sockaddr_storage addr;
} path_change;

/* A source of datagrams that failed: junk, or packets with a live
 * connection id from an address other than the peer's. */
typedef struct junk_source {
    struct sockaddr_storage addr;
    socklen_t addrlen;
    uint64_t count;
} junk_source;
/* Distinct sources kept between drains (the caller drains after every
 * drive): more in one drive are counted in junk_sources_full only. */
#define JUNK_SOURCES 64

/* A datagram for a connection id not (yet) here: see hold_cap. */
typedef struct held {
    uint64_t cid, at;
    uint32_t len;
    socklen_t addrlen;
    struct sockaddr_storage addr;
} held;

typedef struct unrouted {
    uint32_t len;
    socklen_t addrlen;
    struct sockaddr_storage addr;
} unrouted;

struct crust_endpoint {
    crust_endpoint_config cfg;
    crust_udp udp;
    crust_endpoint_stats st;

    ep_conn **table;
    uint32_t table_cap, nconns;
    uint64_t seed;
    ep_conn *last;               /* last lookup hit: bulk traffic repeats it */

    heap_slot *heap;
    uint32_t heap_n, heap_cap;

    ep_list touched, ready;

    path_change *pc;
    uint32_t pc_head, pc_n;

    unrouted *ur;
    uint8_t *ur_data;            /* unrouted_cap slots of unrouted_max_len */
    uint32_t ur_head, ur_n;

    junk_source junk[JUNK_SOURCES];
    uint32_t junk_n;
    held *hd;
    uint8_t *hd_data;            /* hold_cap slots of CRUST_MAX_PACKET */
    uint32_t hd_n;               /* held datagrams: hd[0..hd_n), oldest first */
    uint8_t hd_added;            /* a connection was added since the last look */
    uint64_t last_handshake;     /* when a long-header datagram was queued */
};

void crust_endpoint_config_default(crust_endpoint_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->batch = 32;
    cfg->rx_budget = 1024;
    cfg->gso = 1;
    cfg->gro = 1;
    cfg->unrouted_cap = 256;
    cfg->unrouted_max_len = CRUST_MAX_PACKET;
    cfg->path_change_cap = 256;
    cfg->close_fd = 0;
    cfg->route_unknown_cids = 0;
    cfg->route_stun = 0;
    cfg->hold_cap = 32;
    cfg->hold_us = 100000;
}

static int config_ok(const crust_endpoint_config *cfg)
{
    return cfg->batch >= 1 && cfg->batch <= UDP_BATCH_MAX && cfg->rx_budget >= 1 &&
           cfg->gso <= 1 && cfg->gro <= 1 && cfg->unrouted_cap >= 1 &&
           cfg->unrouted_cap <= 65536 && cfg->unrouted_max_len >= 1 &&
           cfg->unrouted_max_len <= 65535 && cfg->path_change_cap >= 1 &&
           cfg->path_change_cap <= 65536 && cfg->close_fd <= 1 &&
           cfg->route_unknown_cids <= 1 && cfg->route_stun <= 1 && cfg->hold_cap <= 1024 &&
           cfg->lh_prefix_len <= sizeof cfg->lh_prefix;
}

/* ---- addresses ---------------------------------------------------------------- */

/* Copy a sockaddr_in/_in6 into storage; returns its length, 0 if bad. */
static socklen_t addr_copy(struct sockaddr_storage *dst, const struct sockaddr *src,
                           socklen_t len)
{
    if (!src)
        return 0;
    socklen_t want;
    if (src->sa_family == AF_INET && len >= sizeof(struct sockaddr_in))
        want = sizeof(struct sockaddr_in);
    else if (src->sa_family == AF_INET6 && len >= sizeof(struct sockaddr_in6))
        want = sizeof(struct sockaddr_in6);
    else
        return 0;
    /* Zeroed first so the padding compares equal in GSO run grouping. */
    memset(dst, 0, sizeof *dst);
    memcpy(dst, src, want);
    return want;
}

/* Same transport address? (IPv6 flow labels are not part of it.) */
static int addr_same(const struct sockaddr_storage *a, const struct sockaddr *b, socklen_t blen)
{
    if (a->ss_family != b->sa_family)
        return 0;
    if (b->sa_family == AF_INET && blen >= sizeof(struct sockaddr_in)) {
        const struct sockaddr_in *x = (const struct sockaddr_in *)a;
        const struct sockaddr_in *y = (const struct sockaddr_in *)b;
        return x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
    }
    if (b->sa_family == AF_INET6 && blen >= sizeof(struct sockaddr_in6)) {
        const struct sockaddr_in6 *x = (const struct sockaddr_in6 *)a;
        const struct sockaddr_in6 *y = (const struct sockaddr_in6 *)b;
        return x->sin6_port == y->sin6_port && x->sin6_scope_id == y->sin6_scope_id &&
               memcmp(&x->sin6_addr, &y->sin6_addr, sizeof x->sin6_addr) == 0;
    }
    return 0;
}

/* ---- the connection table ----------------------------------------------------- */

static uint64_t cid_key(const uint8_t cid[CRUST_CID_LEN])
{
    uint64_t k;
    memcpy(&k, cid, sizeof k);
    return k;
}

/* Keyed mix (splitmix64's finaliser): ids an attacker makes up should not
 * all land in one probe run of ours. */
static uint32_t home_slot(const crust_endpoint *ep, uint64_t k)
{
    uint64_t h = k ^ ep->seed;
    h = (h ^ (h >> 30)) * 0xbf58476d1ce4e5b9ull;
    h = (h ^ (h >> 27)) * 0x94d049bb133111ebull;
    h ^= h >> 31;
    return (uint32_t)h & (ep->table_cap - 1);
}

static ep_conn *lookup(crust_endpoint *ep, uint64_t k)
{
    if (ep->last && ep->last->cid == k)
        return ep->last;
    uint32_t mask = ep->table_cap - 1;
    for (uint32_t i = home_slot(ep, k);; i = (i + 1) & mask) {
        ep_conn *e = ep->table[i];
        if (!e)
            return NULL;
        if (e->cid == k)
            return ep->last = e;
    }
}

static void table_put(crust_endpoint *ep, ep_conn *e)
{
    uint32_t mask = ep->table_cap - 1;
    uint32_t i = home_slot(ep, e->cid);
    while (ep->table[i])
        i = (i + 1) & mask;
    ep->table[i] = e;
}

static int table_grow(crust_endpoint *ep)
{
    uint32_t old_cap = ep->table_cap;
    ep_conn **old = ep->table;
    ep_conn **t = calloc((size_t)old_cap * 2, sizeof *t);
    if (!t)
        return CRUST_ENOMEM;
    ep->table = t;
    ep->table_cap = old_cap * 2;
    for (uint32_t i = 0; i < old_cap; i++)
        if (old[i])
            table_put(ep, old[i]);
    free(old);
    return CRUST_OK;
}

/* Linear-probing delete by backward shift: no tombstones, so lookups of
 * unknown ids (junk) stay short however many connections came and went. */
static void table_del(crust_endpoint *ep, ep_conn *e)
{
    uint32_t mask = ep->table_cap - 1;
    uint32_t i = home_slot(ep, e->cid);
    while (ep->table[i] != e)
        i = (i + 1) & mask;
    ep->table[i] = NULL;
    for (uint32_t j = (i + 1) & mask; ep->table[j]; j = (j + 1) & mask) {
        uint32_t h = home_slot(ep, ep->table[j]->cid);
        /* Entry j may fill the hole at i unless its home lies in (i, j]. */
        int stays = i <= j ? (h > i && h <= j) : (h > i || h <= j);
        if (!stays) {
            ep->table[i] = ep->table[j];
            ep->table[j] = NULL;
            i = j;
        }
    }
    if (ep->last == e)
        ep->last = NULL;
}

static ep_conn *find(const crust_endpoint *ep, const crust_conn *c)
{
    if (!c)
        return NULL;
    uint64_t k = cid_key(c->local_cid);
    uint32_t mask = ep->table_cap - 1;
    for (uint32_t i = home_slot(ep, k);; i = (i + 1) & mask) {
        ep_conn *e = ep->table[i];
        if (!e)
            return NULL;
        if (e->c == c)
            return e;
    }
}

/* ---- intrusive lists ------------------------------------------------------------ */

#define LINK(e, off) ((ep_link *)((char *)(e) + (off)))
#define TOUCH offsetof(ep_conn, touch_link)
#define READY offsetof(ep_conn, ready_link)

static void list_push(ep_list *l, ep_conn *e, size_t off)
{
    LINK(e, off)->prev = l->tail;
    LINK(e, off)->next = NULL;
    if (l->tail)
        LINK(l->tail, off)->next = e;
    else
        l->head = e;
    l->tail = e;
}

static void list_unlink(ep_list *l, ep_conn *e, size_t off)
{
    ep_link *k = LINK(e, off);
    if (k->prev)
        LINK(k->prev, off)->next = k->next;
    else
        l->head = k->next;
    if (k->next)
        LINK(k->next, off)->prev = k->prev;
    else
        l->tail = k->prev;
    k->prev = k->next = NULL;
}

static void touch(crust_endpoint *ep, ep_conn *e)
{
    if (!e->touched) {
        e->touched = 1;
        list_push(&ep->touched, e, TOUCH);
    }
}

/* ---- timers: a 4-ary min-heap of deadlines ----------------------------------- */

/* Each slot holds its key, so sifting compares within the heap array (the
 * four children of a slot share a cache line or two) and touches a
 * connection only to record where it moved. With 100,000 idle connections
 * every keepalive moves one deadline: a binary heap of pointers missed the
 * cache twice per level, 17 levels deep (issue 22). */
#define HEAP_ARITY 4

static void heap_place(crust_endpoint *ep, uint32_t i, heap_slot s)
{
    ep->heap[i] = s;
    s.e->heap_idx = i;
}

static void sift_up(crust_endpoint *ep, uint32_t i)
{
    heap_slot s = ep->heap[i];
    while (i > 0) {
        uint32_t p = (i - 1) / HEAP_ARITY;
        if (ep->heap[p].at <= s.at)
            break;
        heap_place(ep, i, ep->heap[p]);
        i = p;
    }
    heap_place(ep, i, s);
}

static void sift_down(crust_endpoint *ep, uint32_t i)
{
    heap_slot s = ep->heap[i];
    for (;;) {
        uint32_t first = HEAP_ARITY * i + 1, m = i;
        uint64_t best = s.at;
        uint32_t last = first + HEAP_ARITY < ep->heap_n ? first + HEAP_ARITY : ep->heap_n;
        for (uint32_t k = first; k < last; k++)
            if (ep->heap[k].at < best) {
                m = k;
                best = ep->heap[k].at;
            }
        if (m == i)
            break;
        heap_place(ep, i, ep->heap[m]);
        i = m;
    }
    heap_place(ep, i, s);
}

static void heap_remove(crust_endpoint *ep, ep_conn *e)
{
    uint32_t i = e->heap_idx;
    if (i == NO_HEAP)
        return;
    e->heap_idx = NO_HEAP;
    heap_slot last = ep->heap[--ep->heap_n];
    if (i == ep->heap_n)
        return;
    heap_place(ep, i, last);
    sift_down(ep, i);
    sift_up(ep, last.e->heap_idx);
}

static void timer_set(crust_endpoint *ep, ep_conn *e, uint64_t deadline)
{
    if (deadline == UINT64_MAX) {
        heap_remove(ep, e);
        return;
    }
    if (e->heap_idx == NO_HEAP) {
        /* Room was reserved by crust_endpoint_add: no allocation here. */
        heap_place(ep, ep->heap_n++, (heap_slot){deadline, e});
        sift_up(ep, e->heap_idx);
    } else if (deadline != ep->heap[e->heap_idx].at) {
        heap_slot *s = &ep->heap[e->heap_idx];
        int earlier = deadline < s->at;
        s->at = deadline;
        if (earlier)
            sift_up(ep, e->heap_idx);
        else
            sift_down(ep, e->heap_idx);
    }
}

static uint64_t next_deadline(const crust_endpoint *ep)
{
    return ep->heap_n ? ep->heap[0].at : UINT64_MAX;
}

/* ---- life cycle ------------------------------------------------------------------ */

crust_endpoint *crust_endpoint_new(int fd, const crust_endpoint_config *cfg)
{
    crust_endpoint_config def;
    if (!cfg) {
        crust_endpoint_config_default(&def);
        cfg = &def;
    }
    int type = 0, domain = 0;
    socklen_t tl = sizeof type, dl = sizeof domain;
    int flags = fd >= 0 ? fcntl(fd, F_GETFL) : -1;
    if (!config_ok(cfg) || flags < 0 || !(flags & O_NONBLOCK) ||
        getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tl) != 0 || type != SOCK_DGRAM ||
        getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &dl) != 0 ||
        (domain != AF_INET && domain != AF_INET6)) {
        errno = EINVAL;
        return NULL;
    }
    crust_endpoint *ep = calloc(1, sizeof *ep);
    if (!ep) {
        errno = ENOMEM;
        return NULL;
    }
    ep->cfg = *cfg;
    ep->table_cap = 16;
    ep->heap_cap = 16;
    ep->table = calloc(ep->table_cap, sizeof *ep->table);
    ep->heap = calloc(ep->heap_cap, sizeof *ep->heap);
    ep->pc = calloc(cfg->path_change_cap, sizeof *ep->pc);
    ep->ur = calloc(cfg->unrouted_cap, sizeof *ep->ur);
    ep->ur_data = malloc((size_t)cfg->unrouted_cap * cfg->unrouted_max_len);
    /* One slot at least, so a zero hold_cap needs no special case. */
    uint32_t hold_slots = cfg->hold_cap ? cfg->hold_cap : 1;
    ep->hd = calloc(hold_slots, sizeof *ep->hd);
    ep->hd_data = malloc((size_t)hold_slots * CRUST_MAX_PACKET);
    int udp_failed = udp_init(&ep->udp, fd, cfg->batch, (int)cfg->gso, (int)cfg->gro) != 0;
    if (udp_failed || !ep->table || !ep->heap || !ep->pc || !ep->ur || !ep->ur_data || !ep->hd ||
        !ep->hd_data) {
        if (!udp_failed)
            udp_free(&ep->udp);
        free(ep->table);
        free(ep->heap);
        free(ep->pc);
        free(ep->ur);
        free(ep->ur_data);
        free(ep->hd);
        free(ep->hd_data);
        free(ep);
        errno = ENOMEM;
        return NULL;
    }
    /* Not a secret, only unknown to whoever sends junk at us. */
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ep->seed = (uint64_t)ts.tv_nsec * 0x9e3779b97f4a7c15ull ^ (uint64_t)(uintptr_t)ep ^
               ((uint64_t)ts.tv_sec << 32);
    return ep;
}

void crust_endpoint_free(crust_endpoint *ep)
{
    if (!ep)
        return;
    for (uint32_t i = 0; i < ep->table_cap; i++)
        free(ep->table[i]);
    if (ep->cfg.close_fd && ep->udp.fd >= 0)
        close(ep->udp.fd);
    udp_free(&ep->udp);
    free(ep->table);
    free(ep->heap);
    free(ep->pc);
    free(ep->ur);
    free(ep->ur_data);
    free(ep->hd);
    free(ep->hd_data);
    free(ep);
}

int crust_endpoint_fd(const crust_endpoint *ep) { return ep->udp.fd; }
int crust_endpoint_gso_enabled(const crust_endpoint *ep) { return ep->udp.gso; }
int crust_endpoint_gro_enabled(const crust_endpoint *ep) { return ep->udp.gro; }

int crust_endpoint_add(crust_endpoint *ep, crust_conn *c, const struct sockaddr *peer,
                       socklen_t peerlen)
{
    if (!c)
        return CRUST_EINVAL;
    ep_conn *e = calloc(1, sizeof *e);
    if (!e)
        return CRUST_ENOMEM;
    e->peerlen = addr_copy(&e->peer, peer, peerlen);
    e->c = c;
    e->cid = cid_key(c->local_cid);
    e->heap_idx = NO_HEAP;
    if (!e->peerlen || find(ep, c) || lookup(ep, e->cid)) {
        free(e);
        return CRUST_EINVAL;
    }
    /* Grow both tables now so drive never allocates: the table stays at
     * most half full, the heap can hold every connection. */
    if ((ep->nconns + 1) * 2 > ep->table_cap && table_grow(ep) != CRUST_OK) {
        free(e);
        return CRUST_ENOMEM;
    }
    if (ep->nconns + 1 > ep->heap_cap) {
        heap_slot *h = realloc(ep->heap, (size_t)ep->heap_cap * 2 * sizeof *h);
        if (!h) {
            free(e);
            return CRUST_ENOMEM;
        }
        ep->heap = h;
        ep->heap_cap *= 2;
    }
    table_put(ep, e);
    ep->nconns++;
    ep->hd_added = 1;
    /* The next drive or flush polls it: it may have data queued already. */
    touch(ep, e);
    return CRUST_OK;
}

int crust_endpoint_remove(crust_endpoint *ep, crust_conn *c)
{
    ep_conn *e = find(ep, c);
    if (!e)
        return CRUST_EINVAL;
    table_del(ep, e);
    heap_remove(ep, e);
    if (e->touched)
        list_unlink(&ep->touched, e, TOUCH);
    if (e->ready)
        list_unlink(&ep->ready, e, READY);
    /* Drop its queued path changes, keeping the others in order. */
    uint32_t cap = ep->cfg.path_change_cap, kept = 0;
    for (uint32_t i = 0; i < ep->pc_n; i++) {
        path_change *p = &ep->pc[(ep->pc_head + i) % cap];
        if (p->c != c)
            ep->pc[(ep->pc_head + kept++) % cap] = *p;
    }
    ep->pc_n = kept;
    ep->nconns--;
    free(e);
    return CRUST_OK;
}

int crust_endpoint_peer(const crust_endpoint *ep, const crust_conn *c,
                        struct sockaddr_storage *addr, socklen_t *addrlen)
{
    ep_conn *e = find(ep, c);
    if (!e || !addr || !addrlen)
        return CRUST_EINVAL;
    *addr = e->peer;
    *addrlen = e->peerlen;
    return CRUST_OK;
}

int crust_endpoint_touch(crust_endpoint *ep, crust_conn *c)
{
    ep_conn *e = find(ep, c);
    if (!e)
        return CRUST_EINVAL;
    touch(ep, e);
    return CRUST_OK;
}

/* ---- receiving ------------------------------------------------------------------- */

static void unrouted_push(crust_endpoint *ep, const uint8_t *d, size_t len,
                          const struct sockaddr *from, socklen_t fromlen)
{
    if (len > ep->cfg.unrouted_max_len) {
        ep->st.rx_dropped_unrouted_long++;
        return;
    }
    if (ep->ur_n == ep->cfg.unrouted_cap) {
        ep->st.rx_dropped_unrouted_full++;
        return;
    }
    uint32_t i = (ep->ur_head + ep->ur_n) % ep->cfg.unrouted_cap;
    unrouted *u = &ep->ur[i];
    u->addrlen = addr_copy(&u->addr, from, fromlen);
    u->len = (uint32_t)len;
    memcpy(ep->ur_data + (size_t)i * ep->cfg.unrouted_max_len, d, len);
    ep->ur_n++;
    ep->st.unrouted++;
}

static uint32_t add_sat32(uint32_t a, size_t b)
{
    return b >= UINT32_MAX - a ? UINT32_MAX : a + (uint32_t)b;
}

static void path_changed(crust_endpoint *ep, ep_conn *e, const struct sockaddr *from,
                         socklen_t fromlen, size_t dlen, uint64_t now)
{
    socklen_t len = addr_copy(&e->peer, from, fromlen);
    if (!len)
        return;
    e->peerlen = len;
    ep->st.path_changes++;
    e->unvalidated = 1;
    e->av_rx = add_sat32(0, dlen);
    e->av_tx = 0;
    /* Until the peer answers the challenge from there, the new address is
     * only as good as one packet; the answer is CRUST_EV_PATH_VALIDATED. */
    crust_conn_path_changed(e->c, now);
    if (ep->pc_n == ep->cfg.path_change_cap) {
        ep->st.path_changes_dropped++;
        return;
    }
    path_change *p = &ep->pc[(ep->pc_head + ep->pc_n++) % ep->cfg.path_change_cap];
    p->c = e->c;
    p->addr = e->peer;
    p->addrlen = len;
}

/* RFC 8489 section 5: the first two bits are 0 and bytes 4..7 hold the magic
 * cookie; a whole STUN message is a 20-byte header plus 4-byte aligned
 * attributes whose length the header gives. */
static int is_stun(const uint8_t *d, size_t len)
{
    if (len < 20 || (d[0] & 0xC0) || len != 20 + (((size_t)d[2] << 8) | d[3]))
        return 0;
    return d[4] == 0x21 && d[5] == 0x12 && d[6] == 0xA4 && d[7] == 0x42;
}

/* Count a failed datagram against its source (not against any peer). */
static void note_junk(crust_endpoint *ep, const struct sockaddr *from, socklen_t fromlen)
{
    for (uint32_t i = 0; i < ep->junk_n; i++)
        if (addr_same(&ep->junk[i].addr, from, fromlen)) {
            ep->junk[i].count++;
            return;
        }
    if (ep->junk_n == JUNK_SOURCES) {
        ep->st.junk_sources_full++;
        return;
    }
    junk_source *j = &ep->junk[ep->junk_n];
    j->addrlen = addr_copy(&j->addr, from, fromlen);
    if (j->addrlen) {
        j->count = 1;
        ep->junk_n++;
    }
}

/* Keep a datagram whose connection may be added in a moment (hold_cap);
 * 0 when it is not kept. */
static int hold(crust_endpoint *ep, uint64_t cid, const uint8_t *d, size_t len,
                const struct sockaddr *from, socklen_t fromlen, uint64_t now)
{
    if (ep->hd_n >= ep->cfg.hold_cap || len > CRUST_MAX_PACKET || !ep->last_handshake ||
        now - ep->last_handshake > ep->cfg.hold_us)
        return 0;
    held *h = &ep->hd[ep->hd_n];
    h->addrlen = addr_copy(&h->addr, from, fromlen);
    if (!h->addrlen)
        return 0;
    h->cid = cid;
    h->at = now;
    h->len = (uint32_t)len;
    memcpy(ep->hd_data + (size_t)ep->hd_n * CRUST_MAX_PACKET, d, len);
    ep->hd_n++;
    ep->st.rx_held++;
    return 1;
}

static void deliver(crust_endpoint *ep, ep_conn *e, const uint8_t *d, size_t len,
                    const struct sockaddr *from, socklen_t fromlen, uint64_t now)
{
    crust_conn *c = e->c;
    uint64_t largest = c->rx_largest_plus1;
    /* A packet's failure counts against the peer only if it came from the
     * peer's address: anyone who saw the connection id can send from
     * elsewhere (issue 15, "no framing"). */
    int offpath = !addr_same(&e->peer, from, fromlen);
    c->rx_offpath = (uint8_t)offpath;
    uint64_t rx_data = c->rx_data;
    int rc = crust_conn_recv(c, now, d, len);
    c->rx_offpath = 0;
    if (c->rx_data != rx_data)
        ep->st.activity++;
    if (rc != CRUST_OK) {
        ep->st.rx_dropped_conn++;
        if (!offpath)
            e->refused = 1; /* the transport reports it against the peer */
        else if (rc == CRUST_EDECRYPT || rc == CRUST_EMALFORMED) {
            ep->st.rx_dropped_offpath++;
            note_junk(ep, from, fromlen);
        }
    }
    /* Follow a new address only for an authenticated packet newer than all
     * before it (RFC 9000 9.3): a reordered or replayed one from the old
     * address must not switch back. */
    else if (offpath && c->rx_largest_plus1 > largest)
        path_changed(ep, e, from, fromlen, len, now);
    else if (e->unvalidated && !offpath) {
        e->av_rx = add_sat32(e->av_rx, len);
        if (!c->path_challenge_seq) /* answered: CRUST_EV_PATH_VALIDATED */
            e->unvalidated = 0;
    }
    touch(ep, e);
}

/* Deliver the held datagrams whose connection exists now, in the order they
 * came, and drop those held too long. Runs before a drive reads, so they
 * reach their connection before anything newer. */
static void release_held(crust_endpoint *ep, uint64_t now)
{
    if (!ep->hd_n || (!ep->hd_added && now - ep->hd[0].at <= ep->cfg.hold_us))
        return;
    ep->hd_added = 0;
    uint32_t kept = 0;
    for (uint32_t i = 0; i < ep->hd_n; i++) {
        held *h = &ep->hd[i];
        uint8_t *d = ep->hd_data + (size_t)i * CRUST_MAX_PACKET;
        ep_conn *e = lookup(ep, h->cid);
        if (e) {
            ep->st.rx_held_delivered++;
            deliver(ep, e, d, h->len, (const struct sockaddr *)&h->addr, h->addrlen, now);
        } else if (now - h->at > ep->cfg.hold_us) {
            ep->st.rx_held_expired++;
        } else {
            if (kept != i) {
                ep->hd[kept] = *h;
                memcpy(ep->hd_data + (size_t)kept * CRUST_MAX_PACKET, d, h->len);
            }
            kept++;
        }
    }
    ep->hd_n = kept;
}

static void dispatch(crust_endpoint *ep, const uint8_t *d, size_t len,
                     const struct sockaddr *from, socklen_t fromlen, uint64_t now)
{
    ep->st.rx_datagrams++;
    ep->st.rx_bytes += len;
    uint8_t cid[CRUST_CID_LEN];
    if (crust_packet_cid(d, len, cid) == CRUST_OK) {
        uint64_t k = cid_key(cid);
        ep_conn *e = lookup(ep, k);
        if (e) {
            deliver(ep, e, d, len, from, fromlen, now);
            return;
        }
        if (!ep->cfg.route_unknown_cids) {
            /* Junk, a packet of a connection already gone, or one whose
             * handshake completes in this batch: never a handshake, so
             * nobody above could use it; only the last kind is kept. */
            if (!hold(ep, k, d, len, from, fromlen, now)) {
                ep->st.rx_dropped_unknown_cid++;
                note_junk(ep, from, fromlen);
            }
            return;
        }
    } else if (len == 0 || !(d[0] & LONG_HEADER)) {
        if (ep->cfg.route_stun && is_stun(d, len))
            unrouted_push(ep, d, len, from, fromlen);
        else {
            ep->st.rx_dropped_malformed++;
            note_junk(ep, from, fromlen);
        }
        return;
    } else if (ep->cfg.lh_prefix_len &&
               (len <= ep->cfg.lh_prefix_len ||
                memcmp(d + 1, ep->cfg.lh_prefix, ep->cfg.lh_prefix_len) != 0)) {
        ep->st.rx_dropped_foreign++;
        return;
    } else {
        ep->last_handshake = now ? now : 1;
    }
    unrouted_push(ep, d, len, from, fromlen);
}

/* Feed one recvmmsg buffer, cutting GRO-coalesced ones. Returns the number
 * of datagrams in it. */
static uint32_t feed(crust_endpoint *ep, const udp_rx_msg *m, uint64_t now)
{
    if (m->truncated) {
        ep->st.rx_datagrams++;
        ep->st.rx_bytes += m->len;
        ep->st.rx_dropped_truncated++;
        return 1;
    }
    if (m->len == 0) {
        dispatch(ep, m->data, 0, m->addr, m->addrlen, now);
        return 1;
    }
    uint32_t n = 0;
    for (size_t off = 0; off < m->len; off += m->seg, n++) {
        size_t left = m->len - off;
        dispatch(ep, m->data + off, left < m->seg ? left : m->seg, m->addr, m->addrlen, now);
    }
    if (n > 1)
        ep->st.gro_segments += n;
    return n;
}

/* ICMP reports read per drive at most: the rest wait for the next one (the
 * fd stays readable: POLLERR). Each can cost a scan of the connections,
 * so a flood of forged reports is bounded per drive. */
#define ICMP_PER_DRIVE 64

/* Read the socket's error queue: a destination unreachable for the address
 * of connections' peers makes them probe. Unauthenticated (anyone can
 * forge ICMP), so it only ever makes a connection ask its peer whether it
 * is alive (crust_conn_path_unreachable); no other report does anything. */
static void read_errors(crust_endpoint *ep, uint64_t now)
{
    struct sockaddr_storage dst, last;
    socklen_t dstlen, lastlen = 0;
    int kind;
    for (unsigned n = 0; n < ICMP_PER_DRIVE && udp_recv_error(&ep->udp, &dst, &dstlen, &kind);
         n++) {
        ep->st.icmp_errors++;
        if (kind != UDP_ERR_UNREACHABLE || !dstlen) {
            ep->st.icmp_ignored++;
            continue;
        }
        /* Reports come in runs (one per datagram sent to a dead peer): the
         * same address again finds the same connections, already probing. */
        if (lastlen && addr_same(&last, (const struct sockaddr *)&dst, dstlen)) {
            ep->st.icmp_unreachable++;
            continue;
        }
        int matched = 0;
        for (uint32_t i = 0; i < ep->table_cap; i++) {
            ep_conn *e = ep->table[i];
            if (!e || !addr_same(&e->peer, (const struct sockaddr *)&dst, dstlen))
                continue;
            matched = 1;
            if (crust_conn_path_unreachable(e->c, now))
                touch(ep, e); /* the probe goes out in this drive */
        }
        if (matched) {
            ep->st.icmp_unreachable++;
            last = dst;
            lastlen = dstlen;
        } else {
            ep->st.icmp_ignored++;
        }
    }
}

static void run_timers(crust_endpoint *ep, uint64_t now)
{
    /* Each due connection leaves the heap and is touched; transmit() puts
     * it back with its new deadline. So a connection runs its timers once
     * per call even if its deadline stays in the past. */
    while (ep->heap_n && ep->heap[0].at <= now) {
        ep_conn *e = ep->heap[0].e;
        heap_remove(ep, e);
        crust_conn_handle_timeout(e->c, now);
        ep->st.timers++;
        touch(ep, e);
    }
}

/* ---- transmitting ------------------------------------------------------------ */

/* Smaller than any packet worth sending (header, one frame, tag). */
#define AV_MIN_PACKET 64
/* How often a connection held back by an unvalidated path looks again
 * when its own timers say "now" (they cannot be served until the path
 * answers or more arrives from it, which wakes it anyway). */
#define AV_RECHECK_US 50000

/* Move e's datagrams into the send queue. Returns PUMP_BLOCKED when the
 * socket is full (e may have more), PUMP_LIMITED when e's unvalidated path
 * allows no more now, PUMP_DONE when e has nothing more to send now. */
enum { PUMP_DONE, PUMP_BLOCKED, PUMP_LIMITED };
static int pump(crust_endpoint *ep, ep_conn *e, uint64_t now)
{
    crust_udp *u = &ep->udp;
    for (;;) {
        size_t cap = CRUST_MAX_PACKET;
        if (e->unvalidated) {
            uint64_t allow = 3 * (uint64_t)e->av_rx;
            if (allow < (uint64_t)e->av_tx + AV_MIN_PACKET) {
                ep->st.tx_limited_unvalidated++;
                return PUMP_LIMITED;
            }
            if (allow - e->av_tx < cap)
                cap = (size_t)(allow - e->av_tx);
        }
        uint8_t *p = udp_tx_buf(u, CRUST_MAX_PACKET);
        if (!p) {
            if (udp_tx_flush(u) == UDP_BLOCKED)
                return PUMP_BLOCKED;
            p = udp_tx_buf(u, CRUST_MAX_PACKET);
        }
        size_t n = crust_conn_poll_transmit(e->c, now, p, cap);
        if (!n)
            return PUMP_DONE;
        if (e->unvalidated)
            e->av_tx = add_sat32(e->av_tx, n);
        udp_tx_push(u, n, (const struct sockaddr *)&e->peer, e->peerlen);
    }
}

static void transmit(crust_endpoint *ep, uint64_t now)
{
    crust_udp *u = &ep->udp;
    int blocked = udp_tx_pending(u) && udp_tx_flush(u) == UDP_BLOCKED;
    ep_conn *e = ep->touched.head;
    while (e) {
        ep_conn *next = e->touch_link.next;
        int limited = 0;
        if (!blocked) {
            uint64_t tx_data = e->c->tx_data;
            int r = pump(ep, e, now);
            if (e->c->tx_data != tx_data)
                ep->st.activity++;
            blocked = r == PUMP_BLOCKED;
            limited = r == PUMP_LIMITED;
        }
        uint64_t t = crust_conn_next_timeout(e->c);
        if (limited && t < now + AV_RECHECK_US)
            t = now + AV_RECHECK_US;
        timer_set(ep, e, t);
        int closed = !e->closed_listed && crust_conn_is_closed(e->c);
        if (!e->ready && (crust_conn_has_event(e->c) || closed || e->refused)) {
            e->ready = 1;
            e->closed_listed |= (uint8_t)closed;
            list_push(&ep->ready, e, READY);
        }
        /* With the socket full, e stays touched: the flush after the fd
         * turns writable polls it again. */
        if (!blocked) {
            e->touched = 0;
            list_unlink(&ep->touched, e, TOUCH);
        }
        e = next;
    }
    if (!blocked && udp_tx_pending(u))
        udp_tx_flush(u);
}

uint64_t crust_endpoint_drive(crust_endpoint *ep, uint64_t now_us)
{
    ep->st.drives++;
    release_held(ep, now_us);
    uint32_t got = 0;
    for (;;) {
        int n = udp_recv_batch(&ep->udp);
        for (int i = 0; i < n; i++)
            got += feed(ep, &ep->udp.rx[i], now_us);
        /* Answer each batch before reading the next: ACKs leave early and
         * the sender's window keeps moving while we read. */
        run_timers(ep, now_us);
        transmit(ep, now_us);
        /* A short batch means the socket was empty. */
        if (n < (int)ep->udp.batch || got >= ep->cfg.rx_budget)
            break;
    }
    /* A drive that found nothing to read may have been woken by POLLERR
     * alone; otherwise the receive or a send said a report is queued. */
    if (ep->udp.err_pending || got == 0) {
        read_errors(ep, now_us);
        run_timers(ep, now_us);
        transmit(ep, now_us);
    }
    return next_deadline(ep);
}

uint64_t crust_endpoint_flush(crust_endpoint *ep, uint64_t now_us)
{
    release_held(ep, now_us);
    run_timers(ep, now_us);
    transmit(ep, now_us);
    return next_deadline(ep);
}

int crust_endpoint_want_write(const crust_endpoint *ep) { return udp_tx_pending(&ep->udp); }

int crust_endpoint_send_raw(crust_endpoint *ep, const uint8_t *buf, size_t len,
                            const struct sockaddr *addr, socklen_t addrlen)
{
    struct sockaddr_storage to;
    socklen_t tolen = addr_copy(&to, addr, addrlen);
    if (!buf || !len || !tolen)
        return CRUST_EINVAL;
    if (len > UDP_TX_MAX_DATAGRAM)
        return CRUST_EMSGSIZE;
    crust_udp *u = &ep->udp;
    uint8_t *p = udp_tx_buf(u, len);
    if (!p) {
        udp_tx_flush(u);
        if (!(p = udp_tx_buf(u, len)))
            return CRUST_EWOULDBLOCK;
    }
    memcpy(p, buf, len);
    udp_tx_push(u, len, (const struct sockaddr *)&to, tolen);
    /* Blocked is fine: it stays queued and want_write says so. */
    udp_tx_flush(u);
    return CRUST_OK;
}

/* ---- what a drive leaves for the caller ------------------------------------------ */

crust_conn *crust_endpoint_next_ready(crust_endpoint *ep)
{
    ep_conn *e = ep->ready.head;
    if (!e)
        return NULL;
    list_unlink(&ep->ready, e, READY);
    e->ready = 0;
    e->refused = 0;
    return e->c;
}

int crust_endpoint_next_path_change(crust_endpoint *ep, crust_conn **c,
                                    struct sockaddr_storage *addr, socklen_t *addrlen)
{
    if (!ep->pc_n)
        return 0;
    path_change *p = &ep->pc[ep->pc_head];
    if (c)
        *c = p->c;
    if (addr)
        *addr = p->addr;
    if (addrlen)
        *addrlen = p->addrlen;
    ep->pc_head = (ep->pc_head + 1) % ep->cfg.path_change_cap;
    ep->pc_n--;
    return 1;
}

int crust_endpoint_next_junk_source(crust_endpoint *ep, struct sockaddr_storage *addr,
                                    socklen_t *addrlen, uint64_t *count)
{
    if (!ep->junk_n)
        return 0;
    const junk_source *j = &ep->junk[--ep->junk_n];
    if (addr)
        *addr = j->addr;
    if (addrlen)
        *addrlen = j->addrlen;
    if (count)
        *count = j->count;
    return 1;
}

int64_t crust_endpoint_next_unrouted(crust_endpoint *ep, uint8_t *buf, size_t cap,
                                     struct sockaddr_storage *addr, socklen_t *addrlen)
{
    if (!ep->ur_n)
        return 0;
    unrouted *u = &ep->ur[ep->ur_head];
    if (!buf || cap < u->len)
        return CRUST_EINVAL;
    memcpy(buf, ep->ur_data + (size_t)ep->ur_head * ep->cfg.unrouted_max_len, u->len);
    if (addr)
        *addr = u->addr;
    if (addrlen)
        *addrlen = u->addrlen;
    ep->ur_head = (ep->ur_head + 1) % ep->cfg.unrouted_cap;
    ep->ur_n--;
    return (int64_t)u->len;
}

void crust_endpoint_counters(const crust_endpoint *ep, uint64_t *rx_datagrams,
                             uint64_t *activity)
{
    *rx_datagrams = ep->st.rx_datagrams;
    *activity = ep->st.activity;
}

void crust_endpoint_get_stats(const crust_endpoint *ep, crust_endpoint_stats *st)
{
    const udp_counters *k = &ep->udp.ct;
    *st = ep->st;
    st->tx_datagrams = k->tx_datagrams;
    st->tx_bytes = k->tx_bytes;
    st->rx_batches = k->rx_batches;
    st->tx_batches = k->tx_batches;
    st->gso_segments = k->gso_segments;
    st->tx_blocked = k->tx_blocked;
    st->gso_refused = k->gso_refused;
    st->rx_errors = k->rx_errors;
    st->tx_dropped = k->tx_dropped;
}
