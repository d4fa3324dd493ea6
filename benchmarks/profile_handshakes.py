"""Where a service's CPU goes per handshake: the bench's "handshakes/s at
one service" case alone (no tracemalloc phase, no message phase), profiled
with py-spy, and the samples of the service process sorted into DH, Noise,
identity checks, the rest of the handshake layer and asyncio/service
work (socket calls included: Python-level samples end at the Python
function that made them).

    py-spy record --subprocesses --nonblocking --format raw -r 250 -o prof.txt -- \\
        python benchmarks/profile_handshakes.py run udp 5000
    python benchmarks/profile_handshakes.py breakdown prof.txt 250 5000
    python benchmarks/profile_handshakes.py noise

``noise`` times the XX responder's Noise work alone, in-process (read
message 1, write message 2, read message 3 of a recorded handshake),
beside its X25519 operations alone through the same libsodium, so their
difference is the Noise code's own cost.

Since design note 0076 the X25519 operations run inside one C call with
the rest of the Noise code, so Python-level samples cannot split the two:
that category is "Noise incl. X25519", and the split comes from counting
(4 X25519 operations per XX responder handshake, at the rate of the
bench's X25519 baseline). ``--native`` does not help: libsodium's X25519
ladder is assembly without unwind information, and py-spy loses most of
its samples. Before 0076, ``crust.noise.dh`` and ``generate_keypair``
frames show the DH apart. Sampling slows the service; read shares, and
the rate printed by ``run`` only without the profiler.
"""

from __future__ import annotations

import re
import sys
from collections import Counter

_CATEGORIES = (
    "X25519 (Python-level noise.dh, before 0076)",
    "Noise incl. X25519 (or without, before 0076)",
    "identity checks (Ed25519 key -> X25519, PeerId)",
    "handshake layer, rest (packets, payload, keys, tables)",
    "asyncio, service, connection setup, sockets, gc",
)


def _category(stack: str) -> str:
    noise = "crust/noise.py" in stack
    if "crust/identity.py" in stack or "crypto_sign_ed25519" in stack:
        return _CATEGORIES[2]
    if re.search(r";(dh|generate_keypair|public_key) \(crust/noise\.py", stack):
        return _CATEGORIES[0]
    if noise:
        return _CATEGORIES[1]
    if "crust/handshake/" in stack:
        return _CATEGORIES[3]
    return _CATEGORIES[4]


def breakdown(path: str, rate_hz: float, handshakes: int) -> None:
    counts: Counter[str] = Counter()
    for line in open(path, encoding="utf-8", errors="replace"):
        stack, _, n = line.rstrip("\n").rpartition(" ")
        # The service is the bench's child process (crust.bench.many._server).
        if "_server (crust/bench/many.py" not in stack:
            continue
        counts[_category(stack)] += int(n)
    total = sum(counts.values())
    if not total:
        raise SystemExit(f"{path}: no samples of the service process")
    for name in _CATEGORIES:
        n = counts[name]
        us = n / rate_hz / handshakes * 1e6
        print(f"{name:56} {n:7d} {100 * n / total:5.1f} %  {us:7.1f} us/handshake")
    print(f"{'total (busy)':56} {total:7d}          {total / rate_hz / handshakes * 1e6:7.1f}")


def noise_alone(n: int = 2000) -> None:
    import os
    import time

    import nacl.bindings

    from crust import noise

    si, sr = os.urandom(32), os.urandom(32)
    sr_pub = noise.public_key(sr)
    recorded = []
    for _ in range(n):
        a = noise.HandshakeState("XX", True, b"bench", si)
        b = noise.HandshakeState("XX", False, b"bench", sr, s_pub=sr_pub, e=os.urandom(32))
        m1 = a.write_message(b"x" * 100)
        b.read_message(m1)
        a.read_message(b.write_message(b"y" * 100))
        recorded.append((m1, a.write_message(b"z" * 100)))
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        for m1, m3 in recorded:
            # A fresh ephemeral: message 3 (for another one) then fails at
            # its static key's tag, so the "se" DH is not reached; the
            # baseline below counts the 3 X25519 operations that are.
            b = noise.HandshakeState("XX", False, b"bench", sr, s_pub=sr_pub)
            b.read_message(m1)
            b.write_message(b"y" * 100)
            try:
                b.read_message(m3)
            except noise.NoiseError:
                pass
        best = min(best, (time.perf_counter() - t0) / n)
    priv, pub = os.urandom(32), nacl.bindings.crypto_scalarmult_base(os.urandom(32))
    dh_best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        for _ in range(n):
            nacl.bindings.crypto_scalarmult_base(priv)
            nacl.bindings.crypto_scalarmult(priv, pub)
            nacl.bindings.crypto_scalarmult(priv, pub)
        dh_best = min(dh_best, (time.perf_counter() - t0) / n)
    print(
        f"XX responder, Noise: {best * 1e6:.1f} us; its 3 X25519 alone (PyNaCl, "
        f"2-3 us of Python call overhead each): {dh_best * 1e6:.1f} us; "
        f"difference {(best - dh_best) * 1e6:.1f} us"
    )


def run(transport: str, n: int) -> None:
    from crust.bench import many

    r = many.many_connections(transport, n, 0, 0.0)
    print(
        f"{transport}: {n} handshakes at {r['handshakes_per_s']:.0f}/s "
        f"(dialling side's share of a core {r['dialler_cpu_share']:.2f})"
    )


if __name__ == "__main__":  # the bench spawns its service: import-safe
    if len(sys.argv) == 4 and sys.argv[1] == "run":
        run(sys.argv[2], int(sys.argv[3]))
    elif len(sys.argv) == 2 and sys.argv[1] == "noise":
        noise_alone()
    elif len(sys.argv) == 5 and sys.argv[1] == "breakdown":
        breakdown(sys.argv[2], float(sys.argv[3]), int(sys.argv[4]))
    else:
        raise SystemExit(__doc__)
