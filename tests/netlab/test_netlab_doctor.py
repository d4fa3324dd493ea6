"""`crust nat` in the lab: the doctor's findings match the site it runs in."""

from __future__ import annotations

import json
import os
import sys

import pytest
from lab import Lab

CRUST = os.path.join(os.path.dirname(sys.executable), "crust")


@pytest.mark.parametrize(
    ("kind", "nat_kind", "can_map"),
    [("upnp", "cone", True), ("symmetric", "symmetric", False), ("public", "open", False)],
)
def test_crust_nat_json(netlab: Lab, kind: str, nat_kind: str, can_map: bool) -> None:
    (stun_ip, stun_port), _ = netlab.stun()
    site = netlab.add_site("a", kind)
    out = site.host.sh(CRUST, "nat", "--stun", f"{stun_ip}:{stun_port}", "--json", timeout=30)
    r = json.loads(out)
    assert {"interface": "eth0" if kind != "public" else "wan", "address": site.host.ip} in r[
        "local_addresses"
    ]
    assert r["nat"]["kind"] == nat_kind
    assert r["nat"]["mapped"][0] == site.public_ip
    assert bool(r["upnp"].get("can_map")) == can_map
    if can_map:
        assert r["upnp"]["external_ip"] == site.public_ip
        # The trial mapping was removed again.
        assert netlab.upnp_mappings(site) == []
        assert "UPnP works" in r["verdict"]
    assert r["nat"]["advice"] in r["verdict"]


def test_crust_nat_text(netlab: Lab) -> None:
    (stun_ip, _), _ = netlab.stun()
    site = netlab.add_site("a", "cone-fw")
    out = site.host.sh(CRUST, "nat", "--stun", stun_ip, "--no-upnp", timeout=30)
    assert f"reflexive       {site.public_ip}:" in out
    assert "mapping         endpoint-independent" in out
    assert "filtering       address-and-port-dependent" in out
    assert "UPnP: skipped" in out and "verdict: behind a NAT" in out
