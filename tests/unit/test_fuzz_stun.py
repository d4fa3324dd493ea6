"""Bounded runs of tests/fuzz/fuzz_stun.py: the plain random/mutation loop,
and a coverage-guided atheris run (required under CI). Longer under CI."""

from __future__ import annotations

import os
from pathlib import Path
from types import ModuleType

from fuzzing import CI, require_atheris, run_atheris, seed_corpus
from fuzzing import load_target as _load


def load_target() -> ModuleType:
    return _load("fuzz_stun")


def test_seeds_are_valid_messages() -> None:
    target = load_target()
    from crust.nat import stun

    for data in target.seeds():
        assert stun.decode(data).txid == target.TXID


def test_plain_fuzz_loop() -> None:
    target = load_target()
    n = 100_000 if CI else 10_000
    done = target.run_plain(
        n, seed=int.from_bytes(os.urandom(2), "big"), max_seconds=8 if CI else 4
    )
    assert done >= min(n, 3_000)


def test_atheris_fuzz(tmp_path: Path) -> None:
    require_atheris()
    corpus = seed_corpus(tmp_path, load_target().seeds())
    run_atheris("fuzz_stun", corpus, tmp_path, seconds=8 if CI else 4, runs=300_000)
