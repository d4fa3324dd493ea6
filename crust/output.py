"""What the command line shows people: sizes, rates and durations in
human units, a progress bar that only a terminal gets, and events as
one line of text or of JSON (``crust node [--json]``).

Nothing here decides anything; it only formats, so every command shows a
figure the same way.
"""

from __future__ import annotations

import dataclasses
import enum
import time
import unicodedata
from pathlib import Path
from typing import IO, Any

__all__ = [
    "Progress",
    "event_json",
    "event_line",
    "human_duration",
    "human_rate",
    "human_size",
    "printable",
]

_UNITS = ("B", "kB", "MB", "GB", "TB", "PB")


def human_size(n: float) -> str:
    """``1234567`` -> ``"1.23 MB"`` (decimal units, as network rates are)."""
    value = float(n)
    for unit in _UNITS:
        # Compared after rounding: 999,999 B is "1 MB", not "1e+03 kB".
        shown = f"{value:.0f}" if unit == "B" else f"{value:.3g}"
        if abs(float(shown)) < 1000 or unit == _UNITS[-1]:
            return f"{shown} {unit}"
        value /= 1000
    raise AssertionError("unreachable")  # pragma: no cover


def human_rate(bytes_per_second: float) -> str:
    """``12_500_000`` -> ``"12.5 MB/s"``."""
    return human_size(bytes_per_second) + "/s"


def human_duration(seconds: float) -> str:
    """``0.007296`` -> ``"7.3 ms"``, ``125`` -> ``"2 min 05 s"``."""
    s = max(float(seconds), 0.0)
    if s < 1e-3:
        return f"{s * 1e6:.0f} µs"
    if s < 1:
        return f"{s * 1e3:.3g} ms"
    if s < 60:
        return f"{s:.3g} s"
    if s < 3600:
        return f"{int(s // 60)} min {int(s % 60):02d} s"
    return f"{int(s // 3600)} h {int(s % 3600 // 60):02d} min"


def printable(text: str) -> str:
    """``text`` safe to echo on a terminal: control and format characters
    (escape sequences, newlines, bidi overrides) shown as ``\\xNN`` /
    ``\\uNNNN``, so a peer's string can never forge or repaint output."""
    out = []
    for ch in text:
        if unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp"):
            out.append(ch.encode("unicode_escape").decode("ascii"))
        else:
            out.append(ch)
    return "".join(out)


class Progress:
    """A one-line progress bar with rate and ETA on ``stream``, redrawn at
    most 10 times a second. Drawn only when ``stream`` is a terminal: in a
    pipe or a log file the carriage returns would be noise."""

    def __init__(self, total: int, stream: IO[str] | None, label: str) -> None:
        self.total = max(total, 1)
        self.stream = stream if stream is not None and stream.isatty() else None
        self.label = label
        self.start = time.monotonic()
        self._drawn = 0.0

    def update(self, done: int, *, final: bool = False) -> None:
        if self.stream is None:
            return
        now = time.monotonic()
        if not final and now - self._drawn < 0.1:
            return
        self._drawn = now
        frac = min(done / self.total, 1.0)
        elapsed = max(now - self.start, 1e-6)
        rate = done / elapsed
        if final:
            tail = f"in {human_duration(elapsed)}"
        elif rate > 0:
            tail = f"ETA {human_duration((self.total - done) / rate)}"
        else:
            tail = "ETA ?"
        bar = "#" * int(frac * 30)
        # \x1b[K clears what a longer previous line left on the right.
        self.stream.write(
            f"\r{self.label} [{bar:<30}] {frac:6.1%} {human_rate(rate):>11} {tail}\x1b[K"
            + ("\n" if final else "")
        )
        self.stream.flush()


def _plain(value: Any) -> Any:
    """An event field as JSON: peers and ids by their id, addresses as
    ``[host, port]``, payloads by their size."""
    # Imported here: formatting must not pull in the service for `--version`.
    from crust.identity import PeerId
    from crust.peer import Peer

    if isinstance(value, Peer):
        return str(value.id)
    if isinstance(value, PeerId):
        return str(value)
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"size": len(value)}
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def event_json(ev: Any) -> dict[str, Any]:
    """One event as a JSON object: ``{"event": "NewPeer", "time": ..., fields}``."""
    out: dict[str, Any] = {"event": type(ev).__name__, "time": round(time.time(), 3)}
    for f in dataclasses.fields(ev):
        out[f.name] = _plain(getattr(ev, f.name))
    return out


def event_line(ev: Any) -> str:
    """One event as a line of text: ``NewPeer peer=abcd… incoming=false ...``,
    strings from the network made printable."""
    parts = [type(ev).__name__]
    for key, value in event_json(ev).items():
        if key in ("event", "time"):
            continue
        if isinstance(value, dict) and set(value) == {"size"}:
            value = human_size(value["size"])
        elif isinstance(value, str) and len(value) == 56 and key in ("peer", "peer_id"):
            value = value[:8] + "…"
        elif isinstance(value, bool):
            value = "true" if value else "false"
        parts.append(f"{key}={printable(str(value))}")
    return " ".join(parts)
