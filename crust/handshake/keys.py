"""Key derivation: packet keys of generation 0 from the finished Noise
handshake, and the one-way ratchet to each next generation."""

from __future__ import annotations

from dataclasses import dataclass, field

from crust import _core, noise


def _expand(secret: bytes, label: bytes, length: int) -> bytes:
    """HKDF-Expand (RFC 5869) with HMAC-BLAKE2b, in C (csrc/noise.c): a
    handshake makes 12 of these and 2 HMACs (generations 0 and 1, both
    directions), which in Python took about half an X25519 operation."""
    return _core.noise_hkdf_expand(secret, label, length)


def _next_secret(secret: bytes) -> bytes:
    return _expand(secret, b"crust/1 key update", noise.HASHLEN)


@dataclass(frozen=True)
class PacketKeys:
    """Packet keys of one generation, for ``Connection.set_keys(phase, aead,
    tx_key, tx_iv, rx_key, rx_iv)``.

    Generation 0 comes from the handshake; :meth:`next` gives generation
    n + 1, identically on both sides (a one-way ratchet: old keys cannot be
    recomputed from new ones). ``phase`` is the engine's key-phase slot.
    Secrets are kept out of ``repr``.
    """

    generation: int
    tx_key: bytes = field(repr=False)
    tx_iv: bytes = field(repr=False)
    rx_key: bytes = field(repr=False)
    rx_iv: bytes = field(repr=False)
    tx_secret: bytes = field(repr=False)
    rx_secret: bytes = field(repr=False)
    aead: int = _core.AEAD_CHACHA20_POLY1305

    @classmethod
    def from_secrets(
        cls,
        generation: int,
        tx_secret: bytes,
        rx_secret: bytes,
        aead: int = _core.AEAD_CHACHA20_POLY1305,
    ) -> PacketKeys:
        return cls(
            generation,
            _expand(tx_secret, b"crust/1 key", _core.KEY_LEN),
            _expand(tx_secret, b"crust/1 iv", _core.IV_LEN),
            _expand(rx_secret, b"crust/1 key", _core.KEY_LEN),
            _expand(rx_secret, b"crust/1 iv", _core.IV_LEN),
            tx_secret,
            rx_secret,
            aead,
        )

    @property
    def phase(self) -> int:
        return self.generation & 1

    def next(self) -> PacketKeys:
        return PacketKeys.from_secrets(
            self.generation + 1,
            _next_secret(self.tx_secret),
            _next_secret(self.rx_secret),
            self.aead,
        )


def _initial_keys(hs: noise.HandshakeState, initiator: bool, aead: int) -> PacketKeys:
    i2r, r2i = hs.split()
    h = hs.handshake_hash
    assert i2r.key is not None and r2i.key is not None
    # HKDF-Extract with the handshake hash as salt binds the keys to the
    # whole transcript; the labels keep the two directions apart.
    secret_i2r = _expand(noise.hmac_hash(h, i2r.key), b"crust/1 i2r", noise.HASHLEN)
    secret_r2i = _expand(noise.hmac_hash(h, r2i.key), b"crust/1 r2i", noise.HASHLEN)
    if initiator:
        return PacketKeys.from_secrets(0, secret_i2r, secret_r2i, aead)
    return PacketKeys.from_secrets(0, secret_r2i, secret_i2r, aead)
