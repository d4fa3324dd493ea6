/*
 * stream.h - the per-priority byte streams that carry messages (internal).
 *
 * Each priority level is one ordered byte stream; a message is a varint
 * header then its bytes. The header is length * 2 + control: the low bit
 * marks the service's own control messages (gossip, rendezvous, relay), so
 * they share the streams' ordering and reliability but never reach the
 * application as messages. The sender keeps its bytes in a ring indexed by
 * stream offset (offset & (cap - 1)), grown by doubling, so the hot path
 * never allocates and a retransmission is a copy from the ring. The
 * receiver's ring holds only the contiguous bytes not yet read; bytes past
 * a hole wait in chunks (ooo.h) and a large message in its own buffer, so
 * its memory follows what arrived, not the offsets a peer names
 * (CRUST_RECV_MAX_RANGES in crust.h states the budget). Both directions
 * are bounded by the send buffer and flow-control window (conn.c).
 */
#ifndef CRUST_STREAM_H
#define CRUST_STREAM_H

#include <stddef.h>
#include <stdint.h>

#include "crust.h"
#include "ooo.h"
#include "ranges.h"

/* A queued message that no byte of has been sent yet: it may still be
 * dropped when it goes stale (low priorities only). */
typedef struct crust_pending_msg {
    uint64_t id;
    uint64_t start, end;   /* stream offsets, header included */
    uint64_t queued_us;
    uint64_t body_len;
} crust_pending_msg;

typedef struct crust_send_stream {
    uint8_t *buf;
    uint64_t cap;          /* power of two, or 0 before first use */
    uint64_t base;         /* every byte below is acknowledged */
    uint64_t sent_hi;      /* every byte below was sent at least once */
    uint64_t end;          /* offset after the last queued byte */
    crust_rangeset acked;  /* acknowledged ranges above base */
    crust_rangeset lost;   /* ranges to send again, below sent_hi */
    crust_pending_msg *pend; /* ring of unsent droppable messages */
    uint32_t pend_head, pend_n, pend_cap;
} crust_send_stream;

typedef struct crust_recv_stream {
    uint8_t *buf;          /* ring of [read, contig), bodies held outside skipped */
    uint64_t cap;
    uint64_t shift;        /* ring position = offset - shift (- the body, see rpos) */
    uint64_t read;         /* next undelivered byte (a message header) */
    uint64_t contig;       /* every byte below was received */
    uint64_t hi;           /* highest received offset + 1 */
    crust_rangeset ooo;    /* received ranges above contig */
    uint64_t ooo_bytes;    /* bytes in those ranges */
    crust_ooo chunks;      /* their bytes, except those in dbuf */
    /* The message at `read`, when assembled in an embedder's buffer
     * (crust_conn_set_msg_alloc): its body, stream offsets
     * [dbody, dbody + dlen), lives in dbuf, not in the ring. */
    uint8_t *dbuf;
    void *dhandle;
    uint64_t dbody, dlen;
    uint64_t credit;       /* bytes a buffer may be allocated ahead of data */
} crust_recv_stream;

/* The embedder's allocator for large messages (crust_conn_set_msg_alloc). */
typedef struct crust_msg_alloc {
    crust_msg_alloc_fn alloc;
    crust_msg_free_fn free_fn;
    void *ctx;
    uint64_t min_len;   /* smallest message assembled outside the ring */
    uint64_t max_len;   /* max_message_size: longer ones are errors anyway */
} crust_msg_alloc;

void crust_send_stream_init(crust_send_stream *s);
void crust_send_stream_free(crust_send_stream *s);
/* Append a message (header + body); `control` (0 or 1) is the header's low
 * bit; `track` keeps a pending record so the message can be dropped while
 * unsent. CRUST_ENOMEM on allocation failure. */
int crust_send_stream_push(crust_send_stream *s, const uint8_t *msg, size_t len, int control,
                           uint64_t id, uint64_t now_us, int track);
/* Copy stream bytes [off, off+n) (all below end and >= base) into dst. */
void crust_send_stream_copy(const crust_send_stream *s, uint64_t off, size_t n, uint8_t *dst);
/* Mark [off, off+n) acknowledged; advances base. Returns bytes freed. */
uint64_t crust_send_stream_ack(crust_send_stream *s, uint64_t off, uint64_t n);
/* Mark [off, off+n) lost: what is not yet acknowledged is queued again. */
int crust_send_stream_lose(crust_send_stream *s, uint64_t off, uint64_t n);
/* Forget pending records of messages whose first byte went out. */
void crust_send_stream_sent(crust_send_stream *s);
/* The oldest still-unsent droppable message, or NULL. */
const crust_pending_msg *crust_send_stream_oldest_pending(const crust_send_stream *s);
/* Remove the oldest pending message's bytes (it must start at sent_hi).
 * Returns its body length. */
uint64_t crust_send_stream_drop_oldest(crust_send_stream *s);
static inline uint64_t crust_send_stream_buffered(const crust_send_stream *s)
{
    return s->end - s->base;
}
size_t crust_send_stream_memory(const crust_send_stream *s);

void crust_recv_stream_init(crust_recv_stream *s);
/* Frees the ring, and an embedder's message buffer through al (may be NULL
 * when none was ever set). */
void crust_recv_stream_free(crust_recv_stream *s, const crust_msg_alloc *al);
/* Store received bytes at offset off. Duplicates are harmless. With al (may
 * be NULL), a large message whose length is known moves into an embedder's
 * buffer. */
int crust_recv_stream_write(crust_recv_stream *s, uint64_t off, const uint8_t *data, size_t n,
                            const crust_msg_alloc *al);
/* Move the message at `read` into an embedder's buffer if it qualifies
 * (called after writes and after a message was consumed). */
void crust_recv_stream_adopt(crust_recv_stream *s, const crust_msg_alloc *al);
/* If a whole message is ready: returns 1 and sets *len (body), *hdr and
 * *control (the header's low bit; control may be NULL). Returns 0 if not
 * yet, CRUST_EMSGSIZE if its length exceeds max. */
int crust_recv_stream_peek(const crust_recv_stream *s, uint64_t max, uint64_t *len,
                           uint64_t *hdr, int *control);
/* Copy the ready message body into dst and consume it (header too); an
 * embedder's buffer holding it is released through al. */
void crust_recv_stream_consume(crust_recv_stream *s, uint64_t hdr, uint64_t len, uint8_t *dst,
                               const crust_msg_alloc *al);
/* If the ready message lives in an embedder's buffer: consume it, hand
 * over the handle and return 1; else 0. */
int crust_recv_stream_take(crust_recv_stream *s, uint64_t hdr, uint64_t len, void **handle);
static inline uint64_t crust_recv_stream_buffered(const crust_recv_stream *s)
{
    return s->hi - s->read;
}
size_t crust_recv_stream_memory(const crust_recv_stream *s);

#endif
