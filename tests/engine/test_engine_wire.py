"""The engine through its Python binding: hostile and damaged datagrams,
message semantics (priorities, stale drops, backpressure, close), key
phases and path validation."""

from __future__ import annotations

import hashlib
import random

import numpy as np
import pytest

from crust import _core
from crust.errors import ConnectionClosed, MessageTooLarge, WouldBlock
from crust.testing import LinkConfig, Network, connection_pair

AEADS = [_core.AEAD_NULL, _core.AEAD_CHACHA20_POLY1305]
if _core.aead_available(_core.AEAD_AES256_GCM):
    AEADS.append(_core.AEAD_AES256_GCM)

CID_A, CID_B = b"A" * 8, b"B" * 8


def raw_pair(
    aead: int = _core.AEAD_CHACHA20_POLY1305, config: _core.Config | None = None
) -> tuple[_core.Connection, _core.Connection]:
    a = _core.Connection(CID_A, CID_B, 0, config)
    b = _core.Connection(CID_B, CID_A, 0, config)
    k1, k2, iv1, iv2 = b"\x01" * 32, b"\x02" * 32, b"\x03" * 12, b"\x04" * 12
    a.set_keys(0, aead, k1, iv1, k2, iv2)
    b.set_keys(0, aead, k2, iv2, k1, iv1)
    return a, b


def pump(a: _core.Connection, b: _core.Connection, now: int, rounds: int = 50) -> None:
    """Exchange datagrams over a perfect zero-delay link until quiet."""
    for _ in range(rounds):
        moved = False
        for src, dst in ((a, b), (b, a)):
            for d in src.datagrams_to_send(now):
                dst.receive_datagram(d, now)
                moved = True
        if not moved:
            return


def messages(conn: _core.Connection) -> list[tuple[int, bytes]]:
    return [
        (ev[1], ev[2])
        for ev in conn.poll_events()
        if ev[0] == _core.EV_MESSAGE and ev[2] is not None
    ]


@pytest.mark.parametrize("aead", AEADS)
def test_hello_both_ways(aead: int) -> None:
    a, b = raw_pair(aead)
    a.send(b"hello from a", now=0)
    b.send(b"hello from b", 1, now=0)
    pump(a, b, 0)
    assert messages(b) == [(0, b"hello from a")]
    assert messages(a) == [(1, b"hello from b")]


def test_any_buffer_is_accepted_and_copied() -> None:
    a, b = raw_pair()
    arr = np.arange(10_000, dtype=np.uint32)
    a.send(arr, now=0)
    a.send(memoryview(bytearray(b"xyz")), now=0)
    arr[:] = 0  # the engine copied: later changes are not sent
    for t in range(0, 2_000_000, 10_000):
        pump(a, b, t)
    got = messages(b)
    assert got[0][1] == np.arange(10_000, dtype=np.uint32).tobytes()
    assert got[1][1] == b"xyz"


def test_damaged_datagrams_are_dropped_and_counted() -> None:
    a, b = raw_pair()
    a.send(b"payload", now=0)
    (pkt,) = a.datagrams_to_send(0)
    rejected = 0
    for i in range(len(pkt)):
        for bit in range(8):
            bad = bytearray(pkt)
            bad[i] ^= 1 << bit
            rejected += b.receive_datagram(bytes(bad), 1) < 0
    assert rejected == 8 * len(pkt)
    for n in range(len(pkt)):
        assert b.receive_datagram(pkt[:n], 1) < 0
    assert b.receive_datagram(pkt + b"x", 1) < 0  # extended: tag fails
    assert b.poll_events() == []
    assert b.receive_datagram(pkt, 1) == 0
    assert messages(b) == [(0, b"payload")]
    assert b.receive_datagram(pkt, 2) == _core.EDUPLICATE  # replay
    assert b.poll_events() == []
    st = b.stats()
    assert st["rx_dropped_decrypt"] + st["rx_dropped_malformed"] + st["rx_dropped_notours"] >= (
        9 * len(pkt)
    )
    assert st["rx_dropped_duplicate"] == 1


def test_reflected_packets_are_not_ours() -> None:
    a, _ = raw_pair()
    a.send(b"x", now=0)
    (pkt,) = a.datagrams_to_send(0)
    assert a.receive_datagram(pkt, 1) == _core.ENOTOURS
    assert _core.packet_cid(pkt) == CID_B
    assert _core.packet_cid(b"\x80" + bytes(40)) is None


def test_random_datagrams_never_deliver() -> None:
    _, b = raw_pair(_core.AEAD_NULL)
    b.datagrams_to_send(0)  # its own opening MAX_DATA
    r = random.Random(5)
    for i in range(50_000):
        junk = bytearray(r.randbytes(r.randrange(0, 1500)))
        if len(junk) > 10 and i % 2:
            junk[0] = 0x40 | (junk[0] & 0x07)
            junk[1:9] = CID_B  # right id: must fail authentication instead
        assert b.receive_datagram(bytes(junk), i) < 0
    assert b.poll_events() == []
    assert b.datagrams_to_send(50_000) == []  # silence: nothing to answer


def test_reordered_replayed_and_duplicated_stream_is_exact() -> None:
    a, b = raw_pair()
    r = random.Random(9)
    sent = [r.randbytes(r.randrange(1, 20_000)) for _ in range(50)]
    for m in sent:
        a.send(m, now=0)
    seen: list[bytes] = []
    got: list[bytes] = []
    t = 0
    while len(got) < len(sent) and t < 60_000_000:
        t += 5_000
        out = a.datagrams_to_send(t)
        seen.extend(out)
        r.shuffle(out)
        for d in out + r.sample(seen, min(5, len(seen))):
            b.receive_datagram(d, t)
        for d in b.datagrams_to_send(t):
            a.receive_datagram(d, t)
        a.handle_timer(t)
        b.handle_timer(t)
        got.extend(m for _, m in messages(b))
    assert [hashlib.sha256(m).digest() for m in got] == [hashlib.sha256(m).digest() for m in sent]
    assert b.stats()["rx_dropped_duplicate"] > 0


def test_priority_overtakes_queued_bulk() -> None:
    net = Network(seed=1)
    net.connect("a", "b", LinkConfig.bottleneck(10_000_000, 20_000))
    a, b = connection_pair(net, ("a", 1), ("b", 1))
    for _ in range(100):
        a.send(bytes(100_000), 3)  # 10 MB of low priority: 8 s at 10 Mbit/s
    net.run(until=500_000)
    a.send(b"urgent", 0)
    net.wake(("a", 1))
    net.run(until=1_000_000, stop=lambda: any(p == 0 for p, _ in b.received))
    lows = [m for p, m in b.received if p == 3]
    assert (0, b"urgent") in b.received, "the urgent message did not overtake"
    assert len(lows) < 50


def test_stale_low_priority_messages_are_dropped_with_an_event() -> None:
    cfg = _core.Config(drop_deadline_us=1_000_000)
    net = Network(seed=2)
    net.connect("a", "b", LinkConfig.bottleneck(1_000_000, 20_000))
    a, b = connection_pair(net, ("a", 1), ("b", 1), config=cfg)
    for _ in range(40):
        a.send(bytes(10_000), 2)  # 3.2 s of data at 1 Mbit/s
    a.send(b"keep", 1)
    net.run(until=30_000_000)
    drops = [ev for ev in a.events if ev[0] == _core.EV_MESSAGE_DROPPED]
    delivered = [m for p, m in b.received if p == 2]
    assert drops and all(ev[1] == 2 and ev[3] >= 0 and ev[5] == 10_000 for ev in drops)
    assert len(drops) + len(delivered) == 40
    assert (1, b"keep") in b.received
    assert a.conn.stats()["dropped_msgs"] == len(drops)


def test_backpressure_and_send_ready() -> None:
    cfg = _core.Config(send_buffer=1 << 16)
    a, b = raw_pair(config=cfg)
    a.send(bytes(60_000), now=0)
    with pytest.raises(WouldBlock):
        a.send(bytes(10_000), now=0)
    for t in range(0, 3_000_000, 10_000):
        pump(a, b, t)
        a.handle_timer(t)
        b.handle_timer(t)
    assert any(ev[0] == _core.EV_SEND_READY for ev in a.poll_events())
    a.send(bytes(10_000), now=3_000_000)


def test_bad_arguments() -> None:
    a, _ = raw_pair(config=_core.Config(max_message_size=1000, recv_window=1 << 20))
    with pytest.raises(MessageTooLarge):
        a.send(bytes(1001), now=0)
    with pytest.raises(ValueError):
        a.send(b"x", 4, now=0)
    a.send(bytes(1000), now=0)


def test_graceful_close_delivers_everything_first() -> None:
    net = Network(seed=3)
    net.connect("a", "b", LinkConfig(delay_us=10_000, loss=0.1))
    a, b = connection_pair(net, ("a", 1), ("b", 1))
    for i in range(20):
        a.send(i.to_bytes(4, "big") * 1000)
    net.run(until=10)
    a.conn.close(net.now, code=7, graceful=True)
    with pytest.raises(ConnectionClosed):
        a.conn.send(b"late", now=net.now)
    net.wake(("a", 1))
    net.run(until=30_000_000)
    assert [m for _, m in b.received] == [i.to_bytes(4, "big") * 1000 for i in range(20)]
    closed = [ev for ev in b.events if ev[0] == _core.EV_CLOSED]
    assert closed and closed[0][4] == _core.CLOSE_REMOTE and closed[0][5] == 7
    assert a.conn.is_closed and b.conn.is_closed


def test_idle_timeout_when_peer_vanishes() -> None:
    cfg = _core.Config(idle_timeout_us=2_000_000, keepalive_us=500_000)
    net = Network(seed=4)
    a, _ = connection_pair(net, ("a", 1), ("b", 1), config=cfg)
    net.run(until=5_000_000)
    assert not a.closed, "keepalives keep an idle connection open"
    net.remove_node(("b", 1))
    net.run(until=10_000_000)
    closed = [ev for ev in a.events if ev[0] == _core.EV_CLOSED]
    assert closed and closed[0][4] == _core.CLOSE_IDLE


def test_only_one_side_of_an_idle_connection_sends_keepalives() -> None:
    """An idle connection costs one PING and one ACK per keepalive interval,
    not two of each (issue 22): a PING heard pushes our own back. Both
    ends are created at the same moment, on the same schedule: the
    interval's jitter breaks the tie."""
    keepalive = 500_000
    cfg = _core.Config(idle_timeout_us=2_000_000, keepalive_us=keepalive)
    net = Network(seed=6)
    net.connect("a", "b", LinkConfig(delay_us=10_000))
    a, b = connection_pair(net, ("a", 1), ("b", 1), config=cfg)
    net.run(until=2 * keepalive)  # settled: whoever sends first keeps sending
    before = a.conn.stats()["tx_packets"] + b.conn.stats()["tx_packets"]
    window = 40 * keepalive
    net.run(until=2 * keepalive + window)
    sent = a.conn.stats()["tx_packets"] + b.conn.stats()["tx_packets"] - before
    assert not a.closed and not b.closed
    # One PING and its ACK per interval (intervals up to an eighth shorter
    # for the jitter); both ends pinging would be about 160.
    assert 60 <= sent <= 2 * 40 * 8 // 7 + 4, sent


def test_key_update_mid_transfer_loses_nothing() -> None:
    net = Network(seed=5)
    net.connect(
        "a",
        "b",
        LinkConfig(delay_us=5_000, bandwidth_bps=50_000_000, reorder=0.05, reorder_delay_us=3_000),
    )
    a, b = connection_pair(net, ("a", 1), ("b", 1))
    k3, k4, iv3, iv4 = b"\x33" * 32, b"\x44" * 32, b"\x55" * 12, b"\x66" * 12
    aead = _core.AEAD_CHACHA20_POLY1305
    a.conn.set_keys(1, aead, k3, iv3, k4, iv4)
    b.conn.set_keys(1, aead, k4, iv4, k3, iv3)
    sent = [bytes([i]) * 50_000 for i in range(100)]
    for m in sent:
        a.send(m)
    net.run(until=300_000)
    a.conn.update_keys(net.now)
    b.conn.update_keys(net.now)
    net.run(until=20_000_000, stop=lambda: len(b.received) == len(sent))
    assert [m for _, m in b.received] == sent
    assert a.conn.stats()["key_phase"] == 1


def test_path_probe_is_validated() -> None:
    a, b = raw_pair()
    a.probe_path(0)
    pump(a, b, 0)
    assert any(ev[0] == _core.EV_PATH_VALIDATED for ev in a.poll_events())


def test_idle_connection_memory_is_small() -> None:
    a, b = raw_pair()
    a.send(b"hi", now=0)
    pump(a, b, 0)
    assert a.memory() < 16 * 1024
    assert b.memory() < 16 * 1024
