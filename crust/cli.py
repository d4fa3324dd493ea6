"""The ``crust`` command line (also ``python -m crust``)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence

from crust._version import __version__

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="crust", description="Reliable, encrypted peer-to-peer connections."
    )
    p.add_argument("--version", action="version", version=f"crust {__version__}")
    p.add_argument(
        "--log-level",
        default="WARNING",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="level of the crust loggers (default: WARNING)",
    )
    sub = p.add_subparsers(dest="command", required=True)

    demo = sub.add_parser(
        "demo",
        help="local nodes connect over TCP and UDP, say hello and move a blob",
        description="Three local nodes connect (TCP and reliable UDP), say hello both ways "
        "and move a blob with a progress bar. --simulated instead runs two engines over "
        "a simulated lossy path.",
    )
    demo.add_argument("--mb", type=int, default=100, help="blob size in MB (default 100)")
    demo.add_argument(
        "--simulated", action="store_true", help="use the simulated network instead of sockets"
    )
    demo.add_argument("--mbit", type=int, default=50, help="simulated rate, Mbit/s (default 50)")
    demo.add_argument("--rtt-ms", type=int, default=30, help="simulated RTT, ms (default 30)")
    demo.add_argument("--loss", type=float, default=0.01, help="simulated loss (default 0.01)")
    demo.add_argument("--seed", type=int, default=1, help="simulation seed (default 1)")

    node = sub.add_parser("node", help="run a long-lived node, logging its events")
    node.add_argument("--network", default="crust", help="network name (default crust)")
    node.add_argument("--host", action="append", help="address to listen on (repeatable)")
    node.add_argument("--port", type=int, default=0, help="port, 0 = random (default)")
    node.add_argument(
        "--connect", action="append", default=[], metavar="HOST:PORT", help="peer to dial"
    )
    node.add_argument("--identity", help="identity key file (default: user data dir)")
    # Also accepted after `node` (`crust node --log-level INFO`); SUPPRESS
    # keeps the top-level value unless it is given here.
    node.add_argument(
        "--log-level",
        default=argparse.SUPPRESS,
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="level of the crust loggers (default: WARNING)",
    )
    return p


def _check(name: str, value: float, lo: float, hi: float) -> str | None:
    if lo <= value <= hi:
        return None
    return f"{name} must be in {lo}..{hi}, got {value}"


async def _run_node(args: argparse.Namespace) -> int:
    # Deferred imports keep `crust --version` fast.
    from pathlib import Path

    from crust import Service, ServiceConfig  # deferred, as above

    cfg = ServiceConfig(
        network=args.network,
        hosts=tuple(args.host or ["127.0.0.1"]),
        port=args.port,
        identity_path=Path(args.identity) if args.identity else None,
    )
    async with Service(cfg) as svc:
        print(f"node {svc.id}", flush=True)
        for host, port in svc.endpoints:
            print(f"listening on {host}:{port} (tcp+udp)", flush=True)
        for target in args.connect:
            try:
                peer = await svc.connect(target)
                svc.maintain(peer)
            except (ConnectionError, ValueError) as e:
                print(f"connect {target}: {e}", file=sys.stderr, flush=True)
        async for ev in svc.events():
            logging.getLogger("crust.node").warning("%s", ev)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(name)s %(message)s")
    if args.command == "demo":
        problems = [
            _check("--mb", args.mb, 1, 10_000),
            _check("--mbit", args.mbit, 1, 100_000),
            _check("--rtt-ms", args.rtt_ms, 1, 10_000),
            _check("--loss", args.loss, 0.0, 0.49),
        ]
        for why in filter(None, problems):
            print(f"crust demo: {why}", file=sys.stderr)
            return 2
        if args.simulated:
            from crust.sim_demo import run_demo as run_sim

            r = run_sim(
                blob_mb=args.mb,
                bandwidth_mbit=args.mbit,
                rtt_ms=args.rtt_ms,
                loss=args.loss,
                seed=args.seed,
            )
            return 0 if r.hello_ok and r.blob_ok else 1
        from crust.demo import run_demo

        return 0 if run_demo(blob_mb=args.mb).ok else 1
    if args.command == "node":
        if (bad := _check("--port", args.port, 0, 65535)) is not None:
            print(f"crust node: {bad}", file=sys.stderr)
            return 2
        try:
            return asyncio.run(_run_node(args))
        except KeyboardInterrupt:
            return 0
    return 2
