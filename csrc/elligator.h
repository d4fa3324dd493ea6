/*
 * elligator.h - Elligator 2 representatives for Curve25519 public keys.
 *
 * One concept: encoding an X25519 public key (a Montgomery u-coordinate)
 * as a 32-byte "representative" that cannot be told from 32 uniformly
 * random bytes, and decoding it back, so that a masked handshake can send
 * ephemeral keys that do not look like curve points
 * (docs/design/0081-elligator2-representatives.md).
 *
 * - crust_elligator_map: representative -> u. The map of Bernstein,
 *   Hamburg, Krasnova and Lange ("Elligator: elliptic-curve points
 *   indistinguishable from uniform random strings", 2013) with the
 *   non-square 2, exactly RFC 9380's map_to_curve_elligator2 for
 *   curve25519 on u-coordinates (no hashing). Every 32-byte string is
 *   accepted: the top two bits are padding and ignored, and since only r^2
 *   enters the map the 254 bits left always make a field element.
 * - crust_elligator_rev: u -> representative, the inverse map. About half
 *   the points have none (CRUST_ELLIGATOR_ENOREP). Compatible with
 *   Monocypher's crypto_elligator_rev: the tweak's bit 0 picks which of the
 *   point's two representatives (one per sign of v; u alone does not fix
 *   it), its bits 6 and 7 become the representative's top two bits.
 * - crust_elligator_key_pair: a key pair whose representative is uniform.
 *   X25519 public keys made from clamped scalars all lie in the
 *   prime-order subgroup, and the map's image of a random string almost
 *   never does (1 in 8): an observer who decodes representatives and tests
 *   subgroup membership tells them apart. So the public key is "dirty":
 *   the clean point plus one of the 8 low-order points, chosen by the
 *   private key's low 3 bits (which X25519's clamping discards). X25519
 *   with the same private key against the dirty key gives the same shared
 *   secret as against the clean one, since the clamped scalar is a
 *   multiple of 8 and clears the low-order part.
 *
 * Sans-IO: no randomness here. The caller supplies the private key and
 * the tweak (fresh random bytes for each attempt) and, when a key has no
 * representative, draws another private key and calls again: on average
 * two attempts.
 *
 * Constant time: the maps and the key generation run without branches or
 * table indexes on secret values (the low-order point is selected by
 * scanning all of them). What they return - whether a point has a
 * representative - is not secret: a key without one is thrown away.
 *
 * libsodium is not linked: key generation takes crypto_scalarmult_base (or
 * anything with its signature and meaning) as a function pointer, as
 * noise.h's table does (crust/_sodium.py hands over PyNaCl's).
 */
#ifndef CRUST_ELLIGATOR_H
#define CRUST_ELLIGATOR_H

#include <stdint.h>

#define CRUST_ELLIGATOR_BYTES 32

#define CRUST_ELLIGATOR_OK 0
#define CRUST_ELLIGATOR_ENOREP (-1)  /* the point has no representative: draw another key */
#define CRUST_ELLIGATOR_EINVAL (-2)  /* a NULL function pointer */
#define CRUST_ELLIGATOR_ESODIUM (-3) /* scalarmult_base failed or gave the identity */

/* X25519 with the base point: libsodium's crypto_scalarmult_base, which
 * clamps the private key itself. Returns 0 on success. */
typedef int (*crust_elligator_scalarmult_base_fn)(unsigned char *q, const unsigned char *n);

/* representative -> u (canonical, < p). Never fails; bits 254 and 255 of
 * the input are ignored. */
void crust_elligator_map(uint8_t u[CRUST_ELLIGATOR_BYTES],
                         const uint8_t representative[CRUST_ELLIGATOR_BYTES]);

/* u -> representative: r in [0, (p-1)/2] (so bits 254 and 255 are free)
 * with r^2 = -u/(2(u+A)) when tweak bit 0 is 0, r^2 = -(u+A)/(2u) when it
 * is 1; then bits 6 and 7 of tweak are copied into bits 254 and 255. The
 * other tweak bits are ignored. CRUST_ELLIGATOR_ENOREP (representative
 * zeroed) when -2u(u+A) is not a square or u = -A. u is read as X25519
 * reads it (bit 255 ignored, values >= p reduced) and should be on the
 * curve: a u of the twist gets a representative that maps elsewhere. */
int crust_elligator_rev(uint8_t representative[CRUST_ELLIGATOR_BYTES],
                        const uint8_t u[CRUST_ELLIGATOR_BYTES], uint8_t tweak);

/* The dirty public key of an X25519 private key: u([clamp(priv)]B + T),
 * T the low-order point numbered priv[0] & 7 (0 = the identity, so 1 key
 * in 8 is the clean one). Deterministic in priv. */
int crust_elligator_public_key(uint8_t public_key[CRUST_ELLIGATOR_BYTES],
                               const uint8_t private_key[CRUST_ELLIGATOR_BYTES],
                               crust_elligator_scalarmult_base_fn scalarmult_base);

/* crust_elligator_public_key, then crust_elligator_rev of it with tweak.
 * CRUST_ELLIGATOR_ENOREP (both outputs zeroed) when that key has no
 * representative: draw a new private key (and tweak) and call again. */
int crust_elligator_key_pair(uint8_t representative[CRUST_ELLIGATOR_BYTES],
                             uint8_t public_key[CRUST_ELLIGATOR_BYTES],
                             const uint8_t private_key[CRUST_ELLIGATOR_BYTES], uint8_t tweak,
                             crust_elligator_scalarmult_base_fn scalarmult_base);

#endif
