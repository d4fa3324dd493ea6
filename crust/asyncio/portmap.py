"""What a port mapper reports (:class:`UpnpMapping`, :class:`UpnpStatus`),
shared by :mod:`crust.asyncio.upnp` (which re-exports them) and its
PCP/NAT-PMP fallback :mod:`crust.asyncio.natpmp`: in a module of their own
so that neither of the two imports the other just for them (issue 18)."""

from __future__ import annotations

from dataclasses import dataclass

from crust.wire import Address

__all__ = ["UpnpMapping", "UpnpStatus"]


@dataclass(frozen=True, slots=True)
class UpnpMapping:
    """A port forward on the gateway: ``external`` (the gateway's WAN
    address and port) reaches ``internal``; ``lease`` in seconds (0: the
    gateway's "permanent"); ``protocol`` is "udp" or "tcp"."""

    protocol: str
    internal: Address
    external: Address
    lease: int
    method: str = "upnp"
    """Which protocol made it: "upnp", "pcp" or "natpmp"."""


@dataclass(frozen=True, slots=True)
class UpnpStatus:
    """What the mapper knows: ``state`` is "discovering", "mapped",
    "unavailable" (no gateway / refused; ``error`` says why) or "closed";
    ``method`` which protocol mapped ("upnp", "pcp", "natpmp"; None while
    nothing is mapped). For PCP/NAT-PMP ``control_url`` is
    ``"pcp://GATEWAY:5351"`` (or ``natpmp://``)."""

    state: str
    control_url: str | None = None
    lan_address: str | None = None
    external_ip: str | None = None
    mappings: tuple[UpnpMapping, ...] = ()
    error: str | None = None
    discovery_seconds: float | None = None
    method: str | None = None
