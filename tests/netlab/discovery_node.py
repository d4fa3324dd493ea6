"""A crust node for the discovery lab tests, configured by a TOML file.

    python discovery_node.py CONFIG.toml SEED_HEX

Prints one line per event, times in ms since the process started:
``READY <id> <host:port> <ms>``, ``LAN <id> <ms>``, ``PEER <id> <in|out> <ms>``,
``BOOT <id> <source> <ms>``, ``ACCEPT <id> <ms>``, ``FAILED <tried> <ms>``,
``LOST <id> <ms>``, and after each LAN line ``ONLAN <n>``
(``len(svc.peers_on_lan())``). SIGTERM closes the service gracefully (the bootstrap
cache is flushed) and exits.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import time

T0 = time.monotonic()

import crust  # noqa: E402 - T0 includes the import, as a real start does


def _ms() -> int:
    return int((time.monotonic() - T0) * 1000)


async def main(config_path: str, seed: str) -> None:
    cfg = crust.load_config(config_path, identity=crust.Identity.from_seed(bytes.fromhex(seed)))
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with crust.Service(cfg.config) as svc:
        host, port = svc.endpoints[0]
        print(f"READY {svc.id} {host}:{port} {_ms()}", flush=True)

        async def report() -> None:
            async for ev in svc.events():
                if isinstance(ev, crust.LanPeerFound):
                    print(f"LAN {ev.peer_id} {_ms()}", flush=True)
                    print(f"ONLAN {len(svc.peers_on_lan())}", flush=True)
                elif isinstance(ev, crust.NewPeer):
                    way = "in" if ev.incoming else "out"
                    print(f"PEER {ev.peer.id} {way} {_ms()}", flush=True)
                elif isinstance(ev, crust.BootstrapConnect):
                    print(f"BOOT {ev.peer.id} {ev.source} {_ms()}", flush=True)
                elif isinstance(ev, crust.BootstrapAccept):
                    print(f"ACCEPT {ev.peer.id} {_ms()}", flush=True)
                elif isinstance(ev, crust.BootstrapFailed):
                    print(f"FAILED {ev.tried} {_ms()}", flush=True)
                elif isinstance(ev, crust.LostPeer):
                    print(f"LOST {ev.peer.id} {_ms()}", flush=True)

        task = asyncio.create_task(report())
        await stop.wait()
        task.cancel()
    print("CLOSED", flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
