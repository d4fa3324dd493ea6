"""The masked short header (csrc/header_mask.c through _core.header_mask
and _core.header_unmask, docs/design/0083) against an independent
reference built on OpenSSL's ChaCha20 (the cryptography package, which
takes RFC 9001's 16-byte sample as its counter-and-nonce input), with
packets sealed and opened by libsodium's ChaCha20-Poly1305 the way crust
seals them (AAD = the plain header). tests/c/test_header_mask.c holds the
RFC vectors, the bijection, the bit flips and the too-short packets under
the sanitizers; this file adds the real AEAD and the distribution of the
headers of real sealed packets.

Packets come from a seeded generator, so a run is reproducible; each
distribution bound fails a uniform source with probability about 1e-6.
"""

from __future__ import annotations

import itertools
import os
import random

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from distinguishers import bit_bound, bit_frequencies, byte_chi2, chi2_bound
from nacl.bindings import (
    crypto_aead_chacha20poly1305_ietf_decrypt,
    crypto_aead_chacha20poly1305_ietf_encrypt,
)
from nacl.exceptions import CryptoError

from crust import _core

CID_LEN = _core.CID_LEN
PN_OFFSET = _core.HM_PN_OFFSET
SAMPLE = _core.HM_SAMPLE_OFFSET
MIN_PACKET = _core.HM_MIN_PACKET
HEADER_MAX = _core.HM_MASKED_MAX

#: RFC 9001 appendix A.5 (ChaCha20-Poly1305 short header).
A5_KEY = bytes.fromhex("c6d98ff3441c3fe1b2182094f69caa2ed4b716b65488960a7a984979fb23e1c8")
A5_NONCE = bytes.fromhex("e0459b3474bdd0e46d417eb0")
A5_HP = bytes.fromhex("25a282b9e82f06f21f488917a4fc8f1b73573685608597d0efcb076b0ab7a7a4")
A5_SAMPLE = bytes.fromhex("5e5cd55c41f69080575d7999c25a5bfb")
#: RFC 9000's example connection id, standing in the adapted packet.
A5_CID = bytes.fromhex("8394c8f03e515708")
#: A5_CID masked: m[5..13) of OpenSSL's block for A5_HP and A5_SAMPLE; the
#: same constant is in tests/c/test_header_mask.c.
A5_CID_MASKED = bytes.fromhex("673baa7e8a640303")


def reference_mask(key: bytes, sample: bytes) -> bytes:
    """The 13 mask bytes: RFC 9001 5.4.4's ChaCha20 block (sample[0:4] the
    little-endian block counter, sample[4:16] the nonce), on OpenSSL."""
    return Cipher(algorithms.ChaCha20(key, sample), mode=None).encryptor().update(bytes(13))


def reference_apply(key: bytes, packet: bytes, *, unmask: bool) -> bytes:
    m = reference_mask(key, packet[SAMPLE : SAMPLE + 16])
    out = bytearray(packet)
    flags = out[0] ^ m[0] if unmask else out[0]
    pnlen = (flags & 3) + 1
    out[0] ^= m[0]
    for i in range(CID_LEN):
        out[1 + i] ^= m[5 + i]
    for j in range(pnlen):
        out[PN_OFFSET + j] ^= m[1 + j]
    return bytes(out)


class Sealer:
    """One direction of a connection, sealed as crust seals it: header =
    flags | id | truncated pn, AAD = that header, nonce = iv XOR pn."""

    def __init__(self, rng: random.Random, cid: bytes | None = None) -> None:
        self.key = rng.randbytes(32)
        self.iv = rng.randbytes(12)
        self.cid = cid if cid is not None else rng.randbytes(CID_LEN)

    def nonce(self, pn: int) -> bytes:
        return bytes(a ^ b for a, b in zip(self.iv, pn.to_bytes(12, "big"), strict=True))

    def seal(self, pn: int, pnlen: int, plaintext: bytes, key_phase: int = 0) -> bytes:
        header = (
            bytes([0x40 | key_phase << 2 | (pnlen - 1)])
            + self.cid
            + (pn % (1 << (8 * pnlen))).to_bytes(pnlen, "big")
        )
        return header + crypto_aead_chacha20poly1305_ietf_encrypt(
            plaintext, header, self.nonce(pn), self.key
        )

    def open(self, packet: bytes, pn: int) -> bytes | None:
        """The plaintext, or None when the AEAD refuses (pn as the receiver
        decoded it: the unmasked one)."""
        pnlen = (packet[0] & 3) + 1
        header = packet[: PN_OFFSET + pnlen]
        try:
            return crypto_aead_chacha20poly1305_ietf_decrypt(
                packet[len(header) :], header, self.nonce(pn), self.key
            )
        except CryptoError:
            return None


def test_rfc9001_a5() -> None:
    # The RFC's own steps first, so the vector is read right: libsodium's
    # AEAD gives its ciphertext, OpenSSL its mask.
    sealed = crypto_aead_chacha20poly1305_ietf_encrypt(
        b"\x01", bytes.fromhex("4200bff4"), A5_NONCE, A5_KEY
    )
    assert sealed.hex() == "655e5cd55c41f69080575d7999c25a5bfb"
    assert sealed[1:] == A5_SAMPLE
    m = reference_mask(A5_HP, A5_SAMPLE)
    assert m[:5].hex() == "aefefe7d03"
    assert m[5:13] == bytes(a ^ b for a, b in zip(A5_CID, A5_CID_MASKED, strict=True))
    # Adapted to our header (see tests/c/test_header_mask.c): the id between
    # flags and pn moves the sample from offset 5 to 13.
    plain = b"\x42" + A5_CID + bytes.fromhex("00bff4") + sealed
    masked = _core.header_mask(A5_HP, plain)
    assert masked == b"\xec" + A5_CID_MASKED + bytes.fromhex("fe4189") + sealed
    assert _core.header_unmask(A5_HP, masked) == (plain, A5_CID, 3)


def test_matches_openssl_reference() -> None:
    """Random keys and arbitrary bytes of every length from the minimum to
    a full packet, both directions, against the reference."""
    rng = random.Random(83)
    for n in range(3000):
        key = rng.randbytes(32)
        packet = rng.randbytes(MIN_PACKET + n % 1472)
        masked = _core.header_mask(key, packet)
        assert masked == reference_apply(key, packet, unmask=False)
        assert len(masked) == len(packet)
        got = _core.header_unmask(key, packet)
        assert got is not None
        unmasked, cid, pnlen = got
        assert unmasked == reference_apply(key, packet, unmask=True)
        assert cid == unmasked[1 : 1 + CID_LEN]
        assert pnlen == (unmasked[0] & 3) + 1


@pytest.mark.parametrize("pnlen", [1, 2, 3, 4])
def test_sealed_packets_round_trip_and_open(pnlen: int) -> None:
    """Sealed with the real AEAD, masked under the receiver's key, unmasked
    and opened: every packet-number length, plaintexts from the shortest
    the sample allows (pnlen + plaintext = 4, a 29-byte packet) up."""
    rng = random.Random(pnlen)
    hp = rng.randbytes(32)
    conn = Sealer(rng)
    shortest = max(1, 4 - pnlen)
    for pn in range(1000, 1400):
        plaintext = rng.randbytes(shortest + pn % 97)
        sealed = conn.seal(pn, pnlen, plaintext, key_phase=pn & 1)
        masked = _core.header_mask(hp, sealed)
        assert masked[HEADER_MAX:] == sealed[HEADER_MAX:]
        got = _core.header_unmask(hp, masked)
        assert got == (sealed, conn.cid, pnlen)
        assert conn.open(got[0], pn) == plaintext
    # 29 bytes when pnlen + plaintext = 4; with a 4-byte pn the one byte of
    # plaintext crust always sends makes 30.
    assert len(conn.seal(1, pnlen, bytes(shortest))) == max(MIN_PACKET, PN_OFFSET + pnlen + 17)


def test_short_packets_refused() -> None:
    """A sealed packet one byte short of the sample (pnlen + plaintext = 3)
    cannot be masked, and nothing under 29 bytes unmasks: the sender pads."""
    rng = random.Random(5)
    hp = rng.randbytes(32)
    conn = Sealer(rng)
    for pnlen in (1, 2, 3):
        short = conn.seal(7, pnlen, bytes(3 - pnlen) if pnlen < 3 else b"")
        assert len(short) == MIN_PACKET - 1
        with pytest.raises(ValueError, match="masking needs 29"):
            _core.header_mask(hp, short)
    for n in range(MIN_PACKET):
        assert _core.header_unmask(hp, rng.randbytes(n)) is None
    with pytest.raises(ValueError, match="32 bytes"):
        _core.header_mask(hp[:16], bytes(64))


def test_flipped_bits_never_reach_the_connection() -> None:
    """Every bit of every byte of masked sealed packets flipped: after
    unmasking, either the id is not the connection's (the lookup misses)
    or the AEAD refuses the packet - never both pass. Which one catches it
    is as the design says: id bits and sample bits change the id, flag and
    pn bits (and ciphertext bits) leave it and fail the AEAD."""
    rng = random.Random(21)
    hp = rng.randbytes(32)
    conn = Sealer(rng)
    caught_by = {"lookup": 0, "aead": 0}
    for pnlen in (1, 2, 4):
        pn = 0x5A  # fits every truncation, so the receiver decodes it whole
        sealed = conn.seal(pn, pnlen, rng.randbytes(20))
        masked = _core.header_mask(hp, sealed)
        got = _core.header_unmask(hp, masked)
        assert got is not None and conn.open(got[0], pn) is not None
        for bit in range(8 * len(masked)):
            at = bit // 8
            flipped = bytearray(masked)
            flipped[at] ^= 1 << (bit % 8)
            got = _core.header_unmask(hp, bytes(flipped))
            assert got is not None
            unmasked, cid, got_pnlen = got
            if cid != conn.cid:
                caught_by["lookup"] += 1
                assert 1 <= at < PN_OFFSET or SAMPLE <= at < MIN_PACKET
                continue
            rx_pn = int.from_bytes(unmasked[PN_OFFSET : PN_OFFSET + got_pnlen], "big")
            assert conn.open(unmasked, rx_pn) is None, f"bit {bit} opened"
            caught_by["aead"] += 1
    assert caught_by["lookup"] == 3 * (8 * CID_LEN + 8 * 16)
    assert caught_by["aead"] > 0


def _one_connection(n: int, *, masked: bool) -> list[bytes]:
    """The first 13 bytes of n consecutive packets of one connection (2-byte
    packet numbers, as crust sends them; real sealed ACK-sized payloads)."""
    rng = random.Random(2026)
    hp = rng.randbytes(32)
    conn = Sealer(rng)
    out = []
    for pn in range(5000, 5000 + n):
        packet = conn.seal(pn, 2, rng.randbytes(8))
        if masked:
            packet = _core.header_mask(hp, packet)
        out.append(packet[:HEADER_MAX])
    return out


def _xor_consecutive(headers: list[bytes]) -> list[bytes]:
    return [bytes(a ^ b for a, b in zip(x, y, strict=True)) for x, y in itertools.pairwise(headers)]


HEADERS = 10_000
#: The per-position chi-square bound over 13 positions: ~1e-6 overall.
CHI2_BOUND_13 = chi2_bound(255, 1e-6 / HEADER_MAX)


def _distinguishers(headers: list[bytes]) -> dict[str, float]:
    return {
        "bit": max(abs(f - 0.5) for f in bit_frequencies(headers)),
        "xor_bit": max(abs(f - 0.5) for f in bit_frequencies(_xor_consecutive(headers))),
        "chi2": max(byte_chi2(headers, i) for i in range(HEADER_MAX)),
        "distinct_ids": len({h[1 : 1 + CID_LEN] for h in headers}),
    }


def test_masked_headers_look_uniform() -> None:
    """One connection's consecutive packets: masked, every header bit is 1
    half the time, alone and XORed with the previous packet's (what an
    incrementing packet number fails), every byte position is uniform, no
    id repeats; os.urandom passes the same, the plain headers fail them."""
    bound = bit_bound(HEADERS)
    masked = _distinguishers(_one_connection(HEADERS, masked=True))
    plain = _distinguishers(_one_connection(HEADERS, masked=False))
    urandom = _distinguishers([os.urandom(HEADER_MAX) for _ in range(HEADERS)])
    print(f"bounds: bit {bound:.4f}, chi2 {CHI2_BOUND_13:.0f}")
    for name, d in (("masked", masked), ("plain", plain), ("urandom", urandom)):
        print(name, {k: round(v, 4) for k, v in d.items()})
    for d in (masked, urandom):
        assert d["bit"] < bound
        assert d["xor_bit"] < bound
        assert d["chi2"] < CHI2_BOUND_13
        assert d["distinct_ids"] == HEADERS
    assert plain["bit"] > bound
    assert plain["xor_bit"] > bound
    assert plain["chi2"] > CHI2_BOUND_13
    assert plain["distinct_ids"] == 1
