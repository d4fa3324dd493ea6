"""The machine's network interfaces, as the LAN beacon needs them: which
are up, their IPv4 address and directed broadcast address, their IPv6
addresses (Linux: ``SIOCGIF*`` ioctls and ``/proc/net/if_inet6``).

The broadcast address is computed from address and netmask rather than
read (``SIOCGIFBRDADDR``): ``ip addr add 10.0.0.2/24`` leaves it unset.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import logging
import socket
import struct
from dataclasses import dataclass, field

__all__ = ["Interface", "interfaces"]

logger = logging.getLogger(__name__)

_SIOCGIFFLAGS = 0x8913
_SIOCGIFADDR = 0x8915
_SIOCGIFNETMASK = 0x891B
IFF_UP = 0x1
IFF_BROADCAST = 0x2
IFF_LOOPBACK = 0x8
IFF_MULTICAST = 0x1000


@dataclass(frozen=True)
class Interface:
    name: str
    index: int
    flags: int
    ipv4: str | None = None
    ipv4_broadcast: str | None = None
    ipv6: tuple[str, ...] = field(default=())

    @property
    def usable(self) -> bool:
        """Up and not loopback: worth beaconing on."""
        return bool(self.flags & IFF_UP) and not self.flags & IFF_LOOPBACK


def _ioctl(sock: socket.socket, request: int, name: str) -> bytes | None:
    try:
        return fcntl.ioctl(sock.fileno(), request, struct.pack("256s", name.encode()[:15]))
    except OSError:
        return None  # no such address on this interface


def _ipv6_by_index() -> dict[int, list[str]]:
    out: dict[int, list[str]] = {}
    try:
        with open("/proc/net/if_inet6") as f:
            lines = f.read().splitlines()
    except OSError:
        return out  # IPv6 disabled
    for line in lines:
        parts = line.split()
        if len(parts) < 6:
            continue
        with contextlib.suppress(ValueError):
            addr = str(ipaddress.IPv6Address(bytes.fromhex(parts[0])))
            out.setdefault(int(parts[1], 16), []).append(addr)
    return out


def interfaces() -> list[Interface]:
    """Every interface with its flags and addresses (never raises: an
    interface that vanishes while we look is skipped)."""
    v6 = _ipv6_by_index()
    out: list[Interface] = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for index, name in socket.if_nameindex():
            raw = _ioctl(s, _SIOCGIFFLAGS, name)
            if raw is None:
                continue
            (flags,) = struct.unpack_from("H", raw, 16)
            ipv4 = broadcast = None
            addr = _ioctl(s, _SIOCGIFADDR, name)
            mask = _ioctl(s, _SIOCGIFNETMASK, name)
            if addr is not None and mask is not None:
                ip = ipaddress.IPv4Address(addr[20:24])
                net = ipaddress.IPv4Network(f"{ip}/{ipaddress.IPv4Address(mask[20:24])}", False)
                ipv4 = str(ip)
                if flags & IFF_BROADCAST and net.prefixlen < 31:
                    broadcast = str(net.broadcast_address)
            out.append(Interface(name, index, flags, ipv4, broadcast, tuple(v6.get(index, ()))))
    return out
