"""NAT-PMP (RFC 6886) and PCP (RFC 6887) port mapping, sans-IO.

Both protocols ask the default gateway, on UDP port 5351, to forward an
external port to one of ours for a lifetime; PCP is NAT-PMP's successor
(version 2 of the same port and framing: NAT-PMP is version 0).

:class:`PortMapClient` runs the mappings of one host against one gateway:
the caller feeds it received datagrams and the clock and takes the
datagrams it wants sent; it never touches a socket (the asyncio driver is
:mod:`crust.asyncio.natpmp`). Verbs follow aioquic and
:mod:`crust.nat.stun`: ``receive_datagram(data, addr, now)``,
``datagrams_to_send(now)``, ``get_timer()``, ``handle_timer(now)``,
``next_event()``. Times are seconds.

What the client does by itself:

- **Version negotiation** (RFC 6887 §9): it starts with PCP; a NAT-PMP-only
  server answers a version-2 request with NAT-PMP's "unsupported version"
  (version 0, result 1), and the client then re-sends everything as
  NAT-PMP at once. A PCP request that gets no answer at all is retried as
  NAT-PMP too before the mapping is declared failed (old servers drop
  versions they do not know instead of answering).
- **Retransmission**: NAT-PMP's (RFC 6886 §3.1: 250 ms, doubling, 9 tries
  by default, so an absent server is known after 127.75 s) and PCP's
  (RFC 6887 §8.1.1: IRT 3 s with ±10 % jitter, doubling up to MRT 1024 s,
  MRC/MRD bounds; the RFC's MRC is unlimited, so callers pass a bound).
- **Renewal** at half the granted lifetime (a renewal is the same request
  again; PCP keeps the mapping's nonce), retried until the lifetime ends.
- **Gateway restarts**: every answer carries the server's epoch (seconds
  since it started). An epoch that went backwards, or advanced less than
  7/8 of our own elapsed time minus 2 s (RFC 6886 §3.6, RFC 6887 §8.5),
  means the gateway lost its state: every mapping is requested again now.
- **Deletion**: a request with lifetime 0 (:meth:`PortMapClient.unmap`).

Answers are accepted only from the gateway's address, and only when they
match an outstanding request: NAT-PMP by opcode and internal port, PCP
also by the mapping's 96-bit random nonce, which is what makes a forged
PCP answer improbable (NAT-PMP has no such defence: RFC 6886 §6 relies on
the source address).

:func:`parse_untrusted` (and the two it dispatches to) are the only
parsers of received bytes: they check every length before reading and
raise :class:`PortMapParseError` (a ``ValueError``) naming what is wrong,
never anything else.
"""

from __future__ import annotations

import enum
import ipaddress
import logging
import os
import random
import struct
from collections import deque
from dataclasses import dataclass

from crust.wire import Address as Addr

__all__ = [
    "PCP_VERSION",
    "SERVER_PORT",
    "MappingDeleted",
    "MappingFailed",
    "MappingGranted",
    "NatPmpResponse",
    "PcpResponse",
    "PortMapClient",
    "PortMapParseError",
    "encode_natpmp_external_request",
    "encode_natpmp_map_request",
    "encode_pcp_map_request",
    "parse_natpmp_untrusted",
    "parse_pcp_untrusted",
    "parse_untrusted",
]

log = logging.getLogger("crust.nat.natpmp")


#: The gateway's port for both protocols (clients send from any port).
SERVER_PORT = 5351
NATPMP_VERSION = 0
PCP_VERSION = 2
#: RFC 6887 §7: a PCP message is at most 1100 bytes and a multiple of 4.
PCP_MAX = 1100
PCP_OP_MAP = 1
_PROTO_NUMBER = {"udp": 17, "tcp": 6}
_NATPMP_OPCODE = {"udp": 1, "tcp": 2}

_PCP_HEADER = struct.Struct("!BBBBII12s")  # version, R|op, reserved, result, lifetime, epoch
_PCP_MAP = struct.Struct("!12sB3xHH16s")  # nonce, protocol, internal port, ext port, ext ip


class NatPmpResult(enum.IntEnum):
    """RFC 6886 §3.5 result codes."""

    SUCCESS = 0
    UNSUPPORTED_VERSION = 1
    NOT_AUTHORIZED = 2
    NETWORK_FAILURE = 3
    OUT_OF_RESOURCES = 4
    UNSUPPORTED_OPCODE = 5


class PcpResult(enum.IntEnum):
    """RFC 6887 §7.4 result codes."""

    SUCCESS = 0
    UNSUPP_VERSION = 1
    NOT_AUTHORIZED = 2
    MALFORMED_REQUEST = 3
    UNSUPP_OPCODE = 4
    UNSUPP_OPTION = 5
    MALFORMED_OPTION = 6
    NETWORK_FAILURE = 7
    NO_RESOURCES = 8
    UNSUPP_PROTOCOL = 9
    USER_EX_QUOTA = 10
    CANNOT_PROVIDE_EXTERNAL = 11
    ADDRESS_MISMATCH = 12
    EXCESSIVE_REMOTE_PEERS = 13


def _result_name(method: str, code: int) -> str:
    enum_type: type[enum.IntEnum] = PcpResult if method == "pcp" else NatPmpResult
    try:
        return f"{enum_type(code).name} ({code})"
    except ValueError:
        return f"result {code}"


class PortMapParseError(ValueError):
    """Bytes that are not a well-formed NAT-PMP or PCP response; the text
    says why."""


# -- codec ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NatPmpResponse:
    """A NAT-PMP response. ``opcode`` is the request's (0: external
    address, 1: map UDP, 2: map TCP; a version-2 request's "unsupported
    version" answer carries that request's opcode too). Fields the
    response does not carry are ``None``/0."""

    opcode: int
    result: int
    epoch: int
    external_ip: str | None = None
    internal_port: int = 0
    external_port: int = 0
    lifetime: int = 0


@dataclass(frozen=True, slots=True)
class PcpResponse:
    """A PCP response (version 2; only MAP's payload is decoded, other
    opcodes keep ``nonce`` ``None``). ``version`` is what the server put
    there: on UNSUPP_VERSION, the version it speaks."""

    version: int
    opcode: int
    result: int
    lifetime: int
    epoch: int
    nonce: bytes | None = None
    protocol: int = 0
    internal_port: int = 0
    external_port: int = 0
    external_ip: str | None = None


def encode_natpmp_external_request() -> bytes:
    """NAT-PMP "what is the external address" (opcode 0)."""
    return bytes([NATPMP_VERSION, 0])


def encode_natpmp_map_request(
    protocol: str, internal_port: int, external_port: int, lifetime: int
) -> bytes:
    """NAT-PMP MAP (RFC 6886 §3.3); lifetime 0 (and external port 0)
    deletes the mapping."""
    if protocol not in _NATPMP_OPCODE:
        raise ValueError(f"protocol must be 'udp' or 'tcp', got {protocol!r}")
    return struct.pack(
        "!BBHHHI", NATPMP_VERSION, _NATPMP_OPCODE[protocol], 0, internal_port, external_port,
        lifetime,
    )  # fmt: skip


def _v4mapped(ip: str) -> bytes:
    addr = ipaddress.ip_address(ip)
    if addr.version == 4:
        return b"\0" * 10 + b"\xff\xff" + addr.packed
    return addr.packed


def encode_pcp_map_request(
    nonce: bytes,
    protocol: str,
    client_ip: str,
    internal_port: int,
    external_port: int,
    lifetime: int,
    external_ip: str = "0.0.0.0",
) -> bytes:
    """PCP MAP request (RFC 6887 §11.1) with no options. IPv4 addresses
    are sent IPv4-mapped; ``external_ip`` "0.0.0.0" means no preference.
    ``client_ip`` must be the address the request leaves from (the server
    answers ADDRESS_MISMATCH otherwise)."""
    if len(nonce) != 12:
        raise ValueError(f"the mapping nonce must be 12 bytes, got {len(nonce)}")
    if protocol not in _PROTO_NUMBER:
        raise ValueError(f"protocol must be 'udp' or 'tcp', got {protocol!r}")
    header = struct.pack("!BBHI16s", PCP_VERSION, PCP_OP_MAP, 0, lifetime, _v4mapped(client_ip))
    return header + _PCP_MAP.pack(
        nonce, _PROTO_NUMBER[protocol], internal_port, external_port, _v4mapped(external_ip)
    )


def _ip_from16(raw: bytes) -> str:
    addr = ipaddress.IPv6Address(raw)
    mapped = addr.ipv4_mapped
    return str(mapped if mapped is not None else addr)


def parse_natpmp_untrusted(data: bytes) -> NatPmpResponse:
    """Parses a NAT-PMP response (version 0) from untrusted bytes."""
    n = len(data)
    if n < 8:
        raise PortMapParseError(f"{n} bytes is shorter than NAT-PMP's 8-byte response header")
    if n > PCP_MAX:
        raise PortMapParseError(f"{n} bytes is over the {PCP_MAX}-byte limit")
    version, op, result, epoch = struct.unpack_from("!BBHI", data)
    if version != NATPMP_VERSION:
        raise PortMapParseError(f"version {version} is not NAT-PMP's 0")
    if result == NatPmpResult.UNSUPPORTED_VERSION:
        # The answer to a PCP request. RFC 6886 §3.5 printed its opcode as 0,
        # erratum 3618 as 128, and servers send either: only the result counts.
        return NatPmpResponse(op & 0x7F, result, epoch)
    if op < 128:
        raise PortMapParseError(f"opcode {op} is a request, not a response")
    opcode = op - 128
    # Error answers may stop after the epoch: RFC 6886 §3.5 only promises
    # the header.
    short = result != NatPmpResult.SUCCESS
    if opcode == 0:
        if short and n < 12:
            return NatPmpResponse(opcode, result, epoch)
        if n < 12:
            raise PortMapParseError(f"external address response of {n} bytes, needs 12")
        ip = str(ipaddress.IPv4Address(data[8:12]))
        return NatPmpResponse(0, result, epoch, external_ip=ip)
    if opcode in (1, 2):
        if short and n < 16:
            return NatPmpResponse(opcode, result, epoch)
        if n < 16:
            raise PortMapParseError(f"mapping response of {n} bytes, needs 16")
        iport, eport, lifetime = struct.unpack_from("!HHI", data, 8)
        return NatPmpResponse(opcode, result, epoch, None, iport, eport, lifetime)
    if short:
        return NatPmpResponse(opcode, result, epoch)
    raise PortMapParseError(f"unknown NAT-PMP response opcode {opcode}")


def parse_pcp_untrusted(data: bytes) -> PcpResponse:
    """Parses a PCP response from untrusted bytes. Options after a MAP
    payload are checked for framing and otherwise ignored (we send none,
    so none is mandatory for us to understand)."""
    n = len(data)
    if n < _PCP_HEADER.size:
        raise PortMapParseError(f"{n} bytes is shorter than PCP's 24-byte header")
    if n > PCP_MAX:
        raise PortMapParseError(f"{n} bytes is over PCP's {PCP_MAX}-byte limit")
    if n % 4:
        raise PortMapParseError(f"PCP message of {n} bytes is not a multiple of 4")
    version, rop, _, result, lifetime, epoch, _ = _PCP_HEADER.unpack_from(data)
    if not rop & 0x80:
        raise PortMapParseError("R bit clear: a PCP request, not a response")
    opcode = rop & 0x7F
    if version != PCP_VERSION:
        # Only UNSUPP_VERSION may come in another version's framing: it
        # names the version the server speaks (RFC 6887 §9).
        if result != PcpResult.UNSUPP_VERSION:
            raise PortMapParseError(f"PCP version {version} answer with result {result}")
        return PcpResponse(version, opcode, result, lifetime, epoch)
    if opcode != PCP_OP_MAP:
        return PcpResponse(version, opcode, result, lifetime, epoch)
    pos = _PCP_HEADER.size + _PCP_MAP.size
    if n < pos:
        if result != PcpResult.SUCCESS:
            return PcpResponse(version, opcode, result, lifetime, epoch)
        raise PortMapParseError(f"MAP response of {n} bytes, needs {pos}")
    nonce, proto, iport, eport, eip = _PCP_MAP.unpack_from(data, _PCP_HEADER.size)
    while pos < n:
        if n - pos < 4:
            raise PortMapParseError(f"truncated option header at offset {pos}")
        code, _, olen = struct.unpack_from("!BBH", data, pos)
        end = pos + 4 + olen + (-olen % 4)
        if end > n:
            raise PortMapParseError(
                f"option {code} at offset {pos} claims {olen} bytes, {n - pos - 4} left"
            )
        pos = end
    return PcpResponse(
        version, opcode, result, lifetime, epoch, bytes(nonce), proto, iport, eport,
        _ip_from16(eip),
    )  # fmt: skip


def parse_untrusted(data: bytes) -> NatPmpResponse | PcpResponse:
    """Parses an answer from the gateway's port 5351, NAT-PMP or PCP by
    its version byte."""
    if not data:
        raise PortMapParseError("empty datagram")
    if data[0] == NATPMP_VERSION:
        return parse_natpmp_untrusted(data)
    return parse_pcp_untrusted(data)


# -- events ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MappingGranted:
    """The gateway forwards ``external`` to our ``internal_port`` over
    ``protocol`` ("udp"/"tcp") for ``lifetime`` seconds; ``method`` is
    "pcp" or "natpmp"; ``renewal`` tells a renewal from the first grant."""

    method: str
    protocol: str
    internal_port: int
    external: Addr
    lifetime: int
    renewal: bool


@dataclass(frozen=True, slots=True)
class MappingFailed:
    """A mapping could not be made or kept: ``reason`` is "timeout", the
    server's result, or "lifetime ended" (renewals went unanswered);
    ``result`` the server's code when it gave one."""

    method: str
    protocol: str
    internal_port: int
    reason: str
    result: int | None


@dataclass(frozen=True, slots=True)
class MappingDeleted:
    """A deletion ended: ``confirmed`` when the gateway acknowledged it
    (otherwise it was not answered and the mapping expires by itself)."""

    method: str
    protocol: str
    internal_port: int
    confirmed: bool


PortMapEvent = MappingGranted | MappingFailed | MappingDeleted


# -- client ---------------------------------------------------------------------


@dataclass(slots=True)
class _Retransmit:
    """One request's schedule: sent at ``next_send``, then after an
    interval that doubles (up to ``max_interval``); it fails after
    ``max_sends`` sends and the wait after the last, or at ``deadline``."""

    interval: float
    max_interval: float
    max_sends: int  # 0: unlimited
    deadline: float | None
    jitter: float
    next_send: float
    sent: int = 0


@dataclass(slots=True)
class _Mapping:
    protocol: str
    internal_port: int
    lifetime: int
    nonce: bytes
    want_port: int
    external_port: int = 0
    granted: int = 0
    expires: float | None = None
    renew_at: float | None = None
    deleting: bool = False
    announced: bool = False
    tx: _Retransmit | None = None


class PortMapClient:
    """NAT-PMP/PCP mappings of one host (``client_ip``) with one gateway
    (``server``).

    ``methods`` is the order to try, from ("pcp", "natpmp"). ``natpmp_rto``
    and ``natpmp_tries`` are RFC 6886's retransmission (250 ms, 9);
    ``pcp_irt``, ``pcp_mrt``, ``pcp_mrc`` and ``pcp_mrd`` RFC 6887's (3 s,
    1024 s, and bounds on sends and duration: 0 is unlimited, as in the
    RFC, which only suits a caller that will cancel). ``rng`` draws PCP's
    jitter and the nonces' randomness comes from ``os.urandom`` unless
    ``nonce`` is given to :meth:`map`. ``ignored`` counts datagrams that
    failed to parse or answered nothing of ours."""

    def __init__(
        self,
        server: Addr,
        client_ip: str,
        *,
        methods: tuple[str, ...] = ("pcp", "natpmp"),
        natpmp_rto: float = 0.25,
        natpmp_tries: int = 9,
        pcp_irt: float = 3.0,
        pcp_mrt: float = 1024.0,
        pcp_mrc: int = 0,
        pcp_mrd: float = 0.0,
        rng: random.Random | None = None,
    ) -> None:
        if not methods or any(m not in ("pcp", "natpmp") for m in methods):
            raise ValueError(f"methods must be drawn from ('pcp', 'natpmp'), got {methods}")
        if len(set(methods)) != len(methods):
            raise ValueError(f"methods repeats a protocol: {methods}")
        if not 0.01 <= natpmp_rto <= 60.0 or not 1 <= natpmp_tries <= 16:
            raise ValueError("natpmp_rto must be 0.01..60 s and natpmp_tries 1..16")
        if not 0.01 <= pcp_irt <= pcp_mrt or pcp_mrc < 0 or pcp_mrd < 0:
            raise ValueError("need 0.01 <= pcp_irt <= pcp_mrt and pcp_mrc, pcp_mrd >= 0")
        ipaddress.ip_address(client_ip)  # ValueError naming it if it is not one
        self.server = server
        self.client_ip = client_ip
        self.methods = methods
        self.method = methods[0]
        self.natpmp_rto = natpmp_rto
        self.natpmp_tries = natpmp_tries
        self.pcp_irt = pcp_irt
        self.pcp_mrt = pcp_mrt
        self.pcp_mrc = pcp_mrc
        self.pcp_mrd = pcp_mrd
        self.rng = rng if rng is not None else random.Random()
        #: The gateway's external address, once an answer told it.
        self.external_ip: str | None = None
        #: Set once the server answered anything of ours in ``method``.
        self.confirmed = False
        self.ignored = 0
        self.restarts = 0
        self._mappings: dict[tuple[str, int], _Mapping] = {}
        self._address_tx: _Retransmit | None = None
        self._epoch: tuple[int, float] | None = None
        self._events: deque[PortMapEvent] = deque()

    # -- what the caller asks ---------------------------------------------

    def map(
        self,
        protocol: str,
        internal_port: int,
        lifetime: int,
        now: float,
        *,
        external_port: int | None = None,
        nonce: bytes | None = None,
    ) -> None:
        """Asks for (or re-asks, with a new lifetime) a mapping of our
        ``internal_port``; ``external_port`` is a suggestion (default: the
        same number). The answer comes as an event."""
        if protocol not in _PROTO_NUMBER:
            raise ValueError(f"protocol must be 'udp' or 'tcp', got {protocol!r}")
        if not 1 <= internal_port <= 65535 or not 1 <= lifetime <= 0xFFFFFFFF:
            raise ValueError("internal_port must be 1..65535 and lifetime >= 1 s")
        key = (protocol, internal_port)
        m = self._mappings.get(key)
        if m is None:
            m = _Mapping(
                protocol, internal_port, lifetime, nonce or os.urandom(12),
                external_port or internal_port,
            )  # fmt: skip
            self._mappings[key] = m
        m.lifetime, m.deleting = lifetime, False
        self._start(m, now)

    def unmap(self, protocol: str, internal_port: int, now: float) -> bool:
        """Deletes a mapping (lifetime 0); False if there is none. A
        mapping not granted yet is deleted too if its request went out (the
        gateway may have granted it already), else just forgotten."""
        m = self._mappings.get((protocol, internal_port))
        if m is None:
            return False
        if not m.granted and (m.tx is None or m.tx.sent == 0):
            del self._mappings[(protocol, internal_port)]
            return False
        m.deleting = True
        m.renew_at = None
        self._start(m, now)
        return True

    @property
    def mappings(self) -> dict[tuple[str, int], Addr]:
        """Granted mappings now: (protocol, internal port) -> external."""
        return {
            k: (self.external_ip or "0.0.0.0", m.external_port)
            for k, m in self._mappings.items()
            if m.granted and not m.deleting and m.announced
        }

    @property
    def busy(self) -> bool:
        """True while a request is outstanding."""
        return self._address_tx is not None or any(
            m.tx is not None for m in self._mappings.values()
        )

    # -- scheduling ---------------------------------------------------------

    def _new_tx(self, now: float, *, deadline: float | None) -> _Retransmit:
        if self.method == "natpmp":
            return _Retransmit(
                self.natpmp_rto, float("inf"), self.natpmp_tries, deadline, 0.0, now
            )
        limit = now + self.pcp_mrd if self.pcp_mrd else None
        if deadline is not None:
            limit = deadline if limit is None else min(limit, deadline)
        return _Retransmit(self.pcp_irt, self.pcp_mrt, self.pcp_mrc, limit, 0.1, now)

    def _start(self, m: _Mapping, now: float) -> None:
        # A renewal or deletion keeps trying until the lifetime we hold ends
        # (past it there is nothing left to keep or delete); a first request
        # is bounded by the retransmission limits alone.
        deadline = m.expires if m.granted else None
        m.tx = self._new_tx(now, deadline=deadline)
        # NAT-PMP tells the external address apart; asking again with each
        # renewal is how a changed WAN address is noticed (we do not join
        # the 224.0.0.1:5350 announcements of RFC 6886 §3.2.1).
        if self.method == "natpmp" and self._address_tx is None and not m.deleting:
            self._address_tx = self._new_tx(now, deadline=None)

    def _request(self, m: _Mapping) -> bytes:
        lifetime = 0 if m.deleting else m.lifetime
        port = m.external_port or m.want_port
        if self.method == "natpmp":
            # RFC 6886 §3.4: a deletion names external port 0.
            return encode_natpmp_map_request(
                m.protocol, m.internal_port, 0 if m.deleting else port, lifetime
            )
        return encode_pcp_map_request(
            m.nonce, m.protocol, self.client_ip, m.internal_port, port, lifetime
        )

    def _due(self, tx: _Retransmit, now: float) -> bool:
        """True if ``tx`` sends now (and advances its schedule)."""
        if now < tx.next_send:
            return False
        if tx.max_sends and tx.sent >= tx.max_sends:
            return False
        tx.sent += 1
        wait = tx.interval * (1.0 + self.rng.uniform(-tx.jitter, tx.jitter))
        tx.next_send = now + wait
        # NAT-PMP doubles without a ceiling; PCP's RT doubles up to MRT.
        tx.interval = min(tx.interval * 2, tx.max_interval)
        return True

    @staticmethod
    def _expired(tx: _Retransmit, now: float) -> bool:
        if tx.deadline is not None and now >= tx.deadline:
            return True
        return bool(tx.max_sends) and tx.sent >= tx.max_sends and now >= tx.next_send

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Addr]]:
        out: list[tuple[bytes, Addr]] = []
        if self._address_tx is not None and self._due(self._address_tx, now):
            out.append((encode_natpmp_external_request(), self.server))
        for m in self._mappings.values():
            if m.tx is not None and self._due(m.tx, now):
                out.append((self._request(m), self.server))
        return out

    def get_timer(self) -> float | None:
        """When ``handle_timer`` (or ``datagrams_to_send``) next has work."""
        times: list[float] = []
        txs = [m.tx for m in self._mappings.values()]
        for tx in [self._address_tx, *txs]:
            if tx is not None:
                times.append(tx.next_send)
                if tx.deadline is not None:
                    times.append(tx.deadline)
        times += [m.renew_at for m in self._mappings.values() if m.renew_at is not None]
        times += [
            m.expires for m in self._mappings.values() if m.expires is not None and m.granted
        ]
        return min(times) if times else None

    def handle_timer(self, now: float) -> None:
        if self._address_tx is not None and self._expired(self._address_tx, now):
            self._address_tx = None
            if not self.confirmed:
                self._no_answer(now)
                return
            # A server that answered before: the mappings' own requests
            # decide; the address we know stays until one says otherwise.
            log.debug("NAT-PMP: %s did not answer an address request", self.server)
        for key, m in list(self._mappings.items()):
            if m.tx is not None and self._expired(m.tx, now):
                if not self.confirmed and not m.granted and not m.deleting:
                    self._no_answer(now)
                    return
                m.tx = None
                self._give_up(key, m, "lifetime ended" if m.granted else "timeout", None)
            elif m.tx is None and m.renew_at is not None and now >= m.renew_at:
                m.renew_at = None
                log.debug("%s: renewing %s %d", self.method, m.protocol, m.internal_port)
                self._start(m, now)
            elif m.tx is None and m.expires is not None and m.granted and now >= m.expires:
                self._give_up(key, m, "lifetime ended", None)

    def _no_answer(self, now: float) -> None:
        """The server answered nothing in this protocol: try the next one,
        or fail everything outstanding."""
        nxt = self.methods.index(self.method) + 1
        if not self.confirmed and nxt < len(self.methods):
            log.debug("%s: no answer from %s, trying %s", self.method, self.server,
                      self.methods[nxt])  # fmt: skip
            self._switch(self.methods[nxt], now)
            return
        self.fail_all("timeout", now)

    def fail_all(self, reason: str, now: float) -> None:
        """Ends every outstanding request with ``reason`` (the driver calls
        this when the socket says nothing listens at the gateway's port)."""
        self._address_tx = None
        for key, m in list(self._mappings.items()):
            if m.tx is not None:
                m.tx = None
                self._give_up(key, m, reason, None)

    def _give_up(self, key: tuple[str, int], m: _Mapping, reason: str, result: int | None) -> None:
        del self._mappings[key]
        if m.deleting:
            self._events.append(
                MappingDeleted(self.method, m.protocol, m.internal_port, confirmed=False)
            )
        else:
            self._events.append(
                MappingFailed(self.method, m.protocol, m.internal_port, reason, result)
            )

    def _switch(self, method: str, now: float) -> None:
        self.method = method
        self.confirmed = False
        self._address_tx = None
        for m in self._mappings.values():
            if m.tx is not None:
                self._start(m, now)

    # -- answers --------------------------------------------------------------

    def receive_datagram(self, data: bytes, addr: Addr, now: float) -> bool:
        """Feeds a datagram; True if it answered one of our requests.
        Malformed, foreign or unrelated datagrams are counted and dropped."""
        if (addr[0], addr[1]) != self.server:
            self.ignored += 1
            return False
        try:
            msg = parse_untrusted(data)
        except PortMapParseError as e:
            self.ignored += 1
            log.debug("port-mapping datagram from %s dropped: %s", addr, e)
            return False
        if isinstance(msg, NatPmpResponse):
            return self._natpmp_answer(msg, now)
        return self._pcp_answer(msg, now)

    def _check_epoch(self, epoch: int, now: float) -> None:
        prev = self._epoch
        self._epoch = (epoch, now)
        if prev is None:
            return
        client_delta = now - prev[1]
        server_delta = epoch - prev[0]
        if self.method == "pcp":
            # RFC 6887 §8.5: either clock running more than 1/16 (+2 s) off
            # the other means the server's state cannot be trusted.
            lost = epoch < prev[0] - 1 or (
                client_delta + 2 < server_delta - server_delta / 16
                or server_delta + 2 < client_delta - client_delta / 16
            )
        else:
            # RFC 6886 §3.6: the server's clock fell behind 7/8 of ours.
            lost = epoch < prev[0] or server_delta + 2 < client_delta * 7 / 8
        if lost:
            self.restarts += 1
            log.info("%s gateway %s restarted (epoch %d after %d): mapping again",
                     self.method, self.server, epoch, prev[0])  # fmt: skip
            for m in self._mappings.values():
                if m.granted and not m.deleting and m.tx is None:
                    m.renew_at = now

    def _natpmp_answer(self, msg: NatPmpResponse, now: float) -> bool:
        if msg.result == NatPmpResult.UNSUPPORTED_VERSION and self.method == "pcp":
            if "natpmp" not in self.methods:
                self.fail_all("the gateway speaks NAT-PMP only", now)
                return True
            log.debug("PCP: %s speaks NAT-PMP only, falling back", self.server)
            self._switch("natpmp", now)
            return True
        if self.method != "natpmp" or msg.result == NatPmpResult.UNSUPPORTED_VERSION:
            # The second case: a late answer to a PCP request sent before
            # we fell back (we never send NAT-PMP a version it refuses).
            self.ignored += 1
            return False
        if msg.opcode == 0:
            if self._address_tx is None:
                self.ignored += 1
                return False
            self._address_tx = None
            self.confirmed = True
            self._check_epoch(msg.epoch, now)
            if msg.result != NatPmpResult.SUCCESS or msg.external_ip is None:
                if self.external_ip is None:
                    self.fail_all(_result_name("natpmp", msg.result), now)
                return True
            changed = self.external_ip not in (None, msg.external_ip)
            self.external_ip = msg.external_ip
            if changed:
                log.info("NAT-PMP: external address now %s", msg.external_ip)
                for m in self._mappings.values():
                    if m.announced and m.granted and not m.deleting:
                        self._emit_granted(m, renewal=True)
            self._announce(now)
            return True
        proto = "udp" if msg.opcode == 1 else "tcp"
        if msg.result != NatPmpResult.SUCCESS and msg.internal_port == 0:
            # A short error answer names no port: it refuses every
            # outstanding request of its opcode.
            refused = [
                m for m in self._mappings.values() if m.protocol == proto and m.tx is not None
            ]
        else:
            one = self._mappings.get((proto, msg.internal_port))
            refused = [one] if one is not None and one.tx is not None else []
        if not refused:
            self.ignored += 1
            return False
        self.confirmed = True
        self._check_epoch(msg.epoch, now)
        for m in refused:
            self._settle(m, msg.result, msg.lifetime, msg.external_port, None, now)
        return True

    def _pcp_answer(self, msg: PcpResponse, now: float) -> bool:
        if self.method != "pcp":
            self.ignored += 1
            return False
        if msg.result == PcpResult.UNSUPP_VERSION:
            self.confirmed = True
            # A PCP server of another version: we speak 2 and NAT-PMP only.
            if msg.version == NATPMP_VERSION and "natpmp" in self.methods:
                self._switch("natpmp", now)
            else:
                self.fail_all(f"the gateway speaks PCP version {msg.version} only", now)
            return True
        if msg.opcode != PCP_OP_MAP or msg.nonce is None:
            self.ignored += 1
            return False
        for m in self._mappings.values():
            if (
                m.tx is not None
                and m.nonce == msg.nonce
                and _PROTO_NUMBER[m.protocol] == msg.protocol
                and m.internal_port == msg.internal_port
            ):
                self.confirmed = True
                self._check_epoch(msg.epoch, now)
                self._settle(m, msg.result, msg.lifetime, msg.external_port, msg.external_ip, now)
                return True
        self.ignored += 1
        return False

    def _settle(
        self, m: _Mapping, result: int, lifetime: int, eport: int, eip: str | None, now: float
    ) -> None:
        key = (m.protocol, m.internal_port)
        m.tx = None
        if m.deleting:
            del self._mappings[key]
            self._events.append(
                MappingDeleted(self.method, m.protocol, m.internal_port, confirmed=result == 0)
            )
            return
        if result != 0:
            self._give_up(key, m, _result_name(self.method, result), result)
            return
        if lifetime == 0 or eport == 0:
            self._give_up(key, m, "the gateway granted no lifetime", None)
            return
        renewal = bool(m.granted)
        m.granted = lifetime
        m.external_port = eport
        m.expires = now + lifetime
        # Half the lease: a lost renewal still leaves the other half to retry.
        m.renew_at = now + lifetime / 2
        if eip is not None and eip not in ("0.0.0.0", "::"):
            self.external_ip = eip
        if renewal and m.announced:
            self._emit_granted(m, renewal=True)
        else:
            self._announce(now)

    def _announce(self, now: float) -> None:
        # NAT-PMP tells the external address apart from the mappings: a
        # grant is only reported once both are known.
        if self.external_ip is None:
            return
        for m in self._mappings.values():
            if m.granted and not m.announced and not m.deleting:
                m.announced = True
                self._emit_granted(m, renewal=False)

    def _emit_granted(self, m: _Mapping, *, renewal: bool) -> None:
        assert self.external_ip is not None
        self._events.append(
            MappingGranted(
                self.method,
                m.protocol,
                m.internal_port,
                (self.external_ip, m.external_port),
                m.granted,
                renewal,
            )
        )

    def next_event(self) -> PortMapEvent | None:
        return self._events.popleft() if self._events else None
