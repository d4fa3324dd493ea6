"""The handshake driver (crust.handshake.driver), sans-IO: two drivers
talking through lists of datagrams, the clock passed in."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from crust.errors import ConnectError, HandshakeTimeout
from crust.handshake import CookiePolicy, HandshakeResult, InitiatorState
from crust.handshake.driver import (
    DialFailed,
    DriverEvent,
    Established,
    HandshakeDriver,
    Misbehaved,
    Unconfirmed,
)
from crust.identity import Identity
from crust.wire import Address

NET = "driver-test"
A_ADDR: Address = ("10.0.0.1", 1000)
B_ADDR: Address = ("10.0.0.2", 2000)
A_ID = Identity(bytes([1]) * 32)
B_ID = Identity(bytes([2]) * 32)


class FakeConn:
    """Stands in for crust._core.Connection: records the keys installed and
    lets a test say whether the peer was heard (rx_packets)."""

    def __init__(self, result: HandshakeResult, now: int) -> None:
        self.result = result
        self.now = now
        self.keys: dict[int, tuple[int, bytes, bytes, bytes, bytes]] = {}
        self.rx_packets = 0

    def set_keys(self, phase: int, aead: int, tk: bytes, ti: bytes, rk: bytes, ri: bytes) -> None:
        self.keys[phase] = (aead, tk, ti, rk, ri)

    def stats(self) -> dict[str, int]:
        return {"rx_packets": self.rx_packets}


def driver(identity: Identity, **kw: object) -> HandshakeDriver:
    return HandshakeDriver(identity, NET, make_connection=FakeConn, **kw)  # type: ignore[arg-type]


def events(d: HandshakeDriver) -> list[DriverEvent]:
    out = []
    while (ev := d.next_event()) is not None:
        out.append(ev)
    return out


Drop = Callable[[bytes, Address], bool]


def exchange(
    a: HandshakeDriver,
    b: HandshakeDriver,
    now: int,
    drop: Drop = lambda d, to: False,
    rounds: int = 10,
) -> list[tuple[bytes, Address]]:
    """Carry datagrams between a (at A_ADDR) and b (at B_ADDR) until both
    are quiet; returns everything sent (dropped ones included)."""
    sent = []
    for _ in range(rounds):
        moved = False
        for src, src_addr, dst in ((a, A_ADDR, b), (b, B_ADDR, a)):
            for data, to in src.datagrams_to_send(now):
                sent.append((data, to))
                moved = True
                if not drop(data, to):
                    dst.receive_datagram(data, src_addr, now)
        if not moved:
            break
    return sent


@pytest.mark.parametrize("ik", [False, True])
def test_two_drivers_finish_a_handshake_with_keys_installed(ik: bool) -> None:
    a, b = driver(A_ID), driver(B_ID)
    dial = a.connect(B_ADDR, B_ID.peer_id if ik else None, now=0)
    exchange(a, b, 0)
    (ea,) = events(a)
    (eb,) = events(b)
    assert isinstance(ea, Established) and isinstance(eb, Established)
    assert not ea.incoming and ea.dial is dial and ea.addr == B_ADDR
    assert eb.incoming and eb.dial is None and eb.addr == A_ADDR
    assert ea.result.peer_id == B_ID.peer_id and eb.result.peer_id == A_ID.peer_id
    assert ea.result.pattern == eb.result.pattern == ("IK" if ik else "XX")
    ca, cb = ea.connection, eb.connection
    assert isinstance(ca, FakeConn) and isinstance(cb, FakeConn)
    # Generations 0 and 1 installed, each side's tx the other's rx.
    assert set(ca.keys) == set(cb.keys) == {0, 1}
    for phase in (0, 1):
        _, tk, ti, rk, ri = ca.keys[phase]
        assert cb.keys[phase][1:] == (rk, ri, tk, ti)
    assert ca.keys[0] != ca.keys[1]
    # IK is done at once; an XX dial waits for its finish to be confirmed.
    assert len(a) == (0 if ik else 1)


def test_cookie_round_under_load() -> None:
    b = driver(B_ID, cookie_policy=CookiePolicy(rate=1.0))
    # Someone else spends the listener's one initiation a second.
    other = driver(Identity(bytes([3]) * 32))
    other.connect(B_ADDR, now=0)
    ((init, _),) = other.datagrams_to_send(0)
    b.receive_datagram(init, ("10.0.0.3", 3000), 0)
    assert b.responder is not None and b.responder.stats["cookie_replies"] == 0
    b.datagrams_to_send(0)
    events(b)

    a = driver(A_ID)
    dial = a.connect(B_ADDR, now=1)
    sent = exchange(a, b, 1)
    stats = b.responder.stats
    assert stats["cookie_replies"] == 1 and dial.initiator.stats["cookie_replies"] == 1
    # Initiation, cookie reply, initiation with mac2, response, finish.
    assert len(sent) == 5
    assert [type(e) for e in events(a)] == [Established]
    assert [type(e) for e in events(b)] == [Established]


def test_a_full_table_of_unfinished_handshakes_demands_cookies() -> None:
    b = driver(B_ID, max_pending=4)
    strangers = [driver(Identity(bytes([10 + i]) * 32)) for i in range(4)]
    kinds = []
    for i, s in enumerate(strangers):
        s.connect(B_ADDR, now=i)
        ((init, _),) = s.datagrams_to_send(i)
        b.receive_datagram(init, (f"10.1.0.{i}", 4000), i)
        ((reply, _),) = b.datagrams_to_send(i)
        kinds.append(len(reply))
    # Three XX handshakes left unfinished (3/4 of the cap): the fourth
    # stranger must prove its address first (a 78-byte cookie reply).
    assert kinds[:3] == [kinds[0]] * 3 and kinds[0] > 78 and kinds[3] == 78
    assert b.responder is not None and b.responder.stats["cookie_replies"] == 1


def test_dials_are_capped() -> None:
    a = driver(A_ID, max_dials=2)
    a.connect(B_ADDR, now=0)
    a.connect(("10.0.0.9", 9), now=0)
    with pytest.raises(ConnectError):
        a.connect(("10.0.0.8", 8), now=0)
    assert len(a) == 2 and a.dials_refused == 1


def test_a_lost_initiation_is_retransmitted_on_the_timer() -> None:
    a, b = driver(A_ID), driver(B_ID)
    a.connect(B_ADDR, B_ID.peer_id, now=0)
    sent = exchange(a, b, 0, drop=lambda d, to: True)
    assert len(sent) == 1 and events(b) == []
    t = a.get_timer()
    assert t is not None and t > 0
    a.handle_timer(t - 1)
    assert a.datagrams_to_send(t - 1) == []  # not due yet
    a.handle_timer(t)
    exchange(a, b, t)
    assert [type(e) for e in events(a)] == [Established]
    assert [type(e) for e in events(b)] == [Established]


def test_the_xx_finish_is_repeated_until_the_peer_is_heard() -> None:
    a, b = driver(A_ID), driver(B_ID)
    dial = a.connect(B_ADDR, now=0)
    finish_type = 0xC0 | 3
    exchange(a, b, 0, drop=lambda d, to: d[0] == finish_type)
    (ea,) = events(a)
    assert isinstance(ea, Established) and events(b) == []
    t = a.get_timer()
    assert t is not None
    a.handle_timer(t)
    exchange(a, b, t)
    assert [type(e) for e in events(b)] == [Established]
    assert dial.initiator.state is InitiatorState.FINISHING
    # The peer's first packet under the new keys: confirmed at the next
    # timer, with nothing more sent, and the dial is let go.
    conn = ea.connection
    assert isinstance(conn, FakeConn)
    conn.rx_packets = 1
    t2 = a.get_timer()
    assert t2 is not None
    a.handle_timer(t2)
    assert a.datagrams_to_send(t2) == [] and len(a) == 0 and events(a) == []
    assert dial.initiator.state is InitiatorState.DONE


def test_a_finish_never_confirmed_is_reported() -> None:
    a, b = driver(A_ID), driver(B_ID)
    dial = a.connect(B_ADDR, now=0)
    exchange(a, b, 0, drop=lambda d, to: d[0] == 0xC0 | 3)
    assert [type(e) for e in events(a)] == [Established]
    now = 0
    while (t := a.get_timer()) is not None:
        now = t
        a.handle_timer(now)
        exchange(a, b, now, drop=lambda d, to: True)
    (ev,) = events(a)
    assert isinstance(ev, Unconfirmed) and ev.dial is dial and len(a) == 0


def test_a_dial_nobody_answers_fails_with_a_timeout() -> None:
    a = driver(A_ID)
    dial = a.connect(B_ADDR, now=0, timeout_us=2_000_000)
    sends = 0
    while (t := a.get_timer()) is not None:
        a.handle_timer(t)
        sends += len(a.datagrams_to_send(t))
    assert sends >= 2  # retransmissions before giving up
    (ev,) = events(a)
    assert isinstance(ev, DialFailed) and ev.dial is dial
    assert isinstance(ev.error, HandshakeTimeout) and len(a) == 0


def test_a_refused_charge_ends_the_dial() -> None:
    a = driver(A_ID)
    budget = [600]

    def charge(n: int) -> bool:
        budget[0] -= n
        return budget[0] >= 0

    dial = a.connect(B_ADDR, now=0, charge=charge)
    assert len(a.datagrams_to_send(0)) == 1  # 512 bytes: within budget
    t = a.get_timer()
    assert t is not None
    a.handle_timer(t)
    assert a.datagrams_to_send(t) == []  # the second would overspend
    (ev,) = events(a)
    assert isinstance(ev, DialFailed) and ev.dial is dial
    assert isinstance(ev.error, ConnectError) and len(a) == 0


def test_junk_is_reported_against_its_source_and_admit_gates_strangers() -> None:
    closing = [False]
    b = driver(B_ID, admit=lambda addr: not closing[0])
    a = driver(A_ID)
    a.connect(B_ADDR, now=0)
    ((init, _),) = a.datagrams_to_send(0)
    bad = init[:-32] + bytes(16) + init[-16:]  # mac1 broken
    b.receive_datagram(bad, A_ADDR, 0)
    assert b.datagrams_to_send(0) == []
    assert [(type(e), getattr(e, "addr", None)) for e in events(b)] == [(Misbehaved, A_ADDR)]
    closing[0] = True
    b.receive_datagram(init, A_ADDR, 0)
    assert b.datagrams_to_send(0) == [] and events(b) == []
    assert b.responder is not None and b.responder.stats["datagrams"] == 1


def test_reliable_carrier_sends_the_finish_once_and_lets_go() -> None:
    a, b = driver(A_ID, reliable=True, accept=False), driver(B_ID, reliable=True)
    assert a.responder is None
    dial = a.connect(B_ADDR, now=0)
    sent = exchange(a, b, 0)
    assert len(sent) == 3  # initiation, response, finish
    assert len(a) == 0 and a.get_timer() is None
    assert dial.initiator.state is InitiatorState.DONE
    assert [type(e) for e in events(a)] == [Established]
    assert [type(e) for e in events(b)] == [Established]


def test_a_dial_only_driver_ignores_strangers_and_abandon_is_silent() -> None:
    a = driver(A_ID, accept=False)
    stranger = driver(B_ID)
    stranger.connect(A_ADDR, now=0)
    ((init, _),) = stranger.datagrams_to_send(0)
    a.receive_datagram(init, B_ADDR, 0)
    assert a.datagrams_to_send(0) == [] and events(a) == []
    dial = a.connect(B_ADDR, now=0)
    a.abandon(dial)
    assert a.datagrams_to_send(0) == [] and a.get_timer() is None and events(a) == []
