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

__all__ = ["ServiceConfig"]


def _bad(name: str, why: str) -> ConfigError:
    err = ConfigError(f"ServiceConfig.{name}: {why}")
    err.field = name
    return err


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
    nor uses is closed."""
    keepalive: float = 20.0
    """Seconds of silence after which a PING goes out (0: never); less than
    ``idle_timeout``."""
    idle_timeout: float = 60.0
    """Seconds without hearing from a peer before it is lost (``LostPeer``
    with reason "idle timeout")."""
    max_message_size: int = 8 << 20
    """Largest message, in bytes, sent or accepted (1..2^32)."""
    cookie_rate: int = 1000
    """Handshake initiations per second above which the listener demands a
    cookie (proof of the source address) before doing any work."""
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
    upnp: bool = False
    """Ask a UPnP gateway to forward the live UDP and TCP ports (in the
    background: start-up never waits for it). Off by default because it
    multicasts SSDP searches on the local network."""
    upnp_lease: int = 3600
    """Seconds each UPnP mapping is asked for (60..604800); renewed at half
    that, deleted when the service closes."""
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
        if not (self.port == 0 or 1024 < self.port < 65536):
            raise _bad("port", f"must be 0 (random) or 1025..65535, got {self.port}")
        if not (self.tcp or self.udp):
            raise _bad("tcp", "tcp and udp are both off: nothing to listen or connect with")
        for name, lo, hi in (
            ("connect_timeout", 0.1, 3600.0),
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
        if not 1 <= self.max_message_size <= 1 << 32:
            raise _bad("max_message_size", f"must be 1..2^32 bytes, got {self.max_message_size}")
        if self.cookie_rate < 1:
            raise _bad("cookie_rate", f"must be >= 1 per second, got {self.cookie_rate}")
        if self.misbehaving_threshold < 1:
            raise _bad("misbehaving_threshold", f"must be >= 1, got {self.misbehaving_threshold}")
        if self.ciphers is not None:
            try:
                self.aeads()
            except ValueError as exc:
                raise _bad("ciphers", str(exc)) from None
        if not 60 <= self.upnp_lease <= 604800:
            raise _bad("upnp_lease", f"must be in 60..604800 seconds, got {self.upnp_lease}")
        self.engine_config()  # validates the engine overrides too

    def aeads(self) -> tuple[int, ...]:
        """The cipher ids to offer, most preferred first (see ``ciphers``)."""
        # Imported here, as _core is in engine_config: the handshake module
        # loads the compiled core, which plain config handling needs not.
        from crust.handshake import aeads_from_names, default_aeads

        if self.ciphers is None:
            return default_aeads()
        return aeads_from_names(self.ciphers)

    def engine_config(self, **extra: Any) -> Any:
        """The engine :class:`crust._core.Config` this service's connections
        use: timeouts and sizes from here, then ``engine`` overrides."""
        from crust import _core  # deferred: keeps config import-light

        kw: dict[str, Any] = {
            "idle_timeout_us": int(self.idle_timeout * 1e6),
            "keepalive_us": int(self.keepalive * 1e6),
            "max_message_size": self.max_message_size,
            "recv_window": max(34 << 20, _core.NUM_PRIO * (self.max_message_size + 8)),
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
