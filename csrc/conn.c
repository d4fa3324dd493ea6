/*
 * conn.c - one connection end: the public API of crust.h, packet parsing
 * and packet building. Loss recovery lives in recovery.c, path MTU search
 * in pmtu.c, pacing in pacer.c, congestion control behind cc.h.
 *
 * Scheduling rule for a packet: ACK first (never paced, never limited by the
 * congestion window), then control frames, then stream data by strict
 * priority (0 first), retransmissions before new bytes within a priority.
 */
#include <stdlib.h>
#include <string.h>

#include "conn.h"
#include "frame.h"

#define FLAGS_FIXED 0x40
#define FLAGS_LONG 0x80
#define FLAGS_KEY_PHASE 0x04
#define CLOSE_REPLIES_MAX 8

const char *crust_strerror(int err)
{
    switch (err) {
    case CRUST_OK: return "ok";
    case CRUST_EINVAL: return "invalid argument";
    case CRUST_EWOULDBLOCK: return "send buffer full (would block)";
    case CRUST_EMSGSIZE: return "message larger than max_message_size";
    case CRUST_ECLOSED: return "connection is closing or closed";
    case CRUST_ENOMEM: return "out of memory or buffer cap reached";
    case CRUST_ENOKEY: return "no packet keys installed";
    case CRUST_EDECRYPT: return "packet failed authentication";
    case CRUST_EMALFORMED: return "malformed packet";
    case CRUST_EDUPLICATE: return "duplicate packet (replay)";
    case CRUST_ETOOOLD: return "packet number too old (replay window)";
    case CRUST_ENOTOURS: return "not a packet for this connection";
    case CRUST_EPROTO: return "protocol violation by peer";
    default: return "unknown error";
    }
}

/* ---- configuration ------------------------------------------------------ */

void crust_config_default(crust_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
#define DEFAULT(type, name, def, min, max, zero_ok) cfg->name = (type)(def);
    CRUST_CONFIG_FIELDS(DEFAULT)
#undef DEFAULT
}

/* A function, not an expression in the macro below: for min 0 or max
 * UINT64_MAX a comparison in the field's own type would always hold, and
 * say so (-Wtype-limits). */
static int in_range(uint64_t v, uint64_t min, uint64_t max, int zero_ok)
{
    return (zero_ok && v == 0) || (v >= min && v <= max);
}

int crust_config_validate(const crust_config *cfg, const char **field)
{
#define BAD(name)           \
    do {                    \
        if (field)          \
            *field = name;  \
        return CRUST_EINVAL; \
    } while (0)
    /* Each field alone, in struct order (crust_config_fields.h). */
#define CHECK_RANGE(type, name, def, min, max, zero_ok) \
    if (!in_range(cfg->name, (min), (max), (zero_ok)))  \
        BAD(#name);
    CRUST_CONFIG_FIELDS(CHECK_RANGE)
#undef CHECK_RANGE
    /* Then the rules between fields. Each priority's stream may hold one
     * partly received message; the window must fit one whole message per
     * priority, or the streams could fill it with halves and none ever
     * complete (a deadlock). */
    if (cfg->recv_window < CRUST_NUM_PRIO * (cfg->max_message_size + 8))
        BAD("recv_window");
    if (cfg->initial_mtu > cfg->max_mtu)
        BAD("initial_mtu");
    if (cfg->keepalive_us && cfg->idle_timeout_us && cfg->keepalive_us >= cfg->idle_timeout_us)
        BAD("keepalive_us");
    return CRUST_OK;
#undef BAD
}

/* The window a connection starts with is the least recv_window allows. */
_Static_assert(CRUST_INITIAL_MAX_DATA == 256u * 1024u,
               "recv_window's minimum in crust_config_fields.h is CRUST_INITIAL_MAX_DATA");

/* ---- what loss recovery reports (recovery.h) ------------------------------ */

static void cc_env_fill(const crust_conn *c, crust_cc_env *env)
{
    env->mtu = c->mtu;
    env->initial_cwnd_pkts = c->cfg.initial_cwnd_pkts;
    env->srtt_us = c->rec.srtt;
    env->min_rtt_us = c->rec.min_rtt;
}

static void rec_acked(void *ctx, uint64_t now, uint64_t pn, const crust_sent_pkt *p, int was_lost)
{
    crust_conn *c = ctx;
    for (unsigned i = 0; i < p->nframes; i++)
        crust_send_stream_ack(&c->ss[p->frames[i].prio], p->frames[i].off, p->frames[i].len);
    if (was_lost) {
        c->st.spurious_losses++;
        return;
    }
    if (p->flags & SP_HAS_ACK)
        crust_rs_remove_below(&c->rx_pns, p->ack_largest + 1);
    if (p->flags & SP_MTU_PROBE)
        crust_pmtu_on_acked(c, now, pn);
    if (p->size > CRUST_FLOOR_MTU) {
        c->pmtu.large_lost = 0;
        c->pmtu.small_acked = 0;
    } else if (p->flags & SP_ACK_ELICITING) {
        c->pmtu.small_acked = 1;
    }
}

static void rec_lost(void *ctx, uint64_t now, uint64_t pn, const crust_sent_pkt *p)
{
    crust_conn *c = ctx;
    c->st.lost_packets++;
    for (unsigned i = 0; i < p->nframes; i++) {
        const crust_sframe *f = &p->frames[i];
        crust_send_stream_lose(&c->ss[f->prio], f->off, f->len);
        c->st.retransmitted_bytes += f->len;
    }
    if (p->flags & SP_MAX_DATA)
        c->max_data_pending = 1;
    if ((p->flags & SP_PATH_CHALLENGE) && c->path_challenge_seq)
        c->path_challenge_pending = 1;
    if (p->flags & SP_MTU_PROBE)
        crust_pmtu_on_lost(c, now, pn);
    else if (p->size > CRUST_FLOOR_MTU)
        c->pmtu.large_lost++;
}

static void rec_acks_done(void *ctx, uint64_t now)
{
    crust_conn *c = ctx;
    /* Small packets get through while large ones keep vanishing: a PMTU
     * black hole (RFC 8899 4.3), not congestion. */
    if (c->pmtu.large_lost >= CRUST_BLACK_HOLE_LOSSES && c->pmtu.small_acked)
        crust_pmtu_on_black_hole(c, now);
}

static void rec_persistent_congestion(void *ctx, uint64_t now)
{
    crust_conn *c = ctx;
    crust_cc_env env;
    cc_env_fill(c, &env);
    c->st.persistent_congestion++;
    c->cc->on_persistent_congestion(c->cc_state, &env, now);
}

static void rec_loss(void *ctx, uint64_t now, uint64_t lost, uint64_t largest_lost_sent)
{
    crust_conn *c = ctx;
    crust_cc_env env;
    cc_env_fill(c, &env);
    c->cc->on_loss(c->cc_state, &env, now, lost, largest_lost_sent, c->rec.bytes_in_flight);
}

static void rec_ack_sample(void *ctx, uint64_t now, const crust_rate_sample *rs)
{
    crust_conn *c = ctx;
    crust_cc_env env;
    cc_env_fill(c, &env);
    c->cc->on_ack(c->cc_state, &env, now, rs);
}

static const crust_rec_ops rec_ops = {
    .acked = rec_acked,
    .lost = rec_lost,
    .acks_done = rec_acks_done,
    .persistent_congestion = rec_persistent_congestion,
    .loss = rec_loss,
    .ack_sample = rec_ack_sample,
};

/* ---- life cycle ------------------------------------------------------------ */

static uint64_t pacing_burst(const crust_conn *c, uint64_t rate)
{
    uint64_t b = rate / 4000; /* 250 us of sending */
    return b > 2u * c->mtu ? b : 2u * c->mtu;
}

crust_conn *crust_conn_new(const crust_config *cfg, const uint8_t local_cid[CRUST_CID_LEN],
                           const uint8_t remote_cid[CRUST_CID_LEN], uint64_t now_us)
{
    crust_config def;
    if (!cfg) {
        crust_config_default(&def);
        cfg = &def;
    }
    if (crust_config_validate(cfg, NULL) != CRUST_OK || !local_cid || !remote_cid)
        return NULL;
    crust_conn *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->cfg = *cfg;
    c->tag_len = CRUST_TAG_LEN; /* until crust_conn_set_keys names the AEAD */
    memcpy(c->local_cid, local_cid, CRUST_CID_LEN);
    memcpy(c->remote_cid, remote_cid, CRUST_CID_LEN);
    crust_rec_init(&c->rec, cfg->initial_rtt_us, cfg->max_ack_delay_us, &rec_ops, c);
    crust_pmtu_init(c);
    if (cfg->stream_transport)
        c->mtu = CRUST_STREAM_MAX_PACKET; /* the stream carries any size */
    for (unsigned p = 0; p < CRUST_NUM_PRIO; p++) {
        crust_send_stream_init(&c->ss[p]);
        crust_recv_stream_init(&c->rs[p]);
    }
    crust_rs_init(&c->rx_pns, CRUST_ACK_RANGES_KEPT);
    c->cc = cfg->cc == CRUST_CC_CUBIC ? &crust_cc_cubic : &crust_cc_bbr;
    crust_cc_env env;
    cc_env_fill(c, &env);
    c->cc->init(c->cc_state, &env, now_us);
    crust_pacer_init(&c->pacer, now_us, (uint64_t)cfg->initial_cwnd_pkts * c->mtu);
    c->tx_max_data = CRUST_INITIAL_MAX_DATA;
    c->rx_max_data = cfg->recv_window;
    c->max_data_pending = cfg->recv_window > CRUST_INITIAL_MAX_DATA;
    c->last_rx_us = c->last_tx_us = c->rec.last_ack_eliciting_sent = now_us;
    c->st.cc = cfg->cc;
    return c;
}

/* Keys are secrets: do not leave them in memory that is freed or reused;
 * volatile keeps the compiler from dropping the stores as dead. */
static void wipe_keys(crust_keys *k)
{
    volatile uint8_t *b = (volatile uint8_t *)k;
    for (size_t i = 0; i < sizeof *k; i++)
        b[i] = 0;
}

void crust_conn_free(crust_conn *c)
{
    if (!c)
        return;
    for (unsigned p = 0; p < CRUST_NUM_PRIO; p++) {
        crust_send_stream_free(&c->ss[p]);
        crust_recv_stream_free(&c->rs[p], &c->msg_alloc);
    }
    crust_rs_free(&c->rx_pns);
    crust_rec_free(&c->rec);
    free(c->evq);
    for (unsigned i = 0; i < 2; i++) {
        wipe_keys(&c->tx[i]);
        wipe_keys(&c->rx[i]);
    }
    free(c);
}

int crust_conn_set_keys(crust_conn *c, unsigned phase, crust_aead_id aead,
                        const uint8_t tx_key[CRUST_KEY_LEN], const uint8_t tx_iv[CRUST_IV_LEN],
                        const uint8_t rx_key[CRUST_KEY_LEN], const uint8_t rx_iv[CRUST_IV_LEN])
{
    if (phase > 1 || !crust_aead_available(aead) || !tx_key || !tx_iv || !rx_key || !rx_iv)
        return CRUST_EINVAL;
    crust_keys *t = &c->tx[phase], *r = &c->rx[phase];
    memcpy(t->key, tx_key, CRUST_KEY_LEN);
    memcpy(t->iv, tx_iv, CRUST_IV_LEN);
    memcpy(r->key, rx_key, CRUST_KEY_LEN);
    memcpy(r->iv, rx_iv, CRUST_IV_LEN);
    t->aead = r->aead = (uint8_t)aead;
    t->valid = r->valid = 1;
    c->tag_len = crust_aead_tag_len(aead);
    c->aead_packet_limit = crust_aead_packet_limit(aead);
    if (phase != c->tx_phase) {
        /* The other slot now holds the next generation, whatever it held. */
        c->old_keys = 0;
        c->old_discard_us = 0;
        c->keys_needed_pending = 0;
    }
    return CRUST_OK;
}

static void discard_old_keys(crust_conn *c);

/* Send with the next generation from the next packet on. The previous
 * generation stays in its slot to open reordered packets; its discard
 * timer starts once the peer is seen using the new keys (at once when the
 * peer started the update), as RFC 9001 6.5 says. */
static void switch_tx_keys(crust_conn *c, uint64_t now, int by_peer)
{
    unsigned old = c->tx_phase;
    c->tx_phase ^= 1u;
    c->key_gen++;
    c->key_first_pn = c->rec.next_pn;
    c->key_acked = 0;
    c->key_data = 0;
    wipe_keys(&c->tx[old]); /* never sent with again */
    c->old_keys = c->rx[old].valid;
    c->old_discard_us = by_peer ? now + 3 * crust_rec_pto(&c->rec) : 0;
    if (by_peer && c->old_keys && c->cfg.stream_transport)
        discard_old_keys(c); /* an ordered stream brings nothing older */
    c->st.key_updates++;
    c->st.key_phase = c->tx_phase;
    c->key_update_pending = 1;
    c->key_update_reason = by_peer ? 2 : 1;
}

static void discard_old_keys(crust_conn *c)
{
    unsigned old = c->tx_phase ^ 1u;
    wipe_keys(&c->tx[old]);
    wipe_keys(&c->rx[old]);
    c->old_keys = 0;
    c->old_discard_us = 0;
    c->keys_needed_pending = 1;
}

/* Whether to start a key update before sending at now. Besides a trigger,
 * the next keys must be installed, and the peer must have them too: it
 * acknowledged a packet of the current phase, so it switched to it, and
 * 3 PTO have passed since, so it has wiped the previous generation from
 * the slot our next packets use and installed the next one there. */
static int rekey_due(const crust_conn *c, uint64_t now)
{
    if (c->old_keys || !c->tx[c->tx_phase ^ 1u].valid || !c->key_acked)
        return 0;
    uint64_t limit = c->cfg.rekey_packets;
    if (c->aead_packet_limit && (!limit || limit > c->aead_packet_limit))
        limit = c->aead_packet_limit;
    /* The interval bounds how long keys that protected messages live
     * (forward secrecy, 0008); keys that only ever sealed keepalives and
     * ACKs protect nothing, so an idle connection keeps them: 100,000 idle
     * peers rekeyed 833 times a second, each update a key derivation in
     * Python on both ends and a discard timer (0077). */
    int due = (limit && c->rec.next_pn - c->key_first_pn >= limit) ||
              (c->cfg.rekey_interval_us && c->key_data &&
               now - c->key_data_us >= c->cfg.rekey_interval_us);
    return due && now >= c->key_acked_us + 3 * crust_rec_pto(&c->rec);
}

int crust_conn_update_keys(crust_conn *c, uint64_t now_us)
{
    if (c->old_keys || !c->tx[c->tx_phase ^ 1u].valid)
        return CRUST_ENOKEY;
    switch_tx_keys(c, now_us, 0);
    return CRUST_OK;
}

/* ---- events --------------------------------------------------------------- */

static void crust_conn_push_event(crust_conn *c, const crust_event *ev)
{
    if (c->evq_n == c->evq_cap) {
        uint32_t ncap = c->evq_cap ? c->evq_cap * 2 : 8;
        crust_event *q = malloc((size_t)ncap * sizeof *q);
        if (!q)
            return; /* drop-event notices are advisory; the drop itself stands */
        for (uint32_t i = 0; i < c->evq_n; i++)
            q[i] = c->evq[(c->evq_head + i) % c->evq_cap];
        free(c->evq);
        c->evq = q;
        c->evq_cap = ncap;
        c->evq_head = 0;
    }
    c->evq[(c->evq_head + c->evq_n) % c->evq_cap] = *ev;
    c->evq_n++;
}

static void begin_close(crust_conn *c, uint64_t now, conn_state st, uint32_t reason,
                        uint64_t code)
{
    if (c->state != ST_OPEN)
        return;
    c->state = st;
    c->close_reason = reason;
    c->close_code = code;
    c->close_event_pending = 1;
    c->drain_until = now + 3 * crust_rec_pto(&c->rec);
    if (st == ST_CLOSING) {
        c->close_frame_pending = 1;
        c->closing_tx_budget = CLOSE_REPLIES_MAX;
    }
}

static void protocol_error(crust_conn *c, uint64_t now)
{
    if (c->state == ST_OPEN)
        c->st.protocol_errors++;
    begin_close(c, now, ST_CLOSING, CRUST_CLOSE_PROTOCOL, 0);
}

static uint64_t send_buffered(const crust_conn *c)
{
    uint64_t n = 0;
    for (unsigned p = 0; p < CRUST_NUM_PRIO; p++)
        n += crust_send_stream_buffered(&c->ss[p]);
    return n;
}

static void after_send_progress(crust_conn *c, uint64_t now)
{
    uint64_t buffered = send_buffered(c);
    if (c->want_send_ready && buffered <= c->cfg.send_buffer / 2) {
        c->want_send_ready = 0;
        c->send_ready_pending = 1;
    }
    if (buffered == 0) {
        if (c->all_acked_armed) {
            c->all_acked_armed = 0;
            c->all_acked_pending = 1;
        }
        if (c->graceful_close)
            begin_close(c, now, ST_CLOSING, CRUST_CLOSE_LOCAL, c->close_code);
    }
}

/* ---- sending messages ----------------------------------------------------- */

uint64_t crust_conn_send_capacity(const crust_conn *c)
{
    uint64_t b = send_buffered(c);
    return b >= c->cfg.send_buffer ? 0 : c->cfg.send_buffer - b;
}

int crust_conn_send(crust_conn *c, uint64_t now_us, const uint8_t *msg, size_t len, unsigned prio,
                    uint64_t *msg_id)
{
    int control = (prio & CRUST_SEND_CONTROL) != 0;
    prio &= ~(unsigned)CRUST_SEND_CONTROL;
    if (prio >= CRUST_NUM_PRIO || (!msg && len))
        return CRUST_EINVAL;
    if (c->state != ST_OPEN || c->graceful_close)
        return CRUST_ECLOSED;
    if (len > c->cfg.max_message_size)
        return CRUST_EMSGSIZE;
    uint64_t buffered = send_buffered(c);
    if (buffered && buffered + len + 8 > c->cfg.send_buffer) {
        c->want_send_ready = 1;
        return CRUST_EWOULDBLOCK;
    }
    uint64_t id = c->next_msg_id;
    int track = c->cfg.drop_deadline_us && prio >= c->cfg.drop_min_prio;
    int rc = crust_send_stream_push(&c->ss[prio], msg ? msg : (const uint8_t *)"", len, control,
                                    id, now_us, track);
    if (rc)
        return rc;
    c->next_msg_id++;
    c->all_acked_armed = 1;
    c->st.tx_msgs++;
    c->st.tx_msg_bytes += len;
    buffered += len;
    if (buffered > c->st.send_buffer_peak)
        c->st.send_buffer_peak = buffered;
    if (msg_id)
        *msg_id = id;
    return CRUST_OK;
}

static int is_stale(const crust_conn *c, const crust_pending_msg *m, uint64_t now)
{
    return m && m->queued_us + c->cfg.drop_deadline_us <= now;
}

/* Drop the stale messages at the head of a stream's unsent bytes. */
static void drop_stale_stream(crust_conn *c, unsigned p, uint64_t now)
{
    crust_send_stream *s = &c->ss[p];
    const crust_pending_msg *m;
    while ((m = crust_send_stream_oldest_pending(s)) && m->start == s->sent_hi &&
           is_stale(c, m, now)) {
        crust_event ev = {0};
        ev.type = CRUST_EV_MESSAGE_DROPPED;
        ev.prio = p;
        ev.msg_id = m->id;
        ev.len = crust_send_stream_drop_oldest(s);
        c->st.dropped_msgs++;
        crust_conn_push_event(c, &ev);
    }
}

/* Drop unsent low-priority messages older than the deadline. */
static void drop_stale(crust_conn *c, uint64_t now)
{
    if (!c->cfg.drop_deadline_us)
        return;
    for (unsigned p = c->cfg.drop_min_prio; p < CRUST_NUM_PRIO; p++)
        drop_stale_stream(c, p, now);
    after_send_progress(c, now);
}

static uint64_t stale_deadline(const crust_conn *c)
{
    uint64_t t = UINT64_MAX;
    if (!c->cfg.drop_deadline_us)
        return t;
    for (unsigned p = c->cfg.drop_min_prio; p < CRUST_NUM_PRIO; p++) {
        const crust_pending_msg *m = crust_send_stream_oldest_pending(&c->ss[p]);
        /* Only a message at the head of the unsent bytes can be dropped;
         * one behind a partly sent message is checked when it gets there. */
        if (m && m->start == c->ss[p].sent_hi && m->queued_us + c->cfg.drop_deadline_us < t)
            t = m->queued_us + c->cfg.drop_deadline_us;
    }
    return t;
}

/* ---- receiving ------------------------------------------------------------ */

int crust_packet_cid(const uint8_t *pkt, size_t len, uint8_t cid[CRUST_CID_LEN])
{
    if (!pkt || len < CRUST_SHORT_HEADER_MIN || (pkt[0] & FLAGS_LONG) || !(pkt[0] & FLAGS_FIXED))
        return CRUST_ENOTOURS;
    memcpy(cid, pkt + 1, CRUST_CID_LEN);
    return CRUST_OK;
}

static int replay_seen(const crust_conn *c, uint64_t pn)
{
    if (!c->rx_largest_plus1)
        return CRUST_OK;
    if (pn + CRUST_REPLAY_BITS < c->rx_largest_plus1)
        return CRUST_ETOOOLD;
    if (c->replay[(pn / 64) % (CRUST_REPLAY_BITS / 64)] & (UINT64_C(1) << (pn % 64)))
        return pn < c->rx_largest_plus1 ? CRUST_EDUPLICATE : CRUST_OK;
    return CRUST_OK;
}

static void replay_mark(crust_conn *c, uint64_t pn)
{
    if (pn >= c->rx_largest_plus1) {
        /* Slide the window: clear the bits of the numbers we skip over, in
         * 64-bit words, as they now stand for new packet numbers. */
        uint64_t from = c->rx_largest_plus1, to = pn + 1;
        if (to - from >= CRUST_REPLAY_BITS) {
            memset(c->replay, 0, sizeof c->replay);
        } else {
            for (uint64_t x = from; x < to; x++) {
                if (x % 64 == 0 && x + 64 <= to) {
                    c->replay[(x / 64) % (CRUST_REPLAY_BITS / 64)] = 0;
                    x += 63;
                } else {
                    c->replay[(x / 64) % (CRUST_REPLAY_BITS / 64)] &= ~(UINT64_C(1) << (x % 64));
                }
            }
        }
    }
    c->replay[(pn / 64) % (CRUST_REPLAY_BITS / 64)] |= UINT64_C(1) << (pn % 64);
}

static int count_drop(crust_conn *c, int err)
{
    if (c->rx_offpath && (err == CRUST_EDECRYPT || err == CRUST_EMALFORMED)) {
        c->st.rx_dropped_offpath++; /* whoever sent it, not the peer's fault */
        return err;
    }
    switch (err) {
    case CRUST_EDECRYPT: c->st.rx_dropped_decrypt++; break;
    case CRUST_EMALFORMED: c->st.rx_dropped_malformed++; break;
    case CRUST_EDUPLICATE: c->st.rx_dropped_duplicate++; break;
    case CRUST_ETOOOLD: c->st.rx_dropped_old++; break;
    case CRUST_ENOTOURS: c->st.rx_dropped_notours++; break;
    default: break;
    }
    return err;
}

static int on_stream_frame(crust_conn *c, const crust_stream_frame *f)
{
    crust_recv_stream *s = &c->rs[f->prio];
    uint64_t end = f->off + f->len;
    if (end > s->hi) {
        /* Flow control: total stream bytes may not pass what we allowed. */
        if (c->rx_data + (end - s->hi) > c->rx_max_data)
            return CRUST_EPROTO;
    }
    uint64_t old_hi = s->hi;
    int rc = crust_recv_stream_write(s, f->off, f->data, f->len, &c->msg_alloc);
    if (rc)
        return rc;
    c->rx_data += s->hi - old_hi;
    uint64_t held = 0;
    for (unsigned p = 0; p < CRUST_NUM_PRIO; p++)
        held += crust_recv_stream_buffered(&c->rs[p]);
    if (held > c->st.recv_buffer_peak)
        c->st.recv_buffer_peak = held;
    return CRUST_OK;
}

static int process_frames(crust_conn *c, uint64_t now, const uint8_t *p, size_t len,
                          int *ack_eliciting)
{
    crust_frame f;
    size_t off = 0;
    while (off < len) {
        int n = crust_frame_parse_untrusted(p + off, len - off, &f);
        if (n < 0)
            return n;
        off += (size_t)n;
        int rc = CRUST_OK;
        switch (f.type) {
        case CRUST_FT_PADDING:
            break;
        case CRUST_FT_PING:
            *ack_eliciting |= 1; /* 1 alone: nothing but PING (see crust_conn_recv) */
            break;
        case CRUST_FT_ACK:
            /* A stream loses nothing, so an honest peer's ACK is one range
             * reaching down to everything we have not seen acknowledged;
             * anything else would declare a loss, and a resend (which
             * put_stream_from_ring rules out). */
            if (c->cfg.stream_transport &&
                (f.ack.range_count || f.ack.largest - f.ack.first_range > c->rec.sent_lo)) {
                rc = CRUST_EPROTO;
                break;
            }
            rc = crust_rec_on_ack(&c->rec, now, &f.ack);
            /* The peer opened a packet sealed with our current keys. */
            if (!rc && !c->key_acked && c->rec.largest_acked_plus1 > c->key_first_pn) {
                c->key_acked = 1;
                c->key_acked_us = now;
            }
            break;
        case CRUST_FT_STREAM:
            *ack_eliciting = 3;
            rc = on_stream_frame(c, &f.stream);
            break;
        case CRUST_FT_MAX_DATA:
            *ack_eliciting = 3;
            if (f.max_data > c->tx_max_data)
                c->tx_max_data = f.max_data;
            break;
        case CRUST_FT_PATH_CHALLENGE:
            *ack_eliciting = 3;
            memcpy(c->path_response, f.path_data, 8);
            c->path_response_pending = 1;
            break;
        case CRUST_FT_PATH_RESPONSE:
            *ack_eliciting = 3;
            if (c->path_challenge_seq && memcmp(f.path_data, c->path_challenge, 8) == 0) {
                c->path_challenge_seq = 0;
                c->path_challenge_pending = 0;
                c->path_validated_pending = 1;
            }
            break;
        case CRUST_FT_CLOSE:
            begin_close(c, now, ST_DRAINING,
                        f.close.reason == CRUST_CLOSE_PROTOCOL ? CRUST_CLOSE_PROTOCOL
                                                               : CRUST_CLOSE_REMOTE,
                        f.close.code);
            break;
        default:
            return CRUST_EMALFORMED;
        }
        if (rc)
            return rc;
    }
    return CRUST_OK;
}

/* Frames must all parse before any takes effect, so that a packet is
 * either processed whole or dropped whole. */
static int validate_frames(const uint8_t *p, size_t len, int *has_close)
{
    crust_frame f;
    size_t off = 0;
    if (len == 0)
        return CRUST_EMALFORMED; /* a packet carries at least one frame */
    while (off < len) {
        int n = crust_frame_parse_untrusted(p + off, len - off, &f);
        if (n < 0)
            return n;
        if (f.type == CRUST_FT_CLOSE)
            *has_close = 1;
        off += (size_t)n;
    }
    return CRUST_OK;
}

/* Packets are opened into this buffer: one per thread (connections on
 * different threads may be driven at once), sized for the largest packet
 * of any mode, rather than one per connection. Nothing keeps pointers into
 * it past crust_conn_recv. */
static _Thread_local uint8_t rx_plain[CRUST_STREAM_MAX_PACKET];

/* Stream transports: where to open a packet of plen plaintext bytes so
 * that, if it is one STREAM frame continuing the message being assembled
 * in the embedder's buffer (crust_conn_set_msg_alloc) on the priority of
 * the last STREAM frame, its data lands where it belongs: the receiver's
 * copy of the data is then the AEAD's own output. The frame's header
 * length follows from its offset (the next byte expected) and its data
 * length (plen minus the header); *hdr gets it. The header's bytes land
 * below the data, over body bytes already received: the caller saves and
 * restores them. NULL when the packet cannot be placed (no message
 * buffer, not in order, or the plaintext would not fit inside the body:
 * the last packet of a message carries the next one's start). */
static uint8_t *open_in_place(crust_conn *c, size_t plen, size_t *hdr)
{
    if (!c->cfg.stream_transport)
        return NULL;
    crust_recv_stream *s = &c->rs[c->rx_pred_prio];
    if (!s->dbuf || !crust_rs_empty(&s->ooo))
        return NULL;
    size_t h = 0;
    for (size_t l = 1; l <= 8 && !h; l *= 2) {
        size_t cand = 1 + crust_varint_len(s->contig) + l;
        if (plen > cand && crust_varint_len(plen - cand) == l)
            h = cand;
    }
    if (!h || s->contig < s->dbody + h)
        return NULL;
    uint64_t at = s->contig - s->dbody - h;
    if (at + plen > s->dlen)
        return NULL;
    *hdr = h;
    return s->dbuf + at;
}

/* Whether the plaintext placed by open_in_place is what it assumed: one
 * STREAM frame on that priority, at the next offset, with its data right
 * after a header of hdr bytes. Also notes the priority of this packet's
 * first STREAM frame, for the next packet. */
static int check_placement(crust_conn *c, const uint8_t *plain, size_t plen, size_t hdr)
{
    crust_frame f;
    int n = crust_frame_parse_untrusted(plain, plen, &f);
    if (n <= 0 || f.type < CRUST_FT_STREAM || f.type > CRUST_FT_STREAM + CRUST_NUM_PRIO - 1)
        return 0;
    const crust_stream_frame *st = &f.stream;
    int ok = hdr && st->prio == c->rx_pred_prio && (size_t)(st->data - plain) == hdr &&
             st->off == c->rs[st->prio].contig && (size_t)n == plen;
    c->rx_pred_prio = st->prio;
    return ok;
}

/* The effect of an authenticated packet: plain holds its plen bytes of
 * frames, opened with the keys of `slot`. *processed is set once its frames
 * were acted on (crust_conn_recv counts placed bytes then). */
static int recv_opened(crust_conn *c, uint64_t now_us, uint64_t pn, unsigned slot, size_t len,
                       const uint8_t *plain, size_t plen, int *processed)
{
    int has_close = 0;
    if (validate_frames(plain, plen, &has_close) != CRUST_OK) {
        /* Authenticated yet malformed: the peer is broken or hostile. */
        count_drop(c, CRUST_EMALFORMED);
        protocol_error(c, now_us);
        return CRUST_EPROTO;
    }
    if (slot != c->tx_phase) {
        /* Authentic under the other slot: the previous generation (a
         * reordered packet), or the next one, which means the peer started
         * a key update; we follow it. */
        if (!c->old_keys)
            switch_tx_keys(c, now_us, 1);
    } else if (c->old_keys && !c->old_discard_us) {
        /* The peer now sends with the keys we switched to. */
        c->old_discard_us = now_us + 3 * crust_rec_pto(&c->rec);
        if (c->cfg.stream_transport)
            discard_old_keys(c); /* an ordered stream brings nothing older */
    }
    c->last_rx_us = now_us;
    /* The peer is alive: whatever we suspected, it answered. */
    c->unanswered_since = 0;
    c->unreachable_deadline = 0;
    c->st.rx_packets++;
    c->st.rx_bytes += len;
    if (c->state == ST_CLOSING) {
        replay_mark(c, pn);
        if (has_close) {
            c->state = ST_DRAINING;
        } else if (c->closing_tx_budget > 0) {
            c->closing_tx_budget--;
            c->close_frame_pending = 1;
        }
        return CRUST_OK;
    }
    int ack_eliciting = 0;
    *processed = 1;
    int rc = process_frames(c, now_us, plain, plen, &ack_eliciting);
    if (rc == CRUST_EPROTO) {
        protocol_error(c, now_us);
        return rc;
    }
    if (rc)
        return rc; /* resource limit: dropped unacknowledged, resent later */
    replay_mark(c, pn);
    uint64_t prev_largest_plus1 = c->rx_largest_plus1;
    if (pn + 1 > c->rx_largest_plus1) {
        c->rx_largest_plus1 = pn + 1;
        c->rx_largest_time = now_us;
    }
    if (crust_rs_add(&c->rx_pns, pn, pn + 1) != CRUST_OK) {
        crust_rs_pop_lowest(&c->rx_pns);
        crust_rs_add(&c->rx_pns, pn, pn + 1);
    }
    if (ack_eliciting) {
        c->last_ack_eliciting_rx = now_us;
        c->ack_pending = 1;
        c->rx_unacked_eliciting++;
        /* Acknowledge at once what helps the sender detect loss quickly:
         * reordering, or a new gap (RFC 9000 13.2.1). */
        /* So does a bare PING (a keepalive, a probe): nothing else is
         * coming to share the ACK with, and answering it in the same pass
         * spares an idle node a timer wakeup per keepalive (issue 22). */
        if (pn + 1 < prev_largest_plus1 || pn > prev_largest_plus1 ||
            c->rx_unacked_eliciting >= c->cfg.ack_frequency || ack_eliciting == 1)
            c->ack_immediate = 1;
        else if (!c->ack_deadline)
            c->ack_deadline = now_us + c->cfg.max_ack_delay_us;
    }
    after_send_progress(c, now_us);
    return CRUST_OK;
}

int crust_conn_recv(crust_conn *c, uint64_t now_us, const uint8_t *pkt, size_t len)
{
    if (!pkt || len < CRUST_SHORT_HEADER_MIN + c->tag_len)
        return count_drop(c, CRUST_EMALFORMED);
    uint8_t flags = pkt[0];
    if (flags & FLAGS_LONG)
        return count_drop(c, CRUST_ENOTOURS);
    if (!(flags & FLAGS_FIXED))
        return count_drop(c, CRUST_EMALFORMED);
    if (memcmp(pkt + 1, c->local_cid, CRUST_CID_LEN) != 0)
        return count_drop(c, CRUST_ENOTOURS);
    if (c->state == ST_DRAINING || c->state == ST_CLOSED)
        return CRUST_ECLOSED;
    unsigned pnlen = (flags & 3u) + 1;
    size_t hdr = 1 + CRUST_CID_LEN + pnlen;
    /* Plaintext of at most CRUST_MAX_PACKET bytes, or a whole packet of at
     * most CRUST_STREAM_MAX_PACKET on a stream: both fit rx_plain. */
    size_t max_plain = c->cfg.stream_transport ? CRUST_STREAM_MAX_PACKET : CRUST_MAX_PACKET;
    if (len < hdr + c->tag_len + 1 || len - hdr - c->tag_len > max_plain ||
        (c->cfg.stream_transport && len > CRUST_STREAM_MAX_PACKET))
        return count_drop(c, CRUST_EMALFORMED);
    uint64_t trunc = 0;
    for (unsigned i = 0; i < pnlen; i++)
        trunc = (trunc << 8) | pkt[1 + CRUST_CID_LEN + i];
    uint64_t pn = crust_pn_decode(c->rx_largest_plus1, trunc, pnlen * 8);
    /* Cheap replay rejection before any crypto work. */
    int rc = replay_seen(c, pn);
    if (rc)
        return count_drop(c, rc);
    unsigned slot = (flags & FLAGS_KEY_PHASE) ? 1 : 0;
    if (slot != c->tx_phase && c->old_keys && c->old_discard_us && pn >= c->rx_largest_plus1) {
        /* Newer than every packet the peer sent with the current keys, so
         * not a reordered one of the previous generation: the peer already
         * started the next update (its PTO, hence its wait, is shorter than
         * ours, e.g. when we only send ACKs and have no RTT sample). The
         * old keys are useless now: make room for the next ones at once
         * rather than lose the peer's packets for the rest of 3 PTO. */
        discard_old_keys(c);
        return count_drop(c, CRUST_EDECRYPT);
    }
    const crust_keys *k = &c->rx[slot];
    if (!k->valid)
        return count_drop(c, CRUST_EDECRYPT); /* e.g. wiped old keys: never a crash */
    size_t plen = len - hdr - c->tag_len;
    size_t saved_len = 0;
    uint8_t *placed = open_in_place(c, plen, &saved_len);
    unsigned placed_prio = c->rx_pred_prio;
    uint8_t *placed_buf = placed ? c->rs[placed_prio].dbuf : NULL;
    uint8_t saved[32]; /* a STREAM header: type and two varints */
    uint8_t *plain = rx_plain;
    if (placed) {
        memcpy(saved, placed, saved_len);
        plain = placed;
    }
    int processed = 0;
    if (crust_aead_open(k, pn, plain, pkt + hdr, len - hdr, pkt, hdr) != CRUST_OK) {
        rc = count_drop(c, CRUST_EDECRYPT); /* a failed open may have written: restored below */
    } else {
        if (c->cfg.stream_transport && !check_placement(c, plain, plen, saved_len) && placed) {
            /* Mispredicted: process it from the scratch buffer, where
             * frames cannot overlap the message they write to. */
            memcpy(rx_plain, plain, plen);
            plain = rx_plain;
        }
        rc = recv_opened(c, now_us, pn, slot, len, plain, plen, &processed);
    }
    /* The one exit once a packet may have been opened in place: give the
     * message back the body bytes its header was opened over, unless this
     * packet completed the message and the buffer went to the embedder. */
    if (placed && c->rs[placed_prio].dbuf == placed_buf) {
        memcpy(placed, saved, saved_len);
        if (processed && plain == placed)
            c->st.rx_placed_bytes += plen - saved_len;
    }
    return rc;
}

/* ---- events out ----------------------------------------------------------- */

int crust_conn_poll_event(crust_conn *c, crust_event *ev)
{
    memset(ev, 0, sizeof *ev);
    if (c->evq_n) {
        *ev = c->evq[c->evq_head];
        c->evq_head = (c->evq_head + 1) % c->evq_cap;
        c->evq_n--;
        return 1;
    }
    /* Key events come first: the application must install next keys
     * before anything else depends on them. */
    if (c->keys_needed_pending) {
        c->keys_needed_pending = 0;
        ev->type = CRUST_EV_KEYS_NEEDED;
        ev->prio = c->tx_phase ^ 1u;
        ev->code = c->key_gen + 1;
        return 1;
    }
    if (c->key_update_pending) {
        c->key_update_pending = 0;
        ev->type = CRUST_EV_KEY_UPDATE;
        ev->prio = c->tx_phase;
        ev->code = c->key_gen;
        ev->reason = c->key_update_reason;
        return 1;
    }
    int *flag[4] = {&c->path_validated_pending, &c->mtu_event_pending, &c->send_ready_pending,
                    &c->all_acked_pending};
    const uint32_t type[4] = {CRUST_EV_PATH_VALIDATED, CRUST_EV_MTU, CRUST_EV_SEND_READY,
                              CRUST_EV_ALL_ACKED};
    for (int i = 0; i < 4; i++) {
        if (*flag[i]) {
            *flag[i] = 0;
            ev->type = type[i];
            ev->len = type[i] == CRUST_EV_MTU ? c->mtu : 0;
            return 1;
        }
    }
    for (unsigned p = 0; p < CRUST_NUM_PRIO; p++) {
        uint64_t len, hdr;
        int ctl = 0;
        int r = crust_recv_stream_peek(&c->rs[p], c->cfg.max_message_size, &len, &hdr, &ctl);
        if (r == 1 && !ctl && c->hold_messages)
            continue; /* stays queued (and charged to the window) until resumed */
        if (r == 1) {
            ev->type = ctl ? CRUST_EV_CONTROL : CRUST_EV_MESSAGE;
            ev->prio = p;
            ev->len = len;
            return 1;
        }
        if (r < 0 && c->state == ST_OPEN)
            protocol_error(c, c->last_rx_us);
    }
    if (c->close_event_pending) {
        c->close_event_pending = 0;
        c->close_event_done = 1;
        ev->type = CRUST_EV_CLOSED;
        ev->reason = c->close_reason;
        ev->code = c->close_code;
        return 1;
    }
    return 0;
}

/* The endpoint's ready list asks this after every datagram and timer:
 * keep it in step with crust_conn_poll_event (every source of an event
 * there must answer 1 here). */
int crust_conn_has_event(const crust_conn *c)
{
    if (c->evq_n || c->keys_needed_pending || c->key_update_pending ||
        c->path_validated_pending || c->mtu_event_pending || c->send_ready_pending ||
        c->all_acked_pending || c->close_event_pending)
        return 1;
    for (unsigned p = 0; p < CRUST_NUM_PRIO; p++) {
        uint64_t len, hdr;
        int ctl = 0;
        /* 1: a message; < 0: an oversized one, which closes (CLOSED) only
         * while open: afterwards it stays unread and yields no event, and
         * answering 1 would keep the endpoint's ready list spinning (so
         * would a held application message). */
        int r = crust_recv_stream_peek(&c->rs[p], c->cfg.max_message_size, &len, &hdr, &ctl);
        if ((r == 1 && (ctl || !c->hold_messages)) || (r < 0 && c->state == ST_OPEN))
            return 1;
    }
    return 0;
}

/* Give `n` stream bytes back to the flow-control window, and open it again
 * once half of it has been used. */
static int credit(crust_conn *c, uint64_t n)
{
    c->rx_consumed += n;
    if (c->rx_max_data - c->rx_consumed < c->cfg.recv_window / 2) {
        c->rx_max_data = c->rx_consumed + c->cfg.recv_window;
        c->max_data_pending = 1;
        return 1;
    }
    return 0;
}

/* Bookkeeping after the embedder took a message off stream s. With manual
 * credit an application message's bytes stay charged to the window until
 * crust_conn_release: the embedder holds them for its application. */
static void consumed(crust_conn *c, crust_recv_stream *s, uint64_t hdr, uint64_t len, int control)
{
    c->st.rx_msgs++;
    c->st.rx_msg_bytes += len;
    if (c->manual_credit && !control) {
        c->rx_held += hdr + len;
    } else {
        (void)credit(c, hdr + len);
    }
    /* The next message may already be partly here: assemble it outside
     * too if it qualifies. */
    crust_recv_stream_adopt(s, &c->msg_alloc);
}

int64_t crust_conn_read_message(crust_conn *c, unsigned prio, uint8_t *buf, size_t cap)
{
    if (prio >= CRUST_NUM_PRIO)
        return CRUST_EINVAL;
    uint64_t len, hdr;
    int ctl = 0;
    crust_recv_stream *s = &c->rs[prio];
    if (crust_recv_stream_peek(s, c->cfg.max_message_size, &len, &hdr, &ctl) != 1 || cap < len ||
        (!buf && len))
        return CRUST_EINVAL;
    crust_recv_stream_consume(s, hdr, len, buf, &c->msg_alloc);
    consumed(c, s, hdr, len, ctl);
    return (int64_t)len;
}

void crust_conn_set_manual_credit(crust_conn *c, int on) { c->manual_credit = on != 0; }

int crust_conn_release(crust_conn *c, uint64_t bytes)
{
    if (bytes > c->rx_held)
        bytes = c->rx_held; /* never more than was held: the window stays honest */
    c->rx_held -= bytes;
    return credit(c, bytes);
}

void crust_conn_hold_messages(crust_conn *c, int hold) { c->hold_messages = hold != 0; }

void crust_conn_set_msg_alloc(crust_conn *c, crust_msg_alloc_fn alloc, crust_msg_free_fn free_fn,
                              void *ctx, uint64_t min_len)
{
    c->msg_alloc.alloc = alloc;
    c->msg_alloc.free_fn = free_fn;
    c->msg_alloc.ctx = ctx;
    c->msg_alloc.min_len = min_len ? min_len : 1;
    c->msg_alloc.max_len = c->cfg.max_message_size;
}

int crust_conn_take_message(crust_conn *c, unsigned prio, void **handle, uint64_t *len_out)
{
    if (prio >= CRUST_NUM_PRIO || !handle || !len_out)
        return 0;
    uint64_t len, hdr;
    int ctl = 0;
    crust_recv_stream *s = &c->rs[prio];
    if (crust_recv_stream_peek(s, c->cfg.max_message_size, &len, &hdr, &ctl) != 1 ||
        !crust_recv_stream_take(s, hdr, len, handle))
        return 0;
    *len_out = len;
    consumed(c, s, hdr, len, ctl);
    return 1;
}

/* ---- building packets ----------------------------------------------------- */

typedef struct builder {
    uint8_t *p;      /* plaintext, built in place in the output buffer */
    size_t hdr;      /* header length before p */
    size_t len, cap; /* cap excludes the tag */
    crust_sent_pkt info;
    int eliciting;
    const uint8_t *plain; /* or, when set, the len plaintext bytes are here */
} builder;

static void put_ack(crust_conn *c, builder *b, uint64_t now)
{
    const crust_rangeset *r = &c->rx_pns;
    if (crust_rs_empty(r))
        return;
    uint8_t tmp[8 + 8 * 4 + 16 * CRUST_ACK_RANGES_SENT];
    size_t n = 0;
    uint32_t i = r->n - 1;
    uint64_t largest = r->r[i].hi - 1;
    uint64_t delay = now > c->rx_largest_time ? now - c->rx_largest_time : 0;
    uint32_t count = r->n - 1;
    if (count > CRUST_ACK_RANGES_SENT - 1)
        count = CRUST_ACK_RANGES_SENT - 1;
    /* Report fewer ranges when the packet is small (8 bytes per range at
     * most, 32 for the frame's fixed part). */
    size_t room = b->cap - b->len;
    if (room < 40)
        return;
    if ((size_t)count * 16 + 40 > room)
        count = (uint32_t)((room - 40) / 16);
    tmp[n++] = CRUST_FT_ACK;
    n += crust_varint_put(tmp + n, largest);
    n += crust_varint_put(tmp + n, delay >> CRUST_ACK_DELAY_EXP);
    n += crust_varint_put(tmp + n, count);
    n += crust_varint_put(tmp + n, largest - r->r[i].lo);
    uint64_t prev_lo = r->r[i].lo;
    for (uint32_t k = 0; k < count; k++) {
        const crust_range *g = &r->r[i - 1 - k];
        n += crust_varint_put(tmp + n, prev_lo - g->hi - 1);
        n += crust_varint_put(tmp + n, g->hi - 1 - g->lo);
        prev_lo = g->lo;
    }
    memcpy(b->p + b->len, tmp, n);
    b->len += n;
    b->info.flags |= SP_HAS_ACK;
    b->info.ack_largest = largest;
    c->last_ack_sent_us = now;
    c->ack_pending = 0;
    c->ack_immediate = 0;
    c->ack_deadline = 0;
    c->rx_unacked_eliciting = 0;
}

static int add_sframe(builder *b, unsigned prio, uint64_t off, uint64_t len)
{
    crust_sframe *f = &b->info.frames[b->info.nframes++];
    f->prio = (uint8_t)prio;
    f->off = off;
    f->len = (uint32_t)len;
    b->eliciting = 1;
    return 0;
}

/* Write one STREAM frame of up to `max` bytes from stream offset off.
 * Returns bytes of data written (0 if no room). */
static uint64_t put_stream(crust_conn *c, builder *b, unsigned prio, uint64_t off, uint64_t max)
{
    size_t room = b->cap - b->len;
    size_t ovh = crust_frame_stream_overhead(off, max);
    if (room <= ovh || b->info.nframes >= CRUST_MAX_SFRAMES)
        return 0;
    uint64_t n = max < room - ovh ? max : room - ovh;
    b->len += crust_frame_put_stream_header(b->p + b->len, room, prio, off, n);
    crust_send_stream_copy(&c->ss[prio], off, (size_t)n, b->p + b->len);
    b->len += (size_t)n;
    add_sframe(b, prio, off, n);
    return n;
}

/* Stream transports only: one large STREAM frame sealed straight from the
 * send ring, saving a copy of its data. The frames built so far and the
 * STREAM header are written into the ring just below off, so that the
 * plaintext lies contiguous there. Those bytes were sent already, and over
 * a stream nothing is ever resent (ACKs that would declare a loss are a
 * protocol error: see process_frames), so they are no longer needed; the
 * spot must not hold live bytes of a later offset either. Returns the
 * bytes of data taken, or 0 to take the copying path. */
#define SEAL_FROM_RING_MIN 16384
static uint64_t put_stream_from_ring(crust_conn *c, builder *b, unsigned prio, uint64_t off,
                                     uint64_t max)
{
    crust_send_stream *s = &c->ss[prio];
    size_t room = b->cap - b->len;
    size_t ovh = crust_frame_stream_overhead(off, max);
    if (!c->cfg.stream_transport || b->plain || b->info.nframes || max < SEAL_FROM_RING_MIN ||
        room < ovh + SEAL_FROM_RING_MIN)
        return 0;
    uint64_t n = max < room - ovh ? max : room - ovh;
    uint64_t pos = off & (s->cap - 1);
    if (pos + n > s->cap)
        n = s->cap - pos; /* the data must not wrap around the ring's end */
    uint8_t sh[32];
    size_t h = crust_frame_put_stream_header(sh, sizeof sh, prio, off, n);
    size_t pre = b->len + h;
    if (n < SEAL_FROM_RING_MIN || !h || pos < pre || off - pre + s->cap < s->end)
        return 0;
    uint8_t *start = s->buf + pos - pre;
    memcpy(start, b->p, b->len);
    memcpy(start + b->len, sh, h);
    b->plain = start;
    b->len = pre + (size_t)n;
    add_sframe(b, prio, off, n);
    return n;
}

/* Message bytes are about to go out under the current keys: from now the
 * rekey interval runs for them (rekey_due). */
static void key_protects_data(crust_conn *c, uint64_t now)
{
    if (!c->key_data) {
        c->key_data = 1;
        c->key_data_us = now;
    }
}

static void put_streams(crust_conn *c, builder *b, uint64_t now)
{
    int droppable_from = c->cfg.drop_deadline_us ? (int)c->cfg.drop_min_prio : CRUST_NUM_PRIO;
    for (unsigned p = 0; p < CRUST_NUM_PRIO; p++) {
        crust_send_stream *s = &c->ss[p];
        while (!crust_rs_empty(&s->lost)) {
            crust_range r = *crust_rs_lowest(&s->lost);
            uint64_t n = put_stream(c, b, p, r.lo, r.hi - r.lo);
            if (!n)
                return;
            key_protects_data(c, now);
            crust_rs_remove(&s->lost, r.lo, r.lo + n);
        }
        while (s->sent_hi < s->end) {
            const crust_pending_msg *head = NULL;
            if ((int)p >= droppable_from) {
                drop_stale_stream(c, p, now);
                head = crust_send_stream_oldest_pending(s);
                if (!is_stale(c, head, now))
                    head = NULL;
            }
            uint64_t credit = c->tx_max_data > c->tx_data ? c->tx_max_data - c->tx_data : 0;
            uint64_t avail = s->end - s->sent_hi;
            if (avail > credit)
                avail = credit;
            /* A frame must not start a stale message: stop at its start, so
             * the loop drops it (later ones are younger, so never stale when
             * this one is not). */
            if (head && head->start > s->sent_hi && head->start - s->sent_hi < avail)
                avail = head->start - s->sent_hi;
            if (!avail)
                break;
            uint64_t n = put_stream_from_ring(c, b, p, s->sent_hi, avail);
            int sealed_from_ring = n > 0;
            if (!n)
                n = put_stream(c, b, p, s->sent_hi, avail);
            if (!n)
                return;
            s->sent_hi += n;
            c->tx_data += n;
            key_protects_data(c, now);
            crust_send_stream_sent(s);
            if (n < avail || sealed_from_ring)
                return; /* packet full, or its plaintext is in the ring */
        }
    }
}

static int has_stream_data(const crust_conn *c)
{
    int credit = c->tx_max_data > c->tx_data;
    for (unsigned p = 0; p < CRUST_NUM_PRIO; p++) {
        const crust_send_stream *s = &c->ss[p];
        if (!crust_rs_empty(&s->lost) || (credit && s->sent_hi < s->end))
            return 1;
    }
    return 0;
}

static int has_control(const crust_conn *c)
{
    return c->max_data_pending || c->ping_pending || c->path_challenge_pending ||
           c->path_response_pending;
}

static void put_control(crust_conn *c, builder *b)
{
    size_t room = b->cap - b->len;
    size_t n;
    if (c->path_response_pending &&
        (n = crust_frame_put_path(b->p + b->len, room, CRUST_FT_PATH_RESPONSE,
                                  c->path_response))) {
        b->len += n;
        room -= n;
        c->path_response_pending = 0;
        b->eliciting = 1;
    }
    if (c->path_challenge_pending &&
        (n = crust_frame_put_path(b->p + b->len, room, CRUST_FT_PATH_CHALLENGE,
                                  c->path_challenge))) {
        b->len += n;
        room -= n;
        c->path_challenge_pending = 0;
        b->info.flags |= SP_PATH_CHALLENGE;
        b->eliciting = 1;
    }
    if (c->max_data_pending && (n = crust_frame_put_max_data(b->p + b->len, room, c->rx_max_data))) {
        b->len += n;
        c->max_data_pending = 0;
        b->info.flags |= SP_MAX_DATA;
        b->eliciting = 1;
    }
}

/* Seal the payload built in place after the header, and record the
 * packet. b->hdr was fixed when building started. */
/* Up to an eighth of the keepalive, taken off the interval that starts
 * with this packet (see keepalive_at): a hash of the local connection id,
 * different at each end, and the packet number, different every time. */
static uint64_t keepalive_jitter(const crust_conn *c)
{
    uint64_t x = c->rec.next_pn;
    for (unsigned i = 0; i < CRUST_CID_LEN; i++)
        x = (x << 8 | x >> 56) ^ c->local_cid[i];
    /* splitmix64's finaliser */
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    x ^= x >> 31;
    uint64_t span = c->cfg.keepalive_us / 8;
    return span ? x % span : 0;
}

static size_t finish_packet(crust_conn *c, builder *b, uint64_t now, uint8_t *out)
{
    uint64_t pn = c->rec.next_pn;
    size_t hdr = b->hdr;
    unsigned pnlen = (unsigned)(hdr - 1 - CRUST_CID_LEN);
    out[0] = (uint8_t)(FLAGS_FIXED | (c->tx_phase ? FLAGS_KEY_PHASE : 0) | (pnlen - 1));
    memcpy(out + 1, c->remote_cid, CRUST_CID_LEN);
    for (unsigned i = 0; i < pnlen; i++)
        out[1 + CRUST_CID_LEN + i] = (uint8_t)(pn >> (8 * (pnlen - 1 - i)));
    const uint8_t *plain = b->plain ? b->plain : out + hdr;
    if (crust_aead_seal(&c->tx[c->tx_phase], pn, out + hdr, plain, b->len, out, hdr) != CRUST_OK)
        return 0;
    size_t size = hdr + b->len + c->tag_len;
    crust_sent_pkt scratch;
    crust_sent_pkt *sp = crust_rec_slot(&c->rec, b->eliciting, &scratch);
    if (!sp)
        return 0; /* out of memory: nothing was committed, try again later */
    b->info.size = (uint32_t)size;
    b->info.time_sent = now;
    if (b->eliciting)
        b->info.flags |= SP_ACK_ELICITING | SP_IN_FLIGHT;
    crust_rec_on_sent(&c->rec, now, sp, &b->info);
    if (b->eliciting) {
        c->keepalive_jitter = keepalive_jitter(c);
        if (!c->cfg.stream_transport) {
            crust_cc_env env;
            cc_env_fill(c, &env);
            c->cc->on_sent(c->cc_state, &env, now, size, c->rec.bytes_in_flight);
            crust_pacer_on_sent(&c->pacer, size);
        }
    }
    /* Message data now waits for an answer; keepalive PINGs and probes
     * alone do not start the clock (quiet links are idle_timeout's). */
    if (b->info.nframes && !c->unanswered_since)
        c->unanswered_since = now ? now : 1;
    c->last_tx_us = now;
    c->st.tx_packets++;
    c->st.tx_bytes += size;
    return size;
}

/* Waiting to hear from the peer before sending anything (see crust.h). */
static int quiet(const crust_conn *c)
{
    return c->quiet_until_heard && !c->st.rx_packets && c->state == ST_OPEN;
}

size_t crust_conn_poll_transmit(crust_conn *c, uint64_t now, uint8_t *out, size_t cap)
{
    if (!out || c->state == ST_DRAINING || c->state == ST_CLOSED || !c->tx[c->tx_phase].valid ||
        quiet(c))
        return 0;
    size_t budget = cap < c->mtu ? cap : c->mtu;
    if (budget < CRUST_SHORT_HEADER_MIN + 4 + c->tag_len + 16)
        return 0;
    builder b;
    memset(&b, 0, sizeof b);
    b.hdr = 1 + CRUST_CID_LEN + crust_pn_encode_len(c->rec.next_pn, c->rec.largest_acked_plus1);
    b.p = out + b.hdr;
    b.cap = budget - b.hdr - c->tag_len;

    if (c->state == ST_CLOSING) {
        if (!c->close_frame_pending)
            return 0;
        c->close_frame_pending = 0;
        uint64_t reason = c->close_reason == CRUST_CLOSE_PROTOCOL ? CRUST_CLOSE_PROTOCOL
                                                                    : CRUST_CLOSE_REMOTE;
        b.len = crust_frame_put_close(b.p, b.cap, reason, c->close_code);
        return finish_packet(c, &b, now, out);
    }
    drop_stale(c, now);
    if (rekey_due(c, now))
        switch_tx_keys(c, now, 0);

    int probe = c->probes_pending > 0;
    if (probe && c->rec.pto_count >= 2 && b.cap > CRUST_FLOOR_MTU - b.hdr - c->tag_len)
        /* Repeated timeouts: probe with packets any path carries, so a PMTU
         * black hole cannot starve the connection of acknowledgments. */
        b.cap = CRUST_FLOOR_MTU - b.hdr - c->tag_len;
    crust_cc_env env;
    cc_env_fill(c, &env);
    uint64_t cwnd = c->cc->cwnd(c->cc_state);
    /* A controller's floor was computed for the MTU of its time; the path
     * MTU may have grown since, and a window below one packet would stall. */
    if (cwnd < CRUST_CC_MIN_CWND(c->mtu))
        cwnd = CRUST_CC_MIN_CWND(c->mtu);
    /* On a stream transport the stream paces, windows and sizes packets:
     * only the send buffer and flow control limit us here. */
    int stream = c->cfg.stream_transport != 0;
    int cwnd_ok = probe || stream || c->rec.bytes_in_flight + c->mtu <= cwnd;
    int want_elicit = has_stream_data(c) || has_control(c) || probe;
    uint32_t mtu_probe = cwnd_ok && !stream ? crust_pmtu_want_probe(c, now) : 0;
    if (mtu_probe > cap)
        mtu_probe = 0;
    int may_elicit = 0;
    if (stream) {
        may_elicit = 1;
    } else if (cwnd_ok && (want_elicit || mtu_probe)) {
        uint64_t rate = 0;
        if (c->cfg.pacing) {
            /* Never pace slower than the minimum window per RTT: a model fed
             * only tiny samples must not starve the connection. */
            uint64_t floor = CRUST_CC_MIN_CWND(c->mtu) * 1000000u / (c->rec.srtt ? c->rec.srtt : 1);
            rate = c->cc->pacing_rate(c->cc_state, &env);
            if (rate < floor)
                rate = floor;
        }
        may_elicit = probe || crust_pacer_can_send(&c->pacer, now, rate, c->mtu,
                                                   pacing_burst(c, rate));
    }
    if (cwnd_ok && !want_elicit && !c->rec.app_limited_until && !stream) {
        /* The window is open and we have nothing to send. */
        c->rec.app_limited_until = c->rec.delivered + c->rec.bytes_in_flight;
        if (!c->rec.app_limited_until)
            c->rec.app_limited_until = 1;
        c->cc->on_app_limited(c->cc_state, now);
    }

    if (may_elicit && mtu_probe && !probe) {
        /* PING + PADDING up to the probe size; data never rides on a probe. */
        size_t plen = mtu_probe - b.hdr - c->tag_len;
        memset(b.p, 0, plen);
        b.p[0] = CRUST_FT_PING;
        b.len = plen;
        b.eliciting = 1;
        b.info.flags |= SP_MTU_PROBE;
        uint64_t pn = c->rec.next_pn;
        size_t n = finish_packet(c, &b, now, out);
        if (n)
            crust_pmtu_on_probe_sent(c, pn, (uint32_t)n);
        return n;
    }

    int ack_due = c->ack_pending && (c->ack_immediate || (c->ack_deadline && now >= c->ack_deadline));
    /* An ACK frame is never retransmitted as such; instead, an eliciting
     * packet repeats the current ACK state once per RTT, so a lost ACK
     * cannot leave the peer without RTT samples while we still talk. */
    int ack_stale = !c->cfg.stream_transport && !crust_rs_empty(&c->rx_pns) &&
                    now >= c->last_ack_sent_us + c->rec.srtt; /* a stream loses no ACK */
    if ((c->ack_pending && ack_due) || ((c->ack_pending || ack_stale) && may_elicit && want_elicit))
        put_ack(c, &b, now);
    if (may_elicit && want_elicit) {
        /* On repeated PTOs the last probe is a bare PING: if only small
         * packets get through, its ACK reveals a PMTU black hole. */
        int bare = probe && c->probes_pending == 1 && c->rec.pto_count >= 2;
        if (!bare) {
            put_control(c, &b);
            /* Over a stream, ACK and control frames go in a small packet
             * of their own: a data packet that is one STREAM frame can be
             * sealed from the send ring and opened straight into the
             * receiver's message (put_stream_from_ring, open_in_place). */
            if (!c->cfg.stream_transport || !b.len)
                put_streams(c, &b, now);
        }
        if (!b.eliciting && (c->ping_pending || probe)) {
            b.p[b.len++] = CRUST_FT_PING;
            b.eliciting = 1;
            /* pto_deadline gives a lone keepalive PING more time */
            c->keepalive_pn1 = c->keepalive_pending && !probe ? c->rec.next_pn + 1 : 0;
        }
        if (b.eliciting)
            c->ping_pending = c->keepalive_pending = 0;
        if (probe && b.eliciting)
            c->probes_pending--;
    }
    if (b.len == 0)
        return 0;
    return finish_packet(c, &b, now, out);
}

/* ---- timers ----------------------------------------------------------------- */

static uint64_t min64(uint64_t a, uint64_t b) { return a < b ? a : b; }

/* The peer started a message it has not finished (or left a gap) and has
 * the credit to go on, yet nothing came for a while: ask for an
 * acknowledgment, once per silence. Its acks or our packets may have been
 * lost; or our NAT gave us a new address (rebinding), which a receiver
 * that only acknowledges would otherwise not reveal until its keepalive,
 * while the sender backs off towards the old one. */
static uint64_t rx_stall_deadline(const crust_conn *c)
{
    if (c->rec.last_ack_eliciting_sent >= c->last_rx_us || c->rx_max_data <= c->rx_data)
        return UINT64_MAX;
    for (unsigned p = 0; p < CRUST_NUM_PRIO; p++)
        if (c->rs[p].hi > c->rs[p].read) {
            uint64_t wait = 2 * crust_rec_pto(&c->rec);
            if (wait < CRUST_RX_STALL_MIN_US)
                wait = CRUST_RX_STALL_MIN_US;
            if (wait > CRUST_RX_STALL_MAX_US)
                wait = CRUST_RX_STALL_MAX_US;
            return c->last_rx_us + wait;
        }
    return UINT64_MAX;
}

/* Only one side of an idle connection needs to send keepalives: the
 * other's ACK keeps the path (and any NAT binding) open in its direction
 * and shows the sender the peer is alive, and hearing the PING shows the
 * other side the same. So an ack-eliciting packet from the peer pushes our
 * own keepalive back by an eighth more than the interval: a peer on the
 * same schedule, even somewhat late, stays the one that sends, and an idle
 * connection costs one PING and one ACK per interval instead of two of
 * each (issue 22: a node with 100,000 idle peers). Both deadlines are
 * brought forward by up to an eighth, differently at each end and for every
 * PING (keepalive_jitter): two ends that both sent (created at the same
 * moment, or after a gap) then fall out of step within a few intervals
 * instead of pinging together for ever, and the PINGs of connections
 * opened together spread out instead of leaving in bursts. The one that
 * hears stays later than the one that sends: k - jitter < k + k/8 - jitter'. */
static uint64_t keepalive_at(const crust_conn *c)
{
    uint64_t k = c->cfg.keepalive_us;
    uint64_t own = c->rec.last_ack_eliciting_sent + k - c->keepalive_jitter;
    if (!c->last_ack_eliciting_rx)
        return own;
    uint64_t heard = c->last_ack_eliciting_rx + k + k / 8 - c->keepalive_jitter;
    return own > heard ? own : heard;
}

/* When a peer that leaves message data unanswered is lost: lost_timeout_us
 * after the first such packet, but never before CRUST_LOST_MIN_PTOS probe
 * timeouts at the current estimate (a slow path gets its probes); 0 when
 * the timer is not running. Over datagrams it runs only once a round trip
 * was measured: before that the PTO is a guess from initial_rtt_us (about
 * 1 s), so only ~3 probes would fit, and a live peer on a lossy path
 * could miss them all while its connection starts (the idle timeout
 * still ends a peer that never answers). */
static uint64_t lost_deadline(const crust_conn *c)
{
    if (!c->cfg.lost_timeout_us || !c->unanswered_since ||
        (!c->rec.have_rtt && !c->cfg.stream_transport))
        return 0;
    uint64_t wait = CRUST_LOST_MIN_PTOS * crust_rec_pto(&c->rec);
    if (wait < c->cfg.lost_timeout_us)
        wait = c->cfg.lost_timeout_us;
    return c->unanswered_since + wait;
}

/* The probe timer, but for a keepalive PING that is the last packet sent
 * and alone in flight: no sooner than CRUST_KEEPALIVE_PROBE_WAIT_US (or a
 * quarter of the keepalive) after it. Its loss matters only against the
 * peer's idle timeout, half an interval away; probing it a round trip
 * later cost a node with 100,000 idle peers a probe and a timer for every
 * peer slower than that to answer (issue 22), and probes after the first
 * go at the usual pace. */
static uint64_t pto_deadline(const crust_conn *c)
{
    uint64_t t = crust_rec_timer(&c->rec);
    if (t == UINT64_MAX || c->rec.loss_time || !c->keepalive_pn1 ||
        c->rec.next_pn != c->keepalive_pn1 || c->rec.ack_eliciting_in_flight != 1)
        return t;
    uint64_t wait = CRUST_KEEPALIVE_PROBE_WAIT_US;
    if (wait > c->cfg.keepalive_us / 4)
        wait = c->cfg.keepalive_us / 4;
    uint64_t floor = c->rec.last_ack_eliciting_sent + wait;
    return t > floor ? t : floor;
}

uint64_t crust_conn_next_timeout(const crust_conn *c)
{
    if (c->state == ST_CLOSED)
        return UINT64_MAX;
    if (c->state != ST_OPEN)
        return c->drain_until;
    if (quiet(c)) /* nothing can go out: only the idle timer runs */
        return c->cfg.idle_timeout_us ? c->last_rx_us + c->cfg.idle_timeout_us : UINT64_MAX;
    /* A stream loses nothing: no loss or PTO timer. */
    uint64_t t = c->cfg.stream_transport ? UINT64_MAX : pto_deadline(c);
    if (c->ack_pending)
        t = min64(t, c->ack_immediate ? c->last_rx_us : c->ack_deadline);
    if (c->cfg.idle_timeout_us)
        t = min64(t, c->last_rx_us + c->cfg.idle_timeout_us);
    if (c->cfg.keepalive_us && !c->ping_pending)
        t = min64(t, keepalive_at(c));
    if (!c->ping_pending && !c->cfg.stream_transport)
        t = min64(t, rx_stall_deadline(c));
    if (c->pacer.wakeup_us && has_stream_data(c))
        t = min64(t, c->pacer.wakeup_us);
    if (c->pmtu.next_probe_us)
        t = min64(t, c->pmtu.next_probe_us);
    if (c->old_discard_us)
        t = min64(t, c->old_discard_us);
    if (c->unreachable_deadline)
        t = min64(t, c->unreachable_deadline);
    if (lost_deadline(c))
        t = min64(t, lost_deadline(c));
    return min64(t, stale_deadline(c));
}

/* The PTO fired: send two probes. They carry new data when there is some;
 * otherwise they resend what the oldest outstanding packet carried, or
 * just PING. */
static void on_pto(crust_conn *c)
{
    c->st.pto_count++;
    c->probes_pending = 2;
    for (unsigned p = 0; p < CRUST_NUM_PRIO; p++)
        if (c->ss[p].sent_hi < c->ss[p].end)
            return;
    const crust_sent_pkt *p = crust_rec_oldest_eliciting(&c->rec);
    if (p && p->nframes) {
        for (unsigned i = 0; i < p->nframes; i++)
            crust_send_stream_lose(&c->ss[p->frames[i].prio], p->frames[i].off,
                                   p->frames[i].len);
        return;
    }
    /* Only PINGs outstanding (a keepalive, an earlier probe): one probe.
     * The second guards data against a lost datagram doubling the next
     * wait (RFC 9002 6.2.4); a keepalive has none, and a peer slow to
     * answer would be sent two datagrams per timeout (issue 22: a node
     * with 100,000 idle peers on a loaded machine). */
    if (!has_control(c))
        c->probes_pending = 1;
    c->ping_pending = 1;
}

void crust_conn_handle_timeout(crust_conn *c, uint64_t now)
{
    if (c->state == ST_CLOSED)
        return;
    if (c->state != ST_OPEN) {
        if (now >= c->drain_until)
            c->state = ST_CLOSED;
        return;
    }
    if (c->cfg.idle_timeout_us && now >= c->last_rx_us + c->cfg.idle_timeout_us) {
        begin_close(c, now, ST_CLOSED, CRUST_CLOSE_IDLE, 0);
        return;
    }
    /* A dead peer hears nothing, so no CLOSE is sent (ST_CLOSED, as idle). */
    if (c->unreachable_deadline && now >= c->unreachable_deadline) {
        begin_close(c, now, ST_CLOSED, CRUST_CLOSE_UNREACHABLE, 0);
        return;
    }
    if (!c->cfg.stream_transport && now >= pto_deadline(c) && crust_rec_on_timeout(&c->rec, now))
        on_pto(c);
    if (lost_deadline(c) && now >= lost_deadline(c)) {
        begin_close(c, now, ST_CLOSED, CRUST_CLOSE_LOST, 0);
        return;
    }
    if (c->ack_pending && c->ack_deadline && now >= c->ack_deadline)
        c->ack_immediate = 1;
    if (c->cfg.keepalive_us && now >= keepalive_at(c))
        c->ping_pending = c->keepalive_pending = 1;
    if (!c->cfg.stream_transport && now >= rx_stall_deadline(c)) {
        c->ping_pending = 1;
        c->st.rx_stall_pings++;
    }
    if (c->pacer.wakeup_us && now >= c->pacer.wakeup_us)
        c->pacer.wakeup_us = 0;
    /* A due search restarts: from now on a probe goes when the window and
     * an RTT sample allow, which needs no timer of its own. */
    if (c->pmtu.next_probe_us && now >= c->pmtu.next_probe_us)
        c->pmtu.next_probe_us = 0;
    if (c->old_discard_us && now >= c->old_discard_us)
        discard_old_keys(c);
    drop_stale(c, now);
}

/* ---- close, paths, introspection ------------------------------------------ */

int crust_conn_close(crust_conn *c, uint64_t now_us, uint64_t code, int graceful)
{
    if (c->state != ST_OPEN)
        return CRUST_ECLOSED;
    c->close_code = code;
    if (graceful) {
        c->graceful_close = 1;
        after_send_progress(c, now_us);
        return CRUST_OK;
    }
    for (unsigned p = 0; p < CRUST_NUM_PRIO; p++) {
        crust_send_stream_free(&c->ss[p]);
        crust_send_stream_init(&c->ss[p]);
    }
    begin_close(c, now_us, ST_CLOSING, CRUST_CLOSE_LOCAL, code);
    return CRUST_OK;
}

void crust_conn_set_keepalive(crust_conn *c, uint64_t keepalive_us)
{
    if (c)
        c->cfg.keepalive_us = keepalive_us;
}

uint64_t crust_conn_keepalive(const crust_conn *c) { return c ? c->cfg.keepalive_us : 0; }

int crust_conn_path_unreachable(crust_conn *c, uint64_t now_us)
{
    if (c->state != ST_OPEN || c->unreachable_deadline)
        return 0;
    uint64_t wait = CRUST_UNREACHABLE_PTOS * crust_rec_pto(&c->rec);
    if (wait < CRUST_UNREACHABLE_FLOOR_US)
        wait = CRUST_UNREACHABLE_FLOOR_US;
    c->unreachable_deadline = now_us + wait;
    c->ping_pending = 1; /* ack-eliciting: a live peer answers it */
    c->st.unreachable_reports++;
    return 1;
}

void crust_conn_quiet_until_heard(crust_conn *c)
{
    if (c)
        c->quiet_until_heard = 1;
}

int crust_conn_probe_path(crust_conn *c, uint64_t now_us)
{
    if (c->state != ST_OPEN)
        return CRUST_ECLOSED;
    /* The challenge only has to be unpredictable to an off-path attacker
     * who cannot read our packets (they are encrypted); mix state that is
     * secret to the connection rather than needing a random source here. */
    uint64_t x = ++c->path_challenge_seq * 0x9e3779b97f4a7c15ull ^ now_us ^ c->rec.next_pn;
    for (int i = 0; i < 8; i++) {
        x ^= x >> 31;
        x *= 0xbf58476d1ce4e5b9ull;
        c->path_challenge[i] = (uint8_t)(x >> 56) ^ c->tx[c->tx_phase].iv[i];
    }
    c->path_challenge_pending = 1;
    return CRUST_OK;
}

int crust_conn_path_changed(crust_conn *c, uint64_t now_us)
{
    int rc = crust_conn_probe_path(c, now_us);
    if (rc != CRUST_OK)
        return rc;
    /* What was lost on the old path timed out there with growing backoff
     * (a rebinding outage of seconds leaves the next probe seconds away):
     * the new path starts with a fresh one, so the data goes again within
     * one PTO. The endpoint holds it to 3x what came from there until the
     * challenge is answered. */
    c->rec.pto_count = 0;
    return CRUST_OK;
}

void crust_conn_get_stats(const crust_conn *c, crust_stats *st)
{
    *st = c->st;
    st->srtt_us = c->rec.srtt;
    st->rttvar_us = c->rec.rttvar;
    st->min_rtt_us = c->rec.min_rtt == UINT64_MAX ? 0 : c->rec.min_rtt;
    st->latest_rtt_us = c->rec.latest_rtt;
    st->cwnd = c->cc->cwnd(c->cc_state);
    st->bytes_in_flight = c->rec.bytes_in_flight;
    crust_cc_env env;
    cc_env_fill(c, &env);
    st->pacing_rate = c->cc->pacing_rate(c->cc_state, &env);
    st->send_buffered = send_buffered(c);
    uint64_t r = 0;
    for (unsigned p = 0; p < CRUST_NUM_PRIO; p++)
        r += crust_recv_stream_buffered(&c->rs[p]);
    st->recv_buffered = r;
    st->recv_held = c->rx_held;
    st->mtu = c->mtu;
    st->key_phase = c->tx_phase;
    st->state = (uint32_t)c->state;
}

size_t crust_conn_memory(const crust_conn *c)
{
    size_t m = sizeof *c + crust_rec_memory(&c->rec) +
               crust_rs_memory(&c->rx_pns) + (size_t)c->evq_cap * sizeof(crust_event);
    for (unsigned p = 0; p < CRUST_NUM_PRIO; p++)
        m += crust_send_stream_memory(&c->ss[p]) + crust_recv_stream_memory(&c->rs[p]);
    return m;
}

int crust_conn_is_closed(const crust_conn *c) { return c->state == ST_CLOSED; }

void crust_conn_fail(crust_conn *c, uint64_t now_us) { protocol_error(c, now_us); }
