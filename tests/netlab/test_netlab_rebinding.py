"""NAT rebinding mid-transfer (issue 16, item 5), as QUIC's rebind tests
do it: a host behind a cone NAT talks UDP to a public node; half way
through a transfer its NAT maps it to a new public port (the mapping is
flushed and new flows get ports from another range). The public side must
follow the peer to its new address, validate it, and carry on: every
message hash-checked, no stall beyond a fraction of a second.

Both directions: the host behind the NAT sending (its data reveals the
new address at once) and receiving (it only acknowledges, so it has to
notice the silence and ping: design note 0060).
"""

from __future__ import annotations

import itertools
import json
import time

import pytest
from lab import Lab

MSG = 256 << 10
TOTAL = 160  # messages: 40 MiB
MOVE_AT = 40  # messages received before the NAT changes

# One side of the transfer. argv: role (send|recv), then for the dialler the
# public node's host:port. Prints "READY host port" (listener), "GOT i t"
# per message received, "SENT n" and "DONE sha256 peer-address".
AGENT = r"""
import asyncio, hashlib, random, sys, time
from crust import Service, ServiceConfig, Identity

role, mode = sys.argv[1], sys.argv[2]
MSG, TOTAL = int(sys.argv[3]), int(sys.argv[4])

async def main():
    host = "0.0.0.0"
    cfg = ServiceConfig(network="rebind", hosts=(host,), backup_port=False, tcp=False,
                        beacon=False, identity=Identity.generate())
    async with Service(cfg) as svc:
        if mode == "listen":
            print("READY", svc.endpoints[0][1], flush=True)
            peer = await svc.accept()
        else:
            h, p = sys.argv[5].rsplit(":", 1)
            peer = await svc.connect((h, int(p)), timeout=10)
        svc.maintain(peer)
        digest = hashlib.sha256()
        if role == "send":
            rng = random.Random(7)
            for i in range(TOTAL):
                data = i.to_bytes(4, "big") + rng.randbytes(MSG - 4)
                digest.update(data)
                await peer.send(data)
            print("SENT", TOTAL, flush=True)
            await peer.recv()  # the receiver's "done"
        else:
            for i in range(TOTAL):
                got = await peer.recv()
                digest.update(got.data)
                print("GOT", i, f"{time.monotonic():.4f}", flush=True)
            await peer.send(b"done")
            await asyncio.sleep(0.5)
        print("DONE", digest.hexdigest(), peer.address[0], peer.address[1], flush=True)

asyncio.run(main())
"""


@pytest.mark.parametrize("behind_nat", ["send", "recv"])
def test_rebinding_mid_transfer(netlab: Lab, behind_nat: str) -> None:
    pub = netlab.add_site("pub", "public")
    nat = netlab.add_site("home", "cone")
    public_role = "recv" if behind_nat == "send" else "send"
    server = pub.host.python(AGENT, public_role, "listen", str(MSG), str(TOTAL))
    port = int(server.expect(r"READY (\d+)", timeout=20).group(1))
    client = nat.host.python(
        AGENT, behind_nat, "dial", str(MSG), str(TOTAL), f"{pub.public_ip}:{port}"
    )
    receiver = server if public_role == "recv" else client
    times: list[float] = []
    moved_at = 0.0
    before: set[tuple[str, int]] = set()
    while len(times) < TOTAL:
        line = receiver.readline(timeout=30)
        if not line.startswith("GOT"):
            continue
        times.append(float(line.split()[2]))
        if len(times) == MOVE_AT:
            before = {(e.reply_dst, e.reply_dport) for e in nat.conntrack("udp")}
            # New flows get ports from another range; the old mapping goes.
            nat.nat.iptables(  # type: ignore[union-attr]
                "-t", "nat", "-I", "POSTROUTING", "1", "-o", "wan", "-p", "udp",
                "-j", "MASQUERADE", "--to-ports", "40000-40999",
            )  # fmt: skip
            nat.flush_conntrack()
            moved_at = time.monotonic()
    done = {p: p.expect(r"DONE (\w+) (\S+) (\d+)", timeout=30) for p in (server, client)}
    assert done[server].group(1) == done[client].group(1), "the bytes differ"
    after = {(e.reply_dst, e.reply_dport) for e in nat.conntrack("udp")}
    new_port = int(done[server].group(3))
    # The public side follows the host to its new mapping.
    assert 40000 <= new_port <= 40999, (before, after, done[server].groups())
    gaps = [b - a for a, b in itertools.pairwise(times)]
    normal = sorted(gaps[: MOVE_AT - 1])[len(gaps[: MOVE_AT - 1]) // 2]
    stall = max(gaps[MOVE_AT - 1 :])
    print(
        "\n"
        + json.dumps(
            {
                "behind_nat": behind_nat,
                "median_gap_ms": round(normal * 1e3, 1),
                "stall_after_move_ms": round(stall * 1e3, 1),
                "moved_to": new_port,
                "nat_change_s": round(moved_at - times[MOVE_AT - 1], 3),
            }
        )
    )
    # Receiving side: 200 ms to notice the silence; sending side: its next
    # packet. Either way far below a retransmission backoff's seconds.
    assert stall < 1.0, f"the transfer stalled {stall:.2f} s after the NAT changed"
