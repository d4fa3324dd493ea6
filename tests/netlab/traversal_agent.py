"""A crust node for the NAT-traversal lab tests, driven by lines on stdin.

    python traversal_agent.py serve IP PORT        # the rendezvous node
    python traversal_agent.py node IP BOOT_IP:PORT[,BOOT_IP:PORT...] [--tcp-only]
        [--stun IP:PORT,IP:PORT] [--upnp]

Commands (one per line; each answer is one JSON line on stdout):

- ``start``: a fresh service (new ports, new identity), connected to the
  rendezvous node, with its STUN view of the NAT when ``--stun`` was given;
  answers ``{"ev": "started", "id": ..., "hard": ...}``.
- ``connect PEER_ID``: connect by id, send "ping", wait for the "pong";
  answers ``{"ev": "result", "ok", "path", "connect_s", "first_msg_s", "why"}``.
- ``send PEER_ID CHUNKS``: send CHUNKS random 16 KiB messages and an "end";
  answers ``{"ev": "sent", "sha256", "paths", "why", "connected"}`` (paths
  seen along the way; the peer's ``why`` at the end).
- ``quit``.

Any node answers "ping" with "pong", and on "end" prints
``{"ev": "received", "sha256", "chunks", "path"}``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import sys
import tempfile
import time
from typing import Any

from crust import Identity, NewMessage, PeerId, Service, ServiceConfig


def out(**kw: Any) -> None:
    print(json.dumps(kw), flush=True)


def config(ip: str, port: int = 0, **kw: Any) -> ServiceConfig:
    fields = ServiceConfig.__dataclass_fields__
    # No LAN beacon, gossip or bootstrap cache: peers must meet through the
    # rendezvous node only.
    quiet = {
        k: v for k, v in (("gossip", False), ("beacon", False), ("cache_size", 0)) if k in fields
    }
    if "cache_path" in fields:
        quiet["cache_path"] = tempfile.mktemp(prefix="crust-agent-cache-")
    return ServiceConfig(
        hosts=(ip,), port=port, backup_port=False, identity=Identity.generate(),
        connect_timeout=8.0, **quiet, **kw,
    )  # fmt: skip


async def serve(ip: str, port: int) -> None:
    async with Service(config(ip, port)) as svc:
        out(ev="serving", id=str(svc.id), endpoint=list(svc.endpoints[0]))
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


class Node:
    def __init__(
        self,
        ip: str,
        boots: list[tuple[str, int]],
        tcp_only: bool,
        stun: tuple[str, ...],
        upnp: bool,
    ) -> None:
        self.ip = ip
        self.boots = boots
        self.kw: dict[str, Any] = {"udp": False} if tcp_only else {}
        if stun:
            self.kw["stun_servers"] = stun
        if upnp:
            self.kw["upnp"] = True
        self.svc: Service | None = None
        self.task: asyncio.Task[None] | None = None
        self.pongs: asyncio.Queue[float] = asyncio.Queue()

    async def start(self) -> None:
        await self.stop()
        self.svc = Service(config(self.ip, **self.kw))
        await self.svc.start()
        for boot in self.boots:  # each a mutual peer (and relay) for the others
            self.svc.maintain(await self.svc.connect(boot))
        self.task = asyncio.create_task(self._events(self.svc))
        if self.svc.upnp is not None:
            await self.svc.upnp.wait_ready(15)
        if "stun_servers" in self.kw:
            # Whether our NAT is symmetric decides on birthday punching.
            for _ in range(100):
                if getattr(self.svc, "nat", None) is not None:
                    break
                await asyncio.sleep(0.05)
        out(ev="started", id=str(self.svc.id), endpoint=list(self.svc.endpoints[0]),
            hard=self.svc.traversal.is_hard(),
            reflexive=[list(a) for a in self.svc.reflexive_addresses])  # fmt: skip

    async def _events(self, svc: Service) -> None:
        h = hashlib.sha256()
        chunks = 0
        async for ev in svc.events():
            if not isinstance(ev, NewMessage):
                continue
            if ev.data == b"ping":
                await ev.peer.send(b"pong")
            elif ev.data == b"pong":
                self.pongs.put_nowait(time.monotonic())
            elif ev.data == b"end":
                out(ev="received", sha256=h.hexdigest(), chunks=chunks, path=ev.peer.path)
                h, chunks = hashlib.sha256(), 0
            else:
                h.update(ev.data)
                chunks += 1

    async def stop(self) -> None:
        if self.svc is not None:
            await self.svc.close()
        if self.task is not None:
            await asyncio.gather(self.task, return_exceptions=True)
        self.svc, self.task = None, None

    async def connect(self, pid: str) -> None:
        assert self.svc is not None
        t0 = time.monotonic()
        try:
            peer = await self.svc.connect(PeerId.parse(pid))
            t1 = time.monotonic()
            await peer.send(b"ping")
            t2 = await asyncio.wait_for(self.pongs.get(), 5.0)
        except (ConnectionError, asyncio.TimeoutError, OSError) as e:
            out(ev="result", ok=False, error=str(e) or type(e).__name__,
                elapsed_s=time.monotonic() - t0)  # fmt: skip
            return
        out(ev="result", ok=True, path=peer.path, connect_s=t1 - t0, first_msg_s=t2 - t0,
            why=peer.why)  # fmt: skip

    async def send(self, pid: str, count: int) -> None:
        assert self.svc is not None
        peer = await self.svc.connect(PeerId.parse(pid))
        h = hashlib.sha256()
        paths = [peer.path]
        for _ in range(count):
            chunk = os.urandom(16 << 10)
            h.update(chunk)
            await peer.send(chunk)
            if peer.path != paths[-1]:
                paths.append(peer.path)
            await asyncio.sleep(0.01)
        await peer.send(b"end")
        out(ev="sent", sha256=h.hexdigest(), paths=paths, why=peer.why,
            connected=peer.is_connected)  # fmt: skip


async def node(ip: str, boot: str, tcp_only: bool, stun: tuple[str, ...], upnp: bool) -> None:
    boots = [(h, int(p)) for h, p in (b.rsplit(":", 1) for b in boot.split(","))]
    n = Node(ip, boots, tcp_only, stun, upnp)
    loop = asyncio.get_running_loop()
    out(ev="ready")
    try:
        while True:
            line = await loop.run_in_executor(None, sys.stdin.readline)
            cmd = line.split()
            if not cmd or cmd[0] == "quit":
                return
            if cmd[0] == "start":
                await n.start()
            elif cmd[0] == "connect":
                await n.connect(cmd[1])
            elif cmd[0] == "send":
                await n.send(cmd[1], int(cmd[2]))
    finally:
        await n.stop()


if __name__ == "__main__":
    if os.environ.get("CRUST_AGENT_LOG"):
        logging.basicConfig(
            level=logging.DEBUG,
            stream=sys.stderr,
            format="%(relativeCreated)d %(name)s %(message)s",
        )
    if sys.argv[1] == "serve":
        asyncio.run(serve(sys.argv[2], int(sys.argv[3])))
    else:
        stun = sys.argv[sys.argv.index("--stun") + 1].split(",") if "--stun" in sys.argv else []
        flags = ("--tcp-only" in sys.argv, tuple(stun), "--upnp" in sys.argv)
        asyncio.run(node(sys.argv[2], sys.argv[3], *flags))
