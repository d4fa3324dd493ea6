"""Bounded runs of tests/fuzz/fuzz_beacon.py (the LAN beacon and gossip
parsers): the plain random/mutation loop always, and the coverage-guided
atheris run (required under CI). Longer under CI (``CI`` set)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

HERE = Path(__file__).resolve().parent
TARGET = HERE / "fuzz" / "fuzz_beacon.py"
CI = bool(os.environ.get("CI"))


def load_target() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fuzz_beacon", TARGET)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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
        n, seed=int.from_bytes(os.urandom(2), "big"), max_seconds=20 if CI else 5
    )
    assert done >= min(n, 2_000)


def test_atheris_fuzz(tmp_path: Path) -> None:
    if CI:
        import atheris  # noqa: F401 - CI must have it: a skip would hide the fuzz run
    else:
        pytest.importorskip("atheris")
    corpus = tmp_path / "corpus"
    subprocess.run(
        [sys.executable, str(TARGET), "--write-corpus", str(corpus)], check=True, timeout=60
    )
    seconds = 20 if CI else 5
    proc = subprocess.run(
        [
            sys.executable,
            str(TARGET),
            f"-max_total_time={seconds}",
            "-runs=200000",
            "-rss_limit_mb=2048",
            f"-artifact_prefix={tmp_path}/",
            str(corpus),
        ],
        capture_output=True,
        text=True,
        timeout=seconds + 120,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert not list(tmp_path.glob("crash-*"))
