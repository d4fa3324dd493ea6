"""The CI performance gate: a bounded ``crust bench`` whose ratios must not
fall more than 30 % below the committed reference figures.

    python -m crust.bench.gate check benchmarks/reference.json
    python -m crust.bench.gate write benchmarks/reference.json   # after a deliberate change

(with the package installed, from outside the source tree, as the tests run).

Only ratios are gated, each the median of ``GATE.rounds`` per-round-pair
ratios (a baseline round just before each crust round, both ends pinned to
separate cores), and only ratios that stay put on a shared 2-core
machine: bulk goodput and 64-byte messages per CPU second of both ends,
against the raw kernel paths' (design note 0072 has the spreads measured). A gated figure that falls
below ``1 - TOLERANCE`` of its reference is measured once more, afresh; the
gate fails only when both measurements are below. A real regression
persists, a burst of someone else's work rarely lasts through both.

The reference must come from a machine like the one that checks it: the
ratios depend on the CPU (AES instructions, core speed against memory
speed). ``write`` records where it was made.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import logging
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from crust._version import __version__
from crust.bench.procs import pinning
from crust.bench.report import commit_info, cpu_model
from crust.bench.suite import MIB, SMOKE, Suite

__all__ = ["GATE", "GATED", "TOLERANCE", "Verdict", "check", "main", "measure", "recheck", "run"]

logger = logging.getLogger(__name__)

# A ratio this much below its reference fails the gate.
TOLERANCE = 0.30

# Rounds long enough to leave start-up behind (~0.3-1 s each), few
# enough for the whole gate to stay well under a minute.
GATE = dataclasses.replace(
    SMOKE,
    name="gate",
    rounds=5,
    raw_seconds=0.5,
    udp_bulk=128 * MIB,
    tcp_bulk=256 * MIB,
    raw_tcp=512 * MIB,
    small=50_000,
)

# (case, figure key, baseline) of every gated ratio: work per CPU second
# of both ends against the kernel path's, not per wall second. Under the
# load of a shared 2-core machine (load average 4-6, measured for design
# note 0072) the wall-time ratios of single gate runs ranged over 30-90 %,
# the CPU-time ones over 3-30 %: a 30 % gate on wall time fails on noise.
#
# The 64 B message figures are not gated: their work per message depends on
# how many messages each wakeup finds, so on how busy the machine is. Against
# a reference written under load 3-6, a quiet fresh clone measured crust TCP
# 64 B at 0.65 and 0.62 of it (the same code had passed an hour before): a
# gate on them fails on the machine, not on crust. They stay in `crust bench`.
GATED: tuple[tuple[str, str, str], ...] = (
    ("crust UDP bulk", "bytes_per_cpu_s", "raw UDP 1200 B/bytes_per_cpu_s"),
    ("crust TCP bulk", "bytes_per_cpu_s", "crust TCP bulk/raw_tcp_bytes_per_cpu_s"),
)


def _name(case: str, key: str, baseline: str) -> str:
    return f"{case}: {key} / {baseline}"


def measure(cases: list[str] | None = None, rounds: int | None = None) -> dict[str, Any]:
    """One bounded run of the gated cases (``cases``: a subset by name):
    per gated ratio, its median, its round-pair ratios and their spread."""
    suite = Suite(GATE, rounds)
    wanted = [g for g in GATED if cases is None or g[0] in cases]
    for case in dict.fromkeys(g[0] for g in wanted):
        out = suite.measure(suite.case(case))
        if out.error:
            raise RuntimeError(f"gate case {case} {out.error}")
    got: dict[str, Any] = {}
    for row in suite.rows():
        for case, key, base in wanted:
            if (row["case"], row["key"], row["baseline"]) == (case, key, base):
                got[_name(case, key, base)] = {
                    "case": case,
                    "ratio": row["ratio"],
                    "ratios": row["ratios"],
                    "ratio_spread": row["ratio_spread"],
                }
    return got


@dataclass
class Verdict:
    name: str
    reference: float
    measured: list[float]  # each attempt's median ratio

    @property
    def floor(self) -> float:
        return self.reference * (1 - TOLERANCE)

    @property
    def failed(self) -> bool:
        return all(m < self.floor for m in self.measured)

    def __str__(self) -> str:
        tries = ", then ".join(
            f"{m:.3f} ({100 * (m / self.reference - 1):+.0f}%)" for m in self.measured
        )
        state = "REGRESSED" if self.failed else "ok"
        return (
            f"{state}: {self.name}: reference {self.reference:.3f}, "
            f"floor {self.floor:.3f}, measured {tries}"
        )


def check(reference: dict[str, Any], measured: dict[str, Any]) -> list[Verdict]:
    """Each gated ratio of ``reference`` against ``measured`` (one attempt)."""
    out = []
    for name, ref in reference["ratios"].items():
        got = measured.get(name)
        if got is None or got["ratio"] is None:
            raise RuntimeError(f"gate: {name} was not measured")
        out.append(Verdict(name, float(ref["ratio"]), [float(got["ratio"])]))
    return out


def recheck(reference: dict[str, Any], verdicts: list[Verdict]) -> list[Verdict]:
    """Measure afresh the cases of the verdicts below their floor and add
    that second attempt to them (a verdict fails only if both are below)."""
    below = sorted({reference["ratios"][v.name]["case"] for v in verdicts if v.failed})
    if below:
        logger.warning("gate: below the floor, measuring again: %s", below)
        again = measure(below)
        for v in verdicts:
            if v.failed:
                v.measured.append(float(again[v.name]["ratio"]))
    return verdicts


def run(reference_path: Path) -> list[Verdict]:
    """The gate: measure, check, measure again what fell below its floor."""
    reference = json.loads(reference_path.read_text())
    return recheck(reference, check(reference, measure()))


def write(path: Path, runs: int) -> dict[str, Any]:
    """Measure ``runs`` gate runs and write their median ratios as the
    reference (with each run's ratios, to show the spread)."""
    measured = [measure() for _ in range(runs)]
    ratios = {}
    for name in measured[0]:
        each = [float(m[name]["ratio"]) for m in measured]
        ratios[name] = {
            "case": measured[0][name]["case"],
            "ratio": statistics.median(each),
            "runs": each,
            "round_spreads": [m[name]["ratio_spread"] for m in measured],
        }
    doc = {
        "what": "crust bench CI gate reference ratios (crust.bench.gate)",
        "command": f"python -m crust.bench.gate write benchmarks/{path.name} --runs {runs}",
        "tolerance": TOLERANCE,
        "sizes": dataclasses.asdict(GATE),
        "datetime": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "crust": __version__,
        "commit": commit_info().get("id"),
        "machine": {
            "cpu_model": cpu_model(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "system": f"{platform.system()} {platform.release()}",
            "pinning": pinning().describe(),
            "load_average": list(os.getloadavg()),
        },
        "ratios": ratios,
    }
    path.write_text(json.dumps(doc, indent=1) + "\n")
    return doc


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m crust.bench.gate", description=__doc__.split("\n")[0]
    )
    p.add_argument("action", choices=("check", "write"))
    p.add_argument("reference", type=Path)
    p.add_argument("--runs", type=int, default=5, help="write: gate runs whose median is kept")
    args = p.parse_args(argv)
    t0 = time.monotonic()
    if args.action == "write":
        doc = write(args.reference, args.runs)
        for name, r in doc["ratios"].items():
            runs = ", ".join(f"{x:.3f}" for x in r["runs"])
            print(f"{name}: {r['ratio']:.3f} (runs {runs})")
        return 0
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    verdicts = run(args.reference)
    for v in verdicts:
        print(v)
    print(f"gate took {time.monotonic() - t0:.0f} s; load average {os.getloadavg()[0]:.2f}")
    return 1 if any(v.failed for v in verdicts) else 0


if __name__ == "__main__":
    sys.exit(main())
