"""What the masked short header costs per packet, beside the AEAD that
seals and opens the same packet, in the same process and run
(docs/design/0083).

    python benchmarks/header_mask_cost.py [--count 200000] [--rounds 5] [--size 1200]

Each round times, in C with no Python in the loop, `count` packets through
mask + unmask (the sender's and the receiver's header work,
_core.bench_header_mask) and `count` packets through seal + open with each
AEAD this machine offers (_core.bench_aead), interleaved so that load from
elsewhere hits them alike. Prints the median over the rounds in ns per
packet (both ends together) and the mask's share of the AEAD's cost.
"""

from __future__ import annotations

import argparse
import statistics

from crust import _core, _sodium

NAMES = {
    _core.AEAD_CHACHA20_POLY1305: "ChaCha20-Poly1305",
    _core.AEAD_AES256_GCM: "AES-256-GCM",
    _core.AEAD_AEGIS128L: "AEGIS-128L",
}


def _ns(result: tuple[int, int]) -> float:
    packets, elapsed = result
    return elapsed / packets


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=200_000, help="packets per case and round")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--size", type=int, default=1200, help="packet size in bytes")
    args = ap.parse_args()
    aeads = [a for a in NAMES if a in _sodium.registered]
    mask: list[float] = []
    aead: dict[int, list[float]] = {a: [] for a in aeads}
    for _ in range(args.rounds):
        mask.append(_ns(_core.bench_header_mask(args.size, args.count)))
        for a in aeads:
            aead[a].append(_ns(_core.bench_aead(a, args.size, args.count)))
    m = statistics.median(mask)
    print(f"{args.size}-byte packets, {args.count} per case, median of {args.rounds} rounds")
    print(f"mask + unmask: {m:.0f} ns/packet")
    for a in aeads:
        s = statistics.median(aead[a])
        print(f"{NAMES[a]} seal + open: {s:.0f} ns/packet; mask adds {100 * m / s:.1f}%")


if __name__ == "__main__":
    main()
