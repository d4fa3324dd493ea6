"""The engine's stream-transport mode (crust_config.stream_transport) and its
framing (Connection.receive_stream / stream_to_send), as crust runs over
TCP: a byte stream cut at arbitrary points delivers every message exactly,
packets are large, nothing is retransmitted, and a damaged stream closes
the connection rather than stalling it."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import random
import struct
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from crust import Identity, NewMessage, NewPeer, Service, ServiceConfig, _core
from crust.asyncio.tcp import TcpLink
from crust.errors import ConfigError, WouldBlock

T = TypeVar("T")

AEADS = [_core.AEAD_NULL, _core.AEAD_CHACHA20_POLY1305]
if _core.aead_available(_core.AEAD_AES256_GCM):
    AEADS.append(_core.AEAD_AES256_GCM)

CID_A, CID_B = b"A" * 8, b"B" * 8
MIB = 1 << 20
S = 1_000_000
FRAME = struct.Struct(">H")


def gen_keys(gen: int) -> tuple[bytes, bytes, bytes, bytes]:
    """(a->b key, a->b iv, b->a key, b->a iv) of key generation ``gen``."""
    h = hashlib.sha512(gen.to_bytes(8, "big")).digest()
    return h[:32], h[32:44], h[44:64] + h[:12], h[12:24]


def stream_pair(
    aead: int = _core.AEAD_CHACHA20_POLY1305, **cfg: int
) -> tuple[_core.Connection, _core.Connection]:
    config = _core.Config(stream_transport=1, **cfg)
    a = _core.Connection(CID_A, CID_B, 0, config)
    b = _core.Connection(CID_B, CID_A, 0, config)
    for gen in (0, 1):
        k1, iv1, k2, iv2 = gen_keys(gen)
        a.set_keys(gen & 1, aead, k1, iv1, k2, iv2)
        b.set_keys(gen & 1, aead, k2, iv2, k1, iv1)
    return a, b


class End:
    """One end of a TCP stream: bytes in arrive in chunks of any size."""

    def __init__(self, conn: _core.Connection, aead: int = _core.AEAD_CHACHA20_POLY1305) -> None:
        self.conn = conn
        self.aead = aead
        self.inbuf = bytearray()
        self.received: list[tuple[int, bytes]] = []
        self.events: list[tuple[int, int, int]] = []

    def feed(self, data: bytes, now: int) -> None:
        self.inbuf += data
        n = self.conn.receive_stream(self.inbuf, now)
        assert 0 <= n <= len(self.inbuf)
        del self.inbuf[:n]
        self.drain()

    def drain(self) -> None:
        for typ, prio, payload, _msg_id, reason, code in self.conn.poll_events():
            if typ == _core.EV_MESSAGE:
                assert payload is not None
                self.received.append((prio, payload))
            elif typ == _core.EV_KEYS_NEEDED:
                k1, iv1, k2, iv2 = gen_keys(code)
                if self.conn.local_cid == CID_A:
                    self.conn.set_keys(prio, self.aead, k1, iv1, k2, iv2)
                else:
                    self.conn.set_keys(prio, self.aead, k2, iv2, k1, iv1)
            else:
                self.events.append((typ, reason, code))


def chunks(data: bytes, sizes: Callable[[], int]) -> Iterator[bytes]:
    pos = 0
    while pos < len(data):
        n = max(1, sizes())
        yield data[pos : pos + n]
        pos += n


def run(
    a: End,
    b: End,
    sizes: Callable[[], int],
    *,
    now: int = 0,
    step: int = 0,
    until: Callable[[], bool],
    rounds: int = 100_000,
    max_bytes: int = 262_144,
) -> int:
    """Move bytes both ways, cutting each write into chunks, until done."""
    for _ in range(rounds):
        if until():
            return now
        now += step
        moved = False
        for src, dst in ((a, b), (b, a)):
            src.conn.handle_timer(now)
            out = src.conn.stream_to_send(now, max_bytes)
            for piece in chunks(out, sizes):
                dst.feed(piece, now)
                moved = True
        if not moved and not step:
            now += 1000
    raise AssertionError("the stream stalled")


def payload(i: int, size: int) -> bytes:
    return hashlib.shake_256(i.to_bytes(4, "big")).digest(size) if size else b""


@pytest.mark.parametrize("aead", AEADS)
def test_messages_arrive_exactly_whatever_the_chunking(aead: int) -> None:
    rng = random.Random(aead)
    a, b = (End(c, aead) for c in stream_pair(aead))
    sizes = [0, 1, 2, 100, 1199, 1200, 65_000, 65_535, 65_536, 200_000, 1 * MIB + 7]
    sent = [(i % _core.NUM_PRIO, payload(i, n)) for i, n in enumerate(sizes)]
    for prio, data in sent:
        a.conn.send(data, prio, now=0)
    run(
        a,
        b,
        lambda: rng.choice([1, 2, 3, 7, 100, 1500, 4096, 65_537, 100_000]),
        until=lambda: len(b.received) == len(sent),
    )
    for prio in range(_core.NUM_PRIO):
        assert [m for p, m in b.received if p == prio] == [m for p, m in sent if p == prio]
    st_a, st_b = a.conn.stats(), b.conn.stats()
    assert st_a["retransmitted_bytes"] == st_a["lost_packets"] == st_a["pto_count"] == 0
    assert st_b["rx_dropped_decrypt"] == st_b["rx_dropped_malformed"] == 0
    # Packets are large: the bytes took few of them.
    total = sum(len(m) for _, m in sent)
    assert st_a["tx_packets"] < total / 30_000


@example(cuts=[1], lengths=[70_000, 0, 3])  # byte by byte through a full-size packet
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    cuts=st.lists(st.integers(1, 65_536), min_size=1, max_size=30),
    lengths=st.lists(st.integers(0, 300_000), min_size=1, max_size=6),
)
def test_any_split_delivers_exactly(cuts: list[int], lengths: list[int]) -> None:
    a, b = (End(c) for c in stream_pair())
    sent = [payload(i, n) for i, n in enumerate(lengths)]
    for m in sent:
        a.conn.send(m, 1, now=0)
    it = itertools.cycle(cuts)
    run(a, b, lambda: next(it), until=lambda: len(b.received) == len(sent))
    assert [m for _, m in b.received] == sent


def test_single_bytes_both_ways() -> None:
    a, b = (End(c) for c in stream_pair())
    a.conn.send(b"x" * 5000, now=0)
    b.conn.send(b"y" * 3000, 2, now=0)
    run(a, b, lambda: 1, until=lambda: bool(a.received and b.received))
    assert b.received == [(0, b"x" * 5000)]
    assert a.received == [(2, b"y" * 3000)]


def test_large_messages_use_full_size_packets() -> None:
    a, b = (End(c, _core.AEAD_NULL) for c in stream_pair(_core.AEAD_NULL))
    big = [payload(i, 8 * MIB) for i in range(3)]
    sent = 0
    for now in range(10_000):
        if len(b.received) == len(big):
            break
        while sent < len(big):
            try:
                a.conn.send(big[sent], 1, now=now)
            except WouldBlock:
                break
            sent += 1
        for src, dst in ((a, b), (b, a)):
            dst.feed(src.conn.stream_to_send(now, 4 * MIB), now)
    assert [m for _, m in b.received] == big
    st_a = a.conn.stats()
    assert st_a["mtu"] == _core.STREAM_MAX_PACKET
    # 24 MiB in at most ~65 KB per packet.
    assert st_a["tx_packets"] < 24 * MIB / 60_000


def test_frames_are_length_prefixed_packets_up_to_64k() -> None:
    a, b = stream_pair(_core.AEAD_NULL)
    a.send(bytes(1 * MIB), now=0)
    out = a.stream_to_send(0, 1 << 22)
    pos = 0
    lens = []
    while pos < len(out):
        (n,) = FRAME.unpack_from(out, pos)
        assert out[pos + 2] & 0xC0 == 0x40  # short header, fixed bit
        lens.append(n)
        pos += 2 + n
    assert pos == len(out)
    assert max(lens) == _core.STREAM_MAX_PACKET
    # The first flight is bounded by the peer's initial flow-control window
    # (256 KiB), not by a congestion window or pacing.
    assert sum(lens) > 200_000
    assert b.receive_stream(out, 0) == len(out)


def test_stream_to_send_respects_max_bytes() -> None:
    a, _ = stream_pair()
    a.send(bytes(500_000), now=0)
    assert a.stream_to_send(0, 0) == b""
    assert a.stream_to_send(0, 10) == b""  # no room for any packet
    out = a.stream_to_send(0, 5000)
    assert 0 < len(out) <= 5000
    out = a.stream_to_send(0, 70_000)
    assert 65_000 < len(out) <= 70_000
    with pytest.raises(ValueError):
        a.stream_to_send(0, -1)


def test_stops_before_a_handshake_frame() -> None:
    a, b = stream_pair()
    a.send(b"one", now=0)
    first = a.stream_to_send(0)
    a.send(b"two", now=0)
    second = a.stream_to_send(0)
    hs = b"\xc0" + bytes(40)  # a long-header packet: the handshake's
    data = first + FRAME.pack(len(hs)) + hs + second
    n = b.receive_stream(data, 0)
    assert n == len(first)
    assert data[n + 2 :].startswith(hs)
    n2 = b.receive_stream(data[n + 2 + len(hs) :], 0)
    assert n2 == len(second)
    got = [ev[2] for ev in b.poll_events() if ev[0] == _core.EV_MESSAGE]
    assert got == [b"one", b"two"]
    assert b.stats()["rx_dropped_notours"] == 0


def test_partial_frames_are_left_for_later() -> None:
    a, b = stream_pair()
    a.send(b"hello", now=0)
    out = a.stream_to_send(0)
    # Whatever frames there are (control frames travel in a packet of
    # their own), a chunk is consumed up to its last whole frame.
    starts = [0]
    while starts[-1] < len(out):
        starts.append(starts[-1] + 2 + int.from_bytes(out[starts[-1] : starts[-1] + 2], "big"))
    assert starts[-1] == len(out)
    for start, end in itertools.pairwise(starts):
        for cut in (start, start + 1, start + 2, end - 1):
            assert b.receive_stream(out[start:cut], 0) == 0
        assert b.receive_stream(out[start:end], 0) == end - start
    assert [ev[2] for ev in b.poll_events() if ev[0] == _core.EV_MESSAGE] == [b"hello"]


@pytest.mark.parametrize("damage", ["flip", "zero_length", "short"])
def test_a_damaged_stream_closes_the_connection(damage: str) -> None:
    a, b = stream_pair()
    a.send(b"first", now=0)
    good = a.stream_to_send(0)
    assert b.receive_stream(good, 0) == len(good)
    a.send(b"second", now=0)
    bad = bytearray(a.stream_to_send(0))
    if damage == "flip":
        bad[-3] ^= 1
    elif damage == "zero_length":
        bad = bytearray(FRAME.pack(0))
    else:
        bad = bytearray(FRAME.pack(5) + b"\x40abcd")
    assert b.receive_stream(bytes(bad), 0) == len(bad)
    events = b.poll_events()
    assert [ev[2] for ev in events if ev[0] == _core.EV_MESSAGE] == [b"first"]
    closed = [ev for ev in events if ev[0] == _core.EV_CLOSED]
    assert closed and closed[0][4] == _core.CLOSE_PROTOCOL
    st_b = b.stats()
    assert st_b["rx_dropped_decrypt"] + st_b["rx_dropped_malformed"] == 1
    # The peer hears why.
    out = b.stream_to_send(0)
    a.receive_stream(out, 0)
    assert any(ev[0] == _core.EV_CLOSED for ev in a.poll_events())


def test_nothing_is_retransmitted_and_no_probe_timer() -> None:
    a, _b = stream_pair(idle_timeout_us=0, keepalive_us=0, lost_timeout_us=0)
    a.send(bytes(100_000), now=0)
    out = a.stream_to_send(0)
    assert len(out) > 100_000
    # The peer never answers: a datagram connection would probe (PTO) and
    # resend; over a stream nothing is lost, so nothing is resent.
    assert a.get_timer() is None
    for t in range(S, 120 * S, 7 * S):
        a.handle_timer(t)
        assert a.stream_to_send(t) == b""
    st_a = a.stats()
    assert st_a["pto_count"] == st_a["retransmitted_bytes"] == st_a["lost_packets"] == 0


def test_keepalive_and_idle_timeout_still_work() -> None:
    a, b = (End(c) for c in stream_pair(idle_timeout_us=3 * S, keepalive_us=1 * S))
    a.conn.send(b"hi", now=0)
    run(a, b, lambda: 1 << 20, until=lambda: bool(b.received))
    t = a.conn.get_timer()
    assert t is not None and t <= 1 * S
    a.conn.handle_timer(1 * S)
    assert a.conn.stream_to_send(1 * S) != b""  # a PING
    # b hears nothing for 3 s: idle.
    b.conn.handle_timer(3 * S + 1)
    b.drain()
    assert (_core.EV_CLOSED, _core.CLOSE_IDLE, 0) in b.events


def test_key_updates_lose_nothing() -> None:
    a, b = (
        End(c)
        for c in stream_pair(rekey_interval_us=2_000, rekey_packets=16, max_ack_delay_us=1000)
    )
    rng = random.Random(5)
    sent = [payload(i, rng.randrange(1, 200_000)) for i in range(300)]
    queued = 0

    def feed_more() -> bool:
        nonlocal queued
        while queued < len(sent) and a.conn.send_capacity() > len(sent[queued]) + 8:
            a.conn.send(sent[queued], now=0)
            queued += 1
        return len(b.received) == len(sent)

    run(
        a,
        b,
        lambda: rng.choice([1, 999, 20_000, 70_000]),
        step=2000,
        until=feed_more,
        max_bytes=100_000,
    )
    assert [m for _, m in b.received] == sent
    st_a, st_b = a.conn.stats(), b.conn.stats()
    assert st_a["key_updates"] >= 3 and st_b["key_updates"] >= 3
    assert st_b["rx_dropped_decrypt"] == st_a["rx_dropped_decrypt"] == 0
    assert _core.EV_CLOSED not in [e[0] for e in a.events + b.events]


def test_graceful_close_flushes_then_closes() -> None:
    a, b = (End(c) for c in stream_pair())
    a.conn.send(bytes(300_000), now=0)
    a.conn.close(0, 9, True)
    run(a, b, lambda: 4096, until=lambda: any(e[0] == _core.EV_CLOSED for e in b.events))
    assert [len(m) for _, m in b.received] == [300_000]
    assert (_core.EV_CLOSED, _core.CLOSE_REMOTE, 9) in b.events


def test_idle_stream_connection_memory_is_small() -> None:
    a, b = (End(c) for c in stream_pair())
    a.conn.send(b"hi", now=0)
    run(a, b, lambda: 1000, until=lambda: bool(b.received))
    assert a.conn.memory() < 16 * 1024
    assert b.conn.memory() < 16 * 1024


def test_datagram_connections_still_refuse_big_packets() -> None:
    a, _ = stream_pair(_core.AEAD_NULL)
    a.send(bytes(70_000), now=0)
    out = a.stream_to_send(0, 70_000)
    # The largest frame (a small control packet may come first).
    frames = []
    pos = 0
    while pos < len(out):
        (n,) = FRAME.unpack_from(out, pos)
        frames.append(out[pos + 2 : pos + 2 + n])
        pos += 2 + n
    big = max(frames, key=len)
    assert len(big) > _core.MAX_PACKET
    d = _core.Connection(CID_B, CID_A, 0)
    d.set_keys(0, _core.AEAD_NULL, *gen_keys(0)[2:], *gen_keys(0)[:2])
    assert d.receive_datagram(big, 0) == _core.EMALFORMED


def test_stream_mode_is_a_config_field() -> None:
    assert _core.Config().stream_transport == 0
    cfg = _core.Config(stream_transport=1)
    assert cfg.stream_transport == 1
    assert "stream_transport=1" in repr(cfg)
    with pytest.raises(ConfigError, match="stream_transport"):
        _core.Config(stream_transport=2)


# ---- the TCP transport through the Service --------------------------------------


def _service(**kw: Any) -> Service:
    cfg = ServiceConfig(identity=Identity.generate(), backup_port=False, udp=False, **kw)
    return Service(cfg)


async def _next(svc: Service, kind: type[T], timeout: float = 10.0) -> T:
    async def find() -> T:
        async for ev in svc.events():
            if isinstance(ev, kind):
                return ev
        raise AssertionError(f"service closed before a {kind.__name__}")

    return await asyncio.wait_for(find(), timeout)


def test_one_rtt_handshake_then_bulk_over_tcp() -> None:
    """IK: the responder's first engine packets (its flow-control credit)
    may arrive with the handshake's last message, before the dialler has
    its connection; they must wait for it, not be lost (nothing on a stream
    is ever resent)."""

    async def main() -> None:
        async with _service() as a, _service() as b:
            for _ in range(5):
                peer = await a.connect(b.endpoints[0], peer_id=b.id)
                assert peer.path == "direct-tcp"
                blob = payload(7, 3 * MIB)
                for _ in range(4):
                    await peer.send(blob, 1)
                for _ in range(4):
                    ev = await _next(b, NewMessage)
                    assert ev.data == blob
                st_a = peer._link.conn.stats()
                assert st_a["rx_dropped_decrypt"] == st_a["rx_dropped_malformed"] == 0
                await a.disconnect(peer)

    asyncio.run(asyncio.wait_for(main(), 60))


def test_tcp_backpressure_bounds_every_buffer() -> None:
    """A receiver that stops reading: the sender's TCP and asyncio buffers
    fill, the link stops producing packets, the engine's send buffer fills
    and Peer.send waits; memory stays bounded. Reading again delivers all."""

    async def main() -> None:
        async with _service() as a, _service() as b:
            peer = await a.connect(b.endpoints[0])
            incoming = await _next(b, NewPeer)
            rx_link = incoming.peer._link
            assert isinstance(rx_link, TcpLink) and rx_link.transport is not None
            rx_link.transport.pause_reading()
            blob = payload(3, MIB)
            sent = 0

            async def sender() -> None:
                nonlocal sent
                while True:
                    await peer.send(blob, 1)
                    sent += 1

            task = asyncio.create_task(sender())
            stuck = -1
            for _ in range(40):  # until no progress for half a second
                stuck = sent
                await asyncio.sleep(0.5)
                if sent == stuck:
                    break
            assert sent == stuck, "the sender should be blocked"
            tx_link = peer._link
            assert isinstance(tx_link, TcpLink) and tx_link.transport is not None
            engine = tx_link.conn.stats()
            assert engine["send_buffered"] <= 16 * MIB + MIB
            assert tx_link.transport.get_write_buffer_size() <= 2 * MIB
            # Queued in the engine + asyncio + both kernels: tens of MiB at
            # most, nowhere near unbounded.
            assert stuck < 64, stuck
            rx_link.transport.resume_reading()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            for _ in range(sent):
                ev = await _next(b, NewMessage)
                assert ev.data == blob

    asyncio.run(asyncio.wait_for(main(), 60))


def test_tcp_reads_of_any_size(monkeypatch: pytest.MonkeyPatch) -> None:
    """The link's read buffer (asyncio.BufferedProtocol) under reads of any
    size, from 1 byte up: the kernel fills at most what get_buffer offers,
    so offering random lengths cuts the stream at random points, through
    the handshake frames and the engine's."""
    rng = random.Random(11)
    offer = TcpLink.get_buffer

    def short_offer(self: TcpLink, sizehint: int) -> memoryview:
        view = offer(self, sizehint)
        return view[: rng.choice([1, 2, 3, rng.randint(1, 4096), rng.randint(1, len(view))])]

    monkeypatch.setattr(TcpLink, "get_buffer", short_offer)

    async def main() -> None:
        async with _service() as a, _service() as b:
            peer = await a.connect(b.endpoints[0])
            incoming = (await _next(b, NewPeer)).peer
            sizes = [0, 1, 5, 1000, 65_535, 65_536, 300_000, 2 * MIB + 3]
            for i, n in enumerate(sizes):
                await peer.send(payload(i, n), i % _core.NUM_PRIO)
                await incoming.send(payload(100 + i, n), 1)
            got_b = [await _next(b, NewMessage) for _ in sizes]
            got_a = [await _next(a, NewMessage) for _ in sizes]
            for prio in range(_core.NUM_PRIO):
                want = [payload(i, n) for i, n in enumerate(sizes) if i % _core.NUM_PRIO == prio]
                assert [e.data for e in got_b if e.priority == prio] == want
            assert [e.data for e in got_a] == [payload(100 + i, n) for i, n in enumerate(sizes)]

    asyncio.run(asyncio.wait_for(main(), 60))
