"""Fuzz target: the LAN beacon (crust.discovery.beacon) and the contact
gossip parser (crust.discovery.gossip).

With atheris (coverage-guided, libFuzzer flags)::

    python tests/fuzz/fuzz_beacon.py -max_total_time=60 CORPUS_DIR...

Without it, a plain loop over random and mutated inputs::

    python tests/fuzz/fuzz_beacon.py --plain 100000 [--seed N]

``--write-corpus DIR`` writes valid seeds (a query, a reply, a gossip
message). Each input is used three ways: as a datagram to a beacon as it
came; again re-signed by a known key (as a node of the network could send
it, so the fuzzer gets past the signature into the endpoint parser, the
peer table and the reply logic); and as a gossip payload, also re-signed.
Any exception escaping, a reply larger than its query, or a table beyond
its bound fails.
"""

from __future__ import annotations

import contextlib
import inspect
import random
import sys
import time
from pathlib import Path

from crust.discovery import beacon, endpoints, gossip
from crust.identity import Identity

try:
    import atheris
except ImportError:  # the plain loop needs nothing extra
    atheris = None

_FUZZING = (
    __name__ == "__main__"
    and atheris is not None
    and not any(a.startswith(("--plain", "--write-corpus")) for a in sys.argv)
)
if _FUZZING:
    # Instrument the loaded bytecode of the three modules under test:
    # instrument_imports() sees nothing through an editable install's import
    # redirection, and instrument_all() would spend a long time on every
    # module crust pulls in, for coverage nobody looks at here.
    for _mod in (beacon, gossip, endpoints):
        for _obj in list(vars(_mod).values()):
            if inspect.isfunction(_obj) and _obj.__module__ == _mod.__name__:
                atheris.instrument_func(_obj)
            elif inspect.isclass(_obj) and _obj.__module__ == _mod.__name__:
                for _f in vars(_obj).values():
                    if inspect.isfunction(_f):
                        atheris.instrument_func(_f)

NET = "crust-fuzz"
ALICE = Identity.from_seed(b"\x01" * 32)
BOB = Identity.from_seed(b"\x02" * 32)
SRC = ("192.0.2.1", 5483)


def _resign(data: bytes, domain: bytes, key_at: int) -> bytes:
    """``data`` with ALICE's key at ``key_at`` and a valid signature."""
    if len(data) < key_at + 32 + 64:
        return data
    body = bytearray(data[:-64])
    body[key_at : key_at + 32] = bytes(ALICE.peer_id)
    return bytes(body) + ALICE.sign(domain + bytes(body))


class Harness:
    def __init__(self) -> None:
        self.now = 0.0
        self.bob = beacon.Beacon(
            BOB, NET, now=0.0, endpoints=[("198.51.100.2", 7000)], verify_rate=1e9
        )
        self.bob.datagrams_to_send(0.0)  # its own first query
        self.rx = gossip.GossipReceiver(NET, min_interval=1e-9, burst=10**9)

    def _beacon(self, data: bytes) -> None:
        self.bob.receive_datagram(data, SRC, self.now)
        for reply, dest in self.bob.datagrams_to_send(self.now):
            if dest is not None:
                assert dest == SRC
                assert len(reply) <= len(data), "reply larger than the query"
        assert len(self.bob._peers) <= beacon._TABLE
        while self.bob.next_event() is not None:
            pass

    def one(self, data: bytes) -> None:
        self.now += 0.001
        self._beacon(data)
        self._beacon(_resign(data, beacon._DOMAIN, 14))
        for payload in (data, _resign(data, gossip._DOMAIN, 9)):
            with contextlib.suppress(ValueError):
                msg = self.rx.receive(ALICE.peer_id, payload, self.now)
                if msg is not None:
                    assert len(msg.contacts) <= gossip.MAX_CONTACTS
            self.rx.forget(ALICE.peer_id)  # so old sequence numbers still parse


def corpus_packets() -> dict[str, bytes]:
    a = beacon.Beacon(ALICE, NET, now=0.0, endpoints=[("0.0.0.0", 1), ("2001:db8::1", 2)])
    b = beacon.Beacon(BOB, NET, now=0.0, endpoints=[("10.0.0.1", 3)])
    query = a.datagrams_to_send(0.0)[0][0]
    b.receive_datagram(query, SRC, 0.0)
    reply = next(d for d, dest in b.datagrams_to_send(0.0) if dest is not None)
    contacts = [(BOB.peer_id, [("10.0.0.2", 4), ("::1", 5)])]
    g = gossip.encode_gossip(ALICE, NET, 1, [("0.0.0.0", 6)], contacts)
    return {"beacon_query": query, "beacon_reply": reply, "gossip": g}


def mutate(rng: random.Random, data: bytes, corpus: list[bytes]) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(5)
        if op == 0 and buf:
            buf[rng.randrange(len(buf))] = rng.choice((0, 1, 4, 6, 8, 0xFF, rng.randrange(256)))
        elif op == 1 and buf:
            del buf[rng.randrange(len(buf)) :]
        elif op == 2:
            at = rng.randrange(len(buf) + 1)
            buf[at:at] = rng.randbytes(rng.randint(1, 40))
        elif op == 3 and corpus:
            other = rng.choice(corpus)
            cut = rng.randrange(min(len(buf), len(other)) + 1)
            buf = buf[:cut] + other[cut:]
        elif op == 4 and len(buf) > 2:
            a = rng.randrange(len(buf) - 1)
            b = rng.randint(a + 1, len(buf))
            buf[a:b] = rng.randbytes(b - a)
    return bytes(buf)


def run_plain(iterations: int, *, seed: int = 0, max_seconds: float = 0) -> int:
    """Feed random and mutated inputs; returns how many ran. Raises on any
    failure, with the offending input in the message."""
    rng = random.Random(seed)
    seeds = list(corpus_packets().values())
    harness = Harness()
    deadline = time.monotonic() + max_seconds if max_seconds else None
    for i in range(iterations):
        if rng.random() < 0.1:
            data = rng.randbytes(rng.randrange(400))
        else:
            data = mutate(rng, rng.choice(seeds), seeds)
        try:
            harness.one(data)
        except Exception as exc:
            raise AssertionError(f"input {i} (seed {seed}) {data.hex()} -> {exc!r}") from exc
        if deadline is not None and i % 500 == 0 and time.monotonic() > deadline:
            return i + 1
    return iterations


def main(argv: list[str]) -> int:
    if "--write-corpus" in argv:
        directory = Path(argv[argv.index("--write-corpus") + 1])
        directory.mkdir(parents=True, exist_ok=True)
        for name, data in corpus_packets().items():
            (directory / name).write_bytes(data)
        return 0
    if "--plain" in argv:
        n = int(argv[argv.index("--plain") + 1])
        seed = int(argv[argv.index("--seed") + 1]) if "--seed" in argv else 0
        print(f"{run_plain(n, seed=seed)} inputs, no failures")
        return 0
    if atheris is None:
        sys.exit("atheris is not installed: pip install atheris, or use --plain N")
    harness = Harness()
    atheris.Setup(argv, harness.one)
    atheris.Fuzz()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
