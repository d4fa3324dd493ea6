"""Sockets and timers for the LAN beacon (:mod:`crust.discovery.beacon`).

Per address family two UDP sockets: one bound to the beacon port (with
``SO_REUSEADDR``/``SO_REUSEPORT``, so several nodes on one host share it)
that hears queries and sends replies, and one on a random port that sends
queries and hears the replies. Replies go to the query's source port:
unicast to a shared port would reach only one of the processes bound to it.

Queries go out on every usable interface the service listens on (all of
them for ``0.0.0.0``/``::``): IPv4 to the interface's directed broadcast
address, IPv6 to :data:`IPV6_GROUP` with the interface index as scope. The
interface list is read again before every query, so interfaces that come
up later are used too. Nothing is ever sent on loopback.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import struct
from collections.abc import Callable

from crust.asyncio.netif import IFF_BROADCAST, IFF_MULTICAST, Interface, interfaces
from crust.discovery.beacon import MAX_PACKET, Beacon
from crust.events import LanPeerFound

__all__ = ["IPV6_GROUP", "BeaconTransport", "beacon_scope"]

logger = logging.getLogger(__name__)

#: Link-local multicast group of the beacon (an unassigned ff02:: group).
IPV6_GROUP = "ff02::6372:7573"


def beacon_scope(hosts: tuple[str, ...]) -> tuple[set[str], bool, bool]:
    """From the listening hosts: the specific addresses to beacon for, and
    whether every IPv4 / IPv6 interface counts (unspecified host)."""
    specific: set[str] = set()
    all_v4 = all_v6 = False
    for h in hosts:
        ip = ipaddress.ip_address(h)
        if ip.is_unspecified:
            all_v4 |= ip.version == 4
            all_v6 |= ip.version == 6
        elif not ip.is_loopback:
            specific.add(str(ip))
    return specific, all_v4, all_v6


class BeaconTransport:
    """Runs a :class:`Beacon` on real sockets; ``on_found`` gets each
    :class:`~crust.events.LanPeerFound` with the source address of the
    datagram that told it, and ``on_received`` (if given) the source and
    size of every datagram (the reflection budget, crust.reflection)."""

    def __init__(
        self,
        beacon: Beacon,
        *,
        port: int,
        hosts: tuple[str, ...],
        on_found: Callable[[LanPeerFound, str], None],
        on_received: Callable[[str, int], None] | None = None,
    ) -> None:
        self.beacon = beacon
        self.port = port
        self.on_found = on_found
        self.on_received = on_received
        self._specific, self._all_v4, self._all_v6 = beacon_scope(hosts)
        self._want_v4 = self._all_v4 or any(":" not in h for h in self._specific)
        self._want_v6 = self._all_v6 or any(":" in h for h in self._specific)
        self._loop = asyncio.get_running_loop()
        self._socks: dict[str, socket.socket] = {}
        self._joined: set[int] = set()
        self._timer: asyncio.TimerHandle | None = None
        self.send_errors = 0

    @property
    def active(self) -> bool:
        """Whether the listening addresses leave anything to beacon on."""
        return self._want_v4 or self._want_v6

    def start(self) -> bool:
        """Open the sockets (logged and skipped per family on failure) and
        send the first query; False when no socket could be opened."""
        if self._want_v4:
            self._open(socket.AF_INET)
        if self._want_v6 and socket.has_ipv6:
            self._open(socket.AF_INET6)
        if self._socks:
            self._arm()
            logger.info("beacon on UDP port %d (%s)", self.port, ", ".join(sorted(self._socks)))
        return bool(self._socks)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for sock in self._socks.values():
            self._loop.remove_reader(sock.fileno())
            sock.close()
        self._socks.clear()

    # -- sockets -------------------------------------------------------------------

    def _open(self, family: int) -> None:
        v6 = family == socket.AF_INET6
        tag = "v6" if v6 else "v4"
        listen = socket.socket(family, socket.SOCK_DGRAM)
        query = socket.socket(family, socket.SOCK_DGRAM)
        try:
            for s in (listen, query):
                s.setblocking(False)
                if v6:
                    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 1)
                else:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
            listen.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listen.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            listen.bind(("::" if v6 else "0.0.0.0", self.port))
            query.bind(("::" if v6 else "0.0.0.0", 0))
        except OSError as exc:
            logger.warning("beacon: no %s socket on port %d: %s", tag, self.port, exc)
            listen.close()
            query.close()
            return
        for role, s in (("listen", listen), ("query", query)):
            self._socks[f"{tag}-{role}"] = s
            self._loop.add_reader(s.fileno(), self._readable, s)

    def _readable(self, sock: socket.socket) -> None:
        for _ in range(64):  # bounded: a flood must not starve the loop
            try:
                data, addr = sock.recvfrom(MAX_PACKET + 1)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:  # e.g. ICMP errors reported on the socket
                logger.debug("beacon recv: %s", exc)
                break
            host = addr[0]
            if self.on_received is not None:
                self.on_received(host, len(data))
            self.beacon.receive_datagram(data, (host, addr[1]), self._loop.time())
            # Per datagram: whoever sent it pays for the dials it causes.
            while (ev := self.beacon.next_event()) is not None:
                self.on_found(ev, host)
        self._flush()

    def _flush(self) -> None:
        for data, dest in self.beacon.datagrams_to_send(self._loop.time()):
            if dest is None:
                self._broadcast(data)
                continue
            v6 = ":" in dest[0]
            sock = self._socks.get("v6-listen" if v6 else "v4-listen")
            if sock is not None:
                self._send(sock, data, dest)

    def _targets(self) -> list[tuple[Interface, bool]]:
        out = []
        for ifc in interfaces():
            if not ifc.usable:
                continue
            if (
                ifc.ipv4_broadcast
                and ifc.flags & IFF_BROADCAST
                and (self._all_v4 or ifc.ipv4 in self._specific)
            ):
                out.append((ifc, False))
            if (
                ifc.ipv6
                and ifc.flags & IFF_MULTICAST
                and (self._all_v6 or self._specific.intersection(ifc.ipv6))
            ):
                out.append((ifc, True))
        return out

    def _broadcast(self, data: bytes) -> None:
        for ifc, v6 in self._targets():
            if v6:
                sock = self._socks.get("v6-query")
                if sock is None:
                    continue
                self._join(ifc.index)
                self._send(sock, data, (IPV6_GROUP, self.port, 0, ifc.index))
            else:
                sock = self._socks.get("v4-query")
                if sock is not None and ifc.ipv4_broadcast:
                    self._send(sock, data, (ifc.ipv4_broadcast, self.port))

    def _join(self, index: int) -> None:
        sock = self._socks.get("v6-listen")
        if sock is None or index in self._joined:
            return
        mreq = socket.inet_pton(socket.AF_INET6, IPV6_GROUP) + struct.pack("@I", index)
        try:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, mreq)
            self._joined.add(index)
        except OSError as exc:
            logger.debug("beacon: cannot join %s on interface %d: %s", IPV6_GROUP, index, exc)

    def _send(self, sock: socket.socket, data: bytes, dest: tuple[object, ...]) -> None:
        try:
            sock.sendto(data, dest)
        except OSError as exc:
            # A full buffer or an interface going down: the next query
            # repeats everything, so dropping this one is fine.
            self.send_errors += 1
            logger.debug("beacon send to %s: %s", dest[0], exc)

    # -- timer -----------------------------------------------------------------------

    def _arm(self) -> None:
        when = self.beacon.get_timer()
        if when is None or not self._socks:
            return
        self._timer = self._loop.call_at(when, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        # Joining new interfaces before the query lets their replies in.
        for ifc, v6 in self._targets():
            if v6:
                self._join(ifc.index)
        self.beacon.handle_timer(self._loop.time())
        self._flush()
        self._arm()
