"""crust.nat.binding: when a UDP path crosses a NAT on our side (issue 16,
item 3), and the keepalive a connection then gets."""

from __future__ import annotations

import asyncio

from crust import Identity, Service, ServiceConfig, _core
from crust.errors import ConfigError
from crust.nat.binding import crosses_nat

MINE = frozenset({"127.0.0.1", "10.1.0.2", "fe80::1"})


def test_crosses_nat() -> None:
    assert not crosses_nat(None, ("0.0.0.0", 5000), MINE)  # no report: unknown
    assert not crosses_nat(("10.1.0.2", 5000), ("0.0.0.0", 5000), MINE)
    assert not crosses_nat(("10.1.0.2", 5000), ("10.1.0.2", 5000), MINE)
    assert crosses_nat(("11.0.1.2", 5000), ("0.0.0.0", 5000), MINE)  # another IP
    assert crosses_nat(("11.0.1.2", 5000), ("10.1.0.2", 5000), MINE)
    assert crosses_nat(("10.1.0.2", 40001), ("10.1.0.2", 5000), MINE)  # another port
    assert not crosses_nat(("fe80:0:0::1", 7), ("::", 7), MINE)  # canonical text
    assert crosses_nat(("2001:db8::5", 7), ("::", 7), MINE)


def test_keepalive_follows_the_path() -> None:
    """On loopback no NAT: the connection keeps ``keepalive``. A peer that
    reports another address for us (as a NAT would make it see) gets
    ``nat_keepalive``."""

    async def main() -> None:
        def cfg() -> ServiceConfig:
            return ServiceConfig(
                network="nat-binding", hosts=("127.0.0.1",), backup_port=False, tcp=False,
                beacon=False, keepalive=20.0, nat_keepalive=7.0, identity=Identity.generate(),
            )  # fmt: skip

        async with Service(cfg()) as a, Service(cfg()) as b:
            peer = await a.connect(b.endpoints[0])
            assert peer._link.conn.keepalive_us == 20_000_000
            listener = a._udp[0]
            conn = peer._link.conn
            listener._nat_keepalive(conn)
            assert conn.keepalive_us == 7_000_000
            # Never lengthened: a shorter keepalive stays.
            conn.keepalive_us = 3_000_000
            listener._nat_keepalive(conn)
            assert conn.keepalive_us == 3_000_000

    asyncio.run(main())


def test_nat_keepalive_only_shortens() -> None:
    # A short idle timeout (tests, LANs) with the default nat_keepalive is valid.
    ServiceConfig(idle_timeout=1.0, keepalive=0.5)
    for bad in (-1.0, 0.001):
        try:
            ServiceConfig(nat_keepalive=bad)
        except ConfigError as exc:
            assert "nat_keepalive" in str(exc)
        else:
            raise AssertionError(f"nat_keepalive={bad} accepted")

    async def main() -> None:
        cfg = ServiceConfig(
            network="nat-binding", hosts=("127.0.0.1",), backup_port=False, tcp=False,
            beacon=False, keepalive=0.0, identity=Identity.generate(),
        )  # fmt: skip
        async with Service(cfg) as a:
            conn = _core.Connection(b"A" * 8, b"B" * 8, 0, a.config.engine_config())
            assert conn.keepalive_us == 0
            a._udp[0]._nat_keepalive(conn)
            assert conn.keepalive_us == 0  # keepalives off stay off

    asyncio.run(main())
