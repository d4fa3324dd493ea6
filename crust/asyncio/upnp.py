"""Port mappings on the gateway: UPnP IGD through miniupnpc, time-boxed,
falling back to PCP and NAT-PMP (:mod:`crust.asyncio.natpmp`).

miniupnpc's calls block (SSDP discovery waits for answers, each SOAP action
is an HTTP round trip), so every call runs in its own daemon thread and is
awaited with a deadline: an absent gateway costs ``discover_timeout`` plus
a little, a gateway that stops answering costs ``call_timeout`` per call,
and neither ever blocks the event loop or interpreter exit. After a call
times out the gateway object is abandoned (its thread may still be using
it; miniupnpc objects are not thread-safe) and the mapper gives up.

:class:`PortMapper` is what :class:`crust.Service` uses: it discovers the
gateway in the background, maps each listening port (same external port
when free, any port otherwise), re-adds the mappings every ``lease / 2``
seconds (UPnP has no renew: adding the same mapping again extends it) and
deletes them on ``close``. With ``methods`` naming "pcp" and/or "natpmp"
after "upnp", a failed UPnP discovery hands over to
:class:`crust.asyncio.natpmp.GatewayMapper`, and ``status.method`` says
which protocol got the mappings.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from crust.asyncio.portmap import UpnpMapping, UpnpStatus
from crust.errors import UpnpError
from crust.wire import Address

if TYPE_CHECKING:
    from crust.asyncio.natpmp import GatewayMapper

__all__ = ["METHODS", "PortMapper", "UpnpError", "UpnpGateway", "UpnpMapping", "UpnpStatus"]

logger = logging.getLogger(__name__)

T = TypeVar("T")


async def _in_thread(fn: Callable[[], T], timeout: float, what: str) -> T:
    """Runs a blocking call in a daemon thread; raises UpnpError on
    timeout (the thread is left to finish on its own)."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[T] = loop.create_future()

    def settle(ok: bool, value: Any) -> None:
        if fut.done():
            return
        if ok:
            fut.set_result(value)
        else:
            fut.set_exception(value)

    def work() -> None:
        try:
            result = fn()
        except Exception as e:  # miniupnpc raises bare Exception
            with contextlib.suppress(RuntimeError):  # loop already closed
                loop.call_soon_threadsafe(settle, False, UpnpError(f"{what}: {e}"))
            return
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(settle, True, result)

    threading.Thread(target=work, name=f"crust-upnp-{what}", daemon=True).start()
    try:
        return await asyncio.wait_for(fut, timeout)
    except asyncio.TimeoutError:
        raise UpnpError(f"{what}: no answer within {timeout} s") from None


class UpnpGateway:
    """One discovered Internet Gateway Device."""

    def __init__(self, upnp: Any, call_timeout: float) -> None:
        self._upnp = upnp
        self.call_timeout = call_timeout
        self.control_url: str = ""
        self.lan_address: str = upnp.lanaddr
        self.broken = False
        self._lock = asyncio.Lock()

    @classmethod
    async def discover(
        cls, *, timeout: float = 1.0, call_timeout: float = 3.0, multicast_if: str | None = None
    ) -> UpnpGateway:
        """SSDP discovery (``timeout`` seconds of listening) and IGD
        selection; raises :class:`UpnpError` when there is none."""
        import miniupnpc  # deferred: a C module the doctor may not need

        upnp = miniupnpc.UPnP()
        upnp.discoverdelay = max(100, int(timeout * 1000))
        if multicast_if:
            upnp.multicastif = multicast_if

        def find() -> str:
            if upnp.discover() < 1:
                raise UpnpError("no UPnP device answered the SSDP search")
            return str(upnp.selectigd())

        # miniupnpc may send several searches each waiting `discoverdelay`.
        url = await _in_thread(find, timeout * 2 + 1.0, "discovery")
        gw = cls(upnp, call_timeout)
        gw.control_url = url
        gw.lan_address = str(upnp.lanaddr)
        return gw

    async def _call(self, what: str, fn: Callable[[], T]) -> T:
        if self.broken:
            raise UpnpError(f"{what}: the gateway stopped answering earlier")
        async with self._lock:
            try:
                return await _in_thread(fn, self.call_timeout, what)
            except UpnpError as e:
                if "no answer within" in str(e):
                    self.broken = True
                raise

    async def external_ip(self) -> str:
        return str(await self._call("external address", self._upnp.externalipaddress))

    async def add(
        self, protocol: str, internal: Address, external_port: int, lease: int, description: str
    ) -> int:
        """Adds (or refreshes) a mapping; returns the external port, which
        differs from ``external_port`` when that was taken by another host."""
        proto = protocol.upper()

        def add() -> int:
            try:
                self._upnp.addportmapping(
                    external_port, proto, internal[0], internal[1], description, "", lease
                )
                return external_port
            except Exception as first:
                # Taken by someone else: let the gateway pick (IGDv2).
                try:
                    return int(
                        self._upnp.addanyportmapping(
                            external_port, proto, internal[0], internal[1], description, "", lease
                        )
                    )
                except Exception:
                    raise first from None

        return await self._call(f"map {protocol} {internal[1]}", add)

    async def remove(self, protocol: str, external_port: int) -> None:
        await self._call(
            f"unmap {protocol} {external_port}",
            lambda: self._upnp.deleteportmapping(external_port, protocol.upper()),
        )


#: What :class:`PortMapper` can try, in the order it tries them.
METHODS = ("upnp", "pcp", "natpmp")


class PortMapper:
    """Keeps port mappings for ``ports`` (``(protocol, (host, port))``;
    host "0.0.0.0" means the address the gateway sees us at), trying the
    protocols of ``methods`` in :data:`METHODS` order until one maps.
    ``gateway`` and ``gateway_port`` say where PCP/NAT-PMP ask (default:
    the default route's gateway, port 5351). ``on_ready`` is called once
    with the status when the first attempt has ended."""

    def __init__(
        self,
        ports: Sequence[tuple[str, Address]],
        *,
        lease: int = 3600,
        discover_timeout: float = 1.0,
        call_timeout: float = 3.0,
        description: str = "crust",
        on_ready: Callable[[UpnpStatus], None] | None = None,
        methods: Sequence[str] = ("upnp",),
        gateway: str | None = None,
        gateway_port: int = 5351,
    ) -> None:
        if not 0 <= lease <= 604800:
            raise ValueError(f"lease must be 0..604800 s, got {lease}")
        if not methods or any(m not in METHODS for m in methods):
            raise ValueError(f"methods must be drawn from {METHODS}, got {tuple(methods)}")
        self.methods = tuple(m for m in METHODS if m in methods)
        self.gateway_address = gateway
        self.gateway_port = gateway_port
        # Set once UPnP failed and PCP/NAT-PMP took over: its status is ours.
        self._fallback: GatewayMapper | None = None
        self._upnp_error: str | None = None
        self.ports = list(ports)
        self.lease = lease
        self.discover_timeout = discover_timeout
        self.call_timeout = call_timeout
        self.description = description
        self._status = UpnpStatus("discovering")
        self.gateway: UpnpGateway | None = None
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self._on_ready = on_ready

    @property
    def status(self) -> UpnpStatus:
        """What the mapper knows now (the protocol that is mapping's)."""
        fb = self._fallback
        if fb is None:
            return self._status
        st = fb.status
        if st.state == "unavailable" and self._upnp_error:
            return dataclasses.replace(st, error=f"UPnP: {self._upnp_error}; {st.error}")
        return st

    @property
    def mappings(self) -> tuple[UpnpMapping, ...]:
        return self.status.mappings

    def start(self) -> None:
        """Starts discovery and mapping in the background (returns at once)."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="crust-upnp")

    async def wait_ready(self, timeout: float | None = None) -> UpnpStatus:
        """Waits until the first mapping attempt ended (mapped or not)."""
        await asyncio.wait_for(self._ready.wait(), timeout)
        return self.status

    async def _run(self) -> None:
        rest = tuple(m for m in self.methods if m != "upnp")
        if "upnp" in self.methods and await self._run_upnp(last=not rest):
            return
        if not rest:
            return
        # Deferred: natpmp imports this module's status types.
        from crust.asyncio.natpmp import GatewayMapper

        fb = GatewayMapper(
            self.ports,
            # PCP/NAT-PMP have no "permanent": lifetime 0 deletes.
            lease=self.lease or 3600,
            gateway=self.gateway_address,
            server_port=self.gateway_port,
            methods=rest,
        )
        self._fallback = fb
        fb.start()
        await fb.wait_ready()
        self._set_ready()

    async def _run_upnp(self, *, last: bool) -> bool:
        """UPnP discovery, mapping and renewal; returns False (at once) if
        it could not map, True when a mapped gateway stopped answering."""
        t0 = time.monotonic()
        try:
            gw = await UpnpGateway.discover(
                timeout=self.discover_timeout, call_timeout=self.call_timeout
            )
            self.gateway = gw
            ext_ip = await gw.external_ip()
            took = time.monotonic() - t0
            self._status = UpnpStatus(
                "discovering", gw.control_url, gw.lan_address, ext_ip, discovery_seconds=took
            )
            logger.info(
                "UPnP gateway %s, external address %s (%.2f s)", gw.control_url, ext_ip, took
            )
            await self._map_all(gw, ext_ip, first=True)
        except UpnpError as e:
            logger.info("UPnP unavailable: %s", e)
            self._upnp_error = str(e)
            self._status = UpnpStatus(
                "unavailable",
                self.status.control_url,
                self.status.lan_address,
                self.status.external_ip,
                self.status.mappings,
                str(e),
                time.monotonic() - t0,
            )
            if last:
                self._set_ready()
            return False
        self._set_ready()
        if not self.lease:
            return True
        while True:
            # Renew at half the lease so one lost refresh still leaves time.
            await asyncio.sleep(self.lease / 2)
            try:
                # The WAN address may have changed (a new DHCP lease upstream).
                new_ip = await gw.external_ip()
                if new_ip != ext_ip:
                    logger.info("UPnP external address changed: %s -> %s", ext_ip, new_ip)
                    ext_ip = new_ip
                await self._map_all(gw, ext_ip, first=False)
            except UpnpError as e:
                logger.warning("UPnP renewal failed: %s", e)
                if gw.broken:
                    return True

    def _set_ready(self) -> None:
        self._ready.set()
        if self._on_ready is not None:
            self._on_ready(self.status)

    async def _map_all(self, gw: UpnpGateway, ext_ip: str, *, first: bool) -> None:
        previous = {(m.protocol, m.internal): m for m in self.status.mappings}
        mapped: list[UpnpMapping] = []
        errors: list[str] = []
        for protocol, (host, port) in self.ports:
            internal = (gw.lan_address if host in ("0.0.0.0", "") else host, port)
            old = previous.get((protocol, internal))
            want = old.external[1] if old else port
            try:
                got = await gw.add(protocol, internal, want, self.lease, self.description)
            except UpnpError as e:
                errors.append(str(e))
                if gw.broken:
                    break
                continue
            mapped.append(UpnpMapping(protocol, internal, (ext_ip, got), self.lease, "upnp"))
            if first:
                logger.info("UPnP mapped %s %s:%d -> %s:%d", protocol, *internal, ext_ip, got)
        state = "mapped" if mapped else "unavailable"
        self._status = UpnpStatus(
            state,
            gw.control_url,
            gw.lan_address,
            ext_ip,
            tuple(mapped),
            "; ".join(errors) or None,
            self._status.discovery_seconds,
            "upnp" if mapped else None,
        )
        if not mapped and errors:
            raise UpnpError("; ".join(errors))

    async def close(self, timeout: float | None = None) -> None:
        """Stops renewing and deletes the mappings (bounded by ``timeout``,
        default ``call_timeout`` per mapping, capped at 5 s)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._fallback is not None:
            await self._fallback.close(timeout if timeout is not None else 3.0)
            self._ready.set()
            return
        gw = self.gateway
        mappings = self.status.mappings
        if gw is not None and mappings and not gw.broken:
            limit = timeout if timeout is not None else min(5.0, self.call_timeout * len(mappings))

            async def remove_all() -> None:
                for m in mappings:
                    try:
                        await gw.remove(m.protocol, m.external[1])
                    except UpnpError as e:
                        logger.warning("UPnP: could not remove %s: %s", m, e)

            try:
                await asyncio.wait_for(remove_all(), limit)
            except asyncio.TimeoutError:
                logger.warning("UPnP: removing mappings took over %.1f s; left to expire", limit)
        self._status = UpnpStatus(
            "closed", self.status.control_url, self.status.lan_address, self.status.external_ip
        )
        self._ready.set()
