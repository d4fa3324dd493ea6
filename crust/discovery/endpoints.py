"""The compact wire form of listening endpoints, shared by the beacon and
gossip: ``family (4|6) | address (4|16 bytes) | port (2 bytes)``.

An unspecified address (``0.0.0.0`` / ``::``) means "the address this
message came from": a node listening on every interface does not know which
of its addresses a neighbour can reach, the neighbour does.
"""

from __future__ import annotations

import functools
import ipaddress

from crust.wire import Address as Endpoint

__all__ = [
    "Endpoint",
    "decode_endpoints",
    "encode_endpoints",
    "is_announceable",
    "resolve_unspecified",
]

_V4 = 4
_V6 = 6


@functools.lru_cache(maxsize=4096)
def _parse_ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """The address in ``host`` (scope suffix dropped), memoised: gossip
    handles the same few hosts over and over, and parsing dominated it."""
    return ipaddress.ip_address(host.split("%", 1)[0])


@functools.lru_cache(maxsize=4096)
def _host_of(raw: bytes) -> str:
    """The text form of a packed 4- or 16-byte address, memoised."""
    return str(ipaddress.IPv4Address(raw) if len(raw) == 4 else ipaddress.IPv6Address(raw))


def encode_endpoints(endpoints: list[Endpoint]) -> bytes:
    """``count (1 byte) | endpoint*``. Raises ValueError naming a bad one."""
    if len(endpoints) > 255:
        raise ValueError(f"at most 255 endpoints, got {len(endpoints)}")
    out = bytearray([len(endpoints)])
    for host, port in endpoints:
        if not 0 < port < 65536:
            raise ValueError(f"endpoint {host}:{port}: port must be 1..65535")
        ip = _parse_ip(host)
        out.append(_V4 if ip.version == 4 else _V6)
        out += ip.packed
        out += port.to_bytes(2, "big")
    return bytes(out)


def decode_endpoints(data: bytes, offset: int, limit: int) -> tuple[list[Endpoint], int]:
    """Endpoints at ``data[offset:]`` (at most ``limit`` of them) and the
    offset after them. Raises ValueError on anything malformed: the bytes
    come from the network."""
    if offset >= len(data):
        raise ValueError("endpoint count missing")
    count = data[offset]
    if count > limit:
        raise ValueError(f"{count} endpoints, more than the limit of {limit}")
    pos = offset + 1
    out: list[Endpoint] = []
    for _ in range(count):
        if pos >= len(data):
            raise ValueError("truncated endpoint")
        family = data[pos]
        size = 4 if family == _V4 else 16 if family == _V6 else 0
        if not size:
            raise ValueError(f"unknown address family {family}")
        end = pos + 1 + size + 2
        if end > len(data):
            raise ValueError("truncated endpoint")
        host = _host_of(bytes(data[pos + 1 : pos + 1 + size]))
        port = int.from_bytes(data[end - 2 : end], "big")
        if port == 0:
            raise ValueError("endpoint port 0")
        out.append((host, port))
        pos = end
    return out, pos


def resolve_unspecified(endpoints: list[Endpoint], source: str) -> list[Endpoint]:
    """Replace unspecified addresses of the source's family by the source
    address; drop the unspecified ones of the other family (unreachable
    guesses)."""
    src_v6 = ":" in source
    out: list[Endpoint] = []
    for host, port in endpoints:
        if host in ("0.0.0.0", "::"):
            if (host == "::") == src_v6:
                out.append((source, port))
            continue
        if (host, port) not in out:
            out.append((host, port))
    return out


def is_announceable(host: str) -> bool:
    """Whether a listening address is worth telling others about: not
    loopback (meaningless elsewhere), not multicast, a valid address."""
    try:
        ip = _parse_ip(host)
    except ValueError:
        return False
    return not (ip.is_loopback or ip.is_multicast)
