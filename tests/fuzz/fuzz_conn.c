/*
 * fuzz_conn.c - libFuzzer target: a whole connection driven by the input.
 *
 * The harness plays the peer. Frames it sends are sealed with the null
 * AEAD under the right header, so every packet is VALID and the fuzzer
 * reaches deep frame processing: ACKs against packets really sent, stream
 * reassembly, flow control, key updates, close. Between packets the input
 * also makes the application send and read, the clock advance, timers run
 * and the engine transmit, so state evolves as in a real connection.
 *
 * Input: byte 0 picks the configuration (see make_config), then operations,
 * each an opcode byte (low 4 bits) and its arguments; missing argument
 * bytes read as 0. After every operation fuzz_check_invariants runs, and
 * every datagram the engine sends is opened and parsed
 * (fuzz_check_output). tests/fuzz/make_seeds.py writes valid examples.
 */
#include "fuzz_common.h"

enum {
    OP_FRAMES = 0,  /* ctl, len16, bytes: raw frames in one valid packet   */
    OP_ACK = 1,     /* back, first, shape, delay: an ACK of sent packets   */
    OP_POLL = 2,    /* n: take up to n+1 datagrams from the engine         */
    OP_TIME = 3,    /* v16, shift: advance the clock, run the timers       */
    OP_EVENTS = 4,  /* drain events, read messages, install asked keys     */
    OP_SEND = 5,    /* prio, len16: the application sends a message        */
    OP_CLOSE = 6,   /* graceful, code                                      */
    OP_PROBE = 7,   /* the application probes the path                     */
    OP_UPDATE = 8,  /* the application forces a key update                 */
    OP_STREAM = 9,  /* prio, ctl, len16, back32: well-formed STREAM data   */
    OP_RESPOND = 10, /* answer the last PATH_CHALLENGE                     */
    OP_MAXDATA = 11, /* v16, shift: MAX_DATA                               */
    OP_PING = 12,    /* a PING-only packet                                 */
    OP_PEER_CLOSE = 13, /* reason, code: the peer sends CLOSE              */
    OP_GAPS = 14        /* n16: n PINGs, every other number skipped       */
};

#define HIST_CAP (1u << 18) /* stream bytes of one priority the peer keeps */

typedef struct fuzz_peer {
    uint8_t hist[CRUST_NUM_PRIO][HIST_CAP]; /* first: not cleared per input */
    crust_conn *c;
    uint64_t now;
    uint64_t pn, pn_hi;         /* next packet number; largest sent + 1 */
    uint64_t gen;               /* key generation the peer sends with */
    size_t hist_len[CRUST_NUM_PRIO];
    uint8_t challenge[8];
    int have_challenge;
    int closed_events;
    const uint8_t *in;
    size_t in_len, in_off;
} fuzz_peer;

static uint8_t get8(fuzz_peer *p) { return p->in_off < p->in_len ? p->in[p->in_off++] : 0; }
static uint16_t get16(fuzz_peer *p)
{
    uint16_t lo = get8(p);
    return (uint16_t)(lo | (uint16_t)get8(p) << 8);
}
static uint32_t get32(fuzz_peer *p)
{
    uint32_t lo = get16(p);
    return lo | (uint32_t)get16(p) << 16;
}

static crust_config make_config(uint8_t sel)
{
    crust_config cfg;
    crust_config_default(&cfg);
    if (sel & 1)
        cfg.cc = CRUST_CC_CUBIC;
    if (sel & 2)
        cfg.pacing = 0;
    if (sel & 4) {
        /* Small limits, so flow control and buffer caps are in reach. */
        cfg.max_message_size = 4096;
        cfg.recv_window = CRUST_INITIAL_MAX_DATA;
        cfg.send_buffer = 65536;
    }
    if (sel & 8)
        cfg.ack_frequency = 1;
    if (sel & 16) {
        cfg.drop_deadline_us = 100000;
        cfg.drop_min_prio = 1;
    }
    if (sel & 32) {
        cfg.rekey_packets = 16;
        cfg.rekey_interval_us = 1000000;
    } else {
        cfg.rekey_packets = 0;
        cfg.rekey_interval_us = 0;
    }
    if (sel & 64) {
        cfg.idle_timeout_us = 0;
        cfg.keepalive_us = 0;
    }
    if (sel & 128)
        cfg.initial_mtu = CRUST_FLOOR_MTU;
    if ((sel & 0x82) == 0x82) {
        /* A stream transport (TCP): no pacing and no PMTU there anyway.
         * In-order STREAM packets are then opened straight into messages
         * assembled in fuzz_alloc buffers (conn.c, open_in_place). */
        cfg.stream_transport = 1;
    }
    FUZZ_ASSERT(crust_config_validate(&cfg, NULL) == CRUST_OK);
    return cfg;
}

static int recv_ok(int rc)
{
    return rc == CRUST_OK || rc == CRUST_EDECRYPT || rc == CRUST_EDUPLICATE ||
           rc == CRUST_ETOOOLD || rc == CRUST_EPROTO || rc == CRUST_ECLOSED ||
           rc == CRUST_EMALFORMED || rc == CRUST_ENOMEM;
}

/* Seal frames into a packet and feed it to the engine. ctl bits 0-1 pick
 * the packet number (next, a replay, an older one, a jump ahead), bit 2
 * starts a key update of the peer, bit 3 uses the previous generation
 * (a packet delayed across an update). */
static void deliver(fuzz_peer *p, uint8_t ctl, const uint8_t *frames, size_t len)
{
    static uint8_t pkt[CRUST_MAX_PACKET + 64];
    uint64_t pn = p->pn;
    switch (ctl & 3) {
    case 0:
        p->pn++;
        break;
    case 1:
        pn = p->pn ? p->pn - 1 : 0;
        break;
    case 2: /* up to 10,500 back: past the replay window too */
        pn = p->pn > (uint64_t)(ctl >> 4) * 700 ? p->pn - 1 - (uint64_t)(ctl >> 4) * 700 : 0;
        break;
    default:
        p->pn += 1 + (uint64_t)(ctl >> 4) * 1000;
        pn = p->pn - 1;
        break;
    }
    if (ctl & 4)
        p->gen++;
    uint64_t gen = (ctl & 8) && p->gen ? p->gen - 1 : p->gen;
    size_t n = fuzz_seal(pkt, sizeof pkt, gen, pn, frames, len);
    if (!n)
        return;
    if (pn + 1 > p->pn_hi)
        p->pn_hi = pn + 1;
    int rc = crust_conn_recv(p->c, p->now, pkt, n);
    FUZZ_ASSERT(recv_ok(rc));
}

static void poll_transmit(fuzz_peer *p, unsigned max)
{
    static uint8_t out[CRUST_MAX_PACKET];
    for (unsigned i = 0; i < max; i++) {
        size_t n = crust_conn_poll_transmit(p->c, p->now, out, sizeof out);
        if (!n)
            return;
        fuzz_check_output(p->c, out, n, p->pn_hi, p->challenge, &p->have_challenge);
    }
}

static void drain_events(fuzz_peer *p)
{
    static uint8_t msg[(8u << 20) + 1];
    crust_event ev;
    for (int i = 0; i < 4096; i++) {
        /* The endpoint's ready list trusts crust_conn_has_event to say
         * exactly whether poll_event has something: a 1 without an event
         * would spin it, a 0 with one would strand the event. */
        int has = crust_conn_has_event(p->c);
        int got = crust_conn_poll_event(p->c, &ev);
        FUZZ_ASSERT(has == got);
        if (!got)
            break;
        switch (ev.type) {
        case CRUST_EV_MESSAGE:
        case CRUST_EV_CONTROL: {
            FUZZ_ASSERT(ev.prio < CRUST_NUM_PRIO && ev.len <= p->c->cfg.max_message_size);
            /* Messages assembled in an embedder's buffer (fuzz_alloc) are
             * taken half the time and read (copied, released) otherwise. */
            void *handle;
            uint64_t taken;
            if ((ev.len & 1) && crust_conn_take_message(p->c, ev.prio, &handle, &taken)) {
                FUZZ_ASSERT(taken == ev.len);
                fuzz_free(NULL, handle);
            } else {
                FUZZ_ASSERT(crust_conn_read_message(p->c, ev.prio, msg, sizeof msg) ==
                            (int64_t)ev.len);
            }
            break;
        }
        case CRUST_EV_KEYS_NEEDED:
            FUZZ_ASSERT(ev.prio == (ev.code & 1) && ev.code == p->c->key_gen + 1);
            fuzz_install(p->c, ev.code);
            break;
        case CRUST_EV_KEY_UPDATE:
            FUZZ_ASSERT(ev.prio == (ev.code & 1) && (ev.reason == 1 || ev.reason == 2));
            break;
        case CRUST_EV_CLOSED:
            FUZZ_ASSERT(++p->closed_events == 1);
            break;
        default:
            FUZZ_ASSERT(ev.type >= CRUST_EV_MESSAGE_DROPPED && ev.type <= CRUST_EV_CONTROL);
            break;
        }
    }
}

/* ACK the engine's packets: the largest is `back` below the newest, the
 * first range `first` long (255: everything down to 0), then up to three
 * more ranges whose gaps and lengths come from the bits of `shape`. */
static void op_ack(fuzz_peer *p)
{
    uint8_t back = get8(p), first_len = get8(p), shape = get8(p), delay = get8(p);
    uint64_t next = p->c->rec.next_pn;
    if (next == 0 || back >= next)
        return;
    uint64_t largest = next - 1 - back;
    uint64_t first = first_len == 255 || first_len > largest ? largest : first_len;
    uint64_t lo = largest - first, gaps[3], lens[3];
    unsigned count = 0;
    for (unsigned k = 0; k < (shape & 3u) && k < 3; k++) {
        uint64_t gap = (shape >> (2 + 2 * k)) & 1, rlen = (uint64_t)((shape >> (3 + 2 * k)) & 1) * 5;
        if (lo < gap + 2 + rlen)
            break;
        gaps[count] = gap;
        lens[count] = rlen;
        lo = lo - gap - 2 - rlen;
        count++;
    }
    uint8_t f[64];
    size_t n = 0;
    f[n++] = CRUST_FT_ACK;
    n += crust_varint_put(f + n, largest);
    n += crust_varint_put(f + n, (uint64_t)delay << 4);
    n += crust_varint_put(f + n, count);
    n += crust_varint_put(f + n, first);
    for (unsigned k = 0; k < count; k++) {
        n += crust_varint_put(f + n, gaps[k]);
        n += crust_varint_put(f + n, lens[k]);
    }
    deliver(p, 0, f, n);
}

/* Append a message to the peer's stream of prio (when ctl bit 0) and send
 * the stream bytes from `back` bytes before its end: holes, overlaps and
 * retransmissions all arise, with consistent bytes. One frame of up to
 * 1300 bytes, or with ctl bit 6 as many packets as the range needs (so
 * whole windows of data arrive). ctl bits 2-5 go to deliver(). */
static void op_stream(fuzz_peer *p)
{
    unsigned prio = get8(p) % CRUST_NUM_PRIO;
    uint8_t ctl = get8(p);
    uint16_t mlen = get16(p) % 16384;
    uint32_t back = get32(p);
    uint8_t *h = p->hist[prio];
    size_t *hl = &p->hist_len[prio];
    if ((ctl & 1) && *hl + 8 + mlen <= HIST_CAP) {
        *hl += crust_varint_put(h + *hl, mlen);
        for (unsigned i = 0; i < mlen; i++)
            h[(*hl)++] = (uint8_t)(i * 31u + prio);
    }
    size_t from = back > *hl ? 0 : *hl - back;
    size_t to = *hl;
    if (ctl & 2)
        to = from + (to - from) / 2; /* leave a hole after this */
    do {
        size_t end = to - from > 1300 ? from + 1300 : to;
        uint8_t f[1400];
        size_t n = crust_frame_put_stream_header(f, sizeof f, prio, from, end - from);
        memcpy(f + n, h + from, end - from);
        deliver(p, (uint8_t)((ctl >> 2) & 0x0f), f, n + (end - from));
        from = end;
    } while ((ctl & 0x40) && from < to);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static fuzz_peer peer;
    fuzz_peer *p = &peer;
    /* Bytes of hist are always written before they are read: clearing the
     * rest is enough, and much cheaper per input. */
    memset((uint8_t *)p + sizeof p->hist, 0, sizeof *p - sizeof p->hist);
    p->in = data;
    p->in_len = size;
    p->now = 1000;
    crust_config cfg = make_config(get8(p));
    p->c = fuzz_new_conn(&cfg, p->now);
    if (p->c)
        crust_conn_set_msg_alloc(p->c, fuzz_alloc, fuzz_free, NULL, 64);
    static uint8_t buf[(8u << 20) + 1];
    uint8_t f[1400];
    size_t n;
    while (p->in_off < p->in_len) {
        uint8_t op = get8(p);
        switch (op & 0x0f) {
        case OP_FRAMES: {
            uint8_t ctl = get8(p);
            size_t len = get16(p) % 1400;
            if (len > p->in_len - p->in_off)
                len = p->in_len - p->in_off;
            memcpy(f, p->in + p->in_off, len);
            p->in_off += len;
            deliver(p, ctl, f, len);
            break;
        }
        case OP_ACK:
            op_ack(p);
            break;
        case OP_POLL:
            poll_transmit(p, (unsigned)get8(p) + 1);
            break;
        case OP_TIME: {
            uint16_t v = get16(p);
            unsigned shift = get8(p) % 16;
            uint64_t t = crust_conn_next_timeout(p->c);
            if (v == 0 && t != UINT64_MAX && t > p->now)
                p->now = t; /* jump to the next timer */
            else
                p->now += (uint64_t)v << shift;
            crust_conn_handle_timeout(p->c, p->now);
            break;
        }
        case OP_EVENTS:
            drain_events(p);
            break;
        case OP_SEND: {
            uint8_t pb = get8(p);
            unsigned prio = pb & 0x80 ? CRUST_NUM_PRIO : pb % CRUST_NUM_PRIO;
            size_t len = get16(p);
            if (pb & 0x40)
                len *= 16; /* up to 1 MiB: past the small max_message_size */
            if (pb & 0x20)
                len = (size_t)p->c->cfg.max_message_size + (pb & 1);
            /* The bytes of a refused message are never read. */
            if (len <= p->c->cfg.max_message_size)
                memset(buf, pb, len);
            uint64_t id = 0;
            uint64_t room = crust_conn_send_capacity(p->c);
            int rc = crust_conn_send(p->c, p->now, buf, len, prio, &id);
            FUZZ_ASSERT(rc == CRUST_OK || rc == CRUST_EWOULDBLOCK || rc == CRUST_EMSGSIZE ||
                        rc == CRUST_EINVAL || rc == CRUST_ECLOSED || rc == CRUST_ENOMEM);
            if (rc == CRUST_EWOULDBLOCK)
                FUZZ_ASSERT(room < len + 8); /* capacity tells the truth */
            if (prio >= CRUST_NUM_PRIO)
                FUZZ_ASSERT(rc == CRUST_EINVAL);
            break;
        }
        case OP_CLOSE: {
            uint8_t g = get8(p);
            int rc = crust_conn_close(p->c, p->now, get8(p), g & 1);
            FUZZ_ASSERT(rc == CRUST_OK || rc == CRUST_ECLOSED);
            break;
        }
        case OP_PROBE:
            crust_conn_probe_path(p->c, p->now);
            break;
        case OP_UPDATE: {
            int rc = crust_conn_update_keys(p->c, p->now);
            FUZZ_ASSERT(rc == CRUST_OK || rc == CRUST_ENOKEY);
            break;
        }
        case OP_STREAM:
            op_stream(p);
            break;
        case OP_RESPOND:
            n = crust_frame_put_path(f, sizeof f, CRUST_FT_PATH_RESPONSE, p->challenge);
            deliver(p, 0, f, n);
            break;
        case OP_MAXDATA: {
            uint16_t v = get16(p);
            n = crust_frame_put_max_data(f, sizeof f, (uint64_t)v << (get8(p) % 48));
            deliver(p, 0, f, n);
            break;
        }
        case OP_PING:
            f[0] = CRUST_FT_PING;
            deliver(p, get8(p), f, 1);
            break;
        case OP_GAPS: {
            /* Many holes in the received numbers: ACKs with more ranges
             * than fit, and the cap on remembered ranges. */
            unsigned count = get16(p) % 600;
            f[0] = CRUST_FT_PING;
            for (unsigned i = 0; i < count; i++) {
                p->pn++;
                deliver(p, 0, f, 1);
            }
            break;
        }
        case OP_PEER_CLOSE: {
            uint8_t reason = get8(p);
            n = crust_frame_put_close(f, sizeof f, reason, get8(p));
            deliver(p, 0, f, n);
            break;
        }
        default:
            break;
        }
        fuzz_check_invariants(p->c);
    }
    /* Whatever happened, the connection can still be driven to the end. */
    drain_events(p);
    poll_transmit(p, 64);
    fuzz_check_invariants(p->c);
    if (getenv("FUZZ_VERBOSE")) {
        /* For checking what a seed reaches: run the binary on it. */
        crust_stats st;
        crust_conn_get_stats(p->c, &st);
        fprintf(stderr,
                "tx %llu rx %llu pkts, rx %llu msgs, lost %llu, key updates %llu, state %u, "
                "decrypt drops %llu\n",
                (unsigned long long)st.tx_packets, (unsigned long long)st.rx_packets,
                (unsigned long long)st.rx_msgs, (unsigned long long)st.lost_packets,
                (unsigned long long)st.key_updates, st.state,
                (unsigned long long)st.rx_dropped_decrypt);
    }
    crust_conn_free(p->c);
    FUZZ_ASSERT(fuzz_live_buffers == 0); /* every buffer taken or released once */
    return 0;
}
