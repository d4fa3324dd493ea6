"""NAT traversal glue: connect by peer id through a mutual peer.

``Service.connect(peer_id)`` for a peer with no known address comes here.
We ask the peers we are connected to (the would-be introducers) to pass a
rendezvous request on (crust.nat.rendezvous); the target answers with its
candidate addresses, and both sides then race:

- UDP hole punching from the listening socket (crust.nat.punch), then the
  normal handshake over the punched path; birthday punching instead when
  exactly one side's NAT is symmetric (crust.asyncio.birthday). With
  candidates of both families on both sides, a Happy Eyeballs race: IPv6
  first, IPv4 after a head start, first punched wins (crust.nat.eyeballs,
  crust.asyncio.eyeballs; design note 0063);
- TCP simultaneous open from the listening port (crust.asyncio.tcp_punch),
  after ``tcp_after`` seconds (a punched UDP path is preferred when both work);
- a relayed connection through the introducer (crust.asyncio.relaying),
  after ``relay_after`` seconds or as soon as the others failed.

A relayed connection keeps trying to punch (after ``upgrade_retry``
seconds, then with the wait doubled after each try up to
``upgrade_retry_max``; the request travels over the relayed connection
itself, ``ControlKind.PUNCH``) and moves to the punched path in place when
it works: the same engine connection, handed to the UDP endpoint, so no
message is lost or repeated. ``Peer.why`` says how the current path came
about (design note 0057).

Every node is also an introducer and (``ServiceConfig.relay_for_others``) a
relay for the peers connected to it. The winning path is ``Peer.path``; what
failed on the way is ``Peer.why``. Design: docs/design/0019, 0020.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import logging
import os
import random
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from crust.asyncio.birthday import HardSide
from crust.asyncio.eyeballs import PunchRace
from crust.asyncio.punch_io import send_with_ttl
from crust.asyncio.relay_link import RelayLink
from crust.asyncio.relaying import Relaying
from crust.asyncio.tcp import TcpLink
from crust.asyncio.tcp_punch import AlreadyConnected, kernel_rtt_us, simultaneous_open
from crust.control import ControlKind
from crust.errors import Attempt, ConnectError, CrustError
from crust.handshake import HandshakeResult, Responder, long_header_prefix
from crust.identity import PeerId
from crust.nat import eyeballs
from crust.nat.classify import Behaviour
from crust.nat.punch import PunchConfig, PunchSession, PunchState, punch_session_id
from crust.nat.reflexive import ReflexiveTracker
from crust.nat.relay import RelayPolicy, RelayTable
from crust.nat.rendezvous import Introducer, Op, RendezvousMessage, punch_key
from crust.paths import PathName
from crust.peer import Address, Link, Peer, now_us
from crust.reflection import syn_cost, udp_cost

if TYPE_CHECKING:
    from crust.asyncio.udp import UdpListener
    from crust.node import Listener, Node

__all__ = ["PeerNotFound", "Traversal"]

logger = logging.getLogger(__name__)

# How long a rendezvous request waits for the target's answer.
_ASK_TIMEOUT = 3.0
# At most this many introducers are asked at once.
_MAX_VIAS = 3
# How many recent punch results are kept for labelling incoming handshakes.
_MAX_PUNCHED = 1024
# Punch requests a peer may pass us: a burst of 8, then one per second; and
# at most _MAX_JOBS punch sessions at once (each sends to addresses a peer
# chose, so this bounds what we can be made to send).
_BUDGET_BURST = 8.0
_BUDGET_RATE = 1.0
# Birthday probing sprays many ports: it stops sooner than a plain punch.
_SPRAY_TIMEOUT_US = 1_500_000
_MAX_JOBS = 16
_HARD = (
    Behaviour.ADDRESS_DEPENDENT,
    Behaviour.ADDRESS_AND_PORT_DEPENDENT,
    Behaviour.DEPENDENT,
)


class PeerNotFound(ConnectionError):
    """No connected peer could introduce us to the target (none is
    connected to it, or we have no peers at all)."""


@dataclass(eq=False)
class _PunchJob:
    """One running punch session on one listener."""

    peer: PeerId
    session: PunchSession
    listener: UdpListener
    peer_local: frozenset[Address]
    done: asyncio.Future[Address]
    timer: asyncio.TimerHandle | None = None
    #: Charges the sends to unverified candidates to whoever asked for this
    #: punch (crust.reflection); None: a traversal we trust.
    charge: Callable[[int], bool] | None = None

    @property
    def label(self) -> PathName:
        a = self.session.address
        return "direct-udp" if a is not None and a in self.peer_local else "punched-udp"


@dataclass(eq=False)
class _Ask:
    target: PeerId
    nonce: bytes
    vias: int
    done: asyncio.Future[tuple[RendezvousMessage, Peer]]
    errors: list[str] = field(default_factory=list)


def _family_of(addr: Address) -> int:
    return socket.AF_INET6 if ":" in addr[0] else socket.AF_INET


def _eyeball(af: int) -> int:
    """crust.nat.eyeballs' number of a socket address family."""
    return eyeballs.IPV6 if af == socket.AF_INET6 else eyeballs.IPV4


class Traversal:
    """The service's NAT traversal: requester, target, introducer and relay."""

    #: Seconds UDP punching runs alone before TCP simultaneous open joins.
    tcp_after = 0.5
    #: Seconds the direct attempts run alone before the relay joins.
    relay_after = 1.0
    #: Seconds one punch session may take.
    punch_timeout = 3.0
    #: Ports of a symmetric peer's address probed by birthday punching.
    birthday_probes = 1024
    #: Seconds an IPv6 punch runs alone before IPv4 joins the race
    #: (crust.nat.eyeballs.HEAD_START_US, design note 0063).
    eyeballs_head_start = eyeballs.HEAD_START_US / 1e6

    def __init__(self, service: Node, udp: list[UdpListener]) -> None:
        self.svc = service
        # The service's UDP listeners (it opens and closes them).
        self._udp = udp
        cfg = service.config
        self.reflexive = ReflexiveTracker()
        #: Seconds before the first try of a direct path under a relayed
        #: connection; doubled after each try, up to ``repunch_max``.
        self.repunch_interval = cfg.upgrade_retry
        self.repunch_max = cfg.upgrade_retry_max
        #: Whether we use relays: "never", "fallback" or "always".
        self.use_relay = cfg.relay
        #: Whether and how much we relay for others.
        self.relaying = Relaying(service, RelayPolicy(mode=cfg.relay_for_others, cap=cfg.relay_cap))
        self.introducer = Introducer(self._is_connected, self._relay_allowed)
        self._prefix = long_header_prefix(cfg.network)
        self._rng = random.Random()
        self._asks: dict[bytes, _Ask] = {}
        #: Punch sessions by (session id, address family): a Happy Eyeballs
        #: race runs one per family under one session id (crust.nat.eyeballs).
        self._jobs: dict[tuple[bytes, int], _PunchJob] = {}
        self._races: set[PunchRace[_PunchJob]] = set()
        self._repunch_asks: dict[bytes, tuple[PeerId, bytes]] = {}
        self._punched: dict[tuple[PeerId, int], tuple[Address, PathName]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._responder: Responder | None = None
        self._hard_sides: set[HardSide] = set()
        self._budgets: dict[PeerId, tuple[float, int]] = {}
        #: Listeners on sockets that won a birthday punch (closed with us).
        self._listeners: list[UdpListener] = []
        #: Whether our NAT is symmetric; None: as STUN says (``is_hard``).
        self.hard: bool | None = None
        self._closed = False
        service.on_control(ControlKind.RENDEZVOUS, self._on_rendezvous)
        service.on_control(ControlKind.PUNCH, self._on_punch_request)

    # -- service hooks -----------------------------------------------------------

    def on_established(self, link: Link, result: HandshakeResult) -> None:
        """A handshake completed: note where the peer saw us, and name the
        path of an incoming connection that a punch made possible."""
        if link.path == "relayed":
            return
        transport = link.path.rsplit("-", 1)[-1]
        self.reflexive.note(transport, result.observed_addr, result.peer_id, now_us())
        punched = self._punched.get((result.peer_id, _family_of(link.address)))
        if punched is not None and link.path == "direct-udp" and punched[0] == link.address:
            link.path = punched[1]
        if link.path.startswith("punched-") and result.observed_addr in [
            *self.svc.endpoints,
            *self._forwarded(),
        ]:
            # The peer reached our own listening address (or a port forward
            # to it): nothing on our side needed punching.
            link.path = "direct-tcp" if transport == "tcp" else "direct-udp"
        # The peer chose its path: our punches toward it on the other family
        # (the target of a Happy Eyeballs race punches on both) are moot.
        fam = _family_of(link.address)
        for job in [j for j in self._jobs.values() if j.peer == result.peer_id]:
            if _family_of(job.listener.address) != fam and job.session.state is PunchState.PUNCHING:
                self._stop_job(job, f"the peer connected over {_fmt(link.address)}")

    def on_peer_lost(self, peer: Peer) -> None:
        """``peer`` is gone: end the relay sessions through or of it."""
        self.relaying.on_peer_lost(peer)
        if self._listeners:
            # A birthday socket serves one connection: once it has drained.
            asyncio.get_running_loop().call_later(5.0, self._reap_listeners)

    def _reap_listeners(self) -> None:
        for listener in [lst for lst in self._listeners if not lst._links]:
            self._listeners.remove(listener)
            listener.close()

    def close(self) -> None:
        self._closed = True
        for t in self._tasks:
            t.cancel()
        for job in self._jobs.values():
            job.session.cancel("service closed")
            if job.timer is not None:
                job.timer.cancel()
            if not job.done.done():
                job.done.set_exception(ConnectionError("service closed"))
        self._jobs.clear()
        for race in list(self._races):
            race.cancel("service closed")
        for hard in list(self._hard_sides):
            hard.close()
        for listener in self._listeners:
            listener.close()
        self.relaying.close()
        for ask in self._asks.values():
            if not ask.done.done():
                ask.done.set_exception(ConnectionError("service closed"))

    # -- addresses ---------------------------------------------------------------

    def candidates(self, toward: Address | None) -> tuple[list[Address], int]:
        """Our candidate addresses, and how many of them (the first ones) reach
        our listening sockets without any punching: our own addresses and
        port forwards a UPnP gateway made for us."""
        own: list[Address] = []
        for addr in self.svc.endpoints:
            host = addr[0]
            if ipaddress.ip_address(host).is_unspecified:
                host = _local_ip_toward(toward, _family_of(addr)) or host
            if not ipaddress.ip_address(host).is_unspecified:
                own.append((host, addr[1]))
        own = list(dict.fromkeys(own))[:8]
        ports = sorted({a[1] for a in own})
        extra: list[Address] = []
        for seen in self.reflexive.addresses("udp")[:4]:
            extra.append(seen)
            # Port-preserving NATs map the listening port to itself.
            extra.extend((seen[0], p) for p in ports)
        for seen in self.reflexive.addresses("tcp")[:2]:
            extra.extend((seen[0], p) for p in ports)
        # STUN's view of us.
        nat = getattr(self.svc, "nat", None)
        if nat is not None and nat.mapped is not None:
            extra.insert(0, nat.mapped)
        direct = list(dict.fromkeys(own + self._forwarded()))[:15]
        allc = list(dict.fromkeys(direct + extra))[:16]
        return allc, len(direct)

    def _forwarded(self) -> list[Address]:
        """Port forwards a UPnP gateway made for our listening ports."""
        if self.svc.upnp is None:
            return []
        return [m.external for m in self.svc.upnp.mappings]

    # -- connect by id (the requester) ---------------------------------------------

    async def connect(self, target: PeerId, timeout: float) -> Peer:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        reply, via, session, nonce = await self.ask(target, deadline)
        key = punch_key(self.svc.identity, target, session, (nonce, reply.nonce))
        return await self._race(target, session, key, reply, via, deadline)

    async def ask(
        self, target: PeerId, deadline: float
    ) -> tuple[RendezvousMessage, Peer, bytes, bytes]:
        """A rendezvous with ``target`` through up to ``_MAX_VIAS`` of our
        peers: the target's reply, the introducer that passed it, the
        session and our nonce. Also how a relayed connection that lost its
        relay finds another (crust.asyncio.relaying)."""
        loop = asyncio.get_running_loop()
        vias = [p for p in self.svc.peers if p.id != target and p.path != "relayed"]
        # Rendezvous peers we chose first: their answers are trusted (no
        # reflection budget, birthday punching allowed: crust.reflection).
        vias = sorted(vias, key=lambda p: not p.chosen)[:_MAX_VIAS]
        if not vias:
            raise PeerNotFound("no connected peer to introduce us")
        session, nonce = os.urandom(8), os.urandom(16)
        ask = _Ask(target, nonce, len(vias), loop.create_future())
        self._asks[session] = ask
        try:
            for via in vias:
                cands, local = self.candidates(via.address)
                msg = RendezvousMessage(
                    Op.REQUEST, session, target, nonce, _rtt_us(via), False,
                    tuple(cands), local=local, hard=self.is_hard(),
                )  # fmt: skip
                with contextlib.suppress(CrustError):
                    self.svc.send_control(via, ControlKind.RENDEZVOUS, _encode(msg))
            try:
                reply, via = await asyncio.wait_for(
                    ask.done, min(_ASK_TIMEOUT, max(0.1, deadline - loop.time()))
                )
            except asyncio.TimeoutError:
                why = "; ".join(ask.errors) or "no introducer answered"
                raise ConnectionError(f"rendezvous with {target.short} failed: {why}") from None
        finally:
            del self._asks[session]
        return reply, via, session, nonce

    async def _race(
        self,
        target: PeerId,
        session: bytes,
        key: bytes,
        reply: RendezvousMessage,
        via: Peer,
        deadline: float,
    ) -> Peer:
        loop = asyncio.get_running_loop()
        cands = list(reply.candidates)
        local = frozenset(cands[: reply.local])
        attempts: dict[asyncio.Task[Peer], str] = {}
        job: _PunchJob | PunchRace[_PunchJob] | None = None
        # Candidates from a rendezvous peer we did not choose may name
        # anyone: no birthday punching then, and the punches are charged
        # to that peer (crust.reflection).
        charge = None if via.chosen else self.svc.charge_to(via)
        if self.use_relay != "always":
            job = self._start_punches(
                target, session, key, cands, local, responder=False, extra_us=0,
                spray=self._spray(reply, cands) if charge is None else None, charge=charge,
            )  # fmt: skip
        if job is not None:
            attempts[asyncio.create_task(self._udp_attempt(job, target, deadline))] = "udp punch"
            hard = None
            if charge is None:
                hard = self._start_hard(session, key, cands, reply, responder=False)
            if hard is not None:
                task = self._birthday_attempt(hard, target, deadline)
                attempts[asyncio.create_task(task)] = "birthday punch"
        if self.svc.config.tcp and self.use_relay != "always":
            delay = self.tcp_after if job is not None else 0.0
            task = self._tcp_attempt(
                target, cands, local, deadline, initiator=True, delay=delay, charge=charge
            )
            attempts[asyncio.create_task(task)] = "tcp punch"
        relay_task: asyncio.Task[Peer] | None = None

        def start_relay(delay: float) -> None:
            nonlocal relay_task
            if relay_task is None and reply.relay and self.use_relay != "never":
                relay_task = asyncio.create_task(
                    self.relaying.dial(target, session, via, deadline, delay)
                )
                attempts[relay_task] = "relay"

        start_relay(0.0 if self.use_relay == "always" else self.relay_after)
        errors: list[Attempt] = []
        if self.use_relay == "never":
            errors.append(Attempt("relay", ConnectError("not used (relay='never')")))
        elif not reply.relay:
            errors.append(Attempt("relay", ConnectError("the introducer does not relay")))
        try:
            while attempts:
                done, _ = await asyncio.wait(
                    set(attempts),
                    timeout=max(0.0, deadline - loop.time()),
                    return_when=asyncio.FIRST_COMPLETED,
                )
                if not done:
                    break
                for t in done:
                    kind = attempts.pop(t)
                    exc = t.exception()
                    if exc is not None:
                        errors.append(Attempt(kind, exc))
                        continue
                    peer = t.result()
                    others = [*map(str, errors)]
                    others += [f"{k}: abandoned, {kind} won" for k in attempts.values()]
                    if isinstance(job, PunchRace) and kind == "udp punch":
                        # (A race that failed says so in its error above.)
                        others.append(job.why())
                    peer.why = _why(peer, via, others)
                    if peer.path == "relayed":
                        self._spawn(self._repunch(peer))
                    return peer
                # Everything direct failed: relay now rather than later.
                if all(k == "relay" for k in attempts.values()):
                    start_relay(0.0)
            for kind in attempts.values():
                errors.append(Attempt(kind, TimeoutError("no success before the deadline")))
            why = "; ".join(map(str, errors))
            raise ConnectError(f"cannot reach {target.short}: {why}", tuple(errors))
        finally:
            for t in attempts:
                t.cancel()
            # The punch keeps running under a relayed connection (to upgrade it);
            # otherwise it has served its purpose.
            now_peer = self.svc.find_peer(target)
            if job is not None and (now_peer is None or now_peer.path != "relayed"):
                if isinstance(job, PunchRace):
                    job.cancel("another path won")
                else:
                    job.session.cancel("another path won")

    async def _udp_attempt(
        self, punch: _PunchJob | PunchRace[_PunchJob], target: PeerId, deadline: float
    ) -> Peer:
        loop = asyncio.get_running_loop()
        # A race: dial over the family that punched first, only that one.
        job = await asyncio.shield(punch.done) if isinstance(punch, PunchRace) else punch
        addr = await asyncio.shield(job.done)
        existing = self.svc.find_peer(target)
        if existing is not None and existing.is_connected:
            return existing
        listener = job.listener
        result = await listener.dial(addr, target, max(0.5, deadline - loop.time()))
        link = listener.establish(result, addr)
        link.path = job.label
        peer = self.svc.on_established(link, result, incoming=False)
        if peer is None:
            raise ConnectionError("refused (blacklisted)")
        return peer

    async def _tcp_attempt(
        self,
        target: PeerId,
        cands: list[Address],
        local: frozenset[Address],
        deadline: float,
        *,
        initiator: bool,
        delay: float,
        charge: Callable[[int], bool] | None = None,
    ) -> Peer:
        loop = asyncio.get_running_loop()
        logger.debug("TCP punch with %s in %.3f s", target.short, delay)
        if delay:
            await asyncio.sleep(delay)
        mine = [tl.address for tl in self.svc.tcp_ports]
        may_send = None
        if charge is not None:
            # One connect attempt waits up to a second: the SYN and the
            # kernel's retransmission of it.
            may_send = _syn_charge(charge)
        for own in mine:
            targets = [c for c in cands if _family_of(c) == _family_of(own)]
            if not targets:
                continue
            try:
                sock = await simultaneous_open(
                    own, targets, max(0.1, deadline - loop.time()), may_send=may_send
                )
            except AlreadyConnected as e:
                # The peer's SYN reached our listener first: that accepted
                # stream is the punched one, and the requester dials over it.
                if not initiator:
                    raise ConnectionError("the requester dials over our accepted stream") from None
                # The kernel may hold it in the accept queue a moment longer.
                link = None
                for _ in range(25):
                    link = self._accepted_stream(e.local, e.target)
                    if link is not None:
                        break
                    await asyncio.sleep(0.02)
                if link is None:
                    raise ConnectionError(str(e)) from None
                link.path = "direct-tcp" if e.target in local else "punched-tcp"
                return await self._dial_stream(link, target, deadline)
            addr: Address = sock.getpeername()[:2]
            label: PathName = "direct-tcp" if addr in local else "punched-tcp"
            if not initiator:
                responder = self._tcp_responder()
                await loop.connect_accepted_socket(
                    functools.partial(_tcp_link, self.svc, responder, label), sock
                )
                raise ConnectionError("answered as the responder")
            _, link = await loop.create_connection(lambda: TcpLink(self.svc), sock=sock)
            link.path = label
            return await self._dial_stream(link, target, deadline)
        raise ConnectionError("no candidate of a family we listen on")

    async def _dial_stream(self, link: TcpLink, target: PeerId, deadline: float) -> Peer:
        loop = asyncio.get_running_loop()
        try:
            result = await link.start_dial(target, max(0.5, deadline - loop.time()))
        except BaseException:
            link.close_transport()
            raise
        link.establish(result)
        peer = self.svc.on_established(link, result, incoming=False)
        if peer is None:
            raise ConnectionError("refused (blacklisted)")
        return peer

    def _accepted_stream(self, local: Address, remote: Address) -> TcpLink | None:
        """The accepted, still silent stream from ``remote`` to ``local``,
        turned from responder into initiator."""
        for link in self.svc.tcp_links:
            if not isinstance(link, TcpLink):
                continue  # (every stream is one: the TCP transport adds them)
            tr = link.transport
            if tr is None or tr.is_closing() or link.initiator is not None or link._conn:
                continue
            if link.address == remote and tr.get_extra_info("sockname")[:2] == local:
                link.responder = None
                return link
        return None

    # -- the target side -------------------------------------------------------------

    def _on_request(self, via: Peer, msg: RendezvousMessage) -> None:
        requester = msg.peer
        if self._has_session(msg.session) or self.relaying.has_offer(msg.session):
            return  # the same request through a second introducer
        if not self._admit(via, msg):
            return
        nonce = os.urandom(16)
        cands, local = self.candidates(via.address)
        reply = RendezvousMessage(
            Op.REPLY, msg.session, requester, nonce, _rtt_us(via), False, tuple(cands),
            local=local, hard=self.is_hard(),
        )  # fmt: skip
        try:
            self.svc.send_control(via, ControlKind.RENDEZVOUS, _encode(reply))
        except CrustError as e:
            logger.debug("rendezvous reply to %s not sent: %s", via.id.short, e)
            return
        if msg.relay and self.use_relay != "never":
            self.relaying.offer(msg.session, requester, via)
            if self.relaying.rerouting(requester):
                return  # it moves our relayed connection here: nothing to punch
        key = punch_key(self.svc.identity, requester, msg.session, (msg.nonce, nonce))
        peer_cands = list(msg.candidates)
        local_set = frozenset(peer_cands[: msg.local])
        # We start one introducer hop before the requester does: punch at
        # low TTL at least that much longer (module doc of crust.nat.punch).
        skew = (msg.rtt_us + _rtt_us(via)) // 2
        if self.use_relay == "always":
            return
        # Introduced through a peer we did not choose: the requester's
        # candidates may name anyone (crust.reflection). No birthday
        # punching, and every punch and SYN is charged to that peer.
        charge = None if via.chosen else self.svc.charge_to(via)
        self._start_punches(
            requester, msg.session, key, peer_cands, local_set, responder=True, extra_us=skew,
            spray=self._spray(msg, peer_cands) if charge is None else None, charge=charge,
        )  # fmt: skip
        hard = None
        if charge is None:
            hard = self._start_hard(msg.session, key, peer_cands, msg, responder=True)
        if hard is not None:
            self._spawn(self._birthday_target(hard, requester))
        if self.svc.config.tcp:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self.svc.config.connect_timeout
            # The requester starts once our reply has reached it through the
            # introducer (~skew later): starting as late lets the two SYNs
            # cross in flight instead of ours reaching its NAT first, which
            # a NAT without a firewall answers with RST (tcp_punch).
            delay = (self.tcp_after if self.svc.config.udp else 0.0) + min(skew, 2_000_000) / 1e6
            self._spawn(
                self._tcp_attempt(
                    requester,
                    peer_cands,
                    local_set,
                    deadline,
                    initiator=False,
                    delay=delay,
                    charge=charge,
                )
            )

    # -- punching ------------------------------------------------------------------

    def _start_punch(
        self,
        peer: PeerId,
        session: bytes,
        key: bytes,
        cands: list[Address],
        local: frozenset[Address],
        *,
        responder: bool,
        extra_us: int,
        spray: list[Address] | None = None,
        charge: Callable[[int], bool] | None = None,
        family: int | None = None,
    ) -> _PunchJob | None:
        """One punch session on the first listener that has candidates
        (of ``family`` only, when given: crust.nat.eyeballs numbers)."""
        if not self.svc.config.udp or self._closed:
            return None
        for listener in self._udp:
            fam = _family_of(listener.address)
            if family is not None and _eyeball(fam) != family:
                continue
            mine = [c for c in cands if _family_of(c) == fam]
            if not mine:
                continue
            spray = [a for a in spray or () if _family_of(a) == fam]
            base = PunchConfig()
            low_ttl_us = base.low_ttl_us + max(0, min(extra_us, 2_000_000))
            timeout_us = int(self.punch_timeout * 1e6)
            if spray:
                # Birthday probing: the peer's NAT is symmetric. Our
                # candidates first, then the sprayed ports, 64 every 10 ms.
                mine = list(dict.fromkeys(mine + spray))
                config = PunchConfig(
                    interval_us=10_000, low_ttl_us=low_ttl_us,
                    timeout_us=min(timeout_us, _SPRAY_TIMEOUT_US + low_ttl_us),
                    max_candidates=len(mine), burst=64,
                )  # fmt: skip
            else:
                config = PunchConfig(low_ttl_us=low_ttl_us, timeout_us=timeout_us)
            ps = PunchSession(
                key=eyeballs.family_key(key, _eyeball(fam)), session=session,
                responder=responder, candidates=mine,
                prefix=self._prefix, now=now_us(), config=config, rng=self._rng,
            )  # fmt: skip
            loop = asyncio.get_running_loop()
            job = _PunchJob(peer, ps, listener, local, loop.create_future(), charge=charge)
            # Nobody may await a failed punch: do not warn about it.
            job.done.add_done_callback(lambda f: f.cancelled() or f.exception())
            self._jobs[(session, fam)] = job
            logger.debug(
                "punch %s with %s from %s to %s", "answering" if responder else "asking",
                peer.short, _fmt(listener.address), [_fmt(c) for c in mine[:4]],
            )  # fmt: skip
            self._drive(job)
            return job
        return None

    def _start_punches(
        self,
        peer: PeerId,
        session: bytes,
        key: bytes,
        cands: list[Address],
        local: frozenset[Address],
        *,
        responder: bool,
        extra_us: int,
        spray: list[Address] | None = None,
        charge: Callable[[int], bool] | None = None,
    ) -> _PunchJob | PunchRace[_PunchJob] | None:
        """The punch of a rendezvous. When both sides have candidates in
        both families the requester races them, IPv6 first (a PunchRace,
        design note 0063), and the target punches on both at once: it only
        answers, and the requester's choice is the one that counts."""
        ours = {_eyeball(_family_of(lst.address)) for lst in self._udp}
        families = eyeballs.preferred(ours, {_eyeball(_family_of(c)) for c in cands})
        start = functools.partial(
            self._start_punch, peer, session, key, cands, local, responder=responder,
            extra_us=extra_us, spray=spray, charge=charge,
        )  # fmt: skip
        if len(families) < 2 or not self.svc.config.udp or self._closed:
            return start()
        if responder:
            jobs = [start(family=fam) for fam in families]
            return next((j for j in jobs if j is not None), None)
        race = PunchRace(
            families, lambda fam: start(family=fam), self._stop_job,
            int(self.eyeballs_head_start * 1e6),
        )  # fmt: skip
        self._races.add(race)
        race.done.add_done_callback(lambda _: self._races.discard(race))
        return race

    def _stop_job(self, job: _PunchJob, why: str) -> None:
        """Cancels a punch session now: it sends nothing more, its future
        fails and it leaves ``_jobs``."""
        job.session.cancel(why)
        self._drive(job)

    def _has_session(self, session: bytes) -> bool:
        return any(k[0] == session for k in self._jobs)

    def _admit(self, source: Peer, msg: RendezvousMessage) -> bool:
        """Whether to act on a punch request that ``source`` passed us. A
        request makes us send packets to addresses someone else chose, so
        each source gets a small budget (a burst of 8, then one a second)
        and at most ``_MAX_JOBS`` punches run at once."""
        now = now_us()
        tokens, stamp = self._budgets.pop(source.id, (_BUDGET_BURST, now))
        tokens = min(_BUDGET_BURST, tokens + (now - stamp) * _BUDGET_RATE / 1e6)
        ok = tokens >= 1.0 and len(self._jobs) < _MAX_JOBS
        self._budgets[source.id] = (tokens - 1.0 if ok else tokens, now)
        while len(self._budgets) > 4096:
            del self._budgets[next(iter(self._budgets))]
        if not ok:
            logger.info("punch request via %s refused: over budget", source.id.short)
        return ok

    # -- birthday punching (exactly one side symmetric) -------------------------

    def is_hard(self) -> bool:
        """Whether our NAT maps per destination (symmetric), as STUN showed
        (``self.hard`` overrides: tests, or an application that knows)."""
        if self.hard is not None:
            return self.hard
        nat = getattr(self.svc, "nat", None)
        return nat is not None and nat.mapping in _HARD

    def _spray(self, peer: RendezvousMessage, cands: list[Address]) -> list[Address] | None:
        """Random ports of a symmetric peer's public address to probe, when
        only the peer is hard."""
        if not peer.hard or self.is_hard():
            return None
        public = cands[peer.local :] or cands
        if not public:
            return None
        ip = public[0][0]
        ports = self._rng.sample(range(1024, 65536), self.birthday_probes)
        return [(ip, p) for p in ports]

    def _start_hard(
        self,
        session: bytes,
        key: bytes,
        cands: list[Address],
        peer: RendezvousMessage,
        *,
        responder: bool,
    ) -> HardSide | None:
        """Open the birthday sockets when only we are hard."""
        if peer.hard or not self.is_hard() or not self._udp:
            return None
        host = self._udp[0].address[0]
        targets = [c for c in cands[peer.local :] if _family_of(c) == _family_of((host, 0))][:4]
        if not targets:
            return None
        hard = HardSide(
            self.svc, key=key, session=session, responder=responder, targets=targets,
            host=host, prefix=self._prefix, timeout=self.punch_timeout,
        )  # fmt: skip
        self._hard_sides.add(hard)
        return hard

    async def _birthday_attempt(self, hard: HardSide, target: PeerId, deadline: float) -> Peer:
        loop = asyncio.get_running_loop()
        try:
            listener, addr = await hard.wait()
        finally:
            self._hard_sides.discard(hard)
        self._listeners.append(listener)
        result = await listener.dial(addr, target, max(0.5, deadline - loop.time()))
        link = listener.establish(result, addr)
        link.path = "punched-udp"
        peer = self.svc.on_established(link, result, incoming=False)
        if peer is None:
            raise ConnectionError("refused (blacklisted)")
        return peer

    async def _birthday_target(self, hard: HardSide, requester: PeerId) -> None:
        try:
            listener, addr = await hard.wait()
        finally:
            self._hard_sides.discard(hard)
        self._listeners.append(listener)
        self._punched[(requester, _family_of(addr))] = (addr, "punched-udp")

    def on_punch(self, listener: Listener, data: bytes, addr: Address, now: int) -> None:
        """A punch packet arrived at ``listener`` (from UdpListener)."""
        job = self._jobs.get((punch_session_id(data), _family_of(listener.address)))
        if job is None or job.listener is not listener:
            return  # a late or foreign punch: nothing to do, nothing to answer
        if job.session.receive_datagram(data, addr, now):
            self._drive(job)

    def _drive(self, job: _PunchJob) -> None:
        ps = job.session
        now = now_us()
        t = ps.get_timer()
        if t is not None and t <= now:
            ps.handle_timer(now)
        for data, to, ttl in ps.datagrams_to_send(now):
            # After success the address answered with an authentic punch:
            # it is verified, and what lingers goes there free.
            charge = job.charge if ps.state is PunchState.PUNCHING else None
            if charge is not None and not charge(udp_cost(to[0], len(data))):
                ps.cancel("the requester's reflection budget is spent (crust.reflection)")
                break
            send_with_ttl(job.listener.sock, data, to, ttl)
        if ps.state is PunchState.SUCCEEDED and not job.done.done():
            assert ps.address is not None
            job.done.set_result(ps.address)
            self._on_punched(job)
        elif ps.state is PunchState.FAILED and not job.done.done():
            job.done.set_exception(ConnectionError(ps.error or "punch failed"))
        if job.timer is not None:
            job.timer.cancel()
            job.timer = None
        t = ps.get_timer()
        if t is None or self._closed:
            if self._jobs.get(_key_of(job)) is job:
                del self._jobs[_key_of(job)]
            return
        delay = max(0.0, (t - now_us()) / 1e6)
        job.timer = asyncio.get_running_loop().call_later(delay, self._drive, job)

    def _on_punched(self, job: _PunchJob) -> None:
        assert job.session.address is not None
        addr = job.session.address
        logger.info("punched %s to %s at %s:%d", job.label, job.peer.short, *addr)
        self._punched.pop((job.peer, _family_of(addr)), None)
        self._punched[(job.peer, _family_of(addr))] = (addr, job.label)
        while len(self._punched) > _MAX_PUNCHED:
            del self._punched[next(iter(self._punched))]
        peer = self.svc.find_peer(job.peer)
        if peer is not None and peer.is_connected and isinstance(peer.link, RelayLink):
            self._upgrade(peer, peer.link, job)

    def _upgrade(self, peer: Peer, old: RelayLink, job: _PunchJob) -> None:
        """Move a relayed connection to the punched path, in place."""
        assert job.session.address is not None
        if not old.established or old.conn.is_closed:
            return
        new = job.listener.adopt(old.conn, job.session.address, job.label)
        old.upgraded(new)
        self.svc.replace_link(peer, new)
        took = asyncio.get_running_loop().time() - old.started
        tries = f" after {old.tries} tries" if old.tries else ""
        peer.why = (
            f"{new.path} at {_fmt(job.session.address)}: upgraded in place from relayed "
            f"(through {old.via.id.short}){tries}, {took:.1f} s after the relayed connection"
        )
        logger.info("%r upgraded from relayed to %s", peer, new.path)
        # Datagrams already on their way through the relay are still fed to
        # the connection for a while; then the relay session ends.
        asyncio.get_running_loop().call_later(10.0, self.relaying.drop, old.session)

    async def _repunch(self, peer: Peer) -> None:
        """Under a relayed connection, ask the peer to punch with us again
        now and then; the first success upgrades the connection. The wait
        doubles after each try (``upgrade_retry`` to ``upgrade_retry_max``):
        a pair that cannot punch costs a few packets an hour, not a punch
        every few seconds."""
        delay = self.repunch_interval
        while True:
            await asyncio.sleep(delay)
            link = _relayed(peer)
            if link is None:
                return
            if link.orphaned is not None or any(j.peer == peer.id for j in self._jobs.values()):
                continue  # no relay to ask over, or a punch is still running
            delay = min(self.repunch_max, delay * 2)
            link.tries += 1
            session, nonce = os.urandom(8), os.urandom(16)
            cands, local = self.candidates(link.via.address)
            msg = RendezvousMessage(
                Op.REQUEST, session, self.svc.id, nonce, _rtt_us(peer), False, tuple(cands),
                local=local,
            )  # fmt: skip
            self._repunch_asks[session] = (peer.id, nonce)
            while len(self._repunch_asks) > 16:
                del self._repunch_asks[next(iter(self._repunch_asks))]
            with contextlib.suppress(CrustError):
                self.svc.send_control(peer, ControlKind.PUNCH, _encode(msg))

    def _on_punch_request(self, peer: Peer, payload: bytes) -> None:
        msg = _decode(payload)
        if msg.op is Op.REQUEST:
            if self._has_session(msg.session) or not self._admit(peer, msg):
                return
            nonce = os.urandom(16)
            via = peer.link.via.address if isinstance(peer.link, RelayLink) else None
            cands, local = self.candidates(via)
            reply = RendezvousMessage(
                Op.REPLY, msg.session, self.svc.id, nonce, _rtt_us(peer), False, tuple(cands),
                local=local,
            )  # fmt: skip
            try:
                self.svc.send_control(peer, ControlKind.PUNCH, _encode(reply))
            except CrustError:
                return
            key = punch_key(self.svc.identity, peer.id, msg.session, (msg.nonce, nonce))
            cands_p = list(msg.candidates)
            # The peer names its own candidates: unverified, charged to it.
            self._start_punch(
                peer.id, msg.session, key, cands_p, frozenset(cands_p[: msg.local]),
                responder=True, extra_us=_rtt_us(peer), charge=self.svc.charge_to(peer),
            )  # fmt: skip
        elif msg.op is Op.REPLY:
            asked = self._repunch_asks.pop(msg.session, None)
            if asked is None or asked[0] != peer.id:
                return
            key = punch_key(self.svc.identity, peer.id, msg.session, (asked[1], msg.nonce))
            cands_p = list(msg.candidates)
            self._start_punch(
                peer.id, msg.session, key, cands_p, frozenset(cands_p[: msg.local]),
                responder=False, extra_us=0, charge=self.svc.charge_to(peer),
            )  # fmt: skip

    # -- rendezvous messages ---------------------------------------------------------

    def _on_rendezvous(self, peer: Peer, payload: bytes) -> None:
        msg = _decode(payload)
        ask = self._asks.get(msg.session)
        if ask is not None and msg.peer == ask.target and msg.op is not Op.REQUEST:
            if msg.op is Op.REPLY and not ask.done.done():
                ask.done.set_result((msg, peer))
            elif msg.op is Op.ERROR:
                ask.errors.append(f"{peer.id.short}: {msg.reason}")
                if len(ask.errors) >= ask.vias and not ask.done.done():
                    ask.done.set_exception(PeerNotFound("; ".join(ask.errors)))
            return
        if msg.op is Op.INTRODUCE:
            self._on_request(peer, msg)
            return
        for to, out in self.introducer.on_message(peer.id, msg, now_us()):
            target = self.svc.find_peer(to)
            if target is not None and target.is_connected:
                with contextlib.suppress(CrustError):
                    self.svc.send_control(target, ControlKind.RENDEZVOUS, _encode(out))
        for session, a, b in self.introducer.introduced:
            self.relaying.table.open(session, a, b, now_us())
        self.introducer.introduced.clear()

    # -- policy --------------------------------------------------------------------

    def _is_connected(self, pid: PeerId) -> bool:
        p = self.svc.find_peer(pid)
        return p is not None and p.is_connected

    def _relay_allowed(self, a: PeerId, b: PeerId) -> bool:
        return self.relaying.policy.allowed

    @property
    def relays(self) -> RelayTable:
        """The sessions we relay for others."""
        return self.relaying.table

    def _tcp_responder(self) -> Responder:
        if self._responder is None:
            self._responder = self.svc.make_responder()
        return self._responder

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(_task_done(self._tasks))


def _task_done(tasks: set[asyncio.Task[Any]]) -> Callable[[asyncio.Task[Any]], None]:
    def done(t: asyncio.Task[Any]) -> None:
        tasks.discard(t)
        if not t.cancelled() and t.exception() is not None:
            logger.debug("traversal task ended: %s", t.exception())

    return done


def _syn_charge(charge: Callable[[int], bool]) -> Callable[[Address], bool]:
    return lambda addr: charge(syn_cost(addr[0], 2))


def _why(peer: Peer, via: Peer, others: list[str]) -> str:
    """``Peer.why`` of a connection by id: the path, how it came about, and
    what the attempts that lost ran into."""
    via_s = via.id.short
    if peer.path == "relayed":
        head = f"relayed through {via_s}, which introduced us"
    elif peer.path.startswith("punched-"):
        head = f"{peer.path} at {_fmt(peer.address)}, punched after a rendezvous through {via_s}"
    else:
        head = (
            f"{peer.path} to {_fmt(peer.address)}, an address the peer listens on, "
            f"learned through {via_s}"
        )
    return f"{head}; {'; '.join(others)}" if others else head


def _fmt(addr: Address) -> str:
    return f"[{addr[0]}]:{addr[1]}" if ":" in addr[0] else f"{addr[0]}:{addr[1]}"


def _relayed(peer: Peer) -> RelayLink | None:
    link = peer.link
    return link if peer.is_connected and isinstance(link, RelayLink) else None


def _tcp_link(svc: Node, responder: Responder, path: PathName) -> TcpLink:
    link = TcpLink(svc, responder=responder)
    link.path = path
    return link


def _key_of(job: _PunchJob) -> tuple[bytes, int]:
    return job.session.session, _family_of(job.listener.address)


def _encode(msg: RendezvousMessage) -> bytes:
    from crust.nat.rendezvous import encode

    return encode(msg)


def _decode(payload: bytes) -> RendezvousMessage:
    from crust.nat.rendezvous import decode_untrusted

    return decode_untrusted(payload)


def _rtt_us(peer: Peer) -> int:
    link = peer.link
    if isinstance(link, TcpLink) and link.transport is not None:
        rtt = kernel_rtt_us(link.transport.get_extra_info("socket"))
        if rtt is not None:
            return min(rtt, (1 << 32) - 1)
    try:
        return min(int(peer.stats.rtt * 1e6), (1 << 32) - 1)
    except (CrustError, AssertionError):
        return 0


# Global addresses whose routes tell our own global address of a family
# when the peer we talk through is of the other one (a dual-stack node on
# wildcard addresses, joined over IPv4, still offers its IPv6 address for
# the Happy Eyeballs race). Only a route lookup: nothing is sent there.
_GLOBAL_PROBE: dict[int, Address] = {
    socket.AF_INET6: ("2001:4860:4860::8888", 9),
    socket.AF_INET: ("192.0.2.1", 9),
}


def _local_ip_toward(addr: Address | None, family: int) -> str | None:
    """The local address the kernel would use toward ``addr`` (no packet
    is sent: connecting a UDP socket only picks a route); for ``addr`` of
    another family (or None), our address on the default route of
    ``family`` (not a link-local one)."""
    probe = addr is None or _family_of(addr) != family
    if probe:
        addr = _GLOBAL_PROBE[family]
    assert addr is not None
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        try:
            s.connect(addr)
        except OSError:
            return None
        host = str(s.getsockname()[0])
    if probe and ipaddress.ip_address(host).is_link_local:
        return None  # needs a scope: useless to a peer elsewhere
    return host
