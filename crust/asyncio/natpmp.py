"""asyncio driver for PCP/NAT-PMP port mappings (:mod:`crust.nat.natpmp`).

:class:`GatewayMapper` talks to the default gateway (read from
``/proc/net/route``, or given) on UDP port 5351 from a *connected* socket:
the source address the gateway sees is then the socket's own (which PCP
must name in its requests), and an ICMP "port unreachable" from a gateway
that runs neither protocol reaches us as an error on that socket, so its
absence is known in one round trip instead of after the retransmission
schedule. It maps the given ports, lets the client renew them at half the
lease, and deletes them on ``close``. Its ``status`` has the shape of
:class:`crust.asyncio.upnp.UpnpStatus`, so :class:`~crust.asyncio.upnp.PortMapper`
can fall back to it when UPnP finds no gateway.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Callable, Sequence
from typing import cast

from crust.asyncio.portmap import UpnpMapping, UpnpStatus
from crust.nat.natpmp import (
    SERVER_PORT,
    MappingDeleted,
    MappingFailed,
    MappingGranted,
    PortMapClient,
)
from crust.wire import Address

__all__ = ["GatewayMapper", "default_gateway"]

logger = logging.getLogger(__name__)


_RTF_UP = 0x1
_RTF_GATEWAY = 0x2


def default_gateway(route_file: str = "/proc/net/route") -> str | None:
    """The IPv4 default route's gateway (lowest metric), or None when
    there is none or the file cannot be read (not Linux)."""
    try:
        with open(route_file, encoding="ascii") as f:
            lines = f.read().splitlines()[1:]
    except OSError:
        return None
    best: tuple[int, str] | None = None
    for line in lines:
        fields = line.split()
        if len(fields) < 8:
            continue
        try:
            dest, gw, flags = int(fields[1], 16), int(fields[2], 16), int(fields[3], 16)
            metric, mask = int(fields[6]), int(fields[7], 16)
        except ValueError:
            continue
        want = _RTF_UP | _RTF_GATEWAY
        if dest != 0 or mask != 0 or flags & want != want or gw == 0:
            continue
        # The kernel prints the address in host (little-endian) order.
        ip = socket.inet_ntoa(gw.to_bytes(4, "little"))
        if best is None or metric < best[0]:
            best = (metric, ip)
    return best[1] if best else None


class _Socket(asyncio.DatagramProtocol):
    def __init__(self, mapper: GatewayMapper) -> None:
        self.mapper = mapper
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self.mapper._feed(data, (str(addr[0]), int(addr[1])))

    def error_received(self, exc: Exception) -> None:
        self.mapper._socket_error(exc)


class GatewayMapper:
    """Keeps PCP (falling back to NAT-PMP) mappings for ``ports``
    (``(protocol, (host, port))``; host "0.0.0.0" means the address the
    gateway sees us at). ``gateway`` defaults to the default route's;
    ``server_port`` is 5351 except in tests. ``methods``, ``natpmp_tries``
    and ``pcp_mrc`` are :class:`~crust.nat.natpmp.PortMapClient`'s (the
    defaults here give an answer-less gateway ~4 s per protocol: the
    RFCs' own schedules are for clients that can wait minutes). A
    mapping lost after it was granted (renewals unanswered until its
    lifetime ended, or refused) is asked for again every ``retry_after``
    seconds until the mapper closes, as the UPnP mapper re-adds its own.
    ``on_ready`` is called once with the status when the first attempt
    has ended."""

    def __init__(
        self,
        ports: Sequence[tuple[str, Address]],
        *,
        lease: int = 3600,
        gateway: str | None = None,
        server_port: int = SERVER_PORT,
        methods: tuple[str, ...] = ("pcp", "natpmp"),
        natpmp_tries: int = 4,
        pcp_irt: float = 1.0,
        pcp_mrc: int = 2,
        retry_after: float = 60.0,
        on_ready: Callable[[UpnpStatus], None] | None = None,
    ) -> None:
        if not 1 <= lease <= 604800:
            raise ValueError(f"lease must be 1..604800 s, got {lease}")
        self.ports = list(ports)
        self.lease = lease
        self.gateway = gateway
        self.server_port = server_port
        self.methods = methods
        self.retry_after = retry_after
        # Mappings granted once and lost since, with their retry timers.
        self._lost: dict[tuple[str, int], asyncio.TimerHandle] = {}
        self._client_args = {
            "natpmp_tries": natpmp_tries, "pcp_irt": pcp_irt, "pcp_mrc": pcp_mrc,
        }  # fmt: skip
        self.status = UpnpStatus("discovering")
        self.client: PortMapClient | None = None
        self._on_ready = on_ready
        self._ready = asyncio.Event()
        self._deleted = asyncio.Event()
        self._sock: _Socket | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._waiting: set[tuple[str, int]] = set()
        self._mapped: dict[tuple[str, int], UpnpMapping] = {}
        self._errors: list[str] = []
        self._t0 = 0.0
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        #: Deletions the gateway did not confirm (left to expire).
        self.unconfirmed_deletions = 0
        #: Renewals the gateway granted.
        self.renewals = 0

    @property
    def mappings(self) -> tuple[UpnpMapping, ...]:
        return self.status.mappings

    def start(self) -> None:
        """Opens the socket and sends the first requests (in the background)."""
        if self._task is None:
            self._task = asyncio.create_task(self._open(), name="crust-natpmp")

    async def wait_ready(self, timeout: float | None = None) -> UpnpStatus:
        """Waits until the first mapping attempt ended (mapped or not)."""
        await asyncio.wait_for(self._ready.wait(), timeout)
        return self.status

    async def _open(self) -> None:
        self._t0 = time.monotonic()
        gw = self.gateway or default_gateway()
        if gw is None:
            self._finish_first("no IPv4 default gateway to ask")
            return
        self.gateway = gw
        loop = asyncio.get_running_loop()
        try:
            _, sock = await loop.create_datagram_endpoint(
                lambda: _Socket(self), remote_addr=(gw, self.server_port), family=socket.AF_INET
            )
        except OSError as e:
            self._finish_first(f"cannot reach {gw}:{self.server_port}: {e}")
            return
        self._sock = sock
        assert sock.transport is not None
        client_ip = str(sock.transport.get_extra_info("sockname")[0])
        client = PortMapClient(
            (gw, self.server_port), client_ip, methods=self.methods,
            **self._client_args,  # type: ignore[arg-type]
        )  # fmt: skip
        self.client = client
        self.status = UpnpStatus("discovering", self._where(), client_ip)
        now = loop.time()
        for protocol, (host, port) in self.ports:
            if host not in ("0.0.0.0", "", client_ip):
                # PCP and NAT-PMP map ports of the requesting address only.
                self._errors.append(
                    f"{protocol} {host}:{port} is not on {client_ip}, the address "
                    f"{gw} sees us at"
                )
                continue
            client.map(protocol, port, self.lease, now)
            self._waiting.add((protocol, port))
        if not self._waiting:
            self._finish_first("; ".join(self._errors) or "no port to map")
            return
        self._service()

    def _where(self) -> str:
        method = self.client.method if self.client is not None else self.methods[0]
        return f"{method}://{self.gateway}:{self.server_port}"

    def _feed(self, data: bytes, addr: Address) -> None:
        if self.client is None or (self._closed and self._deleted.is_set()):
            return
        self.client.receive_datagram(data, addr, asyncio.get_running_loop().time())
        self._service()

    def _socket_error(self, exc: Exception) -> None:
        if self.client is None:
            return
        logger.debug("port-mapping socket to %s: %s", self.gateway, exc)
        if isinstance(exc, ConnectionRefusedError):
            # ICMP port unreachable: nothing listens on the gateway's 5351.
            self.client.fail_all(
                f"nothing answers on {self.gateway}:{self.server_port} (port unreachable)",
                asyncio.get_running_loop().time(),
            )
            self._service()

    def _service(self) -> None:
        client, sock = self.client, self._sock
        if client is None or sock is None or sock.transport is None:
            return
        now = asyncio.get_running_loop().time()
        client.handle_timer(now)
        for data, _ in client.datagrams_to_send(now):
            if not sock.transport.is_closing():
                sock.transport.sendto(data)
        while (ev := client.next_event()) is not None:
            self._event(ev)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        when = client.get_timer()
        if when is not None and not sock.transport.is_closing():
            self._timer = asyncio.get_running_loop().call_at(when, self._service)
        if self._closed and not client.busy:
            self._deleted.set()

    def _event(self, ev: MappingGranted | MappingFailed | MappingDeleted) -> None:
        key = (ev.protocol, ev.internal_port)
        assert self.client is not None
        if isinstance(ev, MappingGranted):
            self._lost.pop(key, None)
            internal = (self.client.client_ip, ev.internal_port)
            self._mapped[key] = UpnpMapping(
                ev.protocol, internal, ev.external, ev.lifetime, ev.method
            )
            if ev.renewal:
                self.renewals += 1
            else:
                logger.info("%s mapped %s %s:%d -> %s:%d for %d s", ev.method.upper(),
                            ev.protocol, *internal, *ev.external, ev.lifetime)  # fmt: skip
        elif isinstance(ev, MappingFailed):
            was_mapped = self._mapped.pop(key, None) is not None or key in self._lost
            what = f"{ev.method} {ev.protocol} {ev.internal_port}: {ev.reason}"
            self._errors.append(what)
            if was_mapped and not self._closed:
                logger.warning("port mapping lost: %s; asking again in %.0f s", what,
                               self.retry_after)  # fmt: skip
                self._lost[key] = asyncio.get_running_loop().call_later(
                    self.retry_after, self._remap, key
                )
        else:
            self._mapped.pop(key, None)
            if not ev.confirmed:
                self.unconfirmed_deletions += 1
                logger.info("%s: deleting %s %d went unanswered; it will expire",
                            ev.method, ev.protocol, ev.internal_port)  # fmt: skip
        self._waiting.discard(key)
        self._update()
        if not self._waiting and not self._ready.is_set():
            self._finish_first(None)

    def _remap(self, key: tuple[str, int]) -> None:
        if self._closed or self.client is None:
            return
        self.client.map(key[0], key[1], self.lease, asyncio.get_running_loop().time())
        self._service()

    def _update(self) -> None:
        mapped = tuple(self._mapped.values())
        if self._closed:
            state = "closed"
        else:
            state = "mapped" if mapped else ("discovering" if self._waiting else "unavailable")
        assert self.client is not None
        self.status = UpnpStatus(
            state, self._where(), self.client.client_ip, self.client.external_ip, mapped,
            "; ".join(self._errors[-4:]) or None, self.status.discovery_seconds,
            self.client.method if mapped else None,
        )  # fmt: skip

    def _finish_first(self, error: str | None) -> None:
        took = time.monotonic() - self._t0
        if error is not None:
            self._errors.append(error)
        st = self.status
        state = "mapped" if st.mappings else "unavailable"
        self.status = UpnpStatus(
            state, st.control_url, st.lan_address, st.external_ip, st.mappings,
            "; ".join(self._errors) or None, took, st.method,
        )  # fmt: skip
        if state == "unavailable":
            logger.info("PCP/NAT-PMP unavailable: %s", self.status.error)
        self._ready.set()
        if self._on_ready is not None:
            self._on_ready(self.status)

    async def close(self, timeout: float = 3.0) -> None:
        """Deletes the mappings (waits up to ``timeout`` for the gateway to
        confirm; unconfirmed ones expire at the end of their lease) and
        closes the socket."""
        if self._closed:
            return
        self._closed = True
        for handle in self._lost.values():
            handle.cancel()
        self._lost.clear()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        client = self.client
        if client is not None:
            now = asyncio.get_running_loop().time()
            for protocol, port in list(self._mapped):
                client.unmap(protocol, port, now)
            for protocol, port in list(self._waiting):
                client.unmap(protocol, port, now)
            self._service()
            if client.busy and self._sock is not None:
                try:
                    await asyncio.wait_for(self._deleted.wait(), timeout)
                except asyncio.TimeoutError:
                    logger.warning(
                        "port mapping: deleting took over %.1f s; left to expire", timeout
                    )
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._sock is not None and self._sock.transport is not None:
            self._sock.transport.close()
        st = self.status
        self.status = UpnpStatus("closed", st.control_url, st.lan_address, st.external_ip)
        self._ready.set()
