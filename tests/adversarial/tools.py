"""What the adversarial tests share: a service on loopback and its events
(from tests/adversarial/test_dos.py), and the process's resident memory."""

from __future__ import annotations

import os

import figures

from .test_dos import HOST, Attacker, Recorder, connect_pair, node, run

__all__ = ["HOST", "Attacker", "Recorder", "connect_pair", "figure", "node", "rss", "run"]


def rss() -> int:
    """Resident bytes of this process now (Linux)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def figure(attack: str, measured: str) -> None:
    """What an attack achieved, for the issue's "after" table: printed
    (pytest -s) and, when ``CRUST_FIGURES`` names a file, appended to it as
    a JSON line, so a whole run's figures can be collected."""
    print(f"\nFIGURE {attack}: {measured}")
    figures.append({"attack": attack, "measured": measured})
