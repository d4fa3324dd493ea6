"""Fuzz target: DHT records (crust.dht.record, crust.dht.bencode).

With atheris (coverage-guided, libFuzzer flags)::

    python tests/fuzz/fuzz_dht_record.py -max_total_time=60 [CORPUS_DIR...]

Without it, a plain loop over random and mutated inputs::

    python tests/fuzz/fuzz_dht_record.py --plain 100000 [--seed N]

Each input is taken as a BEP 44 value twice: as it came (unsigned: only
RecordError may come out, ``signature`` or earlier) and correctly signed by
the key asked for, so mutations reach the parser behind the signature
check. Only RecordError may come out; a record accepted must re-encode to
exactly the value that was signed (one encoding per record) and respect
every bound.
"""

from __future__ import annotations

import inspect
import random
import sys
import time

from crust.dht import bencode, record
from crust.identity import Identity

try:
    import atheris
except ImportError:  # the plain loop needs nothing extra
    atheris = None

if __name__ == "__main__" and atheris is not None and "--plain" not in sys.argv:
    for _mod in (record, bencode):
        for _name, _obj in list(vars(_mod).items()):
            if inspect.isfunction(_obj) and _obj.__module__ == _mod.__name__:
                setattr(_mod, _name, atheris.instrument_func(_obj))

IDENT = Identity.from_seed(b"f" * 32)
SALT = record.network_salt("fuzz")
NOW = 1_800_000_000


def one(data: bytes) -> None:
    unsigned = record.SignedItem(bytes(IDENT.peer_id), SALT, 1, data, bytes(64))
    try:
        record.verify(unsigned, peer_id=IDENT.peer_id, salt=SALT, now=NOW)
        raise AssertionError("an unsigned item was accepted")
    except record.RecordError as exc:
        assert exc.reason in ("size", "signature"), exc
    signed = record.SignedItem(
        bytes(IDENT.peer_id), SALT, 7, data, record.sign(IDENT, SALT, 7, data)
    )
    try:
        rec = record.verify(signed, peer_id=IDENT.peer_id, salt=SALT, now=NOW)
    except record.RecordError:
        return
    assert len(data) <= record.MAX_VALUE
    assert len(rec.endpoints) <= record.MAX_ENDPOINTS
    assert len(rec.contacts) <= record.MAX_CONTACTS
    assert all(0 < port < 65536 for _, port in rec.endpoints)
    assert rec.value() == data, "two encodings of one record"


def seeds() -> list[bytes]:
    other = Identity.from_seed(b"o" * 32).peer_id
    return [
        record.Record((("192.0.2.1", 5483),), (), 1, NOW, 60).value(),
        record.Record(
            (("2001:db8::1", 1), ("203.0.113.9", 65535)),
            (record.Contact(other, ("198.51.100.7", 4000)),),
            NOW * 1000,
            NOW - 10,
            7200,
        ).value(),
        record.Record((), (), 2, NOW, 7200).value(),
    ]


def run_plain(iterations: int, *, seed: int = 0, max_seconds: float = 0) -> int:
    """Random and mutated inputs; returns how many ran, raises on failure."""
    rng = random.Random(seed)
    corpus = seeds()
    deadline = time.monotonic() + max_seconds if max_seconds else None
    for i in range(iterations):
        if rng.random() < 0.1:
            data = rng.randbytes(rng.randrange(200))
        else:
            buf = bytearray(rng.choice(corpus))
            for _ in range(rng.randint(1, 4)):
                op = rng.randrange(4)
                if op == 0 and buf:
                    buf[rng.randrange(len(buf))] = rng.randrange(256)
                elif op == 1 and buf:
                    del buf[rng.randrange(len(buf)) :]
                elif op == 2 and buf:
                    at = rng.randrange(len(buf))
                    buf[at] = rng.choice(b"0123456789:ilde")
                else:
                    at = rng.randrange(len(buf) + 1)
                    buf[at:at] = rng.randbytes(rng.choice((1, 4, 8)))
            data = bytes(buf)
        try:
            one(data)
        except Exception as exc:
            raise AssertionError(f"input {i} (seed {seed}) {data.hex()} -> {exc!r}") from exc
        if deadline is not None and i % 200 == 0 and time.monotonic() > deadline:
            return i + 1
    return iterations


def main(argv: list[str]) -> int:
    if "--plain" in argv:
        n = int(argv[argv.index("--plain") + 1])
        seed = int(argv[argv.index("--seed") + 1]) if "--seed" in argv else 0
        print(f"{run_plain(n, seed=seed)} inputs, no failures")
        return 0
    if atheris is None:
        sys.exit("atheris is not installed: pip install atheris, or use --plain N")
    atheris.Setup(argv, one)
    atheris.Fuzz()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
