"""A completed handshake as either side sees it, with its packet keys."""

from __future__ import annotations

from dataclasses import dataclass, field

from crust.handshake.keys import PacketKeys
from crust.handshake.payload import TransportParams
from crust.identity import PeerId
from crust.noise import Pattern
from crust.wire import Address as Addr


@dataclass(frozen=True)
class HandshakeResult:
    """A completed handshake, as either side sees it.

    ``peer_addr`` is where the peer's packets came from; ``observed_addr``
    where the peer saw ours come from (our public address behind a NAT).
    ``keys`` is generation 0; ``rekey()`` gives generation 1 and
    ``keys_for_generation(n)`` any later one (what the engine's
    ``EV_KEYS_NEEDED`` asks for).
    """

    peer_id: PeerId
    initiator: bool
    pattern: Pattern
    local_cid: bytes
    remote_cid: bytes
    keys: PacketKeys
    peer_params: TransportParams
    peer_addr: Addr
    observed_addr: Addr | None
    handshake_hash: bytes = field(repr=False)
    # The latest generation handed out, so that walking forward costs one
    # ratchet step per generation however long the connection lives.
    _latest: list[PacketKeys] = field(default_factory=list, init=False, repr=False, compare=False)

    @property
    def tx_key(self) -> bytes:
        return self.keys.tx_key

    @property
    def tx_iv(self) -> bytes:
        return self.keys.tx_iv

    @property
    def rx_key(self) -> bytes:
        return self.keys.rx_key

    @property
    def rx_iv(self) -> bytes:
        return self.keys.rx_iv

    def rekey(self) -> PacketKeys:
        """The next generation's keys (the same on both sides)."""
        return self.keys_for_generation(1)

    def keys_for_generation(self, generation: int) -> PacketKeys:
        """Generation ``generation``'s keys (0 = ``keys``), the same on
        both sides."""
        if generation < 0:
            raise ValueError(f"key generation must be >= 0, got {generation}")
        keys = self._latest[0] if self._latest else self.keys
        if keys.generation > generation:
            keys = self.keys
        while keys.generation < generation:
            keys = keys.next()
        self._latest[:] = [keys]
        return keys
