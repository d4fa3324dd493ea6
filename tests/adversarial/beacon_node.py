"""The beacon half of test_reflection, run inside a network namespace of
its own (``ip netns exec``; the beacon never runs on loopback), set up by
the test: a node on a veth interface (10.215.0.1/24), and an attacker at
10.215.0.2 sending it signed LAN beacons from fresh ids that name the
victim's address (10.215.0.9: nobody; what is sent there leaves the
interface, where the tap counts it, and is dropped by the other end).
Prints the attacker's and the victim's IP bytes."""

from __future__ import annotations

import asyncio
import os
import socket
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from wire import Wire

from crust import Identity, Service, ServiceConfig
from crust.discovery.beacon import Beacon

NODE, ATTACKER, VICTIM = "10.215.0.1", "10.215.0.2", "10.215.0.9"
PORT = 47_483
BEACONS = 24
WINDOW = 4.0


async def main() -> None:
    with Wire({ATTACKER, VICTIM}) as wire:
        cfg = ServiceConfig(
            network="reflection-test", hosts=(NODE,), backup_port=False, beacon=True,
            beacon_port=PORT, identity=Identity.generate(), connect_timeout=3.0,
            bootstrap_attempt_timeout=3.0,
        )  # fmt: skip
        async with Service(cfg):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind((ATTACKER, 0))
            loop = asyncio.get_running_loop()
            for i in range(BEACONS):
                eps = [(VICTIM, 40000 + 8 * i + j) for j in range(8)]
                b = Beacon(Identity.generate(), "reflection-test", now=loop.time(), endpoints=eps)
                data = b.datagrams_to_send(loop.time())[0][0]
                sock.sendto(data, (NODE, PORT))
                await asyncio.sleep(0.01)
            await asyncio.sleep(WINDOW)
            sock.close()
        print(wire.sent(ATTACKER, NODE), wire.to(VICTIM))


if __name__ == "__main__":
    asyncio.run(main())
