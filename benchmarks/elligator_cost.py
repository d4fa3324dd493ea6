"""What Elligator 2 costs per ephemeral key, beside one X25519 operation,
all called from Python in the same run (docs/design/0081).

    python benchmarks/elligator_cost.py [--keys 20000] [--rounds 5]

Prints the median over the rounds, in microseconds per call:
- X25519 base (PyNaCl crypto_scalarmult_base) and X25519 DH
  (crypto_scalarmult): the baseline;
- dirty public key (crust.elligator.public_key: X25519 base + one square
  root + one inversion);
- key pair per attempt (public key + the inverse map) and per key (all
  attempts until one is representable: about 2 per key);
- map (decode a representative) and the inverse map alone.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

from nacl.bindings import crypto_scalarmult, crypto_scalarmult_base

from crust import elligator


def _per_call(fn: Callable[[bytes], object], inputs: list[bytes]) -> float:
    start = time.perf_counter()
    for x in inputs:
        fn(x)
    return (time.perf_counter() - start) / len(inputs) * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keys", type=int, default=20_000)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    n = args.keys
    results: dict[str, list[float]] = {}

    def record(name: str, value: float) -> None:
        results.setdefault(name, []).append(value)

    peer = os.urandom(32)
    peer_pub = crypto_scalarmult_base(peer)
    for _ in range(args.rounds):
        privs = [os.urandom(32) for _ in range(n)]
        record("X25519 base (PyNaCl)", _per_call(crypto_scalarmult_base, privs))
        record("X25519 DH (PyNaCl)", _per_call(lambda k: crypto_scalarmult(k, peer_pub), privs))
        record("dirty public key", _per_call(elligator.public_key, privs))
        record("key pair, one attempt", _per_call(lambda k: elligator.key_pair(k, k[1]), privs))
        start = time.perf_counter()
        attempts = 0
        for _ in range(n):
            attempts += elligator.generate().attempts
        record("key pair, per key (with retries)", (time.perf_counter() - start) / n * 1e6)
        record("attempts per key", attempts / n)
        reps = [os.urandom(32) for _ in range(n)]
        record("map (representative -> u)", _per_call(elligator.decode, reps))
        us = [elligator.decode(r) for r in reps]
        record(
            "inverse map (u -> representative)",
            _per_call(lambda u: elligator.representative(u, 0), us),
        )
    width = max(map(len, results))
    base = statistics.median(results["X25519 DH (PyNaCl)"])
    for name, values in results.items():
        med = statistics.median(values)
        unit = "" if name == "attempts per key" else " us"
        ratio = "" if unit == "" else f"  ({med / base:.2f}x X25519 DH)"
        print(f"{name:<{width}}  {med:8.2f}{unit}{ratio}")


if __name__ == "__main__":
    main()
