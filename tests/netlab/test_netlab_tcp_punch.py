"""TCP simultaneous open between two no-firewall cone NATs on links with a
realistic one-way delay (issue 7: "cone x cone over TCP simultaneous open
passes"). On the lab's zero-delay links the matrix in
test_netlab_traversal.py shows that pair relayed: each early SYN reaches
the far NAT box before that side's own SYN has left and is answered with
RST. With tens of milliseconds between the NATs, as on the internet, the
two SYNs cross in flight when both sides send them at about the same
time: the target waits for its reply to reach the requester through the
introducer (half the two RTTs to it) before its first SYN."""

from __future__ import annotations

import json

from lab import Lab
from test_netlab_traversal import TRIALS, Agent, run_pairs, start_rendezvous, summary

# One-way delay added to each site's uplink (both directions), unequal so
# that the two orders differ: NAT to NAT 40 ms one way.
NEAR_MS, FAR_MS = 15.0, 25.0


def test_cone_x_cone_tcp_with_delay(netlab: Lab) -> None:
    start_rendezvous(netlab)
    near = [netlab.add_site(f"n{i}", "cone", delay_ms=NEAR_MS) for i in range(2)]
    far = [netlab.add_site(f"f{i}", "cone", delay_ms=FAR_MS) for i in range(2)]
    pairs = {
        f"cone {NEAR_MS:g} ms x cone {FAR_MS:g} ms, TCP only": (
            Agent(near[0].host, tcp_only=True), Agent(far[0].host, tcp_only=True)),
        f"cone {FAR_MS:g} ms x cone {NEAR_MS:g} ms, TCP only": (
            Agent(far[1].host, tcp_only=True), Agent(near[1].host, tcp_only=True)),
    }  # fmt: skip
    results = run_pairs(pairs, TRIALS)
    table = {k: summary(v) for k, v in results.items()}
    print("\nTCP punching between no-firewall cones, delayed uplinks (requester x target):")
    for k, v in table.items():
        print(f"  {k:36s} {json.dumps(v)}")
    for name, v in table.items():
        assert v["ok"] == TRIALS, (name, v)
        assert v["paths"] == {"punched-tcp": TRIALS}, (name, v)
        # Rendezvous (80 ms), crossing SYNs and SYN-ACKs (80 ms), IK (80 ms):
        # ~0.25 s when the first SYNs meet. Each refused try costs another
        # 80 ms round trip plus a random pause; before the target waited for
        # the requester, the median was 0.44-0.5 s (2-5 tries).
        assert v["median_connect_s"] < 0.4, (name, v)
