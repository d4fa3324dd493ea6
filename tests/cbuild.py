"""Compiling C for the tests (tests/test_c_units.py, tests/test_fuzz_c.py):
many compiler commands at once, and one failure report naming each that
failed with its output."""

from __future__ import annotations

import os
import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest

TIMEOUT = 600


def build(jobs: list[list[str]], what: str) -> None:
    """Run the compiler commands ``jobs`` in parallel; fail the test with
    the output of any that fail ("building ``what`` failed")."""
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        results = list(
            pool.map(
                lambda cmd: subprocess.run(
                    cmd,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    text=True,
                    errors="replace",
                    timeout=TIMEOUT,
                    check=False,
                ),
                jobs,
            )
        )
    failed = [r for r in results if r.returncode != 0]
    if failed:
        report = "\n\n".join(f"{' '.join(r.args)}\n{r.stdout}" for r in failed)
        pytest.fail(f"building {what} failed:\n{report}", pytrace=False)
