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
        peer = await svc.accept()  # the next peer that dials us
        print(f"{peer.id.short} connected over {peer.path}", flush=True)
        msg = await peer.recv()
        print(f"{peer.id.short} says {msg.data.decode()!r}", flush=True)
        await peer.send(b"hello to you too")


async def dial(address: str) -> None:
    # A throwaway identity: the listener on this machine already uses the
    # one kept in the user data directory, and a node never connects to itself.
    cfg = crust.ServiceConfig(network="hello", identity=crust.Identity.generate())
    async with crust.Service(cfg) as svc:
        peer = await svc.connect(address)
        print(f"connected to {peer.id} over {peer.path}")
        await peer.send(b"hello")
        answer = await peer.recv()
        print(f"{peer.id.short} answers {answer.data.decode()!r}")


asyncio.run(dial(sys.argv[1]) if len(sys.argv) > 1 else listen())
