"""Bounded runs of tests/fuzz/fuzz_dht_record.py: the plain random/mutation
loop, and a coverage-guided atheris run (required under CI). Longer under CI."""

from __future__ import annotations

import os
from pathlib import Path
from types import ModuleType

from fuzzing import CI, require_atheris, run_atheris, seed_corpus
from fuzzing import load_target as _load


def load_target() -> ModuleType:
    return _load("fuzz_dht_record")


def test_seeds_are_valid_records() -> None:
    target = load_target()
    from crust.dht import record

    for data in target.seeds():
        signed = record.SignedItem(
            bytes(target.IDENT.peer_id), target.SALT, 7, data,
            record.sign(target.IDENT, target.SALT, 7, data),
        )  # fmt: skip
        record.verify(signed, peer_id=target.IDENT.peer_id, salt=target.SALT, now=target.NOW)


def test_plain_fuzz_loop() -> None:
    target = load_target()
    n = 50_000 if CI else 5_000
    done = target.run_plain(
        n, seed=int.from_bytes(os.urandom(2), "big"), max_seconds=8 if CI else 4
    )
    assert done >= min(n, 1_000)


def test_atheris_fuzz(tmp_path: Path) -> None:
    require_atheris()
    corpus = seed_corpus(tmp_path, load_target().seeds())
    run_atheris("fuzz_dht_record", corpus, tmp_path, seconds=8 if CI else 4, runs=300_000)
