"""Cipher choice: the packet AEADs crust knows, which this machine runs,
and the one two peers agree on (the initiator's first that both accept)."""

from __future__ import annotations

from typing import Protocol

from crust import _core, _sodium


class _CipherList(Protocol):
    """What :func:`choose_aead` reads of a peer's TransportParams (a
    protocol, so this module needs nothing from the payload's)."""

    @property
    def aeads(self) -> tuple[int, ...]: ...


#: Packet ciphers by name, in the order crust prefers them: AEGIS-128L and
#: AES-256-GCM (both only with AES-NI, see crust._sodium) are far faster
#: than ChaCha20-Poly1305 there; ChaCha20-Poly1305 is everywhere.
CIPHERS: dict[str, int] = {
    "aegis128l": _core.AEAD_AEGIS128L,
    "aes256gcm": _core.AEAD_AES256_GCM,
    "chacha20poly1305": _core.AEAD_CHACHA20_POLY1305,
}
#: What a peer that announces no cipher list speaks.
_LEGACY_AEADS = (_core.AEAD_CHACHA20_POLY1305,)


def cipher_names(aeads: tuple[int, ...]) -> str:
    """``aeads`` for people: names where known, ids otherwise."""
    names = {aead: name for name, aead in CIPHERS.items()}
    return ", ".join(names.get(a, f"#{a}") for a in aeads)


def default_aeads() -> tuple[int, ...]:
    """The ciphers this machine can run, most preferred first."""
    return tuple(a for a in CIPHERS.values() if a in _sodium.registered)


def aeads_from_names(names: tuple[str, ...] | list[str]) -> tuple[int, ...]:
    """Cipher ids for ``names`` (keys of :data:`CIPHERS`), in that order.
    ValueError names an unknown or (on this machine) unavailable one."""
    out: list[int] = []
    for name in names:
        aead = CIPHERS.get(name)
        if aead is None:
            raise ValueError(f"unknown cipher {name!r}; choose from {', '.join(CIPHERS)}")
        if aead not in _sodium.registered:
            raise ValueError(f"cipher {name!r} is not available on this machine (no AES-NI?)")
        if aead not in out:
            out.append(aead)
    if not out:
        raise ValueError("at least one cipher is needed")
    return tuple(out)


def choose_aead(initiator: _CipherList, responder: _CipherList) -> int | None:
    """The cipher both sides use: the initiator's most preferred one that
    the responder accepts and this machine runs (each side computes the
    same answer from the same two lists). None when they share none."""
    accepted = set(responder.aeads)
    for aead in initiator.aeads:
        if aead in accepted and _core.aead_available(aead):
            return aead
    return None
