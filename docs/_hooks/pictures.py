"""MkDocs hook: the pictures, drawn at build time from the code and from
measurements, so none can drift from what crust does.

========================  =====================================================
``img/connect-by-id.svg``  the connect-by-id sequence; its messages are named
                           from the enums the code sends (``ControlKind``,
                           rendezvous ``Op``, ``RelayOp``), its delays from
                           the defaults (``Traversal.relay_after``)
``img/race.svg``           the TCP/UDP race, from ``ServiceConfig`` defaults
``img/bench.svg``          ``crust bench`` figures against their baselines,
                           from the reference run in ``docs/data/bench.json``
``img/goodput.svg``        simulated goodput against loss and RTT, measured
                           by running ``crust.sim_demo`` on ``crust.testing``
========================  =====================================================

A page shows one with ``![...](img/NAME.svg)`` (a path relative to the
page). The SVG is written by hand (a few shapes and text): no plotting
library to install, and the files stay small and diffable. The functions
are also used by tests/packaging/test_docs.py.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Sequence
from html import escape
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
BENCH_JSON = ROOT / "docs" / "data" / "bench.json"

FONT = "font-family='system-ui,sans-serif' font-size='13'"
COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd")


class Svg:
    """An SVG document built from a few primitives."""

    def __init__(self, width: int, height: int, title: str) -> None:
        self.width, self.height = width, height
        self.parts = [f"<title>{escape(title)}</title>"]

    def line(self, x1: float, y1: float, x2: float, y2: float, **style: Any) -> None:
        dash = " stroke-dasharray='5,4'" if style.get("dashed") else ""
        color = style.get("color", "#444")
        head = " marker-end='url(#arrow)'" if style.get("arrow") else ""
        self.parts.append(
            f"<line x1='{x1:.1f}' y1='{y1:.1f}' x2='{x2:.1f}' y2='{y2:.1f}' "
            f"stroke='{color}' stroke-width='{style.get('width', 1.5)}'{dash}{head}/>"
        )

    def rect(self, x: float, y: float, w: float, h: float, color: str, opacity: float = 1) -> None:
        self.parts.append(
            f"<rect x='{x:.1f}' y='{y:.1f}' width='{w:.1f}' height='{h:.1f}' "
            f"fill='{color}' fill-opacity='{opacity}'/>"
        )

    def text(self, x: float, y: float, s: str, anchor: str = "start", **style: Any) -> None:
        weight = " font-weight='bold'" if style.get("bold") else ""
        color = style.get("color", "#222")
        self.parts.append(
            f"<text x='{x:.1f}' y='{y:.1f}' text-anchor='{anchor}' fill='{color}'{weight}>"
            f"{escape(s)}</text>"
        )

    def polyline(self, points: Sequence[tuple[float, float]], color: str) -> None:
        pts = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
        self.parts.append(
            f"<polyline points='{pts}' fill='none' stroke='{color}' stroke-width='2'/>"
        )
        for x, y in points:
            self.parts.append(f"<circle cx='{x:.1f}' cy='{y:.1f}' r='3' fill='{color}'/>")

    def render(self) -> str:
        defs = (
            "<defs><marker id='arrow' viewBox='0 0 10 10' refX='9' refY='5' markerWidth='7' "
            "markerHeight='7' orient='auto-start-reverse'><path d='M0,0 L10,5 L0,10 z' "
            "fill='#444'/></marker></defs>"
        )
        return (
            f"<svg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 {self.width} {self.height}' "
            f"width='{self.width}' height='{self.height}' {FONT}>"
            f"<rect width='100%' height='100%' fill='white'/>{defs}"
            + "".join(self.parts)
            + "</svg>\n"
        )


# -- connect by id: a sequence diagram -----------------------------------------------


def connect_steps() -> list[tuple[str, str, str, bool]]:
    """(from, to, label, dashed) for each message of a connect by id, the
    labels taken from the code's enums."""
    from crust.asyncio.traversal import Traversal
    from crust.control import ControlKind
    from crust.nat.relay import RelayOp
    from crust.nat.rendezvous import Op

    rdv, relay, punch = ControlKind.RENDEZVOUS.name, ControlKind.RELAY.name, ControlKind.PUNCH.name
    relay_after = Traversal.relay_after
    return [
        ("A", "M", f"{rdv} {Op.REQUEST.name} (B's id, A's candidates)", False),
        ("M", "B", f"{rdv} {Op.INTRODUCE.name} (A's id and candidates)", False),
        ("B", "M", f"{rdv} {Op.REPLY.name} (B's candidates)", False),
        ("M", "A", f"{rdv} {Op.REPLY.name} (B's candidates, relay offer)", False),
        ("A", "B", "UDP punch packets (low TTL first), TCP simultaneous open", True),
        ("B", "A", "punch packets; the first that echoes ours wins", True),
        ("A", "M", f"after {relay_after:g} s without a path: {relay} {RelayOp.DATA.name}", False),
        (
            "M",
            "B",
            f"{relay} {RelayOp.DATA.name}: handshake, then packets (sealed end to end)",
            False,
        ),
        ("A", "B", f"{punch} (inside the relayed connection): punch again", False),
        ("A", "B", "a punch succeeds: the same connection moves to it, in place", True),
    ]


def connect_by_id_svg() -> str:
    steps = connect_steps()
    cols = {"A": 150, "M": 440, "B": 730}
    names = {"A": "A (connects by id)", "M": "M (mutual peer)", "B": "B (the target)"}
    top, step = 60, 44
    svg = Svg(820, top + step * len(steps) + 40, "connect by peer id")
    bottom = top + step * len(steps) + 10
    for key, x in cols.items():
        svg.text(x, 28, names[key], "middle", bold=True)
    phases = [(0, 4, "rendezvous"), (4, 6, "punch race"), (6, 8, "relay"), (8, 10, "upgrade")]
    for first, last, label in phases:
        y0, y1 = top + step * first - 18, top + step * last - 18
        svg.rect(4, y0, 812, y1 - y0, "#eef3fa" if first % 4 == 0 else "#f7f7f7")
        svg.text(10, y0 + 14, label, color="#557")
    for x in cols.values():  # the lifelines, over the phase bands
        svg.line(x, 40, x, bottom, color="#999", width=1)
    for i, (a, b, label, dashed) in enumerate(steps):
        y = top + step * i + 10
        x1, x2 = cols[a], cols[b]
        svg.line(x1, y, x2, y, arrow=True, dashed=dashed)
        svg.text((x1 + x2) / 2, y - 6, label, "middle")
    return svg.render()


# -- the TCP/UDP race ----------------------------------------------------------------------


def race_svg() -> str:
    from crust.config import ServiceConfig

    cfg = ServiceConfig()
    head, limit = cfg.tcp_head_start, cfg.connect_timeout
    svg = Svg(760, 190, "the TCP/UDP race")
    x0, x1 = 120, 720
    span = 1.0  # seconds shown: the race is decided well within the first one

    def x(t: float) -> float:
        return x0 + (x1 - x0) * min(t, span) / span

    svg.text(10, 20, f"connect(address): TCP at once, UDP after tcp_head_start = {head:g} s "
             "(or as soon as TCP fails)", bold=True)  # fmt: skip
    svg.text(10, 38, "the first handshake done wins, the other is cancelled; "
             f"each gives up after connect_timeout = {limit:g} s", color="#555")  # fmt: skip
    rows = [("TCP", 0.0, COLORS[0]), ("UDP", head, COLORS[1])]
    for i, (name, start, color) in enumerate(rows):
        y = 60 + 40 * i
        svg.text(x0 - 12, y + 14, name, "end", bold=True)
        svg.rect(x(start), y, x(span) - x(start), 20, color, 0.75)
        svg.text(x(start) + 6, y + 14, "dial + handshake (until one completes)", color="white")
    svg.line(x(head), 50, x(head), 140, dashed=True)
    svg.text(x(head), 154, f"{head:g} s", "middle")
    for t in (0.0, 0.5, 1.0):
        svg.text(x(t), 180, f"{t:g} s", "middle", color="#666")
    return svg.render()


# -- charts -------------------------------------------------------------------------------


def bar_chart(title: str, rows: Sequence[tuple[str, float]], unit: str, marker: float) -> str:
    """Horizontal bars (label, value) with a reference line at ``marker``."""
    height = 60 + 30 * len(rows)
    svg = Svg(760, height, title)
    svg.text(10, 24, title, bold=True)
    x0, x1 = 330, 700
    top = max([marker, *(v for _, v in rows)]) * 1.1

    def x(v: float) -> float:
        return x0 + (x1 - x0) * v / top

    for i, (label, value) in enumerate(rows):
        y = 44 + 30 * i
        svg.text(x0 - 8, y + 15, label, "end")
        svg.rect(x0, y, x(value) - x0, 20, COLORS[0], 0.8)
        svg.text(x(value) + 5, y + 15, f"{value:.2f}{unit}")
    svg.line(x(marker), 36, x(marker), height - 10, dashed=True, color=COLORS[1])
    svg.text(x(marker), height - 2, f"baseline = {marker:g}{unit}", "middle", color=COLORS[1])
    return svg.render()


def line_chart(
    title: str,
    xs: Sequence[float],
    series: Sequence[tuple[str, Sequence[float]]],
    x_label: str,
    y_label: str,
) -> str:
    svg = Svg(760, 380, title)
    svg.text(10, 24, title, bold=True)
    left, right, top, bottom = 80, 600, 50, 320
    y_max = max(max(ys) for _, ys in series) * 1.1 or 1.0
    x_min, x_max = min(xs), max(xs)

    def px(v: float) -> float:
        return left + (right - left) * (v - x_min) / ((x_max - x_min) or 1)

    def py(v: float) -> float:
        return bottom - (bottom - top) * v / y_max

    svg.line(left, bottom, right, bottom)
    svg.line(left, top, left, bottom)
    for v in xs:
        svg.text(px(v), bottom + 18, f"{v:g}", "middle", color="#555")
    for i in range(5):
        v = y_max * i / 4
        svg.text(left - 6, py(v) + 4, f"{v:.0f}", "end", color="#555")
        svg.line(left, py(v), right, py(v), color="#eee", width=1)
    svg.text((left + right) / 2, bottom + 40, x_label, "middle")
    svg.text(14, top - 12, y_label)
    for i, (name, ys) in enumerate(series):
        color = COLORS[i % len(COLORS)]
        svg.polyline([(px(a), py(b)) for a, b in zip(xs, ys, strict=True)], color)
        svg.text(right + 20, top + 20 + 20 * i, name, color=color, bold=True)
    return svg.render()


# -- crust bench against its baselines ------------------------------------------------------


def bench_ratios(doc: dict[str, Any]) -> list[tuple[str, float]]:
    """(what, ratio) for every figure ``crust bench`` compared with a
    baseline measured in the same run (``*_ratio_vs_*`` in its JSON)."""
    rows = []
    for bench in doc["benchmarks"]:
        for key, value in bench["extra_info"].items():
            if "_ratio_vs_" in key and isinstance(value, (int, float)):
                baseline = key.split("_ratio_vs_", 1)[1].split("/")[0]
                if baseline == bench["name"]:  # measured inside the case itself
                    baseline = "its own raw run"
                rows.append((f"{bench['name']} vs {baseline}", float(value)))
    return rows


def bench_svg() -> str:
    doc = json.loads(BENCH_JSON.read_text())
    info = doc["machine_info"]
    title = (
        f"crust bench / baseline of the same run ({info['cpu']['count']} CPUs, "
        f"{doc['datetime'][:10]}, docs/data/bench.json)"
    )
    return bar_chart(title, bench_ratios(doc), "x", 1.0)


# -- simulated goodput ----------------------------------------------------------------------

GOODPUT_LOSS = (0.0, 0.01, 0.02, 0.05, 0.1)
GOODPUT_RTT_MS = (10, 50, 150)
GOODPUT_MBIT = 50


def goodput_grid(run: Callable[..., Any] | None = None) -> dict[int, list[float]]:
    """Mbit/s of goodput moving 4 MB over a simulated 50 Mbit/s path, for
    each RTT and loss rate (deterministic: seeded, virtual time)."""
    if run is None:
        from crust.sim_demo import run_demo as run
    grid: dict[int, list[float]] = {}
    for rtt in GOODPUT_RTT_MS:
        grid[rtt] = [
            run(
                blob_mb=4, bandwidth_mbit=GOODPUT_MBIT, rtt_ms=rtt, loss=loss, out=io.StringIO()
            ).goodput_bps
            / 1e6
            for loss in GOODPUT_LOSS
        ]
    return grid


def goodput_svg() -> str:
    grid = goodput_grid()
    return line_chart(
        f"simulated goodput on a {GOODPUT_MBIT} Mbit/s path (crust.testing, 4 MB per point)",
        [100 * p for p in GOODPUT_LOSS],
        [(f"RTT {rtt} ms", ys) for rtt, ys in grid.items()],
        "random loss (%)",
        "Mbit/s",
    )


PICTURES: dict[str, Callable[[], str]] = {
    "img/connect-by-id.svg": connect_by_id_svg,
    "img/race.svg": race_svg,
    "img/bench.svg": bench_svg,
    "img/goodput.svg": goodput_svg,
}


def on_files(files: Any, config: Any) -> Any:
    from mkdocs.structure.files import File

    for path, draw in PICTURES.items():
        files.append(File.generated(config, path, content=draw()))
    return files
