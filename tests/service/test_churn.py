"""Churn: connections opened and ended every way leave nothing behind.

Each case runs connections of one transport and one way of ending between
two services in this process (``crust.bench.churn``), then asserts that
every per-connection object is gone (``Service.stats()["live"]`` back to
zero, the engine connections back to their count before the run) and that
the resident set grew by at most 10 KB per connection after the warm-up
(before issue 22 a TCP connection kept ~430 KB forever).
``crust bench --churn`` runs the same cases longer.
"""

from __future__ import annotations

import asyncio
import gc

import pytest

from crust import _core
from crust.bench.churn import ENDINGS, PARALLEL_ENDINGS, TRANSPORTS, churn

CYCLES = 150
# The endings that wait on a timer run 32 connections at a time; more of
# them keep the slope from resting on a handful of samples.
CYCLES_PARALLEL = 320
WARMUP = 40
MAX_SLOPE = 10_000  # bytes per connection


@pytest.mark.parametrize("ending", ENDINGS)
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_churn_leaves_nothing_behind(transport: str, ending: str) -> None:
    gc.collect()  # connections earlier tests dropped but did not free yet
    before = _core.live_connections()
    cycles = CYCLES_PARALLEL if ending in PARALLEL_ENDINGS else CYCLES
    result = asyncio.run(asyncio.wait_for(churn(transport, ending, cycles, warmup=WARMUP), 120))
    per_connection = {k: v for k, v in result.server_live.items() if k != "engine_connections"}
    assert not any(per_connection.values()), result.server_live
    client = {k: v for k, v in result.client_live.items() if k != "engine_connections"}
    assert not any(client.values()), result.client_live
    gc.collect()
    assert _core.live_connections() <= before
    assert result.rss_slope <= MAX_SLOPE, (
        f"{transport} x {ending}: {result.rss_slope / 1024:.1f} KiB per connection "
        f"(resident set after each batch: {result.samples})"
    )
