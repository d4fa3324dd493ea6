"""What the adversarial tests share: a service on loopback and its events
(from tests/test_dos.py), and the process's resident memory."""

from __future__ import annotations

import os

from test_dos import HOST, Attacker, Recorder, connect_pair, node, run

__all__ = ["HOST", "Attacker", "Recorder", "connect_pair", "node", "rss", "run"]


def rss() -> int:
    """Resident bytes of this process now (Linux)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
