"""A deterministic simulated network with a virtual clock, for sans-IO nodes.

``crust.testing`` runs protocol code without sockets or wall-clock time.
Each node is a sans-IO object with the aioquic-style verbs of
:class:`SimNode`; the :class:`Network` moves its datagrams over simulated
links (delay, jitter, bandwidth and a tail-drop queue, random and bursty
loss, duplication, reordering, corruption, MTU) and fires its timers, all on
one virtual clock. Time is an ``int`` number of microseconds; addresses are
``(host, port)`` tuples and links join hosts, one per direction.

The same seed and the same node behaviour give the same run, event for
event, so a failing test replays exactly. Every link draws from its own
``random.Random`` seeded from the network seed and the link's name, so
adding a link or a node never changes what happens on the others.

Worked example: a pinger measures the round trip to an echo server over a
1 Mbit/s link with 20 ms of one-way delay each way.

>>> from crust.testing import LinkConfig, Network
>>> class Echo:
...     '''Answers every datagram with the same bytes.'''
...     def __init__(self):
...         self.outbox = []
...     def receive_datagram(self, data, addr, now):
...         self.outbox.append((data, addr))
...     def datagrams_to_send(self, now):
...         out, self.outbox = self.outbox, []
...         return out
...     def get_timer(self):
...         return None
...     def handle_timer(self, now):
...         pass
>>> class Pinger:
...     '''Sends one ping when first polled and notes the round trip.'''
...     def __init__(self, server):
...         self.server, self.sent_at, self.rtt_us = server, None, None
...     def receive_datagram(self, data, addr, now):
...         self.rtt_us = now - self.sent_at
...     def datagrams_to_send(self, now):
...         if self.sent_at is not None:
...             return []
...         self.sent_at = now
...         return [(b"x" * 100, self.server)]
...     def get_timer(self):
...         return None
...     def handle_timer(self, now):
...         pass
>>> net = Network(seed=1)
>>> net.connect("192.0.2.1", "198.51.100.7",
...             LinkConfig(delay_us=20_000, bandwidth_bps=1_000_000))
>>> server = ("198.51.100.7", 4433)
>>> pinger = Pinger(server)
>>> net.add_node(("192.0.2.1", 5000), pinger)
>>> net.add_node(server, Echo())
>>> net.run()
<StopReason.IDLE: 'idle'>
>>> pinger.rtt_us  # 2 x (800 us to serialize 100 bytes + 20 ms)
41600
>>> stats = net.stats("192.0.2.1", "198.51.100.7")
>>> stats.delivered, stats.queue_delays_us  # one datagram, never queued
(1, [0])

How a run proceeds: :meth:`Network.run` first polls every node once
(``datagrams_to_send`` then ``get_timer``), then takes events from a heap in
time order (equal times in the order they were scheduled). After a node
receives a datagram or its timer fires, the network polls that node again:
its datagrams go onto their links and its timer is re-read. Test code that
makes a node queue data between runs calls :meth:`Network.wake` (or simply
:meth:`Network.run` again, which polls every node).

What a link does to one datagram, in order: drop it if larger than ``mtu``;
queue it behind the datagrams still being serialized, or tail-drop it if the
queue is full; lose it (independent and Gilbert-Elliott loss); flip one bit;
add delay, jitter and maybe a reordering delay; maybe deliver it twice.
Losses happen after the bottleneck, so a lost datagram still used its share
of bandwidth, as on a real path.

Links join hosts, not addresses: every node on host A (whatever its port)
shares the one ``A -> B`` link, its bottleneck and its queue, which is how
competing flows are set up. Nodes on different hosts sending to B do not
share a bottleneck.

Host pairs without an explicit :meth:`Network.set_link` use the network's
``default_link`` (an ideal link with no delay unless you pass one); pass
``default_link=None`` to make sending over an unconfigured pair raise
:class:`LookupError` instead.
"""

from __future__ import annotations

import enum
import heapq
import logging
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from crust.wire import Address as Addr
from crust.wire import is_long_header

if TYPE_CHECKING:
    # For annotations only: at run time these need the extension, which the
    # simulator itself does not.
    from crust import _core
    from crust.handshake import CookiePolicy, HandshakeError, HandshakeResult, Initiator
    from crust.handshake.driver import Dial, HandshakeDriver
    from crust.identity import Identity, PeerId

__all__ = [
    "Addr",
    "ConnectionNode",
    "HandshakeNode",
    "LinkConfig",
    "LinkStats",
    "Network",
    "SimNode",
    "StopReason",
    "connection_pair",
]

logger = logging.getLogger(__name__)

# Bits per byte times microseconds per second: serialization of n bytes at
# b bit/s takes n * _BIT_US / b microseconds.
_BIT_US = 8_000_000


class SimNode(Protocol):
    """A sans-IO endpoint the simulated network can drive.

    Every call gets the current virtual time ``now`` in microseconds and must
    not read a real clock. ``datagrams_to_send`` returns ``(payload,
    destination)`` pairs and should return nothing once drained.
    ``get_timer`` returns an absolute virtual time or ``None``; a time in the
    past fires at the current time.
    """

    def receive_datagram(self, data: bytes, addr: Addr, now: int) -> None: ...

    def datagrams_to_send(self, now: int) -> Iterable[tuple[bytes, Addr]]: ...

    def get_timer(self) -> int | None: ...

    def handle_timer(self, now: int) -> None: ...


def _check_probability(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"LinkConfig.{name} must be a probability in [0, 1], got {value!r}")


def _check_micros(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(
            f"LinkConfig.{name} must be a non-negative int of microseconds, got {value!r}"
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class LinkConfig:
    """How one direction of a link treats datagrams. Defaults: an ideal link.

    ``delay_us``: one-way propagation delay.
    ``jitter_us``: extra delay drawn uniformly from ``0..jitter_us``; it never
    reorders (an arrival is held back to the previous one on the link).
    ``bandwidth_bps``: bottleneck rate in bit/s, ``None`` for infinite.
    ``queue_bytes``: bytes that may wait for the bottleneck, counting the
    unsent part of the datagram being serialized; a datagram that would
    overflow it is tail-dropped, except one arriving at an idle link, which
    starts at once. ``None`` is an unbounded queue; needs ``bandwidth_bps``.
    ``loss``: independent loss probability per datagram.
    ``ge_p``, ``ge_r``, ``ge_loss_good``, ``ge_loss_bad``: Gilbert-Elliott
    burst loss. Per datagram the state moves good->bad with ``ge_p`` and
    bad->good with ``ge_r``, then the datagram is lost with the loss
    probability of the state. Bursts average ``1 / ge_r`` datagrams when
    ``ge_loss_bad`` is 1. Off while ``ge_p`` is 0.
    ``duplicate``: probability that a datagram is delivered twice.
    ``reorder``: probability that a datagram gets ``reorder_delay_us`` more
    delay, outside the FIFO rule, so that later ones may overtake it.
    ``corrupt``: probability that one random bit of the payload is flipped.
    ``mtu``: largest payload in bytes; larger datagrams are dropped.
    """

    delay_us: int = 0
    jitter_us: int = 0
    bandwidth_bps: int | None = None
    queue_bytes: int | None = None
    loss: float = 0.0
    ge_p: float = 0.0
    ge_r: float = 1.0
    ge_loss_good: float = 0.0
    ge_loss_bad: float = 1.0
    duplicate: float = 0.0
    reorder: float = 0.0
    reorder_delay_us: int = 0
    corrupt: float = 0.0
    mtu: int | None = None

    def __post_init__(self) -> None:
        _check_micros("delay_us", self.delay_us)
        _check_micros("jitter_us", self.jitter_us)
        _check_micros("reorder_delay_us", self.reorder_delay_us)
        for name in (
            "loss",
            "ge_p",
            "ge_r",
            "ge_loss_good",
            "ge_loss_bad",
            "duplicate",
            "reorder",
            "corrupt",
        ):
            _check_probability(name, getattr(self, name))
        if self.bandwidth_bps is not None and not self.bandwidth_bps > 0:
            raise ValueError(
                f"LinkConfig.bandwidth_bps must be > 0 or None, got {self.bandwidth_bps!r}"
            )
        if self.queue_bytes is not None:
            if self.queue_bytes < 0:
                raise ValueError(
                    f"LinkConfig.queue_bytes must be >= 0 or None, got {self.queue_bytes!r}"
                )
            if self.bandwidth_bps is None:
                # Nothing ever waits on an infinitely fast link, so a queue
                # limit there is a mistake in the test rather than a no-op.
                raise ValueError(
                    "LinkConfig.queue_bytes needs bandwidth_bps: an infinite link never queues"
                )
        if self.mtu is not None and self.mtu <= 0:
            raise ValueError(f"LinkConfig.mtu must be > 0 or None, got {self.mtu!r}")
        if self.ge_p > 0.0 and self.ge_r == 0.0:
            raise ValueError(
                "LinkConfig.ge_r must be > 0 when ge_p > 0, or the link stays bad forever"
            )
        if self.reorder > 0.0 and self.reorder_delay_us == 0:
            raise ValueError(
                "LinkConfig.reorder_delay_us must be > 0 when reorder > 0, or nothing reorders"
            )

    @classmethod
    def bottleneck(cls, bandwidth_bps: int, rtt_us: int, queue_bdps: float = 1.0) -> LinkConfig:
        """One direction of a path with base round trip ``rtt_us`` whose
        bottleneck runs at ``bandwidth_bps`` behind a queue of ``queue_bdps``
        bandwidth-delay products (the classic way to size a router buffer,
        and the knob for bufferbloat tests). Impair it further with
        ``dataclasses.replace(cfg, loss=0.01)``.
        """
        queue = int(queue_bdps * bandwidth_bps * rtt_us / _BIT_US)
        return cls(delay_us=rtt_us // 2, bandwidth_bps=bandwidth_bps, queue_bytes=queue)


@dataclass(slots=True)
class LinkStats:
    """Counters of one link direction, updated live as the network runs.

    ``delivered`` counts datagrams handed to a node, duplicates included, so
    it can exceed ``sent`` minus the drops. ``reordered`` counts datagrams
    given the reordering delay, whether or not another one overtook them.
    ``undeliverable`` counts datagrams that reached a host with no node at
    the destination port. ``queue_delays_us`` holds, per delivered datagram,
    the time it waited for the bottleneck: the bufferbloat it saw.
    """

    sent: int = 0
    delivered: int = 0
    bytes_delivered: int = 0
    dropped_loss: int = 0
    dropped_queue: int = 0
    dropped_mtu: int = 0
    duplicated: int = 0
    corrupted: int = 0
    reordered: int = 0
    undeliverable: int = 0
    queue_delays_us: list[int] = field(default_factory=list)


class StopReason(enum.Enum):
    """Why :meth:`Network.run` returned."""

    IDLE = "idle"
    """No events remain: every node is quiet and nothing is in flight."""
    UNTIL = "until"
    """The clock reached ``until`` with events still pending."""
    STOP = "stop"
    """The ``stop`` predicate returned true."""
    MAX_EVENTS = "max_events"
    """``max_events`` events were processed."""


class _Link:
    """State of one link direction; the config is flattened into slots
    because the send path reads it for every datagram."""

    __slots__ = (
        "busy_until",
        "bw",
        "config",
        "corrupt",
        "delay",
        "dup",
        "ge_bad",
        "ge_loss_bad",
        "ge_loss_good",
        "ge_p",
        "ge_r",
        "jitter",
        "last_arrival",
        "loss",
        "mtu",
        "name",
        "queue_cap",
        "reorder",
        "reorder_delay",
        "rng",
        "stats",
    )

    def __init__(self, name: str, config: LinkConfig, seed: int) -> None:
        self.name = name
        # A str seed is hashed with SHA-512, so the stream depends only on
        # the network seed and this link's name, stable across processes.
        self.rng = random.Random(f"crust.testing:{seed}:{name}")
        self.stats = LinkStats()
        # Bottleneck busy-until time, scaled by the bandwidth (unit: 1/bw
        # microseconds) so serialization adds exact integers and the rate
        # never drifts however many datagrams pass.
        self.busy_until = 0
        self.bw = 0
        self.last_arrival = 0
        self.ge_bad = False
        self.configure(config)

    def configure(self, config: LinkConfig) -> None:
        new_bw = 0 if config.bandwidth_bps is None else round(config.bandwidth_bps)
        if self.bw and new_bw:
            # Keep the datagrams already queued: rescale their finish time.
            self.busy_until = -(-self.busy_until * new_bw // self.bw)
        else:
            self.busy_until = 0
        self.config = config
        self.bw = new_bw
        self.queue_cap = None if config.queue_bytes is None else config.queue_bytes * _BIT_US
        self.delay = config.delay_us
        self.jitter = config.jitter_us
        self.loss = config.loss
        self.ge_p = config.ge_p
        self.ge_r = config.ge_r
        self.ge_loss_good = config.ge_loss_good
        self.ge_loss_bad = config.ge_loss_bad
        self.dup = config.duplicate
        self.reorder = config.reorder
        self.reorder_delay = config.reorder_delay_us
        self.corrupt = config.corrupt
        self.mtu = config.mtu


class _Host:
    """A node and the bookkeeping of its one pending timer."""

    __slots__ = ("addr", "gen", "node", "timer")

    def __init__(self, addr: Addr, node: SimNode) -> None:
        self.addr = addr
        self.node = node
        # The timer event in the heap whose generation matches is the live
        # one; rescheduling bumps gen instead of searching the heap.
        self.gen = 0
        self.timer: int | None = None


# Heap entries are plain tuples, cheapest to build and compare:
#   delivery: (time, seq, link, payload, src addr, dst addr, queue delay us)
#   timer:    (time, seq, None, host,    generation, None,  0)
# seq is unique, so comparison never reaches the later fields.
_Event = tuple[int, int, Any, Any, Any, Any, int]

_IDEAL_LINK = LinkConfig()


class Network:
    """A seeded simulated network of :class:`SimNode` s on a virtual clock.

    ``default_link`` is used for any host pair without :meth:`set_link`
    (``None``: sending over such a pair raises :class:`LookupError`).
    ``max_events_per_instant`` guards against a node that keeps asking for a
    timer at the current time without making progress: past that many events
    at one virtual instant, :meth:`run` raises :class:`RuntimeError`.
    """

    def __init__(
        self,
        seed: int,
        *,
        default_link: LinkConfig | None = _IDEAL_LINK,
        max_events_per_instant: int = 100_000,
    ) -> None:
        self.seed = seed
        self.default_link = default_link
        self.max_events_per_instant = max_events_per_instant
        self._now = 0
        self._seq = 0
        self._heap: list[_Event] = []
        self._hosts: dict[Addr, _Host] = {}
        self._links: dict[tuple[str, str], _Link] = {}
        self._events = 0
        self._same_instant = 0
        self._polled = True

    @property
    def now(self) -> int:
        """Current virtual time in microseconds."""
        return self._now

    @property
    def events_processed(self) -> int:
        """Events (deliveries and timer firings) processed so far."""
        return self._events

    # -- topology --------------------------------------------------------

    def add_node(self, addr: Addr, node: SimNode) -> None:
        """Attach ``node`` at ``addr``; it is first polled by the next
        :meth:`run` or :meth:`step`."""
        if addr in self._hosts:
            raise ValueError(f"address {addr!r} already has a node: {self._hosts[addr].node!r}")
        self._hosts[addr] = _Host(addr, node)
        self._polled = False

    def remove_node(self, addr: Addr) -> None:
        """Detach the node at ``addr``, as if it crashed: its timer is
        cancelled and datagrams still arriving for it count as
        ``undeliverable``."""
        host = self._hosts.pop(addr)
        host.gen += 1
        host.timer = None

    def node(self, addr: Addr) -> SimNode:
        """The node at ``addr``."""
        return self._hosts[addr].node

    def set_link(self, src_host: str, dst_host: str, config: LinkConfig) -> None:
        """Configure the direction ``src_host -> dst_host``. Calling it again
        mid-run changes the link from now on (datagrams already in flight
        keep their arrival times) and keeps its statistics."""
        link = self._links.get((src_host, dst_host))
        if link is None:
            self._links[(src_host, dst_host)] = _Link(f"{src_host}->{dst_host}", config, self.seed)
        else:
            link.configure(config)

    def connect(
        self, a: str, b: str, config_ab: LinkConfig, config_ba: LinkConfig | None = None
    ) -> None:
        """Configure both directions between hosts ``a`` and ``b``; the
        reverse direction mirrors ``config_ab`` unless ``config_ba`` is given."""
        self.set_link(a, b, config_ab)
        self.set_link(b, a, config_ab if config_ba is None else config_ba)

    def stats(self, src_host: str, dst_host: str) -> LinkStats:
        """Live statistics of the direction ``src_host -> dst_host``."""
        return self._link(src_host, dst_host).stats

    def _link(self, src_host: str, dst_host: str) -> _Link:
        link = self._links.get((src_host, dst_host))
        if link is None:
            if self.default_link is None:
                raise LookupError(
                    f"no link {src_host}->{dst_host}: call set_link() or connect(), "
                    "or give the Network a default_link"
                )
            link = _Link(f"{src_host}->{dst_host}", self.default_link, self.seed)
            self._links[(src_host, dst_host)] = link
            logger.debug("link %s created with the default config", link.name)
        return link

    # -- running ---------------------------------------------------------

    def wake(self, addr: Addr | None = None) -> None:
        """Poll the node at ``addr`` (every node if ``None``) now: send what
        it has queued and re-read its timer. Call it after test code made a
        node queue data from outside the network."""
        if addr is None:
            for host in list(self._hosts.values()):
                self._poll(host, self._now)
            self._polled = True
        else:
            self._poll(self._hosts[addr], self._now)

    def step(self) -> bool:
        """Process the next event; return ``False`` if there was none."""
        if not self._polled:
            self.wake()
        heap = self._heap
        while heap:
            if self._dispatch(heapq.heappop(heap)):
                return True
        return False

    def run(
        self,
        until: int | None = None,
        *,
        stop: Callable[[], bool] | None = None,
        max_events: int | None = None,
    ) -> StopReason:
        """Advance virtual time until ``until`` (absolute µs), until
        ``stop()`` is true (checked before the first event and after each
        one), until ``max_events`` events were processed, or until no events
        remain, and say which. Every node is polled first. When ``until`` is
        given and no stop condition cut the run short, the clock ends at
        ``until`` even if the network went idle earlier.
        """
        if until is not None and until < self._now:
            raise ValueError(f"until={until} is before now={self._now}")
        self.wake()
        if stop is not None and stop():
            return StopReason.STOP
        heap = self._heap
        pop = heapq.heappop
        dispatch = self._dispatch
        done = 0
        while heap:
            if until is not None and heap[0][0] > until:
                self._now = until
                return StopReason.UNTIL
            if max_events is not None and done >= max_events:
                return StopReason.MAX_EVENTS
            if not dispatch(pop(heap)):
                continue
            done += 1
            if stop is not None and stop():
                return StopReason.STOP
        if until is not None:
            self._now = until
        return StopReason.IDLE

    def _dispatch(self, ev: _Event) -> bool:
        """Process one heap entry; ``False`` if it was a cancelled timer."""
        t, _, link, obj, a, b, qdelay = ev
        if link is None:
            host: _Host = obj
            if a != host.gen:
                return False
            self._advance(t, host, "timer")
            host.timer = None
            host.node.handle_timer(t)
            self._poll(host, t)
            return True
        host_or_none = self._hosts.get(b)
        if host_or_none is None:
            # Unlike a cancelled timer this is a real event: the datagram
            # arrived, there was just nobody listening.
            self._advance(t, None, "delivery")
            link.stats.undeliverable += 1
            return True
        host = host_or_none
        self._advance(t, host, "delivery")
        st = link.stats
        st.delivered += 1
        st.bytes_delivered += len(obj)
        st.queue_delays_us.append(qdelay)
        host.node.receive_datagram(obj, a, t)
        self._poll(host, t)
        return True

    def _advance(self, t: int, host: _Host | None, what: str) -> None:
        self._events += 1
        if t != self._now:
            self._now = t
            self._same_instant = 0
            return
        self._same_instant += 1
        if self._same_instant > self.max_events_per_instant:
            who = "a host with no node" if host is None else f"node {host.node!r} at {host.addr!r}"
            raise RuntimeError(
                f"more than {self.max_events_per_instant} events at virtual time {t} us without "
                f"the clock moving; the last was a {what} for {who}. A timer at or before now "
                "that handle_timer() does not clear, or datagrams bouncing over zero-delay "
                "links, keep the simulation spinning."
            )

    def _poll(self, host: _Host, now: int) -> None:
        """Send what the node has queued, then (re)schedule its timer."""
        node = host.node
        src = host.addr
        for data, dst in node.datagrams_to_send(now):
            self._send(src, data, dst, now)
        t = node.get_timer()
        if t is None:
            if host.timer is not None:
                host.timer = None
                host.gen += 1
            return
        t = max(t, now)
        if t != host.timer:
            host.gen += 1
            host.timer = t
            self._seq += 1
            heapq.heappush(self._heap, (t, self._seq, None, host, host.gen, None, 0))

    def _send(self, src: Addr, data: bytes, dst: Addr, now: int) -> None:
        """Put one datagram on the link ``src host -> dst host``."""
        link = self._links.get((src[0], dst[0]))
        if link is None:
            link = self._link(src[0], dst[0])
        st = link.stats
        st.sent += 1
        if type(data) is not bytes:
            # A node may hand out a reused buffer; freeze what was sent.
            data = bytes(data)
        size = len(data)
        if link.mtu is not None and size > link.mtu:
            st.dropped_mtu += 1
            return
        depart = now
        qdelay = 0
        bw = link.bw
        if bw:
            now_scaled = now * bw
            start = link.busy_until
            if start > now_scaled:
                cap = link.queue_cap
                if cap is not None and start - now_scaled + size * _BIT_US > cap:
                    st.dropped_queue += 1
                    return
                qdelay = (start - now_scaled) // bw
            else:
                start = now_scaled
            end = start + size * _BIT_US
            link.busy_until = end
            depart = -(-end // bw)
        rng = link.rng
        if link.ge_p:
            if link.ge_bad:
                if rng.random() < link.ge_r:
                    link.ge_bad = False
            elif rng.random() < link.ge_p:
                link.ge_bad = True
            if rng.random() < (link.ge_loss_bad if link.ge_bad else link.ge_loss_good):
                st.dropped_loss += 1
                return
        if link.loss and rng.random() < link.loss:
            st.dropped_loss += 1
            return
        if link.corrupt and size and rng.random() < link.corrupt:
            bit = rng.randrange(size * 8)
            flipped = bytearray(data)
            flipped[bit >> 3] ^= 1 << (bit & 7)
            data = bytes(flipped)
            st.corrupted += 1
        arrival = depart + link.delay
        if link.jitter:
            arrival += rng.randint(0, link.jitter)
        if link.reorder and rng.random() < link.reorder:
            # Outside the FIFO rule on purpose: later datagrams may pass it.
            arrival += link.reorder_delay
            st.reordered += 1
        else:
            arrival = max(arrival, link.last_arrival)
            link.last_arrival = arrival
        self._seq += 1
        heapq.heappush(self._heap, (arrival, self._seq, link, data, src, dst, qdelay))
        if link.dup and rng.random() < link.dup:
            st.duplicated += 1
            self._seq += 1
            heapq.heappush(self._heap, (arrival, self._seq, link, data, src, dst, qdelay))


# -- driving crust engine connections -------------------------------------


class ConnectionNode:
    """A :class:`SimNode` that drives one crust engine connection
    (:class:`crust._core.Connection`) talking to a fixed peer address.

    Messages given to :meth:`send` wait in an outbox until the connection's
    send buffer takes them (backpressure is honoured, nothing is dropped).
    Received messages go to ``on_message(priority, data, now)`` when set,
    else are appended to :attr:`received`; other engine events are kept in
    :attr:`events` as ``(type, prio, payload, msg_id, reason, code)``.
    """

    def __init__(
        self,
        conn: Any,
        peer: Addr,
        *,
        on_message: Callable[[int, bytes, int], None] | None = None,
    ) -> None:
        self.conn = conn
        self.peer = peer
        self.on_message = on_message
        self.received: list[tuple[int, bytes]] = []
        self.events: list[tuple[int, int, bytes | None, int, int, int]] = []
        self.outbox: list[tuple[bytes, int]] = []
        self._outbox_pos = 0
        self.closed = False

    def send(self, data: bytes, priority: int = 0) -> None:
        """Queue a message; it enters the connection when there is room."""
        self.outbox.append((data, priority))

    @property
    def pending(self) -> int:
        """Messages still waiting in the outbox."""
        return len(self.outbox) - self._outbox_pos

    def _feed(self, now: int) -> None:
        from crust.errors import WouldBlock  # deferred: crust.testing itself needs no extension

        box = self.outbox
        pos = self._outbox_pos
        while pos < len(box):
            data, prio = box[pos]
            try:
                self.conn.send(data, prio, now=now)
            except WouldBlock:
                break
            pos += 1
        if pos > 4096 and pos * 2 > len(box):
            del box[:pos]
            pos = 0
        self._outbox_pos = pos

    def _drain(self, now: int) -> None:
        for ev in self.conn.poll_events():
            if ev[0] == _EV_MESSAGE:
                assert ev[2] is not None
                if self.on_message is not None:
                    self.on_message(ev[1], ev[2], now)
                else:
                    self.received.append((ev[1], ev[2]))
            else:
                if ev[0] == _EV_CLOSED:
                    self.closed = True
                self.events.append(ev)

    def receive_datagram(self, data: bytes, addr: Addr, now: int) -> None:
        self.conn.receive_datagram(data, now)
        self._drain(now)

    def datagrams_to_send(self, now: int) -> Iterable[tuple[bytes, Addr]]:
        self._feed(now)
        peer = self.peer
        return [(d, peer) for d in self.conn.datagrams_to_send(now, 256)]

    def get_timer(self) -> int | None:
        t: int | None = self.conn.get_timer()
        return t

    def handle_timer(self, now: int) -> None:
        self.conn.handle_timer(now)
        self._drain(now)


_EV_MESSAGE = 1  # crust._core.EV_MESSAGE, without importing the extension here
_EV_CLOSED = 7  # crust._core.EV_CLOSED


def connection_pair(
    net: Network,
    a: Addr,
    b: Addr,
    *,
    config: Any = None,
    config_b: Any = None,
    aead: int | None = None,
    seed: int = 0,
) -> tuple[ConnectionNode, ConnectionNode]:
    """Create two engine connections with matching ids and keys, attach them
    to ``net`` at ``a`` and ``b``, and return their nodes.

    Keys and connection ids come from ``seed``: runs stay deterministic.
    ``aead`` defaults to ChaCha20-Poly1305; ``config_b`` defaults to
    ``config``. This stands in for the handshake, which is not simulated.
    """
    from crust import _core  # deferred: the simulator itself needs no extension

    rng = random.Random(seed)
    cid_a, cid_b = rng.randbytes(8), rng.randbytes(8)
    k_ab, k_ba = rng.randbytes(32), rng.randbytes(32)
    iv_ab, iv_ba = rng.randbytes(12), rng.randbytes(12)
    if aead is None:
        aead = _core.AEAD_CHACHA20_POLY1305
    conn_a = _core.Connection(cid_a, cid_b, net.now, config)
    conn_b = _core.Connection(cid_b, cid_a, net.now, config_b if config_b is not None else config)
    conn_a.set_keys(0, aead, k_ab, iv_ab, k_ba, iv_ba)
    conn_b.set_keys(0, aead, k_ba, iv_ba, k_ab, iv_ab)
    node_a, node_b = ConnectionNode(conn_a, b), ConnectionNode(conn_b, a)
    net.add_node(a, node_a)
    net.add_node(b, node_b)
    return node_a, node_b


# -- a whole crust node: handshake and engine ---------------------------------

_EV_KEYS_NEEDED = 9  # crust._core.EV_KEYS_NEEDED


class _Session:
    """One engine connection of a :class:`HandshakeNode`: the peer's
    address, the result later keys come from and, while an XX finish is
    unconfirmed, the initiator to confirm."""

    __slots__ = ("addr", "conn", "dial", "result")

    def __init__(
        self, conn: _core.Connection, result: HandshakeResult, addr: Addr, dial: Dial | None
    ) -> None:
        self.conn = conn
        self.result = result
        self.addr = addr
        self.dial = dial


class HandshakeNode:
    """A whole crust node, handshake and engine, on the simulated network.

    It owns an :class:`~crust.identity.Identity` and a network name, and
    runs its handshakes with the same
    :class:`~crust.handshake.driver.HandshakeDriver` as crust's transports:
    it answers incoming handshakes with the driver's
    :class:`~crust.handshake.Responder`, starts outgoing ones with
    :meth:`dial` (IK when the remote :class:`PeerId` is given, XX
    otherwise), and every completed handshake becomes a
    :class:`crust._core.Connection` with its keys installed as the service
    installs them (``crust.handshake.driver.install_keys``: generation 0
    into phase 0, generation 1 into phase 1), and generation ``code`` into
    slot ``prio`` when the engine reports ``EV_KEYS_NEEDED``.

    Datagrams are routed as ``crust.asyncio.udp`` routes them: a long header
    goes to the driver (to the dial whose connection id it names: responses,
    cookie replies; else to the responder: initiations, XX finishes); a
    short header goes by destination connection id
    (``crust._core.packet_cid``) to its engine connection. An XX dial is
    confirmed once its connection authenticates a packet from the peer,
    which stops the repeated finish.

    What a test reads: :attr:`connections` (peer id -> the newest
    connection with that peer), :attr:`received` (peer id -> ``(priority,
    data)`` in arrival order; or set ``on_message(peer_id, priority, data,
    now)``), :attr:`events` (every other engine event as ``(peer_id, raw
    event)``), :attr:`established_at` (virtual time each connection was
    created), :attr:`handshake_errors` (``(address, error)``),
    :attr:`results` (peer id -> its :class:`~crust.handshake.HandshakeResult`),
    :attr:`dials` (every Initiator started, with its state and stats),
    :attr:`responder` (with its stats) and :attr:`unrouted` (short-header
    datagrams for no connection we hold).

    Determinism: connection ids come from a ``random.Random`` seeded with
    ``seed``. The Noise ephemeral keys come from the OS, so packet bytes
    differ between runs, but never their sizes, order or timing: the
    network, whose losses and bit flips depend only on its seed, replays
    exactly.

    Example: an XX handshake (the client does not know who is at the
    address) over 15 ms each way, with a message queued before it.

    >>> from crust.identity import Identity
    >>> net = Network(seed=1)
    >>> net.connect("client", "server", LinkConfig(delay_us=15_000))
    >>> server = HandshakeNode(Identity(bytes(32))).attach(net, ("server", 443))
    >>> client = HandshakeNode(Identity(bytes([1]) * 32)).attach(net, ("client", 5000))
    >>> client.send(server.peer_id, b"hello")
    >>> initiator = client.dial(("server", 443))
    >>> net.run(until=1_000_000)
    <StopReason.UNTIL: 'until'>
    >>> server.received[client.peer_id]
    [(0, b'hello')]
    >>> client.established_at[server.peer_id], server.established_at[client.peer_id]
    (30000, 45000)
    >>> client.results[server.peer_id].pattern, initiator.state.name
    ('XX', 'DONE')
    """

    def __init__(
        self,
        identity: Identity,
        network: str = "crust-sim",
        *,
        config: _core.Config | None = None,
        seed: int = 0,
        handshake_timeout_us: int = 10_000_000,
        cookie_policy: CookiePolicy | None = None,
        on_message: Callable[[PeerId, int, bytes, int], None] | None = None,
    ) -> None:
        from crust import _core  # deferred: the simulator itself needs no extension
        from crust.errors import WouldBlock
        from crust.handshake import TransportParams
        from crust.handshake.driver import HandshakeDriver

        self.identity = identity
        self.network = network
        self.config = config if config is not None else _core.Config()
        self.handshake_timeout_us = handshake_timeout_us
        self.on_message = on_message
        self._rng = random.Random(f"crust.testing.HandshakeNode:{seed}")
        # What the service announces (Service._params): the engine's own limits.
        self._params = TransportParams(
            max_message_size=self.config.max_message_size, recv_window=self.config.recv_window
        )
        self._packet_cid = _core.packet_cid
        self._connection = _core.Connection
        self._would_block = WouldBlock
        self._driver: HandshakeDriver = HandshakeDriver(
            identity,
            network,
            params=self._params,
            cookie_policy=cookie_policy,
            new_cid=self._new_cid,
            # As Service.make_responder: remember a handshake as long as a
            # dialler with our timeout may still repeat its initiation, or
            # a late copy would complete a second, orphaned connection.
            pending_timeout_us=max(15_000_000, handshake_timeout_us),
            make_connection=self._make_connection,
        )
        responder = self._driver.responder
        assert responder is not None
        self.responder = responder
        self.connections: dict[PeerId, _core.Connection] = {}
        self.results: dict[PeerId, HandshakeResult] = {}
        self.established_at: dict[PeerId, int] = {}
        self.received: dict[PeerId, list[tuple[int, bytes]]] = {}
        self.events: list[tuple[PeerId, tuple[int, int, bytes | None, int, int, int]]] = []
        self.handshake_errors: list[tuple[Addr, HandshakeError]] = []
        self.dials: list[Initiator] = []
        self.unrouted = 0
        self.addr: Addr | None = None
        self._net: Network | None = None
        self._now = 0
        self._sessions: dict[bytes, _Session] = {}
        self._outboxes: dict[PeerId, list[tuple[bytes, int]]] = {}

    def __repr__(self) -> str:
        return f"HandshakeNode({self.identity.peer_id.short} at {self.addr})"

    @property
    def peer_id(self) -> PeerId:
        return self.identity.peer_id

    def attach(self, net: Network, addr: Addr) -> HandshakeNode:
        """Add this node to ``net`` at ``addr`` and take its clock for
        :meth:`dial` and :meth:`close`. Returns the node."""
        net.add_node(addr, self)
        self._net = net
        self.addr = addr
        return self

    def _clock(self, now: int | None) -> int:
        if now is not None:
            return now
        return self._net.now if self._net is not None else self._now

    # -- what a test does ----------------------------------------------------

    def dial(
        self, addr: Addr, remote: PeerId | None = None, *, now: int | None = None
    ) -> Initiator:
        """Start a handshake with the node at ``addr``: IK if ``remote`` is
        its peer id, else XX. The initiation goes out when the network next
        polls this node (:meth:`Network.run`, or :meth:`Network.wake`).
        ``now`` defaults to the attached network's clock."""
        dial = self._driver.connect(
            addr, remote, now=self._clock(now), timeout_us=self.handshake_timeout_us
        )
        self.dials.append(dial.initiator)
        return dial.initiator

    def send(self, peer_id: PeerId, data: bytes, prio: int = 0) -> None:
        """Queue a message for ``peer_id``. It waits in an outbox until a
        connection with that peer exists and its send buffer takes it
        (backpressure is honoured, nothing is dropped)."""
        self._outboxes.setdefault(peer_id, []).append((data, prio))

    def pending(self, peer_id: PeerId) -> int:
        """Messages for ``peer_id`` still waiting in the outbox."""
        return len(self._outboxes.get(peer_id, ()))

    def close(self, peer_id: PeerId, code: int = 0, *, graceful: bool = True) -> None:
        """Close the connection with ``peer_id`` (``Connection.close``)."""
        self.connections[peer_id].close(self._clock(None), code, graceful)

    # -- SimNode ---------------------------------------------------------------

    def receive_datagram(self, data: bytes, addr: Addr, now: int) -> None:
        self._now = now
        if is_long_header(data):
            self._driver.receive_datagram(data, addr, now)
            self._take_events(now)
            return
        cid = self._packet_cid(data)
        session = self._sessions.get(cid) if cid is not None else None
        if session is None:
            # As on a real socket: a packet for a connection we do not hold
            # (yet), e.g. one that overtook a lost XX finish.
            self.unrouted += 1
            return
        rc = session.conn.receive_datagram(data, now)
        if rc == 0 and session.dial is not None:
            # The peer sends under the new keys, so it has our finish.
            self._driver.confirm(session.dial, now)
            self._take_events(now)
            session.dial = None
        self._drain(session, now)

    def datagrams_to_send(self, now: int) -> Iterable[tuple[bytes, Addr]]:
        self._now = now
        out = self._driver.datagrams_to_send(now)
        self._take_events(now)
        for session in list(self._sessions.values()):
            peer = session.result.peer_id
            conn = session.conn
            if self._outboxes.get(peer) and self.connections.get(peer) is conn:
                self._feed(peer, conn, now)
            addr = session.addr
            out.extend((d, addr) for d in conn.datagrams_to_send(now, 256))
            self._drain(session, now)
        return out

    def get_timer(self) -> int | None:
        best = self._driver.get_timer()
        for session in self._sessions.values():
            t = session.conn.get_timer()
            if t is not None and (best is None or t < best):
                best = t
        return best

    def handle_timer(self, now: int) -> None:
        self._now = now
        self._driver.handle_timer(now)
        self._take_events(now)
        for cid, session in list(self._sessions.items()):
            conn = session.conn
            t = conn.get_timer()
            if t is not None and t <= now:
                conn.handle_timer(now)
                self._drain(session, now)
            if conn.is_closed:
                # Done draining: nothing may reach it any more.
                del self._sessions[cid]

    # -- internals ---------------------------------------------------------------

    def _new_cid(self) -> bytes:
        while True:
            cid = self._rng.randbytes(8)
            if any(cid) and cid not in self._sessions and self._driver.dial_for(cid) is None:
                return cid

    def _make_connection(self, result: HandshakeResult, now: int) -> _core.Connection:
        # The driver installs generations 0 and 1 (as for the service);
        # later ones come when the engine asks for them (_drain).
        return self._connection(result.local_cid, result.remote_cid, now, self.config)

    def _take_events(self, now: int) -> None:
        """Take up what the driver reports: a finished handshake becomes a
        session, a failed dial is recorded."""
        from crust.errors import HandshakeError
        from crust.handshake.driver import DialFailed, Established

        while (ev := self._driver.next_event()) is not None:
            if isinstance(ev, Established):
                assert ev.connection is not None
                # An XX finish is repeated until the peer's first packet.
                dial = ev.dial
                waiting = (
                    dial if dial is not None and dial.initiator.get_timer() is not None else None
                )
                self._establish(ev.result, ev.connection, ev.addr, waiting, now)
            elif isinstance(ev, DialFailed):
                assert isinstance(ev.error, HandshakeError)  # no charge: never a ConnectError
                self.handshake_errors.append((ev.dial.addr, ev.error))

    def _establish(
        self,
        result: HandshakeResult,
        conn: _core.Connection,
        addr: Addr,
        dial: Dial | None,
        now: int,
    ) -> None:
        peer = result.peer_id
        self._sessions[result.local_cid] = _Session(conn, result, addr, dial)
        self.connections[peer] = conn
        self.results[peer] = result
        self.established_at[peer] = now
        self.received.setdefault(peer, [])

    def _feed(self, peer: PeerId, conn: _core.Connection, now: int) -> None:
        box = self._outboxes[peer]
        taken = 0
        for data, prio in box:
            try:
                conn.send(data, prio, now=now)
            except self._would_block:
                break
            taken += 1
        del box[:taken]

    def _drain(self, session: _Session, now: int) -> None:
        peer = session.result.peer_id
        for ev in session.conn.poll_events():
            if ev[0] == _EV_MESSAGE:
                assert ev[2] is not None
                if self.on_message is not None:
                    self.on_message(peer, ev[1], ev[2], now)
                else:
                    self.received[peer].append((ev[1], ev[2]))
                continue
            if ev[0] == _EV_KEYS_NEEDED:
                # As Service.on_conn_events: generation `code` into slot `prio`.
                k = session.result.keys_for_generation(ev[5])
                session.conn.set_keys(ev[1], k.aead, k.tx_key, k.tx_iv, k.rx_key, k.rx_iv)
            self.events.append((peer, ev))
