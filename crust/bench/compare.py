"""``crust bench --compare OLD.json``: per figure, the ratio to its
same-run baseline before and after, and the change in percent.

Ratios are compared, not absolute figures: two runs minutes apart on a
shared machine differ by tens of percent in raw speed, while a ratio to a
baseline measured beside it (design notes 0022, 0072) moves far less.
Each side's ratio spread (max - min over its round pairs, / median) is
shown; a change no larger than the wider of the two is marked as within
noise. Files written before the JSON had its ``crust`` section (only
medians in ``extra_info``) are read too, without spreads.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Change", "Figures", "changes", "load", "text"]


@dataclass(frozen=True)
class Figures:
    """One JSON file's figures: (case, key, baseline) -> its row (``ratio``,
    ``ratio_spread``, ``value``, ``spread``, ``label``, ``unit``,
    ``scale``, ``baseline``), and where it was measured."""

    path: str
    rows: dict[tuple[str, str, str], dict[str, Any]]
    commit: str
    when: str
    load: str


@dataclass(frozen=True)
class Change:
    case: str
    key: str
    label: str
    baseline: str | None
    before: float
    after: float
    # The wider of the two runs' spreads (ratio spreads for ratios), None
    # when neither run had two rounds.
    noise: float | None
    is_ratio: bool
    unit: str = ""
    scale: float = 1.0

    @property
    def change(self) -> float:
        """(after - before) / before."""
        return (self.after - self.before) / self.before

    @property
    def verdict(self) -> str:
        if self.noise is not None and abs(self.change) <= self.noise:
            return "within noise"
        return "better" if self.change > 0 else "worse"


def load(path: str | Path) -> Figures:
    """Read a ``crust bench`` JSON file (this format or the older one)."""
    doc = json.loads(Path(path).read_text())
    if not isinstance(doc, dict) or "benchmarks" not in doc:
        raise ValueError(f"{path}: not a crust bench JSON file (no 'benchmarks')")
    ci = doc.get("commit_info") or {}
    commit = str(ci.get("id", "?"))[:12] + (" (dirty)" if ci.get("dirty") else "")
    # Keyed by the baseline too: one figure may be divided by two.
    rows: dict[tuple[str, str, str], dict[str, Any]] = {}
    section = doc.get("crust")
    load_text = "?"
    if isinstance(section, dict) and "rows" in section:
        for r in section["rows"]:
            if r.get("value") is not None:
                rows[(r["case"], r["key"], r.get("baseline") or "")] = r
        at = section.get("load_average_at_start")
        if at:
            load_text = f"{at[0]:.2f}"
    else:
        # The older format: medians and median ratios in extra_info.
        for b in doc["benchmarks"]:
            extra = b.get("extra_info", {})
            for k, v in extra.items():
                if "_ratio_vs_" in k:
                    key, _, base = k.partition("_ratio_vs_")
                    if isinstance(v, (int, float)):
                        row = rows.setdefault((b["name"], key, base), {"label": key, "scale": 1.0})
                        row.update(ratio=float(v), baseline=base, value=extra.get(key))
            for k, v in extra.items():
                taken = any(c == b["name"] and key == k for c, key, _ in rows)
                if not taken and isinstance(v, float):
                    rows[(b["name"], k, "")] = {"label": k, "value": v, "scale": 1.0}
    return Figures(str(path), rows, commit, str(doc.get("datetime", "?"))[:19], load_text)


def changes(old: Figures, new: Figures) -> list[Change]:
    """Every figure in both files, new file's order; ratios where both
    have one, else the absolute figures (medians)."""
    out = []
    for (case, key, base), n in new.rows.items():
        o = old.rows.get((case, key, base))
        if o is None:
            continue
        if o.get("ratio") and n.get("ratio"):
            before, after, is_ratio = float(o["ratio"]), float(n["ratio"]), True
            spreads = [o.get("ratio_spread"), n.get("ratio_spread")]
        elif o.get("value") and n.get("value") is not None:
            before, after, is_ratio = float(o["value"]), float(n["value"]), False
            spreads = [o.get("spread"), n.get("spread")]
        else:
            continue
        known = [s for s in spreads if s is not None]
        out.append(
            Change(
                case=case,
                key=key,
                label=str(n.get("label", key)).strip(),
                baseline=n.get("baseline"),
                before=before,
                after=after,
                noise=max(known) if known else None,
                is_ratio=is_ratio,
                unit=str(n.get("unit", "")),
                scale=float(n.get("scale") or 1.0),
            )
        )
    return out


def _fig(x: float) -> str:
    return f"{x:,.0f}" if abs(x) >= 1000 else f"{x:.4g}"


def _pct(x: float | None) -> str:
    return "" if x is None else f"{100 * x:.0f}%"


def text(old: Figures, new: Figures) -> str:
    """The comparison as a table: ratios first, then absolute figures."""
    cs = changes(old, new)
    lines = [
        f"before: {old.path} (commit {old.commit}, {old.when}, load {old.load})",
        f"after:  {new.path} (commit {new.commit}, {new.when}, load {new.load})",
        "",
        "ratios to the same run's baseline (what to compare):",
        f"  {'case':<34}{'figure':<40}{'before':>8}{'after':>8}{'change':>8}{'noise':>7}  verdict",
    ]
    for c in (c for c in cs if c.is_ratio):
        lines.append(
            f"  {c.case:<34}{c.label[:39]:<40}{c.before:>7.2f}x{c.after:>7.2f}x"
            f"{100 * c.change:>+7.0f}%{_pct(c.noise):>7}  {c.verdict}"
        )
    absolute = [c for c in cs if not c.is_ratio]
    if absolute:
        lines += [
            "",
            "absolute figures (medians; they move with the machine, read with care):",
            f"  {'case':<34}{'figure':<40}{'before':>10}{'after':>10}{'change':>8}"
            f"{'noise':>7}  unit",
        ]
        for c in absolute:
            lines.append(
                f"  {c.case:<34}{c.label[:39]:<40}{_fig(c.before / c.scale):>10}"
                f"{_fig(c.after / c.scale):>10}{100 * c.change:>+7.0f}%{_pct(c.noise):>7}  {c.unit}"
            )
    if not cs:
        lines.append("  (no figure in both files)")
    return "\n".join(lines)
