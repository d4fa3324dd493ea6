"""UPnP against miniupnpd in the lab: a service behind the UPnP NAT maps
its live UDP and TCP ports (visible in miniupnpd's iptables-legacy rules),
a peer on the internet connects inbound through the mapping, and the
mappings are gone after shutdown. Without a gateway, start-up is not held
up and the service still works."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from lab import Lab, Proc, Site

# Namespaces share the host's filesystem: each node gets its own identity
# and bootstrap cache, or they would all be one peer with a shared memory.
#
# Behind the NAT: port mapping by the options in argv[2] ("upnp",
# "upnp,natpmp", "natpmp" or "" for none); prints one JSON line once it
# settled (with the PortMapped events seen), answers each message with
# "echo:" + message, exits when stdin gives a line. Also used by
# test_netlab_natpmp.py.
NODE = r"""
import asyncio, json, sys, tempfile, time
from pathlib import Path
from crust import Identity, NewMessage, PortMapped, Service, ServiceConfig

async def main():
    opts = sys.argv[2].split(",")
    cfg = ServiceConfig(hosts=(sys.argv[1],), upnp="upnp" in opts, natpmp="natpmp" in opts,
                        beacon=False, identity=Identity.generate(),
                        cache_path=Path(tempfile.mkdtemp()) / "cache",
                        gossip=False, backup_port=False)
    t0 = time.monotonic()
    svc = Service(cfg)
    events = svc.events(messages=False)
    async with svc:
        started = time.monotonic() - t0
        st = await svc.upnp.wait_ready(30) if svc.upnp else None
        seen = []
        while st is not None and len(seen) < len(st.mappings):
            ev = await asyncio.wait_for(events.__anext__(), 5)
            if isinstance(ev, PortMapped):
                seen.append([ev.protocol, ev.external, ev.method])
        print(json.dumps({
            "id": str(svc.id), "endpoints": svc.endpoints, "start_seconds": started,
            "state": st and st.state, "external_ip": st and st.external_ip,
            "method": st and st.method, "events": seen,
            "error": st and st.error, "discovery_seconds": st and st.discovery_seconds,
            "ready_seconds": time.monotonic() - t0,
            "mapped_addresses": svc.mapped_addresses,
            "mappings": [[m.protocol, m.internal, m.external, m.lease, m.method]
                         for m in (st.mappings if st else ())],
        }), flush=True)

        async def echo():
            async for ev in svc.events():
                if isinstance(ev, NewMessage):
                    await ev.peer.send(b"echo:" + ev.data)

        task = asyncio.create_task(echo())
        await asyncio.to_thread(sys.stdin.readline)
        task.cancel()
        t1 = time.monotonic()
    print(json.dumps({"closed_seconds": time.monotonic() - t1}), flush=True)

asyncio.run(main())
"""

# On the internet: connects to argv[2]:argv[3] (pinned to id argv[4]) over
# argv[5] ("udp" or "tcp"), sends a message, prints path and the answer.
DIAL = r"""
import asyncio, json, sys, tempfile
from pathlib import Path
from crust import Identity, NewMessage, PeerId, Service, ServiceConfig

async def main():
    only = {"tcp": False} if sys.argv[5] == "udp" else {"udp": False}
    cfg = ServiceConfig(hosts=(sys.argv[1],), beacon=False, gossip=False, backup_port=False,
                        identity=Identity.generate(),
                        cache_path=Path(tempfile.mkdtemp()) / "cache",
                        connect_timeout=float(sys.argv[6]), **only)
    async with Service(cfg) as svc:
        try:
            peer = await svc.connect((sys.argv[2], int(sys.argv[3])),
                                     peer_id=PeerId.parse(sys.argv[4]))
        except Exception as e:
            print(json.dumps({"error": f"{type(e).__name__}: {e}"}))
            return
        await peer.send(b"hello")
        async for ev in svc.events():
            if isinstance(ev, NewMessage):
                print(json.dumps({"path": peer.path, "data": ev.data.decode(),
                                  "address": peer.address}))
                return

asyncio.run(main())
"""


def start_mapped_node(netlab: Lab, site: Site, opts: str, method: str) -> tuple[Proc, Any, int]:
    """Starts NODE behind ``site`` with port-mapping options ``opts`` and
    checks that ``method`` mapped its live UDP and TCP ports, as its status,
    its PortMapped events and miniupnpd's iptables-legacy chains say.
    Returns the node, what it printed and its port."""
    node = site.host.python(NODE, site.host.ip, opts)
    info = json.loads(node.readline(40))
    assert info["state"] == "mapped" and info["method"] == method, info
    assert info["external_ip"] == site.public_ip
    (_, port), = {tuple(e) for e in info["endpoints"]}
    got = {(m[0], tuple(m[1]), tuple(m[2]), m[3], m[4]) for m in info["mappings"]}
    assert got == {
        ("udp", (site.host.ip, port), (site.public_ip, port), 3600, method),
        ("tcp", (site.host.ip, port), (site.public_ip, port), 3600, method),
    }
    assert sorted(info["events"]) == [
        ["tcp", [site.public_ip, port], method], ["udp", [site.public_ip, port], method],
    ]  # fmt: skip
    assert [tuple(a) for a in info["mapped_addresses"]] == [(site.public_ip, port)]
    assert set(netlab.upnp_mappings(site)) == {
        ("udp", port, site.host.ip, port),
        ("tcp", port, site.host.ip, port),
    }
    return node, info, port


def dial_inbound_then_close(
    netlab: Lab, site: Site, pub: Site, node: Proc, info: Any, port: int
) -> None:
    """A peer on the internet connects to the mapped port over UDP and TCP
    and gets its echo; after the node closes, the forwards are gone."""
    for transport in ("udp", "tcp"):
        out = pub.host.run_python(
            DIAL, pub.host.ip, site.public_ip, str(port), info["id"], transport, "5"
        )
        r = json.loads(out)
        assert r.get("data") == "echo:hello", r
        assert r["path"] == f"direct-{transport}"
        assert tuple(r["address"]) == (site.public_ip, port)
    node.write("quit\n")
    closed = json.loads(node.readline(15))
    assert node.wait(10) == 0
    assert closed["closed_seconds"] < 5
    assert netlab.upnp_mappings(site) == []


def test_upnp_maps_connects_inbound_and_unmaps(netlab: Lab) -> None:
    site = netlab.add_site("u", "upnp")
    pub = netlab.add_site("p", "public")
    node, info, port = start_mapped_node(netlab, site, "upnp", "upnp")
    # miniupnpd as a UPnP client on the LAN lists them too.
    listing = site.host.sh("upnpc", "-l", timeout=20)
    for proto in ("UDP", "TCP"):
        assert f"{proto} {port}->{site.host.ip}:{port} 'crust'" in listing, listing
    dial_inbound_then_close(netlab, site, pub, node, info, port)
    print(f"UPnP: start {info['start_seconds']:.3f} s, discovery+external ip "
          f"{info['discovery_seconds']:.2f} s, mapped after {info['ready_seconds']:.2f} s")


def test_no_inbound_through_the_upnp_nat_without_a_mapping(netlab: Lab) -> None:
    site = netlab.add_site("u", "upnp")
    pub = netlab.add_site("p", "public")
    node = site.host.python(NODE, site.host.ip, "")
    info = json.loads(node.readline(20))
    (_, port), = {tuple(e) for e in info["endpoints"]}
    assert netlab.upnp_mappings(site) == []
    r = json.loads(
        pub.host.run_python(DIAL, pub.host.ip, site.public_ip, str(port), info["id"], "udp", "1.5")
    )
    assert "error" in r, r
    node.write("quit\n")
    node.wait(10)


@pytest.mark.parametrize("kind", ["cone", "public"])
def test_absent_gateway_does_not_hold_up_start(netlab: Lab, kind: str) -> None:
    site = netlab.add_site("a", kind)
    t0 = time.monotonic()
    node = site.host.python(NODE, site.host.ip, "upnp")
    info = json.loads(node.readline(20))
    assert info["state"] == "unavailable" and info["mappings"] == [], info
    assert info["mapped_addresses"] == []
    assert "no UPnP device" in info["error"] or "no answer" in info["error"]
    # Start-up returned before discovery; discovery gave up within seconds.
    assert info["start_seconds"] < 1.0
    assert info["ready_seconds"] < 6.0
    node.write("quit\n")
    assert node.wait(10) == 0
    assert time.monotonic() - t0 < 15


RENEW = r"""
import asyncio, json, sys, time
import miniupnpc
from crust.asyncio.upnp import PortMapper

async def main():
    m = PortMapper([("udp", (sys.argv[1], 41000))], lease=4)
    m.start()
    st = await m.wait_ready(10)
    u = miniupnpc.UPnP(); u.discoverdelay = 200; u.discover(); u.selectigd()
    left = []
    for _ in range(6):
        await asyncio.sleep(1.0)
        entry = await asyncio.to_thread(u.getspecificportmapping, 41000, "UDP")
        left.append(entry[-1] if entry else None)
    await m.close()
    gone = await asyncio.to_thread(u.getspecificportmapping, 41000, "UDP")
    print(json.dumps({"state": st.state, "left": left, "after_close": gone}))

asyncio.run(main())
"""


def test_upnp_lease_is_renewed_before_it_runs_out(netlab: Lab) -> None:
    """A 4 s lease, renewed every 2 s: over 6 s the gateway's remaining
    lease never runs out (without renewal it would be gone after 4 s)."""
    site = netlab.add_site("u", "upnp")
    r = json.loads(site.host.run_python(RENEW, site.host.ip, timeout=30))
    assert r["state"] == "mapped"
    assert all(left is not None and 0 < left <= 4 for left in r["left"]), r
    assert max(r["left"][3:]) > 1, r  # refreshed, not counting down from the first add
    assert r["after_close"] is None
    assert netlab.upnp_mappings(site) == []
