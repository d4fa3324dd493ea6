"""One crust connection over loopback through two Endpoints (AES-256-GCM,
bulk 64 KiB messages), the receiver in a child process, beside the raw
kernel baselines measured in the same run by crust/bench/rawudp.c:
sendmmsg/recvmmsg at 1200-byte datagrams (the target's denominator), and
the same with GSO -> GRO (what the kernel can do at best).

    pytest benchmarks/bench_loopback.py --benchmark-only -s

Goodput is measured at the receiver, first byte to last. Target from the
issue: crust >= 0.8x raw mmsg UDP bytes/s.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import select
import shutil
import socket
import statistics
import time
from multiprocessing.connection import Connection as Pipe
from pathlib import Path
from typing import Any

import pytest

from crust import _core
from crust.bench.baselines import raw_udp, rawudp_binary
from crust.errors import WouldBlock

NBYTES = int(os.environ.get("CRUST_BENCH_BYTES", 400_000_000))
RAW_SECONDS = float(os.environ.get("CRUST_BENCH_RAW_SECONDS", 2.0))
MSG = 64 * 1024
PAYLOAD = 1200
CID_S, CID_R = b"S" * 8, b"R" * 8
K1, K2, IV1, IV2 = b"\x01" * 32, b"\x02" * 32, b"\x03" * 12, b"\x04" * 12

CONFIGS = {
    "mtu1200": {"initial_mtu": 1200, "max_mtu": 1200},
    "mtu1472": {},  # the default: starts at 1200, probes up to 1472
}


def _now() -> int:
    return time.monotonic_ns() // 1000


def _socket() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    s.bind(("127.0.0.1", 0))
    s.setblocking(False)
    return s


def _wait(ep: _core.Endpoint, deadlines: list[int | None]) -> None:
    due = [t for t in deadlines if t is not None]
    wait = 0.02 if not due else max(0.0, min(0.02, (min(due) - _now()) / 1e6))
    select.select([ep.fileno()], [ep.fileno()] if ep.want_write else [], [], wait)


def _receiver(pipe: Pipe, cfg: dict[str, int], nbytes: int) -> None:
    """Child process: receive nbytes, report (bytes, ns first->last, stats)."""
    sock = _socket()
    pipe.send(sock.getsockname())
    peer = pipe.recv()
    conn = _core.Connection(CID_R, CID_S, _now(), _core.Config(**cfg))
    conn.set_keys(0, _core.AEAD_AES256_GCM, K2, IV2, K1, IV1)
    ep = _core.Endpoint(sock)
    ep.add(conn, peer)
    got = 0
    first = last = 0
    while got < nbytes:
        t1 = ep.drive(_now())
        for c in ep.ready():
            for ev in c.poll_events():
                if ev[0] == _core.EV_MESSAGE and ev[2] is not None:
                    if not first:
                        first = time.monotonic_ns()
                    got += len(ev[2])
        last = time.monotonic_ns()
        t2 = ep.flush(_now())
        _wait(ep, [t1, t2])
    # Let the final ACKs out, then report.
    stop = time.monotonic() + 0.2
    while time.monotonic() < stop:
        _wait(ep, [ep.drive(_now())])
    pipe.send((got, last - first, ep.stats(), conn.stats()))
    sock.close()


def _crust_run(cfg: dict[str, int], nbytes: int) -> dict[str, Any]:
    ctx = mp.get_context("fork")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_receiver, args=(child, cfg, nbytes))
    proc.start()
    sock = _socket()
    peer = parent.recv()
    parent.send(sock.getsockname())
    conn = _core.Connection(CID_S, CID_R, _now(), _core.Config(**cfg))
    conn.set_keys(0, _core.AEAD_AES256_GCM, K1, IV1, K2, IV2)
    ep = _core.Endpoint(sock)
    ep.add(conn, peer)
    msg = bytes(MSG)
    sent = 0
    give_up = time.monotonic() + 120
    while not parent.poll():
        now = _now()
        while sent < nbytes:
            try:
                conn.send(msg, now=now)
            except WouldBlock:
                break
            sent += MSG
        t1 = ep.flush(now)
        t2 = ep.drive(_now())
        for c in ep.ready():
            c.poll_events()
        _wait(ep, [t1, t2])
        assert time.monotonic() < give_up, "crust transfer stalled"
    got, ns, rx_ep, _ = parent.recv()
    proc.join(10)
    tx_ep, tx_conn = ep.stats(), conn.stats()
    sock.close()
    return {
        "bytes": got,
        "ns": ns,
        "bytes_per_s": got / ns * 1e9,
        "dgrams_per_s": rx_ep["rx_datagrams"] / ns * 1e9,
        "tx": tx_ep,
        "rx": rx_ep,
        "lost": tx_conn["lost_packets"],
        "mtu": tx_conn["mtu"],
        "srtt_us": tx_conn["srtt_us"],
        "min_rtt_us": tx_conn["min_rtt_us"],
        "cwnd": tx_conn["cwnd"],
    }


# ---- the raw baseline ----------------------------------------------------


@pytest.fixture(scope="module")
def rawudp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which(os.environ.get("CC", "cc")) is None:
        pytest.skip("no C compiler for the raw baseline")
    return rawudp_binary(tmp_path_factory.mktemp("rawudp"))


def _raw_run(binary: Path, gso: bool) -> dict[str, float]:
    return raw_udp(binary, PAYLOAD, RAW_SECONDS, gso)


_RAW: dict[str, dict[str, float]] = {}


def _raw(binary: Path, gso: bool) -> dict[str, float]:
    """Median of three runs, measured once per session (by test_raw_udp when
    it ran)."""
    key = "gso" if gso else "mmsg"
    if key not in _RAW:
        runs = [_raw_run(binary, gso) for _ in range(3)]
        _RAW[key] = {
            k: statistics.median(r[k] for r in runs) for k in ("dgrams_per_s", "bytes_per_s")
        }
    return _RAW[key]


def _line(name: str, r: dict[str, float], base: float) -> str:
    return (
        f"  {name:<34} {r['dgrams_per_s'] / 1e3:8.0f} k dgram/s "
        f"{r['bytes_per_s'] / 1e6:8.0f} MB/s  {r['bytes_per_s'] / base:5.2f}x"
    )


@pytest.mark.parametrize("gso", [False, True], ids=["mmsg", "gso-gro"])
def test_raw_udp(benchmark: Any, rawudp: Path, gso: bool) -> None:
    runs: list[dict[str, float]] = []

    def run() -> None:
        runs.append(_raw_run(rawudp, gso))

    benchmark.pedantic(run, rounds=3, iterations=1)
    # The crust cases below compare against these very runs.
    med = _RAW["gso" if gso else "mmsg"] = {
        k: statistics.median(r[k] for r in runs) for k in ("dgrams_per_s", "bytes_per_s")
    }
    benchmark.extra_info.update(med)
    print(
        f"\nraw UDP {'GSO->GRO' if gso else 'sendmmsg/recvmmsg'} {PAYLOAD} B, median of 3: "
        f"{med['dgrams_per_s'] / 1e3:.0f} k dgram/s, {med['bytes_per_s'] / 1e6:.0f} MB/s"
    )


@pytest.mark.parametrize("case", list(CONFIGS))
def test_crust_loopback(benchmark: Any, rawudp: Path, case: str) -> None:
    if not _core.aead_available(_core.AEAD_AES256_GCM):
        pytest.skip("AES-256-GCM is not available on this CPU")
    mmsg, gso = _raw(rawudp, False), _raw(rawudp, True)
    runs: list[dict[str, Any]] = []

    def run() -> None:
        runs.append(_crust_run(CONFIGS[case], NBYTES))

    benchmark.pedantic(run, rounds=3, iterations=1)
    best = sorted(runs, key=lambda r: r["bytes_per_s"])[(len(runs) - 1) // 2]  # the median
    benchmark.extra_info.update(
        bytes_per_s=best["bytes_per_s"],
        dgrams_per_s=best["dgrams_per_s"],
        ratio_vs_mmsg=best["bytes_per_s"] / mmsg["bytes_per_s"],
        ratio_vs_gso=best["bytes_per_s"] / gso["bytes_per_s"],
    )
    base = mmsg["bytes_per_s"]
    tx, rx = best["tx"], best["rx"]
    print(
        f"\n[{case}] median of {len(runs)} runs of {NBYTES / 1e6:.0f} MB "
        f"(payload MTU {best['mtu']}):\n"
        + _line("raw sendmmsg/recvmmsg (baseline)", mmsg, base)
        + "\n"
        + _line("raw GSO -> GRO", gso, base)
        + "\n"
        + _line("crust AES-256-GCM goodput", best, base)
        + f"\n  crust sender: {tx['tx_datagrams']} datagrams, {tx['tx_batches']} sendmmsg, "
        f"{tx['gso_segments']} in GSO runs, {tx['drives']} drives; lost {best['lost']}; "
        f"cwnd {best['cwnd']} B, srtt {best['srtt_us']} us, min_rtt {best['min_rtt_us']} us"
        f"\n  crust receiver: {rx['rx_datagrams']} datagrams, {rx['rx_batches']} recvmmsg, "
        f"{rx['gro_segments']} via GRO, {rx['tx_datagrams']} ACK datagrams"
    )
