"""Bounded runs of tests/fuzz/fuzz_stun.py: the plain random/mutation loop,
and a coverage-guided atheris run (required under CI). Longer under CI."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

TARGET = Path(__file__).resolve().parent / "fuzz" / "fuzz_stun.py"
CI = bool(os.environ.get("CI"))


def load_target() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fuzz_stun", TARGET)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_seeds_are_valid_messages() -> None:
    target = load_target()
    from crust.nat import stun

    for data in target.seeds():
        assert stun.decode(data).txid == target.TXID


def test_plain_fuzz_loop() -> None:
    target = load_target()
    n = 100_000 if CI else 10_000
    done = target.run_plain(
        n, seed=int.from_bytes(os.urandom(2), "big"), max_seconds=15 if CI else 4
    )
    assert done >= min(n, 3_000)


def test_atheris_fuzz(tmp_path: Path) -> None:
    if CI:
        import atheris  # noqa: F401 - CI must have it: a skip would hide the fuzz run
    else:
        pytest.importorskip("atheris")
    seconds = 15 if CI else 4
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i, data in enumerate(load_target().seeds()):
        (corpus / f"seed{i}").write_bytes(data)
    proc = subprocess.run(
        [
            sys.executable,
            str(TARGET),
            f"-max_total_time={seconds}",
            "-runs=300000",
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
