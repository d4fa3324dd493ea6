"""Constant time of the C code that handles secrets without libsodium,
under Valgrind's memcheck: each harness in tests/c/ct_*.c marks the secret
inputs it hands over as undefined, and memcheck reports any branch or
memory index that depends on them.

- ct_elligator.c: csrc/elligator.c and csrc/fe25519.c (private keys,
  tweaks, representatives, points);
- ct_header_mask.c: csrc/header_mask.c and csrc/chacha20.c (the key and
  every byte of the packet: the unmasked packet-number length included).

Built at the optimisation levels a compiler is most tempted to turn masked
selections back into branches. Each harness's "leaky" mode must be
reported, so the check can fail."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from capability import missing
from cbuild import build, run

ROOT = Path(__file__).resolve().parents[2]
CSRC = ROOT / "csrc"
C_TESTS = ROOT / "tests" / "c"

#: harness -> (the csrc files it checks, its "ct" arguments, what it prints)
HARNESSES = {
    "ct_elligator": (["elligator.c", "fe25519.c"], ["ct", "12"], "12 rounds"),
    "ct_header_mask": (["header_mask.c", "chacha20.c"], ["ct", "200"], "200 rounds"),
}
_BRANCH = "Conditional jump or move depends on uninitialised value"
#: What each harness's "leaky" mode must be caught at.
LEAKS = {
    "ct_elligator": [_BRANCH, "Use of uninitialised value"],  # a branch and a table index
    "ct_header_mask": [_BRANCH],  # a loop bound on the unmasked pn length
}


def _tools() -> tuple[str, str]:
    cc = shutil.which(os.environ.get("CC", "cc"))
    valgrind = shutil.which("valgrind")
    if cc is None:
        missing("no C compiler (cc) found")
    if valgrind is None or not Path("/usr/include/valgrind/memcheck.h").exists():
        missing("valgrind (and its memcheck.h) is not installed")
    return cc, valgrind


def _build(tmp_path: Path, harness: str, opt: str) -> Path:
    cc, _ = _tools()
    exe = tmp_path / f"{harness}{opt}"
    sources, _, _ = HARNESSES[harness]
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
                f"-I{C_TESTS}",
                str(C_TESTS / f"{harness}.c"),
                *(str(CSRC / s) for s in sources),
                "-o",
                str(exe),
            ]
        ],
        "the constant-time harness",
    )
    return exe


@pytest.mark.parametrize("opt", ["-O2", "-O3"])
@pytest.mark.parametrize("harness", list(HARNESSES))
def test_no_secret_branch_or_index(tmp_path: Path, harness: str, opt: str) -> None:
    _, valgrind = _tools()
    exe = _build(tmp_path, harness, opt)
    _, args, done = HARNESSES[harness]
    proc = run([valgrind, "-q", "--error-exitcode=99", str(exe), *args], timeout=600)
    assert proc.returncode == 0, proc.stdout[-6000:]
    assert done in proc.stdout
    assert "depends on uninitialised" not in proc.stdout


@pytest.mark.parametrize("harness", list(HARNESSES))
def test_the_check_sees_a_secret_branch(tmp_path: Path, harness: str) -> None:
    _, valgrind = _tools()
    exe = _build(tmp_path, harness, "-O2")
    proc = run([valgrind, "-q", "--error-exitcode=99", str(exe), "leaky"], timeout=120)
    assert proc.returncode == 99, proc.stdout
    for report in LEAKS[harness]:
        assert report in proc.stdout
