"""A crust node in a child process, for tests that need two processes.

    python peer_child.py MODE [--udp-only|--tcp-only] [--bytes N]

Prints ``READY host port peer_id`` once listening. Modes:
``idle``: accept connections and do nothing (a peer to SIGKILL);
``source``: wait for a peer, send it ``--bytes`` of a deterministic blob
in 1 MiB messages, then print ``SENT sha256`` and wait to be killed.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
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


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["idle", "source"])
    ap.add_argument("--udp-only", action="store_true")
    ap.add_argument("--tcp-only", action="store_true")
    ap.add_argument("--bytes", type=int, default=0)
    ap.add_argument("--idle-timeout", type=float, default=60.0)
    a = ap.parse_args()
    cfg = crust.ServiceConfig(
        network="crust-test",
        identity=crust.Identity.generate(),
        backup_port=False,
        tcp=not a.udp_only,
        udp=not a.tcp_only,
        idle_timeout=a.idle_timeout,
        keepalive=min(20.0, a.idle_timeout / 3),
    )
    async with crust.Service(cfg) as svc:
        host, port = svc.endpoints[0]
        print(f"READY {host} {port} {svc.id}", flush=True)
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
