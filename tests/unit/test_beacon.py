"""The LAN beacon protocol (sans-IO): discovery, signatures, foreign
networks, no amplification, rate limits, expiry."""

from __future__ import annotations

import itertools
import random

import pytest

from crust.discovery import beacon as bmod
from crust.discovery.beacon import QUERY_SIZE, Beacon, network_tag, parse_untrusted
from crust.discovery.endpoints import decode_endpoints, encode_endpoints
from crust.events import LanPeerFound
from crust.identity import Identity

A_ADDR = ("10.0.0.2", 40001)
B_ADDR = ("10.0.0.3", 40002)


def _beacon(network: str = "lan-test", **kw: object) -> Beacon:
    kw.setdefault("endpoints", [("10.0.0.9", 5000)])
    return Beacon(Identity.generate(), network, now=0.0, **kw)  # type: ignore[arg-type]


def _replies(b: Beacon, now: float) -> list[tuple[bytes, tuple[str, int]]]:
    """The unicast datagrams due (its own scheduled queries left out)."""
    return [(d, dest) for d, dest in b.datagrams_to_send(now) if dest is not None]


def _events(b: Beacon) -> list[LanPeerFound]:
    out = []
    while (ev := b.next_event()) is not None:
        out.append(ev)
    return out


def test_query_and_reply_make_both_sides_known() -> None:
    a = _beacon(endpoints=[("10.0.0.2", 7000), ("0.0.0.0", 7001)])
    b = _beacon(endpoints=[("10.0.0.3", 8000)])
    out = a.datagrams_to_send(0.0)
    assert len(out) == 1 and out[0][1] is None  # a broadcast query
    query = out[0][0]
    assert len(query) == QUERY_SIZE
    b.receive_datagram(query, A_ADDR, 0.01)
    [found_a] = _events(b)
    assert found_a.peer_id == a.identity.peer_id
    # The unspecified endpoint means "where the beacon came from".
    assert found_a.endpoints == (("10.0.0.2", 7000), ("10.0.0.2", 7001))
    replies = _replies(b, 0.01)
    assert [dest for _, dest in replies] == [A_ADDR]
    a.receive_datagram(replies[0][0], B_ADDR, 0.02)
    [found_b] = _events(a)
    assert found_b == LanPeerFound(b.identity.peer_id, (("10.0.0.3", 8000),))
    assert a.datagrams_to_send(0.02) == []  # a reply is never answered
    assert [p.peer_id for p in a.peers(0.03)] == [b.identity.peer_id]
    heard = a.lan_peer(b.identity.peer_id)
    assert heard is not None and heard.endpoints == (("10.0.0.3", 8000),)
    assert a.lan_peer(a.identity.peer_id) is None
    # Heard again with the same endpoints: no new event.
    b.receive_datagram(query, A_ADDR, 0.5)
    assert _events(b) == []


def test_schedule_is_quick_then_steady() -> None:
    b = _beacon(interval=5.0)
    sent = []
    t = 0.0
    while t < 30.0:
        b.handle_timer(t)
        sent += [t for _ in b.datagrams_to_send(t)]
        timer = b.get_timer()
        assert timer is not None and timer > t
        t = timer
    assert sent[:3] == [0.0, 0.3, 1.0]
    gaps = [y - x for x, y in itertools.pairwise(sent[3:])]
    assert gaps and all(4.5 <= g <= 5.5 for g in gaps)


def test_forged_foreign_own_and_malformed_are_counted_not_believed() -> None:
    a = _beacon()
    b = _beacon()
    query = a.datagrams_to_send(0.0)[0][0]
    forged = bytearray(query)
    forged[60] ^= 1  # inside the signed endpoints/padding
    b.receive_datagram(bytes(forged), A_ADDR, 0.0)
    other_key = bytearray(query)
    other_key[14:46] = bytes(Identity.generate().peer_id)  # signature no longer matches
    b.receive_datagram(bytes(other_key), A_ADDR, 0.0)
    foreign = _beacon(network="another").datagrams_to_send(0.0)[0][0]
    b.receive_datagram(foreign, A_ADDR, 0.0)
    b.receive_datagram(b.datagrams_to_send(0.0)[0][0], A_ADDR, 0.0)  # own, looped back
    for junk in (b"", b"CRB\x01", query[:100], query + b"x" * 1000, b"\x00" * 300):
        b.receive_datagram(junk, A_ADDR, 0.0)
    assert _events(b) == []
    assert _replies(b, 0.0) == []
    assert b.stats["malformed"] == 2 + 5
    assert b.stats["foreign"] == 1
    assert b.stats["own"] == 1
    assert b.stats["replies_sent"] == 0


def test_parser_rejects_each_defect_by_name() -> None:
    a = _beacon()
    query = a.datagrams_to_send(0.0)[0][0]
    assert parse_untrusted(query).peer_id == a.identity.peer_id
    bad_type = bytearray(query)
    bad_type[4] = 9
    with pytest.raises(ValueError, match="unknown type"):
        parse_untrusted(bytes(bad_type))
    with pytest.raises(ValueError, match="magic"):
        parse_untrusted(b"XXXX" + query[4:])
    with pytest.raises(ValueError, match="size"):
        parse_untrusted(query[:50])
    too_many = bytearray(query)
    too_many[54] = 200
    with pytest.raises(ValueError, match="limit"):
        parse_untrusted(bytes(too_many))


def test_reply_is_never_larger_than_the_query() -> None:
    """A replier with many long endpoints answers a short query with a
    trimmed reply (or none): the beacon cannot amplify."""
    many = [(f"2001:db8::{i}", 9000 + i) for i in range(8)]
    b = _beacon(endpoints=many)
    a = _beacon(endpoints=[])
    full = a.datagrams_to_send(0.0)[0][0]
    b.receive_datagram(full, A_ADDR, 0.0)
    [(reply, _)] = _replies(b, 0.0)
    assert len(reply) <= len(full)
    assert len(parse_untrusted(reply).endpoints) == 8  # the padding made room for all
    # A minimal (unpadded) query, still validly signed: the reply shrinks.
    short = a._build(bmod.QUERY, b"n" * 8, [], 0)
    b2 = _beacon(endpoints=many)
    b2.receive_datagram(short, A_ADDR, 0.0)
    out = _replies(b2, 0.0)
    assert all(len(d) <= len(short) for d, _ in out)
    assert out and parse_untrusted(out[0][0]).endpoints == []


def test_replies_are_rate_limited_per_source_and_in_total() -> None:
    a = _beacon()
    b = _beacon(reply_rate=2.0, total_reply_rate=10.0)
    query = a.datagrams_to_send(0.0)[0][0]
    for i in range(100):
        b.receive_datagram(query, A_ADDR, i * 0.001)  # 100 in 0.1 s, one source
    assert len(_replies(b, 0.1)) == 4  # the burst (2 x rate)
    assert b.stats["rate_limited"] == 96
    c = _beacon(reply_rate=2.0, total_reply_rate=10.0)
    for i in range(100):
        c.receive_datagram(query, (f"10.1.{i // 250}.{i % 250}", 4000), 0.2)
    assert len(_replies(c, 0.2)) == 10  # the global bucket


def test_signature_checks_are_budgeted() -> None:
    a = _beacon()
    query = a.datagrams_to_send(0.0)[0][0]
    b = _beacon(verify_rate=20.0)
    for _ in range(50):
        b.receive_datagram(query, A_ADDR, 0.0)
    assert b.stats["rate_limited"] >= 30


def test_peers_expire() -> None:
    a = _beacon()
    b = _beacon(interval=1.0)
    b.receive_datagram(a.datagrams_to_send(0.0)[0][0], A_ADDR, 0.0)
    assert len(b.peers(3.0)) == 1
    assert b.peers(3.6) == []
    b.receive_datagram(a.datagrams_to_send(10.0)[0][0], A_ADDR, 10.0)
    assert len(_events(b)) == 2  # found again after expiring


def test_network_tag_hides_the_name() -> None:
    tag = network_tag("secret-net")
    assert len(tag) == 8 and b"secret" not in tag
    assert tag != network_tag("secret-net2")


def test_endpoint_codec_round_trip_and_errors() -> None:
    eps = [("10.0.0.1", 1), ("::1", 65535), ("fe80::1", 80)]
    data = encode_endpoints(eps)
    assert decode_endpoints(data, 0, 8) == (eps, len(data))
    with pytest.raises(ValueError, match="limit"):
        decode_endpoints(data, 0, 2)
    with pytest.raises(ValueError, match="truncated"):
        decode_endpoints(data[:-1], 0, 8)
    with pytest.raises(ValueError, match="family"):
        decode_endpoints(b"\x01\x05" + bytes(6), 0, 8)
    with pytest.raises(ValueError, match="port"):
        encode_endpoints([("10.0.0.1", 0)])


def test_random_mutations_never_raise() -> None:
    rng = random.Random(7)
    a = _beacon()
    b = _beacon()
    seeds = [d for d, _ in a.datagrams_to_send(0.0)]
    b.receive_datagram(seeds[0], A_ADDR, 0.0)
    seeds += [d for d, _ in b.datagrams_to_send(0.0)]
    for i in range(3000):
        data = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 4)):
            op = rng.random()
            if op < 0.5 and data:
                data[rng.randrange(len(data))] = rng.randrange(256)
            elif op < 0.75:
                del data[rng.randrange(len(data) + 1) :]
            else:
                data += rng.randbytes(rng.randint(1, 64))
        b.receive_datagram(bytes(data), A_ADDR, i * 0.01)
