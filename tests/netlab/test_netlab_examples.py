"""examples/lan_chat.py on a real LAN segment (root, network namespaces):
two chat nodes given no address at all find each other with the LAN
beacon, connect, and a typed line reaches the other side."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from lab import Lab

CHAT = Path(__file__).resolve().parents[2] / "examples" / "lan_chat.py"


def test_lan_chat_finds_its_peer_by_beacon(netlab: Lab, tmp_path: Path) -> None:
    site = netlab.add_site("chat", "cone", hosts=2)
    env = dict(os.environ, HOME=str(tmp_path), XDG_CACHE_HOME=str(tmp_path / "cache"))
    env["PYTHONUNBUFFERED"] = "1"
    alice_host, bob_host = site.hosts
    alice = alice_host.spawn(sys.executable, str(CHAT), "alice", "--host", alice_host.ip, env=env)
    bob = bob_host.spawn(sys.executable, str(CHAT), "bob", "--host", bob_host.ip, env=env)
    alice_id = alice.expect(r"alice is (\w+)").group(1)
    bob_id = bob.expect(r"bob is (\w+)").group(1)
    # Found by the beacon (no contact was given), then connected.
    alice.expect(rf"\* found {bob_id} on the LAN", timeout=15)
    bob.expect(rf"\* found {alice_id} on the LAN", timeout=15)
    bob.expect(rf"\* {alice_id} joined over direct-", timeout=15)
    alice.expect(rf"\* {bob_id} joined over direct-", timeout=15)
    bob.write("hello over the LAN\n")
    alice.expect("bob: hello over the LAN", timeout=10)
