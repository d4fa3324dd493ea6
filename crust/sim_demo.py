"""``crust demo --simulated``: two engines on a simulated lossy path.

It runs the real C engine (packet protection, loss recovery, congestion
control, path MTU search) over :mod:`crust.testing`'s simulated network, so
it shows exactly what the engine does on a lossy path, deterministically and
in a second or two of wall time. Times printed are virtual (the simulated
path's). The plain ``crust demo`` uses real sockets (:mod:`crust.demo`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import sys
import time
from typing import TextIO

from crust import _core
from crust.output import human_duration, human_size
from crust.testing import LinkConfig, Network, connection_pair

__all__ = ["DemoResult", "run_demo"]

SEC = 1_000_000


@dataclasses.dataclass(frozen=True, slots=True)
class DemoResult:
    """What the demo measured (virtual time)."""

    hello_ok: bool
    blob_bytes: int
    blob_ok: bool
    seconds: float
    goodput_bps: float
    stats: dict[str, int]


def _bar(done: int, total: int, width: int = 30) -> str:
    filled = width * done // total if total else width
    return "[" + "#" * filled + "." * (width - filled) + f"] {100 * done // max(total, 1):3d}%"


def run_demo(
    *,
    blob_mb: int = 20,
    bandwidth_mbit: int = 50,
    rtt_ms: int = 30,
    loss: float = 0.01,
    seed: int = 1,
    out: TextIO = sys.stdout,
) -> DemoResult:
    """Connect alice and bob over a simulated path, say hello both ways,
    then move a ``blob_mb`` MB blob from alice to bob and verify it."""
    net = Network(seed=seed)
    path = dataclasses.replace(
        LinkConfig.bottleneck(bandwidth_mbit * 1_000_000, rtt_ms * 1000), loss=loss, mtu=1472
    )
    net.connect(
        "10.0.0.1",
        "10.0.0.2",
        path,
        dataclasses.replace(path, bandwidth_bps=None, queue_bytes=None),
    )
    alice_addr, bob_addr = ("10.0.0.1", 4000), ("10.0.0.2", 4000)
    alice, bob = connection_pair(net, alice_addr, bob_addr, seed=seed)
    print(
        f"path: {bandwidth_mbit} Mbit/s, {rtt_ms} ms RTT, {loss:.1%} random loss "
        f"(simulated; ChaCha20-Poly1305 packets)",
        file=out,
    )

    alice.send(b"hello world from alice")
    bob.send(b"hello world from bob")
    net.run(until=5 * SEC, stop=lambda: bool(alice.received and bob.received))
    hello_ok = bob.received[:1] == [(0, b"hello world from alice")] and alice.received[:1] == [
        (0, b"hello world from bob")
    ]
    print(f"bob   got: {bob.received[0][1].decode() if bob.received else '(nothing)'}", file=out)
    print(
        f"alice got: {alice.received[0][1].decode() if alice.received else '(nothing)'}", file=out
    )

    chunk = 1 << 20
    blob = hashlib.shake_256(b"crust demo").digest(blob_mb * chunk)
    want = hashlib.sha256(blob).hexdigest()
    got = hashlib.sha256()
    got_bytes = 0
    last_at = 0

    def on_message(prio: int, data: bytes, now: int) -> None:
        nonlocal got_bytes, last_at
        got.update(data)
        got_bytes += len(data)
        last_at = now

    bob.received.clear()
    bob.on_message = on_message
    for i in range(0, len(blob), chunk):
        alice.send(blob[i : i + chunk], 1)
    start = net.now
    wall = time.perf_counter()
    tick = 100_000
    bars = out.isatty()  # as in crust.demo: redraws only on a terminal
    while got_bytes < len(blob) and net.now - start < 600 * SEC:
        net.run(until=net.now + tick)
        if bars:
            print("\r" + _bar(got_bytes, len(blob)), end="", file=out, flush=True)
    if bars:
        print(file=out)
    # Until the last byte arrived, not the end of the last tick: the
    # goodput of a short transfer would otherwise come out in steps.
    seconds = ((last_at if got_bytes else net.now) - start) / SEC
    goodput = got_bytes * 8 / seconds if seconds else 0.0
    blob_ok = got_bytes == len(blob) and got.hexdigest() == want
    st = alice.conn.stats()
    print(
        f"blob: {human_size(got_bytes)} in {human_duration(seconds)} virtual "
        f"({human_duration(time.perf_counter() - wall)} wall): {goodput / 1e6:.1f} Mbit/s goodput, "
        f"sha256 {'ok' if blob_ok else 'MISMATCH'} ({want[:16]}...)",
        file=out,
    )
    print(
        f"engine: srtt {st['srtt_us'] / 1000:.1f} ms, path MTU {st['mtu']} B, "
        f"{st['lost_packets']} packets lost and repaired, cwnd {st['cwnd']} B, "
        f"congestion control {'bbr' if st['cc'] == _core.CC_BBR else 'cubic'}",
        file=out,
    )
    return DemoResult(hello_ok, got_bytes, blob_ok, seconds, goodput, st)
