"""PCP and NAT-PMP against miniupnpd in the lab (site kind ``natpmp``:
miniupnpd with ``enable_natpmp=yes`` and UPnP off). A service asking for
UPnP and PCP/NAT-PMP gets its ports mapped by PCP after UPnP finds
nothing; the forwards show in miniupnpd's iptables-legacy rules, a peer on
the internet connects inbound through them, and they are gone after
shutdown. NAT-PMP alone maps and unmaps the same way; short leases are
renewed before they end; ``crust nat`` names the protocol."""

from __future__ import annotations

import json
import os
import sys

from lab import Lab
from test_netlab_upnp import dial_inbound_then_close, start_mapped_node

CRUST = os.path.join(os.path.dirname(sys.executable), "crust")

def test_pcp_maps_after_upnp_connects_inbound_and_unmaps(netlab: Lab) -> None:
    site = netlab.add_site("n", "natpmp")
    pub = netlab.add_site("p", "public")
    node, info, port = start_mapped_node(netlab, site, "upnp,natpmp", "pcp")
    dial_inbound_then_close(netlab, site, pub, node, info, port)
    print(f"PCP after UPnP: mapped after {info['ready_seconds']:.2f} s")


# Maps one UDP port by the methods in argv[2] with lease argv[3], holds it
# argv[4] seconds (printing the forwards miniupnpd holds is the test's
# job: it reads them while we wait on stdin), then closes.
MAPPER = r"""
import asyncio, json, socket, sys, time
from crust.asyncio.natpmp import GatewayMapper

async def main():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", 0))
    port = s.getsockname()[1]
    m = GatewayMapper([("udp", ("0.0.0.0", port))], lease=int(sys.argv[2]),
                      methods=tuple(sys.argv[1].split(",")))
    t0 = time.monotonic()
    m.start()
    st = await m.wait_ready(20)
    print(json.dumps({"port": port, "state": st.state, "method": st.method,
                      "error": st.error, "seconds": time.monotonic() - t0,
                      "mappings": [[x.external, x.lease] for x in st.mappings]}), flush=True)
    await asyncio.sleep(float(sys.argv[3]))
    print(json.dumps({"state": m.status.state, "renewals": m.renewals}), flush=True)
    await asyncio.to_thread(sys.stdin.readline)
    await m.close()
    print(json.dumps({"unconfirmed": m.unconfirmed_deletions}), flush=True)

asyncio.run(main())
"""


def test_natpmp_alone_maps_and_unmaps(netlab: Lab) -> None:
    site = netlab.add_site("n", "natpmp")
    proc = site.host.python(MAPPER, "natpmp", "3600", "0")
    first = json.loads(proc.readline(20))
    assert first["state"] == "mapped" and first["method"] == "natpmp", first
    port = first["port"]
    assert first["mappings"] == [[[site.public_ip, port], 3600]]
    json.loads(proc.readline(5))
    assert netlab.upnp_mappings(site) == [("udp", port, site.host.ip, port)]
    proc.write("quit\n")
    assert json.loads(proc.readline(10)) == {"unconfirmed": 0}
    assert proc.wait(10) == 0
    assert netlab.upnp_mappings(site) == []


def test_pcp_lease_is_renewed_before_it_ends(netlab: Lab) -> None:
    """A 4 s lease renewed every 2 s: after 7 s (past the lease) the
    mapping still stands, renewed by the gateway's answers."""
    site = netlab.add_site("n", "natpmp")
    proc = site.host.python(MAPPER, "pcp", "4", "7")
    first = json.loads(proc.readline(20))
    assert first["method"] == "pcp" and first["mappings"][0][1] == 4, first
    later = json.loads(proc.readline(15))
    assert later["state"] == "mapped" and later["renewals"] >= 3, later
    assert netlab.upnp_mappings(site) == [("udp", first["port"], site.host.ip, first["port"])]
    proc.write("quit\n")
    assert json.loads(proc.readline(10)) == {"unconfirmed": 0}
    assert netlab.upnp_mappings(site) == []


def test_no_gateway_protocol_is_known_in_one_round_trip(netlab: Lab) -> None:
    """Behind a NAT without miniupnpd, the gateway's port 5351 answers ICMP
    port unreachable: the mapper gives up at once."""
    site = netlab.add_site("c", "cone")
    proc = site.host.python(MAPPER, "pcp,natpmp", "3600", "0")
    r = json.loads(proc.readline(20))
    assert r["state"] == "unavailable" and "port unreachable" in r["error"], r
    assert r["seconds"] < 1.0
    proc.write("quit\n")
    proc.wait(10)


def test_crust_nat_says_pcp_mapped(netlab: Lab) -> None:
    site = netlab.add_site("n", "natpmp")
    r = json.loads(site.host.sh(CRUST, "nat", "--no-upnp", "--json", timeout=30))
    assert r["port_mapping"] == "pcp", r
    n = r["natpmp"]
    assert n["gateway"] == [f"{site.lan_prefix}.1", 5351]
    assert n["external_ip"] == site.public_ip and n["trial_mapping"]["removed"]
    assert "PCP works" in r["verdict"]
    assert netlab.upnp_mappings(site) == []
    text = site.host.sh(CRUST, "nat", "--no-upnp", timeout=30)
    assert f"PCP: gateway {site.lan_prefix}.1:5351" in text
    assert "port mapping: by PCP" in text
