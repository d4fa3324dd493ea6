"""The suite's output: a plain-text table of absolute figures (min, median,
max over the rounds) and ratios, and JSON in pytest-benchmark's format
(``pytest-benchmark compare`` reads it; the figures and ratios are in
each entry's ``extra_info``, the ``stats`` are the rounds' wall times).
The JSON's ``crust`` section holds every round, paired baseline round and
ratio, what ``crust bench --compare`` reads (``crust.bench.compare``)."""

from __future__ import annotations

import datetime
import os
import platform
import statistics
import subprocess
from pathlib import Path
from typing import Any

from crust._version import __version__
from crust.bench.procs import pinning
from crust.bench.suite import CASES, STABLE, Suite

__all__ = ["FORMAT", "baseline_name", "commit_info", "cpu_model", "json_document", "table"]

# The version of the "crust" section of the JSON.
FORMAT = 1


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


def _ratio_text(r: dict[str, Any]) -> str:
    if r["ratio"] is None:
        return ""
    text = f"{r['ratio']:6.2f}x {baseline_name(r['case'], r['baseline'])}"
    if r.get("ratio_spread") is not None:
        text += f" ({r['ratio_min']:.2f}-{r['ratio_max']:.2f}, {100 * r['ratio_spread']:.0f}%)"
    return text


def table(suite: Suite) -> str:
    """The whole run as a table: one line per figure, its min, median and
    max over the rounds, their spread, and its ratio to the baseline (the
    median of the per-round-pair ratios, with their range and spread);
    then why any spread is above 15 %."""
    load = ", ".join(f"{x:.2f}" for x in suite.load_at_start)
    head = (
        f"crust bench ({suite.sizes.name}: {suite.rounds} round"
        f"{'s' if suite.rounds > 1 else ''} per case, min/median/max; loopback, "
        f"{os.cpu_count()} CPUs, {pinning().describe()}; load average at start {load}; "
        f"crust {__version__})"
    )
    lines = [head, ""]
    w = 44
    lines.append(
        f"{'':<11}{'benchmark':<{w}}{'min':>9}{'median':>9}{'max':>9} {'unit':<10}"
        f"{'spread':>7}  vs baseline (same run): median ratio (min-max, spread)"
    )
    group = None
    rows = suite.rows()
    for r in rows:
        g = r["group"] if r["group"] != group else ""
        group = r["group"]
        label = r["label"] + (f" [{r['aead']}]" if r.get("aead") and r["label"][0] != " " else "")
        if r["shown"] is None:
            lines.append(
                f"{g:<11}{label:<{w}}{'':>18}{'-':>9} {r['unit']:<10}{'':>7}  {r['error'] or ''}"
            )
            continue
        vs = _ratio_text(r)
        if "target" in r:
            verdict = {True: "met", False: "MISSED", None: "?"}[r["met"]]
            vs += f"{'  ' if vs else ''}target {r['target']}: {verdict}"
        spread = "" if r["spread"] is None else f"{100 * r['spread']:.0f}%"
        if r["why_unstable"]:
            spread = "*" + spread
        lo = "" if r["rounds"] < 2 else _num(r["min"] / r["scale"])
        hi = "" if r["rounds"] < 2 else _num(r["max"] / r["scale"])
        lines.append(
            f"{g:<11}{label:<{w}}{lo:>9}{_num(r['shown']):>9}{hi:>9} {r['unit']:<10}"
            f"{spread:>7}  {vs}"
        )
    lines.append("")
    for t in suite.extra_targets():
        got = "-" if t["ratio"] is None else f"{t['ratio']:.1f}x"
        verdict = {True: "met", False: "MISSED", None: "?"}[t["met"]]
        lines.append(
            f"{'ratio':<11}{t['what']:<{w}}{'':>18}{got:>9} {'':<10}{'':>7}  "
            f"target {t['target']}: {verdict}"
        )
    unstable = [r for r in rows if r["why_unstable"]]
    if unstable:
        lines += ["", f"* spread above {100 * STABLE:.0f} % (figure or ratio), and what was seen:"]
        for r in unstable:
            rs = "" if r.get("ratio_spread") is None else f", ratio {100 * r['ratio_spread']:.0f}%"
            lines.append(
                f"  {r['case']}: {r['label'].strip()} ({100 * (r['spread'] or 0):.0f}%{rs}): "
                f"{r['why_unstable']}"
            )
    return "\n".join(lines)


def _git(where: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(where), *args],
        capture_output=True,
        text=True,
        timeout=5,
        check=True,
    ).stdout.strip()


def commit_info() -> dict[str, Any]:
    """The git revision measured: the checkout the package was imported
    from (an editable install or the source tree), else the current
    directory's (an installed wheel run from its checkout)."""
    for where in (Path(__file__).resolve().parents[2], Path.cwd()):
        try:
            rev = _git(where, "rev-parse", "HEAD")
            dirty = bool(_git(where, "status", "--porcelain", "--untracked-files=no"))
            branch = _git(where, "rev-parse", "--abbrev-ref", "HEAD")
        except (OSError, subprocess.SubprocessError):
            continue
        return {
            "id": rev,
            "dirty": dirty,
            "branch": branch,
            "project": "crust",
            "where": str(where),
        }
    return {"error": "not a git checkout (package directory nor current directory)"}


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
            extra[f"{r['key']}_min"] = r["min"]
            extra[f"{r['key']}_max"] = r["max"]
            extra[f"{r['key']}_spread"] = r["spread"]
            if r["ratio"] is not None:
                extra[f"{r['key']}_ratio_vs_{r['baseline']}"] = r["ratio"]
                extra[f"{r['key']}_ratio_spread"] = r["ratio_spread"]
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
        "commit_info": commit_info(),
        "benchmarks": benches,
        "datetime": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        "version": "5.1.0",
        "crust_extra_targets": suite.extra_targets(),
        # What `crust bench --compare` reads (pytest-benchmark ignores it):
        # every figure's rounds, its baseline's paired rounds, the ratios.
        "crust": {
            "format": FORMAT,
            "version": __version__,
            "sizes": suite.sizes.name,
            "rounds": suite.rounds,
            "pinning": pinning().describe(),
            "load_average_at_start": list(suite.load_at_start),
            "load_average_at_end": list(os.getloadavg()),
            "cpus": sorted(os.sched_getaffinity(0)),
            "cpu_model": cpu_model(),
            "rows": rows,
            "rounds_seen": {
                name: {"seconds": out.seconds, "load": out.load, "error": out.error}
                for name, out in suite.outcomes.items()
            },
        },
    }


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"
