"""IPv6 sites (issue 16, item 7): hosts behind a firewalled cone NAT for
IPv4 and a stateful IPv6 firewall (no NAT), and IPv6 on the public side
(``Lab.enable_ipv6``, ``add_site(..., ipv6=True)``)."""

from __future__ import annotations

import json

from lab import BOOTSTRAP_IP, BOOTSTRAP_IP6, Lab, Node, Proc

PORT = 7200

# argv: "serve" (the rendezvous, on both families) or "node IP4 IP6": a
# service on both families connected to the rendezvous; stdin "connect ID":
# connect by id, ping, answer {"path", "address", "rtt"}.
AGENT = r"""
import asyncio, json, sys, time
from crust import Identity, NewMessage, PeerId, Service, ServiceConfig

def out(**kw):
    print(json.dumps(kw), flush=True)

async def main():
    role, hosts = sys.argv[1], tuple(h for h in sys.argv[2:4] if h != "-")
    port = int(sys.argv[4])
    cfg = ServiceConfig(network="six", hosts=hosts, port=port if role == "serve" else 0,
                        backup_port=False, beacon=False, gossip=False,
                        identity=Identity.generate())
    async with Service(cfg) as svc:
        async def answer():
            async for ev in svc.events(messages=True):
                if isinstance(ev, NewMessage) and bytes(ev.data) == b"ping":
                    await ev.peer.send(b"pong")
        asyncio.create_task(answer())
        if role == "serve":
            out(ev="serving", endpoints=svc.endpoints)
            await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
            return
        boot = await svc.connect((sys.argv[5], port))
        svc.maintain(boot)
        out(ev="ready", id=str(svc.id), endpoints=svc.endpoints)
        loop = asyncio.get_running_loop()
        while True:
            line = (await loop.run_in_executor(None, sys.stdin.readline)).split()
            if not line:
                return
            t0 = time.monotonic()
            try:
                peer = await svc.connect(PeerId.parse(line[1]), timeout=15)
            except Exception as exc:
                out(ev="result", ok=False, error=str(exc))
                continue
            took = time.monotonic() - t0
            await peer.send(b"ping")
            out(ev="result", ok=True, path=str(peer.path), address=list(peer.address),
                connect_s=took, why=peer.why)

asyncio.run(main())
"""


def _node(node: Node, *, v4: bool = True) -> tuple[Proc, str]:
    """An agent on ``node``, dual-stack or (``v4=False``) IPv6 only."""
    boot = BOOTSTRAP_IP if v4 else BOOTSTRAP_IP6
    proc = node.python(AGENT, "node", node.ip if v4 else "-", node.ip6, str(PORT), boot)
    ready = json.loads(proc.expect(r"\{.*\"ready\".*\}", 30).group(0))
    return proc, ready["id"]


def test_dual_stack_hosts_connect(netlab: Lab) -> None:
    """Dual-stack hosts (IPv4 behind firewalled cone NATs, IPv6 behind
    stateful firewalls) connect by id. Which family wins is not chosen yet:
    the punch runs on the first listener with candidates of its family
    (IPv4 here); preferring IPv6 with IPv4 racing it (Happy Eyeballs) is
    still to do (issue 16, item 7)."""
    netlab.enable_ipv6()
    server = netlab.server.python(AGENT, "serve", BOOTSTRAP_IP, BOOTSTRAP_IP6, str(PORT))
    server.expect('"serving"', 30)
    sites = [netlab.add_site(f"d{i}", "cone-fw", ipv6=True) for i in range(2)]
    (a, _), (_b, idb) = (_node(s.host) for s in sites)
    r = a.ask(f"connect {idb}")
    print("\n" + json.dumps(r))
    assert r["ok"] and r["path"] == "punched-udp", r
    assert r["address"][0] in (sites[1].public_ip, sites[1].host.ip6), r


def test_ipv6_only_punches_through_stateful_firewalls(netlab: Lab) -> None:
    """Two hosts that speak only IPv6, each behind a stateful firewall that
    drops what nobody inside asked for: connect by id punches through both
    (there is no NAT, so the candidates are the hosts' own addresses)."""
    netlab.enable_ipv6()
    server = netlab.server.python(AGENT, "serve", BOOTSTRAP_IP, BOOTSTRAP_IP6, str(PORT))
    server.expect('"serving"', 30)
    sites = [netlab.add_site(f"v{i}", "cone-fw", ipv6=True) for i in range(2)]
    (a, _), (_b, idb) = (_node(s.host, v4=False) for s in sites)
    r = a.ask(f"connect {idb}")
    print("\n" + json.dumps(r))
    assert r["ok"], r
    # Labelled direct: the address is the host's own (no NAT), though the
    # firewalls let the packets through only because both sides punched.
    assert r["path"] in ("direct-udp", "punched-udp") and r["address"][0] == sites[1].host.ip6, r
