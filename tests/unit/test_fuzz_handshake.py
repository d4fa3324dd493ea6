"""Bounded runs of tests/fuzz/fuzz_handshake.py: the plain random/mutation
loop always, and the coverage-guided atheris run when atheris is installed
(it is not in the ``test`` extra: it has wheels for few Python versions).
Longer under CI (``CI`` set): 200,000 plain inputs and 20 s of atheris."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from types import ModuleType

from fuzzing import CI, require_atheris, run_atheris
from fuzzing import load_target as _load

CORPUS = Path(__file__).resolve().parents[1] / "data" / "handshake_corpus"


def load_target() -> ModuleType:
    return _load("fuzz_handshake")


def test_seed_corpus_matches_the_wire_format() -> None:
    """The checked-in seeds are what the current code sends (regenerate
    them with --write-corpus after a format change)."""
    target = load_target()
    corpus = {p.name: p.read_bytes() for p in CORPUS.iterdir()}
    assert set(corpus) == set(target.corpus_packets())
    first_bytes = {
        "xx_initiation": 0xC1,
        "ik_initiation": 0xC5,
        "xx_response": 0xC2,
        "ik_response": 0xC2,
        "xx_finish": 0xC3,
        "cookie_reply": 0xC4,
    }
    for name, first in first_bytes.items():
        assert corpus[name][0] == first, name
    responder = target.handshake.Responder(target.BOB, target.NET)
    for name in ("xx_initiation", "ik_initiation"):
        responder.receive_datagram(corpus[name], target.A_ADDR, 0)
        assert len(responder.datagrams_to_send(0)) == 1, name


def test_plain_fuzz_loop() -> None:
    target = load_target()
    n = 200_000 if CI else 20_000
    done = target.run_plain(
        n,
        seed=int.from_bytes(os.urandom(2), "big"),
        corpus=target.load_corpus([CORPUS]),
        max_seconds=10 if CI else 5,
    )
    assert done >= min(n, 5_000)


def test_atheris_fuzz(tmp_path: Path) -> None:
    require_atheris()
    corpus = tmp_path / "corpus"
    shutil.copytree(CORPUS, corpus)  # libFuzzer adds to its first corpus dir
    run_atheris("fuzz_handshake", corpus, tmp_path, seconds=10 if CI else 5, runs=200_000)
