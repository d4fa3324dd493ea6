"""Plain L2 topologies for lab tests: hosts in network namespaces on
bridges, the bridges in one "switch" namespace that can also route between
them. Simpler than :mod:`lab` (no NAT, no internet router) and with any
number of hosts per bridge; it reuses lab's :class:`~lab.Node` and
:class:`~lab.Proc`, so ``host.python(...)``, ``proc.expect(...)`` work the
same way.

    with BridgeLab() as bl:
        br = bl.add_bridge("a")            # 10.210.<n>.0/24, switch at .1
        h1, h2 = bl.add_host(br), bl.add_host(br)   # also fd00:210:<n>::<k>
        bl.ipv6[h1.ns]                     # h1's IPv6 address
        p = h1.python(code, env=...)

Names are ``cb<pid>x<n>-...``; a new lab deletes the namespaces of dead
runs first, ``close()`` (also at exit) stops processes and deletes its own.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

from lab import NamespaceRun, Node, _kill_ns_pids, _pid_alive, _run

__all__ = ["Bridge", "BridgeLab"]

_PREFIX_RE = re.compile(r"^cb(\d+)x\d+-")


def sweep_stale() -> None:
    for line in _run(["ip", "netns", "list"], check=False).splitlines():
        name = line.split()[0] if line.strip() else ""
        m = _PREFIX_RE.match(name)
        if m and not _pid_alive(int(m.group(1))):
            _kill_ns_pids(name)
            _run(["ip", "netns", "del", name], check=False)


@dataclass
class Bridge:
    name: str
    index: int
    hosts: list[Node] = field(default_factory=list)

    @property
    def prefix(self) -> str:
        return f"10.210.{self.index}"

    @property
    def prefix6(self) -> str:
        return f"fd00:210:{self.index}"

    @property
    def gateway(self) -> str:
        return f"{self.prefix}.1"


class BridgeLab(NamespaceRun):
    """Bridges and hosts; see the module docstring. ``route=True``: the
    switch forwards between bridges (hosts have a default route to it)."""

    _counter = 0

    def __init__(self, *, route: bool = True) -> None:
        sweep_stale()
        BridgeLab._counter += 1
        super().__init__(f"cb{os.getpid()}x{BridgeLab._counter}")
        self.bridges: list[Bridge] = []
        self._hosts = 0
        #: Each host's IPv6 address (ULA, on the same link as its IPv4 one).
        self.ipv6: dict[str, str] = {}
        try:
            self.switch = self._new_ns("sw", "switch")
            self.switch.sysctl("net.ipv4.ip_forward", 1 if route else 0)
        except BaseException:
            self.close()
            raise

    def _new_ns(self, suffix: str, role: str) -> Node:
        ns = f"{self.prefix}-{suffix}"
        _run(["ip", "netns", "add", ns])
        self.namespaces.append(ns)
        node = Node(self, ns, role)  # type: ignore[arg-type]  # duck-typed: needs .procs
        node.ip_cmd("link", "set", "lo", "up")
        return node

    def add_bridge(self, name: str) -> Bridge:
        br = Bridge(name, len(self.bridges) + 1)
        dev = f"br{br.index}"
        self.switch.ip_cmd("link", "add", dev, "type", "bridge")
        self.switch.ip_cmd("addr", "add", f"{br.gateway}/24", "brd", "+", "dev", dev)
        self.switch.ip_cmd("link", "set", dev, "up")
        # Frames between hosts of one bridge are switched, not filtered.
        self.switch.sh("sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=0", check=False)
        self.bridges.append(br)
        return br

    def add_host(self, bridge: Bridge) -> Node:
        self._hosts += 1
        n = self._hosts
        host = self._new_ns(f"h{n}", "host")
        # No duplicate address detection: addresses (link-local included)
        # are usable at once instead of "tentative" for 1-2 s.
        host.sysctl("net.ipv6.conf.all.accept_dad", 0)
        host.sysctl("net.ipv6.conf.default.accept_dad", 0)
        host.ip = f"{bridge.prefix}.{len(bridge.hosts) + 2}"
        host_ip6 = f"{bridge.prefix6}::{len(bridge.hosts) + 2}"
        self.switch.ip_cmd(
            "link", "add", f"v{n}", "type", "veth", "peer", "name", "eth0", "netns", host.ns
        )
        self.switch.ip_cmd("link", "set", f"v{n}", "master", f"br{bridge.index}", "up")
        host.ip_cmd("addr", "add", f"{host.ip}/24", "brd", "+", "dev", "eth0")
        host.ip_cmd("-6", "addr", "add", f"{host_ip6}/64", "dev", "eth0", "nodad")
        self.ipv6[host.ns] = host_ip6
        host.ip_cmd("link", "set", "eth0", "up")
        host.ip_cmd("route", "add", "default", "via", bridge.gateway)
        bridge.hosts.append(host)
        return host

    def __enter__(self) -> BridgeLab:
        return self
