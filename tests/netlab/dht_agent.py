"""Agents for the DHT acceptance in the NAT lab (issue 20), driven by lines
on stdin, answering one JSON line each on stdout.

    python dht_agent.py dht IP N            # a private DHT: N libtorrent nodes on IP
    python dht_agent.py serve IP PORT       # C: a public crust node, no DHT
    python dht_agent.py node IP BOOTS [--join IP:PORT] [--stun IP:PORT,...]

``dht`` runs :class:`dht_lab.PrivateDht` (tests/helpers/dht_lab.py: bootstrap lists
set to lab nodes only, UPnP/NAT-PMP/LSD off) bound to IP, answers
``{"ev": "dht", "bootstrap": [...]}`` and runs until stdin closes.

``node`` is a crust node whose only knowledge is the DHT bootstrap nodes
BOOTS (``host:port,...``), plus with ``--join`` a public crust contact it
joins (``Service.join``) and lists in the record it publishes. Commands:

- ``start``: a fresh service (new identity, new ports, empty caches); with
  ``--join`` it joins the contact and waits until the DHT confirmed a record
  that lists it; answers ``{"ev": "started", "id", "seq", "endpoints",
  "contacts", "start_s"}`` (``start_s``: from the new service's start to
  the DHT's confirmation of the put).
- ``restart``: the same identity in a fresh service (new ports); answers
  like ``start``.
- ``connect PEER_ID``: ``svc.connect`` by id, send "ping", wait for "pong";
  answers ``{"ev": "result", "ok", "path", "resolve_s", "seq", "connect_s",
  "first_msg_s", "error"}``, where ``resolve_s`` is the time of every DHT
  lookup ``connect`` made (the service's own ``dht.resolve``, timed).
- ``quit``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from crust import Identity, NewMessage, PeerId, Service, ServiceConfig
from crust.dht.directory import Directory
from crust.dht.record import Record

# tests/helpers/dht_lab.py (the agent runs outside pytest, which puts it on the path).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "helpers"))
from dht_lab import LAB_SETTINGS, PrivateDht

NETWORK = "dht-netlab"


def out(**kw: Any) -> None:
    print(json.dumps(kw), flush=True)


async def run_dht(ip: str, n: int) -> None:
    dht = PrivateDht(n, host=ip)
    await asyncio.sleep(1.0)  # the first pings fill the routing tables
    out(ev="dht", bootstrap=list(dht.bootstrap), nodes=n)
    try:
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    finally:
        dht.close()


async def serve(ip: str, port: int) -> None:
    """C: a public crust node of the lab's network, which knows nothing of
    the DHT; answers ``{"ev": "serving", "id"}``."""
    cfg = ServiceConfig(
        hosts=(ip,), port=port, backup_port=False, identity=Identity.generate(),
        network=NETWORK, beacon=False, gossip=False, cache_size=0,
        cache_path=tempfile.mktemp(prefix="crust-dht-agent-cache-"),
    )  # fmt: skip
    async with Service(cfg) as svc:
        out(ev="serving", id=str(svc.id))
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


class Node:
    def __init__(self, ip: str, boots: tuple[str, ...], join: str, stun: tuple[str, ...]) -> None:
        self.ip = ip
        self.boots = boots
        self.join = join
        self.stun = stun
        self.identity = Identity.generate()
        self.svc: Service | None = None
        self.task: asyncio.Task[None] | None = None
        self.pongs: asyncio.Queue[float] = asyncio.Queue()
        self.resolves: list[tuple[float, int | None]] = []

    def config(self) -> ServiceConfig:
        kw: dict[str, Any] = {"stun_servers": self.stun} if self.stun else {}
        return ServiceConfig(
            hosts=(self.ip,), port=0, backup_port=False, identity=self.identity,
            network=NETWORK, connect_timeout=10.0,
            # No LAN beacon, gossip or bootstrap cache: the only crust
            # contact is the one joined (B), none at all for A.
            beacon=False, gossip=False, cache_size=0,
            cache_path=tempfile.mktemp(prefix="crust-dht-agent-cache-"),
            dht=True, dht_publish=bool(self.join), dht_bootstrap=self.boots,
            dht_settings=LAB_SETTINGS, **kw,
        )  # fmt: skip

    async def start(self, *, fresh_identity: bool) -> None:
        old = self.svc.dht.published if self.svc is not None and self.svc.dht else None
        await self.stop()  # the old record withdrawn (up to 2 s): not timed
        t0 = time.monotonic()
        if fresh_identity:
            self.identity = Identity.generate()
        svc = self.svc = Service(self.config())
        await svc.start()
        assert svc.dht is not None
        self._time_resolves(svc.dht)
        self.task = asyncio.create_task(self._events(svc))
        record: Record | None = None
        if self.join:
            contact = await svc.join(self.join)
            # The record is put once the routing table has a node, and again
            # when the contacts change: wait for one the DHT stored that
            # lists the contact (and is newer than the last service's).
            # Up to two puts: the first (before the join) and the one that
            # lists the contact; libtorrent confirms each after its lookup,
            # 15 s when a closed node of an earlier trial is among the
            # closest, hence 60 s.
            end = time.monotonic() + 60
            while time.monotonic() < end:
                r = svc.dht.stored
                if r is not None and any(c.peer_id == contact.id for c in r.contacts):
                    if old is None or r.seq > old.seq:
                        record = r
                        break
                await asyncio.sleep(0.05)
            if record is None:
                out(ev="started", ok=False, error=f"no record stored: {svc.dht.stats()}")
                return
        out(ev="started", ok=True, id=str(svc.id), start_s=time.monotonic() - t0,
            seq=record.seq if record else None,
            endpoints=[list(e) for e in record.endpoints] if record else [],
            contacts=[[str(c.peer_id), *c.address] for c in record.contacts] if record else [],
            )  # fmt: skip

    def _time_resolves(self, directory: Directory) -> None:
        """Time each lookup the service itself makes (connect → resolve)."""
        inner = directory.resolve

        async def timed(peer_id: PeerId, timeout: float = 5.0, *, fresh: bool = False) -> Record:
            t0 = time.monotonic()
            try:
                r = await inner(peer_id, timeout, fresh=fresh)
            except BaseException:
                self.resolves.append((time.monotonic() - t0, None))
                raise
            self.resolves.append((time.monotonic() - t0, r.seq))
            return r

        directory.resolve = timed  # type: ignore[method-assign]

    async def _events(self, svc: Service) -> None:
        async for ev in svc.events():
            if isinstance(ev, NewMessage):
                if ev.data == b"ping":
                    await ev.peer.send(b"pong")
                elif ev.data == b"pong":
                    self.pongs.put_nowait(time.monotonic())

    async def stop(self) -> None:
        if self.svc is not None:
            await self.svc.close()
        if self.task is not None:
            await asyncio.gather(self.task, return_exceptions=True)
        self.svc, self.task = None, None

    async def connect(self, pid: str) -> None:
        assert self.svc is not None
        self.resolves.clear()
        t0 = time.monotonic()
        try:
            peer = await self.svc.connect(PeerId.parse(pid))
            t1 = time.monotonic()
            await peer.send(b"ping")
            t2 = await asyncio.wait_for(self.pongs.get(), 5.0)
        except (ConnectionError, asyncio.TimeoutError, OSError) as e:
            out(ev="result", ok=False, error=str(e) or type(e).__name__,
                resolves=self.resolves, elapsed_s=time.monotonic() - t0)  # fmt: skip
            return
        out(ev="result", ok=True, path=peer.path, connect_s=t1 - t0, first_msg_s=t2 - t0,
            resolves=self.resolves, address=list(peer.address[:2]),
            peers=sorted(str(p.id) for p in self.svc.peers))  # fmt: skip


async def node(ip: str, boots: tuple[str, ...], join: str, stun: tuple[str, ...]) -> None:
    n = Node(ip, boots, join, stun)
    loop = asyncio.get_running_loop()
    out(ev="ready")
    try:
        while True:
            line = await loop.run_in_executor(None, sys.stdin.readline)
            cmd = line.split()
            if not cmd or cmd[0] == "quit":
                return
            if cmd[0] in ("start", "restart"):
                await n.start(fresh_identity=cmd[0] == "start")
            elif cmd[0] == "connect":
                await n.connect(cmd[1])
    finally:
        await n.stop()


def _opt(name: str) -> str:
    return sys.argv[sys.argv.index(name) + 1] if name in sys.argv else ""


if __name__ == "__main__":
    if os.environ.get("CRUST_AGENT_LOG"):
        logging.basicConfig(
            level=logging.DEBUG,
            stream=sys.stderr,
            format="%(relativeCreated)d %(name)s %(message)s",
        )
    if sys.argv[1] == "dht":
        asyncio.run(run_dht(sys.argv[2], int(sys.argv[3])))
    elif sys.argv[1] == "serve":
        asyncio.run(serve(sys.argv[2], int(sys.argv[3])))
    else:
        stun = tuple(s for s in _opt("--stun").split(",") if s)
        asyncio.run(node(sys.argv[2], tuple(sys.argv[3].split(",")), _opt("--join"), stun))
