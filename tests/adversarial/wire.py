"""Counting what actually leaves a node: an AF_PACKET socket (root) sees
every IP packet on the host's (or the network namespace's) interfaces,
including loopback, after the kernel built it. The reflection tests count
IP bytes (headers included, as a victim's link would carry them) between
two addresses, so nothing in crust's own bookkeeping is trusted.

Only the outgoing copy of a packet is counted (on loopback the same packet
also comes back in).
"""

from __future__ import annotations

import socket
import threading
from collections import Counter

__all__ = ["Wire"]

_ETH_P_ALL = 0x0003
_PACKET_OUTGOING = 4
_ETH_HEADER = 14
#: ARPHRD_ETHER (veth, dummy) and ARPHRD_LOOPBACK: frames with a 14-byte header.
_ETHERNET_LIKE = (1, 772)


class Wire:
    """Bytes and packets per (source IP, destination IP, IP protocol),
    IPv4, counted while the ``with`` block runs."""

    def __init__(self, watch: set[str]) -> None:
        #: Only packets from or to one of these addresses are counted.
        self.watch = watch
        self.bytes: Counter[tuple[str, str, int]] = Counter()
        self.packets: Counter[tuple[str, str, int]] = Counter()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(_ETH_P_ALL))
        self._sock.settimeout(0.05)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 << 20)
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Wire:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sock.close()

    def sent(self, src: str, dst: str, proto: int | None = None) -> int:
        """IP bytes from ``src`` to ``dst`` so far (``proto``: only
        ``socket.IPPROTO_UDP`` or ``IPPROTO_TCP`` ones)."""
        with self._lock:
            return sum(
                n
                for (s, d, p), n in self.bytes.items()
                if s == src and d == dst and proto in (None, p)
            )

    def to(self, dst: str, proto: int | None = None) -> int:
        """IP bytes to ``dst`` from anywhere so far."""
        with self._lock:
            return sum(n for (_, d, p), n in self.bytes.items() if d == dst and proto in (None, p))

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data, addr = self._sock.recvfrom(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            # Every packet here leaves some local socket: count that copy
            # (on loopback the same packet comes back in as well).
            if addr[2] != _PACKET_OUTGOING:
                continue
            ip = data[_ETH_HEADER:] if addr[3] in _ETHERNET_LIKE else data
            if len(ip) < 20 or ip[0] >> 4 != 4:
                continue
            src = socket.inet_ntoa(ip[12:16])
            dst = socket.inet_ntoa(ip[16:20])
            if src not in self.watch and dst not in self.watch:
                continue
            size = int.from_bytes(ip[2:4], "big")
            key = (src, dst, ip[9])
            with self._lock:
                self.bytes[key] += size
                self.packets[key] += 1
