"""Two nodes dialling each other at once end with one connection each way
that both sides keep: the Peer objects connect() returned stay connected."""
from __future__ import annotations

import asyncio
from typing import Any

import pytest

from crust import Identity, LostPeer, Service, ServiceConfig


def _cfg(**kw: Any) -> ServiceConfig:
    return ServiceConfig(
        hosts=("127.0.0.1",), identity=Identity.generate(), cache_size=0, beacon=False, **kw
    )


@pytest.mark.parametrize("only", [{"udp": False}, {"tcp": False}, {}], ids=["tcp", "udp", "both"])
def test_simultaneous_connects_keep_the_returned_peers(only: dict[str, bool]) -> None:
    async def main() -> None:
        for _ in range(10):
            async with Service(_cfg(**only)) as a, Service(_cfg(**only)) as b:
                pa, pb = await asyncio.gather(a.connect(b.endpoints[0]), b.connect(a.endpoints[0]))
                await asyncio.sleep(0.3)  # let duplicates settle
                assert pa.is_connected and pb.is_connected, (pa.closed_reason, pb.closed_reason)
                assert a.peers == [pa] and b.peers == [pb]
                await pa.send(b"ping")
                async for ev in b.events():
                    assert not isinstance(ev, LostPeer), ev
                    if getattr(ev, "data", None) == b"ping":
                        break

    asyncio.run(asyncio.wait_for(main(), 120))
