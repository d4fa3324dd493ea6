"""Echo: a server sends every message back; a client checks the echo."""

import asyncio

import crust


async def main() -> None:
    cfg = crust.ServiceConfig(network="echo")
    async with crust.Service(cfg, identity=crust.Identity.generate()) as server, crust.Service(
        cfg, identity=crust.Identity.generate()
    ) as client:
        peer = await client.connect(server.endpoints[0])
        await peer.send(b"hello, echo")
        async for ev in server.events():
            if isinstance(ev, crust.NewMessage):
                await ev.peer.send(ev.data)  # the echo
                break
        async for ev in client.events():
            if isinstance(ev, crust.NewMessage):
                print("echoed:", ev.data.decode())
                break


asyncio.run(main())
