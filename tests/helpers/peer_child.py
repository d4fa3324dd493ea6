"""A crust node in a child process, for tests that need two processes.

    python peer_child.py MODE [--udp-only|--tcp-only] [--bytes N]

Prints ``READY host port peer_id`` once listening. Modes:
``idle``: accept connections and do nothing (a peer to SIGKILL);
``source``: wait for a peer, send it ``--bytes`` of a deterministic blob
in 1 MiB messages, then print ``SENT sha256`` and wait to be killed;
``sink``: accept the first peer and read none of its messages for
``--wait`` seconds (a slow application), print ``HELD rss_at_start
rss_now``, then read ``--bytes`` of messages (:func:`stamped` ones),
check their order per priority and print ``GOT bytes digest0 .. digest3``
(see :func:`stamped`). ``--via HOST:PORT`` first joins that node (a
rendezvous for connect-by-id); ``--block-direct`` announces no usable
address of its own, so a peer can only reach it through a relay.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import sys

import crust

CHUNK = 1 << 20


_BASE = [hashlib.shake_256(i.to_bytes(8, "big")).digest(CHUNK) for i in range(16)]


def blob_chunk(i: int) -> bytes:
    """Chunk ``i`` of the test blob: 16 random chunks in turn, each stamped
    with its index so that no two are equal (cheap, unlike generating 1 GiB
    of fresh randomness). The receiver hashes what arrives and compares
    with the digest the sender prints."""
    return i.to_bytes(8, "big") + _BASE[i % 16][8:]


def stamped(i: int, size: int) -> tuple[int, bytes]:
    """Message ``i`` of a slow-reader run: priority ``i % 4``, ``size``
    bytes stamped with ``i``, so the receiver can check the order per
    priority (stamps p, p + 4, p + 8 ...) and hash each priority's bytes."""
    return i % 4, blob_chunk(i)[:size]


def rss() -> int:
    """This process's resident set size in bytes."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def sink(svc: crust.Service, a: argparse.Namespace, start_rss: int) -> None:
    peer = await svc.accept()
    svc.maintain(peer)
    await asyncio.sleep(a.wait)
    print(f"HELD {start_rss} {rss()}", flush=True)
    hashes = [hashlib.sha256() for _ in range(4)]
    nxt = [0, 1, 2, 3]
    got = 0
    while got < a.bytes:
        msg = await peer.recv()
        p = msg.priority
        stamp = int.from_bytes(msg.data[:8], "big")
        if stamp != nxt[p]:
            print(f"ORDER priority {p}: got message {stamp}, expected {nxt[p]}", flush=True)
            return
        nxt[p] += 4
        hashes[p].update(msg.data)
        got += len(msg.data)
    print("GOT", got, *(h.hexdigest() for h in hashes), flush=True)


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["idle", "source", "sink"])
    ap.add_argument("--udp-only", action="store_true")
    ap.add_argument("--tcp-only", action="store_true")
    ap.add_argument("--bytes", type=int, default=0)
    ap.add_argument("--idle-timeout", type=float, default=60.0)
    ap.add_argument("--wait", type=float, default=0.0)
    ap.add_argument("--via", default="")
    ap.add_argument("--block-direct", action="store_true")
    a = ap.parse_args()
    start_rss = rss()
    cfg = crust.ServiceConfig(
        network="crust-test",
        identity=crust.Identity.generate(),
        backup_port=False,
        tcp=not a.udp_only,
        udp=not a.tcp_only,
        idle_timeout=a.idle_timeout,
        keepalive=min(20.0, a.idle_timeout / 3),
        gossip=False,
        beacon=False,
    )
    async with crust.Service(cfg) as svc:
        if a.block_direct:
            # Announce only an address nobody listens on: punching fails.
            svc.traversal.candidates = lambda toward: ([("127.0.0.1", 9)], 0)  # type: ignore[method-assign]
            svc.traversal.punch_timeout = 0.5
        if a.via:
            host, _, port = a.via.rpartition(":")
            svc.maintain(await svc.connect((host, int(port))))
        host, port = svc.endpoints[0]
        print(f"READY {host} {port} {svc.id}", flush=True)
        if a.mode == "sink":
            await sink(svc, a, start_rss)
            await asyncio.sleep(3600)
            return
        async for ev in svc.events():
            if isinstance(ev, crust.NewPeer) and a.mode == "source":
                svc.maintain(ev.peer)
                h = hashlib.sha256()
                sent = 0
                i = 0
                while sent < a.bytes:
                    data = blob_chunk(i)[: a.bytes - sent]
                    h.update(data)
                    await ev.peer.send(data, 1)
                    sent += len(data)
                    i += 1
                print(f"SENT {h.hexdigest()}", flush=True)
            elif isinstance(ev, crust.NewPeer):
                svc.maintain(ev.peer)


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
