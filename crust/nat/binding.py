"""Whether a UDP path crosses a NAT on our side: then its keepalive must
beat the NAT's binding timeout, not only the peer's idle timeout.

A NAT's UDP binding lapses after a quiet spell (RFC 4787 asks for at least
2 minutes; many home and carrier NATs use 30 s or less, some 10-15 s). A
path crosses one on our side when the peer saw us at an address that is
not ours: another IP than any of this machine's, or another port than the
socket's. The peer's report is unauthenticated as to truth (a peer can
lie), but a lie only changes how often we ping that peer.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Collection

from crust.wire import Address as Addr

__all__ = ["canonical_ip", "crosses_nat"]

_ANY = ("0.0.0.0", "::")


@functools.lru_cache(maxsize=256)
def canonical_ip(host: str) -> str:
    """An IP address's canonical text (without an IPv6 zone); anything
    else as it is."""
    try:
        return str(ipaddress.ip_address(host.split("%", 1)[0]))
    except ValueError:
        return host


def crosses_nat(observed: Addr | None, local: Addr, local_ips: Collection[str]) -> bool:
    """True when the peer saw us at ``observed`` and that is not the socket
    bound at ``local`` (a wildcard address stands for every one of
    ``local_ips``, canonical text). Unknown (None): False."""
    if observed is None:
        return False
    host, port = canonical_ip(observed[0]), observed[1]
    if port != local[1]:
        return True
    if local[0] in _ANY:
        return host not in local_ips
    return host != canonical_ip(local[0])
