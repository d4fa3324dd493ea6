"""``crust demo``: local nodes connect, say hello and move a blob.

Three nodes start on 127.0.0.1 with random ports. alice dials bob (TCP wins
the race) and carol (carol listens on UDP only, so that connection is
reliable UDP); every pair says "hello world" both ways; then alice sends
each of them the same blob, with a progress bar, and each checks the
SHA-256. Nothing leaves the machine.
"""

from __future__ import annotations

import asyncio
import hashlib
import sys
import time
from dataclasses import dataclass
from typing import TextIO

from crust.config import ServiceConfig
from crust.events import NewMessage, NewPeer
from crust.identity import Identity
from crust.output import human_duration, human_rate, human_size
from crust.paths import PathName
from crust.service import Service

__all__ = ["DemoReport", "run_demo"]


@dataclass(frozen=True, slots=True)
class DemoReport:
    """What the demo measured, per receiving node."""

    hellos: int
    paths: dict[str, PathName]
    throughput_mb_s: dict[str, float]
    blob_ok: dict[str, bool]

    @property
    def ok(self) -> bool:
        return self.hellos == 4 and all(self.blob_ok.values()) and len(self.blob_ok) == 2


def _bar(done: int, total: int, width: int = 24) -> str:
    filled = width * done // total if total else width
    return "[" + "#" * filled + "." * (width - filled) + f"] {100 * done // max(total, 1):3d}%"


async def _demo(blob_mb: int, out: TextIO) -> DemoReport:
    network = "crust-demo"

    def mk(**kw: bool) -> Service:
        # Throwaway nodes on random ports: a bootstrap cache would only make
        # the next demo dial this one's long-gone nodes.
        cfg = ServiceConfig(
            network=network, identity=Identity.generate(), backup_port=False, cache_size=0
        )
        return Service(cfg.replace(**kw))

    async with mk() as alice, mk() as bob, mk(tcp=False) as carol:
        names = {alice.id: "alice", bob.id: "bob", carol.id: "carol"}
        for svc in (alice, bob, carol):
            print(
                f"{names[svc.id]:>5}: id {svc.id.short}..  listening on "
                f"{', '.join(f'{h}:{p}' for h, p in svc.endpoints)}",
                file=out,
            )

        inbox: dict[str, asyncio.Queue[NewMessage]] = {}
        peers_of: dict[str, dict[str, object]] = {"bob": {}, "carol": {}}

        async def pump(svc: Service, name: str) -> None:
            inbox[name] = asyncio.Queue()
            async for ev in svc.events():
                if isinstance(ev, NewPeer):
                    peers_of.setdefault(name, {})[names.get(ev.peer.id, "?")] = ev.peer
                elif isinstance(ev, NewMessage):
                    inbox[name].put_nowait(ev)

        pumps = [
            asyncio.create_task(pump(s, n))
            for s, n in ((alice, "alice"), (bob, "bob"), (carol, "carol"))
        ]
        await asyncio.sleep(0)
        to_bob = await alice.connect(bob.endpoints[0])
        to_carol = await alice.connect(carol.endpoints[0])
        paths = {"bob": to_bob.path, "carol": to_carol.path}
        print(f"alice -> bob: {to_bob.path}, alice -> carol: {to_carol.path}", file=out)

        hellos = 0
        for peer, name in ((to_bob, "bob"), (to_carol, "carol")):
            await peer.send(f"hello world from alice to {name}".encode())
            msg = await asyncio.wait_for(inbox[name].get(), 10)
            print(f"{name:>5} got: {msg.data.decode()}", file=out)
            hellos += 1
            await msg.peer.send(f"hello world from {name} to alice".encode())
            back = await asyncio.wait_for(inbox["alice"].get(), 10)
            print(f"alice got: {back.data.decode()}", file=out)
            hellos += 1

        chunk = 1 << 20
        blob = hashlib.shake_256(b"crust demo blob").digest(blob_mb * chunk)
        want = hashlib.sha256(blob).hexdigest()
        total = len(blob)
        got = {"bob": 0, "carol": 0}
        digests = {"bob": hashlib.sha256(), "carol": hashlib.sha256()}
        start = time.perf_counter()
        done_at: dict[str, float] = {}

        async def receive(name: str) -> None:
            while got[name] < total:
                msg = await inbox[name].get()
                digests[name].update(msg.data)
                got[name] += len(msg.data)
            done_at[name] = time.perf_counter()

        async def send(peer: object, name: str) -> None:
            view = memoryview(blob)
            for i in range(0, total, chunk):
                await peer.send(view[i : i + chunk], 1)  # type: ignore[attr-defined]

        work = [
            asyncio.create_task(c)
            for c in (
                send(to_bob, "bob"),
                send(to_carol, "carol"),
                receive("bob"),
                receive("carol"),
            )
        ]
        print(f"alice sends {blob_mb} MB to bob and to carol:", file=out)
        # Bars only on a terminal: in a pipe or a log the redraws are noise.
        bars = out.isatty()
        while not all(t.done() for t in work[2:]):
            await asyncio.sleep(0.1)
            if bars:
                line = "  ".join(f"{n} {_bar(got[n], total)}" for n in ("bob", "carol"))
                print("\r" + line, end="", file=out, flush=True)
        if bars:
            print(file=out)
        for t in work:
            await t
        rates = {n: total / (done_at[n] - start) / 1e6 for n in got}
        ok = {n: digests[n].hexdigest() == want for n in got}
        for n in got:
            print(
                f"{n:>5}: {human_size(total)} in {human_duration(done_at[n] - start)} = "
                f"{human_rate(rates[n] * 1e6)} over {paths[n]}, sha256 "
                f"{'ok' if ok[n] else 'MISMATCH'} ({want[:16]}...)",
                file=out,
            )
        for t in pumps:
            t.cancel()
        return DemoReport(hellos, paths, rates, ok)


def run_demo(*, blob_mb: int = 100, out: TextIO = sys.stdout) -> DemoReport:
    """Run the local demo and return what it measured."""
    return asyncio.run(_demo(blob_mb, out))
