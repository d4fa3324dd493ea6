"""Engine packets a hostile peer builds by hand: it holds the connection's
keys (it is the peer), so it can seal any frames it likes. ChaCha20-Poly1305
through PyNaCl, the same construction as csrc/aead.c: nonce = iv with the
packet number XORed into its last bytes, the short header as associated
data, the tag after the ciphertext."""

from __future__ import annotations

from nacl.bindings import crypto_aead_chacha20poly1305_ietf_encrypt

_FIXED = 0x40  # csrc/conn.c FLAGS_FIXED; packet number length 4 -> low bits 3
FT_STREAM = 0x08  # csrc/frame.h, + priority
FT_PADDING = 0x00


def varint(v: int) -> bytes:
    """csrc/frame.c crust_varint_put."""
    if v < 64:
        return bytes([v])
    if v < 16384:
        return bytes([0x40 | (v >> 8), v & 0xFF])
    if v < 1 << 30:
        return (v | (0x80 << 24)).to_bytes(4, "big")
    return (v | (0xC0 << 56)).to_bytes(8, "big")


def stream(prio: int, offset: int, data: bytes) -> bytes:
    """A STREAM frame: priority, offset, length, bytes."""
    return bytes([FT_STREAM + prio]) + varint(offset) + varint(len(data)) + data


def message_header(length: int, control: bool = False) -> bytes:
    """The varint that starts a message on a stream: length * 2 + control."""
    return varint(length * 2 + int(control))


class Forger:
    """Seals frames as the peer whose transmit keys are ``key``/``iv``,
    addressed to connection id ``cid`` (the victim's local id)."""

    def __init__(self, cid: bytes, key: bytes, iv: bytes, first_pn: int = 1 << 20) -> None:
        self.cid, self.key, self.iv = cid, key, iv
        self.pn = first_pn  # far above what the honest sender used: no replay

    def packet(self, frames: bytes) -> bytes:
        pn, self.pn = self.pn, self.pn + 1
        header = bytes([_FIXED | 3]) + self.cid + (pn & 0xFFFFFFFF).to_bytes(4, "big")
        nonce = bytearray(self.iv)
        for i in range(8):
            nonce[11 - i] ^= (pn >> (8 * i)) & 0xFF
        sealed = crypto_aead_chacha20poly1305_ietf_encrypt(frames, header, bytes(nonce), self.key)
        return header + sealed
