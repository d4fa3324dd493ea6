"""What the command line prints: human units, a progress bar only on a
terminal (with rate and ETA), events as text and JSON."""

from __future__ import annotations

import io
import json

import pytest

from crust import Identity
from crust.events import LanPeerFound, NewMessage
from crust.output import Progress, event_json, event_line, human_duration, human_rate, human_size


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (0, "0 B"),
        (999, "999 B"),
        (1234, "1.23 kB"),
        (999_999, "1 MB"),
        (3e6, "3 MB"),
        (1.5e9, "1.5 GB"),
    ],
)
def test_human_size(n: float, text: str) -> None:
    assert human_size(n) == text


@pytest.mark.parametrize(
    ("s", "text"),
    [
        (0.007296153999988064, "7.3 ms"),
        (0.0000042, "4 µs"),
        (1.234, "1.23 s"),
        (125, "2 min 05 s"),
        (3725, "1 h 02 min"),
    ],
)
def test_human_duration(s: float, text: str) -> None:
    assert human_duration(s) == text


def test_human_rate() -> None:
    assert human_rate(12_500_000) == "12.5 MB/s"


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_only_on_a_terminal_with_rate_and_eta() -> None:
    pipe = io.StringIO()
    bar = Progress(1000, pipe, "recv x")
    bar.update(500, final=True)
    assert pipe.getvalue() == ""
    tty = _Terminal()
    bar = Progress(1_000_000, tty, "recv x")
    bar.start -= 1.0  # one second in
    bar.update(250_000)
    line = tty.getvalue()
    assert "25.0%" in line and "250 kB/s" in line and "ETA 3" in line
    bar.update(1_000_000, final=True)
    assert tty.getvalue().endswith("\n") and " in " in tty.getvalue().splitlines()[-1]


def test_events_as_text_and_json() -> None:
    pid = Identity.generate().peer_id
    found = LanPeerFound(pid, (("10.0.0.7", 5484),))
    doc = event_json(found)
    assert doc["event"] == "LanPeerFound" and doc["peer_id"] == str(pid)
    assert doc["endpoints"] == [["10.0.0.7", 5484]]
    json.dumps(doc)
    line = event_line(found)
    assert line.startswith(f"LanPeerFound peer_id={str(pid)[:8]}… endpoints=")
    # A payload is shown by its size; text from the network cannot
    # forge a line or move the cursor.
    msg = NewMessage(None, b"\x1b[2Jhello\nforged", 0)  # type: ignore[arg-type]
    assert event_json(msg)["data"] == {"size": 16}
    assert "16 B" in event_line(msg)
