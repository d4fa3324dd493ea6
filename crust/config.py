"""Configuration of a :class:`crust.Service`.

All times are seconds (floats) at this level; the engine's microsecond
tunables live in :class:`crust._core.Config`, reachable as ``engine``.
Every field is validated on construction and an out-of-range value raises
:class:`crust.errors.ConfigError` naming the field.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from crust.errors import ConfigError

if TYPE_CHECKING:
    from crust.identity import Identity

__all__ = ["RELAY_POLICIES", "ServiceConfig", "parse_host_port", "port_problem"]


def _bad(name: str, why: str) -> ConfigError:
    err = ConfigError(f"ServiceConfig.{name}: {why}")
    err.field = name
    return err


#: ``ServiceConfig.relay``: never relay; relay only when no direct path
#: works; always go through a relay (hides our address from the peer).
RELAY_POLICIES = ("never", "fallback", "always")


def parse_host_port(text: str) -> tuple[str, int]:
    """``"host:port"`` or ``"[v6]:port"`` as ``(host, port)``; ValueError
    saying what is wrong."""
    t = text.strip()
    host, sep, port = t.rpartition(":")
    if not sep or not host:
        raise ValueError(f"{text!r} is not host:port")
    if host.startswith("["):
        if not host.endswith("]"):
            raise ValueError(f"{text!r}: unbalanced [ ]")
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"{text!r}: write IPv6 addresses as [addr]:port")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{text!r}: port must be 1..65535")
    if not host or len(host) > 253:
        raise ValueError(f"{text!r}: empty or overlong host")
    return host, int(port)


def _receive_budget_floor(max_message_size: int) -> int:
    # One whole message per priority must fit, or four half-received ones
    # could fill the window and none ever complete (design note 0003); and
    # the engine's initial window (256 KiB) at least.
    return max(256 << 10, 4 * (max_message_size + 8))
def port_problem(port: int) -> str | None:
    """Why ``port`` cannot be a listening port, or None: the one rule the
    configuration and the command line's ``--port`` share. Ports up to 1024
    need privileges a node should not run with."""
    if port == 0 or 1024 < port < 65536:
        return None
    return f"must be 0 (random) or 1025..65535, got {port}"


def _check_host_port(name: str, text: object) -> None:
    if not isinstance(text, str):
        raise _bad(name, f"entries must be 'host:port' strings, got {text!r}")
    try:
        parse_host_port(text)
    except ValueError as exc:
        raise _bad(name, str(exc)) from None


def _check_blacklist_entry(text: object) -> None:
    if not isinstance(text, str):
        raise _bad("blacklist", f"entries must be strings, got {text!r}")
    try:
        ipaddress.ip_network(text, strict=False)
        return
    except ValueError:
        pass
    from crust.identity import InvalidPeerId, PeerId  # deferred: import-light

    try:
        PeerId.parse(text)
    except InvalidPeerId as exc:
        raise _bad(
            "blacklist", f"{text!r} is neither an address/network nor a peer id ({exc})"
        ) from None


@dataclass(frozen=True, kw_only=True)
class ServiceConfig:
    """How a service listens, connects and keeps connections.

    Each field's documentation is the string below it (the configuration
    reference in the docs is generated from these, and a test checks that
    every field has one).
    """

    network: str = "crust"
    """Network name: nodes only ever connect to nodes of the same network
    (the name is bound into every handshake). 1..255 bytes of UTF-8."""
    hosts: tuple[str, ...] = ("127.0.0.1",)
    """IP addresses to listen on; each gets a TCP and a UDP listener on one
    port number."""
    port: int = 0
    """The live port: 0 picks a random free port above 1024, else
    1025..65535."""
    backup_port: bool = True
    """Also listen on a second, random backup port (as the original crust
    did)."""
    identity: Identity | None = None
    """This node's key pair. ``None``: load (or create) it from
    ``identity_path``."""
    identity_path: Path | None = None
    """Where the identity key is kept (mode 0600). ``None``: a file in the
    user data directory."""
    connect_timeout: float = 10.0
    """Seconds one ``connect`` may take in all (0.1..3600)."""
    tcp_head_start: float = 0.25
    """Seconds TCP is tried alone before UDP joins the race (TCP is kept
    when both succeed)."""
    tcp: bool = True
    """Listen and dial over TCP."""
    udp: bool = True
    """Listen and dial over UDP (crust's reliable UDP). At least one of
    ``tcp`` and ``udp`` must be on."""
    prune_after: float = 60.0
    """Seconds after which a connection the application neither maintains
    nor uses is closed (0.1..1e7); peers that joined through this node
    (``Service.join``, accepted bootstrap requests) are kept while their
    link lives."""
    keepalive: float = 30.0
    """Seconds of silence after which a PING goes out (0: never); less than
    ``idle_timeout``. Only one end of an idle connection sends them: a PING
    heard holds ours back (design note 0050). Half the idle timeout: on a
    path with no NAT the PING only has to beat ``idle_timeout`` and the
    stateful firewalls on it, which keep a two-way UDP flow 60 s (pf) to
    120-180 s (Linux, RFC 4787); paths through a NAT use the shorter
    ``nat_keepalive`` (design note 0073)."""
    nat_keepalive: float = 8.0
    """The keepalive of a UDP connection whose path crosses a NAT: the peer
    saw us at another address than our own, or the path was punched. Short
    enough for NAT bindings that time out after 10 s (many home and carrier
    NATs forget UDP in 30 s or less): one PING and its ACK per interval
    and connection. It only ever shortens ``keepalive`` (0 here, or
    ``keepalive=0``: no change)."""
    idle_timeout: float = 60.0
    """Seconds without hearing from a peer before it is lost (``LostPeer``
    with reason "idle timeout"). Keepalives keep a quiet live link up."""
    lost_timeout: float = 8.0
    """Seconds a peer may leave messages we sent unanswered (nothing at all
    heard from it) before it is lost (``LostPeer`` reason "peer stopped
    answering: ..."); never sooner than three probe timeouts at the measured
    round trip. Applies only while we have data in flight: quiet links are
    left to ``idle_timeout``. A peer whose address the network reports
    unreachable (ICMP) is probed at once and lost within about a second if
    the probes go unanswered. 0: off; else 0.1..1e7."""
    max_message_size: int = 8 << 20
    """Largest message, in bytes, sent or accepted (1..2^32)."""
    receive_budget: int | None = None
    """Bytes of received messages one connection may hold for the
    application before the peer is made to wait (its flow-control window:
    messages the engine holds plus those handed up but not yet read).
    At least 4 x (``max_message_size`` + 8), one whole message per
    priority, and 256 KiB; None: that, and no less than 34 MiB."""
    event_backlog: int = 10_000
    """Events other than messages one ``events()`` subscription may hold
    unread; past that it ends with ``EventsOverflow`` (messages are never
    dropped this way: they hold the sender back instead)."""
    cookie_rate: int = 1000
    """Handshake initiations per second above which the listener demands a
    cookie (proof of the source address) before doing any work."""
    max_connections: int = 1024
    """Connected peers kept at most (1..1000000). When full, an incoming,
    unmaintained peer (the least recently used; peers that joined through
    this node only after the others) gives way to a newcomer;
    maintained peers and peers this node dialled never do, and a new
    connection is refused when nobody can (``connect`` raises; ``LostPeer`` reason
    "connection limit: ..."; ``stats()["connections"]`` counts
    ``evicted_full`` and ``refused_full``)."""
    max_connections_per_source: int = 128
    """Connected peers kept at most per source, an IPv4 address or an IPv6
    /64 (1..1000000); the same rule decides who gives way."""
    tcp_handshake_timeout: float = 5.0
    """Seconds an inbound TCP stream may take to complete its handshake
    before it is closed (0.1..600): unauthenticated streams must not pin
    descriptors. Counted as ``stats()["tcp"]["handshake_timeouts"]``."""
    tcp_unauthenticated_per_source: int = 16
    """Inbound TCP streams one source (an IPv4 address, an IPv6 /64) may
    have open before completing a handshake (1..65536); more are closed at
    once (``refused_per_source``)."""
    tcp_unauthenticated_max: int = 256
    """Inbound TCP streams without a completed handshake, from all sources
    together (1..1000000), and never more than a quarter of the process's
    descriptor limit; a new one past this closes the oldest (``evicted``),
    so a flood delays a legitimate handshake without locking it out."""
    misbehaving_threshold: int = 100
    """Datagrams from one source that fail authentication or parsing before
    a ``PeerMisbehaving`` event."""
    auto_blacklist: bool = False
    """Blacklist a misbehaving source automatically."""
    ciphers: tuple[str, ...] | None = None
    """Packet ciphers to offer and accept, most preferred first:
    ``"aegis128l"``, ``"aes256gcm"``, ``"chacha20poly1305"``. ``None``:
    every one this machine runs, fastest first (the AES-based two need
    AES-NI). A connection uses the dialler's first choice the listener
    accepts."""
    beacon: bool = True
    """Find nodes of the same network on the local link: announce and listen
    on UDP ``beacon_port`` (IPv4 broadcast, IPv6 multicast) on the
    interfaces of ``hosts`` (every interface for ``0.0.0.0``/``::``; never on
    loopback, so the default ``127.0.0.1`` sends nothing)."""
    beacon_port: int = 5483
    """UDP port of the LAN beacon (1025..65535)."""
    beacon_interval: float = 5.0
    """Seconds between beacon queries after the first few (0.05..3600)."""
    contacts: tuple[str, ...] = ()
    """``"host:port"`` nodes always tried when bootstrapping (the seed's
    hard-coded contacts)."""
    cache_path: Path | None = None
    """The bootstrap cache file. ``None``: a file per network in the user
    cache directory."""
    cache_size: int = 200
    """Entries kept in the bootstrap cache, least recently successful
    evicted first (0: no cache at all)."""
    accept_bootstrap: bool = True
    """Let other nodes bootstrap off this one (refused ones are
    disconnected)."""
    bootstrap_timeout: float = 10.0
    """Seconds bootstrapping may take before ``BootstrapFailed`` when no
    candidate accepted (0.1..3600)."""
    bootstrap_attempt_timeout: float = 3.0
    """Seconds one bootstrap connection attempt may take (0.1..600)."""
    bootstrap_parallelism: int = 8
    """Bootstrap connection attempts in flight at once (1..256)."""
    bootstrap_peers: int = 8
    """Bootstrap connections wanted (and maintained); bootstrapping stops
    dialling once it has this many (1..1024)."""
    gossip: bool = True
    """Exchange signed lists of directly reachable peers with connected
    peers, and dial learned ones while below ``bootstrap_peers``."""
    gossip_interval: float = 30.0
    """Seconds between gossip rounds (0.05..86400); a new peer gets one at
    once."""
    blacklist: tuple[str, ...] = ()
    """Peer ids and address networks (``"10.0.0.0/8"``) refused from the
    start (``Service.blacklist`` adds more at run time)."""
    stun_servers: tuple[str, ...] = ()
    """``"host:port"`` STUN servers used to learn our public address."""
    relay: str = "fallback"
    """Relay policy: ``"never"``, ``"fallback"`` (only when no direct path
    works) or ``"always"``."""
    relay_for_others: str = "allowed"
    """Whether this node relays for pairs of its peers it introduced
    (``connect`` by id): ``"never"`` or ``"allowed"``. It forwards their
    ciphertext only."""
    relay_cap: int = 1 << 20
    """Bytes per second one relayed session may use through this node
    (0: no cap); above it datagrams are dropped and the endpoints' congestion
    control slows down."""
    upgrade_retry: float = 5.0
    """Seconds a relayed connection waits before it first retries a direct
    path (a punch over the relayed connection; it moves in place when one
    works); doubled after each failed try, up to ``upgrade_retry_max``
    (0.05..86400)."""
    upgrade_retry_max: float = 300.0
    """The longest wait between two tries of a direct path under a relayed
    connection (``upgrade_retry``..86400 seconds)."""
    upnp: bool = False
    """Ask a UPnP gateway to forward the live UDP and TCP ports (in the
    background: start-up never waits for it). Off by default because it
    multicasts SSDP searches on the local network."""
    upnp_lease: int = 3600
    """Seconds each port mapping (UPnP, PCP or NAT-PMP) is asked for
    (60..604800); renewed at half what the gateway granted, deleted when
    the service closes."""
    natpmp: bool = False
    """Ask the default gateway by PCP (RFC 6887), falling back to NAT-PMP
    (RFC 6886), to forward the live UDP and TCP ports; with ``upnp`` too,
    only when UPnP found no gateway. Unicast to the gateway's UDP port 5351
    (no multicast); off by default, as a library should not ask its router
    for anything unasked."""
    natpmp_gateway: str = ""
    """Where PCP/NAT-PMP requests go: ``"host"`` or ``"host:port"``
    (port 5351 by default); empty: the IPv4 default route's gateway."""
    dht: bool = False
    """Join the BitTorrent Mainline DHT (needs ``pip install crust[dht]``)
    to find peers by id without a shared contact, and (``dht_publish``)
    publish this node's record there. Off by default: the record is public.
    Anyone who knows this node's peer id can then read the addresses it
    listens on and was seen at (local, reflexive, port-mapped), the ids and
    addresses of the peers it keeps connections to (up to 8), and when the
    record was made; and the DHT's nodes see this machine's address taking
    part (docs/dht.md)."""
    dht_publish: bool = True
    """With ``dht``: publish this node's record (off: resolve others only,
    publish nothing)."""
    dht_port: int = 0
    """UDP port of the DHT node: 0 (random) or 1025..65535."""
    dht_bootstrap: tuple[str, ...] = ()
    """``"host:port"`` DHT nodes to join through. Empty: none at all (never
    libtorrent's public defaults); for the public Mainline DHT list e.g.
    ``"router.bittorrent.com:6881"``, ``"dht.transmissionbt.com:6881"``."""
    dht_settings: dict[str, Any] = field(default_factory=dict)
    """libtorrent settings applied last to the DHT's session (a private DHT
    on one address needs ``{"dht_restrict_routing_ips": false}``)."""
    engine: dict[str, Any] = field(default_factory=dict)
    """Overrides of engine tunables (:class:`crust._core.Config` keywords,
    e.g. ``{"cc": "cubic"}``), applied last."""

    def __post_init__(self) -> None:
        if not self.network or len(self.network.encode()) > 255:
            raise _bad("network", f"must be 1..255 bytes of UTF-8, got {self.network!r}")
        if not self.hosts:
            raise _bad("hosts", "needs at least one address to listen on")
        for h in self.hosts:
            try:
                ipaddress.ip_address(h)
            except ValueError:
                raise _bad("hosts", f"{h!r} is not an IPv4 or IPv6 address") from None
        if (why := port_problem(self.port)) is not None:
            raise _bad("port", why)
        if not (self.tcp or self.udp):
            raise _bad("tcp", "tcp and udp are both off: nothing to listen or connect with")
        for name, lo, hi in (
            ("connect_timeout", 0.1, 3600.0),
            ("tcp_handshake_timeout", 0.1, 600.0),
            ("tcp_head_start", 0.0, 60.0),
            ("prune_after", 0.1, 1e7),
            ("idle_timeout", 0.1, 1e7),
        ):
            v = getattr(self, name)
            if not lo <= v <= hi:
                raise _bad(name, f"must be in {lo}..{hi} seconds, got {v}")
        if not 0.0 <= self.keepalive < self.idle_timeout:
            raise _bad(
                "keepalive",
                f"must be in 0..idle_timeout ({self.idle_timeout}), got {self.keepalive}",
            )
        if self.keepalive and self.keepalive < 0.01:
            raise _bad("keepalive", f"must be 0 (off) or >= 0.01 s, got {self.keepalive}")
        if not (self.nat_keepalive == 0 or 0.01 <= self.nat_keepalive <= 1e7):
            raise _bad(
                "nat_keepalive",
                f"must be 0 (use keepalive) or 0.01..1e7 seconds, got {self.nat_keepalive}",
            )
        if self.lost_timeout and not 0.1 <= self.lost_timeout <= 1e7:
            raise _bad(
                "lost_timeout", f"must be 0 (off) or in 0.1..1e7 seconds, got {self.lost_timeout}"
            )
        for name, hi in (
            ("max_connections", 1_000_000),
            ("max_connections_per_source", 1_000_000),
            ("tcp_unauthenticated_per_source", 1 << 16),
            ("tcp_unauthenticated_max", 1_000_000),
        ):
            v = getattr(self, name)
            if not 1 <= v <= hi:
                raise _bad(name, f"must be 1..{hi}, got {v}")
        if not 1 <= self.max_message_size <= 1 << 32:
            raise _bad("max_message_size", f"must be 1..2^32 bytes, got {self.max_message_size}")
        floor = _receive_budget_floor(self.max_message_size)
        if self.receive_budget is not None and not floor <= self.receive_budget <= 1 << 40:
            raise _bad(
                "receive_budget",
                f"must be in {floor}..2^40 bytes (4 x (max_message_size + 8), 256 KiB at least), "
                f"got {self.receive_budget}",
            )
        if self.event_backlog < 1:
            raise _bad("event_backlog", f"must be >= 1, got {self.event_backlog}")
        if self.cookie_rate < 1:
            raise _bad("cookie_rate", f"must be >= 1 per second, got {self.cookie_rate}")
        if self.misbehaving_threshold < 1:
            raise _bad("misbehaving_threshold", f"must be >= 1, got {self.misbehaving_threshold}")
        self._validate_discovery()
        if self.ciphers is not None:
            try:
                self.aeads()
            except ValueError as exc:
                raise _bad("ciphers", str(exc)) from None
        if not 60 <= self.upnp_lease <= 604800:
            raise _bad("upnp_lease", f"must be in 60..604800 seconds, got {self.upnp_lease}")
        if self.natpmp_gateway:
            try:
                self.natpmp_gateway_address()
            except ValueError as exc:
                raise _bad("natpmp_gateway", str(exc)) from None
        self.engine_config()  # validates the engine overrides too

    def natpmp_gateway_address(self) -> tuple[str | None, int]:
        """``natpmp_gateway`` as (IPv4 address or None for the default
        route's gateway, port)."""
        host, sep, port_s = self.natpmp_gateway.partition(":")
        if not host:
            return None, 5351
        ipaddress.IPv4Address(host)  # ValueError naming it
        if sep and not (port_s.isdigit() and 0 < int(port_s) < 65536):
            raise ValueError(f"port must be 1..65535, got {port_s!r}")
        return host, int(port_s) if sep else 5351

    def aeads(self) -> tuple[int, ...]:
        """The cipher ids to offer, most preferred first (see ``ciphers``)."""
        # Imported here, as _core is in engine_config: the handshake module
        # loads the compiled core, which plain config handling needs not.
        from crust.handshake import aeads_from_names, default_aeads

        if self.ciphers is None:
            return default_aeads()
        return aeads_from_names(self.ciphers)

    def _validate_discovery(self) -> None:
        if not 1024 < self.beacon_port < 65536:
            raise _bad("beacon_port", f"must be 1025..65535, got {self.beacon_port}")
        for name, lo, hi in (
            ("beacon_interval", 0.05, 3600.0),
            ("bootstrap_timeout", 0.1, 3600.0),
            ("bootstrap_attempt_timeout", 0.1, 600.0),
            ("gossip_interval", 0.05, 86400.0),
        ):
            v = getattr(self, name)
            if not lo <= v <= hi:
                raise _bad(name, f"must be in {lo}..{hi} seconds, got {v}")
        for name, ilo, ihi in (
            ("cache_size", 0, 100_000),
            ("bootstrap_parallelism", 1, 256),
            ("bootstrap_peers", 1, 1024),
        ):
            iv = getattr(self, name)
            if not ilo <= iv <= ihi:
                raise _bad(name, f"must be in {ilo}..{ihi}, got {iv}")
        for c in self.contacts:
            _check_host_port("contacts", c)
        for c in self.stun_servers:
            _check_host_port("stun_servers", c)
        for b in self.blacklist:
            _check_blacklist_entry(b)
        if self.relay not in RELAY_POLICIES:
            raise _bad("relay", f"must be one of {', '.join(RELAY_POLICIES)}, got {self.relay!r}")
        if self.relay_for_others not in ("never", "allowed"):
            raise _bad(
                "relay_for_others", f"must be 'never' or 'allowed', got {self.relay_for_others!r}"
            )
        if not 0.05 <= self.upgrade_retry <= 86400.0:
            raise _bad("upgrade_retry", f"must be in 0.05..86400 seconds, got {self.upgrade_retry}")
        if not self.upgrade_retry <= self.upgrade_retry_max <= 86400.0:
            raise _bad(
                "upgrade_retry_max",
                f"must be in upgrade_retry ({self.upgrade_retry})..86400 seconds, "
                f"got {self.upgrade_retry_max}",
            )
        if (why := port_problem(self.dht_port)) is not None:
            raise _bad("dht_port", why)
        for c in self.dht_bootstrap:
            _check_host_port("dht_bootstrap", c)
        if not 0 <= self.relay_cap < 1 << 40:
            raise _bad("relay_cap", f"must be 0 (no cap) or a positive rate, got {self.relay_cap}")

    def receive_window(self) -> int:
        """Each connection's receive budget in bytes (``receive_budget``,
        or its default)."""
        if self.receive_budget is not None:
            return self.receive_budget
        return max(34 << 20, _receive_budget_floor(self.max_message_size))

    def engine_config(self, **extra: Any) -> Any:
        """The engine :class:`crust._core.Config` this service's connections
        use: timeouts and sizes from here, then ``engine`` overrides."""
        from crust import _core  # deferred: keeps config import-light

        kw: dict[str, Any] = {
            "idle_timeout_us": int(self.idle_timeout * 1e6),
            "keepalive_us": int(self.keepalive * 1e6),
            "lost_timeout_us": int(self.lost_timeout * 1e6),
            "max_message_size": self.max_message_size,
            "recv_window": self.receive_window(),
        }
        kw.update(self.engine)
        kw.update(extra)
        try:
            return _core.Config(**kw)
        except ConfigError as e:
            raise _bad("engine", str(e)) from None
        except TypeError as e:
            raise _bad("engine", str(e)) from None

    def replace(self, **changes: Any) -> ServiceConfig:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)
