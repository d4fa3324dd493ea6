"""Bounded runs of tests/fuzz/fuzz_beacon.py (the LAN beacon and gossip
parsers): the plain random/mutation loop always, and the coverage-guided
atheris run (required under CI). Longer under CI (``CI`` set)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

from fuzzing import CI, FUZZ_DIR, require_atheris, run_atheris
from fuzzing import load_target as _load

TARGET = FUZZ_DIR / "fuzz_beacon.py"


def load_target() -> ModuleType:
    return _load("fuzz_beacon")


def test_seeds_are_valid_and_reach_past_the_signature() -> None:
    target = load_target()
    harness = target.Harness()
    for name, data in target.corpus_packets().items():
        harness.one(data)
        if name.startswith("beacon"):
            assert target.beacon.parse_untrusted(data).endpoints, name
    # The query was believed (re-signed or not) and answered.
    assert harness.bob.stats["replies_sent"] >= 1
    assert harness.rx.stats["accepted"] >= 1


def test_plain_fuzz_loop() -> None:
    target = load_target()
    n = 100_000 if CI else 10_000
    done = target.run_plain(
        n, seed=int.from_bytes(os.urandom(2), "big"), max_seconds=10 if CI else 5
    )
    assert done >= min(n, 2_000)


def test_atheris_fuzz(tmp_path: Path) -> None:
    require_atheris()
    corpus = tmp_path / "corpus"
    subprocess.run(
        [sys.executable, str(TARGET), "--write-corpus", str(corpus)], check=True, timeout=60
    )
    run_atheris("fuzz_beacon", corpus, tmp_path, seconds=10 if CI else 5, runs=200_000)
