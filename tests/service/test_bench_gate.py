"""The CI performance gate (crust.bench.gate): a bounded bench whose
ratios must stay within 30 % of benchmarks/reference.json, and proof that
it can fail: against a doctored reference, and with a real slowdown of
crust's sending side injected (CRUST_BENCH_SLOWDOWN, read only by the
bench's own sender). Pinning of the bench's processes is checked too."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from crust.bench import gate, procs

REFERENCE = Path(__file__).resolve().parents[2] / "benchmarks" / "reference.json"


def test_ratios_hold_against_the_committed_reference() -> None:
    reference = json.loads(REFERENCE.read_text())
    assert set(reference["ratios"]) == {gate._name(*g) for g in gate.GATED}
    t0 = time.monotonic()
    measured = gate.measure()
    verdicts = gate.check(reference, measured)
    if any(v.failed for v in verdicts):
        # What the gate does in CI too: a second, fresh measurement of what
        # fell below; only a ratio below its floor twice fails.
        verdicts = gate.recheck(reference, verdicts)
    took = time.monotonic() - t0
    failed = [str(v) for v in verdicts if v.failed]
    assert not failed, "\n".join([*failed, f"load average {os.getloadavg()}"])

    # The same measurement against a reference 1.6 times higher (as if
    # every ratio had fallen by 38 %) fails on every figure.
    doctored = {
        "ratios": {
            name: {**ref, "ratio": measured[name]["ratio"] * 1.6}
            for name, ref in reference["ratios"].items()
        }
    }
    assert all(v.failed for v in gate.check(doctored, measured))
    assert took < 60, f"the gate took {took:.0f} s"


def test_an_injected_slowdown_fails_the_gate(monkeypatch: pytest.MonkeyPatch) -> None:
    # The sending application burns twice the CPU time crust spends: crust
    # TCP bulk does 3 times the work per byte, its ratio to raw TCP falls
    # well past 30 %, and the gate says so, on a shorter run.
    reference = json.loads(REFERENCE.read_text())
    name = gate._name(*gate.GATED[1])
    assert reference["ratios"][name]["case"] == "crust TCP bulk"
    monkeypatch.setenv("CRUST_BENCH_SLOWDOWN", "2")
    measured = gate.measure(["crust TCP bulk"], rounds=3)
    (verdict,) = gate.check({"ratios": {name: reference["ratios"][name]}}, measured)
    assert verdict.failed, str(verdict)
    # Not by a hair: the ratio falls to well under the floor.
    assert verdict.measured[0] < 0.8 * verdict.floor, str(verdict)


def _affinity(pipe: Any) -> None:
    pipe.send(sorted(os.sched_getaffinity(0)))


def test_both_ends_are_pinned_to_separate_cores() -> None:
    plan = procs.pinning()
    if plan.why_not:
        pytest.skip(f"pinning is off here: {plan.why_not}")  # one CPU: nothing to pin
    before = os.sched_getaffinity(0)
    with procs.pinned():
        assert os.sched_getaffinity(0) == {plan.near}
        with procs.child(_affinity) as pipe:
            assert pipe.recv() == [plan.far]
    assert os.sched_getaffinity(0) == before
