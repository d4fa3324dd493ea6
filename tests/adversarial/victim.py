"""A crust node in a child process, for attacks that must see its stderr
or run it under a descriptor limit:

    python victim.py [--nofile N] [--tcp-handshake-timeout S] [--udp]

Prints ``READY port peer_id`` once listening on 127.0.0.1, serves until
its stdin closes, then prints its ``stats()`` as one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys

import crust


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nofile", type=int, default=0)
    ap.add_argument("--tcp-handshake-timeout", type=float, default=None)
    ap.add_argument("--udp", action="store_true")
    args = ap.parse_args()
    if args.nofile:
        resource.setrlimit(resource.RLIMIT_NOFILE, (args.nofile, args.nofile))
    extra = {}
    if args.tcp_handshake_timeout is not None:
        extra["tcp_handshake_timeout"] = args.tcp_handshake_timeout
    cfg = crust.ServiceConfig(
        network="adversarial",
        hosts=("127.0.0.1",),
        backup_port=False,
        udp=args.udp,
        beacon=False,
        identity=crust.Identity.generate(),
        **extra,
    )
    loop = asyncio.get_running_loop()
    async with crust.Service(cfg) as svc:
        print("READY", svc.endpoints[0][1], svc.id, flush=True)
        await loop.run_in_executor(None, sys.stdin.read)
        print(json.dumps(svc.stats()), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
