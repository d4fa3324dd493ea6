"""Measures, in the NAT lab (root): STUN round-trip times, classification
per NAT kind (repeated), UPnP discovery and mapping times. Prints a table;
the figures in docs/design/0018-stun-and-upnp.md come from it.

    python tests/netlab/measure_nat.py [--runs N]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from lab import KINDS, Lab

PROBE = r"""
import asyncio, json, sys, time
from crust.asyncio.stun import probe_nat
t0 = time.monotonic()
b = asyncio.run(probe_nat([(sys.argv[1], int(sys.argv[2]))]))
print(json.dumps({
    "summary": f"{b.kind}/{b.mapping.value}/{b.filtering.value}/"
               f"{'pp' if b.port_preserving else 'no-pp'}",
    "rtts": [p.rtt for p in b.probes if p.rtt is not None],
    "seconds": time.monotonic() - t0,
}))
"""

UPNP = r"""
import asyncio, json, sys, time
from crust.asyncio.upnp import UpnpGateway

async def main():
    t0 = time.monotonic()
    gw = await UpnpGateway.discover()
    t1 = time.monotonic()
    ip = await gw.external_ip()
    t2 = time.monotonic()
    await gw.add("udp", (gw.lan_address, 42000), 42000, 3600, "measure")
    t3 = time.monotonic()
    await gw.remove("udp", 42000)
    t4 = time.monotonic()
    print(json.dumps({"discover": t1 - t0, "external_ip": t2 - t1, "map": t3 - t2,
                      "unmap": t4 - t3}))

asyncio.run(main())
"""


def ms(xs: list[float]) -> str:
    return f"{statistics.median(xs) * 1000:.2f} ms (min {min(xs) * 1000:.2f}, n={len(xs)})"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    with Lab() as lab:
        (ip, port), _ = lab.stun()
        sites = {kind: lab.add_site(kind.replace("-", ""), kind) for kind in KINDS}
        print(f"{'kind':<14} {'classification (kind/mapping/filtering/port)':<66} probe time")
        all_rtts: list[float] = []
        for kind, site in sites.items():
            results: Counter[str] = Counter()
            secs: list[float] = []
            for _ in range(args.runs):
                r = json.loads(site.host.run_python(PROBE, ip, str(port)))
                results[r["summary"]] += 1
                all_rtts += r["rtts"]
                secs.append(r["seconds"])
            shown = ", ".join(f"{k} x{n}" for k, n in results.items())
            print(f"{kind:<14} {shown:<66} {statistics.median(secs):.2f} s")
        print(f"STUN round trip (first answers, all kinds): {ms(all_rtts)}")
        times: dict[str, list[float]] = {}
        for _ in range(args.runs):
            r = json.loads(sites["upnp"].host.run_python(UPNP))
            for k, v in r.items():
                times.setdefault(k, []).append(v)
        for k, v in times.items():
            print(f"UPnP {k:<12} {ms(v)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
