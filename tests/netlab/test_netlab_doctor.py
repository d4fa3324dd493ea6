"""`crust nat` in the lab: the doctor's findings match the site it runs in."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
from lab import BOOTSTRAP_IP, Lab

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


@pytest.mark.parametrize(("kind", "nat_kind"), [("symmetric", "symmetric"), ("cone", "unknown")])
def test_crust_nat_via_a_crust_node(netlab: Lab, tmp_path: Path, kind: str, nat_kind: str) -> None:
    """No STUN: `crust nat --via` asks a crust node's two ports (design
    note 0062). Behind --random-fully they see two ports: symmetric. A
    cone's two answers agree, which one contact address cannot tell from
    an address-dependent NAT: unknown (never called symmetric)."""
    node = netlab.server.spawn(
        CRUST, "node", "--host", BOOTSTRAP_IP, "--port", "7100",
        "--identity", str(tmp_path / "node.key"), "--json",
    )  # fmt: skip
    node.expect('"Started"', 30)
    site = netlab.add_site("a", kind)
    out = site.host.sh(
        CRUST, "nat", "--via", f"{BOOTSTRAP_IP}:7100", "--no-upnp", "--no-natpmp", "--json",
        timeout=30,
    )  # fmt: skip
    r = json.loads(out)
    assert r["stun_servers"] == [] and r["contacts"] == [[BOOTSTRAP_IP, 7100]]
    nat = r["nat"]
    assert nat["source"] == "contacts" and nat["kind"] == nat_kind, nat
    assert len(nat["probes"]) == 2 and nat["mapped"][0] == site.public_ip
    assert nat["advice"] in r["verdict"]
    text = site.host.sh(CRUST, "nat", "--via", f"{BOOTSTRAP_IP}:7100", "--no-upnp",
                        "--no-natpmp", timeout=30)  # fmt: skip
    assert f"crust contacts: {BOOTSTRAP_IP}:7100" in text
    assert f"mapping         {nat['mapping']}" in text
