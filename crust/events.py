"""Events a :class:`crust.Service` hands to the application.

Every event is a small frozen dataclass; match on the class::

    async for ev in svc.events():
        match ev:
            case NewPeer(peer=peer):
                svc.maintain(peer)
            case NewMessage(peer=peer, data=data):
                ...
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from crust.paths import CloseReason, PathName
from crust.wire import Address

if TYPE_CHECKING:
    from crust.identity import PeerId
    from crust.peer import Peer

__all__ = [
    "BootstrapAccept",
    "BootstrapConnect",
    "BootstrapFailed",
    "ConnectFailed",
    "ContactJoined",
    "ContactLost",
    "Event",
    "LanPeerFound",
    "ListenerFailed",
    "ListenerStarted",
    "LostPeer",
    "MessageDropped",
    "NatDetected",
    "NewMessage",
    "NewPeer",
    "PeerMisbehaving",
    "PortMapped",
    "PortMappingFailed",
]


@dataclass(frozen=True, slots=True)
class ListenerStarted:
    """A listener is accepting: ``transport`` is ``"tcp"`` or ``"udp"``,
    ``role`` ``"live"`` or ``"backup"`` (the seed's random backup port)."""

    transport: str
    address: Address
    role: str


@dataclass(frozen=True, slots=True)
class ListenerFailed:
    """A listener could not start (port in use, address not available)."""

    transport: str
    address: Address
    error: str


@dataclass(frozen=True, slots=True)
class NewPeer:
    """A connection is up and authenticated. ``incoming`` says who dialled;
    ``path`` which transport won (:data:`crust.paths.PathName`)."""

    peer: Peer
    incoming: bool
    path: PathName


@dataclass(frozen=True, slots=True)
class LostPeer:
    """A connection ended; ``reason`` says why in words (idle timeout,
    closed by peer, disconnected by us, protocol error, blacklisted...);
    :attr:`kind` is the same as a :class:`~crust.paths.CloseReason` to
    match on."""

    peer: Peer
    reason: str

    @property
    def kind(self) -> CloseReason:
        """``reason`` as a :class:`~crust.paths.CloseReason`."""
        return CloseReason.of(self.reason)


@dataclass(frozen=True, slots=True)
class NewMessage:
    """A whole message arrived from ``peer`` at ``priority`` (0 highest)."""

    peer: Peer
    data: bytes
    priority: int


@dataclass(frozen=True, slots=True)
class ConnectFailed:
    """``connect`` to ``target`` gave up; ``reason`` explains each attempt."""

    target: str
    reason: str


@dataclass(frozen=True, slots=True)
class MessageDropped:
    """A queued low-priority message waited past the deadline unsent and
    was dropped (``msg_id`` as returned by ``Peer.send_nowait``)."""

    peer: Peer
    msg_id: int
    priority: int
    size: int


@dataclass(frozen=True, slots=True)
class PeerMisbehaving:
    """A source keeps sending datagrams that fail authentication or parse
    (counted, never answered). ``peer_id`` is known when the source is an
    established peer. ``blacklisted`` is true when the service blacklisted
    it automatically (``ServiceConfig.auto_blacklist``)."""

    address: Address
    peer_id: PeerId | None
    failures: int
    blacklisted: bool


@dataclass(frozen=True, slots=True)
class LanPeerFound:
    """The LAN beacon heard a node of our network (signature checked):
    its id and the endpoints it listens on. Repeated only when the node
    comes back after expiring or changes its endpoints."""

    peer_id: PeerId
    endpoints: tuple[Address, ...]


@dataclass(frozen=True, slots=True)
class BootstrapConnect:
    """Bootstrapping connected us to ``peer``, found through ``source``
    (``"cache"``, ``"beacon"``, ``"contact"`` or ``"gossip"``), and the
    peer agreed to be bootstrapped off."""

    peer: Peer
    source: str


@dataclass(frozen=True, slots=True)
class BootstrapAccept:
    """A bootstrapping node connected to us and we accepted it
    (``ServiceConfig.accept_bootstrap``)."""

    peer: Peer


@dataclass(frozen=True, slots=True)
class BootstrapFailed:
    """No bootstrap candidate answered within
    ``ServiceConfig.bootstrap_timeout``: ``tried`` candidates, and why."""

    tried: int
    reason: str


@dataclass(frozen=True, slots=True)
class ContactJoined:
    """We joined the contact at ``address`` (``Service.join``): connected,
    kept, and registered as reachable through it as ``peer``. ``rejoined``:
    after losing it, ``after`` seconds from the loss."""

    peer: Peer
    address: Address
    rejoined: bool
    after: float = 0.0


@dataclass(frozen=True, slots=True)
class ContactLost:
    """The link to the contact at ``address`` (``Service.join``) is gone
    (``attempts`` = 0) or a redial failed (``attempts`` so far), for
    ``reason``: it is dialled again in ``retry_in`` seconds. Until then
    nobody can reach us through it."""

    address: Address
    reason: str
    attempts: int
    retry_in: float


@dataclass(frozen=True, slots=True)
class NatDetected:
    """The STUN servers (``ServiceConfig.stun_servers``), or the contacts
    we joined (``source`` ``"contacts"``: each of a contact's ports says
    where it saw us, design note 0062), answered: our live UDP port is seen
    at ``reflexive`` (the first server's view first; more than one address
    means the NAT maps per destination). ``kind`` is ``"open"``,
    ``"cone"``, ``"symmetric"`` or ``"unknown"`` and ``mapping`` the RFC
    4787 mapping behaviour; ``Service.nat`` has every detail."""

    reflexive: tuple[Address, ...]
    kind: str
    mapping: str
    source: str = "stun"


@dataclass(frozen=True, slots=True)
class PortMapped:
    """The gateway forwards ``external`` to our listener at ``internal``
    over ``protocol`` (``"udp"``/``"tcp"``) for ``lease`` seconds, renewed
    until the service closes. ``method`` is the protocol that asked it:
    ``"upnp"`` (``ServiceConfig.upnp``), ``"pcp"`` or ``"natpmp"``
    (``ServiceConfig.natpmp``)."""

    protocol: str
    internal: Address
    external: Address
    lease: int
    method: str = "upnp"


@dataclass(frozen=True, slots=True)
class PortMappingFailed:
    """``ServiceConfig.upnp`` or ``natpmp`` is on but no port could be
    mapped: no gateway answered, or it refused (``reason``)."""

    reason: str


Event = (
    ListenerStarted
    | ListenerFailed
    | NewPeer
    | LostPeer
    | NewMessage
    | ConnectFailed
    | MessageDropped
    | PeerMisbehaving
    | LanPeerFound
    | BootstrapConnect
    | BootstrapAccept
    | BootstrapFailed
    | ContactJoined
    | ContactLost
    | NatDetected
    | PortMapped
    | PortMappingFailed
)
