"""The figures `crust bench` prints and saves, from made-up rounds (no
measurement): min/median/max and spreads, ratios per round pair, the
reasons printed for an unstable figure, the JSON `--compare` reads, and
the comparison itself (this format and the one before it)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from crust.bench import compare, procs
from crust.bench.report import json_document, table
from crust.bench.suite import SMOKE, Outcome, Suite, spread
from crust.cli import main

ROOT = Path(__file__).resolve().parents[2]
QUIET = {"others": 0.0, "steal": 0.0, "load": 0.1}


def _suite(crust: list[float], raw: list[float], seconds: float = 5.0) -> Suite:
    """crust UDP 64 B messages, each round paired with a raw UDP 64 B round
    run just before it."""
    suite = Suite(SMOKE, rounds=len(crust))
    raws = [{"dgrams_per_s": r} for r in raw]
    suite.outcomes["raw UDP 64 B"] = Outcome(
        runs=raws, seconds=[seconds] * len(raw), load=[QUIET] * len(raw)
    )
    suite.outcomes["crust UDP 64 B messages"] = Outcome(
        runs=[{"messages_per_s": c, "aead": "aegis128l"} for c in crust],
        seconds=[seconds] * len(crust),
        paired=[{"raw UDP 64 B": r} for r in raws],
        load=[QUIET] * len(crust),
    )
    return suite


def _row(suite: Suite, case: str, key: str = "messages_per_s") -> dict[str, Any]:
    (row,) = [r for r in suite.rows() if (r["case"], r["key"]) == (case, key)]
    return row


def test_the_ratio_is_the_median_of_the_round_pairs() -> None:
    # The machine halves its speed for the second round: both halve.
    suite = _suite([100.0, 50.0, 110.0], [200.0, 100.0, 200.0])
    row = _row(suite, "crust UDP 64 B messages")
    assert (row["min"], row["value"], row["max"]) == (50.0, 100.0, 110.0)
    assert row["spread"] == pytest.approx(0.6)
    # Pairs: 0.5, 0.5, 0.55 -> median 0.5; the medians' ratio would be the same
    # here but the pairs' spread (10 %) shows the ratio is steady.
    assert row["ratios"] == [0.5, 0.5, 0.55]
    assert row["ratio"] == 0.5
    assert row["ratio_spread"] == pytest.approx(0.1)
    assert row["ratio_method"] == "median of per-round-pair ratios"
    assert "the baseline moved with it (ratio spread 10 %)" in row["why_unstable"]


def test_pairs_and_medians_differ_when_noise_hits_one_pair() -> None:
    # Round 2's baseline ran slow, its crust round did not: the pair is an
    # outlier, the median of pairs ignores it.
    suite = _suite([100.0, 100.0, 100.0], [200.0, 120.0, 210.0])
    row = _row(suite, "crust UDP 64 B messages")
    assert row["ratio"] == pytest.approx(100 / 200)


def test_a_steady_figure_has_no_reason_and_an_unsteady_one_says_what_was_seen() -> None:
    steady = _suite([100.0, 104.0, 98.0], [200.0, 205.0, 199.0])
    assert _row(steady, "crust UDP 64 B messages")["why_unstable"] is None
    noisy = _suite([100.0, 60.0, 98.0], [200.0, 200.0, 199.0], seconds=0.3)
    noisy.outcomes["crust UDP 64 B messages"].load[1] = {"others": 0.9, "steal": 0.2, "load": 3}
    why = _row(noisy, "crust UDP 64 B messages")["why_unstable"]
    assert "other work took up to 0.9" in why
    assert "withheld 20 % of a CPU (steal)" in why
    assert "rounds as short as 0.30 s" in why
    text = table(noisy)
    assert "* spread above 15 %" in text
    line = next(ln for ln in text.splitlines() if "64 B messages delivered" in ln)
    # min, median, max in the shown unit (k msg/s), the flagged spread, the ratio.
    assert "0.06" in line and "0.10" in line and "*41%" in line
    assert "0.49x raw UDP 64 B (0.30-0.50, 41%)" in line


def test_spread() -> None:
    assert spread([1.0]) is None
    assert spread([9.0, 10.0, 11.0]) == pytest.approx(0.2)


def test_one_cpu_means_no_pinning(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(procs.os, "sched_getaffinity", lambda pid: {3})
    plan = procs.Pinning()
    assert plan.near is None and plan.far is None
    assert plan.describe() == "not pinned (only 1 CPU available)"
    monkeypatch.setattr(procs.os, "sched_getaffinity", lambda pid: {0, 1, 2})
    assert procs.Pinning().describe() == "measuring side on CPU 0, far end on CPU 1"
    monkeypatch.setenv("CRUST_BENCH_PIN", "0")
    assert procs.Pinning().why_not == "CRUST_BENCH_PIN=0"


def _write(tmp_path: Path, name: str, suite: Suite) -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(json_document(suite)))
    return path


def test_compare_prints_each_ratio_before_after_and_the_change(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old = _write(tmp_path, "old.json", _suite([100.0, 102.0, 98.0], [200.0, 200.0, 200.0]))
    new = _write(tmp_path, "new.json", _suite([60.0, 61.0, 62.0], [200.0, 200.0, 200.0]))
    doc = json.loads(new.read_text())
    # What --compare needs is in the file: rounds, ratios, spreads, machine.
    (row,) = [
        r
        for r in doc["crust"]["rows"]
        if (r["case"], r["key"]) == ("crust UDP 64 B messages", "messages_per_s")
    ]
    assert row["ratios"] == [0.3, 0.305, 0.31] and row["ratio_spread"] is not None
    assert {"pinning", "cpu_model", "load_average_at_start", "rounds_seen"} <= set(doc["crust"])
    assert "machine_info" in doc and "commit_info" in doc

    (c,) = [c for c in compare.changes(compare.load(old), compare.load(new)) if c.is_ratio]
    assert (c.case, c.key) == ("crust UDP 64 B messages", "messages_per_s")
    assert (c.before, c.after) == (0.5, 0.305)
    assert c.change == pytest.approx(-0.39)
    assert c.verdict == "worse"
    assert main(["bench", "--compare", str(old), str(new)]) == 0
    out = capsys.readouterr().out
    line = next(ln for ln in out.splitlines() if "64 B messages delivered" in ln)
    assert "0.50x" in line and "0.30x" in line and "-39%" in line and "worse" in line


def test_a_change_inside_the_spread_is_called_noise(tmp_path: Path) -> None:
    old = _write(tmp_path, "old.json", _suite([100.0, 80.0, 100.0], [200.0, 200.0, 200.0]))
    new = _write(tmp_path, "new.json", _suite([90.0, 92.0, 91.0], [200.0, 200.0, 200.0]))
    (c,) = [c for c in compare.changes(compare.load(old), compare.load(new)) if c.is_ratio]
    assert c.change == pytest.approx(-0.09) and c.noise == pytest.approx(0.2)
    assert c.verdict == "within noise"


def test_compare_reads_the_format_before_the_crust_section() -> None:
    # docs/data/bench.json was written by `crust bench` before this format.
    old = compare.load(ROOT / "docs" / "data" / "bench.json")
    assert any(r.get("ratio") for r in old.rows.values())
    cs = compare.changes(old, old)
    assert cs and all(c.change == 0 for c in cs)


def test_compare_refuses_what_it_cannot_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    assert main(["bench", "--compare", str(bad), str(bad)]) == 2
    assert "not a crust bench JSON file" in capsys.readouterr().err
    assert main(["bench", "--compare", "a", "b", "c"]) == 2
