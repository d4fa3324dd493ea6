"""Echo: a server sends every message back; a client checks the echo."""

import asyncio

import crust


async def main() -> None:
    server = crust.Service(network="echo", identity=crust.Identity.generate())
    client = crust.Service(network="echo", identity=crust.Identity.generate())
    async with server, client:
        peer = await client.connect(server.endpoints[0])
        await peer.send(b"hello, echo")
        incoming = await server.accept()  # the client, as the server sees it
        msg = await incoming.recv()
        await incoming.send(msg.data)  # the echo
        echo = await peer.recv()
        print("echoed:", echo.data.decode())


asyncio.run(main())
