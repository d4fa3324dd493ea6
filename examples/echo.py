"""Echo: a server sends every message back; a client checks the echo."""

import asyncio

import crust


def messages(svc: crust.Service):  # the messages a service receives, in order
    return (ev async for ev in svc.events() if isinstance(ev, crust.NewMessage))


async def main() -> None:
    server = crust.Service(network="echo", identity=crust.Identity.generate())
    client = crust.Service(network="echo", identity=crust.Identity.generate())
    async with server, client:
        peer = await client.connect(server.endpoints[0])
        await peer.send(b"hello, echo")
        msg = await anext(messages(server))
        await msg.peer.send(msg.data)  # the echo
        echo = await anext(messages(client))
        print("echoed:", echo.data.decode())


asyncio.run(main())
