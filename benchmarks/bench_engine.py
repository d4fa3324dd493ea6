"""Engine pair in memory (no sockets): packets/s and bytes/s of a bulk
transfer at 1200-byte packets, beside the AEAD alone on the same bytes,
measured in the same run.

    pytest benchmarks/bench_engine.py --benchmark-only -s

The engine's own cost per packet is the pair's time per data packet minus
the AEAD's seal+open time for every packet the pair sent (data and ACKs):
what the engine adds on top of the cipher. Target: <= 300 ns.
"""

from __future__ import annotations

import os
from typing import Any

import pytest

from crust import _core

PKT = 1200
# Enough packets to dwarf start-up, few enough for CI's smoke run.
NBYTES = int(os.environ.get("CRUST_BENCH_BYTES", 300_000_000))
MSG = 64 * 1024

CIPHERS = {"null": _core.AEAD_NULL, "aes256gcm": _core.AEAD_AES256_GCM}


def _pair(aead: int) -> tuple[_core.Connection, _core.Connection]:
    # A 1 MiB send buffer keeps the rings cache-resident, as with an
    # application that produces data as it goes; the MTU is pinned at 1200.
    cfg = _core.Config(
        initial_mtu=PKT, max_mtu=PKT, idle_timeout_us=0, keepalive_us=0, lost_timeout_us=0,
        send_buffer=1 << 20,
    )
    a = _core.Connection(b"A" * 8, b"B" * 8, 0, cfg)
    b = _core.Connection(b"B" * 8, b"A" * 8, 0, cfg)
    k1, k2, iv1, iv2 = b"\x01" * 32, b"\x02" * 32, b"\x03" * 12, b"\x04" * 12
    a.set_keys(0, aead, k1, iv1, k2, iv2)
    b.set_keys(0, aead, k2, iv2, k1, iv1)
    return a, b


@pytest.mark.parametrize("cipher", list(CIPHERS))
def test_engine_pair(benchmark: Any, cipher: str) -> None:
    aead = CIPHERS[cipher]
    if not _core.aead_available(aead):
        pytest.fail(f"{cipher} is not available on this CPU")
    results: dict[str, float] = {}

    def run() -> None:
        a, b = _pair(aead)
        data_pkts, ns = _core.bench_pair(a, b, NBYTES, MSG)
        assert data_pkts > 0, _core.strerror(data_pkts)
        all_pkts = a.stats()["tx_packets"] + b.stats()["tx_packets"]
        n = 1_000_000
        count, aead_ns = _core.bench_aead(aead, PKT, n)
        assert count == n
        per_aead = aead_ns / n
        per_pkt = ns / data_pkts
        results.update(
            data_pkts=data_pkts,
            all_pkts=all_pkts,
            ns_per_data_pkt=per_pkt,
            aead_ns=per_aead,
            engine_ns=per_pkt - per_aead * all_pkts / data_pkts,
            pkts_per_s=data_pkts / ns * 1e9,
            bytes_per_s=NBYTES / ns * 1e9,
            aead_pkts_per_s=1e9 / per_aead,
        )

    benchmark.pedantic(run, rounds=3, iterations=1)
    benchmark.extra_info.update(results)
    r = results
    print(
        f"\n[{cipher}] engine pair: {r['pkts_per_s'] / 1e3:.0f} k data pkts/s, "
        f"{r['bytes_per_s'] / 1e6:.0f} MB/s goodput, {r['ns_per_data_pkt']:.0f} ns/data pkt "
        f"({r['all_pkts'] / r['data_pkts']:.2f} pkts incl. ACKs)\n"
        f"[{cipher}] baseline AEAD alone: seal+open {r['aead_ns']:.0f} ns/pkt = "
        f"{r['aead_pkts_per_s'] / 1e3:.0f} k pkts/s\n"
        f"[{cipher}] engine adds {r['engine_ns']:.0f} ns per data packet on top of the AEAD "
        f"(target <= 300); pair/AEAD-alone packet rate ratio "
        f"{r['pkts_per_s'] / r['aead_pkts_per_s']:.2f}"
    )
