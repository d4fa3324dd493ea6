"""NAT bindings kept (issue 16, item 3): both peers behind firewalled cone
NATs whose UDP bindings time out after 15 s (many home and carrier NATs
use 30 s or less). Connected by id (punched), maintained, then left idle
for 120 s: the first message each way must arrive at once (< 100 ms)
with nothing retransmitted, which holds only if the path's NAT bindings
never lapsed while it was quiet.

Against 95eb54c (one keepalive per 20 s on every connection) a binding
was gone for ~5 s of every 20.
"""

from __future__ import annotations

import json
import os
import time

from lab import BOOTSTRAP_IP, Lab, Node, Proc

PORT = 7100
NAT_TIMEOUT = 15
IDLE = float(os.environ.get("CRUST_NETLAB_IDLE", "120"))

# argv: "serve IP" (the rendezvous) or "node IP": a service connected to the
# rendezvous; stdin commands: "connect ID" (by id; maintained), "wait ID"
# (until that peer is connected; maintained), "ping ID N" (send "ping N",
# time the "pong N"). Answers one JSON line each.
AGENT = r"""
import asyncio, json, sys, time
from crust import Identity, NewMessage, PeerId, Service, ServiceConfig

def out(**kw):
    print(json.dumps(kw), flush=True)

async def main():
    role, ip = sys.argv[1], sys.argv[2]
    port = int(sys.argv[3])
    cfg = ServiceConfig(network="natto", hosts=(ip,), port=port if role == "serve" else 0,
                        backup_port=False, tcp=False, beacon=False, gossip=False,
                        identity=Identity.generate())
    async with Service(cfg) as svc:
        pongs = {}
        async def answer():
            async for ev in svc.events(messages=True):
                if isinstance(ev, NewMessage):
                    text = bytes(ev.data).decode()
                    if text.startswith("ping"):
                        await ev.peer.send(b"pong" + text[4:].encode())
                    elif text.startswith("pong"):
                        pongs[text[5:]].set_result(time.monotonic())
        task = asyncio.create_task(answer())
        if role == "serve":
            out(ev="serving")
            await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
            return
        boot = await svc.connect(("%s" % sys.argv[4], port))
        svc.maintain(boot)
        out(ev="ready", id=str(svc.id))
        loop = asyncio.get_running_loop()
        while True:
            line = (await loop.run_in_executor(None, sys.stdin.readline)).split()
            if not line:
                return
            cmd, pid = line[0], PeerId.parse(line[1])
            if cmd == "connect":
                peer = await svc.connect(pid, timeout=15)
                svc.maintain(peer)
                out(ev="connected", path=str(peer.path))
            elif cmd == "wait":
                while not any(p.id == pid for p in svc.peers):
                    await asyncio.sleep(0.05)
                svc.maintain(next(p for p in svc.peers if p.id == pid))
                out(ev="connected")
            elif cmd == "ping":
                peer = next(p for p in svc.peers if p.id == pid)
                before = peer._link.conn.stats()
                fut = pongs[line[2]] = loop.create_future()
                t0 = time.monotonic()
                await peer.send(("ping " + line[2]).encode())
                t1 = await asyncio.wait_for(fut, 10)
                after = peer._link.conn.stats()
                out(ev="pong", rtt=t1 - t0, path=str(peer.path),
                    **{k: after[k] - before[k] for k in
                       ("pto_count", "lost_packets", "retransmitted_bytes")},
                    keepalive_s=getattr(peer._link.conn, "keepalive_us", 0) / 1e6)

asyncio.run(main())
"""


def _spawn(node: Node, *args: str) -> Proc:
    return node.python(AGENT, *args)


def test_bindings_kept_through_15_s_nat_timeouts(netlab: Lab) -> None:
    server = _spawn(netlab.server, "serve", BOOTSTRAP_IP, str(PORT))
    server.expect('"serving"', 30)
    sites = [netlab.add_site(f"t{i}", "cone-fw") for i in range(2)]
    for site in sites:
        for key in ("nf_conntrack_udp_timeout", "nf_conntrack_udp_timeout_stream"):
            site.nat.sysctl(f"net.netfilter.{key}", NAT_TIMEOUT)  # type: ignore[union-attr]
    a, b = (_spawn(s.host, "node", s.host.ip, str(PORT), BOOTSTRAP_IP) for s in sites)
    ida = json.loads(a.expect(r"\{.*\"ready\".*\}", 30).group(0))["id"]
    idb = json.loads(b.expect(r"\{.*\"ready\".*\}", 30).group(0))["id"]
    got = a.ask(f"connect {idb}")
    assert got["path"].startswith("punched"), got
    b.ask(f"wait {ida}")
    warm = a.ask(f"ping {idb} 0")
    time.sleep(IDLE)
    for name, proc in (("a", a), ("b", b)):
        # A dead agent's last words, rather than a broken pipe.
        assert proc.popen.poll() is None, (name, proc.stderr_lines[-30:])
    ab = a.ask(f"ping {idb} 1")
    ba = b.ask(f"ping {ida} 2")
    print("\n" + json.dumps({"warm": warm, "a_to_b": ab, "b_to_a": ba}))
    for r in (ab, ba):
        assert r["rtt"] < 0.1, r
        assert r["pto_count"] == r["lost_packets"] == r["retransmitted_bytes"] == 0, r
