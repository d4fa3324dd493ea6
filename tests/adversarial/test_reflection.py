"""No reflection (issue 15, design note 0046): a peer cannot make a node
send to an address of its choosing more than 3x the bytes it sent itself.

Against an older main, one 112-byte INTRODUCE from any connected peer,
naming a third party's address, made the node spray 9,049 UDP packets at
1,025 ports of it (5,434x); plain INTRODUCE 603x (TCP SYNs), PUNCH REQUEST
359x, gossip 6x, LAN beacons from fresh ids 5x.

Every figure here is counted on the wire (tests/adversarial/wire.py, an
AF_PACKET tap): IP bytes from the attacker's address to the node, against
IP bytes from anywhere to the victim's address, which nobody there answers
(the kernel's RSTs and ICMP errors come *from* the victim and are not
counted). The node, the attacker and each victim have their own loopback
address, so other tests' traffic on 127.0.0.1 does not mix in.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from capability import missing

from crust import Identity, Service, ServiceConfig
from crust.control import ControlKind
from crust.discovery.gossip import encode_gossip
from crust.nat import rendezvous
from crust.nat.rendezvous import Op, RendezvousMessage

from .tools import figure, run
from .wire import Wire

logger = logging.getLogger(__name__)

NET = "reflection-test"
NODE = "127.15.5.1"
ATTACKER = "127.15.5.2"
LIMIT = 3.0
#: How long the node is watched after the attack: every traversal it can
#: be made to start ends by then (connect_timeout and punch_timeout 3 s).
WINDOW = 3.6


@pytest.fixture(autouse=True)
def _tap_allowed() -> None:
    """The wire tap (AF_PACKET) and the namespace need root."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        missing("the reflection tests count packets with AF_PACKET and need root and `ip`")


@contextlib.asynccontextmanager
async def attacked(
    victim: str, attacker_kw: dict[str, Any] | None = None, **node_kw: Any
) -> AsyncIterator[tuple[Wire, Service, Any]]:
    """The node, and an attacker connected to it (over UDP unless
    ``attacker_kw`` says otherwise), inside a wire tap watching the
    attacker and ``victim``."""
    with Wire({ATTACKER, victim, NODE}) as wire:
        cfg = ServiceConfig(
            network=NET, hosts=(NODE,), backup_port=False, beacon=False,
            identity=Identity.generate(), connect_timeout=3.0, **node_kw,
        )  # fmt: skip
        akw = {"tcp": False, **(attacker_kw or {})}
        acfg = ServiceConfig(
            network=NET, hosts=(ATTACKER,), backup_port=False, beacon=False, gossip=False,
            identity=Identity.generate(), **akw,
        )  # fmt: skip
        async with Service(cfg) as node, Service(acfg) as attacker:
            peer = await attacker.connect(node.endpoints[0])
            # Where the node sees the attacker (a TCP dial leaves from 127.0.0.1).
            for _ in range(100):
                seen = [p.address[0] for p in node.peers if p.id == attacker.id]
                if seen:
                    break
                await asyncio.sleep(0.01)
            yield wire, attacker, peer
            await asyncio.sleep(WINDOW)
            sent = wire.sent(seen[0], NODE)
            got = wire.to(victim)
            logger.info(
                "attacker sent %d B; victim got %d B (udp %d, tcp %d): %.1fx",
                sent, got, wire.to(victim, socket.IPPROTO_UDP),
                wire.to(victim, socket.IPPROTO_TCP), got / sent,
            )  # fmt: skip
            wire.result = (sent, got)  # type: ignore[attr-defined]


def introduce(victim: str, ports: list[int], *, hard: bool) -> bytes:
    msg = RendezvousMessage(
        Op.INTRODUCE, os.urandom(8), Identity.generate().peer_id, os.urandom(16),
        candidates=tuple((victim, p) for p in ports), hard=hard,
    )  # fmt: skip
    return rendezvous.encode(msg)


def check(wire: Wire, attack: str) -> tuple[int, int]:
    sent, got = wire.result  # type: ignore[attr-defined]
    assert sent > 0
    figure(attack, f"{got} B to the victim for {sent} B from the attacker: {got / sent:.1f}x")
    assert got <= LIMIT * sent, f"{got} B to the victim for {sent} B: {got / sent:.1f}x"
    return sent, got


def test_introduce_with_birthday_spray() -> None:
    """INTRODUCE with ``hard``: the node would spray 1,024 ports."""
    victim = "127.15.5.11"

    async def main() -> None:
        async with attacked(victim) as (wire, attacker, peer):
            for _ in range(8):  # the introducer's whole burst
                attacker.send_control(
                    peer, ControlKind.RENDEZVOUS, introduce(victim, [40000], hard=True)
                )
        check(wire, "reflection: INTRODUCE with birthday spray")

    run(main())


def test_plain_introduce_udp_and_tcp_punch() -> None:
    """INTRODUCE with 16 candidates: UDP punches and TCP SYNs."""
    victim = "127.15.5.12"

    async def main() -> None:
        async with attacked(victim) as (wire, attacker, peer):
            for _ in range(8):
                msg = introduce(victim, list(range(40000, 40016)), hard=False)
                attacker.send_control(peer, ControlKind.RENDEZVOUS, msg)
        check(wire, "reflection: plain INTRODUCE (UDP punches, TCP SYNs)")

    run(main())


def test_plain_introduce_tcp_only() -> None:
    """The same on a node without UDP: TCP SYNs only (simultaneous open,
    retried every 10-150 ms on each refused candidate)."""
    victim = "127.15.5.15"

    async def main() -> None:
        tcp_only = {"udp": False, "tcp": True}
        async with attacked(victim, tcp_only, **tcp_only) as (wire, attacker, peer):
            for _ in range(8):
                msg = introduce(victim, list(range(40000, 40016)), hard=False)
                attacker.send_control(peer, ControlKind.RENDEZVOUS, msg)
        check(wire, "reflection: plain INTRODUCE, TCP-only node (SYNs)")
        assert wire.to(victim, socket.IPPROTO_UDP) == 0

    run(main())


def test_punch_request() -> None:
    """PUNCH REQUEST (the re-punch under a relayed connection), sent
    directly by a connected peer."""
    victim = "127.15.5.13"

    async def main() -> None:
        async with attacked(victim) as (wire, attacker, peer):
            for _ in range(8):
                msg = RendezvousMessage(
                    Op.REQUEST, os.urandom(8), attacker.id, os.urandom(16),
                    candidates=tuple((victim, p) for p in range(40000, 40016)),
                )  # fmt: skip
                attacker.send_control(peer, ControlKind.PUNCH, rendezvous.encode(msg))
        check(wire, "reflection: PUNCH REQUEST")

    run(main())


def test_gossip_dials() -> None:
    """Gossip naming 16 fresh ids at the victim's address, 4 ports each."""
    victim = "127.15.5.14"

    async def main() -> None:
        async with attacked(victim, tcp=True) as (wire, attacker, peer):
            for seq in range(3):  # what the receiver's burst lets through
                contacts = [
                    (Identity.generate().peer_id, [(victim, 40000 + 4 * i + j) for j in range(4)])
                    for i in range(16)
                ]
                payload = encode_gossip(
                    attacker.identity, NET, 1000 + seq, [attacker.endpoints[0]], contacts
                )
                attacker.send_control(peer, ControlKind.GOSSIP, payload)
        check(wire, "reflection: gossip dials")

    run(main())


BEACON_NODE = Path(__file__).with_name("beacon_node.py")


def test_beacon_dials() -> None:
    """Signed LAN beacons from fresh ids naming the victim's address, in a
    network namespace of our own (the beacon never runs on loopback)."""
    ns = f"crust-rfl-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        for cmd in (
            "ip link set lo up",
            "ip link add d0 type veth peer name d1",
            "ip addr add 10.215.0.1/24 dev d0",
            "ip addr add 10.215.0.2/24 dev d0",
            "ip link set d0 up",
            "ip link set d1 up",
            # The victim answers nothing, not even ARP: what is sent to it
            # leaves d0 (and the tap counts it), then d1 drops it.
            "ip neigh add 10.215.0.9 lladdr 02:00:00:00:00:09 dev d0 nud permanent",
        ):
            subprocess.run(["ip", "netns", "exec", ns, *cmd.split()], check=True)
        out = subprocess.run(
            ["ip", "netns", "exec", ns, sys.executable, str(BEACON_NODE)],
            check=True, capture_output=True, text=True, timeout=30,
        )  # fmt: skip
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)
    sent, got = map(int, out.stdout.split())
    assert sent > 0
    figure("reflection: LAN beacon dials", f"{got} B to the victim for {sent} B of beacons: "
           f"{got / sent:.1f}x")  # fmt: skip
    assert got <= LIMIT * sent, f"{got} B to the victim for {sent} B of beacons: {got / sent:.1f}x"
