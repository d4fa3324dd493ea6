"""LAN chat: nodes on one network segment find each other with the LAN
beacon and talk; a bootstrap node (bootstrap_node.py) joins the ones the
beacon cannot reach.

    python lan_chat.py NAME [--host ADDR] [--contact HOST:PORT]

Each line typed goes to everyone connected; end with Ctrl-D.
"""

import argparse
import asyncio
import contextlib
import sys

import crust


async def chat(svc: crust.Service, name: str) -> None:
    """Send every line of standard input to every connected peer."""
    stdin = asyncio.StreamReader()
    transport, _ = await asyncio.get_running_loop().connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin
    )
    try:
        while line := await stdin.readline():
            for peer in svc.peers:
                await peer.send(f"{name}: {line.decode().rstrip()}".encode())
    finally:
        transport.close()


async def show(svc: crust.Service) -> None:
    async for ev in svc.events():
        if isinstance(ev, crust.LanPeerFound):
            print(f"* found {ev.peer_id.short} on the LAN", flush=True)
        elif isinstance(ev, crust.NewPeer):
            svc.maintain(ev.peer)  # a chat keeps its connections
            print(f"* {ev.peer.id.short} joined over {ev.path}", flush=True)
        elif isinstance(ev, crust.LostPeer):
            print(f"* {ev.peer.id.short} left: {ev.reason}", flush=True)
        elif isinstance(ev, crust.NewMessage):
            print(ev.data.decode(errors="replace"), flush=True)


async def main(args: argparse.Namespace) -> None:
    cfg = crust.ServiceConfig(
        network="lan-chat",
        hosts=(args.host,),
        identity=crust.Identity.generate(),
        beacon=True,  # the default: announce and listen on the LAN
        contacts=tuple(args.contact),
    )
    async with crust.Service(cfg) as svc:
        print(f"{args.name} is {svc.id.short}", flush=True)
        shown = asyncio.create_task(show(svc))
        await chat(svc, args.name)
        shown.cancel()


parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("name")
parser.add_argument("--host", default="0.0.0.0", help="address to listen on")
parser.add_argument("--contact", action="append", default=[], metavar="HOST:PORT")
with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C leaves too
    asyncio.run(main(parser.parse_args()))
