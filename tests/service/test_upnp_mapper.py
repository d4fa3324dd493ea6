"""PortMapper and UpnpGateway against a fake miniupnpc (no network): time
boxes on hung and failing gateways, same-port and any-port mapping,
renewal before the lease runs out, removal at close, and the Service
option. The real gateway (miniupnpd) is exercised in tests/netlab."""

from __future__ import annotations

import asyncio
import itertools
import sys
import threading
import time
import types
from collections.abc import Iterator
from typing import Any

import pytest

from crust.asyncio.upnp import PortMapper, UpnpError, UpnpGateway
from crust.config import ServiceConfig
from crust.errors import ConfigError


class FakeIGD:
    """What the fake gateway holds, shared by every FakeUPnP instance."""

    def __init__(self) -> None:
        self.devices = 1
        self.hang: set[str] = set()
        self.taken: set[tuple[int, str]] = set()
        self.mappings: dict[tuple[int, str], tuple[str, int, int]] = {}
        self.adds: list[tuple[int, str, float]] = []
        self.release = threading.Event()
        self.external = "11.9.0.2"

    def maybe_hang(self, what: str) -> None:
        if what in self.hang:
            self.release.wait(10)


IGD = FakeIGD()


class FakeUPnP:
    def __init__(self) -> None:
        self.discoverdelay = 0
        self.multicastif = ""
        self.lanaddr = "10.9.0.2"

    def discover(self) -> int:
        IGD.maybe_hang("discover")
        return IGD.devices

    def selectigd(self) -> str:
        return "http://10.9.0.1:5000/ctl"

    def externalipaddress(self) -> str:
        IGD.maybe_hang("externalipaddress")
        return IGD.external

    def addportmapping(
        self, eport: int, proto: str, host: str, iport: int, desc: str, remote: str, lease: int
    ) -> bool:
        IGD.maybe_hang("add")
        if (eport, proto) in IGD.taken:
            raise Exception("ConflictInMappingEntry")
        IGD.mappings[(eport, proto)] = (host, iport, lease)
        IGD.adds.append((eport, proto, time.monotonic()))
        return True

    def addanyportmapping(
        self, eport: int, proto: str, host: str, iport: int, desc: str, remote: str, lease: int
    ) -> int:
        port = eport + 1
        while (port, proto) in IGD.taken:
            port += 1
        IGD.mappings[(port, proto)] = (host, iport, lease)
        return port

    def deleteportmapping(self, eport: int, proto: str) -> bool:
        IGD.maybe_hang("delete")
        if IGD.mappings.pop((eport, proto), None) is None:
            raise Exception("NoSuchEntryInArray")
        return True


@pytest.fixture(autouse=True)
def fake_miniupnpc(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeIGD]:
    global IGD
    IGD = FakeIGD()
    mod = types.ModuleType("miniupnpc")
    mod.UPnP = FakeUPnP  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "miniupnpc", mod)
    yield IGD
    IGD.release.set()  # let hung fake calls end


def run(coro: Any, timeout: float = 20.0) -> Any:
    async def main() -> Any:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(main())


PORTS = [("udp", ("0.0.0.0", 40000)), ("tcp", ("10.9.0.2", 40000))]


def test_maps_same_port_and_removes_at_close() -> None:
    async def main() -> None:
        m = PortMapper(PORTS, lease=3600)
        m.start()
        st = await m.wait_ready(5)
        assert st.state == "mapped" and st.external_ip == "11.9.0.2"
        got = {(x.protocol, x.internal, x.external, x.lease) for x in st.mappings}
        assert got == {
            ("udp", ("10.9.0.2", 40000), ("11.9.0.2", 40000), 3600),
            ("tcp", ("10.9.0.2", 40000), ("11.9.0.2", 40000), 3600),
        }
        assert set(IGD.mappings) == {(40000, "UDP"), (40000, "TCP")}
        await m.close()
        assert IGD.mappings == {} and m.status.state == "closed"

    run(main())


def test_taken_port_gets_any_port() -> None:
    IGD.taken.add((40000, "UDP"))

    async def main() -> None:
        m = PortMapper(PORTS[:1])
        m.start()
        st = await m.wait_ready(5)
        assert [x.external for x in st.mappings] == [("11.9.0.2", 40001)]
        await m.close()

    run(main())


def test_renews_at_half_the_lease() -> None:
    async def main() -> None:
        m = PortMapper(PORTS[:1], lease=1)
        m.start()
        await m.wait_ready(5)
        await asyncio.sleep(1.3)
        times = [t for (port, proto, t) in IGD.adds if proto == "UDP"]
        IGD.external = "11.9.0.3"
        await asyncio.sleep(0.6)
        assert [x.external for x in m.mappings] == [("11.9.0.3", 40000)]
        # Added once, then refreshed every 0.5 s: before the 1 s lease ends.
        assert len(times) >= 3
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert all(0.4 < g < 0.8 for g in gaps), gaps
        await m.close()

    run(main())


@pytest.mark.parametrize("hang", ["discover", "externalipaddress", "add"])
def test_hung_gateway_is_time_boxed(hang: str) -> None:
    IGD.hang.add(hang)

    async def main() -> None:
        m = PortMapper(PORTS, discover_timeout=0.2, call_timeout=0.3)
        t0 = time.monotonic()
        m.start()
        st = await m.wait_ready(5)
        took = time.monotonic() - t0
        assert st.state == "unavailable" and "no answer within" in (st.error or "")
        assert took < 2.0, took
        await m.close()

    run(main())


def test_no_device_and_hung_delete() -> None:
    IGD.devices = 0

    async def main() -> None:
        with pytest.raises(UpnpError, match="no UPnP device"):
            await UpnpGateway.discover(timeout=0.1)
        IGD.devices = 1
        m = PortMapper(PORTS, call_timeout=0.2)
        m.start()
        await m.wait_ready(5)
        IGD.hang.add("delete")
        t0 = time.monotonic()
        await m.close()
        assert time.monotonic() - t0 < 1.0  # gave up on the hung gateway

    run(main())


def test_lease_validated() -> None:
    with pytest.raises(ValueError, match="lease"):
        PortMapper(PORTS, lease=-1)
    with pytest.raises(ConfigError, match="upnp_lease"):
        ServiceConfig(upnp_lease=10)


def test_service_start_and_close_do_not_wait_for_a_hung_gateway() -> None:
    from crust import Identity, Service

    IGD.hang.add("discover")

    async def main() -> None:
        # Only the live listeners of non-loopback addresses are mapped; the
        # fake module means nothing leaves the machine.
        cfg = ServiceConfig(
            hosts=("0.0.0.0",),
            identity=Identity.generate(),
            upnp=True,
            beacon=False,
            gossip=False,
        )
        t0 = time.monotonic()
        async with Service(cfg) as svc:
            assert time.monotonic() - t0 < 0.5
            assert svc.upnp is not None and svc.upnp.status.state == "discovering"
            assert svc.mapped_addresses == []
            port = svc.endpoints[0][1]
            assert sorted(svc.upnp.ports) == [
                ("tcp", ("0.0.0.0", port)),
                ("udp", ("0.0.0.0", port)),
            ]
            t1 = time.monotonic()
        assert time.monotonic() - t1 < 1.0
        assert svc.upnp.status.state == "closed"
        async with Service(cfg.replace(hosts=("127.0.0.1",))) as svc:
            assert svc.upnp is None

    run(main())


def test_service_reports_mappings_as_events() -> None:
    from crust import Identity, PortMapped, PortMappingFailed, Service

    async def main() -> None:
        cfg = ServiceConfig(
            hosts=("0.0.0.0",), identity=Identity.generate(), upnp=True, beacon=False,
            gossip=False,
        )  # fmt: skip
        async with Service(cfg) as svc:
            port = svc.endpoints[0][1]
            got = []
            async for ev in svc.events():
                if isinstance(ev, (PortMapped, PortMappingFailed)):
                    got.append(ev)
                    if len(got) == 2 or isinstance(ev, PortMappingFailed):
                        break
            assert sorted(got, key=lambda e: e.protocol) == [  # type: ignore[union-attr]
                PortMapped("tcp", ("10.9.0.2", port), ("11.9.0.2", port), 3600),
                PortMapped("udp", ("10.9.0.2", port), ("11.9.0.2", port), 3600),
            ]
        IGD.devices = 0
        async with Service(cfg) as svc:
            async for ev in svc.events():
                if isinstance(ev, PortMappingFailed):
                    assert "no UPnP device" in ev.reason
                    break

    run(main())
