"""The suite object shared by benchmarks/bench_suite.py's tests, and the
table of the whole run printed at the end of the session."""

from __future__ import annotations

import os
from typing import Any

import pytest

from crust.bench.report import table
from crust.bench.suite import FULL, SMOKE, Suite

# CRUST_BENCH_SMOKE=1: every case at tiny sizes (CI's check that they run).
SUITE = Suite(SMOKE if os.environ.get("CRUST_BENCH_SMOKE") else FULL)


@pytest.fixture(scope="session")
def suite() -> Suite:
    return SUITE


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if SUITE.outcomes:
        terminalreporter.write_sep("=", "crust bench: figures and ratios (same run)")
        terminalreporter.write_line(table(SUITE))
