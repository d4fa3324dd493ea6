/*
 * crust.h - the public C API of crust's reliable-UDP engine.
 *
 * The engine is sans-IO and clock-free: it never touches a socket or reads a
 * clock. Every entry point that can depend on time takes `now_us`, a
 * monotonic time in microseconds chosen by the caller (a real clock under a
 * socket, a virtual one under crust.testing). Times must never go backwards.
 *
 * One crust_conn is one end of one connection. The caller:
 *   - feeds it every datagram addressed to it       (crust_conn_recv)
 *   - asks it for datagrams to send until it says 0  (crust_conn_poll_transmit)
 *   - drains its events                              (crust_conn_poll_event)
 *   - calls crust_conn_handle_timeout at or after crust_conn_next_timeout.
 * Over a byte stream (TCP; crust_config.stream_transport) the caller
 * instead passes what it reads to crust_conn_recv_stream and writes what
 * crust_conn_poll_stream gives: 2-byte length-prefixed packets.
 *
 * Wire format of a packet (one UDP payload):
 *
 *   byte 0         flags: 0x80 long header (handshake; never parsed here),
 *                  0x40 fixed bit (must be 1), 0x04 key phase,
 *                  0x03 packet-number length - 1
 *   bytes 1..8     destination connection id (CRUST_CID_LEN bytes)
 *   1-4 bytes      packet number, truncated (RFC 9000 section 17.1); we
 *                  send at least 2 so deep reordering still decodes
 *   rest           AEAD ciphertext of the frames, then the tag.
 *                  AAD = the header above; nonce = iv XOR packet number.
 *
 * Packet numbers are 62-bit, start at 0 and are never reused within a
 * connection and direction, so a (key, nonce) pair is never reused.
 *
 * Frames (QUIC variable-length integers, "varint"), see frame.h:
 *   PADDING, PING, ACK (with ranges and ack delay), STREAM (one ordered
 *   byte stream per priority carrying length-prefixed messages), MAX_DATA,
 *   PATH_CHALLENGE, PATH_RESPONSE, CLOSE.
 *
 * Errors are negative CRUST_E* values. No function asserts on input bytes:
 * bad datagrams are dropped and counted (crust_stats.rx_dropped_*).
 *
 * Thread safety: a crust_conn is not thread-safe; callers serialise access
 * (the Python binding holds the object and releases the GIL around calls).
 */
#ifndef CRUST_H
#define CRUST_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define CRUST_VERSION_MAJOR 0
#define CRUST_VERSION_MINOR 1

/* Connection ids have a fixed length so an endpoint can demultiplex short
 * headers without a length byte. */
#define CRUST_CID_LEN 8
/* Priority levels: 0 is the highest. */
#define CRUST_NUM_PRIO 4
#define CRUST_KEY_LEN 32
#define CRUST_IV_LEN 12
/* Tag length of ChaCha20-Poly1305, AES-256-GCM and the null AEAD; AEGIS-128L
 * has a 32-byte tag (crust_aead_tag_len). */
#define CRUST_TAG_LEN 16
#define CRUST_MAX_TAG_LEN 32
/* Smallest UDP payload every path must carry (as QUIC). */
#define CRUST_MIN_MTU 1200
/* Smallest UDP payload an IPv4 path must carry (576 - 28); the engine falls
 * back to it when full-size packets vanish (a PMTU black hole). */
#define CRUST_FLOOR_MTU 548
#define CRUST_MAX_MTU 65527
/* Largest packet the engine ever builds (probing stops here). */
#define CRUST_MAX_PACKET 1500
#define CRUST_SHORT_HEADER_MIN (1 + CRUST_CID_LEN + 1)
/* Stream transports (crust_config.stream_transport, e.g. TCP): each packet
 * travels as one frame, a 2-byte big-endian length then the packet, so a
 * packet is at most 65535 bytes. The handshake's long-header packets use
 * the same framing on the same stream. */
#define CRUST_STREAM_FRAME_HDR 2
#define CRUST_STREAM_MAX_PACKET 65535

/* ---- error codes ---------------------------------------------------- */
enum {
    CRUST_OK = 0,
    CRUST_EINVAL = -1,        /* bad argument (message says which, in docs) */
    CRUST_EWOULDBLOCK = -2,   /* send buffer full: wait for SEND_READY */
    CRUST_EMSGSIZE = -3,      /* message larger than max_message_size */
    CRUST_ECLOSED = -4,       /* connection closing or closed */
    CRUST_ENOMEM = -5,        /* allocation failed or a memory cap hit */
    CRUST_ENOKEY = -6,        /* no packet keys installed yet */
    /* crust_conn_recv results: the datagram was dropped (and counted). */
    CRUST_EDECRYPT = -10,     /* failed authentication */
    CRUST_EMALFORMED = -11,   /* header or frame did not parse */
    CRUST_EDUPLICATE = -12,   /* packet number already seen (replay) */
    CRUST_ETOOOLD = -13,      /* packet number left of the replay window */
    CRUST_ENOTOURS = -14,     /* long header or wrong connection id */
    CRUST_EPROTO = -15        /* peer broke the protocol: connection closed */
};

/* Human-readable name of an error code ("would block", ...). Never NULL. */
const char *crust_strerror(int err);

/* ---- AEAD function table -------------------------------------------- */
/*
 * Packet protection goes through this table so the core needs no crypto
 * library of its own: the Python layer fills it with pointers taken from
 * the libsodium inside PyNaCl (libsodium's combined-mode signatures).
 * seal: c = ciphertext || tag (clen = mlen + 16); c may equal m.
 * open: returns 0 on success, -1 if the tag does not verify; m may equal c.
 */
typedef int (*crust_aead_seal_fn)(unsigned char *c, unsigned long long *clen,
                                  const unsigned char *m, unsigned long long mlen,
                                  const unsigned char *ad, unsigned long long adlen,
                                  const unsigned char *nsec, const unsigned char *npub,
                                  const unsigned char *k);
typedef int (*crust_aead_open_fn)(unsigned char *m, unsigned long long *mlen,
                                  unsigned char *nsec,
                                  const unsigned char *c, unsigned long long clen,
                                  const unsigned char *ad, unsigned long long adlen,
                                  const unsigned char *npub, const unsigned char *k);

typedef enum {
    CRUST_AEAD_NULL = 0,               /* no confidentiality: tests/benchmarks */
    CRUST_AEAD_CHACHA20_POLY1305 = 1,
    CRUST_AEAD_AES256_GCM = 2,
    /* AEGIS-128L (libsodium's, 32-byte tag): the first 16 bytes of the
     * 32-byte key; nonce = the 12-byte iv XOR packet number, then 4 zero
     * bytes. About 4x AES-256-GCM's speed where the CPU has AES-NI. */
    CRUST_AEAD_AEGIS128L = 3,
    CRUST_AEAD_COUNT = 4
} crust_aead_id;

/* Register the libsodium functions for an AEAD. Call once at start-up,
 * before any connection uses that AEAD. The null AEAD is built in and
 * cannot be replaced. Returns CRUST_EINVAL for a bad id or NULL pointer. */
int crust_aead_register(crust_aead_id id, crust_aead_seal_fn seal,
                        crust_aead_open_fn open);
/* 1 when the AEAD can be used (registered, or the built-in null one). */
int crust_aead_available(crust_aead_id id);
/* Bytes the AEAD's tag adds to each packet (16, or 32 for AEGIS-128L). */
size_t crust_aead_tag_len(crust_aead_id id);
/* Packets one key generation may protect before a key update is forced,
 * whatever rekey_packets says: AES-GCM's confidentiality limit, scaled
 * down for 64 KiB stream packets (RFC 9001 6.6); unlimited (0) for the
 * others at any rate crust reaches. */
uint64_t crust_aead_packet_limit(crust_aead_id id);

/* ---- configuration ---------------------------------------------------- */
typedef enum { CRUST_CC_BBR = 0, CRUST_CC_CUBIC = 1, CRUST_CC_COUNT = 2 } crust_cc_id;

/* Tunables with their defaults (crust_config_default). Sizes in bytes,
 * times in microseconds. Each field, its default, its range and what it
 * means are in crust_config_fields.h, the one list the struct, the
 * defaults, the checks and the Python binding come from. */
#include "crust_config_fields.h"

#define CRUST_CONFIG_MEMBER(type, name, def, min, max, zero_ok) type name;
typedef struct crust_config {
    CRUST_CONFIG_FIELDS(CRUST_CONFIG_MEMBER)
} crust_config;
#undef CRUST_CONFIG_MEMBER

void crust_config_default(crust_config *cfg);
/* CRUST_OK, or CRUST_EINVAL with *field set to the offending field name. */
int crust_config_validate(const crust_config *cfg, const char **field);

/* ---- events ----------------------------------------------------------- */
typedef enum {
    CRUST_EV_NONE = 0,
    /* A whole message is ready: prio, len. Read it with
     * crust_conn_read_message before polling again; until then the same
     * event is returned. */
    CRUST_EV_MESSAGE = 1,
    /* An unsent message waited past drop_deadline_us and was discarded:
     * prio, len, msg_id (as returned by crust_conn_send). */
    CRUST_EV_MESSAGE_DROPPED = 2,
    /* The send buffer has room again after a CRUST_EWOULDBLOCK. */
    CRUST_EV_SEND_READY = 3,
    /* A PATH_CHALLENGE we sent was answered (crust_conn_probe_path). */
    CRUST_EV_PATH_VALIDATED = 4,
    /* The path MTU changed: len = new UDP payload size. */
    CRUST_EV_MTU = 5,
    /* Every message queued so far has been acknowledged. */
    CRUST_EV_ALL_ACKED = 6,
    /* The connection ended: reason (crust_close_reason), code. Final. */
    CRUST_EV_CLOSED = 7,
    /* We now send under a new key phase: prio = the new phase (slot),
     * code = its generation (1 for the first update), reason = 1 when we
     * started the update, 2 when the peer did. For stats and logs. */
    CRUST_EV_KEY_UPDATE = 8,
    /* The previous generation's keys were wiped from slot prio: install the
     * keys of generation `code` there (crust_conn_set_keys(c, prio, ...))
     * promptly. Until then we start no key update, and packets of a peer
     * that already started one are dropped (it retransmits them). */
    CRUST_EV_KEYS_NEEDED = 9,
    /* Like CRUST_EV_MESSAGE, for a message sent with CRUST_SEND_CONTROL:
     * prio, len; read it with crust_conn_read_message. */
    CRUST_EV_CONTROL = 10
} crust_event_type;

typedef enum {
    CRUST_CLOSE_LOCAL = 1,       /* crust_conn_close was called            */
    CRUST_CLOSE_REMOTE = 2,      /* the peer sent CLOSE                    */
    CRUST_CLOSE_IDLE = 3,        /* nothing heard for idle_timeout_us      */
    CRUST_CLOSE_PROTOCOL = 4,    /* the peer broke the protocol            */
    /* The path reported the peer unreachable (crust_conn_path_unreachable)
     * and the probes sent then went unanswered. */
    CRUST_CLOSE_UNREACHABLE = 5,
    /* Message data went unanswered for lost_timeout_us. */
    CRUST_CLOSE_LOST = 6
} crust_close_reason;

/* A peer is never declared lost (lost_timeout_us) sooner than this many
 * probe timeouts (RFC 9002 PTO, not backed off) after the data it left
 * unanswered. */
#define CRUST_LOST_MIN_PTOS 3
/* After crust_conn_path_unreachable, the peer has max(this many PTOs,
 * CRUST_UNREACHABLE_FLOOR_US) to answer a probe. */
#define CRUST_UNREACHABLE_PTOS 3
#define CRUST_UNREACHABLE_FLOOR_US 1000000

typedef struct crust_event {
    uint32_t type;     /* crust_event_type */
    uint32_t prio;
    uint64_t len;
    uint64_t msg_id;
    uint32_t reason;   /* crust_close_reason for CLOSED */
    uint64_t code;     /* application close code for CLOSED */
} crust_event;

/* ---- statistics --------------------------------------------------------- */
typedef struct crust_stats {
    uint64_t srtt_us, rttvar_us, min_rtt_us, latest_rtt_us;
    uint64_t cwnd, bytes_in_flight, pacing_rate;  /* bytes, bytes/s */
    uint64_t tx_packets, tx_bytes, rx_packets, rx_bytes;
    uint64_t tx_msgs, rx_msgs, tx_msg_bytes, rx_msg_bytes;
    uint64_t lost_packets, retransmitted_bytes, spurious_losses;
    uint64_t pto_count, persistent_congestion;
    uint64_t rx_dropped_decrypt, rx_dropped_malformed, rx_dropped_duplicate,
             rx_dropped_old, rx_dropped_notours;
    /* Failed authentication or parsing, but from an address other than the
     * peer's (set by the endpoint): anyone who saw the connection id can
     * send these, so they are not counted above, where they would count
     * against the peer. */
    uint64_t rx_dropped_offpath;
    uint64_t dropped_msgs;          /* stale low-priority messages */
    uint64_t key_updates;           /* send key phase switches, ours or the peer's */
    uint64_t send_buffered, recv_buffered;   /* bytes held now */
    /* Bytes of application messages the embedder took but has not given
     * back with crust_conn_release (manual credit); they count against the
     * flow-control window as recv_buffered does. */
    uint64_t recv_held;
    uint64_t send_buffer_peak, recv_buffer_peak;
    /* Stream transports: message bytes the AEAD wrote straight into the
     * message's own buffer (crust_conn_set_msg_alloc), no copy after. */
    uint64_t rx_placed_bytes;
    /* Authenticated packets that broke the protocol (a frame past the
     * flow-control window, a malformed frame, an oversized message): each
     * closes the connection with CRUST_CLOSE_PROTOCOL. A peer's CLOSE
     * saying we did is not counted here. */
    uint64_t protocol_errors;
    /* Pings sent because a message the peer started stopped arriving
     * while it had credit (a lost ack, or our address changed). */
    uint64_t rx_stall_pings;
    /* Reports that the path found the peer unreachable
     * (crust_conn_path_unreachable) that started a probe. */
    uint64_t unreachable_reports;
    uint32_t mtu;
    uint32_t key_phase;
    uint32_t cc;                    /* crust_cc_id in use */
    uint32_t state;                 /* 0 open, 1 closing, 2 draining, 3 closed */
} crust_stats;

/* ---- connections -------------------------------------------------------- */
typedef struct crust_conn crust_conn;

/* Create a connection end. local_cid is the id the peer puts in packets to
 * us, remote_cid the one we put in packets to the peer. cfg is copied;
 * NULL means defaults. Returns NULL if cfg is invalid or memory is short. */
crust_conn *crust_conn_new(const crust_config *cfg,
                           const uint8_t local_cid[CRUST_CID_LEN],
                           const uint8_t remote_cid[CRUST_CID_LEN],
                           uint64_t now_us);
void crust_conn_free(crust_conn *c);

/* Install packet keys into key-phase slot `phase` (0 or 1; the header's
 * key phase bit selects the slot). Keys come in generations: generation n
 * lives in slot n & 1. Installing into the slot we send with replaces the
 * current keys (the first call, phase 0 with generation 0, makes the
 * connection usable). Installing into the other slot provides the NEXT
 * generation, which a key update switches to; if that slot still held the
 * previous generation, those keys are dropped early. After the handshake
 * install generations 0 and 1; later ones when CRUST_EV_KEYS_NEEDED asks.
 *
 * Key updates are automatic (rekey_interval_us, rekey_packets) and follow
 * RFC 9001 section 6: we switch only when the next keys are installed and a
 * packet of the current phase was acknowledged; a packet authenticated
 * under the next keys means the peer switched, and we follow. Packet
 * numbers continue across phases, so no nonce is ever reused. */
int crust_conn_set_keys(crust_conn *c, unsigned phase, crust_aead_id aead,
                        const uint8_t tx_key[CRUST_KEY_LEN],
                        const uint8_t tx_iv[CRUST_IV_LEN],
                        const uint8_t rx_key[CRUST_KEY_LEN],
                        const uint8_t rx_iv[CRUST_IV_LEN]);
/* Start a key update now rather than when the triggers say. Returns
 * CRUST_ENOKEY unless the other slot holds the next generation's keys.
 * The old receive keys stay usable for reordered packets until 3 PTO
 * after the peer is seen sending with the new ones. */
int crust_conn_update_keys(crust_conn *c, uint64_t now_us);

/* Or'ed into crust_conn_send's prio: the message is the embedder's own
 * control traffic (the Python service's gossip, rendezvous and relay), not
 * application data. It travels, is ordered and is flow-controlled exactly
 * like a message of that priority, and arrives as CRUST_EV_CONTROL. */
#define CRUST_SEND_CONTROL 0x100u

/* Queue one message. The bytes are copied into the connection's send
 * buffer, so the caller's buffer is free on return. Returns CRUST_OK and
 * sets *msg_id (may be NULL), or CRUST_EWOULDBLOCK (buffer full: retry after
 * CRUST_EV_SEND_READY), CRUST_EMSGSIZE, CRUST_EINVAL (prio), CRUST_ECLOSED.
 * A message of any allowed size is accepted when nothing is queued, so
 * max_message_size never deadlocks against send_buffer. */
int crust_conn_send(crust_conn *c, uint64_t now_us, const uint8_t *msg,
                    size_t len, unsigned prio, uint64_t *msg_id);
/* Bytes crust_conn_send would accept right now. */
uint64_t crust_conn_send_capacity(const crust_conn *c);

/* Process one received datagram. Returns CRUST_OK, or a negative code saying
 * why the datagram was dropped (always counted; never answered). */
int crust_conn_recv(crust_conn *c, uint64_t now_us, const uint8_t *pkt,
                    size_t len);

/* Build the next datagram into out (cap >= the current MTU, at most
 * CRUST_MAX_PACKET is ever written; under stream_transport at most
 * min(cap, CRUST_STREAM_MAX_PACKET)). Returns its length, or 0 when there is
 * nothing to send now (pacing, congestion window, or nothing queued). */
size_t crust_conn_poll_transmit(crust_conn *c, uint64_t now_us, uint8_t *out,
                                size_t cap);

/* Stream transports (TCP). crust_conn_recv_stream takes bytes as they come
 * off the stream, in chunks of any size, and feeds each whole frame's
 * packet to the connection; *consumed gets the bytes of whole frames it
 * processed (the caller keeps the rest, a partial frame, and passes it
 * again with what follows). Returns:
 *   CRUST_OK        every whole frame was consumed;
 *   CRUST_MSG_READY (> 0) it stopped after a frame that completed a
 *                   message assembled in the embedder's buffer
 *                   (crust_conn_set_msg_alloc): poll the events (take the
 *                   message) and call again with the rest, so that the
 *                   next message is assembled in place too;
 *   CRUST_ENOTOURS  it stopped at a frame holding a long-header (handshake)
 *                   packet, which starts at buf + *consumed: the caller
 *                   hands it to the handshake and calls again after it;
 *   another error   the first packet that was rejected (counted in the
 *                   stats as for crust_conn_recv). A stream loses nothing,
 *                   so a rejected packet means lost data: the connection
 *                   closes with CRUST_CLOSE_PROTOCOL. Later frames are still
 *                   consumed (a closing connection ignores them).
 * CRUST_ECLOSED (connection draining or closed) is not an error here: the
 * frames are consumed and ignored. Meant for stream_transport connections;
 * without it packets above CRUST_MAX_PACKET are rejected. */
#define CRUST_MSG_READY 1
int crust_conn_recv_stream(crust_conn *c, uint64_t now_us, const uint8_t *buf,
                           size_t len, size_t *consumed);
/* Write as many framed packets as are ready now and fit into out[cap] (a
 * packet is only started with room for at least CRUST_MIN_MTU bytes of it,
 * unless out is still empty). Returns the bytes written (0: nothing to
 * send). Give cap >= CRUST_STREAM_FRAME_HDR + CRUST_STREAM_MAX_PACKET for
 * full-size packets. */
size_t crust_conn_poll_stream(crust_conn *c, uint64_t now_us, uint8_t *out,
                              size_t cap);

/* Pop the next event into *ev; returns 1, or 0 when there is none. */
int crust_conn_poll_event(crust_conn *c, crust_event *ev);

/* Copy the message announced by the last CRUST_EV_MESSAGE of priority prio
 * into buf (cap >= its len) and release it. Returns its length, or a
 * negative error (CRUST_EINVAL when no message of that priority is ready or
 * cap is too small). */
int64_t crust_conn_read_message(crust_conn *c, unsigned prio, uint8_t *buf,
                                size_t cap);

/* Back-pressure from the application (docs/design/0028-receive-back-pressure.md).
 *
 * By default a message's bytes are given back to the flow-control window as
 * soon as the embedder takes it (crust_conn_read_message/take_message).
 * With manual credit on, an application message (not a control one) stays
 * charged to the window after it was taken, until the embedder releases
 * its bytes: the embedder can then hand messages to a slow application
 * while the window -- what the peer may still send -- also bounds what the
 * embedder holds for it. The bytes of one message are its length plus the
 * length of its header (crust_conn_message_charge). */
void crust_conn_set_manual_credit(crust_conn *c, int on);
/* Give `bytes` taken under manual credit back to the window (at most what
 * is held; the rest is ignored). The window reopens, and a MAX_DATA frame
 * is queued, once half of it is free again: then it returns 1 (transmit
 * soon), else 0. */
int crust_conn_release(crust_conn *c, uint64_t bytes);
/* Window bytes an application message of `len` bytes is charged under
 * manual credit: its length, and its header (a QUIC varint of len * 2). */
static inline uint64_t crust_conn_message_charge(uint64_t len)
{
    uint64_t v = len * 2;
    return len + (v < 64 ? 1 : v < 16384 ? 2 : v < 1073741824 ? 4 : 8);
}
/* While hold is set, crust_conn_poll_event reports no CRUST_EV_MESSAGE:
 * complete application messages stay queued in the connection, compact and
 * charged to the window, so an embedder can bound how many it holds.
 * Control messages are still reported when they are at the head of their
 * stream (one behind a held message waits for it: a stream is in order). */
void crust_conn_hold_messages(crust_conn *c, int hold);

/* Large received messages can be assembled straight in memory the embedder
 * owns, saving the copy out of the receive buffer (the Python binding hands
 * the application the very bytes object the packets were written into).
 * Once the length of a message of at least min_len bytes is known, before
 * it is complete, and either half of it has arrived or its stream already
 * delivered as many bytes as are missing (a header alone commits no
 * memory: see the budget at crust_conn_memory),
 * alloc(ctx, len, &handle) is called; it returns len
 * writable bytes, or NULL to keep using the connection's own buffer. Every
 * body byte then goes there. When the message is ready (CRUST_EV_MESSAGE or
 * CRUST_EV_CONTROL), crust_conn_take_message hands the handle back; or
 * crust_conn_read_message copies it out and calls free_fn(ctx, handle), as
 * does crust_conn_free for a message never taken. Both are called from the
 * thread driving the connection, inside crust_conn_recv and friends.
 * alloc NULL turns this off (the default). */
typedef uint8_t *(*crust_msg_alloc_fn)(void *ctx, uint64_t len, void **handle);
typedef void (*crust_msg_free_fn)(void *ctx, void *handle);
void crust_conn_set_msg_alloc(crust_conn *c, crust_msg_alloc_fn alloc, crust_msg_free_fn free_fn,
                              void *ctx, uint64_t min_len);
/* If the ready message of priority prio (see crust_conn_read_message) was
 * assembled in an alloc'd buffer: consume it, set *handle (now the
 * caller's) and *len, and return 1. Otherwise 0: read it with
 * crust_conn_read_message. */
int crust_conn_take_message(crust_conn *c, unsigned prio, void **handle, uint64_t *len);

/* Earliest time at which crust_conn_handle_timeout must be called;
 * UINT64_MAX when no timer is armed. */
uint64_t crust_conn_next_timeout(const crust_conn *c);
/* Run the timers that are due at now_us (loss detection, PTO, delayed ACK,
 * keepalive, idle, close). Harmless when called early. */
void crust_conn_handle_timeout(crust_conn *c, uint64_t now_us);

/* Close. graceful=1 first delivers every queued message, then sends CLOSE;
 * graceful=0 sends CLOSE at once and discards queued data. `code` is an
 * application code the peer sees in its CLOSED event. */
int crust_conn_close(crust_conn *c, uint64_t now_us, uint64_t code,
                     int graceful);

/* The network reported the peer's address unreachable: an ICMP (or
 * ICMPv6) destination-unreachable error for a datagram we sent there, as
 * the endpoint reads from the socket's error queue (IP_RECVERR). Anyone
 * on the path, or anyone who guesses the addresses and ports, can forge
 * such an error, so it never closes the connection by itself: a PING goes
 * out at once, and only if nothing authenticated is heard from the peer
 * within max(CRUST_UNREACHABLE_PTOS PTOs, CRUST_UNREACHABLE_FLOOR_US) does
 * the connection close with CRUST_CLOSE_UNREACHABLE (a live peer answers
 * the PING in one round trip). Further reports while a probe is pending
 * change nothing, so a flood of forged errors costs one PING per round
 * trip. Returns 1 when it started probing, 0 when it ignored the report
 * (already probing, or not open). */
int crust_conn_path_unreachable(crust_conn *c, uint64_t now_us);

/* Queue a PATH_CHALLENGE; CRUST_EV_PATH_VALIDATED follows when answered.
 * The endpoint calls this after a peer's address changed. */
int crust_conn_probe_path(crust_conn *c, uint64_t now_us);
/* The endpoint saw the peer at a new address: probe it (as above) and
 * restart the loss timer's backoff, so what the old path lost goes again
 * within one PTO. */
int crust_conn_path_changed(crust_conn *c, uint64_t now_us);

/* Send nothing until the first authenticated packet from the peer arrives
 * (a CLOSE after crust_conn_close(graceful=0) still goes). For the
 * responder of a two-message handshake over datagrams: its connection
 * exists before the initiator's does, and packets that reach the initiator
 * before it has created its connection are dropped there (unknown
 * connection id) and wait for a PTO; the initiator's connection sends a
 * packet as soon as it exists, so this costs at most half a round trip. */
void crust_conn_quiet_until_heard(crust_conn *c);

/* Change the keepalive interval (crust_config.keepalive_us; 0: none) of a
 * live connection: once its path is known to cross a NAT, the binding
 * timeout there decides it (see ServiceConfig.nat_keepalive). */
void crust_conn_set_keepalive(crust_conn *c, uint64_t keepalive_us);
uint64_t crust_conn_keepalive(const crust_conn *c);

void crust_conn_get_stats(const crust_conn *c, crust_stats *st);
/* Bytes of heap the connection holds now (structs and buffers, including
 * a message being assembled in an embedder's buffer).
 *
 * Receive budget (what a peer can make a connection hold): receive memory
 * follows the bytes that arrived, never an offset or a length the peer
 * claims. Per priority stream, with H the bytes it holds (received, not yet
 * read; flow control keeps the sum over the streams <= recv_window) and R
 * the out-of-order ranges it tracks (<= CRUST_RECV_MAX_RANGES):
 *   ring of the contiguous bytes (doubling, 4 KiB at least) <= 2 H + 4 KiB
 *   the first range and chunk slots (4 of each)           <= 256 B
 *   out-of-order chunks (exact size, then doubling)       <= 2 H + R x
 *                                                           CRUST_RECV_RANGE_COST
 *   a large message's buffer, allocated once H >= len/2   <= 2 H
 *   ... or earlier, against bytes the stream delivered    <= D
 * D being the smaller of max_message_size and what that stream delivered
 * before. So a peer whose unread stream bytes (headers included) are B
 * makes a connection hold at most
 *   6 B + R x CRUST_RECV_RANGE_COST + CRUST_NUM_PRIO x (4352 + D)
 * beyond its fixed structs (R summed over the streams: <= 4096, 384 KiB),
 * and B <= recv_window. A peer that sends beyond the window is closed with
 * CRUST_CLOSE_PROTOCOL. docs/security.md, "Memory"; tests/c/test_recv_memory.c
 * and tests/adversarial/test_memory.py hold the engine to it. */
#define CRUST_RECV_MAX_RANGES 1024
/* Bound per tracked range: its range-set entry (16 B, array doubling), its
 * chunk slot (24 B, doubling) and the allocator's header (16 B). */
#define CRUST_RECV_RANGE_COST 96
size_t crust_conn_memory(const crust_conn *c);
/* 1 once CRUST_EV_CLOSED has been produced and the draining period ended:
 * the caller may free the connection. */
int crust_conn_is_closed(const crust_conn *c);

/* Extract the destination connection id of a short-header packet (for an
 * endpoint's demultiplexer). Returns 0 and fills cid, or CRUST_ENOTOURS. */
int crust_packet_cid(const uint8_t *pkt, size_t len,
                     uint8_t cid[CRUST_CID_LEN]);

#ifdef __cplusplus
}
#endif

/* Endpoints: one UDP socket, many connections (the only part with I/O). */
#include "crust_endpoint.h"

#endif /* CRUST_H */
