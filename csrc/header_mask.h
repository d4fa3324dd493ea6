/*
 * header_mask.h - the masked short header: every header byte of a
 * short-header packet hidden under a mask, no byte added
 * (docs/design/0083-masked-short-header.md; issue 21).
 *
 * QUIC's header protection (RFC 9001, section 5.4), extended over the whole
 * header. A short-header packet (crust.h) is
 *
 *   byte 0        flags (pn length - 1 in its low 2 bits)
 *   bytes 1..8    destination connection id
 *   bytes 9..     packet number, 1-4 bytes
 *   then          AEAD ciphertext and tag
 *
 * The sender seals the packet as usual (AAD = the plain header) and then
 * masks it in place; the receiver unmasks it in place and then looks the
 * connection id up and opens the packet as usual.
 *
 *   sample = pkt[13 .. 29)              16 bytes of ciphertext, at the
 *                                       offset a 4-byte packet number would
 *                                       end, so the receiver finds it
 *                                       before it knows the pn length
 *   m      = ChaCha20(key, counter = sample[0..4) little-endian,
 *                          nonce   = sample[4..16))[0..13)
 *   pkt[0]          ^= m[0]            all 8 bits
 *   pkt[9 .. 9+pn)  ^= m[1 .. 1+pn)    the packet number bytes
 *   pkt[1 .. 9)     ^= m[5 .. 13)      the connection id
 *
 * m[0..5) is RFC 9001's ChaCha20 mask byte for byte; unlike QUIC, the whole
 * flags byte and the connection id are masked too.
 *
 * The key is the *receiving* endpoint's (one per listening socket, handed to
 * its peers in the handshake), not a connection's: the receiver must find
 * the connection id before it knows the connection.
 *
 * Masking is not authentication: a flipped bit in the connection id or the
 * packet number flips the same bit after unmasking, a flipped sample bit
 * scrambles all 13 bytes. The AEAD, whose AAD is the unmasked header, is
 * what refuses a changed packet (or the connection lookup, when the id
 * changed).
 *
 * Packets must be at least CRUST_HM_MIN_PACKET bytes long so the sample
 * exists: with a 16-byte tag, packet-number length + plaintext length >= 4
 * (the sender pads with PADDING frames).
 *
 * mask and unmask are inverse bijections on every byte string of at least
 * CRUST_HM_MIN_PACKET bytes (the sample is never changed, so both derive the
 * same m): a receiver whose lookup misses can mask again to get back the
 * datagram as it arrived, e.g. to hand it to the handshake.
 *
 * Constant time: the mask is one ChaCha20 block (no tables, no branches),
 * and unmask applies the packet-number mask with selects, never a branch or
 * a loop bound on the unmasked length. Its time depends on the packet's
 * length only (tests/c/ct_header_mask.c checks it under Valgrind).
 * Sans-IO, no allocation, no global state: safe from any thread.
 */
#ifndef CRUST_HEADER_MASK_H
#define CRUST_HEADER_MASK_H

#include <stddef.h>
#include <stdint.h>

#include "crust.h"

#define CRUST_HM_KEY_LEN 32
/* Where the packet number starts, and the sample. */
#define CRUST_HM_PN_OFFSET (1 + CRUST_CID_LEN)
#define CRUST_HM_SAMPLE_OFFSET (CRUST_HM_PN_OFFSET + 4)
#define CRUST_HM_SAMPLE_LEN 16
/* The shortest packet that can be masked: 29 bytes. */
#define CRUST_HM_MIN_PACKET (CRUST_HM_SAMPLE_OFFSET + CRUST_HM_SAMPLE_LEN)
/* The bytes mask and unmask may change: pkt[0 .. 13). A caller that wants
 * the datagram as it arrived after an unmask keeps a copy of these. */
#define CRUST_HM_MASKED_MAX CRUST_HM_SAMPLE_OFFSET

/* Mask a sealed short-header packet in place, under the receiving
 * endpoint's key. The packet-number length is read from the plain flags
 * byte. Returns CRUST_OK, CRUST_EMALFORMED (len < CRUST_HM_MIN_PACKET,
 * packet untouched) or CRUST_EINVAL (NULL). */
int crust_header_mask(const uint8_t key[CRUST_HM_KEY_LEN], uint8_t *pkt, size_t len);

/* Unmask a received packet in place, under this endpoint's own key.
 * Returns the packet-number length (1-4) read from the unmasked flags, and
 * copies the unmasked connection id to cid (if cid is not NULL; it is also
 * at pkt + 1); or CRUST_EMALFORMED (len < CRUST_HM_MIN_PACKET: packet and
 * cid untouched, the datagram is dropped) or CRUST_EINVAL (NULL).
 * Any bytes unmask: whether they were a short-header packet for one of our
 * connections is the lookup's and the AEAD's to say. */
int crust_header_unmask(const uint8_t key[CRUST_HM_KEY_LEN], uint8_t *pkt, size_t len,
                        uint8_t cid[CRUST_CID_LEN]);

#endif
