"""The NAT lab itself behaves like the NATs it claims to model: addresses
seen from the internet, port preservation, filtering, TTL, loss, rate,
rules added and removed mid-test, cleanup."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from lab import BOOTSTRAP_IP, Lab, sweep_stale

# Echo server: prints "ready", then answers each datagram with the address
# it came from ("ip port"), for `count` datagrams or until idle for 5 s.
ECHO = r"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], int(sys.argv[2])))
s.settimeout(5)
print("ready", flush=True)
for _ in range(int(sys.argv[3])):
    try:
        data, addr = s.recvfrom(2048)
    except TimeoutError:
        break
    print(addr[0], addr[1], flush=True)
    s.sendto(f"{addr[0]} {addr[1]}".encode(), addr)
"""

# Client: from local port argv[3], sends argv[4] datagrams to argv[1]:argv[2]
# with IP TTL argv[5]; prints each reply; exits after 1 s without replies.
SEND = r"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", int(sys.argv[3])))
s.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, int(sys.argv[5]))
s.settimeout(1.0)
n = int(sys.argv[4])
for i in range(n):
    s.sendto(b"x", (sys.argv[1], int(sys.argv[2])))
got = 0
try:
    while got < n:
        data, _ = s.recvfrom(100)
        got += 1
        print(data.decode(), flush=True)
except (TimeoutError, ConnectionRefusedError) as e:
    print("stop", type(e).__name__, flush=True)
"""


def echo_server(lab: Lab, port: int = 40000, count: int = 1):
    proc = lab.server.python(ECHO, BOOTSTRAP_IP, str(port), str(count))
    proc.expect("ready")
    return proc


def send(host, ip: str, port: int, sport: int = 40001, n: int = 1, ttl: int = 64) -> list[str]:
    out = host.run_python(SEND, ip, str(port), str(sport), str(n), str(ttl))
    return [line for line in out.splitlines() if not line.startswith("stop")]


@pytest.mark.parametrize(
    ("kind", "preserves_port"),
    [
        ("public", True),
        ("cone", True),
        ("cone-fw", True),
        ("upnp", True),
        ("symmetric", False),
        ("symmetric-fw", False),
    ],
)
def test_site_seen_at_its_public_address(netlab: Lab, kind: str, preserves_port: bool) -> None:
    site = netlab.add_site("a", kind)
    srv = echo_server(netlab)
    replies = send(site.host, BOOTSTRAP_IP, 40000, sport=40001)
    srv.wait()
    assert len(replies) == 1
    ip, port = replies[0].split()
    assert ip == site.public_ip
    if kind == "public":
        assert int(port) == 40001
        return
    # The lab's record of the mapping is the NAT's own conntrack entry.
    assert site.public_mapping(site.host.ip, 40001) == {(ip, int(port))}
    assert (int(port) == 40001) == preserves_port


def test_symmetric_maps_per_destination_and_cone_does_not(netlab: Lab) -> None:
    cone = netlab.add_site("c", "cone")
    sym = netlab.add_site("s", "symmetric")
    for site, distinct in ((cone, 1), (sym, 2)):
        srv_a = echo_server(netlab, 40000)
        srv_b = echo_server(netlab, 40002)
        ports = {
            send(site.host, BOOTSTRAP_IP, port, sport=40001)[0].split()[1]
            for port in (40000, 40002)
        }
        srv_a.wait()
        srv_b.wait()
        assert len(ports) == distinct, (site.kind, ports)


def test_unsolicited_inbound_filtering(netlab: Lab) -> None:
    """cone: an unsolicited datagram is delivered to the NAT box itself and
    leaves a conntrack entry there (the lab notes' simultaneous-start trap);
    cone-fw drops it before conntrack confirms anything."""
    cone = netlab.add_site("c", "cone")
    fw = netlab.add_site("f", "cone-fw")
    pub = netlab.add_site("p", "public")
    for site, trapped in ((cone, True), (fw, False)):
        assert send(pub.host, site.public_ip, 40001, sport=40009) == []
        entries = [e for e in site.conntrack() if e.src == pub.public_ip and e.sport == 40009]
        assert bool(entries) == trapped, (site.kind, entries)


def test_low_ttl_opens_own_nat_but_dies_in_router(netlab: Lab) -> None:
    site = netlab.add_site("a", "cone-fw")
    srv = netlab.server.python(ECHO, BOOTSTRAP_IP, "40000", "1")
    srv.expect("ready")
    assert send(site.host, BOOTSTRAP_IP, 40000, sport=40005, ttl=2) == []
    # The NAT forwarded it (so it holds the mapping) but the router dropped it.
    assert site.public_mapping(site.host.ip, 40005) == {(site.public_ip, 40005)}
    srv.stop()
    assert srv.stdout_lines == ["ready"]


def test_rule_added_and_removed_mid_test(netlab: Lab) -> None:
    site = netlab.add_site("a", "cone")
    rule = site.block_inbound("udp", from_ip=BOOTSTRAP_IP)
    srv = echo_server(netlab, count=2)
    assert send(site.host, BOOTSTRAP_IP, 40000) == []
    rule.remove()
    assert len(send(site.host, BOOTSTRAP_IP, 40000)) == 1
    srv.wait()
    site.flush_conntrack()
    assert site.conntrack() == []


def test_two_hosts_share_a_nat_and_reach_each_other_on_the_lan(netlab: Lab) -> None:
    site = netlab.add_site("a", "cone", hosts=2)
    h1, h2 = site.hosts
    srv = h2.python(ECHO, h2.ip, "40000", "1")
    srv.expect("ready")
    (reply,) = send(h1, h2.ip, 40000)
    srv.wait()
    assert reply.split()[0] == h1.ip  # no NAT between them
    assert site.conntrack() == []


def test_loss_drops_about_the_configured_share(netlab: Lab) -> None:
    site = netlab.add_site("a", "public", loss=0.5)
    srv = echo_server(netlab, count=400)
    replies = send(site.host, BOOTSTRAP_IP, 40000, n=400)
    srv.stop()
    # Each round trip crosses the lossy link twice: 25% expected; the
    # binomial's 5-sigma band for n=400 is about +-11%.
    assert 0.12 * 400 < len(replies) < 0.40 * 400, len(replies)


SINK = r"""
import socket, time
ls = socket.create_server(("11.255.0.10", 40000))
print("ready", flush=True)
c, _ = ls.accept()
n = 0
t0 = time.monotonic()
while (b := c.recv(65536)):
    n += len(b)
print(n, time.monotonic() - t0, flush=True)
c.close(); ls.close()
"""

SOURCE = r"""
import socket, sys
c = socket.create_connection(("11.255.0.10", 40000))
c.sendall(b"x" * int(sys.argv[1]))
c.close()
"""


@pytest.mark.parametrize(
    ("rate", "size", "lo", "hi"),
    # 1 MB at 4 Mbit/s is 2 s, 5 MB at 100 Mbit/s is 0.4 s, as the receiver
    # times it; unshaped, either takes milliseconds.
    [("4mbit", 1_000_000, 1.6, 4.0), ("100mbit", 5_000_000, 0.3, 1.0)],
)
def test_rate_limit_bounds_throughput(
    netlab: Lab, rate: str, size: int, lo: float, hi: float
) -> None:
    site = netlab.add_site("a", "cone", rate=rate)
    sink = netlab.server.python(SINK)
    sink.expect("ready")
    site.host.run_python(SOURCE, str(size))
    n, seconds = sink.readline(30).split()
    assert int(n) == size
    assert lo < float(seconds) < hi, seconds


def test_bad_rate_is_refused_before_building(netlab: Lab) -> None:
    with pytest.raises(ValueError, match="is not like"):
        netlab.add_site("a", "cone", rate="fast")
    assert netlab.sites == {}


def test_close_removes_namespaces_and_processes() -> None:
    from conftest import require_netlab

    require_netlab()
    lab = Lab()
    lab.add_site("a", "upnp", hosts=2)
    lab.stun()
    names = list(lab.namespaces)
    procs = [p.popen for p in lab.procs]
    lab.close()
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert not any(n in listed for n in names)
    assert all(p.poll() is not None for p in procs)


def test_sweep_removes_namespaces_of_dead_runs() -> None:
    from conftest import require_netlab

    require_netlab()
    dead = subprocess.Popen(["true"])
    dead.wait()
    name = f"cl{dead.pid}x1-inet"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        assert name in sweep_stale()
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)
    assert os.path.exists(f"/run/netns/{name}") is False


def test_interrupted_run_cleans_up() -> None:
    """Ctrl-C in the middle of a test run still removes every namespace and
    stops the lab's processes (here: coturn and miniupnpd)."""
    from conftest import require_netlab

    require_netlab()
    here = Path(__file__).parent
    script = f"""
import sys, time
sys.path.insert(0, {str(here)!r})
from lab import lab
with lab() as L:
    L.add_site("a", "upnp")
    L.stun()
    print(L.prefix, *(p.pid for p in L.procs), flush=True)
    time.sleep(60)
"""
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    prefix, *pids = child.stdout.readline().split()
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert f"{prefix}-inet" in listed
    child.send_signal(signal.SIGINT)
    child.wait(20)
    child.stdout.close()
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert prefix not in listed
    for pid in pids:
        assert not _running(int(pid)), pid


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_two_labs_with_upnp_coexist(netlab: Lab) -> None:
    """Parallel test runs each get their own miniupnpd and coturn (pid
    files, leases and databases are per lab, not the system defaults)."""
    netlab.add_site("u", "upnp")
    netlab.stun()
    with Lab() as other:
        site = other.add_site("u", "upnp")
        other.stun()
        assert site.miniupnpd is not None and site.miniupnpd.popen.poll() is None
        assert other.prefix != netlab.prefix


RTT = r"""
import socket, statistics, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(2)
rtts = []
for _ in range(int(sys.argv[2])):
    t = time.monotonic()
    s.sendto(b"x", (sys.argv[1], 40000))
    s.recvfrom(100)
    rtts.append(time.monotonic() - t)
print(min(rtts), statistics.median(rtts))
"""


def test_delay_adds_to_each_direction(netlab: Lab) -> None:
    """25 ms each way on one site's link: its round trip to the server is
    ~50 ms; another site's, through the same router, stays sub-millisecond;
    and two delayed sites see each other at ~100 ms."""
    slow = netlab.add_site("s", "cone", delay_ms=25)
    fast = netlab.add_site("f", "cone")
    srv = echo_server(netlab, count=20)
    lo, med = map(float, slow.host.run_python(RTT, BOOTSTRAP_IP, "10").split())
    assert 0.050 <= lo and med < 0.065, (lo, med)
    lo, med = map(float, fast.host.run_python(RTT, BOOTSTRAP_IP, "10").split())
    assert med < 0.010, med
    srv.wait()
    other = netlab.add_site("o", "public", delay_ms=25)
    peer = other.host.python(ECHO, other.host.ip, "40000", "5")
    peer.expect("ready")
    lo, med = map(float, slow.host.run_python(RTT, other.host.ip, "5").split())
    assert 0.100 <= lo and med < 0.120, (lo, med)
    peer.wait()


def test_bad_delay_is_refused(netlab: Lab) -> None:
    with pytest.raises(ValueError, match="delay_ms"):
        netlab.add_site("a", "cone", delay_ms=-1)
