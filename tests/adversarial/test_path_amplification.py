"""A connected peer cannot aim our data at someone else (issue 15, "no
reflection"; RFC 9000 sections 8 and 9.3). The engine follows a peer to a
new address on an authenticated packet from there (NAT rebinding), so a
peer holding the keys can send one packet with a victim's source address
(or an on-path attacker can rewrite one): until the new address answers a
path challenge, the node must send it at most 3x what came from it.

Against 8b6df56: one 32-byte packet "from" the victim made a node sending a
bulk transfer aim 173 KB there (5,400x). An honest peer that moved answers
the challenge within a round trip and gets full speed back
(tests/engine/test_endpoint.py::test_nat_rebinding_mid_transfer).
"""

from __future__ import annotations

import socket
import time

from test_endpoint import Bulk, connect, now_us, run, udp

from .tools import figure

VICTIM = "127.0.0.3"


def drain(sock: socket.socket) -> int:
    got = 0
    while True:
        try:
            got += len(sock.recv(65536))
        except BlockingIOError:
            return got


def test_a_peer_cannot_aim_our_data_at_another_address() -> None:
    sa, sb, ea, eb, a, b = connect()
    # b (the node under attack) streams to a (the hostile peer).
    t = Bulk(b, a, ea, 64 << 20)
    run(lambda: (ea, eb), lambda now: t.step(now) or t.received >= 4 << 20)

    # a forges nothing: it sends one of its own packets, from the victim.
    victim = udp(host=VICTIM)
    a.send(b"x", now=now_us())
    forged = b"".join(a.datagrams_to_send(now_us(), 1))
    assert forged
    victim.sendto(forged, sb.getsockname())
    sent_by_victim = len(forged)

    # Only b runs now: a never answers from anywhere (it is the attacker),
    # the victim never answers the path challenge.
    got = 0
    until = time.monotonic() + 1.5
    while time.monotonic() < until:
        now = now_us()
        eb.drive(now)
        t.step(now)  # b keeps queueing its transfer
        eb.flush(now)
        got += drain(victim)
        time.sleep(0.002)
    got += drain(victim)
    ratio = got / sent_by_victim
    figure(
        "a peer's packet sent from a victim's address (path change)",
        f"{sent_by_victim} B from the victim's address: {got} B sent there ({ratio:.1f}x)",
    )
    assert eb.stats()["path_changes"] == 1
    assert got <= 3 * sent_by_victim, f"{got} B reflected for {sent_by_victim} B ({ratio:.0f}x)"

    # The honest path comes back with a's next packet from its real address,
    # and the transfer completes, every byte checked.
    run(lambda: (ea, eb), lambda now: t.step(now), timeout=60)
    assert t.rx_hash.digest() == t.tx_hash.digest()
    assert eb.peer(b) == sa.getsockname()
    victim.close()
    sa.close()
    sb.close()

