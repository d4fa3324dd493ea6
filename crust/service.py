"""The asyncio service: listeners, connections, peers and events.

    async with crust.Service(crust.ServiceConfig(network="demo")) as svc:
        peer = await svc.connect(("127.0.0.1", 40000))
        await peer.send(b"hello")
        async for ev in svc.events():
            ...

A service listens for TCP and UDP on one port number (a random "live" port
above 1024 and, as in the original crust, a random backup port), answers
handshakes, dials peers (TCP first; UDP joins after a short head start; TCP
is kept when both succeed), and hands connections up as :class:`Peer`
objects. The application keeps a connection by calling :meth:`maintain` or
by using it; connections neither maintained nor used for
``ServiceConfig.prune_after`` seconds are closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from crust.admission import AcceptLogLimiter
from crust.asyncio.discovery import Discovery
from crust.asyncio.mapping import ContactNat
from crust.asyncio.stun import probe_listener
from crust.asyncio.tcp import TcpLink, TcpListener, dial_tcp
from crust.asyncio.traversal import PeerNotFound, Traversal
from crust.asyncio.udp import UdpListener
from crust.asyncio.upnp import PortMapper, UpnpStatus
from crust.config import ServiceConfig, parse_host_port
from crust.errors import (
    Attempt,
    ConnectError,
    ConnectionClosed,
    ConnectTimeout,
    CrustError,
    ListenerError,
    UnknownPeer,
)
from crust.events import (
    ConnectFailed,
    LanPeerFound,
    ListenerFailed,
    ListenerStarted,
    NatDetected,
    PortMapped,
    PortMappingFailed,
)
from crust.identity import PeerId

if TYPE_CHECKING:
    from crust.dht.directory import Directory
    from crust.dht.record import Record
from crust.nat.classify import Behaviour, NatBehaviour
from crust.node import CODE_SHUTDOWN, Charge, Node, Target
from crust.peer import Address, Peer
from crust.reach import Contacts
from crust.reflection import syn_cost
from crust.stats import ServiceStats, snapshot
from crust.subscriptions import Inbound, Subscription

__all__ = ["ListenerError", "Service", "UnknownPeer"]

logger = logging.getLogger(__name__)
#: SYNs a charged TCP dial may send before the address answers (the first,
#: and the kernel's retransmissions at 1, 3 and 7 s).
_SYNS_PER_DIAL = 4
#: Seconds a charged dial may take: SYNs leave at 0, 1 and 3 s within it.
_CHARGED_DIAL_LIMIT = 5.0

#: Seconds :meth:`Service.close` waits for peers to take what was queued
#: for them before closing them at once.
CLOSE_WAIT = 2.0
_UDP_BUFFER = 4 << 20


def _bind_pair(host: str, port: int, tries: int = 50) -> tuple[socket.socket, socket.socket]:
    """A UDP and a TCP socket bound to the same port number, so one address
    reaches both transports. Port 0: a random free port above 1024."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    last: OSError | None = None
    for _ in range(tries if port == 0 else 1):
        udp = socket.socket(family, socket.SOCK_DGRAM)
        tcp = socket.socket(family, socket.SOCK_STREAM)
        try:
            if family == socket.AF_INET6:
                udp.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                tcp.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            # TCP hole punching connects from this port while it listens
            # (crust.asyncio.tcp_punch): both sockets need SO_REUSEPORT.
            tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            # Bursts of datagrams arrive between two reads of the event loop;
            # the default ~200 KiB buffer drops them at a few hundred MB/s.
            # (The kernel caps this at net.core.rmem_max / wmem_max.)
            for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
                udp.setsockopt(socket.SOL_SOCKET, opt, _UDP_BUFFER)
            udp.bind((host, port))
            chosen = udp.getsockname()[1]
            tcp.bind((host, chosen))
            tcp.listen(512)
            udp.setblocking(False)
            tcp.setblocking(False)
            return udp, tcp
        except OSError as e:
            udp.close()
            tcp.close()
            last = e
    raise ListenerError(f"cannot listen on {host} port {port or 'random'}: {last}")


def _connect_error(message: str, cause: BaseException) -> ConnectError:
    """What ``connect`` raises for ``cause``: its attempts kept (or the
    cause as the one attempt), a :class:`ConnectTimeout` when the deadline
    passed or every attempt timed out."""
    attempts = cause.attempts if isinstance(cause, ConnectError) else ()
    if not attempts:
        attempts = (Attempt("connect", cause),)
    # asyncio.TimeoutError is TimeoutError only from Python 3.11.
    timeouts = (TimeoutError, asyncio.TimeoutError)
    if all(isinstance(a.error, timeouts) for a in attempts):
        return ConnectTimeout(message, attempts)
    return ConnectError(message, attempts)


class Service(Node):
    """A crust node. Use as ``async with Service(config) as svc``.

    The user's facade over the node core (:class:`crust.node.Node`, which
    holds the peers and their bookkeeping) and the assembly of the parts:
    the listeners, discovery, traversal, contacts, the NAT probes."""

    def __init__(self, config: ServiceConfig | None = None, **overrides: Any) -> None:
        super().__init__(config, **overrides)
        self._udp: list[UdpListener] = []
        self._tcp: list[TcpListener] = []
        self.udp_ports = self._udp
        self.tcp_ports = self._tcp
        #: LAN beacon, bootstrap cache, bootstrapping and contact gossip.
        self.discovery: Discovery = Discovery(self)
        if self.config.blacklist:
            self.blacklist(*self.config.blacklist)
        #: NAT traversal: connect by id through mutual peers, introduce, relay.
        self.traversal: Traversal = Traversal(self, self._udp)
        #: Contacts joined with :meth:`join`: kept, and rejoined when lost.
        self.contacts: Contacts = Contacts(self, self.discovery._ask_bootstrap)
        #: Port mapper (``config.upnp``/``config.natpmp``); ``upnp.status``
        #: says what it got and ``upnp.status.method`` by which protocol.
        self.upnp: PortMapper | None = None
        self._stun_task: asyncio.Task[None] | None = None
        #: Our NAT as the contacts we joined see it (crust.asyncio.mapping).
        self.contact_nat: ContactNat = ContactNat(self, self._udp)
        self._accept_log_limiter = AcceptLogLimiter(self._count_accept_error)
        #: The DHT (``config.dht``): our record, and others' (crust.dht).
        self.dht: Directory | None = None

    # -- life cycle ----------------------------------------------------------

    async def __aenter__(self) -> Service:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        """Open the listeners (live and backup ports, TCP and UDP each)."""
        if self._started:
            return
        self._started = True
        if self.config.tcp:
            logging.getLogger("asyncio").addFilter(self._accept_log_limiter)
        roles = [("live", self.config.port)]
        if self.config.backup_port:
            roles.append(("backup", 0))
        for host in self.config.hosts:
            for role, port in roles:
                try:
                    udp, tcp = _bind_pair(host, port)
                except ListenerError as e:
                    self.emit(ListenerFailed("udp+tcp", (host, port), str(e)))
                    if role == "live":
                        await self.close()
                        raise
                    continue
                if self.config.udp:
                    ul = UdpListener(self, udp, role)
                    self._udp.append(ul)
                    self.emit(ListenerStarted("udp", ul.address, role))
                else:
                    udp.close()
                if self.config.tcp:
                    tl = await TcpListener.start(self, tcp, role)
                    self._tcp.append(tl)
                    self.emit(ListenerStarted("tcp", tl.address, role))
                else:
                    tcp.close()
        await self.discovery.start()
        if self.config.dht:
            await self._start_dht()
        if self.config.upnp or self.config.natpmp:
            self._start_upnp()
        if self.config.stun_servers:
            self._stun_task = asyncio.create_task(self._probe_stun())
        logger.info("service %s listening on %s", self.id.short, self.endpoints)

    async def _start_dht(self) -> None:
        from crust.dht.directory import Directory  # deferred: optional extra

        try:
            dht = Directory(self)  # raises at once when libtorrent is missing
            await dht.start()
        except CrustError:
            await self.close()
            raise
        self.dht = dht

    async def close(self) -> None:
        """Close every connection gracefully (bounded wait), then stop.
        From the first moment no new peer is accepted: the TCP listeners
        stop accepting, handshakes are neither answered nor completed, and
        ``connect`` fails. Every peer gets a close: gracefully within
        :data:`CLOSE_WAIT` seconds, at once after that."""
        if self._closing:
            return
        self._closing = True
        for tl in self._tcp:
            tl.stop_accepting()
        if self.upnp is not None:
            await self.upnp.close()
        if self._stun_task is not None:
            self._stun_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._stun_task
        self.contact_nat.close()
        if self.dht is not None:
            # First, while the peers (our record's contacts) are still there.
            await self.dht.close()
        await self.contacts.close()
        await self.discovery.close()
        self._retiring.close_all()
        peers = list(self._peers.values())
        for p in peers:
            self._close_peer(p, CODE_SHUTDOWN, graceful=True)
        if peers:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(
                    asyncio.gather(*(p.wait_closed() for p in peers)), timeout=CLOSE_WAIT
                )
        # Peers that did not finish in time (gone, or too slow to take
        # their data) still get a close, sent before the sockets close.
        for p in list(self._peers.values()):
            self._close_peer(p, CODE_SHUTDOWN, graceful=False)
        for ul in self._udp:
            ul.flush_now()
        self._pruner.close()
        self.traversal.close()
        for ul in self._udp:
            ul.close()
        for tl in self._tcp:
            await tl.close()
        for link in list(self.tcp_links):
            if isinstance(link, TcpLink):  # (all are: the TCP transport adds them)
                link.close_transport()
        await asyncio.sleep(0)  # let the transports finish closing
        self._udp.clear()
        self._tcp.clear()
        logging.getLogger("asyncio").removeFilter(self._accept_log_limiter)
        self._hub.close()
        self._wake_accept()

    async def nat_known(self, timeout: float = 10.0) -> NatBehaviour | None:
        """:attr:`nat` once the STUN probe (``config.stun_servers``) and
        the probes of the contacts joined so far are done, waiting at most
        ``timeout`` seconds for them; None when nobody answered (no STUN
        server, no contact joined), or on time-out. Whether our NAT is
        symmetric decides how connect-by-id punches (birthday), so a node
        about to connect or be connected to by id may wait for it."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        task = self._stun_task
        if task is not None and not task.done():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(task), timeout)
        await self.contact_nat.wait(max(0.0, deadline - loop.time()))
        return self.nat

    async def _probe_stun(self) -> None:
        nat = await probe_listener(self._udp, self.config.stun_servers)
        if nat is None or (nat.mapping is Behaviour.UNKNOWN and self.nat is not None):
            # STUN could not classify the mapping: the contacts' view stays.
            if self.nat is None:
                self.nat = nat
            return
        self.nat = nat
        if nat.mapped is not None:
            self.emit(NatDetected(nat.reflexive, nat.kind, nat.mapping.value))

    def _start_upnp(self) -> None:
        # Only the live listeners are mapped: the backup port exists for
        # when the live one is taken locally, not as a second public door.
        ports: list[tuple[str, Address]] = []
        listeners: list[UdpListener | TcpListener] = [*self._udp, *self._tcp]
        for listener in listeners:
            host, port = listener.address[:2]
            if listener.role == "live" and ":" not in host and not host.startswith("127."):
                ports.append((listener.transport, (host, port)))
        if ports:
            methods = ["upnp"] if self.config.upnp else []
            if self.config.natpmp:
                methods += ["pcp", "natpmp"]
            gateway, gateway_port = self.config.natpmp_gateway_address()
            self.upnp = PortMapper(
                ports,
                lease=self.config.upnp_lease,
                on_ready=self._on_upnp_ready,
                methods=methods,
                gateway=gateway,
                gateway_port=gateway_port,
            )
            self.upnp.start()

    def _on_upnp_ready(self, status: UpnpStatus) -> None:
        for m in status.mappings:
            self.emit(PortMapped(m.protocol, m.internal, m.external, m.lease, m.method))
        if not status.mappings:
            self.emit(PortMappingFailed(status.error or "no mapping"))

    # -- what the application sees ------------------------------------------

    @property
    def reflexive_addresses(self) -> list[Address]:
        """Where connected peers saw our packets come from (our public
        address behind a NAT), as handshakes echo it: UDP observations
        first, most reported first (``traversal.reflexive`` has the details)."""
        rx = self.traversal.reflexive
        return list(dict.fromkeys(rx.addresses("udp") + rx.addresses("tcp")))

    @property
    def stun_addresses(self) -> list[Address]:
        """Where the STUN servers saw our live UDP port (one address behind
        an endpoint-independent NAT, one per server address otherwise); the
        contacts' view (``nat.source == "contacts"``) is not listed here."""
        nat = self.nat
        return list(nat.reflexive) if nat is not None and nat.source == "stun" else []

    @property
    def mapped_addresses(self) -> list[Address]:
        """Public addresses the gateway forwards to our live listeners
        (``config.upnp``, ``config.natpmp``), UDP mappings first; empty
        without mappings."""
        if self.upnp is None:
            return []
        ordered = sorted(self.upnp.mappings, key=lambda m: m.protocol != "udp")
        return list(dict.fromkeys(m.external for m in ordered))

    def events(self, *, messages: bool = True) -> Subscription:
        """A new subscription to this service's events: every event from now
        on, in order, until the service closes (then the iteration ends).
        Each call is its own subscription; several see the same events.

        With ``messages`` (the default) it also yields
        :class:`~crust.events.NewMessage` for peers the application does not
        read directly (see :class:`~crust.peer.Peer`), starting with the
        messages that arrived while nobody was there to take them. A
        message is credited back to its sender once every subscription that
        got it has yielded it, so a subscription that stops reading makes
        senders wait: subscribe with ``messages=False`` for monitoring.
        Other events a subscription holds unread are capped
        (``ServiceConfig.event_backlog``): past that it ends with
        :class:`~crust.errors.EventsOverflow`."""
        waiting: list[Inbound] = []
        if messages and not self._hub.wants_messages:
            for peer in self._unclaimed:
                waiting.extend(peer._take_waiting())
            self._unclaimed.clear()
            waiting.sort(key=lambda r: r.seq)
        return self._hub.subscribe(messages=messages, waiting=waiting)

    async def accept(self) -> Peer:
        """The next peer the application did not dial itself (it dialled us,
        or discovery found it), each once, in the order they connected
        (those already connected at the first call first), to be read
        directly: from then on its messages never appear as events. A peer
        that ended before being accepted, having sent nothing, is skipped.
        Raises :class:`ConnectionClosed` once the service is closed."""
        if not self._accepting:
            self._accepting = True
            for peer in self._peers.values():
                if peer.is_connected and not peer._dialled:
                    peer._direct = True
                    self._accept_queue.append(peer)
        while True:
            while self._accept_queue:
                peer = self._accept_queue.popleft()
                if peer.is_connected or peer._inbox:
                    return peer
            if self._closing:
                raise ConnectionClosed("the service is closed")
            waiter = self._accept_waiter
            if waiter is None or waiter.done():
                waiter = self._accept_waiter = asyncio.get_running_loop().create_future()
            await asyncio.shield(waiter)

    async def serve(self, handler: Callable[[Peer], Awaitable[None]]) -> None:
        """Run ``handler(peer)`` as a task for every peer :meth:`accept`
        gives, until the service closes; then cancel the handlers still
        running and return. A handler that raises is logged, not fatal."""
        tasks: set[asyncio.Task[None]] = set()

        async def run(peer: Peer) -> None:
            try:
                await handler(peer)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("serve: the handler failed for %r", peer)

        try:
            while True:
                try:
                    peer = await self.accept()
                except ConnectionClosed:
                    return
                task = asyncio.create_task(run(peer))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
        finally:
            for task in tasks:
                task.cancel()
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)

    async def join(self, target: Address | str, *, timeout: float | None = None) -> Peer:
        """Stay reachable through the node at ``target`` (``(host, port)`` or
        ``"host:port"``): connect, maintain the connection and ask it to
        keep us as a peer that joined through it, so others can connect to
        us by our id through it. Whenever the link is lost (the contact
        restarted...) it is dialled again with backoff, expecting the same
        peer id, until the service closes: ``ContactLost`` and
        ``ContactJoined`` events say how that goes (design note 0053).
        Raises as :meth:`connect` when the first connection fails."""
        if isinstance(target, str):
            target = parse_host_port(target)
        return await self.contacts.join(target, timeout)

    # connect() and dial() are the node core's (crust.node.Node): the facade
    # does their work here, over its transports.

    async def _connect(
        self, target: Target, peer_id: PeerId | None, limit: float, for_app: bool, charge: Charge
    ) -> Peer:
        """:meth:`connect` and :meth:`dial` (crust.node.Node._connect): by
        address, racing TCP and UDP, or by peer id through a rendezvous
        (traversal) or the peer's DHT record."""
        if not self._started or self._closing:
            raise CrustError("the service is not running: use `async with Service(...)`")
        try:
            addr, remote = self._resolve(target, peer_id)
        except UnknownPeer:
            # No address: rendezvous through a mutual peer (crust.asyncio.traversal).
            pid = target if isinstance(target, PeerId) else PeerId.parse(str(target))
            if not for_app:
                return await self._connect_by_id(pid, limit)
            self._app_dialling.add(pid)
            try:
                return await self._connect_by_id(pid, limit)
            finally:
                self._app_dialling.discard(pid)
        if remote is not None and (existing := self.connected_peer(remote)) is not None:
            return existing
        if self.is_blacklisted_address(addr) or (remote and self.is_blacklisted_id(remote)):
            raise ConnectError(f"{target} is blacklisted")
        if charge is not None:
            # Bounded, so that TCP's SYN retransmissions stay within what
            # was charged for them (_SYNS_PER_DIAL).
            limit = min(limit, _CHARGED_DIAL_LIMIT)
        try:
            # The handshakes time out by themselves, with their reasons; the
            # outer bound only guards against a stuck TCP connect.
            peer = await asyncio.wait_for(
                self._race(addr, remote, limit, for_app, charge), limit + 1.0
            )
        except (ConnectionError, OSError, asyncio.TimeoutError) as e:
            why = str(e) or f"no answer within {limit} s"
            self.emit(ConnectFailed(f"{addr[0]}:{addr[1]}", why))
            raise _connect_error(f"connect to {addr[0]}:{addr[1]} failed: {why}", e) from None
        if for_app:
            # The application picked this address: a rendezvous peer it
            # may use without a reflection budget (crust.reflection).
            peer.chosen = True
        return peer

    async def _connect_by_id(self, pid: PeerId, limit: float) -> Peer:
        if (existing := self.connected_peer(pid)) is not None:
            return existing
        if self.is_blacklisted_id(pid):
            raise ConnectError(f"{pid} is blacklisted")
        try:
            try:
                return await asyncio.wait_for(self.traversal.connect(pid, limit), limit + 1.0)
            except PeerNotFound:
                if self.dht is None:
                    raise
                # No mutual peer: where the peer's own DHT record says to try.
                from crust.dht.connect import connect_by_record  # deferred: optional

                return await asyncio.wait_for(connect_by_record(self, pid, limit), limit + 1.0)
        except PeerNotFound as e:
            self.emit(ConnectFailed(str(pid), str(e)))
            raise UnknownPeer(f"no known address for peer {pid}: {e}") from None
        except (ConnectionError, OSError, asyncio.TimeoutError) as e:
            why = str(e) or f"no path within {limit} s"
            self.emit(ConnectFailed(str(pid), why))
            raise _connect_error(f"connect to {pid.short} failed: {why}", e) from None

    def peers_on_lan(self) -> list[LanPeerFound]:
        """Nodes of our network the LAN beacon heard recently (their ids
        and listening endpoints)."""
        return self.discovery.peers_on_lan()

    def stats(self) -> ServiceStats:
        """A structured snapshot for monitoring (JSON-serialisable): peers,
        connection counters, traffic totals, handshake and socket counters,
        per-peer stats. Keys: ``crust.stats.STATS_DOC``."""
        return snapshot(self, self._counters)

    async def resolve(self, peer_id: PeerId | str, *, fresh: bool = False) -> Record:
        """``peer_id``'s endpoint record from the DHT (``config.dht``):
        verified, cached until it expires (``fresh``: look it up again).
        Raises :class:`~crust.dht.directory.RecordNotFound` when there is
        none, :class:`CrustError` when the DHT is off."""
        if self.dht is None:
            raise CrustError("the DHT is off: set ServiceConfig.dht (pip install 'crust[dht]')")
        pid = peer_id if isinstance(peer_id, PeerId) else PeerId.parse(peer_id)
        return await self.dht.resolve(pid, self.config.connect_timeout, fresh=fresh)

    def _count_accept_error(self) -> None:
        self.tcp_preauth.counts["accept_errors"] += 1

    # -- internals -------------------------------------------------------------

    def _resolve(
        self, target: Address | PeerId | str, peer_id: PeerId | None
    ) -> tuple[Address, PeerId | None]:
        if isinstance(target, tuple):
            if len(target) < 2 or not isinstance(target[1], int):
                raise ValueError(f"address must be (host, port), got {target!r}")
            return (str(target[0]), int(target[1])), peer_id
        if isinstance(target, str):
            text = target.strip()
            # "host:port" or "[v6]:port"; a peer id (base32) has no colon.
            if text.startswith("[") or text.count(":") == 1:
                host, _, port = text.rpartition(":")
                try:
                    return (host.strip("[]"), int(port)), peer_id
                except ValueError:
                    raise ValueError(f"bad address {target!r}: expected host:port") from None
        pid = target if isinstance(target, PeerId) else PeerId.parse(target)
        addr = self._addresses.get(pid)
        if addr is None:
            raise UnknownPeer(
                f"no known address for peer {pid}: connect by (host, port) first, "
                "or let discovery find it"
            )
        return addr, pid

    async def _race(
        self,
        addr: Address,
        remote: PeerId | None,
        timeout: float,
        for_app: bool,
        charge: Callable[[int], bool] | None = None,
    ) -> Peer:
        """TCP first; UDP joins after the head start; the first handshake
        to complete wins and the other attempt is cancelled."""
        errors: list[Attempt] = []
        tasks: dict[asyncio.Task[Any], str] = {}
        # Before the address answers, TCP sends SYNs only: the first and the
        # kernel's retransmissions (after 1 s and 3 s) within a few seconds.
        if self.config.tcp and (charge is None or charge(syn_cost(addr[0], _SYNS_PER_DIAL))):
            tasks[asyncio.create_task(dial_tcp(self, addr, remote, timeout))] = "tcp"
        elif self.config.tcp:
            errors.append(
                Attempt("tcp", ConnectError("the reflection budget of who named it is spent"))
            )
        udp = self._udp_for(addr)
        head_start = self.config.tcp_head_start if tasks else 0.0
        udp_task: asyncio.Task[Any] | None = None
        try:
            while True:
                pending = set(tasks)
                # While UDP has not joined yet, wait only for the head start.
                wait = head_start if udp is not None and udp_task is None else None
                if not pending and wait is None:
                    raise ConnectError(
                        "; ".join(map(str, errors)) or "no transport to try", tuple(errors)
                    )
                done: set[asyncio.Task[Any]] = set()
                if pending:
                    done, _ = await asyncio.wait(
                        pending, timeout=wait, return_when=asyncio.FIRST_COMPLETED
                    )
                elif wait:
                    await asyncio.sleep(wait)
                if (
                    udp is not None
                    and udp_task is None
                    and (not done or any(t.exception() for t in done))
                ):
                    udp_task = asyncio.create_task(udp.dial(addr, remote, timeout, charge))
                    tasks[udp_task] = "udp"
                for t in done:
                    kind = tasks.pop(t)
                    if (exc := t.exception()) is not None:
                        errors.append(Attempt(kind, exc))
                        continue
                    if kind == "tcp":
                        link, result = t.result()
                        link.establish(result)
                    else:
                        assert udp is not None
                        result = t.result()
                        link = udp.establish(result, addr)
                    peer = self.on_established(link, result, incoming=False, for_app=for_app)
                    if peer is None:
                        raise ConnectError(
                            f"{kind}: refused (blacklisted, self, or connection limit)"
                        )
                    return peer
        finally:
            for t in tasks:
                t.cancel()

    def _udp_for(self, addr: Address) -> UdpListener | None:
        want_v6 = ":" in addr[0]
        for ul in self._udp:
            if (":" in ul.address[0]) == want_v6:
                return ul
        return None
