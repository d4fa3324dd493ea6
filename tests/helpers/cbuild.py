"""Compiling C for the tests (tests/engine/test_c_units.py, tests/engine/test_fuzz_c.py):
many compiler commands at once, and one failure report naming each that
failed with its output."""

from __future__ import annotations

import os
import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest

TIMEOUT = 600


def run(
    cmd: list[str],
    *,
    timeout: float = TIMEOUT,
    cwd: str | os.PathLike[str] | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``cmd`` to the end; its stdout and stderr together, as text, in
    ``.stdout``. Never raises for a non-zero exit: callers report it."""
    return subprocess.run(
        cmd,
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        timeout=timeout,
        check=False,
    )


def build(jobs: list[list[str]], what: str) -> None:
    """Run the compiler commands ``jobs`` in parallel; fail the test with
    the output of any that fail ("building ``what`` failed")."""
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        results = list(pool.map(run, jobs))
    failed = [r for r in results if r.returncode != 0]
    if failed:
        report = "\n\n".join(f"{' '.join(r.args)}\n{r.stdout}" for r in failed)
        pytest.fail(f"building {what} failed:\n{report}", pytrace=False)
