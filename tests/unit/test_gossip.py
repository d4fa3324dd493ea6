"""Contact gossip (sans-IO): signed, bounded, rate-limited contact lists."""

from __future__ import annotations

import random

import pytest

from crust.discovery.gossip import (
    MAX_CONTACTS,
    MAX_GOSSIP_SIZE,
    GossipReceiver,
    encode_gossip,
    parse_gossip_untrusted,
)
from crust.identity import Identity, PeerId

NET = "gossip-test"
ALICE = Identity.generate()
OTHERS = [Identity.generate().peer_id for _ in range(40)]


def _contacts(n: int, eps: int = 1) -> list[tuple[PeerId, list[tuple[str, int]]]]:
    return [(OTHERS[i], [(f"10.0.{i}.{j + 1}", 4000 + j) for j in range(eps)]) for i in range(n)]


def test_round_trip() -> None:
    payload = encode_gossip(ALICE, NET, 7, [("0.0.0.0", 5000)], _contacts(3, 2))
    msg = parse_gossip_untrusted(payload, ALICE.peer_id, NET)
    assert msg.sequence == 7
    assert msg.endpoints == [("0.0.0.0", 5000)]
    assert [pid for pid, _ in msg.contacts] == OTHERS[:3]
    assert msg.contacts[2][1] == [("10.0.2.1", 4000), ("10.0.2.2", 4001)]


def test_lists_are_cut_to_the_limits() -> None:
    eps = [(f"2001:db8::{i}", 1000 + i) for i in range(20)]
    payload = encode_gossip(ALICE, NET, 1, eps, _contacts(40, 10))
    assert len(payload) <= MAX_GOSSIP_SIZE
    msg = parse_gossip_untrusted(payload, ALICE.peer_id, NET)
    assert len(msg.contacts) == MAX_CONTACTS
    assert len(msg.endpoints) == 8
    assert all(len(e) == 4 for _, e in msg.contacts)


def test_wrong_sender_network_signature_and_junk_are_errors() -> None:
    payload = encode_gossip(ALICE, NET, 1, [("10.0.0.1", 1)], _contacts(2))
    with pytest.raises(ValueError, match="someone other"):
        parse_gossip_untrusted(payload, OTHERS[0], NET)
    with pytest.raises(ValueError, match="another network"):
        parse_gossip_untrusted(payload, ALICE.peer_id, "elsewhere")
    tampered = bytearray(payload)
    tampered[60] ^= 1
    with pytest.raises(ValueError, match="signature"):
        parse_gossip_untrusted(bytes(tampered), ALICE.peer_id, NET)
    with pytest.raises(ValueError, match="out of range"):
        parse_gossip_untrusted(b"\x01" * 10, ALICE.peer_id, NET)
    rng = random.Random(3)
    for _ in range(2000):
        data = bytearray(payload)
        for _ in range(rng.randint(1, 3)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        del data[rng.randrange(len(data) + 1) :]
        try:
            parse_gossip_untrusted(bytes(data), ALICE.peer_id, NET)
        except ValueError:
            pass


def test_receiver_rate_limits_and_drops_stale() -> None:
    rx = GossipReceiver(NET, min_interval=1.0, burst=3)
    msgs = [encode_gossip(ALICE, NET, seq, [("10.0.0.1", 1)], []) for seq in range(1, 11)]
    got = [rx.receive(ALICE.peer_id, m, 0.0) for m in msgs]
    assert sum(g is not None for g in got) == 3
    assert rx.stats["rate_limited"] == 7
    assert rx.receive(ALICE.peer_id, msgs[0], 5.0) is None  # replayed: stale
    assert rx.stats["stale"] == 1
    assert rx.receive(ALICE.peer_id, msgs[9], 5.0) is not None
    rx.forget(ALICE.peer_id)
    assert rx.receive(ALICE.peer_id, msgs[0], 5.0) is not None  # a new connection
