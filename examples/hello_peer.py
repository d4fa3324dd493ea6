"""Two peers in two processes.

    python hello_peer.py                  # listens, prints its address, answers
    python hello_peer.py 127.0.0.1:PORT   # dials that address, says hello
"""

import asyncio
import sys

import crust


async def listen() -> None:
    async with crust.Service(crust.ServiceConfig(network="hello")) as svc:
        host, port = svc.endpoints[0]
        print(f"listening on {host}:{port} as {svc.id}", flush=True)
        async for ev in svc.events():
            if isinstance(ev, crust.NewPeer):
                print(f"{ev.peer.id.short} connected over {ev.path}", flush=True)
            elif isinstance(ev, crust.NewMessage):
                print(f"{ev.peer.id.short} says {ev.data.decode()!r}", flush=True)
                await ev.peer.send(b"hello to you too")
                return


async def dial(address: str) -> None:
    # A throwaway identity: the listener on this machine already uses the
    # one kept in the user data directory, and a node never connects to itself.
    cfg = crust.ServiceConfig(network="hello", identity=crust.Identity.generate())
    async with crust.Service(cfg) as svc:
        peer = await svc.connect(address)
        print(f"connected to {peer.id} over {peer.path}")
        await peer.send(b"hello")
        async for ev in svc.events():
            if isinstance(ev, crust.NewMessage):
                print(f"{peer.id.short} answers {ev.data.decode()!r}")
                return


asyncio.run(dial(sys.argv[1]) if len(sys.argv) > 1 else listen())
