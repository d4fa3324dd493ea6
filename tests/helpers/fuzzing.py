"""What the bounded fuzz runs of the Python fuzz targets (tests/fuzz/*.py)
share: loading a target as a module, and one coverage-guided atheris run
that must finish without a crash. Longer under CI (``CI`` set), where
atheris is required: a skip would hide the fuzz run."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType

from capability import CI, missing

__all__ = ["CI", "FUZZ_DIR", "load_target", "require_atheris", "run_atheris"]

FUZZ_DIR = Path(__file__).resolve().parents[1] / "fuzz"


def load_target(name: str) -> ModuleType:
    """tests/fuzz/<name>.py as a module (its harness, seeds, plain loop)."""
    spec = importlib.util.spec_from_file_location(name, FUZZ_DIR / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def require_atheris() -> None:
    """Under CI atheris must be there; elsewhere its absence skips."""
    if importlib.util.find_spec("atheris") is None:
        missing("atheris is not installed (pip install -e '.[test]')")


def seed_corpus(workdir: Path, seeds: Iterable[bytes]) -> Path:
    """A fresh corpus directory under ``workdir`` holding ``seeds``."""
    corpus = workdir / "corpus"
    corpus.mkdir()
    for i, data in enumerate(seeds):
        (corpus / f"seed{i}").write_bytes(data)
    return corpus


def run_atheris(name: str, corpus: Path, workdir: Path, seconds: int, runs: int) -> None:
    """One atheris run of tests/fuzz/<name>.py over ``corpus`` (which it
    may extend); fails with the fuzzer's output on a crash or timeout."""
    proc = subprocess.run(
        [
            sys.executable,
            str(FUZZ_DIR / f"{name}.py"),
            f"-max_total_time={seconds}",
            f"-runs={runs}",
            "-rss_limit_mb=2048",
            f"-artifact_prefix={workdir}/",
            str(corpus),
        ],
        capture_output=True,
        text=True,
        timeout=seconds + 120,
        cwd=workdir,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert not list(workdir.glob("crash-*"))
