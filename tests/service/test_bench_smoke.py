"""`crust bench --smoke`: every benchmark case runs at tiny sizes and the
run yields a complete table and pytest-benchmark JSON. Timings are not
asserted (CI machines are shared); completeness and consistency are."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from crust.bench.report import baseline_name
from crust.bench.suite import CASES, SMOKE, Outcome, Suite, Target
from crust.cli import main


def test_crust_bench_smoke_gives_a_complete_table_and_json(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "-m", "crust", "bench", "--smoke", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    table = proc.stdout
    # Every figure of every case has a number: no failed or skipped case.
    assert "failed" not in table and "skipped" not in table, table
    # Rows come in the suite's order: each figure's row is the next one
    # carrying its label.
    lines = iter(table.splitlines())
    for case in CASES:
        for figure in case.figures:
            line = next((ln for ln in lines if figure.label in ln), None)
            assert line is not None, f"{case.name}: no row {figure.label!r}\n{table}"
            assert f" - {figure.unit}" not in line, f"{case.name}: no figure\n{line}"
            if figure.baseline:
                assert f"x {baseline_name(case.name, figure.baseline)}" in line, line
    assert "crust UDP bulk / aioquic bulk" in table

    doc = json.loads(out.read_text())
    assert {"machine_info", "commit_info", "benchmarks", "datetime", "version"} <= set(doc)
    by_name = {b["name"]: b for b in doc["benchmarks"]}
    assert set(by_name) == {c.name for c in CASES}
    for case in CASES:
        b = by_name[case.name]
        # A baseline runs once before each round of every case dividing by
        # it (interleaved, design note 0072): more rounds than the others.
        rounds = b["stats"]["rounds"]
        assert rounds >= SMOKE.rounds if case.group == "baseline" else rounds == SMOKE.rounds
        assert b["stats"]["min"] > 0
        for figure in case.figures:
            value = b["extra_info"][figure.key]
            assert isinstance(value, float), (case.name, figure.key, value)
            # Cookie replies and GSO use may be 0 (none needed, none in the
            # kernel); measured rates and sizes may not.
            maybe_zero = figure.key in ("cookie_replies", "gso_share")
            assert value > 0 or maybe_zero, (case.name, figure.key, value)
            if figure.baseline:
                ratio = b["extra_info"][f"{figure.key}_ratio_vs_{figure.baseline}"]
                assert ratio > 0
    # pytest-benchmark's own reader takes the file.
    compare = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from pytest_benchmark.cli import main; "
            "sys.argv = ['pytest-benchmark', 'compare', sys.argv[1]]; main()",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert compare.returncode == 0 and "crust UDP bulk" in compare.stdout, compare.stderr


def test_ratios_divide_by_the_baseline_of_the_same_run() -> None:
    suite = Suite(SMOKE)
    suite.outcomes["raw UDP 64 B"] = _outcome(
        [{"dgrams_per_s": 100.0}, {"dgrams_per_s": 300.0}, {"dgrams_per_s": 200.0}]
    )
    suite.outcomes["crust UDP 64 B messages"] = _outcome(
        [{"messages_per_s": 50.0}, {"messages_per_s": 70.0}, {"messages_per_s": 10.0}]
    )
    (row,) = [
        r
        for r in suite.rows()
        if (r["case"], r["key"]) == ("crust UDP 64 B messages", "messages_per_s")
    ]
    # Medians (200 and 50), not means or the last round.
    assert row["value"] == 50.0 and row["ratio"] == 0.25
    assert row["met"] is False and row["target"] == ">= 0.5x"
    assert Target("value", 16, at_most=True).met(15.9)
    assert not Target("value", 16, at_most=True).met(16.1)


def _outcome(runs: list[dict[str, float]]) -> Outcome:
    return Outcome(runs=list(runs), seconds=[1.0] * len(runs))


def test_crust_bench_refuses_bad_arguments(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["bench", "--rounds", "0", "--json", str(tmp_path / "x.json")]) == 2
    assert "--rounds must be in 1..100, got 0" in capsys.readouterr().err
    assert main(["bench", "--only", "no such case", "--json", str(tmp_path / "x.json")]) == 2
    assert "no case matches" in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()
