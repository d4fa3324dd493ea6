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
import ipaddress
import logging
import resource
import socket
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any

from crust import _core, control
from crust.admission import AcceptLogLimiter, PreAuthTcp
from crust.asyncio.discovery import Discovery
from crust.asyncio.mapping import ContactNat
from crust.asyncio.stun import probe_listener
from crust.asyncio.tcp import TcpLink, TcpListener, dial_tcp
from crust.asyncio.traversal import PeerNotFound, Traversal
from crust.asyncio.udp import UdpListener
from crust.asyncio.upnp import PortMapper, UpnpStatus
from crust.capacity import make_room
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
    Event,
    LanPeerFound,
    ListenerFailed,
    ListenerStarted,
    LostPeer,
    MessageDropped,
    NatDetected,
    NewMessage,
    NewPeer,
    PeerMisbehaving,
    PortMapped,
    PortMappingFailed,
)
from crust.handshake import (
    CIPHERS,
    CookiePolicy,
    HandshakeResult,
    Responder,
    TransportParams,
)
from crust.handshake.driver import HandshakeDriver, install_keys
from crust.identity import Identity, PeerId

if TYPE_CHECKING:
    from crust.dht.directory import Directory
    from crust.dht.record import Record
from crust.nat.classify import Behaviour, NatBehaviour
from crust.nat.mapping import ProbeAnswerer
from crust.peer import MESSAGES_HELD, Address, Link, Peer, credit_batch, now_us
from crust.pruning import Pruner
from crust.reach import Contacts
from crust.reflection import SendBudget, syn_cost
from crust.retirement import Retirements
from crust.stats import ServiceCounters, ServiceStats, snapshot
from crust.subscriptions import EventHub, Inbound, Subscription

__all__ = ["ListenerError", "Service", "UnknownPeer"]

logger = logging.getLogger(__name__)
#: SYNs a charged TCP dial may send before the address answers (the first,
#: and the kernel's retransmissions at 1, 3 and 7 s).
_SYNS_PER_DIAL = 4
#: Seconds a charged dial may take: SYNs leave at 0, 1 and 3 s within it.
_CHARGED_DIAL_LIMIT = 5.0

_CIPHER_NAMES = {aead: name for name, aead in CIPHERS.items()}

# An old connection the peer lost (it re-dialled: same transport and
# initiator) is closed once the peer used the new one, checked every
# _RETIRE_POLL seconds, or after _RETIRE_WAIT at the latest. Other
# duplicates are retired by the RETIRE exchange (crust.retirement).
_RETIRE_POLL = 0.02
_RETIRE_WAIT = 5.0

_RETIRE_KIND = bytes((control.ControlKind.RETIRE,))

# Application close codes the service itself uses.
CODE_DISCONNECT = 0
CODE_DUPLICATE = 1
CODE_BLACKLISTED = 2
CODE_PRUNED = 3
CODE_SHUTDOWN = 4
CODE_FULL = 5

_CLOSE_REASONS = {
    _core.CLOSE_LOCAL: "closed by us",
    _core.CLOSE_REMOTE: "closed by the peer",
    _core.CLOSE_IDLE: "idle timeout: nothing heard from the peer",
    _core.CLOSE_PROTOCOL: "protocol violation",
    _core.CLOSE_UNREACHABLE: "peer unreachable: probes unanswered after an ICMP error",
    _core.CLOSE_LOST: "peer stopped answering: data unacknowledged",
}
_CODE_REASONS = {
    CODE_DUPLICATE: "duplicate connection replaced",
    CODE_BLACKLISTED: "blacklisted",
    CODE_PRUNED: "pruned: neither maintained nor used",
    CODE_SHUTDOWN: "service shut down",
    CODE_FULL: "connection limit: made room for another peer",
}
_MISBEHAVING_SOURCES = 4096
# Addresses of peers we dialled, kept for connect(peer_id).
_KNOWN_ADDRESSES = 4096
# Ended peers whose unread messages (no reader took them) are kept for a
# later events() subscription.
_UNCLAIMED_ENDED_PEERS = 256
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


def _descriptor_share() -> int:
    """A quarter of the process's descriptor limit (16 at least): what
    unauthenticated TCP streams may hold, so a flood never takes the node
    to its limit, where accept() fails for everyone."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return 1 << 30 if soft == resource.RLIM_INFINITY else max(16, soft // 4)


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


class Service:
    """A crust node. Use as ``async with Service(config) as svc``."""

    def __init__(self, config: ServiceConfig | None = None, **overrides: Any) -> None:
        base = config if config is not None else ServiceConfig()
        self.config = base.replace(**overrides) if overrides else base
        self.identity: Identity = self.config.identity or Identity.load_or_create(
            self.config.identity_path
        )
        # Every events() call is a subscription (crust.subscriptions).
        self._hub = EventHub(self.config.event_backlog)
        # accept(): once the application asked, new peers it did not dial
        # itself wait here, read directly (never as NewMessage events).
        self._accepting = False
        self._accept_queue: deque[Peer] = deque()
        self._accept_waiter: asyncio.Future[None] | None = None
        # Peer ids the application is connecting to by id right now: the
        # peer goes to it, not to accept().
        self._app_dialling: set[PeerId] = set()
        # Peers (connected or not) holding messages no reader took yet.
        self._unclaimed: set[Peer] = set()
        # Of those, the ones that ended (oldest first): kept for a later
        # subscription, but only so many (_UNCLAIMED_ENDED_PEERS).
        self._unclaimed_ended: deque[Peer] = deque()
        self._udp: list[UdpListener] = []
        self._tcp: list[TcpListener] = []
        self._peers: dict[PeerId, Peer] = {}
        self._by_link: dict[int, Peer] = {}
        # Connections closing (ours lost, or duplicates retired) until their
        # transport reports them done (on_link_done).
        self._retired: dict[int, Link] = {}
        # Duplicate connections on their way out (crust.retirement).
        self._retiring = Retirements(self._retire)
        # Where each peer we dialled was (connect(peer_id) dials it again):
        # the most recent _KNOWN_ADDRESSES, as gossip can make us dial
        # any number of ids over a node's life.
        self._addresses: OrderedDict[PeerId, Address] = OrderedDict()
        self._blacklist_ids: set[PeerId] = set()
        self._blacklist_nets: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        self._failures: OrderedDict[Address, int] = OrderedDict()
        self._engine_configs: dict[tuple[tuple[str, Any], ...], _core.Config] = {}
        # Before the parts below, which register their control handlers.
        self._control_handlers: dict[int, Callable[[Peer, bytes], None]] = {}
        #: What peers may make us send to addresses nobody verified
        #: (traversal candidates, gossip and beacon dials): crust.reflection.
        self.reflection = SendBudget()
        #: LAN beacon, bootstrap cache, bootstrapping and contact gossip.
        self.discovery = Discovery(self)
        if self.config.blacklist:
            self.blacklist(*self.config.blacklist)
        #: NAT traversal: connect by id through mutual peers, introduce, relay.
        self.traversal = Traversal(self)
        #: Contacts joined with :meth:`join`: kept, and rejoined when lost.
        self.contacts = Contacts(self, self.discovery._ask_bootstrap)
        #: Port mapper (``config.upnp``/``config.natpmp``); ``upnp.status``
        #: says what it got and ``upnp.status.method`` by which protocol.
        self.upnp: PortMapper | None = None
        #: What the STUN servers (``config.stun_servers``) showed for the live
        #: UDP port: reflexive address and mapping behaviour; when they did
        #: not classify the mapping (or none is configured), what the
        #: contacts we joined showed (``nat.source``, design note 0062);
        #: None until known.
        self.nat: NatBehaviour | None = None
        self._stun_task: asyncio.Task[None] | None = None
        #: Answers to Binding requests on our UDP ports: where we see the
        #: asker, within budgets (crust.nat.mapping).
        self.probe_answers = ProbeAnswerer()
        #: Our NAT as the contacts we joined see it (crust.asyncio.mapping).
        self.contact_nat = ContactNat(self)
        # Idle unmaintained connections are closed: one timer for all.
        self._pruner = Pruner(self.config.prune_after, self._prune)
        #: Open TCP streams (handshaking or connected), closed with the service.
        self.tcp_links: set[TcpLink] = set()
        #: Inbound TCP streams not yet authenticated: capped, with a deadline.
        self.tcp_preauth = PreAuthTcp(
            self.config.tcp_unauthenticated_per_source,
            min(self.config.tcp_unauthenticated_max, _descriptor_share()),
        )
        self._accept_log_limiter = AcceptLogLimiter(self._count_accept_error)
        self._counters = ServiceCounters()
        #: The DHT (``config.dht``): our record, and others' (crust.dht).
        self.dht: Directory | None = None
        self._started = False
        self._closing = False

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
                    self._emit(ListenerFailed("udp+tcp", (host, port), str(e)))
                    if role == "live":
                        await self.close()
                        raise
                    continue
                if self.config.udp:
                    ul = UdpListener(self, udp, role)
                    self._udp.append(ul)
                    self._emit(ListenerStarted("udp", ul.address, role))
                else:
                    udp.close()
                if self.config.tcp:
                    tl = await TcpListener.start(self, tcp, role)
                    self._tcp.append(tl)
                    self._emit(ListenerStarted("tcp", tl.address, role))
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

    @property
    def closing(self) -> bool:
        """True once :meth:`close` started: no new peer is accepted."""
        return self._closing

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
            self._emit(NatDetected(nat.reflexive, nat.kind, nat.mapping.value))

    def on_contact_nat(self, nat: NatBehaviour) -> None:
        """What the contacts' answers showed (crust.asyncio.mapping): our
        :attr:`nat` unless STUN classified the mapping."""
        old = self.nat
        if old is not None and old.source == "stun" and old.mapping is not Behaviour.UNKNOWN:
            return
        self.nat = nat
        if old is None or (old.kind, old.mapping, old.reflexive) != (
            nat.kind, nat.mapping, nat.reflexive,
        ):  # fmt: skip
            self._emit(NatDetected(nat.reflexive, nat.kind, nat.mapping.value, "contacts"))

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
            self._emit(PortMapped(m.protocol, m.internal, m.external, m.lease, m.method))
        if not status.mappings:
            self._emit(PortMappingFailed(status.error or "no mapping"))

    # -- what the application sees ------------------------------------------

    @property
    def id(self) -> PeerId:
        """This node's peer id."""
        return self.identity.peer_id

    @property
    def endpoints(self) -> list[Address]:
        """Listening addresses (each serves both TCP and UDP)."""
        seen: list[Address] = []
        listeners: list[UdpListener | TcpListener] = [*self._udp, *self._tcp]
        for listener in listeners:
            if listener.address not in seen:
                seen.append(listener.address)
        return seen

    @property
    def peers(self) -> list[Peer]:
        """The peers connected now."""
        return [p for p in self._peers.values() if p.is_connected]

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

    def _wake_accept(self) -> None:
        w = self._accept_waiter
        if w is not None and not w.done():
            w.set_result(None)

    def maintain(self, peer: Peer) -> None:
        """Keep this connection even while idle (never pruned)."""
        peer.maintained = True
        # Out of the pruner now rather than when its entry comes due: a
        # node that maintains 100,000 peers does no per-peer work for them.
        self._pruner.forget(peer)

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

    async def disconnect(self, peer: Peer, *, timeout: float = 5.0) -> None:
        """Close gracefully: queued messages are delivered first."""
        self._close_peer(peer, CODE_DISCONNECT, graceful=True)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(peer.wait_closed(), timeout)

    async def connect(
        self,
        target: Address | PeerId | str,
        *,
        peer_id: PeerId | None = None,
        timeout: float | None = None,
    ) -> Peer:
        """Connect to ``target``: a ``(host, port)`` address, ``"host:port"``,
        or the :class:`PeerId` (or its string) of a peer whose address is
        known. ``peer_id`` pins the expected identity (and enables the 1-RTT
        IK handshake). Returns the :class:`Peer` (an existing connection to
        the same peer is reused). Raises :class:`~crust.errors.ConnectError`
        (a ``ConnectionError``) carrying every attempt's failure when none
        succeeds, :class:`~crust.errors.ConnectTimeout` when they ran out of
        time, :class:`~crust.errors.UnknownPeer` for a peer id nobody could
        introduce us to."""
        return await self._connect(target, peer_id=peer_id, timeout=timeout, for_app=True)

    async def _connect(
        self,
        target: Address | PeerId | str,
        *,
        peer_id: PeerId | None = None,
        timeout: float | None = None,
        for_app: bool = False,
        charge: Callable[[int], bool] | None = None,
    ) -> Peer:
        """:meth:`connect`; ``for_app``: the peer goes to the caller, not to
        :meth:`accept` (bootstrapping connects for the node instead).
        ``charge``: a peer named the address (gossip, beacon), so what is
        sent before it answers is charged to that peer (crust.reflection)."""
        if not self._started or self._closing:
            raise CrustError("the service is not running: use `async with Service(...)`")
        try:
            addr, remote = self._resolve(target, peer_id)
        except UnknownPeer:
            # No address: rendezvous through a mutual peer (crust.asyncio.traversal).
            pid = target if isinstance(target, PeerId) else PeerId.parse(str(target))
            if not for_app:
                return await self._connect_by_id(pid, timeout or self.config.connect_timeout)
            self._app_dialling.add(pid)
            try:
                return await self._connect_by_id(pid, timeout or self.config.connect_timeout)
            finally:
                self._app_dialling.discard(pid)
        if remote is not None:
            existing = self._peers.get(remote)
            if existing is not None and existing.is_connected:
                return existing
        if self.is_blacklisted_address(addr) or (remote and remote in self._blacklist_ids):
            raise ConnectError(f"{target} is blacklisted")
        limit = timeout or self.config.connect_timeout
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
            self._emit(ConnectFailed(f"{addr[0]}:{addr[1]}", why))
            raise _connect_error(f"connect to {addr[0]}:{addr[1]} failed: {why}", e) from None
        if for_app:
            # The application picked this address: a rendezvous peer it
            # may use without a reflection budget (crust.reflection).
            peer.chosen = True
        return peer

    async def _connect_by_id(self, pid: PeerId, limit: float) -> Peer:
        existing = self._peers.get(pid)
        if existing is not None and existing.is_connected:
            return existing
        if pid in self._blacklist_ids:
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
            self._emit(ConnectFailed(str(pid), str(e)))
            raise UnknownPeer(f"no known address for peer {pid}: {e}") from None
        except (ConnectionError, OSError, asyncio.TimeoutError) as e:
            why = str(e) or f"no path within {limit} s"
            self._emit(ConnectFailed(str(pid), why))
            raise _connect_error(f"connect to {pid.short} failed: {why}", e) from None

    # -- blacklist -------------------------------------------------------------

    def blacklist(self, *targets: PeerId | str) -> None:
        """Blacklist peer ids and/or addresses and networks
        (``"192.0.2.7"``, ``"2001:db8::/32"``). Matching connections are
        dropped at once; blacklisted sources get no answer."""
        for t in targets:
            if isinstance(t, PeerId):
                self._blacklist_ids.add(t)
                continue
            try:
                self._blacklist_nets.append(ipaddress.ip_network(t, strict=False))
            except ValueError:
                self._blacklist_ids.add(PeerId.parse(t))
        for p in list(self._peers.values()):
            if p.id in self._blacklist_ids or self.is_blacklisted_address(p.address):
                self._close_peer(p, CODE_BLACKLISTED, graceful=False)

    def is_blacklisted_id(self, peer_id: PeerId) -> bool:
        return peer_id in self._blacklist_ids

    def peers_on_lan(self) -> list[LanPeerFound]:
        """Nodes of our network the LAN beacon heard recently (their ids
        and listening endpoints)."""
        return self.discovery.peers_on_lan()

    def is_blacklisted_address(self, addr: Address) -> bool:
        if not self._blacklist_nets:
            return False
        try:
            ip = ipaddress.ip_address(addr[0])
        except ValueError:
            return False
        return any(ip in net for net in self._blacklist_nets)

    def stats(self) -> ServiceStats:
        """A structured snapshot for monitoring (JSON-serialisable): peers,
        connection counters, traffic totals, handshake and socket counters,
        per-peer stats. Keys: ``crust.stats.STATS_DOC``."""
        return snapshot(self, self._counters)

    # -- used by the transports ---------------------------------------------

    def _params(self) -> TransportParams:
        cfg = self.config.engine_config()
        return TransportParams(
            max_message_size=cfg.max_message_size,
            recv_window=cfg.recv_window,
            aeads=self.config.aeads(),
        )

    def make_responder(self) -> Responder:
        responder = Responder(
            self.identity,
            self.config.network,
            params=self._params(),
            cookie_policy=CookiePolicy(rate=self.config.cookie_rate),
            # Remember each handshake for as long as a dialler with our
            # timeout may repeat its initiation: a copy arriving after the
            # record expired would complete a second, orphaned connection.
            pending_timeout_us=int(max(15.0, self.config.connect_timeout) * 1e6),
        )
        self._counters.responders.append(responder)
        return responder

    def make_driver(
        self,
        *,
        responder: Responder | Callable[[], Responder] | None = None,
        accept: bool = True,
        reliable: bool = False,
        admit: Callable[[Address], bool] | None = None,
        **engine: Any,
    ) -> HandshakeDriver:
        """A handshake driver for one transport endpoint: our identity,
        network and parameters, ``responder`` (default: a new one from
        :meth:`make_responder`, made when the first stranger's handshake
        arrives) and engine connections from :meth:`make_connection` with
        the ``engine`` overrides."""
        if responder is None and accept:
            responder = self.make_responder
        return HandshakeDriver(
            self.identity,
            self.config.network,
            # A shared responder's parameters are ours already (a TCP
            # stream's driver then costs no engine Config to build).
            params=responder.params if isinstance(responder, Responder) else self._params(),
            responder=responder,
            accept=accept,
            make_connection=lambda result, now: self._new_connection(result, now, engine),
            reliable=reliable,
            admit=admit,
        )

    def make_connection(self, result: HandshakeResult, **engine: Any) -> _core.Connection:
        """The engine connection of a completed handshake, keys installed
        (what a :meth:`make_driver` driver reports)."""
        return install_keys(self._new_connection(result, now_us(), engine), result)

    def _new_connection(
        self, result: HandshakeResult, now: int, engine: dict[str, Any]
    ) -> _core.Connection:
        # One engine Config per set of overrides (the core copies it into
        # each connection): building it was a per-handshake cost.
        key = tuple(sorted(engine.items()))
        cfg = self._engine_configs.get(key)
        if cfg is None:
            cfg = self._engine_configs[key] = self.config.engine_config(**engine)
        conn = _core.Connection(result.local_cid, result.remote_cid, now, cfg)
        # Messages stay charged to the window until the application has
        # them; at most MESSAGES_HELD are handed up ahead of it.
        conn.set_manual_credit(True)
        conn.set_message_budget(MESSAGES_HELD)
        return conn

    def on_established(
        self, link: Link, result: HandshakeResult, *, incoming: bool, for_app: bool = False
    ) -> Peer | None:
        """A handshake completed and its engine connection exists: hand the
        peer up, or resolve a duplicate by a rule both ends agree on.
        ``for_app``: the application's own connect() dialled it."""
        pid = result.peer_id
        if self._closing:
            # A handshake that completed while we shut down (a dial in
            # flight, or a peer that reconnected): no new peer now.
            self._close_link(link, CODE_SHUTDOWN, graceful=False)
            return None
        if pid in self._blacklist_ids or self.is_blacklisted_address(link.address):
            self._close_link(link, CODE_BLACKLISTED, graceful=False)
            return None
        if pid == self.id:
            self._close_link(link, CODE_DUPLICATE, graceful=False)
            return None
        self.traversal.on_established(link, result)
        initiator = pid if incoming else self.id
        existing = self._peers.get(pid)
        if existing is not None and existing.is_connected:
            old_init = existing.id if existing.incoming else self.id
            new_key = (not link.path.endswith("-tcp"), bytes(initiator))
            old_key = (not existing.path.endswith("-tcp"), bytes(old_init))
            # Same transport and initiator: the peer dialled again, because
            # its copy of the old connection is gone (the answer to its
            # first try was lost). The old one never heard a packet then; a
            # replayed handshake, by contrast, must not evict a live one.
            orphan = existing._link.conn.stats()["rx_packets"] == 0
            if new_key < old_key or (new_key == old_key and orphan):
                old, old_result = existing._link, existing.extra
                existing._link = link
                existing.incoming = incoming
                existing.extra = result
                self._by_link[id(link)] = existing
                if new_key != old_key and isinstance(old_result, HandshakeResult):
                    # Both ends chose: each may have sent on the old one.
                    self._by_link.pop(id(old), None)
                    self._retiring.begin(old, existing, old_result)
                else:
                    # The peer lost its copy of the old one: nothing comes
                    # on it, but closed too early our close could reach
                    # the peer before its copy of the new one exists.
                    self._retire_when_confirmed(old, link)
                existing._on_writable()  # a sender blocked on the old one retries
                existing.why = _path_why(link, incoming) + " (replaced a duplicate connection)"
                self.discovery.on_link_replaced(existing)
            elif new_key != old_key:
                # The peer may have sent on this one (its first) already.
                self._retiring.begin(link, existing, result)
            else:
                # A replayed handshake (or a second dial while the first
                # lives): nothing was sent on it.
                self._retire(link)
            return existing
        if not self._make_room(link):
            return None
        peer = Peer(pid, link, incoming=incoming, extra=result, owner=self)
        # Connect by id replaces it with the story of the race (traversal).
        peer.why = _path_why(link, incoming)
        peer._publish = self._hub.publish_message
        peer._credit_batch = credit_batch(self.config.receive_window())
        peer.cipher = _CIPHER_NAMES.get(result.keys.aead, str(result.keys.aead))
        self._peers[pid] = peer
        self._by_link[id(link)] = peer
        self._pruner.watch(peer)
        if not incoming:
            self._remember_address(pid, link.address)
        peer._dialled = for_app or pid in self._app_dialling
        if self._accepting and not peer._dialled:
            # Read directly from birth: none of its messages becomes an event.
            peer._direct = True
            self._accept_queue.append(peer)
            self._wake_accept()
        self._emit(NewPeer(peer, incoming, link.path))
        self.discovery.on_new_peer(peer)
        return peer

    def _make_room(self, link: Link) -> bool:
        """Apply the connection caps to a new connection (crust.capacity):
        evict who gives way, or refuse it when nobody can."""
        cfg = self.config
        room, evict = make_room(
            self._peers.values(),
            link.address[0],
            total=cfg.max_connections,
            per_source=cfg.max_connections_per_source,
        )
        if not room:
            self._counters.connections["refused_full"] += 1
            self._close_link(link, CODE_FULL, graceful=False)
            self._retired[id(link)] = link
            return False
        for peer in evict:
            logger.info("evicting %r: connection limit", peer)
            self._counters.connections["evicted_full"] += 1
            self._close_peer(peer, CODE_FULL, graceful=False)
        return True

    # -- control messages (the service's own traffic between peers) --------------

    def on_control(self, kind: int, handler: Callable[[Peer, bytes], None]) -> None:
        """Route received control messages of ``kind`` (a
        :class:`~crust.control.ControlKind`) to ``handler(peer, payload)``.
        One handler per kind; a handler that raises counts as the peer
        misbehaving."""
        if kind in self._control_handlers:
            raise ValueError(f"control kind {kind} already has a handler")
        self._control_handlers[kind] = handler

    def requester_host(self, peer: Peer) -> str:
        """The IP address a peer's messages reach us from: its own, or the
        relay's for a relayed connection (whose far end is unknown)."""
        via = getattr(peer._link, "via", None)
        addr = via.address if via is not None else peer.address
        return str(addr[0])

    def charge_to(self, peer: Peer) -> Callable[[int], bool]:
        """A charge for sends to unverified addresses that ``peer`` asked
        for: credits what its connection brought since last time, then
        spends from its source's budget (crust.reflection)."""
        host = self.requester_host(peer)

        def charge(nbytes: int) -> bool:
            now = now_us()
            conn = peer._link.conn
            if peer.closed_reason is None and not conn.is_closed:
                rx = int(conn.stats()["rx_bytes"])
                # A new connection (moved path) counts from zero again.
                fresh = rx - peer._rx_credited if rx >= peer._rx_credited else rx
                peer._rx_credited = rx
                self.reflection.received(host, fresh, now)
            ok = self.reflection.spend(host, nbytes, now)
            if not ok:
                logger.debug("send for %s refused: over its reflection budget", host)
            return ok

        return charge

    def send_control(self, peer: Peer, kind: int, payload: bytes) -> None:
        """Queue a control message to ``peer`` at priority 0. It never
        surfaces as :class:`NewMessage` and does not count as use of the
        connection for pruning. Raises :class:`ConnectionClosed` once the
        peer is gone and :class:`~crust.errors.WouldBlock` when its send
        buffer is full."""
        if peer.closed_reason is not None:
            raise ConnectionClosed(f"peer {peer.id.short} is disconnected: {peer.closed_reason}")
        link = peer._link
        link.conn.send(control.encode(kind, payload), 0, now=now_us(), control=True)
        link.kick()

    def _on_control(self, peer: Peer, message: bytes) -> None:
        try:
            kind, payload = control.decode(message)
        except ValueError as exc:
            logger.debug("bad control message from %s: %s", peer.id.short, exc)
            self.count_failure(peer.address, peer.id)
            return
        handler = self._control_handlers.get(kind)
        if handler is None:
            # A newer peer may speak kinds we do not know: not misbehaviour.
            logger.debug("control kind %d from %s has no handler", kind, peer.id.short)
            return
        try:
            handler(peer, payload)
        except Exception:
            logger.warning(
                "control handler for kind %d failed on a message from %s",
                kind,
                peer.id.short,
                exc_info=True,
            )
            self.count_failure(peer.address, peer.id)

    def on_conn_events(self, link: Link, events: Iterable[tuple[Any, ...]]) -> None:
        peer = self._by_link.get(id(link))
        result = peer.extra if peer is not None else None
        retiring = self._retiring.get(link)
        if retiring is not None:
            # A duplicate on its way out: what the peer sent on it before
            # it switched is still the peer's; its keys are its own.
            peer = retiring.peer if retiring.peer.is_connected else None
            result = retiring.result
        delivered = False
        for typ, prio, payload, msg_id, reason, code in events:
            if typ == _core.EV_MESSAGE:
                # code: the message's charge to the window, until the
                # application has it (manual credit, design note 0028).
                if peer is not None:
                    seq = next(self._hub.seq)
                    peer._deliver(Inbound(NewMessage(peer, payload, prio), code, link, peer, seq))
                    delivered = True
                elif link.conn.release(code):
                    link.kick()  # nobody to read it: do not hold the window
            elif typ == _core.EV_CONTROL:
                if payload[:1] == _RETIRE_KIND:
                    self._retiring.on_retire(link)
                elif peer is not None:
                    self._on_control(peer, payload)
            elif typ == _core.EV_ALL_ACKED:
                if retiring is not None:
                    self._retiring.on_all_acked(link)
            elif typ == _core.EV_SEND_READY:
                if peer is not None and retiring is None:
                    peer._on_writable()
            elif typ == _core.EV_MESSAGE_DROPPED:
                if peer is not None:
                    self._emit(MessageDropped(peer, msg_id, prio, code))
            elif typ == _core.EV_KEYS_NEEDED:
                if isinstance(result, HandshakeResult):
                    k = result.keys_for_generation(code)
                    link.conn.set_keys(prio, k.aead, k.tx_key, k.tx_iv, k.rx_key, k.rx_iv)
            elif typ == _core.EV_CLOSED:
                if reason == _core.CLOSE_PROTOCOL and peer is not None:
                    self._report_violation(link, peer)
                why = _CODE_REASONS.get(code) if code else None
                self.on_link_lost(link, why or _CLOSE_REASONS.get(reason, f"closed ({reason})"))
        if delivered and peer is not None:
            peer.last_used = time.monotonic()
            if peer._inbox and not peer._direct:
                self._unclaimed.add(peer)
            if link.conn.message_budget == 0:
                peer._stalled = link
                self.resume_messages(peer, link)

    # -- the peers' side of receiving (crust.peer.PeerOwner) -----------------------

    def note_unclaimed(self, peer: Peer) -> None:
        if not peer._direct:
            self._unclaimed.add(peer)

    def resume_messages(self, peer: Peer, link: Link) -> None:
        """``link`` stopped handing up messages (``MESSAGES_HELD``); once
        the application has taken half of those, let it go on."""
        conn = link.conn
        if conn.message_budget != 0 or peer._held > MESSAGES_HELD // 2 or conn.is_closed:
            return  # the peer resumes it (Peer._credit) once it holds fewer
        peer._stalled = None
        conn.set_message_budget(MESSAGES_HELD - peer._held)
        asyncio.get_running_loop().call_soon(self._poll_link, link)

    def _drain_held(self, link: Link) -> None:
        """Messages a connection kept back (``MESSAGES_HELD``) when it ends
        are the peer's all the same: hand them up before the end."""
        conn = link.conn
        if conn.message_budget == 0:
            conn.set_message_budget(-1)
            events = conn.poll_events()
            if events:
                self.on_conn_events(link, events)

    def _poll_link(self, link: Link) -> None:
        conn = link.conn
        if conn.is_closed:
            return
        events = conn.poll_events()
        if events:
            self.on_conn_events(link, events)
        link.kick()

    def on_link_lost(self, link: Link, reason: str) -> None:
        self._drain_held(link)
        if self._retiring.forget(link) is not None:
            self._retired[id(link)] = link  # closed by the peer: drain, forget
        peer = self._by_link.pop(id(link), None)
        if peer is None or peer._link is not link:
            return
        if self._peers.get(peer.id) is peer:
            del self._peers[peer.id]
        self._pruner.forget(peer)
        peer._on_closed(reason)
        if peer in self._unclaimed:
            self._keep_unclaimed(peer)
        self._emit(LostPeer(peer, reason))
        self.discovery.on_lost_peer(peer)
        self.contacts.on_lost_peer(peer, reason)
        self.traversal.on_peer_lost(peer)
        # The transport forgets the connection once it finished draining.
        self._retired[id(link)] = link

    def _keep_unclaimed(self, peer: Peer) -> None:
        """An ended peer's messages nobody took wait for a later reader, but
        a node whose application never reads must not keep every ended
        peer's: past _UNCLAIMED_ENDED_PEERS the oldest are let go, loudly."""
        ended = self._unclaimed_ended
        ended.append(peer)
        while len(ended) > _UNCLAIMED_ENDED_PEERS:
            old = ended.popleft()
            if old in self._unclaimed:
                self._unclaimed.discard(old)
                if old._inbox and not old._direct:
                    logger.warning(
                        "%d messages from %s, which disconnected, were never read "
                        "(no events() subscription took them): dropped",
                        len(old._inbox),
                        old.id.short,
                    )
                    old._inbox.clear()

    def on_link_done(self, link: Link, reason: str) -> None:
        """The transport is done with ``link``: its connection finished
        closing, or its carrier (a TCP stream) is gone, so nothing more can
        come or go on it. Report the peer lost if it still was ours, then
        forget the link everywhere and let the transport free it."""
        if id(link) in self._by_link:
            self.on_link_lost(link, reason)
        self._retiring.forget(link)
        self._retired.pop(id(link), None)
        link.close()

    def note_refused(self, link: Link, seen: int) -> int:
        """Count the datagrams ``link``'s connection refused (failed
        authentication or parsing) since ``seen`` of them against its
        source, and return the new total for the next call. The transports
        call it after input (a UDP endpoint lists such a connection as
        ready), so no scan of the connections is needed."""
        refused = link.conn.refused
        if refused != seen:
            peer = self._by_link.get(id(link))
            self.count_failure(link.address, peer.id if peer is not None else None, refused - seen)
        return refused

    def replace_link(self, peer: Peer, link: Link) -> None:
        """``peer``'s engine connection moved to ``link`` (a relayed
        connection upgraded to a punched path): same connection, new carrier."""
        self._by_link.pop(id(peer._link), None)
        peer._link = link
        self._by_link[id(link)] = peer

    def abort_link(self, link: Link, reason: str) -> None:
        """Drop a connection at once and report why."""
        self._close_link(link, CODE_DISCONNECT, graceful=False)
        self.on_link_lost(link, reason)

    async def resolve(self, peer_id: PeerId | str, *, fresh: bool = False) -> Record:
        """``peer_id``'s endpoint record from the DHT (``config.dht``):
        verified, cached until it expires (``fresh``: look it up again).
        Raises :class:`~crust.dht.directory.RecordNotFound` when there is
        none, :class:`CrustError` when the DHT is off."""
        if self.dht is None:
            raise CrustError("the DHT is off: set ServiceConfig.dht (pip install 'crust[dht]')")
        pid = peer_id if isinstance(peer_id, PeerId) else PeerId.parse(peer_id)
        return await self.dht.resolve(pid, self.config.connect_timeout, fresh=fresh)

    def known_address(self, pid: PeerId) -> Address | None:
        """Where we last dialled ``pid`` (None: never, or forgotten)."""
        return self._addresses.get(pid)

    def _remember_address(self, pid: PeerId, addr: Address) -> None:
        known = self._addresses
        known.pop(pid, None)
        known[pid] = addr
        if len(known) > _KNOWN_ADDRESSES:
            known.popitem(last=False)

    def count_failure(self, addr: Address, peer_id: PeerId | None, n: int = 1) -> None:
        """Count datagrams from ``addr`` that failed authentication or
        parsing; past the threshold tell the application (once per source),
        and blacklist it when configured. The table is bounded (LRU)."""
        f = self._failures
        count = f.pop(addr, 0) + n
        f[addr] = count
        if len(f) > _MISBEHAVING_SOURCES:
            f.popitem(last=False)
        limit = self.config.misbehaving_threshold
        if count >= limit and count - n < limit:
            blacklisted = self.config.auto_blacklist
            if blacklisted:
                self.blacklist(peer_id or addr[0])
            self._emit(PeerMisbehaving(addr, peer_id, count, blacklisted))

    def _count_accept_error(self) -> None:
        self.tcp_preauth.counts["accept_errors"] += 1

    def _report_violation(self, link: Link, peer: Peer) -> None:
        """The engine closed ``link`` because an authenticated packet broke
        the protocol (past the flow-control window, malformed): the peer
        itself did it, so it is reported at once, not after a threshold. A
        peer's CLOSE accusing us (same close reason) is not counted."""
        if link.conn.stats()["protocol_errors"]:
            self.count_failure(peer.address, peer.id, self.config.misbehaving_threshold)

    # -- internals -------------------------------------------------------------

    def _emit(self, ev: Event) -> None:
        self._counters.observe(ev)
        self._hub.publish(ev)

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

    def _close_link(self, link: Link, code: int, *, graceful: bool) -> None:
        with contextlib.suppress(CrustError):
            link.conn.close(now_us(), code, graceful)
        link.kick()

    def _retire_when_confirmed(self, old: Link, new: Link, waited: float = 0.0) -> None:
        """Retire ``old`` once the peer has shown, by a packet on ``new``,
        that it holds the new connection too. Closed earlier, the close
        could reach the peer before its own copy of the new connection
        exists (another socket, or a lost finish), and it would report us
        lost and hand its application a second Peer. Until then what still
        arrives on ``old`` is delivered as before."""
        if id(old) not in self._by_link or self._closing:
            return  # gone meanwhile
        if new.conn.is_closed or new.conn.stats()["rx_packets"] or waited >= _RETIRE_WAIT:
            self._retire(old)
            return
        asyncio.get_running_loop().call_later(
            _RETIRE_POLL, self._retire_when_confirmed, old, new, waited + _RETIRE_POLL
        )

    def _retire(self, link: Link) -> None:
        """A connection replaced by a better one: close it gracefully (its
        queued messages still go out) without reporting a lost peer."""
        self._by_link.pop(id(link), None)
        self._close_link(link, CODE_DUPLICATE, graceful=True)
        self._retired[id(link)] = link

    def _close_peer(self, peer: Peer, code: int, *, graceful: bool) -> None:
        if not peer.is_connected:
            return
        link = peer._link
        self._close_link(link, code, graceful=graceful)
        if not graceful:
            self.on_link_lost(link, _CODE_REASONS.get(code, "disconnected by us"))

    def _prune(self, peer: Peer) -> None:
        logger.info("pruning %r: idle and not maintained", peer)
        self._close_peer(peer, CODE_PRUNED, graceful=True)


def _path_why(link: Link, incoming: bool) -> str:
    """``Peer.why`` of a new connection: its path and how it came about."""
    host, port = link.address[:2]
    where = f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    via = getattr(link, "via", None)
    if link.path == "relayed" and via is not None:
        who = "the peer dialled" if incoming else "we dialled"
        return f"relayed through {via.id.short}, which introduced us ({who} through it)"
    if link.path.startswith("punched-"):
        return f"{link.path} {'from' if incoming else 'to'} {where}, punched after a rendezvous"
    if incoming:
        return f"{link.path}: the peer dialled us from {where}"
    return f"{link.path}: we dialled {where}"
