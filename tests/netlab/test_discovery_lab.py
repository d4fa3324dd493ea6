"""Discovery acceptance in network namespaces (root): LAN beacon, foreign
networks, bootstrap from the cache alone, contact gossip two hops deep.

Topology (tests/netlab/bridges.py; the switch routes between bridges)::

    br1 10.210.1/24: n1 n2 n3          network "lab-net", beacon on
                     fx                network "other-net", beacon on
    br2 10.210.2/24: f1                network "other-net", contact n1
                     g1                network "lab-net", beacon off, contact c1
    br3 10.210.3/24: c1 - c2 - c3      a chain (beacon off, bootstrap_peers 1)

Each node is tests/netlab/discovery_node.py in its own namespace,
configured by a TOML file; it prints its events with times measured from
its own start, which are the figures this test reports.
"""

from __future__ import annotations

import itertools
import os
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from bridges import BridgeLab
from conftest import require_netlab
from lab import Node, Proc

NODE = Path(__file__).with_name("discovery_node.py")
PORT = 7000


@pytest.fixture
def bridges() -> Iterator[BridgeLab]:
    require_netlab()
    with BridgeLab() as bl:
        yield bl


class LabNode:
    """One discovery_node.py process and the lines it printed."""

    def __init__(self, bl: BridgeLab, host: Node, name: str, **settings: object) -> None:
        self.host = host
        self.name = name
        self.seed = os.urandom(32).hex()
        self.cache = bl.tmp / f"{name}-cache.json"
        self.bl = bl
        self.settings = {
            "hosts": [host.ip],
            "port": PORT,
            "backup_port": False,
            "cache_path": str(self.cache),
            "bootstrap_timeout": 2.0,
            "bootstrap_attempt_timeout": 1.0,
            **settings,
        }
        self.proc: Proc | None = None
        self.id = ""
        self.ready_ms = 0
        self.lines: list[str] = []

    def start(self, **changes: object) -> None:
        settings = {**self.settings, **changes}
        toml = self.bl.tmp / f"{self.name}.toml"
        toml.write_text("".join(f"{k} = {_toml(v)}\n" for k, v in settings.items()))
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = self.host.spawn(sys.executable, str(NODE), str(toml), self.seed, env=env)
        self.lines = []

    def ready(self) -> None:
        m = self._expect(r"^READY (\S+) (\S+) (\d+)", 20.0)
        self.id = m.group(1)
        self.ready_ms = int(m.group(3))

    def _expect(self, pattern: str, timeout: float) -> re.Match[str]:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while True:
            line = self.proc.readline(max(0.01, deadline - time.monotonic()))
            self.lines.append(line)
            m = re.search(pattern, line)
            if m:
                return m

    def collect(self, seconds: float) -> None:
        """Read lines for ``seconds``."""
        assert self.proc is not None
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                self.lines.append(self.proc.readline(left))
            except TimeoutError:
                break

    def until(self, pred: object, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not pred():  # type: ignore[operator]
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{self.name}: condition not met; lines: {self.lines}")
            self.collect(min(0.1, left))

    def events(self, kind: str) -> list[list[str]]:
        return [ln.split()[1:] for ln in self.lines if ln.startswith(kind + " ")]

    def peers(self) -> set[str]:
        """Connected peer ids, replaying PEER and LOST lines in order."""
        now: set[str] = set()
        for ln in self.lines:
            kind, *fields = ln.split()
            if kind == "PEER":
                now.add(fields[0])
            elif kind == "LOST":
                now.discard(fields[0])
        return now

    def stop(self) -> None:
        assert self.proc is not None
        self.proc.stop()  # SIGTERM: a graceful close that flushes the cache


def _toml(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml(x) for x in v) + "]"
    return '"' + str(v) + '"'


def test_beacon_cache_and_gossip_in_namespaces(bridges: BridgeLab, capsys: object) -> None:
    bl = bridges
    br1, br2, br3 = bl.add_bridge("lan"), bl.add_bridge("far"), bl.add_bridge("chain")
    n = [LabNode(bl, bl.add_host(br1), f"n{i}", network="lab-net") for i in (1, 2, 3)]
    figures: dict[str, float] = {}

    # 1. Three nodes on one bridge find each other by beacon and connect.
    for node in n:
        node.start()
    for node in n:
        node.ready()
    ids = {node.id for node in n}
    for node in n:
        others = ids - {node.id}
        node.until(lambda node=node, others=others: others <= node.peers(), 10.0)
        lan = {f[0]: int(f[1]) for f in node.events("LAN")}
        assert set(lan) == others, node.lines
        assert [ln for ln in node.lines if ln.startswith("ONLAN ")][-1] == "ONLAN 2"
        found = max(lan.values())
        figures[f"{node.name}: both neighbours heard (ms since start)"] = found
        ready_ms = node.ready_ms
        assert found - ready_ms <= 2000, f"{node.name}: {found - ready_ms} ms after listening"
        figures[f"{node.name}: both heard, ms after listening"] = found - ready_ms
        connected = max(int(f[2]) for f in node.events("PEER"))
        figures[f"{node.name}: connected to both, ms after listening"] = connected - ready_ms

    # 2. A node of another network on another bridge, pointed at n1, is
    #    never connected.
    f1 = LabNode(
        bl, bl.add_host(br2), "f1", network="other-net", contacts=[f"{n[0].host.ip}:{PORT}"]
    )
    # And one of the other network on br1 itself: its beacons are foreign.
    fx = LabNode(bl, bl.add_host(br1), "fx", network="other-net")
    f1.start()
    fx.start()
    f1.ready()
    fx.ready()
    f1.until(lambda: bool(f1.events("FAILED")), 6.0)
    fx.until(lambda: bool(fx.events("FAILED")), 6.0)
    assert f1.peers() == set() and f1.events("BOOT") == []
    assert fx.peers() == set() and fx.events("LAN") == []
    for node in n:
        node.collect(0.2)
        for other in (f1, fx):
            assert other.id not in node.peers()
            assert other.id not in {x[0] for x in node.events("LAN")}

    # 3. n1 restarted with the beacon off reconnects from its cache alone.
    n[0].stop()
    for node in n[1:]:
        node.until(lambda node=node: n[0].id not in node.peers(), 10.0)
    n[0].start(beacon=False)
    n[0].ready()
    n[0].until(lambda: len(n[0].events("BOOT")) == 2, 10.0)
    assert {f[1] for f in n[0].events("BOOT")} == {"cache"}, n[0].lines
    assert n[0].events("LAN") == []
    assert {f[0] for f in n[0].events("BOOT")} == ids - {n[0].id}
    figures["n1 restart: both cached peers accepted, ms after listening"] = (
        max(int(f[2]) for f in n[0].events("BOOT")) - n[0].ready_ms
    )

    # 4. Empty cache + one contact reaches a node two gossip hops away.
    chain_cfg = {"network": "lab-net", "beacon": False, "bootstrap_peers": 1}
    c = [LabNode(bl, bl.add_host(br3), f"c{i}", **chain_cfg) for i in (1, 2, 3)]
    c[0].start()
    c[0].ready()
    for prev, node in itertools.pairwise(c):
        node.settings["contacts"] = [f"{prev.host.ip}:{PORT}"]
        node.start()
        node.ready()
        node.until(lambda node=node, prev=prev: prev.id in node.peers(), 10.0)
    c[0].collect(0.5)
    assert c[2].id not in c[0].peers()  # still a chain
    g1 = LabNode(
        bl,
        bl.add_host(br2),
        "g1",
        network="lab-net",
        beacon=False,
        contacts=[f"{c[0].host.ip}:{PORT}"],
    )
    assert not g1.cache.exists()
    g1.start()
    g1.ready()
    g1.until(lambda: c[2].id in g1.peers(), 10.0)
    g1.until(lambda: len(g1.events("BOOT")) >= 3, 5.0)
    boots = {f[0]: (f[1], int(f[2])) for f in g1.events("BOOT")}
    assert boots[c[0].id][0] == "contact"
    assert boots[c[1].id][0] == "gossip" and boots[c[2].id][0] == "gossip"
    figures["g1: reached c3 (two gossip hops), ms after listening"] = (
        boots[c[2].id][1] - g1.ready_ms
    )

    with capsys.disabled():  # type: ignore[attr-defined]
        print("\ndiscovery lab timings:")
        for k, v in figures.items():
            print(f"  {k}: {v:.0f}")


def test_beacon_over_ipv6_multicast(bridges: BridgeLab) -> None:
    """Nodes listening on IPv6 only find each other through the multicast
    group (no IPv4 broadcast involved) and connect over IPv6."""
    bl = bridges
    br = bl.add_bridge("v6")
    nodes = []
    for i in (1, 2):
        host = bl.add_host(br)
        nodes.append(LabNode(bl, host, f"s{i}", network="lab6", hosts=[bl.ipv6[host.ns]]))
    for node in nodes:
        node.start()
    for node in nodes:
        node.ready()
    a, b = nodes
    a.until(lambda: b.id in a.peers(), 10.0)
    b.until(lambda: a.id in b.peers(), 10.0)
    assert [f[0] for f in a.events("LAN")] == [b.id]
    assert [f[0] for f in b.events("LAN")] == [a.id]
    heard = max(int(a.events("LAN")[0][1]) - a.ready_ms, int(b.events("LAN")[0][1]) - b.ready_ms)
    assert heard <= 2000
