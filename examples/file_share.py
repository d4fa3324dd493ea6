"""Share a file with a peer named by its peer id, with progress and a
SHA-256 check.

    python file_share.py send FILE
        shares FILE; prints the command the receiver runs (peer id, address)
    python file_share.py receive PEER_ID HOST:PORT [DIR]
        connects to that peer -- the handshake proves it holds PEER_ID --
        fetches the file into DIR (default .), verifies its SHA-256
"""

import asyncio
import hashlib
import json
import sys
from pathlib import Path

import crust

CHUNK = 1 << 20  # one message per MiB: the engine carries up to 8 MiB each


async def send(path: Path) -> None:
    data = path.read_bytes()
    header = {"name": path.name, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    cfg = crust.ServiceConfig(network="file-share", identity=crust.Identity.generate())
    async with crust.Service(cfg) as svc:
        host, port = svc.endpoints[0]
        print(f"python file_share.py receive {svc.id} {host}:{port}", flush=True)
        async for ev in svc.events():
            if isinstance(ev, crust.NewPeer):
                peer = ev.peer
                # One priority for header and chunks: messages of one priority
                # arrive in order (different priorities may overtake).
                await peer.send(json.dumps(header).encode(), priority=1)
                for offset in range(0, len(data), CHUNK):  # waits while the buffer is full
                    await peer.send(data[offset : offset + CHUNK], priority=1)
            elif isinstance(ev, crust.NewMessage):  # the receiver's verdict
                print(f"{ev.peer.id.short}: {ev.data.decode()}")
                return


async def receive(peer_id: str, address: str, folder: Path) -> bool:
    cfg = crust.ServiceConfig(network="file-share", identity=crust.Identity.generate())
    async with crust.Service(cfg) as svc:
        host, _, port = address.rpartition(":")
        peer = await svc.connect((host, int(port)), peer_id=crust.PeerId.parse(peer_id))
        header: dict[str, object] = {}
        digest, got, out = hashlib.sha256(), 0, None
        async for ev in svc.events():
            if not isinstance(ev, crust.NewMessage):
                continue
            if not header:  # the first message describes the file
                header = json.loads(ev.data)
                out = (folder / Path(str(header["name"])).name).open("wb")
                continue
            digest.update(ev.data)
            out.write(ev.data)
            got += len(ev.data)
            size = int(str(header["size"]))
            print(f"\r{header['name']}: {got * 100 // max(size, 1):3d}% of {size} bytes", end="")
            if got >= size:
                break
        out.close()
        ok = digest.hexdigest() == header["sha256"]
        print(f"\nsha256 {'ok' if ok else 'MISMATCH'}: {digest.hexdigest()}")
        await peer.send(b"sha256 ok" if ok else b"sha256 mismatch")
        await svc.disconnect(peer)  # delivers the verdict first
        return ok


if len(sys.argv) == 3 and sys.argv[1] == "send":
    asyncio.run(send(Path(sys.argv[2])))
elif len(sys.argv) in (4, 5) and sys.argv[1] == "receive":
    folder = Path(sys.argv[4] if len(sys.argv) == 5 else ".")
    sys.exit(0 if asyncio.run(receive(sys.argv[2], sys.argv[3], folder)) else 1)
else:
    sys.exit(__doc__)
