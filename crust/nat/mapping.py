"""NAT mapping behaviour from the crust contacts a node joined, with no
STUN server (issue 16 item 2, design note 0062). Sans-IO: callers pass
the clock and do the sending.

Every crust node answers STUN Binding requests (RFC 8489) on each of its
UDP listening ports with where it saw the request come from
(XOR-MAPPED-ADDRESS) and its other listening port (RFC 5780
OTHER-ADDRESS). A node that joined a contact asks the port it dialled,
then the other port, both from its own live listening socket (the one
whose mapping peers must punch to). Two ports of one contact that saw us
at different ports show a mapping that depends on the destination port:
a symmetric NAT (Linux ``--random-fully``, most carrier NATs), the "hard"
side of birthday punching. The same public port for both shows it does
not depend on the port; contacts at two different addresses that agree
show an endpoint-independent ("cone") mapping.

:class:`ProbeAnswerer` is the answering side. Hostile by default:

- no amplification: an answer is never larger than its request (our own
  requests carry a PADDING attribute, :data:`PAD_TO`); a smaller request
  gets no answer at all, so a spoofed request reflects at most its own
  size to its victim;
- bounded work: every request is charged to its source (an IPv4 address
  or an IPv6 /64, :func:`crust.admission.source_key`) before it is parsed,
  a burst of :data:`SOURCE_BURST` then :data:`SOURCE_RATE` a second, and
  to one node-wide bucket (:data:`GLOBAL_BURST`, :data:`GLOBAL_RATE` a
  second); at most :data:`MAX_SOURCES` sources are remembered (least
  recently used forgotten: a forgotten source only gets its burst back,
  and the node-wide bucket still holds);
- a request over budget is dropped silently and is not counted as junk
  (an honest peer behind the same NAT as a flooder must not be blamed);
  one that does not parse is (:meth:`ProbeAnswerer.answer` raises).

:func:`classify_contacts` turns the answers into a
:class:`~crust.nat.classify.NatBehaviour` (``source="contacts"``), the
type STUN's classification has, so traversal uses it the same way.
A contact can lie about where it saw us; it is a node we chose, and a lie
changes only how we punch (birthday or not), never whom we trust.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Collection, Sequence

from crust.admission import source_key
from crust.nat.binding import canonical_ip, crosses_nat
from crust.nat.classify import Behaviour, NatBehaviour, Probe
from crust.nat.stun import (
    BINDING_REQUEST,
    Attr,
    StunParseError,
    decode,
    encode_binding_response,
)
from crust.wire import Address as Addr

__all__ = [
    "GLOBAL_BURST",
    "GLOBAL_RATE",
    "MAX_SOURCES",
    "PAD_TO",
    "SOURCE_BURST",
    "SOURCE_RATE",
    "WINDOW",
    "ContactProbes",
    "ProbeAnswerer",
    "classify_contacts",
    "is_binding_request",
]


#: Our probe requests are padded to this many bytes: the largest answer
#: (IPv6 XOR-MAPPED-ADDRESS and OTHER-ADDRESS: 20 + 24 + 24 = 68 bytes)
#: fits, with room to spare.
PAD_TO = 96
#: Answers per source: a burst, then a rate (per second). A node probing
#: a contact sends two requests (and their retransmissions).
SOURCE_BURST = 8.0
SOURCE_RATE = 1.0
#: Answers of the whole node: a burst, then a rate (per second).
GLOBAL_BURST = 64.0
GLOBAL_RATE = 32.0
#: Sources whose budget is remembered.
MAX_SOURCES = 1024
#: Observations are compared only with others at most this many seconds
#: older than the newest: a NAT that restarted since gave new ports, which
#: is not a mapping that depends on the destination.
WINDOW = 60.0
#: Servers (contact ports) remembered by :class:`ContactProbes`.
MAX_SERVERS = 16


def is_binding_request(data: bytes) -> bool:
    """Whether a datagram that is STUN (header checked by the caller, as
    the C endpoint does) asks for a Binding: its type is 0x0001."""
    return len(data) >= 2 and data[0] == 0 and data[1] == BINDING_REQUEST


class _Bucket:
    __slots__ = ("stamp", "tokens")

    def __init__(self, tokens: float, stamp: float) -> None:
        self.tokens = tokens
        self.stamp = stamp

    def take(self, now: float, burst: float, rate: float) -> bool:
        self.tokens = min(burst, self.tokens + max(0.0, now - self.stamp) * rate)
        self.stamp = now
        if self.tokens < 1.0:
            return False
        self.tokens -= 1.0
        return True


class ProbeAnswerer:
    """Answers Binding requests within the budgets of the module text.
    ``stats``: ``answered``, ``over_budget``, ``too_small`` (a request
    smaller than its answer), ``unsupported`` (CHANGE-REQUEST: we have no
    other address to answer from), ``malformed``, ``evicted``."""

    def __init__(
        self,
        *,
        burst: float = SOURCE_BURST,
        rate: float = SOURCE_RATE,
        global_burst: float = GLOBAL_BURST,
        global_rate: float = GLOBAL_RATE,
        max_sources: int = MAX_SOURCES,
    ) -> None:
        if min(burst, rate, global_burst, global_rate) < 0 or max_sources < 1:
            raise ValueError("ProbeAnswerer: budgets >= 0, max_sources >= 1")
        self.burst, self.rate = burst, rate
        self.global_burst, self.global_rate = global_burst, global_rate
        self.max_sources = max_sources
        self._sources: OrderedDict[str, _Bucket] = OrderedDict()
        self._global: _Bucket | None = None
        self.stats: dict[str, int] = dict.fromkeys(
            ("answered", "over_budget", "too_small", "unsupported", "malformed", "evicted"), 0
        )

    def __len__(self) -> int:
        return len(self._sources)

    def _admit(self, source: Addr, now: float) -> bool:
        key = source_key(source[0])
        bucket = self._sources.pop(key, None)
        if bucket is None:
            bucket = _Bucket(self.burst, now)
        self._sources[key] = bucket
        while len(self._sources) > self.max_sources:
            self._sources.popitem(last=False)
            self.stats["evicted"] += 1
        if self._global is None:
            self._global = _Bucket(self.global_burst, now)
        # The source's bucket first: a flooder spends its own share before
        # it can touch the node-wide one.
        if not bucket.take(now, self.burst, self.rate):
            return False
        return self._global.take(now, self.global_burst, self.global_rate)

    def answer(self, data: bytes, source: Addr, now: float, other: Addr | None) -> bytes | None:
        """The answer to ``data`` from ``source`` (None: send nothing).
        ``other``: our other listening address, for OTHER-ADDRESS (its
        port is what matters: the asker reaches it at our address).
        Raises :class:`~crust.nat.stun.StunParseError` for bytes that are
        no well-formed STUN message (junk from that source)."""
        if not self._admit(source, now):
            self.stats["over_budget"] += 1
            return None
        try:
            msg = decode(data)
        except StunParseError:
            self.stats["malformed"] += 1
            raise
        if msg.msg_type != BINDING_REQUEST:
            self.stats["malformed"] += 1
            raise StunParseError(f"message type 0x{msg.msg_type:04x} is not a Binding request")
        if msg.get(Attr.CHANGE_REQUEST) is not None:
            # Answering from where we were asked would mislead an RFC 5780
            # classifier; comprehension-required, so no answer at all.
            self.stats["unsupported"] += 1
            return None
        seen = (canonical_ip(source[0]), source[1])
        reply = encode_binding_response(msg.txid, seen, other=other)
        if len(reply) > len(data) and other is not None:
            reply = encode_binding_response(msg.txid, seen)
        if len(reply) > len(data):
            self.stats["too_small"] += 1
            return None
        self.stats["answered"] += 1
        return reply


class ContactProbes:
    """What contacts' ports answered to one local socket: the latest
    answer per contact port (at most :data:`MAX_SERVERS`, the oldest
    forgotten), with its time (seconds, the caller's clock)."""

    def __init__(self, local: Addr, local_ips: Collection[str] = ()) -> None:
        self.local = local
        self.local_ips = frozenset(canonical_ip(ip) for ip in local_ips)
        self._seen: OrderedDict[Addr, tuple[Probe, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._seen)

    def add(self, server: Addr, mapped: Addr, now: float, rtt: float | None = None) -> None:
        key = (canonical_ip(server[0]), server[1])
        self._seen.pop(key, None)
        self._seen[key] = (
            Probe("contact", key, (canonical_ip(mapped[0]), mapped[1]), key, None, 0.0, rtt),
            now,
        )
        while len(self._seen) > MAX_SERVERS:
            self._seen.popitem(last=False)

    def probes(self) -> list[Probe]:
        """Those within :data:`WINDOW` of the newest, oldest first."""
        if not self._seen:
            return []
        newest = max(t for _, t in self._seen.values())
        return [p for p, t in self._seen.values() if newest - t <= WINDOW]

    def behaviour(self) -> NatBehaviour | None:
        return classify_contacts(self.local, self.probes(), self.local_ips)


def classify_contacts(
    local: Addr, probes: Sequence[Probe], local_ips: Collection[str] = ()
) -> NatBehaviour | None:
    """The mapping behaviour the contacts' answers show (None: no answer
    at all). Pairs of answers decide:

    - same contact address, different ports, different mappings:
      address-and-port-dependent (symmetric);
    - different contact addresses, different mappings: dependent, and
      address-dependent when ports of one address agreed;
    - all agree across two contact addresses, or no translation at all:
      endpoint-independent;
    - all agree, one contact address only: unknown (an address-dependent
      mapping looks the same from one address).

    Filtering is never tested here (``UNKNOWN``)."""
    answered = [p for p in probes if p.mapped is not None]
    if not answered:
        return None
    m1 = answered[0].mapped
    assert m1 is not None
    ips = frozenset(canonical_ip(ip) for ip in local_ips)
    behind = any(crosses_nat(p.mapped, local, ips) for p in answered)
    differ_port = differ_ip = agree_port = agree_ip = False
    for i, a in enumerate(answered):
        for b in answered[i + 1 :]:
            same_ip = canonical_ip(a.server[0]) == canonical_ip(b.server[0])
            if a.server == b.server:
                continue
            if a.mapped != b.mapped:
                differ_port |= same_ip
                differ_ip |= not same_ip
            else:
                agree_port |= same_ip
                agree_ip |= not same_ip
    if differ_port:
        mapping = Behaviour.ADDRESS_AND_PORT_DEPENDENT
    elif differ_ip:
        mapping = Behaviour.ADDRESS_DEPENDENT if agree_port else Behaviour.DEPENDENT
    elif agree_ip or not behind:
        mapping = Behaviour.ENDPOINT_INDEPENDENT
    else:
        mapping = Behaviour.UNKNOWN
    port_preserving = all(p.mapped is not None and p.mapped[1] == local[1] for p in answered)
    return NatBehaviour(
        local, m1, behind, mapping, Behaviour.UNKNOWN, port_preserving, tuple(answered),
        source="contacts",
    )  # fmt: skip
