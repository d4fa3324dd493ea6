"""Service statistics for monitoring: counters kept from the event stream
and a structured, JSON-serialisable snapshot (:meth:`crust.Service.stats`).

Counters are derived from the events the service emits (one place sees
every connection come and go), so they agree with what the application
observes; byte and message totals add the engine counters of live
connections to those of connections that have ended.
"""

from __future__ import annotations

import dataclasses
import time
from collections import Counter
from collections.abc import Sequence, Sized
from typing import TYPE_CHECKING, Any, Protocol, TypedDict, cast

from crust import _core
from crust.events import ConnectFailed, LostPeer, MessageDropped, NewPeer, PeerMisbehaving
from crust.paths import PathName

if TYPE_CHECKING:
    from crust.admission import PreAuthTcp
    from crust.events import Event
    from crust.handshake import Responder
    from crust.identity import PeerId
    from crust.peer import Address, Peer
    from crust.reflection import SendBudget

__all__ = [
    "STATS_DOC",
    "PeerEntry",
    "ServiceCounters",
    "ServiceStats",
    "StatsSource",
    "UdpCounters",
    "live_objects",
    "snapshot",
]

# Engine counters summed over connections, under the names PeerStats uses.
_TRAFFIC = {
    "tx_bytes": "sent_bytes",
    "rx_bytes": "received_bytes",
    "tx_msgs": "sent_messages",
    "rx_msgs": "received_messages",
    "lost_packets": "lost_packets",
    "retransmitted_bytes": "retransmitted_bytes",
}

#: Every key of :meth:`crust.Service.stats`, documented (the docs' stats
#: reference is generated from this, and a test checks it matches).
STATS_DOC: dict[str, str] = {
    "id": "this node's peer id (string)",
    "uptime": "seconds since the service started",
    "endpoints": 'listening addresses, `["host", port]` (each serves TCP and UDP)',
    "listeners": "open listeners (a TCP and a UDP one per endpoint)",
    "peers": "connected peers now",
    "connections": "counters since start: `outgoing` and `incoming` connections made, "
    "`direct-tcp`/`direct-udp`: made over each path, `connect_failures`, `lost` "
    "(connections ended), `misbehaving` (sources reported), `messages_dropped`, "
    "`evicted_full` and `refused_full` (connection caps)",
    "lost_reasons": "connections ended, by `LostPeer.reason`",
    "traffic": "totals over all connections, ended ones included: "
    + ", ".join(f"`{v}`" for v in _TRAFFIC.values()),
    "handshake": "responder counters summed over all listeners (`datagrams`, `mac1` "
    "failures, `cookie_replies`, `rate_limited`, `noise` failures, `completed`...)",
    "tcp": "inbound TCP streams before authentication: `pending` now; since start "
    "`accepted`, `refused_per_source` and `evicted` (caps), `handshake_timeouts`, "
    "`oversized_frames`, `accept_errors` (descriptor exhaustion; logged at most every 10 s)",
    "reflection": "sends to addresses nobody verified (punch candidates, gossip and beacon "
    "dials), charged to whoever asked (design note 0046): bytes `spent`, bytes `refused` "
    "in `refusals` sends not made, requester `sources` remembered now, `evicted` from the "
    "table",
    "udp": "per UDP listener: the C endpoint's counters (datagrams, batches, GSO/GRO, drops)",
    "per_peer": "per connected peer id: `path`, `address`, `incoming`, `maintained` and "
    "every `PeerStats` field (RTT in seconds, cwnd, bytes, messages, losses, MTU)",
    "live": "objects held now, per kind (a leak check: each returns to 0 once every "
    "connection ended): `peers`, `links` (connections in use), `closing` (ended, "
    "draining), `retiring` (duplicates being retired), `standby` (second connections "
    "their dialler may not hold, waiting for it to show: at most one per peer), "
    "`prune_watch` (peers watched for pruning), `tcp_streams`, "
    "`udp_connections`, `udp_dials` (outgoing UDP handshakes), "
    "`engine_connections` (C connections alive in the whole process)",
    "discovery": "`beacon` (null when not running): datagrams `rx`, `malformed`, `foreign`, "
    "`own`, `rate_limited`, `queries_sent`, `replies_sent`, `replies_too_big`, `lan_peers`; "
    "`bootstrap`: candidates `tried`, `connected`, `skipped` by reason, seconds to "
    "`first_success`; `gossip`: lists `accepted`, `rate_limited`, `stale`",
}


class PeerEntry(TypedDict):
    """``ServiceStats["per_peer"][peer_id]``: the peer's place and every
    :class:`~crust.peer.PeerStats` field."""

    path: PathName
    address: list[str | int]
    incoming: bool
    maintained: bool
    cipher: str
    rtt: float
    min_rtt: float
    cwnd: int
    bytes_in_flight: int
    pacing_rate: int
    sent_bytes: int
    received_bytes: int
    sent_messages: int
    received_messages: int
    lost_packets: int
    retransmitted_bytes: int
    mtu: int
    send_buffered: int
    recv_buffered: int
    recv_held: int


class ServiceStats(TypedDict):
    """What :meth:`crust.Service.stats` returns (each key in
    :data:`STATS_DOC`). Counter tables are keyed by name (``connections``
    also by path name), so they are plain ``dict[str, int]``."""

    id: str
    uptime: float
    endpoints: list[list[str | int]]
    listeners: int
    peers: int
    connections: dict[str, int]
    lost_reasons: dict[str, int]
    traffic: dict[str, int]
    handshake: dict[str, int]
    udp: list[dict[str, int]]
    tcp: dict[str, int]
    reflection: dict[str, int]
    live: dict[str, int]
    per_peer: dict[str, PeerEntry]
    discovery: dict[str, Any]


class ServiceCounters:
    """What a service has done since it started, kept from its events."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.connections: Counter[str] = Counter()
        self.lost_reasons: Counter[str] = Counter()
        self.ended_traffic: Counter[str] = Counter()
        self.responders: list[Responder] = []

    def observe(self, ev: Event) -> None:
        """Count one event (the service calls this for every event it emits)."""
        if isinstance(ev, NewPeer):
            self.connections["incoming" if ev.incoming else "outgoing"] += 1
            self.connections[ev.path] += 1
        elif isinstance(ev, ConnectFailed):
            self.connections["connect_failures"] += 1
        elif isinstance(ev, LostPeer):
            self.connections["lost"] += 1
            self.lost_reasons[ev.reason] += 1
            self.ended_traffic.update(_traffic(ev.peer))
        elif isinstance(ev, PeerMisbehaving):
            self.connections["misbehaving"] += 1
        elif isinstance(ev, MessageDropped):
            self.connections["messages_dropped"] += 1


class UdpCounters(Protocol):
    """What the stats read of a UDP listener (crust.asyncio.udp)."""

    @property
    def connections(self) -> int: ...
    @property
    def dials(self) -> int: ...
    @property
    def endpoint(self) -> _core.Endpoint: ...


class _Discovery(Protocol):
    def stats(self) -> dict[str, Any]: ...


class StatsSource(Protocol):
    """What :func:`snapshot` reads of a node (crust.node.Node is one):
    named here, as the node core imports this module for its counters."""

    @property
    def id(self) -> PeerId: ...
    @property
    def endpoints(self) -> list[Address]: ...
    @property
    def peers(self) -> list[Peer]: ...
    @property
    def udp_ports(self) -> Sequence[UdpCounters]: ...
    @property
    def tcp_ports(self) -> Sequence[object]: ...
    @property
    def tcp_links(self) -> Sized: ...
    @property
    def tcp_preauth(self) -> PreAuthTcp: ...
    @property
    def reflection(self) -> SendBudget: ...
    @property
    def discovery(self) -> _Discovery: ...
    def bookkeeping(self) -> dict[str, int]: ...


def _traffic(peer: Peer) -> dict[str, int]:
    st = peer.link.conn.stats()
    return {name: int(st[key]) for key, name in _TRAFFIC.items()}


def _peer_entry(peer: Peer) -> PeerEntry:
    entry: dict[str, Any] = {
        "path": peer.path,
        "address": list(peer.address),
        "incoming": peer.incoming,
        "maintained": peer.maintained,
    }
    st = peer.stats
    entry.update({f.name: getattr(st, f.name) for f in dataclasses.fields(st) if f.name != "path"})
    # Built from PeerStats' fields, which tests/service/test_stats.py checks
    # against PeerEntry's keys.
    return cast(PeerEntry, entry)


def _tcp_stats(svc: StatsSource) -> dict[str, int]:
    keys = (
        "accepted", "refused_per_source", "evicted", "handshake_timeouts",
        "oversized_frames", "accept_errors",
    )  # fmt: skip
    out = dict.fromkeys(keys, 0)
    out.update(svc.tcp_preauth.counts)
    out["pending"] = len(svc.tcp_preauth)
    return out


def live_objects(svc: StatsSource) -> dict[str, int]:
    """How many of each per-connection object ``svc`` holds now."""
    return {
        **svc.bookkeeping(),
        "tcp_streams": len(svc.tcp_links),
        "udp_connections": sum(ul.connections for ul in svc.udp_ports),
        "udp_dials": sum(ul.dials for ul in svc.udp_ports),
        "engine_connections": _core.live_connections(),
    }


def snapshot(svc: StatsSource, counters: ServiceCounters) -> ServiceStats:
    """The structured stats of ``svc`` (plain dicts, lists, str, int, float
    and bool only, so ``json.dumps`` takes it as is)."""
    peers = svc.peers
    traffic: Counter[str] = Counter(dict.fromkeys(_TRAFFIC.values(), 0))
    traffic.update(counters.ended_traffic)
    for p in peers:
        traffic.update(_traffic(p))
    handshake: Counter[str] = Counter()
    for r in counters.responders:
        handshake.update(r.stats)
    connection_keys = (
        "outgoing", "incoming", "direct-tcp", "direct-udp",
        "connect_failures", "lost", "misbehaving", "messages_dropped",
        "evicted_full", "refused_full",
    )  # fmt: skip
    connections = dict.fromkeys(connection_keys, 0)
    connections.update(counters.connections)
    out: ServiceStats = {
        "id": str(svc.id),
        "uptime": round(time.monotonic() - counters.started, 3),
        "endpoints": [list(e) for e in svc.endpoints],
        "listeners": len(svc.udp_ports) + len(svc.tcp_ports),
        "peers": len(peers),
        "connections": connections,
        "lost_reasons": dict(counters.lost_reasons),
        "traffic": dict(traffic),
        "handshake": dict(handshake),
        "tcp": _tcp_stats(svc),
        "reflection": {**svc.reflection.stats, "sources": len(svc.reflection)},
        "udp": [{k: int(v) for k, v in ul.endpoint.stats().items()} for ul in svc.udp_ports],
        "per_peer": {str(p.id): _peer_entry(p) for p in peers},
        "live": live_objects(svc),
        "discovery": svc.discovery.stats(),
    }
    return out
