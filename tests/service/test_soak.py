"""A minute of mixed traffic to a peer frozen and thawed: nothing lost,
duplicated, reordered or corrupted (every message checked), and traffic
resumes promptly after each thaw (issue 22). ``crust bench --soak`` runs
the same for hours."""

from __future__ import annotations

import asyncio

import pytest

from crust.bench.soak import soak


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_soak_with_freezes(transport: str) -> None:
    seconds = 60.0 if transport == "udp" else 30.0
    r = asyncio.run(soak(seconds, transport=transport, freeze_every=15.0, freeze_for=5.0))
    assert not r.errors, r.errors[:10]
    assert r.received == r.sent and sum(r.sent) > 1000
    assert r.freezes >= 1
    assert r.resume_max < 1.0, f"traffic resumed {r.resume_max:.2f} s after a thaw"
