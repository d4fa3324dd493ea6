"""Fuzz target: the STUN parser and client (crust.nat.stun).

With atheris (coverage-guided, libFuzzer flags)::

    python tests/fuzz/fuzz_stun.py -max_total_time=60 [CORPUS_DIR...]

Without it, a plain loop over random and mutated inputs::

    python tests/fuzz/fuzz_stun.py --plain 100000 [--seed N]

Each input is decoded (every address attribute read), fed to a client with
a running transaction as it came, and fed again with the transaction id
patched in, so mutations reach the response handling instead of stopping
at the id match. Only StunParseError may come out of the parser; the
client must never raise, and an answer it accepts must carry an address.
"""

from __future__ import annotations

import inspect
import random
import sys
import time

from crust.nat import stun

try:
    import atheris
except ImportError:  # the plain loop needs nothing extra
    atheris = None

if __name__ == "__main__" and atheris is not None and "--plain" not in sys.argv:
    # Only the STUN module: instrument_all() would spend a minute on every
    # module crust's import pulled in, for coverage nobody looks at here.
    for _name, _obj in list(vars(stun).items()):
        if inspect.isfunction(_obj) and _obj.__module__ == stun.__name__:
            setattr(stun, _name, atheris.instrument_func(_obj))
        elif inspect.isclass(_obj) and _obj.__module__ == stun.__name__:
            for _m, _f in list(vars(_obj).items()):
                if inspect.isfunction(_f):
                    setattr(_obj, _m, atheris.instrument_func(_f))

TXID = b"fuzz-txid-12"
SERVER = ("198.51.100.1", 3478)


def one(data: bytes) -> None:
    try:
        msg = stun.decode(data)
        for attr in (
            stun.Attr.XOR_MAPPED_ADDRESS,
            stun.Attr.MAPPED_ADDRESS,
            stun.Attr.OTHER_ADDRESS,
        ):
            msg.address(attr)
        msg.error_code()
    except stun.StunParseError:
        pass
    patched = data[:8] + TXID + data[20:] if len(data) >= 20 else data
    for blob in (data, patched):
        client = stun.StunClient()
        client.binding(SERVER, 0.0, txid=TXID)
        client.datagrams_to_send(0.0)
        if client.receive_datagram(blob, SERVER, 0.01):
            ev = client.next_event()
            assert ev is not None and ev.txid == TXID
            if isinstance(ev, stun.BindingSucceeded):
                assert 0 <= ev.mapped[1] < 65536


def seeds() -> list[bytes]:
    return [
        stun.encode_binding_response(TXID, ("203.0.113.9", 4000)),
        stun.encode_binding_response(
            TXID, ("2001:db8::7", 1), plain=True, other=("198.51.100.2", 3479), fingerprint=True
        ),
        stun.encode_message(stun.BINDING_ERROR, TXID, [(stun.Attr.ERROR_CODE, b"\0\0\x04\x01x")]),
        stun.encode_binding_request(TXID, change_ip=True, change_port=True),
    ]


def run_plain(iterations: int, *, seed: int = 0, max_seconds: float = 0) -> int:
    """Random and mutated inputs; returns how many ran, raises on failure."""
    rng = random.Random(seed)
    corpus = seeds()
    deadline = time.monotonic() + max_seconds if max_seconds else None
    for i in range(iterations):
        if rng.random() < 0.1:
            data = rng.randbytes(rng.randrange(120))
        else:
            buf = bytearray(rng.choice(corpus))
            for _ in range(rng.randint(1, 4)):
                op = rng.randrange(3)
                if op == 0 and buf:
                    buf[rng.randrange(len(buf))] = rng.randrange(256)
                elif op == 1 and buf:
                    del buf[rng.randrange(len(buf)) :]
                else:
                    at = rng.randrange(len(buf) + 1)
                    buf[at:at] = rng.randbytes(rng.choice((1, 4, 8)))
            data = bytes(buf)
        try:
            one(data)
        except Exception as exc:
            raise AssertionError(f"input {i} (seed {seed}) {data.hex()} -> {exc!r}") from exc
        if deadline is not None and i % 500 == 0 and time.monotonic() > deadline:
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
