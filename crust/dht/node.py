"""The DHT engine: one libtorrent session, DHT only, in its own thread.

libtorrent (``pip install crust[dht]``) runs the Mainline DHT; crust never
implements the DHT itself. Everything that touches the session happens in
one thread of ours: creating it (which takes ~0.1 s), the commands (get,
put), reading its alerts and destroying it (which waits for the session's
threads). The event loop only queues commands and receives results through
``call_soon_threadsafe``, so nothing of the DHT blocks it.

The session is configured for the DHT alone: no torrents, no TCP, no uTP
peers, no local service discovery, no UPnP or NAT-PMP, and bootstrap nodes
taken only from crust's configuration (libtorrent's default bootstrap hosts
are replaced, so a node configured with none contacts nobody until told).
"""

from __future__ import annotations

import asyncio
import collections
import importlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from crust.dht.record import SignedItem
from crust.errors import DhtUnavailable

__all__ = ["DhtNode", "DhtState", "DhtUnavailable", "load_libtorrent"]

logger = logging.getLogger(__name__)

# How long the thread sleeps waiting for an alert before looking at its
# command queue: the latency a command can wait before it starts.
_POLL_MS = 20
# How often routing table sizes are asked for (dht_stats_alert).
_STATS_EVERY = 2.0


def load_libtorrent() -> Any:
    """The ``libtorrent`` module, imported on first use; a clear error when
    the optional dependency is missing."""
    try:
        return importlib.import_module("libtorrent")
    except ImportError as exc:
        raise DhtUnavailable(
            "the DHT needs libtorrent: pip install 'crust[dht]' (or pip install libtorrent)"
        ) from exc


@dataclass
class DhtState:
    """What ``crust nat`` and ``stats()`` show about the DHT."""

    running: bool = False
    port: int = 0
    nodes: int = 0
    bootstrapped: bool = False
    error: str = ""
    puts: int = 0
    gets: int = 0

    def describe(self) -> str:
        if self.error:
            return f"off ({self.error})"
        if not self.running:
            return "off"
        boot = "bootstrapped" if self.bootstrapped else "bootstrapping"
        return f"on, UDP port {self.port}, {self.nodes} nodes in the routing table, {boot}"


@dataclass(eq=False)
class _Get:
    deliver: Callable[[SignedItem | None, bool], None]
    started: float = field(default_factory=time.monotonic)


def settings(
    lt: Any, host: str, port: int, bootstrap: tuple[tuple[str, int], ...]
) -> dict[str, Any]:
    """The libtorrent settings of a DHT-only session (also what the tests'
    private DHT uses for its own nodes)."""
    cat = lt.alert.category_t
    v6 = ":" in host
    return {
        "listen_interfaces": f"[{host}]:{port}" if v6 else f"{host}:{port}",
        "enable_dht": True,
        # Only the configured bootstrap nodes, never libtorrent's defaults
        # (router.bittorrent.com and others): an empty string means none.
        "dht_bootstrap_nodes": ",".join(
            f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in bootstrap
        ),
        "enable_lsd": False,
        "enable_upnp": False,
        "enable_natpmp": False,
        "enable_outgoing_tcp": False,
        "enable_incoming_tcp": False,
        "enable_outgoing_utp": False,
        "enable_incoming_utp": False,
        "aio_threads": 1,
        "hashing_threads": 1,
        "alert_mask": cat.dht_notification | cat.error_notification | cat.status_notification,
    }


class DhtNode:
    """A DHT-only libtorrent session in a thread of its own.

    ``host``/``port``: where its UDP socket listens (port 0: libtorrent
    picks); ``bootstrap``: the nodes it asks first. ``extra_settings`` are
    libtorrent settings applied last (a private network on one address needs
    ``dht_restrict_routing_ips`` off, for instance).
    """

    def __init__(
        self,
        host: str,
        port: int,
        bootstrap: tuple[tuple[str, int], ...],
        *,
        extra_settings: dict[str, Any] | None = None,
    ) -> None:
        self.lt = load_libtorrent()
        self.state = DhtState()
        self._settings = settings(self.lt, host, port, bootstrap)
        self._settings.update(extra_settings or {})
        self._bootstrap = bootstrap
        self._commands: collections.deque[Callable[[Any], None]] = collections.deque()
        self._gets: dict[tuple[bytes, bytes], list[_Get]] = {}
        self._puts: dict[tuple[bytes, bytes], list[Callable[[int], None]]] = {}
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._start_error: BaseException | None = None

    # -- life cycle (event loop side) ------------------------------------------

    async def start(self) -> None:
        """Start the session in its thread; returns once it listens."""
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._run, name="crust-dht", daemon=True)
        self._thread.start()
        await self._loop.run_in_executor(None, self._ready.wait)
        if self._start_error is not None:
            raise DhtUnavailable(f"the DHT did not start: {self._start_error}")

    async def close(self) -> None:
        """Stop the session (its thread destroys it) and wait for that."""
        self._stop.set()
        thread = self._thread
        if thread is not None and self._loop is not None:
            await self._loop.run_in_executor(None, thread.join, 10.0)
        self.state.running = False

    def add_node(self, addr: tuple[str, int]) -> None:
        """Tell the routing table about a node (it is pinged first)."""
        self._commands.append(lambda ses: ses.add_dht_node(addr))

    def get(
        self, key: bytes, salt: bytes, deliver: Callable[[SignedItem | None, bool], None]
    ) -> None:
        """Look up the mutable item under ``key``/``salt``. ``deliver(item,
        final)`` is called on the event loop for each item found (final
        False: more may come) and once with ``final`` True when the lookup
        ended (item None: nothing found, or only the ones already given)."""

        def run(ses: Any) -> None:
            self._gets.setdefault((key, salt), []).append(_Get(deliver))
            ses.dht_get_mutable_item(key, salt)
            self.state.gets += 1

        self._commands.append(run)

    def put(
        self, secret: bytes, key: bytes, data: bytes, salt: bytes, done: Callable[[int], None]
    ) -> None:
        """Store ``data`` (bencoded as a string: BEP 44's ``v``) under
        ``key``/``salt``, signed with the 64-byte expanded ``secret``;
        ``done(stored_on)`` is called on the event loop with the number of
        nodes that took it."""

        def run(ses: Any) -> None:
            self._puts.setdefault((key, salt), []).append(done)
            ses.dht_put_mutable_item(secret, key, data, salt)
            self.state.puts += 1

        self._commands.append(run)

    # -- the DHT thread ----------------------------------------------------------

    def _run(self) -> None:
        try:
            ses = self.lt.session(self._settings)
        except Exception as exc:  # libtorrent raises plain RuntimeError
            self._start_error = exc
            self._ready.set()
            return
        try:
            self._wait_listening(ses)
            self.state.running = True
            self._ready.set()
            next_stats = 0.0
            while not self._stop.is_set():
                ses.wait_for_alert(_POLL_MS)
                for alert in ses.pop_alerts():
                    try:
                        self._on_alert(alert)
                    except Exception:  # one bad alert must not end the DHT
                        logger.exception("DHT alert %s not handled", type(alert).__name__)
                while self._commands:
                    self._commands.popleft()(ses)
                now = time.monotonic()
                if now >= next_stats:
                    ses.post_dht_stats()
                    # Often until the routing table has a node: publishing waits for it.
                    next_stats = now + (_STATS_EVERY if self.state.nodes else 0.1)
        except Exception as exc:  # pragma: no cover - reported, not raised in a thread
            logger.exception("the DHT thread failed")
            self.state.error = str(exc)
            self._ready.set()
        finally:
            self.state.running = False
            self._fail_pending()
            del ses  # destroys the session here, in this thread

    def _wait_listening(self, ses: Any) -> None:
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline:
            ses.wait_for_alert(100)
            for alert in ses.pop_alerts():
                if isinstance(alert, self.lt.listen_succeeded_alert):
                    if self.state.port == 0 or "UDP" in alert.message() or "uTP" in alert.message():
                        self.state.port = alert.port
                    return
                if isinstance(alert, self.lt.listen_failed_alert):
                    raise DhtUnavailable(f"cannot listen for the DHT: {alert.message()}")
                self._on_alert(alert)
        raise DhtUnavailable("the DHT's socket did not open within 5 s")

    def _post(self, fn: Callable[..., None], *args: Any) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # the loop closed meanwhile
            pass

    def _on_alert(self, alert: Any) -> None:
        lt = self.lt
        if isinstance(alert, lt.dht_mutable_item_alert):
            key, salt = bytes(alert.key), bytes(alert.salt)
            sig = bytes(alert.signature)
            got: SignedItem | None = None
            # A lookup that found nothing ends with an empty item at seq 0
            # (its signature field is left uninitialised, not zeroed).
            if int(alert.seq) != 0 or alert.item:
                value = bytes(lt.bencode(alert.item))
                got = SignedItem(key, salt, int(alert.seq), value, sig)
            final = bool(alert.authoritative)
            waiting = self._gets.pop((key, salt), []) if final else self._gets.get((key, salt), [])
            for g in waiting:
                if got is not None or final:
                    self._post(g.deliver, got, final)
        elif isinstance(alert, lt.dht_put_alert):
            key, salt = bytes(alert.public_key), bytes(alert.salt)
            waiters = self._puts.get((key, salt))
            if waiters:
                self._post(waiters.pop(0), int(alert.num_success))
                if not waiters:
                    del self._puts[(key, salt)]
        elif isinstance(alert, lt.dht_stats_alert):
            self.state.nodes = sum(b["num_nodes"] for b in alert.routing_table)
            if self.state.nodes:
                self.state.bootstrapped = True
        elif isinstance(alert, lt.dht_bootstrap_alert):
            self.state.bootstrapped = self.state.bootstrapped or self.state.nodes > 0

    def _fail_pending(self) -> None:
        for waiting in self._gets.values():
            for g in waiting:
                self._post(g.deliver, None, True)
        self._gets.clear()
        for waiters in self._puts.values():
            for done in waiters:
                self._post(done, 0)
        self._puts.clear()
