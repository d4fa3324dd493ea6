"""STUN against coturn in the lab: reflexive addresses equal the NAT's real
mapping (read from its conntrack table), and each NAT kind is classified
as what it is."""

from __future__ import annotations

import json

import pytest
from lab import Lab

PROBE = r"""
import asyncio, json, sys
from crust.asyncio.stun import probe_nat
b = asyncio.run(probe_nat([(sys.argv[1], int(sys.argv[2]))]))
print(json.dumps({
    "local": b.local, "mapped": b.mapped, "behind_nat": b.behind_nat, "kind": b.kind,
    "mapping": b.mapping.value, "filtering": b.filtering.value,
    "port_preserving": b.port_preserving,
    "probes": [[p.test, p.server, p.mapped, p.rtt] for p in b.probes],
}))
"""

EIM = "endpoint-independent"
APD = "address-and-port-dependent"
# kind -> (behind NAT, mapping, filtering, port preserving, summary)
EXPECTED = {
    "public": (False, EIM, EIM, True, "open"),
    "cone": (True, EIM, APD, True, "cone"),
    "cone-fw": (True, EIM, APD, True, "cone"),
    "upnp": (True, EIM, APD, True, "cone"),
    "symmetric": (True, APD, APD, False, "symmetric"),
    "symmetric-fw": (True, APD, APD, False, "symmetric"),
}


@pytest.mark.parametrize("kind", list(EXPECTED))
def test_stun_mapping_and_classification(netlab: Lab, kind: str) -> None:
    (stun_ip, stun_port), _ = netlab.stun()
    site = netlab.add_site("a", kind)
    r = json.loads(site.host.run_python(PROBE, stun_ip, str(stun_port)))
    got = (r["behind_nat"], r["mapping"], r["filtering"], r["port_preserving"], r["kind"])
    assert got == EXPECTED[kind], r
    local_ip, local_port = r["local"]
    assert local_ip == site.host.ip
    mapping_tests = [p for p in r["probes"] if p[0] in ("I", "II", "III")]
    assert len(mapping_tests) == 3
    if kind == "public":
        assert all(tuple(p[2]) == (local_ip, local_port) for p in mapping_tests)
        return
    # Every reflexive address is exactly the NAT's conntrack reply tuple for
    # that flow (socket -> that server address).
    flows = {
        (e.dst, e.dport): (e.reply_dst, e.reply_dport)
        for e in site.conntrack("udp")
        if (e.src, e.sport) == (local_ip, local_port)
    }
    for test, server, mapped, _rtt in mapping_tests:
        assert flows[tuple(server)] == tuple(mapped), (test, flows)


SERVICE = r"""
import asyncio, json, sys, tempfile, time
from pathlib import Path
from crust import Identity, Service, ServiceConfig

async def main():
    cfg = ServiceConfig(hosts=(sys.argv[1],), stun_servers=(sys.argv[2],), beacon=False,
                        gossip=False, identity=Identity.generate(),
                        cache_path=Path(tempfile.mkdtemp()) / "cache")
    async with Service(cfg) as svc:
        t0 = time.monotonic()
        while svc.nat is None and time.monotonic() - t0 < 10:
            await asyncio.sleep(0.01)
        print(json.dumps({"live": svc.endpoints[0], "stun": svc.stun_addresses,
                          "mapping": svc.nat.mapping.value, "seconds": time.monotonic() - t0}))

asyncio.run(main())
"""


@pytest.mark.parametrize(("kind", "mapping"), [("cone", EIM), ("symmetric", APD)])
def test_service_stun_sees_the_listening_ports_mapping(
    netlab: Lab, kind: str, mapping: str
) -> None:
    """The service's own listening socket asks (not a side socket): the
    answer is the NAT's mapping of the port peers must reach."""
    (stun_ip, stun_port), (alt_ip, alt_port) = netlab.stun()
    site = netlab.add_site("a", kind)
    r = json.loads(site.host.run_python(SERVICE, site.host.ip, f"{stun_ip}:{stun_port}"))
    assert r["mapping"] == mapping
    live_port = r["live"][1]
    flows = {
        (e.dst, e.dport): (e.reply_dst, e.reply_dport)
        for e in site.conntrack("udp")
        if (e.src, e.sport) == (site.host.ip, live_port)
    }
    dsts = [(stun_ip, stun_port), (alt_ip, stun_port), (alt_ip, alt_port)]
    # Reflexive addresses, in test order without repeats, are exactly the
    # NAT's mappings of the listening port toward the three server addresses.
    assert [tuple(a) for a in r["stun"]] == list(dict.fromkeys(flows[d] for d in dsts))
    assert len(r["stun"]) == (1 if kind == "cone" else 3)


def test_stun_rtt_and_classification_over_a_slow_link(netlab: Lab) -> None:
    """40 ms each way: every answered test reports ~80 ms, and the
    classification is unchanged (RTO 0.2 s still exceeds the round trip)."""
    (stun_ip, stun_port), _ = netlab.stun()
    site = netlab.add_site("a", "cone-fw", delay_ms=40)
    r = json.loads(site.host.run_python(PROBE, stun_ip, str(stun_port)))
    assert (r["kind"], r["mapping"], r["filtering"]) == ("cone", EIM, APD), r
    rtts = [p[3] for p in r["probes"] if p[2] is not None]
    assert len(rtts) == 4 and all(0.080 <= rtt < 0.120 for rtt in rtts), rtts
