"""The benchmark suite: which cases run, at which sizes, and what each
figure is divided by.

Every case runs ``rounds`` times; each figure is shown as the min, median
and max over the rounds with its spread ((max - min) / median). Every
ratio divides by a baseline measured in the same run, never by a
remembered number: a case's baselines run one round just before each of
its rounds (baseline, case, baseline, case, ...), so noise from the rest
of the machine lands on both, and the ratio is the median of the
per-round-pair ratios (design note 0072). Both ends of every measurement
are pinned to separate cores where there are two (``procs.pinned``).
``Suite`` is driven by ``crust bench`` (all cases, then the table and the
JSON), by ``benchmarks/bench_suite.py`` (one pytest-benchmark test per
case) and by the CI gate (``crust.bench.gate``).
"""

from __future__ import annotations

import logging
import os
import resource
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from crust import _core
from crust.bench import baselines, many, quic, service_path
from crust.bench.procs import BenchError, pinned, pinning

__all__ = [
    "CASES",
    "FULL",
    "SMOKE",
    "STABLE",
    "Case",
    "Figure",
    "Outcome",
    "Sizes",
    "Suite",
    "Target",
    "spread",
]

# The spread (max - min) / median across rounds above which the table
# says why a figure is not stable (issue #19).
STABLE = 0.15

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Sizes:
    """How much each case moves; ``FULL`` is the real run, ``SMOKE`` checks
    in seconds that every case still works (its figures mean nothing)."""

    name: str
    rounds: int
    raw_seconds: float
    aead_packets: int
    udp_bulk: int
    tcp_bulk: int
    raw_tcp: int
    small: int
    rr_seconds: float
    connects: int
    many_udp: int
    many_tcp: int
    traced: int
    many_msg_seconds: float
    quic_bulk: int
    quic_seconds: float
    x25519_seconds: float


MIB = 1 << 20
FULL = Sizes(
    name="full",
    rounds=3,
    raw_seconds=2.0,
    aead_packets=300_000,
    # ~1 s or more per round at the speeds of issue 19's table: shorter
    # rounds let start-up and one scheduler hiccup weigh in the spread.
    udp_bulk=1024 * MIB,
    tcp_bulk=2048 * MIB,
    raw_tcp=4096 * MIB,
    small=400_000,
    rr_seconds=2.0,
    connects=50,
    many_udp=10_000,
    many_tcp=2_000,
    traced=500,
    many_msg_seconds=2.0,
    quic_bulk=50 * MIB,
    quic_seconds=2.0,
    x25519_seconds=1.0,
)
SMOKE = Sizes(
    name="smoke",
    rounds=1,
    raw_seconds=0.2,
    aead_packets=5_000,
    udp_bulk=4 * MIB,
    tcp_bulk=4 * MIB,
    raw_tcp=8 * MIB,
    small=2_000,
    rr_seconds=0.2,
    connects=3,
    many_udp=100,
    many_tcp=50,
    traced=20,
    many_msg_seconds=0.2,
    quic_bulk=1 * MIB,
    quic_seconds=0.2,
    x25519_seconds=0.1,
)


@dataclass(frozen=True)
class Target:
    """A goal from issue #8: ``ratio`` (figure / baseline) or ``value``
    (the figure itself), at least or at most ``bound``."""

    kind: str
    bound: float
    at_most: bool = False

    def met(self, value: float) -> bool:
        return value <= self.bound if self.at_most else value >= self.bound

    def __str__(self) -> str:
        op = "<=" if self.at_most else ">="
        return f"{op} {self.bound:g}x" if self.kind == "ratio" else f"{op} {self.bound:g}"


@dataclass(frozen=True)
class Figure:
    """One row of the table: ``key`` of the case's result, shown in
    ``unit`` after dividing by ``scale``; ``baseline`` names the figure it
    is divided by (``"case/key"``)."""

    label: str
    key: str
    unit: str
    scale: float = 1.0
    baseline: str | None = None
    target: Target | None = None


@dataclass(frozen=True)
class Case:
    name: str
    group: str
    run: Callable[[Sizes], dict[str, Any]]
    figures: tuple[Figure, ...]
    needs: Callable[[], str | None] = lambda: None  # why it cannot run, or None


def _aead_ids() -> list[int]:
    # Every real cipher the engine has and this CPU runs.
    return [a for a in range(1, _core.AEAD_COUNT) if _core.aead_available(a)]


def _aead_alone(s: Sizes) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for aead in _aead_ids():
        r = baselines.aead_alone(aead, 1200, s.aead_packets)
        name = service_path.aead_name(aead)
        out[f"{name} ns_per_packet"] = r["ns_per_packet"]
        out[f"{name} bytes_per_s"] = r["bytes_per_s"]
    return out


def _raw_udp(payload: int, gso: bool = False) -> Callable[[Sizes], dict[str, Any]]:
    def run(s: Sizes) -> dict[str, Any]:
        return baselines.raw_udp(baselines.rawudp_binary(), payload, s.raw_seconds, gso)

    return run


def _no_aioquic() -> str | None:
    return None if quic.aioquic_available() else "aioquic not installed (pip install crust[bench])"


def _tcp_bulk_paired(s: Sizes) -> dict[str, Any]:
    """A raw kernel TCP transfer, then crust's: on a shared machine the
    kernel's speed drifts by tens of percent within minutes, so crust TCP
    is compared with a raw run made just before it, round by round."""
    raw = baselines.raw_tcp(s.raw_tcp)
    r = service_path.bulk("tcp", s.tcp_bulk)
    r["raw_tcp_bytes_per_s"] = raw["bytes_per_s"]
    r["raw_tcp_bytes_per_cpu_s"] = raw["bytes_per_cpu_s"]
    return r


def _transport_cases(t: str) -> list[Case]:
    up = t.upper()
    raw_bulk = "raw UDP 1200 B/bytes_per_s" if t == "udp" else "crust TCP bulk/raw_tcp_bytes_per_s"
    bulk_target = Target("ratio", 1.0 if t == "udp" else 0.6)
    bulk_figures = [
        Figure("one-connection bulk goodput", "bytes_per_s", "MB/s", 1e6, raw_bulk, bulk_target),
    ]
    # Per CPU second of both ends: what the CI gate compares, since CPU
    # time moves far less than wall time when others share the cores.
    raw_cpu = (
        "raw UDP 1200 B/bytes_per_cpu_s" if t == "udp" else "crust TCP bulk/raw_tcp_bytes_per_cpu_s"
    )
    bulk_figures.append(
        Figure("  goodput per CPU second, both ends", "bytes_per_cpu_s", "MB/cpu-s", 1e6, raw_cpu)
    )
    if t == "tcp":
        bulk_figures.append(
            Figure("  raw kernel TCP, run just before", "raw_tcp_bytes_per_s", "MB/s", 1e6)
        )
        bulk_figures.append(
            Figure("    per CPU second, both ends", "raw_tcp_bytes_per_cpu_s", "MB/cpu-s", 1e6)
        )
    if t == "udp":
        bulk_figures += [
            Figure(
                "  the same, vs the kernel's best",
                "bytes_per_s",
                "MB/s",
                1e6,
                "raw UDP GSO->GRO 1200 B/bytes_per_s",
            ),
            Figure("  sent in GSO super-datagrams", "gso_share", "share"),
            Figure("  datagrams per sendmmsg", "datagrams_per_batch", "dgrams"),
        ]
    return [
        Case(
            f"crust {up} bulk",
            f"crust {up}",
            (lambda s: service_path.bulk(t, s.udp_bulk)) if t == "udp" else _tcp_bulk_paired,
            tuple(bulk_figures),
        ),
        Case(
            f"crust {up} 64 B messages",
            f"crust {up}",
            lambda s: service_path.small_messages(t, s.small),
            (
                Figure(
                    "64 B messages delivered to the app",
                    "messages_per_s",
                    "k msg/s",
                    1e3,
                    "raw UDP 64 B/dgrams_per_s",
                    Target("ratio", 0.5),
                ),
                Figure(
                    "  per CPU second, both ends",
                    "messages_per_cpu_s",
                    "k msg/cpu-s",
                    1e3,
                    "raw UDP 64 B/dgrams_per_cpu_s",
                ),
            ),
        ),
        Case(
            f"crust {up} 1 KiB request/response",
            f"crust {up}",
            lambda s: service_path.request_response(t, s.rr_seconds),
            (
                Figure("1 KiB request/response", "round_trips_per_s", "k rt/s", 1e3),
                Figure("  median round trip", "median_us", "us"),
            ),
        ),
        Case(
            f"crust {up} connect",
            f"crust {up}",
            lambda s: service_path.connect_time(t, s.connects),
            (Figure("time to connect (median)", "median_ms", "ms"),),
        ),
    ]


def _many(t: str) -> Case:
    up = t.upper()
    figures = [
        Figure(
            "handshakes/s at one service",
            "handshakes_per_s",
            "/s",
            1.0,
            "X25519 alone/responder_bound_per_s",
            Target("value", 2000),
        ),
        Figure(
            "  idle connection, C core + Python objects",
            "total_per_conn",
            "KiB/conn",
            1024,
            None,
            Target("value", 16, at_most=True),
        ),
        Figure("    C core (Connection.memory)", "c_per_conn", "KiB/conn", 1024),
        Figure("    Python objects (tracemalloc)", "python_per_conn", "KiB/conn", 1024),
        # Lower than the sum when allocated buffers are not yet touched.
        Figure("    process RSS growth", "rss_per_conn", "KiB/conn", 1024),
        Figure("  concurrent connections", "connections", "conns"),
        Figure("  cookie replies (listener under load)", "cookie_replies", "replies"),
        # Near 1: the (Python) dialling side, not the service, set the pace.
        Figure("  dialling side's share of a core", "dialler_cpu_share", "core"),
    ]
    if t == "udp":
        figures.append(
            Figure(
                "  aggregate 64 B messages, all connections",
                "messages_per_s",
                "k msg/s",
                1e3,
                "raw UDP 64 B/dgrams_per_s",
            )
        )
    return Case(
        f"crust {up} many connections",
        f"crust {up}",
        lambda s: many.many_connections(
            t,
            s.many_udp if t == "udp" else s.many_tcp,
            s.traced,
            s.many_msg_seconds if t == "udp" else 0.0,
        ),
        tuple(figures),
    )


CASES: tuple[Case, ...] = (
    Case(
        "raw UDP 1200 B",
        "baseline",
        _raw_udp(1200),
        (
            Figure("raw UDP sendmmsg->recvmmsg 1200 B", "bytes_per_s", "MB/s", 1e6),
            Figure("  datagrams", "dgrams_per_s", "k dgram/s", 1e3),
            Figure("  per CPU second, both programs", "bytes_per_cpu_s", "MB/cpu-s", 1e6),
        ),
    ),
    Case(
        "raw UDP GSO->GRO 1200 B",
        "baseline",
        _raw_udp(1200, gso=True),
        (Figure("raw UDP GSO->GRO 1200 B (the kernel's best)", "bytes_per_s", "MB/s", 1e6),),
    ),
    Case(
        "raw UDP 64 B",
        "baseline",
        _raw_udp(64),
        (
            Figure("raw UDP sendmmsg->recvmmsg 64 B", "dgrams_per_s", "k dgram/s", 1e3),
            Figure("  per CPU second, both programs", "dgrams_per_cpu_s", "k dgram/cpu-s", 1e3),
        ),
    ),
    Case(
        "raw TCP",
        "baseline",
        lambda s: baselines.raw_tcp(s.raw_tcp),
        (Figure("raw kernel TCP, one stream", "bytes_per_s", "MB/s", 1e6),),
    ),
    Case(
        "X25519 alone",
        "baseline",
        lambda s: baselines.x25519(s.x25519_seconds),
        (
            Figure("X25519 from Python (PyNaCl)", "ops_per_s", "k op/s", 1e3),
            Figure("  responder's bound: ops/s / 4", "responder_bound_per_s", "/s"),
        ),
    ),
    Case(
        "AEAD alone",
        "baseline",
        _aead_alone,
        tuple(
            f
            for a in _aead_ids()
            for f in (
                Figure(
                    f"{service_path.aead_name(a)} alone, seal+open 1200 B",
                    f"{service_path.aead_name(a)} bytes_per_s",
                    "MB/s",
                    1e6,
                ),
                Figure("  per packet", f"{service_path.aead_name(a)} ns_per_packet", "ns"),
            )
        ),
    ),
    *_transport_cases("udp"),
    _many("udp"),
    *_transport_cases("tcp"),
    _many("tcp"),
    Case(
        "aioquic bulk",
        "peers",
        lambda s: quic.aioquic_bulk(s.quic_bulk),
        (
            Figure(
                "aioquic one-stream bulk goodput",
                "bytes_per_s",
                "MB/s",
                1e6,
                "raw UDP 1200 B/bytes_per_s",
            ),
        ),
        _no_aioquic,
    ),
    Case(
        "aioquic datagrams",
        "peers",
        lambda s: quic.aioquic_datagrams(s.quic_seconds),
        (
            Figure(
                "aioquic 64 B DATAGRAM frames delivered",
                "datagrams_per_s",
                "k dgram/s",
                1e3,
                "raw UDP 64 B/dgrams_per_s",
            ),
        ),
        _no_aioquic,
    ),
)

# Cross-checks the issue asks for beyond "figure / its baseline".
EXTRA_TARGETS = (
    ("crust UDP bulk/bytes_per_s", "aioquic bulk/bytes_per_s", Target("ratio", 30.0)),
    ("crust TCP bulk/bytes_per_s", "aioquic bulk/bytes_per_s", Target("ratio", 30.0)),
)


@dataclass
class Outcome:
    """Every round of one case (or why it did not run): its results, wall
    times, the baselines' rounds run just before each of its rounds, and
    what the rest of the machine did meanwhile."""

    runs: list[dict[str, Any]] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    error: str | None = None
    # Per round: baseline case name -> that baseline's round run just before.
    paired: list[dict[str, dict[str, Any]]] = field(default_factory=list)
    # Per round: "others" (CPUs used by processes not of this run), "steal"
    # (CPUs the hypervisor withheld), "load" (1-minute load average after).
    load: list[dict[str, float]] = field(default_factory=list)


def _machine_sample() -> tuple[float, float, float, float]:
    """(monotonic s, busy CPU s of the whole machine, its steal s, CPU s
    of this process and its reaped children)."""
    hz = os.sysconf("SC_CLK_TCK")
    busy = steal = 0.0
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
        # user nice system idle iowait irq softirq steal ...
        busy = (sum(fields[:3]) + sum(fields[5:8])) / hz
        steal = fields[7] / hz if len(fields) > 7 else 0.0
    except (OSError, ValueError):
        pass  # not Linux: the load figures stay 0
    ours = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        ru = resource.getrusage(who)
        ours += ru.ru_utime + ru.ru_stime
    return time.monotonic(), busy, steal, ours


def _machine_load(a: tuple[float, float, float, float]) -> dict[str, float]:
    b = _machine_sample()
    wall = max(b[0] - a[0], 1e-9)
    steal = (b[2] - a[2]) / wall
    # What the machine did minus what this run did. Kernel work done for
    # the run outside its processes' accounting (loopback softirqs) lands
    # here too, so a small figure is not necessarily someone else.
    others = max(0.0, (b[1] - a[1]) - (b[2] - a[2]) - (b[3] - a[3])) / wall
    return {"others": others, "steal": steal, "load": os.getloadavg()[0]}


def spread(values: list[float]) -> float | None:
    """(max - min) / median; None for fewer than two values or a zero median."""
    if len(values) < 2:
        return None
    mid = statistics.median(values)
    return (max(values) - min(values)) / mid if mid else None


class Suite:
    """Runs cases and keeps their rounds; medians, ratios, the table."""

    def __init__(self, sizes: Sizes = FULL, rounds: int | None = None) -> None:
        self.sizes = sizes
        self.rounds = rounds or sizes.rounds
        self.outcomes: dict[str, Outcome] = {}
        self.started = time.time()
        self.load_at_start = os.getloadavg()

    def case(self, name: str) -> Case:
        for c in CASES:
            if c.name == name:
                return c
        raise KeyError(f"no benchmark case {name!r}; cases: {[c.name for c in CASES]}")

    def paired_baselines(self, case: Case) -> list[str]:
        """The baseline cases whose round runs just before each of
        ``case``'s (those it divides by, other than itself)."""
        names: list[str] = []
        for f in case.figures:
            if f.baseline:
                name = f.baseline.rpartition("/")[0]
                if name != case.name and name not in names:
                    names.append(name)
        return names

    def _timed_round(self, case: Case) -> dict[str, Any]:
        out = self.outcomes.setdefault(case.name, Outcome())
        before = _machine_sample()
        t0 = time.perf_counter()
        with pinned():
            r = case.run(self.sizes)
        out.seconds.append(time.perf_counter() - t0)
        out.load.append(_machine_load(before))
        out.runs.append(r)
        return r

    def run_round(self, case: Case, pair: bool = True) -> dict[str, Any]:
        """One round of ``case``, recorded; with ``pair``, a round of each
        of its baselines first (recorded in the baseline's outcome too)."""
        out = self.outcomes.setdefault(case.name, Outcome())
        before: dict[str, dict[str, Any]] = {}
        if pair:
            for name in self.paired_baselines(case):
                base = self.case(name)
                if base.needs() is None:
                    before[name] = self._timed_round(base)
        r = self._timed_round(case)
        out.paired.append(before)
        return r

    def measure(self, case: Case) -> Outcome:
        """All rounds of ``case``; failures are recorded, not raised, so one
        broken case still leaves a complete table."""
        out = self.outcomes.setdefault(case.name, Outcome())
        why = case.needs()
        if why is not None:
            out.error = f"skipped: {why}"
            return out
        for _ in range(self.rounds - len(out.runs)):
            try:
                self.run_round(case)
            except (BenchError, OSError, AssertionError) as e:
                logger.warning("benchmark %s failed: %s", case.name, e)
                out.error = f"failed: {e}"
                break
        return out

    def run_all(
        self, only: list[str] | None = None, progress: Callable[[str], None] | None = None
    ) -> None:
        chosen = [c for c in CASES if not only or any(o.lower() in c.name.lower() for o in only)]
        # A baseline another chosen case divides by gets its rounds paired
        # with that case's (one before each); it runs on its own only when
        # none of them ran (skipped or failed before any round).
        paired = {b for c in chosen if c.needs() is None for b in self.paired_baselines(c)}
        for case in chosen:
            if case.name in paired:
                continue
            if progress:
                progress(case.name)
            self.measure(case)
        for case in chosen:
            if case.name in paired and not self.outcomes.get(case.name, Outcome()).runs:
                if progress:
                    progress(case.name)
                self.measure(case)

    def value(self, ref: str) -> float | None:
        """The median of ``"case/key"`` over its rounds, None if not measured."""
        vals = self.values(ref)
        return statistics.median(vals) if vals else None

    def values(self, ref: str) -> list[float]:
        """Every round's value of ``"case/key"``."""
        name, _, key = ref.rpartition("/")
        out = self.outcomes.get(name)
        return [float(r[key]) for r in out.runs if key in r] if out is not None else []

    def baseline(self, ref: str) -> float | None:
        """A baseline's median, measuring it first if this run has not."""
        name = ref.rpartition("/")[0]
        if name not in self.outcomes:
            self.measure(self.case(name))
        return self.value(ref)

    def ratios(self, case: Case, figure: Figure) -> tuple[list[float], list[float]]:
        """Per round of ``case``: the baseline's value of the round run just
        before it (or in it), and the figure / that value."""
        out = self.outcomes.get(case.name)
        if out is None or figure.baseline is None:
            return [], []
        name, _, key = figure.baseline.rpartition("/")
        bases: list[float] = []
        ratios: list[float] = []
        for i, r in enumerate(out.runs):
            if name == case.name:
                base = r.get(key)
            else:
                base = out.paired[i].get(name, {}).get(key) if i < len(out.paired) else None
            if base and figure.key in r:
                bases.append(float(base))
                ratios.append(float(r[figure.key]) / float(base))
        return bases, ratios

    def why_unstable(self, case: Case, row: dict[str, Any]) -> str | None:
        """Why a figure's (or its ratio's) spread across rounds is above
        ``STABLE``, from what was seen while it ran; None when it is not."""
        fs, rs = row["spread"], row.get("ratio_spread")
        judged = rs if rs is not None else fs
        if judged is None or judged <= STABLE:
            if fs is None or fs <= STABLE:
                return None
        out = self.outcomes[case.name]
        why: list[str] = []
        if rs is not None and rs <= STABLE and fs is not None and fs > STABLE:
            why.append(
                f"the baseline moved with it (ratio spread {100 * rs:.0f} %): "
                "the machine's speed changed between rounds"
            )
        others = max((x["others"] for x in out.load), default=0.0)
        if others > 0.25:
            why.append(f"other work took up to {others:.1f} of {os.cpu_count()} CPUs")
        steal = max((x["steal"] for x in out.load), default=0.0)
        if steal > 0.05:
            why.append(f"the hypervisor withheld {100 * steal:.0f} % of a CPU (steal)")
        short = min(out.seconds, default=0.0)
        if short < 1.0:
            why.append(f"rounds as short as {short:.2f} s")
        plan = pinning()
        if plan.why_not:
            why.append(f"not pinned: {plan.why_not}")
        if case.group == "baseline" and len(out.runs) > self.rounds:
            why.append(f"{len(out.runs)} rounds spread over the whole run, paired with others")
        if not why:
            why.append("no cause seen (load, steal, pinning, round length): try more --rounds")
        return "; ".join(why)

    def rows(self) -> list[dict[str, Any]]:
        """Every figure of every case run: min, median and max over the
        rounds, spread, ratio to its baseline, target."""
        rows = []
        for case in CASES:
            out = self.outcomes.get(case.name)
            if out is None:
                continue
            for f in case.figures:
                vals = self.values(f"{case.name}/{f.key}")
                v = statistics.median(vals) if vals else None
                bases, ratios = self.ratios(case, f)
                method: str | None
                if ratios:
                    ratio: float | None = statistics.median(ratios)
                    method = "median of per-round-pair ratios"
                else:
                    # No pairs (the baseline was measured apart): medians.
                    base = self.value(f.baseline) if f.baseline else None
                    ratio = v / base if v is not None and base else None
                    method = "median / baseline's median" if ratio is not None else None
                row: dict[str, Any] = {
                    "group": case.group,
                    "case": case.name,
                    "label": f.label,
                    "key": f.key,
                    "unit": f.unit,
                    "scale": f.scale,
                    "value": v,
                    "shown": None if v is None else v / f.scale,
                    "min": min(vals) if vals else None,
                    "max": max(vals) if vals else None,
                    "values": vals,
                    "baseline": f.baseline,
                    "baseline_values": bases,
                    "ratio": ratio,
                    "ratios": ratios,
                    "ratio_min": min(ratios) if ratios else None,
                    "ratio_max": max(ratios) if ratios else None,
                    "ratio_spread": spread(ratios),
                    "ratio_method": method,
                    "error": out.error if v is None else None,
                    "rounds": len(vals),
                    # (max - min) / median over the rounds: how far to trust it.
                    "spread": spread(vals),
                }
                aead = out.runs[0].get("aead") if out.runs else None
                if aead:
                    row["aead"] = aead
                if f.target is not None:
                    got = ratio if f.target.kind == "ratio" else (row["shown"])
                    row["target"] = str(f.target)
                    row["met"] = None if got is None else f.target.met(got)
                row["why_unstable"] = self.why_unstable(case, row) if vals else None
                rows.append(row)
        return rows

    def extra_targets(self) -> list[dict[str, Any]]:
        out = []
        for ref, base_ref, target in EXTRA_TARGETS:
            v, base = self.value(ref), self.value(base_ref)
            ratio = v / base if v is not None and base else None
            out.append(
                {
                    "what": f"{ref.split('/')[0]} / {base_ref.split('/')[0]}",
                    "ratio": ratio,
                    "target": str(target),
                    "met": None if ratio is None else target.met(ratio),
                }
            )
        return out
