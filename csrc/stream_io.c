/*
 * stream_io.c - engine packets over a reliable byte stream (TCP): the
 * framing of crust_conn_recv_stream and crust_conn_poll_stream (crust.h).
 *
 * A frame is a 2-byte big-endian length, then one packet. The handshake's
 * long-header packets share the stream and the framing; they are handed
 * back to the caller, which runs the handshake. One call handles as many
 * frames as the caller's buffer holds, so the layer above is called per
 * read or write of the stream, not per packet.
 */
#include "conn.h"

#define FRAME_HDR CRUST_STREAM_FRAME_HDR
#define LONG_HEADER 0x80

/* Whether a message assembled in the embedder's buffer is complete: its
 * stream cannot start assembling the next one there until it is taken. */
static int adopted_ready(const crust_conn *c)
{
    for (unsigned p = 0; p < CRUST_NUM_PRIO; p++) {
        const crust_recv_stream *s = &c->rs[p];
        if (s->dbuf && s->contig >= s->dbody + s->dlen)
            return 1;
    }
    return 0;
}

int crust_conn_recv_stream(crust_conn *c, uint64_t now_us, const uint8_t *buf, size_t len,
                           size_t *consumed)
{
    if (!consumed)
        return CRUST_EINVAL;
    *consumed = 0;
    if (!buf && len)
        return CRUST_EINVAL;
    size_t pos = 0;
    int first_err = CRUST_OK;
    while (len - pos >= FRAME_HDR) {
        size_t n = ((size_t)buf[pos] << 8) | buf[pos + 1];
        if (len - pos - FRAME_HDR < n)
            break; /* a partial frame: the caller brings the rest later */
        const uint8_t *pkt = buf + pos + FRAME_HDR;
        if (n && (pkt[0] & LONG_HEADER)) {
            *consumed = pos; /* the caller must see this one: it wins */
            return CRUST_ENOTOURS;
        }
        int rc = crust_conn_recv(c, now_us, pkt, n);
        pos += FRAME_HDR + n;
        if (rc < 0 && rc != CRUST_ECLOSED && first_err == CRUST_OK) {
            /* Nothing is ever resent on a stream: this packet's data is
             * gone, and the connection cannot deliver a complete stream. */
            first_err = rc;
            crust_conn_fail(c, now_us);
        }
        /* (Not while messages are held: the embedder could not take it.) */
        if (first_err == CRUST_OK && len - pos >= FRAME_HDR && !c->hold_messages &&
            adopted_ready(c)) {
            /* Let the embedder take it first: the next message can then
             * be assembled in its own buffer too, instead of in the ring
             * (and copied out later). */
            *consumed = pos;
            return CRUST_MSG_READY;
        }
    }
    *consumed = pos;
    return first_err;
}

size_t crust_conn_poll_stream(crust_conn *c, uint64_t now_us, uint8_t *out, size_t cap)
{
    size_t used = 0;
    if (!out)
        return 0;
    while (cap - used > FRAME_HDR) {
        size_t room = cap - used - FRAME_HDR;
        if (room > CRUST_STREAM_MAX_PACKET)
            room = CRUST_STREAM_MAX_PACKET;
        if (used && room < CRUST_MIN_MTU)
            break; /* no runt packets at the end of a full buffer */
        size_t n = crust_conn_poll_transmit(c, now_us, out + used + FRAME_HDR, room);
        if (!n)
            break;
        out[used] = (uint8_t)(n >> 8);
        out[used + 1] = (uint8_t)n;
        used += FRAME_HDR + n;
    }
    return used;
}
