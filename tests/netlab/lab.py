"""A NAT lab in Linux network namespaces (root only).

Topology (all names carry a per-run prefix, so parallel runs never meet)::

    site "a" (cone)             inet (router)              site "srv" (public)
    h1 10.1.0.2 --+             11.0.1.1 ---- 11.0.1.2 nat-a
    h2 10.1.0.3 --+- lan br     11.0.2.1 ---- 11.0.2.2 host of a public site
                  nat-a         11.0.250.1 -- 11.0.250.2 srv (11.255.0.1, .2, .10)

``inet`` is a real IP router (forwarding, TTL decremented), not a bridge, so
a packet sent with TTL 2 from a host behind a NAT passes its own NAT and dies
in the router: the hole-punching TTL trick means here what it means on the
internet. The lab's "internet" uses 11/8: miniupnpd refuses to work when its
WAN address is in any reserved range (documentation ranges included), and
these addresses only ever exist on the lab's own veths.

Site kinds (see ``KINDS``): ``public`` (no NAT), ``cone`` (port-preserving
MASQUERADE), ``cone-fw`` (the same plus a firewall dropping unsolicited
inbound packets), ``symmetric`` (``MASQUERADE --random-fully``),
``symmetric-fw``, ``upnp`` (``cone-fw`` plus miniupnpd, on iptables-legacy
because Debian's miniupnpd-iptables edits the legacy tables), ``natpmp``
(the same miniupnpd with UPnP off: it speaks only PCP and NAT-PMP).
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import json
import logging
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger("crust.netlab")

KINDS = ("public", "cone", "cone-fw", "symmetric", "symmetric-fw", "upnp", "natpmp")
#: Site kinds whose NAT runs miniupnpd.
MINIUPNPD_KINDS = ("upnp", "natpmp")

#: Debian packages providing each command the lab runs (scripts/test.sh
#: installs the missing ones).
TOOLS = {
    "ip": "iproute2",
    "tc": "iproute2",
    "iptables": "iptables",
    "iptables-legacy": "iptables",
    "conntrack": "conntrack",
    "turnserver": "coturn",
    "miniupnpd": "miniupnpd-iptables",
    "upnpc": "miniupnpc",
}

STUN_PORT = 3478
#: The server namespace's addresses: two STUN addresses (coturn's RFC 5780
#: primary and alternate) and one for a bootstrap/rendezvous node.
STUN_IP = "11.255.0.1"
STUN_ALT_IP = "11.255.0.2"
BOOTSTRAP_IP = "11.255.0.10"
#: IPv6 (opt-in: ``Lab.enable_ipv6()``, ``add_site(..., ipv6=True)``): the
#: router link of site N is 2001:db8:0:N::/64 (router ::1, site edge ::2),
#: a NAT site's LAN 2001:db8:N::/64 (its box ::1, hosts ::2, ::3) routed
#: through its box without NAT, behind a stateful firewall; the server's
#: bootstrap address on its loopback.
BOOTSTRAP_IP6 = "2001:db8:ff::10"

_PREFIX_RE = re.compile(r"^cl(\d+)x\d+-")


class LabError(RuntimeError):
    """A lab command failed; the message holds the command and its stderr."""


def missing_capabilities() -> list[str]:
    """What this machine lacks to build the lab (empty when it can)."""
    missing = []
    if os.geteuid() != 0:
        missing.append("root (euid 0)")
    for cmd, pkg in TOOLS.items():
        if shutil.which(cmd) is None:
            missing.append(f"command {cmd!r} (Debian package {pkg})")
    if not missing:
        name = f"clprobe{os.getpid()}"
        r = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True)
        if r.returncode != 0:
            missing.append(f"ip netns add: {r.stderr.strip()}")
        else:
            subprocess.run(["ip", "netns", "del", name], capture_output=True)
    return missing


def _run(argv: Sequence[str], *, check: bool = True, timeout: float = 20.0) -> str:
    r = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise LabError(f"{' '.join(argv)} -> exit {r.returncode}: {r.stderr.strip()}")
    return r.stdout


def _tbf_burst(rate: str) -> int:
    """tbf's bucket in bytes: 10 ms worth of ``rate`` ("800kbit", "10mbit",
    "1gbit"), at least 4 KB: tc-tbf(8) wants at least rate/HZ, and 10 ms
    covers any HZ >= 100."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([kmg]?)bit", rate.strip().lower())
    if m is None:
        raise ValueError(f"rate {rate!r} is not like '800kbit', '10mbit' or '1gbit'")
    bits = float(m.group(1)) * {"": 1, "k": 1e3, "m": 1e6, "g": 1e9}[m.group(2)]
    return max(4096, int(bits / 8 / 100))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_stale() -> list[str]:
    """Delete namespaces left by lab runs whose process is gone (a run that
    was SIGKILLed cannot clean up after itself). Returns the names removed."""
    removed = []
    for line in _run(["ip", "netns", "list"], check=False).splitlines():
        name = line.split()[0] if line.strip() else ""
        m = _PREFIX_RE.match(name)
        if m and not _pid_alive(int(m.group(1))):
            _kill_ns_pids(name)
            _run(["ip", "netns", "del", name], check=False)
            removed.append(name)
    return removed


def _kill_ns_pids(ns: str) -> None:
    # Only ever called on the lab's own uniquely named namespaces: every
    # process in them was started by a lab.
    for pid in _run(["ip", "netns", "pids", ns], check=False).split():
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGKILL)


class Proc:
    """A process running inside a namespace; output is read by threads so
    ``readline``/``expect`` can time out."""

    def __init__(self, argv: Sequence[str], ns: str, env: dict[str, str] | None) -> None:
        self.argv = list(argv)
        self.ns = ns
        self.popen = subprocess.Popen(
            ["ip", "netns", "exec", ns, *argv],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            bufsize=1,
            env=env,
            start_new_session=True,
        )
        self._lines: queue.Queue[str | None] = queue.Queue()
        self.stdout_lines: list[str] = []
        self.stderr_lines: list[str] = []
        self._threads = [
            threading.Thread(target=self._pump, args=(self.popen.stdout, True), daemon=True),
            threading.Thread(target=self._pump, args=(self.popen.stderr, False), daemon=True),
        ]
        for t in self._threads:
            t.start()

    def _pump(self, stream: object, is_stdout: bool) -> None:
        assert stream is not None
        for line in stream:  # type: ignore[attr-defined]
            line = line.rstrip("\n")
            if is_stdout:
                self.stdout_lines.append(line)
                self._lines.put(line)
            else:
                self.stderr_lines.append(line)
        if is_stdout:
            self._lines.put(None)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def readline(self, timeout: float = 10.0) -> str:
        """The next stdout line; raises TimeoutError or EOFError."""
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(
                f"no output from {self.argv[:3]} in {timeout} s; stderr: {self.stderr()[-2000:]}"
            ) from None
        if line is None:
            self._lines.put(None)
            raise EOFError(
                f"{self.argv[:3]} exited ({self.popen.poll()}); stderr: {self.stderr()[-2000:]}"
            )
        return line

    def expect(self, pattern: str, timeout: float = 10.0) -> re.Match[str]:
        """Reads stdout lines until one matches ``pattern`` (re.search)."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{pattern!r} not seen from {self.argv[:3]} in {timeout} s")
            m = re.search(pattern, self.readline(left))
            if m:
                return m

    def write(self, text: str) -> None:
        assert self.popen.stdin is not None
        self.popen.stdin.write(text)
        self.popen.stdin.flush()

    def ask(self, line: str, timeout: float = 30.0) -> dict[str, Any]:
        """Writes one command line, returns the next JSON object line the
        program prints (other lines are skipped)."""
        self.write(line + "\n")
        deadline = time.monotonic() + timeout
        while True:
            text = self.readline(max(0.1, deadline - time.monotonic()))
            if text.startswith("{"):
                return json.loads(text)  # type: ignore[no-any-return]

    def wait_event(self, ev: str, timeout: float = 30.0) -> dict[str, Any]:
        """The next JSON object line whose ``"ev"`` is ``ev`` (the agents'
        protocol: other lines are skipped)."""
        deadline = time.monotonic() + timeout
        while True:
            text = self.readline(max(0.1, deadline - time.monotonic()))
            if text.startswith("{"):
                msg: dict[str, Any] = json.loads(text)
                if msg.get("ev") == ev:
                    return msg

    def stderr(self) -> str:
        return "\n".join(self.stderr_lines)

    def wait(self, timeout: float = 10.0) -> int:
        rc = self.popen.wait(timeout)
        for t in self._threads:
            t.join(2.0)
        return rc

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 3.0) -> int | None:
        """Signals the process group, then SIGKILLs it if it lingers."""
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, sig)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(timeout)
        for t in self._threads:
            t.join(2.0)
        for s in (self.popen.stdin, self.popen.stdout, self.popen.stderr):
            if s is not None:
                with contextlib.suppress(OSError):
                    s.close()
        return self.popen.returncode


@dataclasses.dataclass
class Rule:
    """An iptables rule added mid-test; ``remove()`` deletes exactly it."""

    node: Node
    table: str
    chain: str
    spec: tuple[str, ...]
    removed: bool = False

    def remove(self) -> None:
        if not self.removed:
            self.node.iptables("-t", self.table, "-D", self.chain, *self.spec)
            self.removed = True


class Node:
    """One namespace: a host, a NAT box, the router or the server."""

    def __init__(self, lab: Lab, ns: str, role: str) -> None:
        self.lab = lab
        self.ns = ns
        self.role = role
        #: The address other lab nodes reach it at first (a LAN or public IP).
        self.ip = ""
        #: Its global IPv6 address, when its site has IPv6.
        self.ip6 = ""
        self.legacy_iptables = False

    def __repr__(self) -> str:
        return f"<Node {self.role} {self.ns} {self.ip}>"

    def sh(self, *argv: str, check: bool = True, timeout: float = 20.0) -> str:
        """Runs a command inside the namespace and returns its stdout."""
        return _run(["ip", "netns", "exec", self.ns, *argv], check=check, timeout=timeout)

    def ip_cmd(self, *args: str) -> str:
        return _run(["ip", "-n", self.ns, *args])

    def sysctl(self, key: str, value: str | int) -> None:
        self.sh("sysctl", "-qw", f"{key}={value}")

    def iptables(self, *args: str) -> str:
        tool = "iptables-legacy" if self.legacy_iptables else "iptables"
        return self.sh(tool, "-w", *args)

    def ip6tables(self, *args: str) -> str:
        tool = "ip6tables-legacy" if self.legacy_iptables else "ip6tables"
        return self.sh(tool, "-w", *args)

    def enable_ipv6(self, *, forwarding: bool = False) -> None:
        """IPv6 on, without what would add noise: no DAD (addresses are
        usable at once), no router advertisements or autoconfiguration."""
        for scope in ("all", "default"):
            self.sysctl(f"net.ipv6.conf.{scope}.disable_ipv6", 0)
            self.sysctl(f"net.ipv6.conf.{scope}.accept_dad", 0)
            self.sysctl(f"net.ipv6.conf.{scope}.accept_ra", 0)
            self.sysctl(f"net.ipv6.conf.{scope}.autoconf", 0)
            self.sysctl(f"net.ipv6.conf.{scope}.forwarding", int(forwarding))

    def add_rule(
        self, chain: str, *spec: str, table: str = "filter", first: bool = True
    ) -> Rule:
        """Adds an iptables rule (inserted first unless ``first=False``)."""
        self.iptables("-t", table, "-I" if first else "-A", chain, *spec)
        return Rule(self, table, chain, tuple(spec))

    def spawn(self, *argv: str, env: dict[str, str] | None = None) -> Proc:
        """Starts a program in this namespace; the lab stops it at close."""
        p = Proc(argv, self.ns, env)
        self.lab.procs.append(p)
        return p

    def python(self, code: str, *args: str, env: dict[str, str] | None = None) -> Proc:
        """Runs ``python -c code args...`` (this interpreter) unbuffered."""
        full = dict(os.environ if env is None else env)
        full["PYTHONUNBUFFERED"] = "1"
        return self.spawn(sys.executable, "-c", code, *args, env=full)

    def run_python(self, code: str, *args: str, timeout: float = 30.0) -> str:
        """Runs Python code to completion; returns stdout, raises on failure."""
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        r = subprocess.run(
            ["ip", "netns", "exec", self.ns, sys.executable, "-c", code, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
        )
        if r.returncode != 0:
            raise LabError(f"python in {self.ns} -> exit {r.returncode}: {r.stderr[-3000:]}")
        return r.stdout


@dataclasses.dataclass(frozen=True)
class ConntrackEntry:
    """One conntrack flow: the original direction and the reply direction.
    For a NATed flow the reply's (dst, dport) is the public mapping."""

    proto: str
    src: str
    sport: int
    dst: str
    dport: int
    reply_src: str
    reply_sport: int
    reply_dst: str
    reply_dport: int


class Site:
    """A NAT box (absent for ``public``) with one or two hosts behind it."""

    def __init__(self, lab: Lab, name: str, kind: str, index: int) -> None:
        self.lab = lab
        self.name = name
        self.kind = kind
        self.index = index
        self.nat: Node | None = None
        self.hosts: list[Node] = []
        #: The address the internet sees this site at (the NAT's WAN address
        #: or the public host's address).
        self.public_ip = f"11.0.{index}.2"
        self.router_ip = f"11.0.{index}.1"
        self.lan_prefix = f"10.{index}.0"
        self.miniupnpd: Proc | None = None

    def __repr__(self) -> str:
        return f"<Site {self.name} {self.kind} {self.public_ip} hosts={len(self.hosts)}>"

    @property
    def host(self) -> Node:
        return self.hosts[0]

    @property
    def edge(self) -> Node:
        """The node owning the site's WAN interface (NAT box or public host)."""
        return self.nat if self.nat is not None else self.hosts[0]

    def flush_conntrack(self) -> None:
        """Forgets every NAT mapping (needed after changing NAT rules)."""
        self.edge.sh("conntrack", "-F", check=False)

    def conntrack(self, proto: str = "udp") -> list[ConntrackEntry]:
        """The NAT box's current flows of ``proto``."""
        out = self.edge.sh("conntrack", "-L", "-p", proto, check=False)
        entries = []
        for line in out.splitlines():
            kv = re.findall(r"(src|dst|sport|dport)=(\S+)", line)
            if len(kv) < 8:
                continue
            o = dict(kv[:4])
            r = dict(kv[4:8])
            entries.append(
                ConntrackEntry(
                    proto, o["src"], int(o["sport"]), o["dst"], int(o["dport"]),
                    r["src"], int(r["sport"]), r["dst"], int(r["dport"]),
                )
            )
        return entries

    def public_mapping(self, host_ip: str, sport: int, proto: str = "udp") -> set[tuple[str, int]]:
        """The public (address, port) pairs the NAT gave ``host_ip:sport``."""
        return {
            (e.reply_dst, e.reply_dport)
            for e in self.conntrack(proto)
            if e.src == host_ip and e.sport == sport
        }

    def block_inbound(self, proto: str = "udp", from_ip: str | None = None) -> Rule:
        """Drops ``proto`` packets arriving from the internet (optionally
        only from ``from_ip``), even replies; ``.remove()`` lifts it."""
        spec = ["-i", "wan", "-p", proto]
        if from_ip:
            spec += ["-s", from_ip]
        chain = "FORWARD" if self.nat is not None else "INPUT"
        return self.edge.add_rule(chain, *spec, "-j", "DROP")


class NamespaceRun:
    """The namespaces and processes one lab run created, and their
    teardown: idempotent, safe after a partial build, run at interpreter
    exit too. Subclasses append to ``namespaces`` and ``procs``."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.namespaces: list[str] = []
        self.procs: list[Proc] = []
        self.tmp = Path(tempfile.mkdtemp(prefix=f"{prefix}-"))
        self._closed = False
        atexit.register(self.close)

    def close(self) -> None:
        """Stops every process and deletes every namespace."""
        if self._closed:
            return
        self._closed = True
        for p in reversed(self.procs):
            with contextlib.suppress(Exception):
                p.stop()
        for ns in reversed(self.namespaces):
            _kill_ns_pids(ns)
            _run(["ip", "netns", "del", ns], check=False)
        shutil.rmtree(self.tmp, ignore_errors=True)
        atexit.unregister(self.close)

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()


class Lab(NamespaceRun):
    """Builds and tears down one lab. Use as a context manager; ``close()``
    also runs at interpreter exit (atexit), and the namespaces of a run that
    was killed outright are swept by the next lab (``sweep_stale``)."""

    _counter = 0

    def __init__(self) -> None:
        sweep_stale()
        Lab._counter += 1
        super().__init__(f"cl{os.getpid()}x{Lab._counter}")
        self.sites: dict[str, Site] = {}
        self._next_index = 1
        self._ipv6 = False
        self._stun: Proc | None = None
        try:
            self.router = self._new_ns("inet", "router")
            self._routing_sysctls(self.router)
            # The server namespace is a public site of its own, so traffic to
            # the STUN server and bootstrap node is routed like any other.
            self.server_site = self._build_public("srv", 250)
            self.server = self.server_site.host
            for addr in (STUN_IP, STUN_ALT_IP, BOOTSTRAP_IP):
                self.server.ip_cmd("addr", "add", f"{addr}/32", "dev", "lo")
            self.router.ip_cmd("route", "add", "11.255.0.0/24", "via", "11.0.250.2")
        except BaseException:
            self.close()
            raise

    # -- building -------------------------------------------------------

    def _new_ns(self, suffix: str, role: str) -> Node:
        ns = f"{self.prefix}-{suffix}"
        _run(["ip", "netns", "add", ns])
        self.namespaces.append(ns)
        node = Node(self, ns, role)
        node.ip_cmd("link", "set", "lo", "up")
        # IPv6 is off in the lab: router solicitations and DAD would only
        # add noise to conntrack and packet counts.
        node.sysctl("net.ipv6.conf.all.disable_ipv6", 1)
        node.sysctl("net.ipv6.conf.default.disable_ipv6", 1)
        return node

    @staticmethod
    def _routing_sysctls(node: Node) -> None:
        node.sysctl("net.ipv4.ip_forward", 1)
        # Asymmetric paths (a host reaching its own NAT's public address,
        # hairpinning) must not be dropped by reverse-path filtering.
        node.sysctl("net.ipv4.conf.all.rp_filter", 0)
        node.sysctl("net.ipv4.conf.default.rp_filter", 0)

    def _link_to_router(self, node: Node, index: int, ifname: str) -> None:
        rif = f"s{index}"
        self.router.ip_cmd(
            "link", "add", rif, "type", "veth", "peer", "name", ifname, "netns", node.ns
        )
        self.router.ip_cmd("addr", "add", f"11.0.{index}.1/24", "dev", rif)
        self.router.ip_cmd("link", "set", rif, "up")
        node.ip_cmd("addr", "add", f"11.0.{index}.2/24", "dev", ifname)
        node.ip_cmd("link", "set", ifname, "up")
        node.ip_cmd("route", "add", "default", "via", f"11.0.{index}.1")

    def _build_public(self, name: str, index: int) -> Site:
        site = Site(self, name, "public", index)
        host = self._new_ns(f"{name}-h1", "host")
        host.ip = site.public_ip
        # A public host has no firewall: its own sockets decide what it hears.
        host.sysctl("net.ipv4.conf.all.rp_filter", 0)
        host.sysctl("net.ipv4.conf.default.rp_filter", 0)
        self._link_to_router(host, index, "wan")
        site.hosts.append(host)
        return site

    def enable_ipv6(self) -> None:
        """IPv6 on the router and the server (once): the server answers at
        ``2001:db8:0:250::2`` and ``BOOTSTRAP_IP6``."""
        if self._ipv6:
            return
        self._ipv6 = True
        self.router.enable_ipv6(forwarding=True)
        self.server.enable_ipv6()
        self._link6(self.server, 250, "wan")
        self.server.ip_cmd("-6", "addr", "add", f"{BOOTSTRAP_IP6}/128", "dev", "lo", "nodad")
        self.router.ip_cmd("-6", "route", "add", "2001:db8:ff::/64", "via", "2001:db8:0:250::2")

    def _link6(self, node: Node, index: int, ifname: str) -> None:
        """Global IPv6 on the router link of site ``index`` (IPv6 on already)."""
        net = f"2001:db8:0:{index}"
        self.router.ip_cmd("-6", "addr", "add", f"{net}::1/64", "dev", f"s{index}", "nodad")
        node.ip_cmd("-6", "addr", "add", f"2001:db8:0:{index}::2/64", "dev", ifname, "nodad")
        node.ip_cmd("-6", "route", "add", "default", "via", f"2001:db8:0:{index}::1")
        node.ip6 = f"2001:db8:0:{index}::2"

    def _site_ipv6(self, site: Site) -> None:
        """IPv6 for a site: a public host gets an address on its link (no
        firewall, as its IPv4); behind a NAT box, the LAN gets a routed /64
        and the box a stateful firewall (no NAT: IPv6 has none), dropping
        what nobody inside asked for, as home routers do."""
        self.enable_ipv6()
        if site.nat is None:
            site.host.enable_ipv6()
            self._link6(site.host, site.index, "wan")
            return
        nat = site.nat
        nat.enable_ipv6(forwarding=True)
        self._link6(nat, site.index, "wan")
        nat.ip_cmd("-6", "addr", "add", f"2001:db8:{site.index}::1/64", "dev", "lan", "nodad")
        lan, edge = f"2001:db8:{site.index}::/64", f"2001:db8:0:{site.index}::2"
        self.router.ip_cmd("-6", "route", "add", lan, "via", edge)
        for i, host in enumerate(site.hosts):
            host.enable_ipv6()
            host.ip6 = f"2001:db8:{site.index}::{i + 2}"
            host.ip_cmd("-6", "addr", "add", f"{host.ip6}/64", "dev", "eth0", "nodad")
            host.ip_cmd("-6", "route", "add", "default", "via", f"2001:db8:{site.index}::1")
        nat.ip6tables(
            "-A", "FORWARD", "-i", "wan", "-m", "conntrack",
            "--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT",
        )  # fmt: skip
        nat.ip6tables("-A", "FORWARD", "-i", "wan", "-p", "ipv6-icmp", "-j", "ACCEPT")
        nat.ip6tables("-A", "FORWARD", "-i", "wan", "-j", "DROP")

    def add_site(
        self,
        name: str,
        kind: str,
        *,
        hosts: int = 1,
        loss: float = 0.0,
        rate: str | None = None,
        delay_ms: float = 0.0,
        ipv6: bool = False,
    ) -> Site:
        """Adds a site. ``loss``: probability each packet crossing the
        site's internet link is dropped (either direction, ``-m statistic``
        in the router). ``rate``: a ``tc tbf`` rate such as ``"10mbit"``,
        applied to both directions of that link. ``delay_ms``: added to each
        direction of that link (an NFQUEUE program in the router: this
        kernel has no netem), so a round trip to the server gains twice it.
        ``ipv6``: the site gets global IPv6 too (see ``_site_ipv6``); its
        NAT applies to IPv4 only."""
        if kind not in KINDS:
            raise ValueError(f"site kind {kind!r} is not one of {KINDS}")
        if name in self.sites or name == "srv" or not re.fullmatch(r"[a-z][a-z0-9]{0,11}", name):
            raise ValueError(f"site name {name!r} is taken or not [a-z][a-z0-9]{{0,11}}")
        if not 1 <= hosts <= 2 or (kind == "public" and hosts != 1):
            raise ValueError(f"a {kind} site holds 1{'' if kind == 'public' else ' or 2'} hosts")
        if not 0.0 <= loss < 1.0:
            raise ValueError(f"loss must be in [0, 1), got {loss}")
        burst = str(_tbf_burst(rate)) if rate else ""
        if not 0.0 <= delay_ms <= 10_000:
            raise ValueError(f"delay_ms must be in 0..10000, got {delay_ms}")
        index = self._next_index
        self._next_index += 1
        if kind == "public":
            site = self._build_public(name, index)
        else:
            site = self._build_nat_site(name, kind, index, hosts)
        self.sites[name] = site
        if ipv6:
            self._site_ipv6(site)
        if loss:
            for direction in ("-i", "-o"):
                self.router.add_rule(
                    "FORWARD", direction, f"s{index}", "-m", "statistic",
                    "--mode", "random", "--probability", f"{loss:.6f}", "-j", "DROP",
                )
        if rate:
            for node, dev in ((self.router, f"s{index}"), (site.edge, "wan")):
                node.sh(
                    "tc", "qdisc", "add", "dev", dev, "root", "tbf",
                    "rate", rate, "burst", burst, "latency", "50ms",
                )
        if delay_ms:
            self._delay_link(index, delay_ms)
        log.info("lab %s: site %r", self.prefix, site)
        return site

    def _delay_link(self, index: int, delay_ms: float) -> None:
        # One queue per site link, numbered by the site index; bypass keeps
        # traffic flowing (undelayed) should the program die.
        proc = self.router.spawn(
            sys.executable, str(Path(__file__).with_name("nfq_delay.py")), str(index),
            str(delay_ms),
        )  # fmt: skip
        proc.expect("ready", 5.0)
        # Inbound at PREROUTING, outbound at POSTROUTING: NFQUEUE ends a
        # chain's traversal, so in one FORWARD chain a packet between two
        # delayed sites would be delayed once instead of twice.
        for chain, direction in (("PREROUTING", "-i"), ("POSTROUTING", "-o")):
            self.router.add_rule(
                chain, direction, f"s{index}",
                "-j", "NFQUEUE", "--queue-num", str(index), "--queue-bypass",
                table="mangle",
            )  # fmt: skip

    def _build_nat_site(self, name: str, kind: str, index: int, nhosts: int) -> Site:
        site = Site(self, name, kind, index)
        nat = self._new_ns(f"{name}-nat", "nat")
        nat.ip = site.public_ip
        nat.legacy_iptables = kind in MINIUPNPD_KINDS
        site.nat = nat
        self._routing_sysctls(nat)
        self._link_to_router(nat, index, "wan")
        lan_ip = f"{site.lan_prefix}.1"
        nat.ip_cmd("link", "add", "lan", "type", "bridge")
        nat.ip_cmd("addr", "add", f"{lan_ip}/24", "dev", "lan")
        nat.ip_cmd("link", "set", "lan", "up")
        # Bridged frames between two hosts of one site must not be seen by
        # the NAT's iptables (the bridge is the LAN switch, not the router).
        nat.sh("sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=0", check=False)
        for h in range(1, nhosts + 1):
            host = self._new_ns(f"{name}-h{h}", "host")
            host.ip = f"{site.lan_prefix}.{h + 1}"
            nat.ip_cmd(
                "link", "add", f"p{h}", "type", "veth", "peer", "name", "eth0", "netns", host.ns
            )
            nat.ip_cmd("link", "set", f"p{h}", "master", "lan", "up")
            host.ip_cmd("addr", "add", f"{host.ip}/24", "dev", "eth0")
            host.ip_cmd("link", "set", "eth0", "up")
            host.ip_cmd("route", "add", "default", "via", lan_ip)
            site.hosts.append(host)
        masq = ["-t", "nat", "-A", "POSTROUTING", "-o", "wan", "-j", "MASQUERADE"]
        if kind.startswith("symmetric"):
            masq.append("--random-fully")
        if kind in MINIUPNPD_KINDS:
            self._miniupnpd_chains(nat)
        nat.iptables(*masq)
        if kind.endswith("-fw") or kind in MINIUPNPD_KINDS:
            for chain in ("INPUT", "FORWARD"):
                nat.iptables(
                    "-A", chain, "-i", "wan", "-m", "conntrack",
                    "--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT",
                )
                nat.iptables("-A", chain, "-i", "wan", "-j", "DROP")
        if kind in MINIUPNPD_KINDS:
            site.miniupnpd = self._start_miniupnpd(site)
        return site

    @staticmethod
    def _miniupnpd_chains(nat: Node) -> None:
        # What Debian's iptables_init.sh sets up: miniupnpd adds its port
        # forwards to these chains and expects them to exist.
        nat.iptables("-t", "nat", "-N", "MINIUPNPD")
        nat.iptables("-t", "nat", "-A", "PREROUTING", "-i", "wan", "-j", "MINIUPNPD")
        nat.iptables("-t", "nat", "-N", "MINIUPNPD-POSTROUTING")
        nat.iptables("-t", "nat", "-A", "POSTROUTING", "-o", "wan", "-j", "MINIUPNPD-POSTROUTING")
        nat.iptables("-t", "mangle", "-N", "MINIUPNPD")
        nat.iptables("-t", "mangle", "-A", "PREROUTING", "-i", "wan", "-j", "MINIUPNPD")
        nat.iptables("-t", "filter", "-N", "MINIUPNPD")
        nat.iptables("-t", "filter", "-A", "FORWARD", "-i", "wan", "!", "-o", "wan",
                     "-j", "MINIUPNPD")

    def _start_miniupnpd(self, site: Site) -> Proc:
        assert site.nat is not None
        upnp = site.kind == "upnp"
        conf = self.tmp / f"miniupnpd-{site.name}.conf"
        conf.write_text(
            "\n".join(
                [
                    "ext_ifname=wan",
                    "listening_ip=lan",
                    "port=5000",
                    "enable_natpmp=yes",
                    f"enable_upnp={'yes' if upnp else 'no'}",
                    # PCP's lifetime floor (120 s by default) lowered so
                    # that renewals can be watched within a test.
                    "min_lifetime=2",
                    "secure_mode=yes",
                    "system_uptime=yes",
                    "notify_interval=60",
                    "clean_ruleset_interval=600",
                    f"lease_file={self.tmp / f'upnp-leases-{site.name}'}",
                    "uuid=3b4e9a3c-1111-4a3b-9c55-0123456789ab",
                    f"allow 1024-65535 {site.lan_prefix}.0/24 1024-65535",
                    "deny 0-65535 0.0.0.0/0 0-65535",
                    "",
                ]
            )
        )
        # Its own pid file: the default /var/run/miniupnpd.pid is shared by
        # every namespace, and a second lab's miniupnpd would refuse to run.
        pid = self.tmp / f"miniupnpd-{site.name}.pid"
        proc = site.nat.spawn("miniupnpd", "-d", "-f", str(conf), "-P", str(pid))
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline:
            if proc.popen.poll() is not None:
                raise LabError(f"miniupnpd exited {proc.popen.returncode}: {proc.stderr()}")
            # UPnP's HTTP port, or PCP/NAT-PMP's UDP port when UPnP is off.
            listening = site.nat.sh("ss", "-ltnH" if upnp else "-lunH", check=False)
            if (":5000" if upnp else ":5351") in listening:
                return proc
            time.sleep(0.05)
        raise LabError(f"miniupnpd did not listen within 5 s: {proc.stderr()}")

    def upnp_mappings(self, site: Site) -> list[tuple[str, int, str, int]]:
        """miniupnpd's port forwards as (proto, external port, internal
        address, internal port), read from its iptables-legacy chains: the
        SNAT rule names all four, and a DNAT rule must exist for the
        external port (iptables-legacy cannot print the DNAT target revision
        miniupnpd uses, so that rule is matched by port only)."""
        assert site.nat is not None
        dnat = {
            (m.group(1), int(m.group(2)))
            for m in re.finditer(
                r"-p (tcp|udp) .*--dport (\d+) .*-j DNAT", site.nat.iptables("-t", "nat", "-S")
            )
        }
        maps = []
        for m in re.finditer(
            r"-A MINIUPNPD-POSTROUTING -s ([\d.]+)/32 -p (tcp|udp) .*--sport (\d+) "
            r".*--to-ports (\d+)",
            site.nat.iptables("-t", "nat", "-S", "MINIUPNPD-POSTROUTING"),
        ):
            proto, ext = m.group(2), int(m.group(4))
            if (proto, ext) in dnat:
                maps.append((proto, ext, m.group(1), int(m.group(3))))
        return maps

    # -- STUN -------------------------------------------------------------

    def stun(self) -> tuple[tuple[str, int], tuple[str, int]]:
        """Starts coturn as a STUN server on the server namespace (once) with
        RFC 5780 support: primary ``STUN_IP:3478``, alternate
        ``STUN_ALT_IP:3479``. Returns both addresses."""
        if self._stun is None:
            work = self.tmp / "coturn"
            work.mkdir()
            self._stun = self.server.spawn(
                "turnserver", "-n", "--stun-only", "--no-cli", "--no-tls", "--no-dtls",
                f"--listening-ip={STUN_IP}", f"--listening-ip={STUN_ALT_IP}",
                f"--listening-port={STUN_PORT}", f"--alt-listening-port={STUN_PORT + 1}",
                "--no-stdout-log", f"--log-file={work / 'turn.log'}",
                f"--pidfile={work / 'turn.pid'}", f"--userdb={work / 'turndb'}",
                "--simple-log",
            )
            self._wait_udp(
                self.server, [f"{STUN_IP}:{STUN_PORT}", f"{STUN_ALT_IP}:{STUN_PORT + 1}"]
            )
        return (STUN_IP, STUN_PORT), (STUN_ALT_IP, STUN_PORT + 1)

    def _wait_udp(self, node: Node, needles: list[str], timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out = node.sh("ss", "-lunH", check=False)
            if all(n in out for n in needles):
                return
            time.sleep(0.05)
        raise LabError(f"nothing listening on {needles} in {node.ns} after {timeout} s")

    # -- teardown: NamespaceRun.close ---------------------------------------

    def __enter__(self) -> Lab:
        return self


@contextlib.contextmanager
def lab() -> Iterator[Lab]:
    """``with lab() as L: ...``: a lab closed however the block ends."""
    the_lab = Lab()
    try:
        yield the_lab
    finally:
        the_lab.close()

