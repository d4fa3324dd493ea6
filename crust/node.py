"""The node core: the registry and bookkeeping every part of a node shares.

:class:`Node` holds the peers and their links, the connections on their
way out, the blacklist and failure counts, the accept queue, and emits the
events; it turns a completed handshake into a :class:`~crust.peer.Peer`
(:meth:`Node.on_established`), feeds a connection's engine events to it
(:meth:`Node.on_conn_events`) and forgets it (:meth:`Node.on_link_lost`,
:meth:`Node.on_link_done`). The transports (crust.asyncio.udp, tcp,
relaying, traversal...), bootstrap, reach, stats and the DHT use a node
through the public names of this class only.

It imports no transport: the parts it calls back (traversal, discovery,
contacts...) are named here by the few methods the core and the
transports use (the ``*Part`` protocols below), and the listeners by what
is read of them. :class:`crust.Service` is the user's facade and the
assembly: it opens the listeners, makes the parts and does the work of
:meth:`Node.connect` / :meth:`Node.dial` over them (design note 0070): the
one hook ``Node._connect`` (design note 0074).
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import ipaddress
import logging
import resource
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from crust import _core, control
from crust.admission import PreAuthTcp
from crust.capacity import make_room
from crust.config import ServiceConfig
from crust.errors import ConnectionClosed, CrustError
from crust.events import (
    Event,
    LostPeer,
    MessageDropped,
    NatDetected,
    NewMessage,
    NewPeer,
    PeerMisbehaving,
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
from crust.nat.classify import Behaviour, NatBehaviour
from crust.nat.mapping import ProbeAnswerer
from crust.peer import MESSAGES_HELD, Address, Link, Peer, credit_batch, now_us
from crust.pruning import Pruner
from crust.reflection import SendBudget
from crust.retirement import RETIRE_WAIT, Retirements
from crust.stats import ServiceCounters, UdpCounters
from crust.subscriptions import EventHub, Inbound

if TYPE_CHECKING:
    from crust.asyncio.portmap import UpnpMapping
    from crust.dht.cache import RecordCache
    from crust.dht.record import Record
    from crust.nat.rendezvous import RendezvousMessage

__all__ = [
    "Charge",
    "ContactNatPart",
    "ContactsPart",
    "DirectoryPart",
    "DiscoveryPart",
    "Listener",
    "MapperPart",
    "Node",
    "Target",
    "TraversalPart",
    "UdpPort",
]

# The records keep the name they had when this was crust.service's: what
# an application filters on (docs/monitoring.md) does not change.
logger = logging.getLogger("crust.service")

_CIPHER_NAMES = {aead: name for name, aead in CIPHERS.items()}

# A second connection its dialler may not hold (design note 0075: an IK
# connection not heard from yet, its dial perhaps given up after the
# initiation): held as the peer's standby (one per peer) until the dialler
# shows what it does with it, and let go after _STANDBY_WAIT seconds if
# nothing shows (a replayed handshake never does). Longer than RETIRE_WAIT:
# a dialler that switched to the new one but sends nothing closes the old
# one by then, and that promotes the standby here.
_STANDBY_WAIT = RETIRE_WAIT + 5.0
# Our own second dial that replaced one never heard from closes the old one
# once the peer used the new one (polled every _RETIRE_POLL s), or after
# _RETIRE_WAIT s: the peer's standby then becomes its link.
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
# Dropping ended peers' unread messages is said at most this often (seconds).
_UNREAD_REPORT_S = 10.0

#: Whom :meth:`Node.connect` and :meth:`Node.dial` take: ``(host, port)``,
#: ``"host:port"``, or a peer id (or its string).
Target = Address | PeerId | str
#: Asked before each datagram sent to an address a peer named, with its
#: size (crust.reflection); None: nobody is charged.
Charge = Callable[[int], bool] | None


# -- what the core and the transports see of the parts -------------------------


class Listener(Protocol):
    """A listener, as the core reads it (crust.asyncio.udp / tcp)."""

    @property
    def address(self) -> Address: ...


class UdpPort(Listener, UdpCounters, Protocol):
    """A UDP listener (crust.asyncio.udp.UdpListener), as the core, the
    stats and the benchmarks read it."""

    def close(self) -> None: ...


class TraversalPart(Protocol):
    """crust.asyncio.traversal.Traversal, as the core and the other parts
    call it."""

    def on_established(self, link: Link, result: HandshakeResult) -> None: ...
    def on_peer_lost(self, peer: Peer) -> None: ...
    def on_punch(self, listener: Listener, data: bytes, addr: Address, now: int) -> None: ...
    def candidates(self, toward: Address | None) -> tuple[list[Address], int]: ...
    async def connect(self, target: PeerId, timeout: float) -> Peer: ...
    async def ask(
        self, target: PeerId, deadline: float
    ) -> tuple[RendezvousMessage, Peer, bytes, bytes]: ...


class DiscoveryPart(Protocol):
    """crust.asyncio.discovery.Discovery, as the core and the stats call it."""

    def on_new_peer(self, peer: Peer) -> None: ...
    def on_link_replaced(self, peer: Peer) -> None: ...
    def on_lost_peer(self, peer: Peer) -> None: ...
    def stats(self) -> dict[str, Any]: ...


class ContactsPart(Protocol):
    """crust.reach.Contacts, as the core and the DHT call it."""

    def on_lost_peer(self, peer: Peer, reason: str) -> None: ...
    def joined(self) -> list[tuple[PeerId, Address]]: ...


class ContactNatPart(Protocol):
    """crust.asyncio.mapping.ContactNat, as crust.reach calls it."""

    def probe(self, contact: Address) -> None: ...


class DirectoryPart(Protocol):
    """crust.dht.directory.Directory, as crust.reach and crust.dht.connect
    call it."""

    cache: RecordCache

    def changed(self) -> None: ...
    async def resolve(
        self, peer_id: PeerId, timeout: float = 5.0, *, fresh: bool = False
    ) -> Record: ...


class MapperPart(Protocol):
    """crust.asyncio.upnp.PortMapper, as the traversal reads it."""

    @property
    def mappings(self) -> tuple[UpnpMapping, ...]: ...


class _Standby(NamedTuple):
    """A peer's second connection its dialler may not hold (0075)."""

    link: Link
    result: HandshakeResult
    #: It and the peer's link have one initiator (the peer dialled twice).
    same: bool
    expiry: asyncio.TimerHandle


class Node(abc.ABC):
    """The node core (see the module's docstring). Not made directly: a
    :class:`crust.Service` is one (it implements ``_connect``, the work of
    :meth:`connect` and :meth:`dial`, over its transports)."""

    #: The parts the facade makes (crust.Service), named here by what the
    #: core and the transports call of them.
    traversal: TraversalPart
    discovery: DiscoveryPart
    contacts: ContactsPart
    contact_nat: ContactNatPart
    #: The DHT (``config.dht``): our record, and others' (crust.dht).
    dht: DirectoryPart | None
    #: Port mapper (``config.upnp``/``config.natpmp``).
    upnp: MapperPart | None
    #: The listeners, as the facade opened them (UDP, then TCP).
    udp_ports: Sequence[UdpPort]
    tcp_ports: Sequence[Listener]

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
        self._unread_msgs = self._unread_peers = 0
        self._unread_reported_at = float("-inf")
        self._peers: dict[PeerId, Peer] = {}
        self._by_link: dict[int, Peer] = {}
        # Connections closing (ours lost, or duplicates retired) until their
        # transport reports them done (on_link_done).
        self._retired: dict[int, Link] = {}
        # Duplicate connections on their way out (crust.retirement).
        self._retiring = Retirements(self._retire)
        # A peer's second connection, until its dialler shows what it does
        # with it (_hold_standby): at most one per peer, by id(peer).
        self._standby: dict[int, _Standby] = {}
        # Where each peer we dialled was (connect(peer_id) dials it again):
        # the most recent _KNOWN_ADDRESSES, as gossip can make us dial
        # any number of ids over a node's life.
        self._addresses: OrderedDict[PeerId, Address] = OrderedDict()
        # Blacklisted peer ids by their X25519 key: an Ed25519 key and its
        # sign-flipped twin are two valid peer ids with one X25519 key, and
        # the key's holder can complete a handshake as either.
        self._blacklist_keys: set[bytes] = set()
        self._blacklist_nets: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        self._failures: OrderedDict[Address, int] = OrderedDict()
        self._engine_configs: dict[tuple[tuple[str, Any], ...], _core.Config] = {}
        # Before the parts, which register their control handlers.
        self._control_handlers: dict[int, Callable[[Peer, bytes], None]] = {}
        #: What peers may make us send to addresses nobody verified
        #: (traversal candidates, gossip and beacon dials): crust.reflection.
        self.reflection = SendBudget()
        #: What the STUN servers (``config.stun_servers``) showed for the live
        #: UDP port: reflexive address and mapping behaviour; when they did
        #: not classify the mapping (or none is configured), what the
        #: contacts we joined showed (``nat.source``, design note 0062);
        #: None until known.
        self.nat: NatBehaviour | None = None
        #: Answers to Binding requests on our UDP ports: where we see the
        #: asker, within budgets (crust.nat.mapping).
        self.probe_answers = ProbeAnswerer()
        # Idle unmaintained connections are closed: one timer for all.
        self._pruner = Pruner(self.config.prune_after, self._prune)
        #: Inbound TCP streams not yet authenticated: capped, with a deadline.
        self.tcp_preauth = PreAuthTcp(
            self.config.tcp_unauthenticated_per_source,
            min(self.config.tcp_unauthenticated_max, _descriptor_share()),
        )
        self._counters = ServiceCounters()
        #: Open TCP streams (handshaking or connected), closed with the service.
        self.tcp_links: set[Link] = set()
        self.dht = None
        self.upnp = None
        self._started = False
        self._closing = False

    # -- connecting: the two verbs here, the work in the facade (_connect) ----------

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
        limit = timeout or self.config.connect_timeout
        return await self._connect(target, peer_id, limit, for_app=True, charge=None)

    async def dial(
        self,
        target: Address | PeerId | str,
        *,
        peer_id: PeerId | None = None,
        timeout: float | None = None,
        charge: Callable[[int], bool] | None = None,
    ) -> Peer:
        """Connect for the node itself (bootstrap, gossip, the DHT): as
        :meth:`connect`, but the peer is not the application's (it goes to
        ``accept``). ``charge``: a peer named the address, so what is sent
        before it answers is charged to that peer (crust.reflection)."""
        limit = timeout or self.config.connect_timeout
        return await self._connect(target, peer_id, limit, for_app=False, charge=charge)

    @abc.abstractmethod
    async def _connect(
        self, target: Target, peer_id: PeerId | None, limit: float, for_app: bool, charge: Charge
    ) -> Peer:
        """What :meth:`connect` and :meth:`dial` do, over the facade's
        transports, within ``limit`` seconds. ``for_app``: the peer goes to
        the caller, not to :meth:`accept`. ``charge`` (None: free): a peer
        named the address (gossip, beacon), so what is sent before it
        answers is charged to that peer (crust.reflection)."""

    # -- the registry, for the transports ---------------------------------------

    def find_peer(self, peer_id: PeerId) -> Peer | None:
        """The peer with id ``peer_id`` we hold (connected or not yet
        forgotten), or None."""
        return self._peers.get(peer_id)

    def peer_of(self, link: Link) -> Peer | None:
        """The peer ``link`` carries (None: not, or no longer, a peer's)."""
        return self._by_link.get(id(link))

    def bookkeeping(self) -> dict[str, int]:
        """How many entries the core's per-connection tables hold now."""
        return {
            "peers": len(self._peers),
            "links": len(self._by_link),
            "closing": len(self._retired),
            "retiring": len(self._retiring),
            "standby": len(self._standby),
            "prune_watch": len(self._pruner),
        }

    # -- state the application and the parts read --------------------------------

    @property
    def closing(self) -> bool:
        """True once :meth:`close` started: no new peer is accepted."""
        return self._closing

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
            self.emit(NatDetected(nat.reflexive, nat.kind, nat.mapping.value, "contacts"))

    @property
    def id(self) -> PeerId:
        """This node's peer id."""
        return self.identity.peer_id

    @property
    def endpoints(self) -> list[Address]:
        """Listening addresses (each serves both TCP and UDP)."""
        seen: list[Address] = []
        listeners: list[Listener] = [*self.udp_ports, *self.tcp_ports]
        for listener in listeners:
            if listener.address not in seen:
                seen.append(listener.address)
        return seen

    @property
    def peers(self) -> list[Peer]:
        """The peers connected now."""
        return [p for p in self._peers.values() if p.is_connected]

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

    async def disconnect(self, peer: Peer, *, timeout: float = 5.0) -> None:
        """Close gracefully: queued messages are delivered first."""
        self._close_peer(peer, CODE_DISCONNECT, graceful=True)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(peer.wait_closed(), timeout)

    def blacklist(self, *targets: PeerId | str) -> None:
        """Blacklist peer ids and/or addresses and networks
        (``"192.0.2.7"``, ``"2001:db8::/32"``). Matching connections are
        dropped at once; blacklisted sources get no answer."""
        for t in targets:
            if isinstance(t, PeerId):
                self._blacklist_keys.add(t.x25519_public())
                continue
            try:
                self._blacklist_nets.append(ipaddress.ip_network(t, strict=False))
            except ValueError:
                self._blacklist_keys.add(PeerId.parse(t).x25519_public())
        for p in list(self._peers.values()):
            if self.is_blacklisted_id(p.id) or self.is_blacklisted_address(p.address):
                self._close_peer(p, CODE_BLACKLISTED, graceful=False)

    def is_blacklisted_id(self, peer_id: PeerId) -> bool:
        """Whether ``peer_id``, or the other peer id of its X25519 key, is
        blacklisted."""
        return peer_id.x25519_public() in self._blacklist_keys

    def is_blacklisted_address(self, addr: Address) -> bool:
        if not self._blacklist_nets:
            return False
        try:
            ip = ipaddress.ip_address(addr[0])
        except ValueError:
            return False
        return any(ip in net for net in self._blacklist_nets)

    # -- handshakes (moved from crust.service unchanged) -------------------------

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

    # -- connections: made, fed, lost, forgotten ---------------------------------

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
        if self.is_blacklisted_id(pid) or self.is_blacklisted_address(link.address):
            self._close_link(link, CODE_BLACKLISTED, graceful=False)
            return None
        if pid == self.id:
            self._close_link(link, CODE_DUPLICATE, graceful=False)
            return None
        self.traversal.on_established(link, result)
        existing = self._peers.get(pid)
        if existing is not None and existing.is_connected:
            if incoming and result.pattern == "IK" and not link.conn.stats()["rx_packets"]:
                # An IK responder's connection exists before its dialler's,
                # which may yet give it up (its dial timed out, or was
                # refused a retransmission): decide once it is heard from.
                same = self._same_key(existing, link, incoming)
                self._hold_standby(existing, link, result, same=same)
            elif self.unheard(existing):
                # The other way round: the peer's link is such a connection
                # and this one is held at both ends. Use this one; the
                # other stands by until it is heard from.
                self._switch_to_standby(existing, link, result, incoming)
            else:
                self._resolve_duplicate(existing, link, result, incoming)
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
        self.emit(NewPeer(peer, incoming, link.path))
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
        via = getattr(peer.link, "via", None)
        addr = via.address if via is not None else peer.address
        return str(addr[0])

    def charge_to(self, peer: Peer) -> Callable[[int], bool]:
        """A charge for sends to unverified addresses that ``peer`` asked
        for: credits what its connection brought since last time, then
        spends from its source's budget (crust.reflection)."""
        host = self.requester_host(peer)

        def charge(nbytes: int) -> bool:
            now = now_us()
            conn = peer.link.conn
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
        link = peer.link
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

    # -- what a connection reports, and the peers' side of receiving -------------

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
                    self.emit(MessageDropped(peer, msg_id, prio, code))
            elif typ == _core.EV_KEYS_NEEDED:
                if isinstance(result, HandshakeResult):
                    k = result.keys_for_generation(code)
                    link.conn.set_keys(prio, k.aead, k.tx_key, k.tx_iv, k.rx_key, k.rx_iv)
            elif typ == _core.EV_CLOSED:
                if reason == _core.CLOSE_PROTOCOL and peer is not None:
                    self._report_violation(link, peer)
                why = _CODE_REASONS.get(code) if code else None
                self.on_link_lost(link, why or _CLOSE_REASONS.get(reason, f"closed ({reason})"))
        if peer is not None and retiring is None and id(peer) in self._standby:
            self._standby_heard(peer, link)
        if delivered and peer is not None:
            peer.last_used = time.monotonic()
            if peer._inbox and not peer._direct:
                self._unclaimed.add(peer)
            if link.conn.message_budget == 0:
                peer._stalled = link
                self.resume_messages(peer, link)

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
        if peer is None:
            return
        sb = self._standby.get(id(peer))
        if sb is not None and sb.link is link:
            del self._standby[id(peer)]
            sb.expiry.cancel()
            return
        if peer.link is not link:
            return
        if self._promote(peer, retire_old=False):
            # The old one ended while the peer's second connection stood by.
            self._retired[id(link)] = link
            return
        if self._peers.get(peer.id) is peer:
            del self._peers[peer.id]
        self._pruner.forget(peer)
        peer._on_closed(reason)
        if peer in self._unclaimed:
            self._keep_unclaimed(peer)
        self.emit(LostPeer(peer, reason))
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
                    self._report_unread(old)
                    old._inbox.clear()

    def _report_unread(self, peer: Peer) -> None:
        """Say that ``peer``'s unread messages are dropped: at once the first
        time, then at most every _UNREAD_REPORT_S with the count since (a
        node closing 10,000 unread peers said so in 10,000 lines)."""
        self._unread_msgs += len(peer._inbox)
        self._unread_peers += 1
        now = time.monotonic()
        if now - self._unread_reported_at < _UNREAD_REPORT_S:
            return
        logger.warning(
            "%d messages from %d disconnected peers (the last %s) were never read "
            "(no events() subscription took them): dropped",
            self._unread_msgs,
            self._unread_peers,
            peer.id.short,
        )
        self._unread_msgs = self._unread_peers = 0
        self._unread_reported_at = now

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
        self._by_link.pop(id(peer.link), None)
        peer._link = link
        self._by_link[id(link)] = peer

    def abort_link(self, link: Link, reason: str) -> None:
        """Drop a connection at once and report why."""
        self._close_link(link, CODE_DISCONNECT, graceful=False)
        self.on_link_lost(link, reason)

    # -- addresses, misbehaviour, events -----------------------------------------

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
            self.emit(PeerMisbehaving(addr, peer_id, count, blacklisted))

    def _report_violation(self, link: Link, peer: Peer) -> None:
        """The engine closed ``link`` because an authenticated packet broke
        the protocol (past the flow-control window, malformed): the peer
        itself did it, so it is reported at once, not after a threshold. A
        peer's CLOSE accusing us (same close reason) is not counted."""
        if link.conn.stats()["protocol_errors"]:
            self.count_failure(peer.address, peer.id, self.config.misbehaving_threshold)

    def emit(self, ev: Event) -> None:
        """Count ``ev`` (stats) and hand it to every subscription."""
        self._counters.observe(ev)
        self._hub.publish(ev)

    # -- closing and retiring ----------------------------------------------------

    def _close_link(self, link: Link, code: int, *, graceful: bool) -> None:
        with contextlib.suppress(CrustError):
            link.conn.close(now_us(), code, graceful)
        link.kick()

    # -- duplicate connections (design notes 0025, 0075) --------------------------

    def connected_peer(self, pid: PeerId) -> Peer | None:
        """The peer ``pid`` when a connect() may reuse it: connected, on a
        link it is known to hold (:meth:`unheard`)."""
        peer = self._peers.get(pid)
        if peer is None or not peer.is_connected or self.unheard(peer):
            return None
        return peer

    def unheard(self, peer: Peer) -> bool:
        """Whether the peer's link is an IK connection it dialled that has
        not heard from it yet: the dialler may have given it up (design
        note 0075), so a connect() dials again rather than reuse it."""
        result = peer.extra
        return (
            peer.incoming
            and isinstance(result, HandshakeResult)
            and result.pattern == "IK"
            and not peer.link.conn.stats()["rx_packets"]
        )

    def _switch_to_standby(
        self, peer: Peer, link: Link, result: HandshakeResult, incoming: bool
    ) -> None:
        """Make ``link`` the peer's link and its unheard one the standby."""
        old, old_result = peer.link, peer.extra
        assert isinstance(old_result, HandshakeResult)
        same = self._same_key(peer, link, incoming)
        self._take_link(peer, link, result, incoming)
        self._hold_standby(peer, old, old_result, same=same)
        peer.why = _path_why(link, incoming) + " (replaced an unconfirmed connection)"

    def _same_key(self, existing: Peer, link: Link, incoming: bool) -> bool:
        """Whether ``link`` and the peer's link have the same transport
        class and initiator (the rule of 0025 cannot tell them apart)."""
        return link.path.endswith("-tcp") == existing.path.endswith("-tcp") and (
            incoming == existing.incoming
        )

    def _take_link(self, peer: Peer, link: Link, result: HandshakeResult, incoming: bool) -> None:
        """Make ``link`` (with its handshake) the one the peer's messages
        go out on; what to do with the old one is the caller's."""
        peer._link = link
        peer.incoming = incoming
        peer.extra = result
        self._by_link[id(link)] = peer
        peer._on_writable()  # a sender blocked on the old one retries
        self.discovery.on_link_replaced(peer)

    def _retire_duplicate(self, old: Link, peer: Peer, old_result: object) -> None:
        """Retire a link the peer no longer uses: by the RETIRE exchange
        (what either side sent on it is delivered first) when it has its
        own handshake's keys, else by closing it."""
        self._by_link.pop(id(old), None)
        if isinstance(old_result, HandshakeResult):
            self._retiring.begin(old, peer, old_result)
        else:
            self._retire(old)

    def _resolve_duplicate(
        self, existing: Peer, link: Link, result: HandshakeResult, incoming: bool
    ) -> None:
        """A second connection to a connected peer, both ends holding it:
        keep one by a rule both ends agree on, retire the other."""
        initiator = existing.id if incoming else self.id
        old_init = existing.id if existing.incoming else self.id
        new_key = (not link.path.endswith("-tcp"), bytes(initiator))
        old_key = (not existing.path.endswith("-tcp"), bytes(old_init))
        # Same transport and initiator: one side dialled twice (a gossip
        # dial while the application's own was in flight, or a redial
        # because its copy of the old one is gone): the new one when the
        # old never heard a packet, else the old one.
        same = new_key == old_key
        orphan = existing.link.conn.stats()["rx_packets"] == 0
        if new_key < old_key or (same and orphan):
            old, old_result = existing.link, existing.extra
            self._take_link(existing, link, result, incoming)
            if same:
                # Our own second dial, the old one never heard from: close
                # the old one once the peer used the new one (or after
                # _RETIRE_WAIT); if the peer holds the new one as a standby,
                # that close makes it the peer's link there.
                self._retire_when_confirmed(old, link)
            else:
                # Each may have sent on the old one.
                self._retire_duplicate(old, existing, old_result)
            existing.why = _path_why(link, incoming) + " (replaced a duplicate connection)"
        elif not same:
            # The peer may have sent on this one (its first) already.
            self._by_link.pop(id(link), None)
            self._retiring.begin(link, existing, result)
        else:
            # A second dial of ours while the first lives: nothing was
            # sent on it.
            self._retire(link)

    def _hold_standby(self, peer: Peer, link: Link, result: HandshakeResult, *, same: bool) -> None:
        """Keep ``link`` beside the peer's link until its dialler shows what
        it does: what arrives on it is the peer's. ``same`` (it and the
        peer's link have one initiator: the peer dialled us twice): the
        peer's RETIRE on one of them, or the close of one, decides.
        Otherwise the first packet on it shows the dialler holds it, and
        the rule of 0025 decides."""
        old = self._standby.pop(id(peer), None)
        if old is not None:
            old.expiry.cancel()
            self._retire(old.link)
        expiry = asyncio.get_running_loop().call_later(_STANDBY_WAIT, self._standby_expired, peer)
        self._standby[id(peer)] = _Standby(link, result, same, expiry)
        self._by_link[id(link)] = peer
        if result.pattern == "XX" and not link.path.endswith("-tcp"):
            # The dialler counts an XX finish lost until it hears a packet
            # under the new keys (over UDP; a stream loses nothing); the
            # peer's link would have sent one.
            with contextlib.suppress(CrustError):
                link.conn.probe_path(now_us())
            link.kick()

    def _standby_heard(self, peer: Peer, link: Link) -> None:
        """Something arrived on ``link``, the peer's link or its standby."""
        sb = self._standby[id(peer)]
        if sb.same:
            # The dialler retires the one it does not keep (a RETIRE): the
            # messages on either one say nothing, some were sent before it
            # chose.
            if link is peer.link and self._retiring.retired_by_peer(link):
                self._promote(peer, retire_old=True)
            elif link is sb.link and self._retiring.retired_by_peer(link):
                del self._standby[id(peer)]
                sb.expiry.cancel()
                self._retire_duplicate(link, peer, sb.result)
        elif link is sb.link and link.conn.stats()["rx_packets"] and not link.conn.is_closed:
            # Its dialler holds it: an ordinary duplicate now.
            del self._standby[id(peer)]
            sb.expiry.cancel()
            self._resolve_duplicate(peer, link, sb.result, incoming=True)

    def _standby_expired(self, peer: Peer) -> None:
        sb = self._standby.pop(id(peer), None)
        if sb is not None:
            self._retire(sb.link)

    def _drop_standby(self, peer: Peer, code: int) -> None:
        """The peer is closing: its standby goes with it."""
        sb = self._standby.pop(id(peer), None)
        if sb is not None:
            sb.expiry.cancel()
            self._by_link.pop(id(sb.link), None)
            self._close_link(sb.link, code, graceful=False)
            self._retired[id(sb.link)] = sb.link

    def _promote(self, peer: Peer, *, retire_old: bool) -> bool:
        """Make the peer's standby its link (the initiator uses it, or the
        old one is gone); True when there was one."""
        sb = self._standby.pop(id(peer), None)
        if sb is None:
            return False
        sb.expiry.cancel()
        old, old_result = peer.link, peer.extra
        # A standby is always one the peer dialled (incoming).
        self._take_link(peer, sb.link, sb.result, incoming=True)
        if retire_old:
            self._retire_duplicate(old, peer, old_result)
        return True

    def _retire_when_confirmed(self, old: Link, new: Link, waited: float = 0.0) -> None:
        """Retire ``old`` once the peer has shown, by a packet on ``new``,
        that it holds the new connection too, or after _RETIRE_WAIT. Closed
        earlier, the close could reach the peer before its own copy of the
        new connection exists (another socket, or a lost finish), and it
        would report us lost. Until then what still arrives on ``old`` is
        delivered as before."""
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
        self._drop_standby(peer, code)
        link = peer.link
        self._close_link(link, code, graceful=graceful)
        if not graceful:
            self.on_link_lost(link, _CODE_REASONS.get(code, "disconnected by us"))

    def _prune(self, peer: Peer) -> None:
        logger.info("pruning %r: idle and not maintained", peer)
        self._close_peer(peer, CODE_PRUNED, graceful=True)


def _descriptor_share() -> int:
    """A quarter of the process's descriptor limit (16 at least): what
    unauthenticated TCP streams may hold, so a flood never takes the node
    to its limit, where accept() fails for everyone."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return 1 << 30 if soft == resource.RLIM_INFINITY else max(16, soft // 4)


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
