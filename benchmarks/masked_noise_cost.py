"""What masked ephemerals cost a Noise handshake, beside the plain one, all
run from Python in the same process and the same run (docs/design/0082).

    python benchmarks/masked_noise_cost.py [--handshakes 400] [--rounds 5]

Each handshake is timed whole (both ends, every message written and read,
through crust.noise.HandshakeState, fresh keys drawn from os.urandom), XX
and IK in turn, plain and masked interleaved so that load from elsewhere
hits both alike. Prints, per pattern and mode, the median over all
handshakes in microseconds, the masked/plain ratio, and the ephemeral key
attempts per handshake (noise_x25519_counts: 2 plain, about 4 masked).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

from crust import _core, noise
from crust.noise import HandshakeState


def _one(pattern: noise.Pattern, masked: bool, si: bytes, sr: bytes, rs: bytes) -> float:
    start = time.perf_counter()
    rs_or_none = rs if pattern == "IK" else None
    a = HandshakeState(pattern, True, b"bench", si, rs=rs_or_none, masked=masked)
    b = HandshakeState(pattern, False, b"bench", sr, masked=masked)
    writer, reader = a, b
    while not a.complete:
        reader.read_message(writer.write_message(b""))
        writer, reader = reader, writer
    return (time.perf_counter() - start) * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--handshakes", type=int, default=400, help="per pattern, mode and round")
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    times: dict[tuple[str, bool], list[float]] = {}
    attempts: dict[tuple[str, bool], int] = {}
    si, sr = os.urandom(32), os.urandom(32)
    rs = noise.public_key(sr)
    patterns: list[noise.Pattern] = ["XX", "IK"]
    for _ in range(args.rounds):
        for _ in range(args.handshakes):
            for pattern in patterns:
                for masked in (False, True):
                    key = (pattern, masked)
                    eph0 = _core.noise_x25519_counts()[1]
                    times.setdefault(key, []).append(_one(pattern, masked, si, sr, rs))
                    eph = _core.noise_x25519_counts()[1] - eph0
                    attempts[key] = attempts.get(key, 0) + eph
    n = args.handshakes * args.rounds
    print(f"{n} handshakes per row; median microseconds per handshake (both ends)")
    for pattern in patterns:
        plain = statistics.median(times[pattern, False])
        for masked in (False, True):
            med = statistics.median(times[pattern, masked])
            label = f"{pattern} {'masked' if masked else 'plain'}"
            print(
                f"{label:<10} {med:8.1f} us  ({med / plain:.2f}x plain, +{med - plain:.1f} us)"
                f"  ephemeral attempts {attempts[pattern, masked] / n:.2f}"
            )


if __name__ == "__main__":
    main()
