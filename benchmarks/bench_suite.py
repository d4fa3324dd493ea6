"""The whole crust benchmark suite (``crust.bench``) under pytest-benchmark:
one test per case, in the suite's order (baselines first), each run for
the suite's rounds; the table of figures and ratios to the baselines of
this run is printed at the end of the session.

    pytest benchmarks/ --benchmark-only --benchmark-json=out.json
    CRUST_BENCH_SMOKE=1 pytest benchmarks/bench_suite.py --benchmark-only

``crust bench`` runs the same cases without pytest. Each test's
``extra_info`` holds its figures (medians over the rounds) and ratios; the
benchmark's own timing is each round's wall time.
"""

from __future__ import annotations

from typing import Any

import pytest

from crust.bench.suite import CASES, Suite


@pytest.mark.parametrize("name", [c.name for c in CASES])
def test_case(benchmark: Any, suite: Suite, name: str) -> None:
    case = suite.case(name)
    why = case.needs()
    if why is not None:
        pytest.skip(why)
    for figure in case.figures:
        if figure.baseline:
            suite.baseline(figure.baseline)  # measured by its own test when that ran first
    benchmark.group = case.group
    benchmark.pedantic(lambda: suite.run_round(case), rounds=suite.rounds, iterations=1)
    for row in suite.rows():
        if row["case"] != name:
            continue
        benchmark.extra_info[row["key"]] = row["value"]
        if row["ratio"] is not None:
            benchmark.extra_info[f"{row['key']}_ratio_vs_{row['baseline']}"] = row["ratio"]
        if "met" in row:
            benchmark.extra_info[f"{row['key']}_target"] = f"{row['target']}: {row['met']}"
