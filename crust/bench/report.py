"""The suite's output: a plain-text table of absolute figures and ratios,
and JSON in pytest-benchmark's format (``pytest-benchmark compare`` reads
it; the figures and ratios are in each entry's ``extra_info``, the
``stats`` are the rounds' wall times)."""

from __future__ import annotations

import datetime
import os
import platform
import statistics
import subprocess
from pathlib import Path
from typing import Any

from crust._version import __version__
from crust.bench.suite import CASES, Suite

__all__ = ["baseline_name", "json_document", "table"]


def _num(v: float) -> str:
    if v >= 100 or v == int(v):
        return f"{v:,.0f}"
    if v >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def baseline_name(case: str, baseline: str) -> str:
    """How the table names a figure's baseline (``"case/key"``): its case,
    or, for a baseline run inside the case itself (crust TCP bulk runs raw
    TCP just before, round by round), what that run was."""
    base = baseline.split("/")[0]
    if base != case:
        return base
    return "raw TCP run just before" if "raw_tcp" in baseline else "same case"


def table(suite: Suite) -> str:
    """The whole run as a table: one line per figure."""
    head = (
        f"crust bench ({suite.sizes.name}: median of {suite.rounds} round"
        f"{'s' if suite.rounds > 1 else ''}; loopback, {os.cpu_count()} CPUs; "
        f"crust {__version__})"
    )
    lines = [head, ""]
    w = 46
    lines.append(
        f"{'':<11}{'benchmark':<{w}}{'figure':>12} {'unit':<10}{'spread':>7}  "
        "vs baseline (same run)"
    )
    group = None
    for r in suite.rows():
        g = r["group"] if r["group"] != group else ""
        group = r["group"]
        label = r["label"] + (f" [{r['aead']}]" if r.get("aead") and r["label"][0] != " " else "")
        if r["shown"] is None:
            lines.append(f"{g:<11}{label:<{w}}{'-':>12} {r['unit']:<10}{'':>7}  {r['error'] or ''}")
            continue
        vs = ""
        if r["ratio"] is not None:
            vs = f"{r['ratio']:6.2f}x {baseline_name(r['case'], r['baseline'])}"
        if "target" in r:
            verdict = {True: "met", False: "MISSED", None: "?"}[r["met"]]
            vs += f"{'  ' if vs else ''}target {r['target']}: {verdict}"
        spread = "" if r["spread"] is None or r["rounds"] < 2 else f"{100 * r['spread']:.0f}%"
        lines.append(f"{g:<11}{label:<{w}}{_num(r['shown']):>12} {r['unit']:<10}{spread:>7}  {vs}")
    lines.append("")
    for t in suite.extra_targets():
        got = "-" if t["ratio"] is None else f"{t['ratio']:.1f}x"
        verdict = {True: "met", False: "MISSED", None: "?"}[t["met"]]
        lines.append(
            f"{'ratio':<11}{t['what']:<{w}}{got:>12} {'':<10}{'':>7}  "
            f"target {t['target']}: {verdict}"
        )
    return "\n".join(lines)


def _commit_info() -> dict[str, Any]:
    root = Path(__file__).resolve().parents[2]
    try:
        rev = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
        dirty = bool(
            subprocess.run(
                ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                capture_output=True,
                text=True,
                timeout=5,
                check=True,
            ).stdout.strip()
        )
    except (OSError, subprocess.SubprocessError):
        return {"error": "not a git checkout"}
    return {"id": rev, "dirty": dirty, "project": "crust"}


def _stats(seconds: list[float]) -> dict[str, Any]:
    s = sorted(seconds)
    n = len(s)
    q = statistics.quantiles(s, n=4) if n > 1 else [s[0]] * 3
    mean = statistics.fmean(s)
    return {
        "min": s[0],
        "max": s[-1],
        "mean": mean,
        "stddev": statistics.stdev(s) if n > 1 else 0.0,
        "rounds": n,
        "median": statistics.median(s),
        "iqr": q[2] - q[0],
        "q1": q[0],
        "q3": q[2],
        "iqr_outliers": 0,
        "stddev_outliers": 0,
        "outliers": "0;0",
        "ld15iqr": s[0],
        "hd15iqr": s[-1],
        "ops": 1.0 / mean if mean else 0.0,
        "total": sum(s),
        "iterations": 1,
        "data": s,
    }


def json_document(suite: Suite) -> dict[str, Any]:
    rows = suite.rows()
    benches = []
    for case in CASES:
        out = suite.outcomes.get(case.name)
        if out is None or not out.seconds:
            continue
        mine = [r for r in rows if r["case"] == case.name]
        extra: dict[str, Any] = {"sizes": suite.sizes.name}
        for r in mine:
            extra[r["key"]] = r["value"]
            if r["ratio"] is not None:
                extra[f"{r['key']}_ratio_vs_{r['baseline']}"] = r["ratio"]
            if "met" in r:
                extra[f"{r['key']}_target"] = f"{r['target']}: {r['met']}"
        if mine and mine[0].get("aead"):
            extra["aead"] = mine[0]["aead"]
        benches.append(
            {
                "group": case.group,
                "name": case.name,
                "fullname": f"crust.bench::{case.name}",
                "params": None,
                "param": None,
                "extra_info": extra,
                "options": {
                    "disable_gc": False,
                    "timer": "perf_counter",
                    "min_rounds": suite.rounds,
                    "max_time": 0.0,
                    "min_time": 0.0,
                    "warmup": False,
                },
                "stats": _stats(out.seconds),
            }
        )
    uname = platform.uname()
    return {
        "machine_info": {
            "node": uname.node,
            "processor": uname.processor,
            "machine": uname.machine,
            "python_compiler": platform.python_compiler(),
            "python_implementation": platform.python_implementation(),
            "python_implementation_version": platform.python_version(),
            "python_version": platform.python_version(),
            "python_build": list(platform.python_build()),
            "release": uname.release,
            "system": uname.system,
            "cpu": {"count": os.cpu_count()},
        },
        "commit_info": _commit_info(),
        "benchmarks": benches,
        "datetime": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        "version": "5.1.0",
        "crust_extra_targets": suite.extra_targets(),
    }
