"""Engine memory under a hostile peer (issue 15, design 0040): it holds the
connection's keys, so it can send any frames it likes inside the window.
Receive memory must follow the bytes it sent, within the budget crust.h
documents at ``crust_conn_memory``, for every victim connection at once.

Against 57f4858: one ~100-byte packet of sparse 1-byte frames made a
connection hold 64 MiB (the receive ring spanned the highest offset), and
four parked maximum-size headers 67 MiB (an 8 MiB buffer per priority and
a ring as long as the message).
"""

from __future__ import annotations

import os
import random

from crust import PeerMisbehaving, _core

from .forge import Forger, message_header, stream
from .tools import connect_pair, figure, node, rss, run

#: crust.h: CRUST_RECV_RANGE_COST, CRUST_NUM_PRIO, and what a stream holds
#: at least once used (a 4 KiB ring, four range and chunk slots).
RANGE_COST = 96
NUM_PRIO = 4
STREAM_BASE = 4096 + 256
#: Victim connections in the process at once (the issue measured 140).
PEERS = int(os.environ.get("CRUST_ADV_PEERS", 140))


def budget(stream_bytes: int, ranges: int) -> int:
    """crust.h, crust_conn_memory: what a peer that sent ``stream_bytes``
    (none read, nothing delivered before) in ``ranges`` out-of-order ranges
    may make a connection hold beyond its fixed structs."""
    return 6 * stream_bytes + ranges * RANGE_COST + NUM_PRIO * STREAM_BASE


def victims(n: int) -> list[tuple[_core.Connection, Forger]]:
    """n engine connections with fresh keys, each with the forger of its
    peer (what a real handshake gives both ends)."""
    rng = random.Random(15)
    out = []
    for _ in range(n):
        cid, peer_cid = rng.randbytes(8), rng.randbytes(8)
        k_in, iv_in, k_out, iv_out = (rng.randbytes(n) for n in (32, 12, 32, 12))
        conn = _core.Connection(cid, peer_cid, 0)
        conn.set_keys(0, _core.AEAD_CHACHA20_POLY1305, k_out, iv_out, k_in, iv_in)
        out.append((conn, Forger(cid, k_in, iv_in)))
    return out


def attack(frames: list[bytes], n: int = PEERS) -> tuple[int, int, int]:
    """Deliver one packet of ``frames`` to each of n victims; returns the
    packet's size, the largest memory growth of one connection and the
    growth of the process's resident memory."""
    vs = victims(n)
    before = [conn.memory() for conn, _ in vs]
    rss0 = rss()
    size = 0
    for conn, forger in vs:
        pkt = forger.packet(b"".join(frames))
        size = len(pkt)
        assert conn.receive_datagram(pkt, 1000) == 0
        assert not conn.is_closed
    grew = max(conn.memory() - b for (conn, _), b in zip(vs, before, strict=True))
    return size, grew, rss() - rss0


def test_sparse_frames_cost_what_was_sent() -> None:
    # 1-byte frames from 4 KiB to 32 MiB, inside the 34 MiB window.
    offsets = [4 << 10, 16 << 10, 64 << 10, 256 << 10, 1 << 20, 4 << 20, 16 << 20, 32 << 20]
    frames = [stream(0, off, b"x") for off in offsets]
    size, grew, rss_grew = attack(frames)
    figure(
        "sparse STREAM frames, one packet per peer",
        f"{size} B packet: +{grew} B per connection,"
        f" +{rss_grew / 1e6:.1f} MB resident for {PEERS} peers",
    )
    assert size <= 100
    assert grew <= budget(len(offsets), len(offsets)), grew  # was 64 MiB
    # The whole process: every victim at once (was +4.5 GB for 140).
    assert rss_grew <= PEERS * budget(len(offsets), len(offsets)) + (8 << 20), rss_grew


def test_parked_maximum_headers_cost_what_was_sent() -> None:
    # On every priority: a header claiming max_message_size (8 MiB) with one
    # body byte, and one byte at the end of the body; then the window parks.
    limit = _core.Config().max_message_size
    hdr = message_header(limit)
    frames = []
    for prio in range(NUM_PRIO):
        frames.append(stream(prio, 0, hdr + b"y"))
        frames.append(stream(prio, len(hdr) + limit - 1, b"z"))
    sent = NUM_PRIO * (len(hdr) + 2)
    _size, grew, rss_grew = attack(frames)
    figure(
        "maximum-size message headers, window parked",
        f"+{grew / 1024:.1f} KiB per connection,"
        f" +{rss_grew / 1e6:.1f} MB resident for {PEERS} peers",
    )
    assert grew <= budget(sent, NUM_PRIO), grew  # was 67 MiB
    assert rss_grew <= PEERS * budget(sent, NUM_PRIO) + (8 << 20), rss_grew


def test_sparse_frames_at_the_ranges_cap() -> None:
    # The most out-of-order ranges a stream tracks, on every priority: the
    # budget's constant term, reached with 4 x 1024 packets.
    ((conn, forger),) = victims(1)
    before = conn.memory()
    cap = 1024  # crust.h CRUST_RECV_MAX_RANGES
    sent = 0
    for prio in range(NUM_PRIO):
        for i in range(cap + 10):  # the last ten: dropped, not stored
            conn.receive_datagram(forger.packet(stream(prio, 8192 * (i + 1), b"s")), 1000)
            sent += 1
    assert not conn.is_closed
    grew = conn.memory() - before
    assert grew <= budget(NUM_PRIO * cap, NUM_PRIO * cap), grew


def test_window_violation_closes_and_is_reported() -> None:
    """A frame past the flow-control window: the connection closes with a
    protocol error, nothing is stored, and the service reports the peer."""

    async def main() -> None:
        cfg = {"ciphers": ("chacha20poly1305",)}
        async with node(**cfg) as (a, ra), node(**cfg) as (b, _rb):
            _pb, pa = await connect_pair(a, ra, b)
            res = pa.extra  # a's handshake result: the keys b seals with
            conn = pa._link.conn
            before = conn.memory()
            forger = Forger(res.local_cid, res.rx_key, res.rx_iv)
            window = a.config.engine_config().recv_window
            sock = b._udp[0].sock
            sock.sendto(forger.packet(stream(1, window, b"over")), a.endpoints[0])
            ev = await ra.wait(PeerMisbehaving, lambda ev: ev.peer_id == b.id, timeout=5)
            assert ev.address == pa.address
            assert conn.memory() - before <= STREAM_BASE
            assert not pa.is_connected

    run(main())
