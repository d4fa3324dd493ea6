"""Fuzz target: crust.handshake's Responder, Initiator and payload parser.

With atheris (coverage-guided, libFuzzer flags)::

    python tests/fuzz/fuzz_handshake.py -max_total_time=60 CORPUS_DIR...

Without it (or as well), a plain loop over random and mutated inputs::

    python tests/fuzz/fuzz_handshake.py --plain 200000 [--seed N] [CORPUS_DIR]

Regenerate the seed corpus (valid packets of each kind)::

    python tests/fuzz/fuzz_handshake.py --write-corpus tests/data/handshake_corpus

Each input is used four ways: as a datagram to a Responder as it came; again
with a correct mac1 (as an attacker who knows the network name could send
it, so the fuzzer gets past the keyed hash into Noise and the handshake
table, a finish aimed at a live handshake); to an Initiator waiting for a
response, also with a correct mac1; and to the payload parser. Any
exception, a reply over 3x the request, or state beyond its bounds fails.
"""

from __future__ import annotations

import contextlib
import random
import sys
import time
from pathlib import Path

try:
    import atheris
except ImportError:  # the plain loop needs nothing extra
    atheris = None

_FUZZING = (
    __name__ == "__main__"
    and atheris is not None
    and not any(a.startswith(("--plain", "--write-corpus")) for a in sys.argv)
)
with atheris.instrument_imports(include=["crust"]) if _FUZZING else contextlib.nullcontext():
    from crust import handshake
    from crust.identity import Identity

NET = "crust-fuzz"
ALICE = Identity.from_seed(b"\x01" * 32)
BOB = Identity.from_seed(b"\x02" * 32)
A_ADDR = ("192.0.2.1", 4000)
B_ADDR = ("198.51.100.2", 5000)
LIVE_CID = b"\xf1" * 8
WAITING_CID = b"\xf2" * 8
MAX_PENDING = 256
_XX_KEY = handshake._labelled_key(b"crust mac1", NET.encode(), None)
_IK_KEY = handshake._labelled_key(b"crust mac1", NET.encode(), BOB.peer_id)
_MIN_MACCED = handshake.HEADER_LEN + 2 * handshake.MAC_LEN


def _remac(data: bytes | bytearray, key: bytes) -> bytes:
    body = bytes(data[:-32])
    return body + handshake._mac(key, body) + bytes(data[-16:])


class Harness:
    """A Responder whose clock runs 1 ms per input, so handshakes expire and
    cookies come and go; a second one, clock stopped, holding an XX
    handshake that waits for its finish; an IK Initiator waiting for its
    response."""

    def __init__(self) -> None:
        self.now = 0
        self.next_cid = 0
        self.responder = handshake.Responder(
            BOB,
            NET,
            max_pending=MAX_PENDING,
            pending_timeout_us=100_000,
            cookie_policy=handshake.CookiePolicy(rate=20),
            new_cid=self._cid,
        )
        self.live = handshake.Responder(BOB, NET, max_pending=MAX_PENDING, new_cid=self._cid)
        live = handshake.Initiator(ALICE, NET, remote=None, local_cid=LIVE_CID, now=0)
        self.live.receive_datagram(live.datagrams_to_send(0)[0], A_ADDR, 0)
        ((response, _),) = self.live.datagrams_to_send(0)
        self.live_responder_cid = response[14:22]
        self.waiting = handshake.Initiator(
            ALICE, NET, remote=BOB.peer_id, local_cid=WAITING_CID, now=0, addr=B_ADDR
        )
        self.waiting.datagrams_to_send(0)

    def _cid(self) -> bytes:
        self.next_cid += 1
        return self.next_cid.to_bytes(8, "big")

    @staticmethod
    def _to(responder: handshake.Responder, data: bytes, now: int) -> None:
        responder.receive_datagram(data, A_ADDR, now)
        replies = responder.datagrams_to_send(now)
        assert len(replies) <= 1, "more than one reply to a datagram"
        for reply, addr in replies:
            assert addr == A_ADDR
            assert len(reply) <= 3 * len(data), "amplification over 3x"

    def one(self, data: bytes) -> None:
        self.now += 1000
        self._to(self.responder, data, self.now)
        if len(data) >= _MIN_MACCED:
            patched = bytearray(data)
            ptype = data[0] & 0x3F
            key = _IK_KEY if ptype == handshake.TYPE_INITIATION_IK else _XX_KEY
            self._to(self.responder, _remac(patched, key), self.now)
            if ptype == handshake.TYPE_FINISH:
                patched[6:14] = self.live_responder_cid
                patched[14:22] = LIVE_CID
                self._to(self.live, _remac(patched, key), 1)
                assert self.live.take_completed() == []
            patched[6:14] = WAITING_CID
            self.waiting.receive_datagram(_remac(patched, _IK_KEY), B_ADDR, self.now)
            # Nobody but Bob can answer Alice's IK initiation.
            assert self.waiting.state is handshake.InitiatorState.WAITING
            assert self.waiting.result is None
        with contextlib.suppress(handshake.MalformedPacket):
            handshake.decode_payload_untrusted(data)
        for r in (self.responder, self.live):
            assert r.pending <= MAX_PENDING and len(r._sources) <= MAX_PENDING
        # A mutation can leave a valid IK initiation intact.
        self.responder.take_completed()


def corpus_packets() -> dict[str, bytes]:
    """Fresh valid packets of every kind, for the seed corpus."""
    resp = handshake.Responder(BOB, NET)
    out: dict[str, bytes] = {}
    for name, remote in (("xx", None), ("ik", BOB.peer_id)):
        ini = handshake.Initiator(ALICE, NET, remote=remote, local_cid=LIVE_CID, now=0, addr=B_ADDR)
        (init,) = ini.datagrams_to_send(0)
        resp.receive_datagram(init, A_ADDR, 0)
        ((response, _),) = resp.datagrams_to_send(0)
        ini.receive_datagram(response, B_ADDR, 0)
        out[f"{name}_initiation"] = init
        out[f"{name}_response"] = response
        for extra in ini.datagrams_to_send(0):
            out[f"{name}_finish"] = extra
    busy = handshake.Responder(BOB, NET, cookie_policy=handshake.CookiePolicy(rate=1e-3))
    busy.receive_datagram(out["xx_initiation"], A_ADDR, 0)
    ((cookie_reply, _),) = busy.datagrams_to_send(0)
    out["cookie_reply"] = cookie_reply
    out["payload"] = handshake.encode_payload(
        handshake.Payload(ALICE.peer_id, LIVE_CID, handshake.TransportParams(), ("2001:db8::7", 9))
    )
    return out


def load_corpus(directories: list[Path]) -> list[bytes]:
    return [p.read_bytes() for d in directories for p in sorted(d.iterdir()) if p.is_file()]


def mutate(rng: random.Random, data: bytes, corpus: list[bytes]) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(6)
        if op == 0 and buf:
            buf[rng.randrange(len(buf))] ^= 1 << rng.randrange(8)
        elif op == 1 and buf:
            buf[rng.randrange(len(buf))] = rng.choice((0, 1, 0x7F, 0x80, 0xFF, rng.randrange(256)))
        elif op == 2 and buf:
            del buf[rng.randrange(len(buf)) :]
        elif op == 3:
            at = rng.randrange(len(buf) + 1)
            buf[at:at] = rng.randbytes(rng.randint(1, 40))
        elif op == 4 and corpus:
            other = rng.choice(corpus)
            cut = rng.randrange(min(len(buf), len(other)) + 1)
            buf = buf[:cut] + other[cut:]
        elif op == 5 and len(buf) > 2:
            a = rng.randrange(len(buf) - 1)
            b = rng.randint(a + 1, len(buf))
            buf[a:b] = rng.randbytes(b - a)
    return bytes(buf)


def run_plain(
    iterations: int, *, seed: int = 0, corpus: list[bytes] | None = None, max_seconds: float = 0
) -> int:
    """Feed ``iterations`` random and mutated inputs (stopping early after
    ``max_seconds`` if set); returns how many ran. Raises on any failure,
    with the offending input in the message."""
    rng = random.Random(seed)
    seeds = list(corpus or []) + list(corpus_packets().values())
    harness = Harness()
    deadline = time.monotonic() + max_seconds if max_seconds else None
    for i in range(iterations):
        if rng.random() < 0.2:
            data = rng.randbytes(rng.choice((rng.randrange(64), rng.randrange(1500))))
        else:
            data = mutate(rng, rng.choice(seeds), seeds)
        try:
            harness.one(data)
        except Exception as exc:
            raise AssertionError(f"input {i} (seed {seed}) {data.hex()} -> {exc!r}") from exc
        if deadline is not None and i % 1000 == 0 and time.monotonic() > deadline:
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
        dirs = [Path(a) for a in argv[1:] if Path(a).is_dir()]
        done = run_plain(n, seed=seed, corpus=load_corpus(dirs))
        print(f"{done} inputs, no failures")
        return 0
    if atheris is None:
        sys.exit("atheris is not installed: pip install atheris, or use --plain N")
    harness = Harness()
    atheris.Setup(argv, harness.one)
    atheris.Fuzz()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
