"""Idle cost of many connections at one node (issue 22).

    python benchmarks/idle_many.py [connections] [idle seconds] [keepalive seconds]

Dials ``connections`` UDP connections (default 100,000) to a ``Service`` in
a child process (``crust.bench.many``: sans-IO handshakes from 256 source
ports, a fresh identity each), lets them idle with keepalives, idle timeout
and pruning at their defaults, and prints the service's CPU share over the
idle window (which opens once every connection is past its setup and first
keepalive) and its memory per connection (resident-set growth, and the C
core's own count). Target: 100,000 connections at <= 5 % of a core and
<= 12 KiB each. Not a pytest-benchmark case: one run takes minutes and a
few GB of memory (the dialler holds as many connections as the service).
"""

from __future__ import annotations

import json
import statistics
import sys

from crust.bench.many import idle_connections


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 60.0
    keepalive = float(sys.argv[3]) if len(sys.argv) > 3 else None
    out = idle_connections(n, seconds, keepalive=keepalive)
    print(json.dumps(out, indent=1))
    slices = sorted(out["idle_cpu_share_slices"])
    print(
        f"{out['connections']} idle UDP connections: {out['idle_cpu_share'] * 100:.2f} % of a "
        f"core over {seconds:.0f} s (5 s slices: min {slices[0] * 100:.1f}, median "
        f"{statistics.median(slices) * 100:.1f}, max {slices[-1] * 100:.1f} %; the "
        f"{out['warmup_seconds']:.0f} s before it, setting up: "
        f"{out['warmup_cpu_share'] * 100:.1f} %), {out['rss_per_conn'] / 1024:.2f} KiB each "
        f"(C core: {out['c_per_conn'] / 1024:.2f} KiB); single messages to it arrived in "
        f"{', '.join(f'{d * 1e3:.1f}' for d in out['message_delays_s'])} ms"
    )


if __name__ == "__main__":
    main()
