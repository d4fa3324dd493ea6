"""The suite object shared by benchmarks/bench_suite.py's tests, the
table of the whole run printed at the end of the session, and collection
of ``bench_*.py`` files (pytest's default pattern is ``test_*.py``), so
that ``pytest benchmarks/`` finds every suite."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from crust.bench.report import table
from crust.bench.suite import FULL, SMOKE, Suite

# CRUST_BENCH_SMOKE=1: every case at tiny sizes (CI's check that they run).
SUITE = Suite(SMOKE if os.environ.get("CRUST_BENCH_SMOKE") else FULL)


@pytest.fixture(scope="session")
def suite() -> Suite:
    return SUITE


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Module | None:
    # Files named on the command line are collected by pytest itself.
    if file_path.name.startswith("bench_") and file_path.suffix == ".py":
        if not parent.session.isinitpath(file_path):
            return pytest.Module.from_parent(parent, path=file_path)
    return None


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if SUITE.outcomes:
        terminalreporter.write_sep("=", "crust bench: figures and ratios (same run)")
        terminalreporter.write_line(table(SUITE))
