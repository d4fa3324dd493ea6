"""Sans-IO NAT traversal: punch sessions against each other (with loss, a
simulated cone NAT, forgeries), the rendezvous codec and introducer, the
relay table and its cap."""

from __future__ import annotations

import os
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crust.handshake import long_header_prefix
from crust.identity import Identity
from crust.nat import relay, rendezvous
from crust.nat.punch import PACKET_LEN, PunchConfig, PunchSession, PunchState, is_punch
from crust.nat.rendezvous import Introducer, Op, RendezvousMessage

PREFIX = long_header_prefix("test")
KEY = bytes(range(32))
SESSION = b"S" * 8

Addr = tuple[str, int]


def pair(
    cands_a: list[Addr], cands_b: list[Addr], *, key_b: bytes = KEY, **cfg: int
) -> tuple[PunchSession, PunchSession]:
    config = PunchConfig(**cfg)
    a = PunchSession(
        key=KEY,
        session=SESSION,
        responder=False,
        candidates=cands_a,
        prefix=PREFIX,
        now=0,
        config=config,
        rng=random.Random(1),
    )
    b = PunchSession(
        key=key_b,
        session=SESSION,
        responder=True,
        candidates=cands_b,
        prefix=PREFIX,
        now=0,
        config=config,
        rng=random.Random(2),
    )
    return a, b


def run_pair(
    a: PunchSession,
    b: PunchSession,
    addr_a: Addr,
    addr_b: Addr,
    *,
    loss: float = 0.0,
    seed: int = 0,
    gate_a: set[Addr] | None = None,
) -> int:
    """Step both sessions on a 1 ms grid, delivering each packet 10 ms later
    when it is addressed to the other's address. ``gate_a``: a cone NAT in
    front of A that admits packets from addresses A has sent to (full TTL)."""
    rng = random.Random(seed)
    wire: list[tuple[int, bytes, Addr, Addr]] = []
    now = 0
    while now < 5_000_000:
        for me, my_addr in ((a, addr_a), (b, addr_b)):
            for data, to, ttl in me.datagrams_to_send(now):
                assert len(data) == PACKET_LEN
                if me is a and gate_a is not None and ttl is None:
                    gate_a.add(to)
                if rng.random() >= loss and (ttl is None or ttl > 1):
                    wire.append((now + 10_000, data, my_addr, to))
            t = me.get_timer()
            if t is not None and t <= now:
                me.handle_timer(now)
        due = [w for w in wire if w[0] <= now]
        wire = [w for w in wire if w[0] > now]
        for _, data, src, dst in due:
            if dst == addr_a and (gate_a is None or src in gate_a):
                a.receive_datagram(data, src, now)
            elif dst == addr_b:
                b.receive_datagram(data, src, now)
        if a.state is not PunchState.PUNCHING and b.state is not PunchState.PUNCHING:
            break
        now += 1_000
    return now


def test_punch_succeeds_both_sides_and_names_the_address() -> None:
    addr_a, addr_b = ("198.51.100.1", 4000), ("203.0.113.9", 5000)
    a, b = pair([("10.0.0.2", 5000), addr_b], [addr_a])
    run_pair(a, b, addr_a, addr_b)
    assert a.state is PunchState.SUCCEEDED and b.state is PunchState.SUCCEEDED
    assert a.address == addr_b and b.address == addr_a
    assert a.succeeded_at is not None and a.succeeded_at < 200_000


def test_punch_through_a_cone_nat_and_heavy_loss() -> None:
    addr_a, addr_b = ("198.51.100.1", 4000), ("203.0.113.9", 5000)
    wins = 0
    for seed in range(20):
        a, b = pair([addr_b], [addr_a], low_ttl=1)
        run_pair(a, b, addr_a, addr_b, loss=0.3, seed=seed, gate_a=set())
        wins += a.state is PunchState.SUCCEEDED and b.state is PunchState.SUCCEEDED
    assert wins == 20


def test_low_ttl_first_then_full() -> None:
    a, _ = pair([("192.0.2.1", 1)], [("192.0.2.2", 2)], low_ttl=3, low_ttl_us=100_000)
    first = a.datagrams_to_send(0)
    assert [ttl for _, _, ttl in first] == [3]
    later = a.datagrams_to_send(150_000)
    assert [ttl for _, _, ttl in later] == [None]


def test_wrong_key_or_session_never_counts_and_times_out() -> None:
    addr_a, addr_b = ("198.51.100.1", 4000), ("203.0.113.9", 5000)
    a, b = pair([addr_b], [addr_a], key_b=bytes(32), timeout_us=500_000)
    run_pair(a, b, addr_a, addr_b)
    assert a.state is PunchState.FAILED and b.state is PunchState.FAILED
    assert a.rejected > 0 and b.rejected > 0
    assert a.error and "within 0.5 s" in a.error


def test_own_packets_reflected_do_not_count() -> None:
    a, _ = pair([("192.0.2.1", 1)], [("192.0.2.2", 2)])
    for data, _, _ in a.datagrams_to_send(0):
        assert not a.receive_datagram(data, ("192.0.2.1", 1), 1)
    assert a.state is PunchState.PUNCHING


@given(st.binary(max_size=64))
@settings(max_examples=300, deadline=None)
def test_punch_junk_is_rejected(data: bytes) -> None:
    a, _ = pair([("192.0.2.1", 1)], [("192.0.2.2", 2)])
    assert not a.receive_datagram(data, ("192.0.2.1", 1), 0)
    assert a.state is PunchState.PUNCHING


def test_punch_config_and_session_validation() -> None:
    with pytest.raises(ValueError, match="interval_us"):
        PunchConfig(interval_us=0)
    with pytest.raises(ValueError, match="candidate"):
        pair([], [("192.0.2.2", 2)])
    with pytest.raises(ValueError, match="punch key"):
        PunchSession(
            key=b"x",
            session=SESSION,
            responder=False,
            candidates=[("192.0.2.1", 1)],
            prefix=PREFIX,
            now=0,
        )
    assert not is_punch(b"\xc6" + bytes(PACKET_LEN))


# -- rendezvous -------------------------------------------------------------


def test_punch_key_is_shared_and_per_session() -> None:
    a, b, m = Identity.generate(), Identity.generate(), Identity.generate()
    n1, n2 = os.urandom(16), os.urandom(16)
    k_ab = rendezvous.punch_key(a, b.peer_id, SESSION, (n1, n2))
    assert k_ab == rendezvous.punch_key(b, a.peer_id, SESSION, (n1, n2))
    assert k_ab != rendezvous.punch_key(m, b.peer_id, SESSION, (n1, n2))
    assert k_ab != rendezvous.punch_key(a, b.peer_id, b"T" * 8, (n1, n2))


def test_rendezvous_roundtrip() -> None:
    pid = Identity.generate().peer_id
    msg = RendezvousMessage(
        Op.REQUEST,
        SESSION,
        pid,
        os.urandom(16),
        12345,
        True,
        (("192.0.2.1", 4000), ("2001:db8::1", 5000)),
    )
    assert rendezvous.decode_untrusted(rendezvous.encode(msg)) == msg
    err = RendezvousMessage(Op.ERROR, SESSION, pid, reason="x" * 500)
    back = rendezvous.decode_untrusted(rendezvous.encode(err))
    assert back.reason == "x" * rendezvous.MAX_REASON


def test_rendezvous_drops_non_ip_candidates() -> None:
    pid = Identity.generate().peer_id
    msg = RendezvousMessage(Op.REPLY, SESSION, pid, candidates=(("localhost", 1), ("0.0.0.0", 9)))
    assert rendezvous.decode_untrusted(rendezvous.encode(msg)).candidates == ()


@given(st.binary(max_size=200))
@settings(max_examples=500, deadline=None)
def test_rendezvous_junk_raises_only_malformed(data: bytes) -> None:
    try:
        rendezvous.decode_untrusted(data)
    except rendezvous.MalformedRendezvous:
        pass


def test_introducer_forwards_request_and_reply_only_between_the_pair() -> None:
    a, b, c = (Identity.generate().peer_id for _ in range(3))
    intro = Introducer(lambda p: p in (a, b, c), lambda x, y: True)
    req = RendezvousMessage(Op.REQUEST, SESSION, b, os.urandom(16), 0, False, (("192.0.2.1", 1),))
    [(to, fwd)] = intro.on_message(a, req, 0)
    assert to == b and fwd.peer == a and fwd.relay and fwd.op is Op.INTRODUCE
    # A retransmitted request does not go out twice.
    assert intro.on_message(a, req, 1) == []
    rep = RendezvousMessage(Op.REPLY, SESSION, a, os.urandom(16))
    # c cannot answer a request addressed to b.
    assert intro.on_message(c, rep, 2) == []
    [(to, back)] = intro.on_message(b, rep, 3)
    assert to == a and back.peer == b
    assert intro.introduced == [(SESSION, a, b)]
    assert intro.on_message(b, rep, 4) == []  # answered once only


def test_introducer_refuses_unknown_target_and_expires() -> None:
    a, b, x = (Identity.generate().peer_id for _ in range(3))
    intro = Introducer(lambda p: p in (a, b), lambda x, y: False, ttl_us=1000)
    [(to, err)] = intro.on_message(a, RendezvousMessage(Op.REQUEST, SESSION, x), 0)
    assert to == a and err.op is Op.ERROR and "not connected" in err.reason
    intro.on_message(a, RendezvousMessage(Op.REQUEST, SESSION, b), 0)
    assert intro.on_message(b, RendezvousMessage(Op.REPLY, SESSION, a), 5000) == []


# -- relay --------------------------------------------------------------------


def test_relay_codec() -> None:
    data = relay.encode(relay.RelayOp.DATA, SESSION, b"ciphertext")
    assert relay.decode_untrusted(data) == (relay.RelayOp.DATA, SESSION, b"ciphertext")
    with pytest.raises(relay.MalformedRelay):
        relay.decode_untrusted(b"\x09" + SESSION)
    with pytest.raises(relay.MalformedRelay):
        relay.decode_untrusted(b"\x01" + SESSION + bytes(relay.MAX_DATAGRAM + 1))
    with pytest.raises(ValueError, match="exceeds"):
        relay.encode(relay.RelayOp.DATA, SESSION, bytes(relay.MAX_DATAGRAM + 1))


def test_relay_table_forwards_between_the_pair_only() -> None:
    a, b, c = (Identity.generate().peer_id for _ in range(3))
    table = relay.RelayTable(relay.RelayPolicy())
    assert table.open(SESSION, a, b, 0)
    assert table.forward(a, SESSION, 100, 1) == b
    assert table.forward(b, SESSION, 100, 2) == a
    assert table.forward(c, SESSION, 100, 3) is None
    assert table.forward(a, b"?" * 8, 100, 3) is None
    assert table.dropped_unknown == 2
    assert table.close_peer(b) == [(SESSION, a)]
    assert table.forward(a, SESSION, 100, 4) is None


def test_relay_never_opens_nothing() -> None:
    a, b = (Identity.generate().peer_id for _ in range(2))
    assert not relay.RelayTable(relay.RelayPolicy(mode="never")).open(SESSION, a, b, 0)
    with pytest.raises(ValueError, match="mode"):
        relay.RelayPolicy(mode="sometimes")


def test_relay_cap_holds_the_rate() -> None:
    a, b = (Identity.generate().peer_id for _ in range(2))
    cap = 100_000
    table = relay.RelayTable(relay.RelayPolicy(cap=cap, burst=10_000))
    table.open(SESSION, a, b, 0)
    passed = 0
    # Offer 10x the cap for 2 s, 1200-byte datagrams every 1.2 ms.
    for i in range(1, 1667):
        if table.forward(a, SESSION, 1200, i * 1200) is not None:
            passed += 1200
    assert 2 * cap <= passed <= 2 * cap + 10_000 + 1200
    assert table.dropped_cap > 0


def test_relay_sessions_expire_and_are_bounded() -> None:
    ids = [Identity.generate().peer_id for _ in range(4)]
    table = relay.RelayTable(relay.RelayPolicy(max_sessions=2, idle_us=1000))
    for i in range(3):
        table.open(bytes([i]) * 8, ids[0], ids[i + 1], 0)
    assert len(table) == 2
    table.expire(5000)
    assert len(table) == 0
