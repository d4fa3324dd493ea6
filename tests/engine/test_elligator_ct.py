"""Constant time of the Elligator code (csrc/elligator.c, csrc/fe25519.c)
under Valgrind's memcheck: tests/c/ct_elligator.c marks the private keys,
tweaks, representatives and points it hands over as undefined, and memcheck
reports any branch or memory index that depends on them. Built at the
optimisation levels a compiler is most tempted to turn masked selections
back into branches. The harness's "leaky" mode must be reported, so the
check can fail."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from capability import missing
from cbuild import build, run

ROOT = Path(__file__).resolve().parents[2]
CSRC = ROOT / "csrc"
HARNESS = ROOT / "tests" / "c" / "ct_elligator.c"


def _tools() -> tuple[str, str]:
    cc = shutil.which(os.environ.get("CC", "cc"))
    valgrind = shutil.which("valgrind")
    if cc is None:
        missing("no C compiler (cc) found")
    if valgrind is None or not Path("/usr/include/valgrind/memcheck.h").exists():
        missing("valgrind (and its memcheck.h) is not installed")
    return cc, valgrind


def _build(tmp_path: Path, opt: str) -> Path:
    cc, _ = _tools()
    exe = tmp_path / f"ct_elligator{opt}"
    build(
        [
            [
                cc,
                "-std=gnu11",
                opt,
                "-g",
                "-Wall",
                "-Wextra",
                "-Werror",
                f"-I{CSRC}",
                f"-I{HARNESS.parent}",
                str(HARNESS),
                str(CSRC / "elligator.c"),
                str(CSRC / "fe25519.c"),
                "-o",
                str(exe),
            ]
        ],
        "the constant-time harness",
    )
    return exe


@pytest.mark.parametrize("opt", ["-O2", "-O3"])
def test_elligator_has_no_secret_branch_or_index(tmp_path: Path, opt: str) -> None:
    _, valgrind = _tools()
    exe = _build(tmp_path, opt)
    proc = run([valgrind, "-q", "--error-exitcode=99", str(exe), "ct", "12"], timeout=600)
    assert proc.returncode == 0, proc.stdout[-6000:]
    assert "12 rounds" in proc.stdout
    assert "depends on uninitialised" not in proc.stdout


def test_the_check_sees_a_secret_branch(tmp_path: Path) -> None:
    _, valgrind = _tools()
    exe = _build(tmp_path, "-O2")
    proc = run([valgrind, "-q", "--error-exitcode=99", str(exe), "leaky"], timeout=120)
    assert proc.returncode == 99, proc.stdout
    assert "Conditional jump or move depends on uninitialised value" in proc.stdout
    assert "Use of uninitialised value" in proc.stdout
