"""The benchmark suite: which cases run, at which sizes, and what each
figure is divided by.

Every case runs ``rounds`` times and each figure is the median over the
rounds (the machine is shared: single runs mislead). Every ratio divides
by a baseline measured in the same run, never by a remembered number.
``Suite`` is driven by ``crust bench`` (all cases, then the table and the
JSON) and by ``benchmarks/bench_suite.py`` (one pytest-benchmark test per
case).
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from crust import _core
from crust.bench import baselines, many, quic, service_path
from crust.bench.procs import BenchError

__all__ = ["CASES", "FULL", "SMOKE", "Case", "Figure", "Outcome", "Sizes", "Suite", "Target"]

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


MIB = 1 << 20
FULL = Sizes(
    name="full",
    rounds=3,
    raw_seconds=2.0,
    aead_packets=300_000,
    udp_bulk=400 * MIB,
    tcp_bulk=1024 * MIB,
    raw_tcp=2048 * MIB,
    small=400_000,
    rr_seconds=2.0,
    connects=50,
    many_udp=10_000,
    many_tcp=2_000,
    traced=500,
    many_msg_seconds=2.0,
    quic_bulk=50 * MIB,
    quic_seconds=2.0,
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
    return r


def _transport_cases(t: str) -> list[Case]:
    up = t.upper()
    raw_bulk = "raw UDP 1200 B/bytes_per_s" if t == "udp" else "crust TCP bulk/raw_tcp_bytes_per_s"
    bulk_target = Target("ratio", 1.0 if t == "udp" else 0.6)
    bulk_figures = [
        Figure("one-connection bulk goodput", "bytes_per_s", "MB/s", 1e6, raw_bulk, bulk_target),
    ]
    if t == "tcp":
        bulk_figures.append(
            Figure("  raw kernel TCP, run just before", "raw_tcp_bytes_per_s", "MB/s", 1e6)
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
            None,
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
        (Figure("raw UDP sendmmsg->recvmmsg 64 B", "dgrams_per_s", "k dgram/s", 1e3),),
    ),
    Case(
        "raw TCP",
        "baseline",
        lambda s: baselines.raw_tcp(s.raw_tcp),
        (Figure("raw kernel TCP, one stream", "bytes_per_s", "MB/s", 1e6),),
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
    """Every round of one case (or why it did not run)."""

    runs: list[dict[str, Any]] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    error: str | None = None


class Suite:
    """Runs cases and keeps their rounds; medians, ratios, the table."""

    def __init__(self, sizes: Sizes = FULL, rounds: int | None = None) -> None:
        self.sizes = sizes
        self.rounds = rounds or sizes.rounds
        self.outcomes: dict[str, Outcome] = {}
        self.started = time.time()

    def case(self, name: str) -> Case:
        for c in CASES:
            if c.name == name:
                return c
        raise KeyError(f"no benchmark case {name!r}; cases: {[c.name for c in CASES]}")

    def run_round(self, case: Case) -> dict[str, Any]:
        """One round of ``case``, recorded."""
        out = self.outcomes.setdefault(case.name, Outcome())
        t0 = time.perf_counter()
        r = case.run(self.sizes)
        out.seconds.append(time.perf_counter() - t0)
        out.runs.append(r)
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
        for case in CASES:
            if only and not any(o.lower() in case.name.lower() for o in only):
                continue
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

    def rows(self) -> list[dict[str, Any]]:
        """Every figure of every case run, with its ratio and target."""
        rows = []
        for case in CASES:
            out = self.outcomes.get(case.name)
            if out is None:
                continue
            for f in case.figures:
                vals = self.values(f"{case.name}/{f.key}")
                v = statistics.median(vals) if vals else None
                base = self.value(f.baseline) if f.baseline else None
                ratio = v / base if v is not None and base else None
                row: dict[str, Any] = {
                    "group": case.group,
                    "case": case.name,
                    "label": f.label,
                    "key": f.key,
                    "unit": f.unit,
                    "value": v,
                    "shown": None if v is None else v / f.scale,
                    "baseline": f.baseline,
                    "ratio": ratio,
                    "error": out.error if v is None else None,
                    "rounds": len(out.runs),
                    # (max - min) / median over the rounds: how far to trust it.
                    "spread": (max(vals) - min(vals)) / v if v else None,
                }
                aead = out.runs[0].get("aead") if out.runs else None
                if aead:
                    row["aead"] = aead
                if f.target is not None:
                    got = ratio if f.target.kind == "ratio" else (row["shown"])
                    row["target"] = str(f.target)
                    row["met"] = None if got is None else f.target.met(got)
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
