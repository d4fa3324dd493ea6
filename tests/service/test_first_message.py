"""A fresh connection carries its first message at once (issue 22).

Before the endpoint held early packets, 5-15 % of fresh UDP connections
waited ~1 s for their first message: the dialler's first data packets
shared a receive batch with its final handshake message and were dropped
as unknown connection ids until retransmitted.
"""

from __future__ import annotations

import asyncio

import pytest

from crust.bench.first_message import first_message_rtts, percentile

FRESH = 500
# One RTT on loopback is well under a millisecond; a stall is a loss timer
# (a second). 100 ms leaves room for a loaded CI machine.
LIMIT = 0.100


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_no_first_message_stall(transport: str) -> None:
    rtts = asyncio.run(asyncio.wait_for(first_message_rtts(FRESH, transport=transport), 240))
    slow = [round(t * 1e3, 1) for t in rtts if t > LIMIT]
    assert not slow, (
        f"{len(slow)} of {FRESH} first messages over {LIMIT * 1e3:.0f} ms: {slow} "
        f"(median {percentile(rtts, 50) * 1e3:.1f} ms)"
    )
