"""A bootstrap node for a small network: a node at a well-known address
that the others list in ``contacts``. It accepts them, tells each about
the others (contact gossip) so they connect among themselves, and logs
who comes and goes with a line of statistics.

    python bootstrap_node.py [--host 0.0.0.0] [--port 5484] [--network lan-chat]

Nodes join with ``ServiceConfig(contacts=("HOST:5484",))`` (lan_chat.py
--contact HOST:5484). Ctrl-C stops it.
"""

import argparse
import asyncio
import contextlib
import json
import logging

import crust


async def main(args: argparse.Namespace) -> None:
    cfg = crust.ServiceConfig(
        network=args.network,
        hosts=(args.host,),
        port=args.port,
        backup_port=False,  # one well-known address
        identity=crust.Identity.generate(),
        accept_bootstrap=True,
        bootstrap_peers=1024,  # keep everyone who comes
        prune_after=3600.0,
    )
    async with crust.Service(cfg) as svc:
        host, port = svc.endpoints[0]
        print(f"bootstrap node {svc.id} at {host}:{port}", flush=True)
        async for ev in svc.events():
            if isinstance(ev, crust.NewPeer):
                svc.maintain(ev.peer)
                print(f"+ {ev.peer.id.short} from {ev.peer.address[0]}:{ev.peer.address[1]}")
            elif isinstance(ev, crust.LostPeer):
                print(f"- {ev.peer.id.short}: {ev.reason}")
            else:
                continue
            stats = svc.stats()
            summary = {k: stats[k] for k in ("peers", "connections", "traffic")}
            print(f"  stats {json.dumps(summary)}", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=5484)
    parser.add_argument("--network", default="lan-chat")
    parser.add_argument("--log-level", default="WARNING")
    args = parser.parse_args()
    logging.basicConfig(level=args.log_level)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main(args))
