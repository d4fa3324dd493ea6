"""Automatic key updates (docs/design/0008-rekey.md) under a real AEAD.

1 GiB goes from one engine connection to another over a lossy, reordering
simulated path with a key update every 20,000 packets, so dozens of updates
happen mid-transfer. Each side installs the next generation's keys when the
engine asks (EV_KEYS_NEEDED), derived with a BLAKE2b ratchet as the
handshake layer does. The received stream must hash to what was sent:
nothing lost, duplicated or reordered across any key phase.
"""

from __future__ import annotations

import hashlib
import os
import random
import time
from typing import Any

from crust import _core
from crust.testing import ConnectionNode, LinkConfig, Network, connection_pair

GIB = 1 << 30
MSG = 1 << 20  # message size: few Python calls per byte moved
REKEY_PACKETS = 20_000


def _aead() -> int:
    if _core.aead_available(_core.AEAD_AES256_GCM):
        return _core.AEAD_AES256_GCM
    return _core.AEAD_CHACHA20_POLY1305


def _keys(direction: bytes, generation: int) -> tuple[bytes, bytes]:
    """Key and IV of one direction and generation: generation n + 1's key is
    BLAKE2b of generation n's, so both ends derive any generation alike."""
    key = hashlib.blake2b(direction, digest_size=32, person=b"crust-test-k0").digest()
    for _ in range(generation):
        key = hashlib.blake2b(key, digest_size=32, person=b"crust-ratchet").digest()
    iv = hashlib.blake2b(key, digest_size=12, person=b"crust-iv").digest()
    return key, iv


class RekeyingNode(ConnectionNode):
    """A ConnectionNode that answers EV_KEYS_NEEDED at once, as the
    handshake layer does, and counts key updates."""

    def __init__(self, node: ConnectionNode, tx: bytes, rx: bytes, aead: int) -> None:
        super().__init__(node.conn, node.peer, on_message=node.on_message)
        self.tx, self.rx, self.aead = tx, rx, aead
        self.updates: list[tuple[int, int, int]] = []  # (phase, generation, reason)
        self.installed: list[int] = []
        for generation in (0, 1):
            self.install(generation & 1, generation)

    def install(self, slot: int, generation: int) -> None:
        tx_key, tx_iv = _keys(self.tx, generation)
        rx_key, rx_iv = _keys(self.rx, generation)
        self.conn.set_keys(slot, self.aead, tx_key, tx_iv, rx_key, rx_iv)
        self.installed.append(generation)

    def _handle_key_events(self) -> None:
        if not self.events:
            return
        for ev_type, prio, _payload, _msg_id, reason, code in self.events:
            if ev_type == _core.EV_KEYS_NEEDED:
                self.install(prio, code)
            elif ev_type == _core.EV_KEY_UPDATE:
                self.updates.append((prio, code, reason))
        self.events.clear()

    def receive_datagram(self, data: bytes, addr: Any, now: int) -> None:
        super().receive_datagram(data, addr, now)
        self._handle_key_events()

    def handle_timer(self, now: int) -> None:
        super().handle_timer(now)
        self._handle_key_events()


def _transfer(total: int, seed: int = 7) -> dict[str, Any]:
    net = Network(seed=seed)
    path = LinkConfig(
        delay_us=5_000,
        bandwidth_bps=400_000_000,
        loss=0.005,
        reorder=0.01,
        reorder_delay_us=2_000,
    )
    net.connect("a", "b", path)
    config = _core.Config(
        rekey_packets=REKEY_PACKETS, rekey_interval_us=0, idle_timeout_us=0, keepalive_us=0,
        lost_timeout_us=0,
    )
    aead = _aead()
    received = hashlib.sha256()
    got = {"bytes": 0, "msgs": 0}

    def on_message(_prio: int, data: bytes, _now: int) -> None:
        received.update(data)
        got["bytes"] += len(data)
        got["msgs"] += 1

    plain_a, plain_b = connection_pair(net, ("a", 1), ("b", 1), config=config, aead=aead, seed=seed)
    plain_b.on_message = on_message
    # Replace the plain nodes by rekeying ones on the same connections.
    a = RekeyingNode(plain_a, b"a->b", b"b->a", aead)
    b = RekeyingNode(plain_b, b"b->a", b"a->b", aead)
    net.remove_node(("a", 1))
    net.remove_node(("b", 1))
    net.add_node(("a", 1), a)
    net.add_node(("b", 1), b)

    block = random.Random(seed).randbytes(MSG)
    sent = hashlib.sha256()
    count = total // MSG
    queued = 0

    def top_up() -> bool:
        # Keep a few messages ahead of the connection, never 1 GiB in memory.
        nonlocal queued
        while queued < count and a.pending < 4:
            msg = queued.to_bytes(8, "big") + block[8:]
            sent.update(msg)
            a.send(msg)
            queued += 1
        return got["msgs"] >= count

    start = time.perf_counter()
    net.run(until=3_600_000_000, stop=top_up)
    wall = time.perf_counter() - start
    return {
        "wall": wall,
        "virtual_s": net.now / 1e6,
        "count": count,
        "got": got,
        "match": received.digest() == sent.digest(),
        "a": a,
        "b": b,
        "stats_a": a.conn.stats(),
        "stats_b": b.conn.stats(),
        "link": net.stats("a", "b"),
    }


def test_one_gib_with_dozens_of_key_updates() -> None:
    total = int(os.environ.get("CRUST_REKEY_BYTES", GIB))
    r = _transfer(total)
    sa, sb = r["stats_a"], r["stats_b"]
    link = r["link"]
    print(
        f"{total >> 20} MiB in {r['wall']:.1f} s wall ({r['virtual_s']:.1f} s virtual): "
        f"{sa['key_updates']} key updates, {sa['tx_packets']} packets, "
        f"{link.dropped_loss} lost and {link.reordered} reordered on the path, "
        f"{sb['rx_dropped_decrypt']} decrypt drops at b"
    )
    assert r["got"]["msgs"] == r["count"]
    assert r["got"]["bytes"] == r["count"] * MSG
    assert r["match"], "received stream differs from the sent one"
    # An update every REKEY_PACKETS packets from a: both ends follow each.
    expected = sa["tx_packets"] // REKEY_PACKETS
    assert expected - 2 <= sa["key_updates"] <= expected + 1
    if total >= GIB:
        assert sa["key_updates"] >= 24
    assert abs(sa["key_updates"] - sb["key_updates"]) <= 1
    assert [g for _, g, _ in r["a"].updates] == list(range(1, sa["key_updates"] + 1))
    # b only acknowledges, so a starts every update; b follows.
    assert {reason for *_, reason in r["a"].updates} == {1}
    assert {reason for *_, reason in r["b"].updates} == {2}
    # Old keys are wiped and the next generation asked for after each one.
    assert r["b"].installed[2:] == list(range(2, len(r["b"].installed)))
    # At most one packet per update is lost to a peer still holding its old
    # keys (it has no RTT sample, so a long PTO); never a stall.
    assert sb["rx_dropped_decrypt"] <= sb["key_updates"]
    assert sa["rx_dropped_decrypt"] == 0
