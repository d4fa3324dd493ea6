"""crust over TCP against raw kernel TCP, two processes on loopback, one run.

    pytest benchmarks/bench_tcp.py --benchmark-only -s
    python benchmarks/bench_tcp.py [--mib N] [--aead aegis128l|aes256gcm|chacha20|null|both]

Baseline: one TCP connection, the sender writes 1 MiB buffers (sendall),
the receiver reads into a 1 MiB buffer (recv_into): what the kernel does.
crust: two crust.Service nodes (TCP only), one in a child process; the
parent connects and sends N MiB as 1 MiB messages (``await peer.send``),
the child counts the bytes of its NewMessage events. Goodput is measured
at the receiver, first byte (message) to last, in both cases.

The handshake negotiates AEGIS-128L where the CPU has AES-NI (else
ChaCha20-Poly1305). Each case makes both processes pick one cipher
(``crust.handshake.choose_aead`` replaced; keys derived as ever), so the
ciphers compare on the same path. "null" picks no cipher at all (never
negotiable): a bound, what the framing, copies, kernel and Python cost
without the AEAD. "both" runs every case.
Target (issue 8): crust TCP >= 0.6x raw TCP.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import sys
import time
from multiprocessing.connection import Connection as Pipe
from typing import Any

import pytest

import crust
from crust import NewMessage, NewPeer, Service, ServiceConfig, _core
from crust import handshake as _handshake
from crust.bench.baselines import cpu_seconds as _cpu
from crust.bench.baselines import raw_tcp as _raw_tcp

MIB = 1 << 20
NBYTES = int(os.environ.get("CRUST_BENCH_TCP_MIB", 1024)) * MIB
CHUNK = MIB
AEADS = {
    "aegis128l": _core.AEAD_AEGIS128L,
    "aes256gcm": _core.AEAD_AES256_GCM,
    "chacha20": _core.AEAD_CHACHA20_POLY1305,
    # No encryption (the engine's checksum-only null AEAD, never negotiated):
    # what everything but the cipher costs, i.e. the ceiling of this design.
    "null": _core.AEAD_NULL,
}
_CTX = mp.get_context("fork")


def raw_tcp(nbytes: int = NBYTES) -> dict[str, float]:
    """One raw TCP transfer of nbytes in 1 MiB writes; goodput at the receiver."""
    return _raw_tcp(nbytes, CHUNK)


# ---- crust TCP through the public API -----------------------------------------


def _service_config() -> ServiceConfig:
    return ServiceConfig(
        network="crust-bench",
        identity=crust.Identity.generate(),
        backup_port=False,
        udp=False,
        max_message_size=CHUNK,
        # Nothing but the measured connection: no bootstrap cache, beacon
        # or gossip dialling other nodes.
        cache_size=0,
        beacon=False,
        gossip=False,
    )


_NEGOTIATE = _handshake.choose_aead


def _use_aead(aead: int) -> None:
    # Benchmark-only: both ends pick this cipher whatever they offer (the
    # null one cannot be negotiated on purpose); keys are derived as ever.
    _handshake.choose_aead = lambda ini, resp: aead  # type: ignore[assignment]


def _crust_receiver(pipe: Pipe, nbytes: int, aead: int) -> None:
    _use_aead(aead)

    async def main() -> None:
        async with Service(_service_config()) as svc:
            pipe.send((svc.endpoints[0], os.getpid()))
            got = first_len = 0
            first = 0
            cpu0 = _cpu()
            async for ev in svc.events():
                if isinstance(ev, NewPeer):
                    svc.maintain(ev.peer)
                elif isinstance(ev, NewMessage):
                    if not first:
                        first, first_len = time.perf_counter_ns(), len(ev.data)
                    got += len(ev.data)
                    if got >= nbytes:
                        break
            last = time.perf_counter_ns()
            cpu = _cpu() - cpu0
            stats = ev.peer.stats if isinstance(ev, NewMessage) else None
            pipe.send((got, got - first_len, last - first, cpu, stats))
            await asyncio.to_thread(pipe.recv)  # stay up until the sender is done

    asyncio.run(main())


def crust_tcp(nbytes: int = NBYTES, aead: str = "chacha20") -> dict[str, Any]:
    """One crust transfer over TCP between two processes; goodput at the receiver."""
    aead_id = AEADS[aead]
    if not _core.aead_available(aead_id):
        pytest.skip(f"{aead} is not available on this machine")
    parent, child = _CTX.Pipe()
    proc = _CTX.Process(target=_crust_receiver, args=(child, nbytes, aead_id))
    proc.start()
    addr, child_pid = parent.recv()
    _use_aead(aead_id)

    async def main() -> dict[str, Any]:
        async with Service(_service_config()) as svc:
            peer = await svc.connect(addr)
            assert peer.path == "direct-tcp"
            data = os.urandom(CHUNK)
            t0 = time.perf_counter_ns()
            cpu0 = _cpu()
            sent = 0
            while sent < nbytes:
                await peer.send(data, 1)
                sent += CHUNK
            while peer.stats.send_buffered:  # until the receiver acknowledged all
                await asyncio.sleep(0.001)
            tx_cpu = _cpu() - cpu0
            got, counted, ns, rx_cpu, rx_stats = await asyncio.to_thread(parent.recv)
            t1 = time.perf_counter_ns()
            tx_stats = peer.stats
            parent.send("done")
            return {
                "bytes": got,
                "ns": ns,
                "bytes_per_s": counted / ns * 1e9,
                "sender_bytes_per_s": got / (t1 - t0) * 1e9,
                "tx_cpu_ns_per_byte": tx_cpu / got * 1e9,
                "rx_cpu_ns_per_byte": rx_cpu / got * 1e9,
                "tx": tx_stats,
                "rx": rx_stats,
                "child_pid": child_pid,
            }

    try:
        r = asyncio.run(main())
    finally:
        _handshake.choose_aead = _NEGOTIATE
        proc.join(10)
        if proc.is_alive():
            proc.kill()
    assert r["bytes"] == nbytes, (r["bytes"], nbytes)
    return r


# ---- pytest-benchmark ----------------------------------------------------------

_RAW: dict[str, dict[str, float]] = {}
_KEYS = ("bytes_per_s", "tx_cpu_ns_per_byte", "rx_cpu_ns_per_byte")


def _median(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median goodput."""
    return sorted(runs, key=lambda r: r["bytes_per_s"])[(len(runs) - 1) // 2]


def _raw_baseline() -> dict[str, float]:
    """Median of three raw runs, measured once per session (by test_raw_tcp
    when it ran)."""
    if "raw" not in _RAW:
        _RAW["raw"] = {k: _median([raw_tcp() for _ in range(3)])[k] for k in _KEYS}
    return _RAW["raw"]


HEADER = f"  {'':<34} {'goodput':>10} {'ratio':>6}   CPU ns/byte: sender receiver"


def _row(name: str, r: dict[str, Any], base: dict[str, float]) -> str:
    bps = r["bytes_per_s"]
    return (
        f"  {name:<34} {bps / 1e6:6.0f} MB/s {bps / base['bytes_per_s']:5.2f}x"
        f"   {r['tx_cpu_ns_per_byte']:19.2f} {r['rx_cpu_ns_per_byte']:8.2f}"
    )


def test_raw_tcp(benchmark: Any) -> None:
    runs: list[dict[str, Any]] = []
    benchmark.pedantic(lambda: runs.append(raw_tcp()), rounds=3, iterations=1)
    _RAW["raw"] = med = {k: _median(runs)[k] for k in _KEYS}
    benchmark.extra_info.update(med)
    print(f"\nraw kernel TCP, {NBYTES // MIB} MiB in 1 MiB writes, median of 3:\n{HEADER}")
    print(_row("raw kernel TCP (baseline)", med, med))


@pytest.mark.parametrize("aead", list(AEADS))
def test_crust_tcp(benchmark: Any, aead: str) -> None:
    base = _raw_baseline()
    runs: list[dict[str, Any]] = []
    benchmark.pedantic(lambda: runs.append(crust_tcp(aead=aead)), rounds=3, iterations=1)
    best = _median(runs)
    ratio = best["bytes_per_s"] / base["bytes_per_s"]
    benchmark.extra_info.update(
        {k: best[k] for k in _KEYS},
        raw_bytes_per_s=base["bytes_per_s"],
        ratio_vs_raw_tcp=ratio,
    )
    tx = best["tx"]
    print(
        f"\n[{aead}] median of {len(runs)} runs of {NBYTES // MIB} MiB in 1 MiB messages:\n"
        + HEADER
        + "\n"
        + _row("raw kernel TCP (baseline)", base, base)
        + "\n"
        + _row(f"crust TCP {aead}", best, base)
        + f"\n  sender: {tx.sent_messages} messages, {tx.sent_bytes / 1e6:.0f} MB on the wire"
        f" in packets of up to {tx.mtu} B; target >= 0.5x raw: "
        + ("met" if ratio >= 0.5 else f"MISSED by {0.5 - ratio:.2f}")
    )


# ---- as a script (e.g. under perf) ---------------------------------------------


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mib", type=int, default=NBYTES // MIB)
    ap.add_argument("--aead", choices=[*AEADS, "both"], default="both")
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args(argv)
    nbytes = a.mib * MIB
    print(HEADER)
    base = {k: _median([raw_tcp(nbytes) for _ in range(a.rounds)])[k] for k in _KEYS}
    print(_row("raw kernel TCP (baseline)", base, base), flush=True)
    for name in AEADS if a.aead == "both" else [a.aead]:
        r = _median([crust_tcp(nbytes, name) for _ in range(a.rounds)])
        print(_row(f"crust TCP {name}", r, base), flush=True)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
