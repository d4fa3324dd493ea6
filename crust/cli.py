"""The ``crust`` command line (also ``python -m crust``)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
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

    bench = sub.add_parser(
        "bench",
        help="benchmark crust on loopback against raw sockets and aioquic",
        description="Measure crust (UDP and TCP) on loopback beside raw sendmmsg/recvmmsg UDP, "
        "raw kernel TCP, the AEAD alone and aioquic, all in this run; print a table of "
        "figures and ratios and save pytest-benchmark JSON. About 5 minutes; --smoke "
        "runs every case at tiny sizes in seconds (figures meaningless).",
    )
    bench.add_argument("--smoke", action="store_true", help="tiny sizes, one round")
    bench.add_argument("--rounds", type=int, help="rounds per case, median taken (default 3)")
    bench.add_argument(
        "--json", default="crust-bench.json", help="JSON output (default crust-bench.json)"
    )
    bench.add_argument(
        "--only", action="append", metavar="TEXT", help="run cases whose name contains TEXT"
    )
    bench.add_argument(
        "--soak",
        type=float,
        metavar="SECONDS",
        help="instead of the suite: a soak of SECONDS (20 MB/s of mixed priorities and "
        "sizes to a peer frozen 10 s every minute, every message checked; see "
        "crust.bench.soak); exit status 1 on any loss, duplicate or reordering",
    )
    bench.add_argument(
        "--transport", choices=("udp", "tcp"), default="udp", help="the soak's transport"
    )

    node = sub.add_parser("node", help="run a long-lived node, logging its events")
    node.add_argument(
        "--config",
        metavar="FILE",
        help="TOML configuration file (else $CRUST_CONFIG or the user config file); "
        "CRUST_* variables and the options here override it (see `crust config`)",
    )
    node.add_argument("--network", help="network name (default crust)")
    node.add_argument("--host", action="append", help="address to listen on (repeatable)")
    node.add_argument("--port", type=int, help="port, 0 = random (default)")
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

    config = sub.add_parser(
        "config",
        help="print the effective configuration and where each value came from",
        description="Print the effective ServiceConfig: defaults, then the TOML file "
        "(--file, $CRUST_CONFIG or the user config file), then CRUST_* environment "
        "variables, then --set NAME=VALUE (highest).",
    )
    config.add_argument("--file", help="TOML configuration file")
    config.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="override one setting, written as its CRUST_* environment value would be",
    )
    nat = sub.add_parser(
        "nat",
        help="NAT doctor: addresses, STUN mapping/filtering, UPnP, what it means",
        description="Print local addresses, the reflexive address(es) and NAT mapping and "
        "filtering behaviour seen by STUN servers (RFC 5780 tests when the server supports "
        "them), whether a UPnP gateway answers and maps a trial port, and what that means "
        "for connectivity.",
    )
    nat.add_argument(
        "--stun",
        action="append",
        metavar="HOST[:PORT]",
        help="STUN server (repeatable; port 3478 by default; default: the configured "
        "stun_servers)",
    )
    nat.add_argument("--no-upnp", action="store_true", help="skip the UPnP gateway search")
    nat.add_argument("--host", default="0.0.0.0", help="local address to probe from")
    nat.add_argument("--json", action="store_true", help="machine-readable output")

    for name, what in (
        ("send", "send a file to a node by its peer id, through a mutual node"),
        ("recv", "wait for one file from `crust send`, through a mutual node"),
    ):
        t = sub.add_parser(name, help=what, description=what + " (crust.transfer).")
        t.add_argument(
            "--via", required=True, metavar="HOST:PORT", help="node both sides connect to"
        )
        t.add_argument("--network", default="crust", help="network name (default crust)")
        t.add_argument("--host", default="0.0.0.0", help="address to listen on")
        t.add_argument("--identity", help="identity key file (default: a throwaway one)")
        t.add_argument("--json", action="store_true", help="one JSON line, no progress bar")
        if name == "send":
            t.add_argument("--to", required=True, metavar="PEER_ID", help="the receiver's id")
            t.add_argument("file", help="file to send")
        else:
            t.add_argument("--out", default=".", help="directory to save into (default .)")
    return p


def _print_config(args: argparse.Namespace) -> int:
    from crust.config_sources import ENV_PREFIX, load_config  # deferred, as in node
    from crust.errors import ConfigError

    overrides: dict[str, str] = {}
    for item in args.set:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            print(f"crust config: --set {item!r}: expected NAME=VALUE", file=sys.stderr)
            return 2
        overrides[name.strip().lower()] = value
    try:
        loaded = load_config(args.file)
        unknown = set(overrides) - set(loaded.sources)
        if unknown:
            names = ", ".join(sorted(unknown))
            print(f"crust config: unknown setting(s): {names}", file=sys.stderr)
            return 2
        if overrides:
            # --set values are parsed as their CRUST_* variables would be,
            # then applied as arguments (the highest precedence).
            env = {**os.environ, **{ENV_PREFIX + n.upper(): v for n, v in overrides.items()}}
            parsed = load_config(args.file, env=env).config
            loaded = load_config(args.file, **{n: getattr(parsed, n) for n in overrides})
    except ConfigError as exc:
        print(f"crust config: {exc}", file=sys.stderr)
        return 2
    print(loaded.describe())
    return 0


def _run_bench(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from crust.bench.report import json_document, table  # deferred: heavy imports
    from crust.bench.suite import FULL, SMOKE, Suite

    if args.soak is not None:
        return _run_soak(args.soak, args.transport)
    if args.rounds is not None and not 1 <= args.rounds <= 100:
        print(f"crust bench: --rounds must be in 1..100, got {args.rounds}", file=sys.stderr)
        return 2
    suite = Suite(SMOKE if args.smoke else FULL, args.rounds)
    suite.run_all(
        args.only, progress=lambda name: print(f"measuring {name}", file=sys.stderr, flush=True)
    )
    if not suite.outcomes:
        print(f"crust bench: no case matches {args.only}", file=sys.stderr)
        return 2
    print(table(suite), flush=True)
    Path(args.json).write_text(json.dumps(json_document(suite), indent=1) + "\n")
    print(f"\nJSON (pytest-benchmark format): {args.json}", file=sys.stderr)
    failed = [n for n, o in suite.outcomes.items() if o.error and o.error.startswith("failed")]
    return 1 if failed else 0


def _run_soak(seconds: float, transport: str) -> int:
    import asyncio

    from crust.bench.soak import soak

    if seconds < 30:
        print("crust bench: --soak needs at least 30 seconds", file=sys.stderr)
        return 2
    r = asyncio.run(soak(seconds, transport=transport, freeze_every=60.0, freeze_for=10.0))
    print(
        f"soak {transport} {seconds:.0f} s: {r.messages} messages, {r.bytes / 1e9:.2f} GB, "
        f"per priority sent {r.sent} received {r.received}, {r.freezes} freezes of 10 s, "
        f"resumed within {r.resume_max:.3f} s, {len(r.errors)} errors"
    )
    for e in r.errors[:20]:
        print(f"  {e}")
    return 1 if r.errors else 0


def _check(name: str, value: float, lo: float, hi: float) -> str | None:
    if lo <= value <= hi:
        return None
    return f"{name} must be in {lo}..{hi}, got {value}"


async def _run_node(args: argparse.Namespace) -> int:
    # Deferred imports keep `crust --version` fast.
    from pathlib import Path

    from crust import Service, load_config  # deferred, as above
    from crust.errors import ConfigError

    # Only options given on the command line override the file/environment.
    given = {
        "network": args.network,
        "hosts": tuple(args.host) if args.host else None,
        "port": args.port,
        "identity_path": Path(args.identity) if args.identity else None,
    }
    try:
        cfg = load_config(args.config, **{k: v for k, v in given.items() if v is not None}).config
    except ConfigError as exc:
        print(f"crust node: {exc}", file=sys.stderr)
        return 2
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
    if args.command == "config":
        return _print_config(args)
    if args.command == "bench":
        return _run_bench(args)
    if args.command in ("send", "recv"):
        from crust.transfer import run_recv, run_send  # deferred, as above

        return run_send(args) if args.command == "send" else run_recv(args)
    if args.command == "nat":
        from crust.nat.doctor import run_cli  # deferred, as above

        return run_cli(args)
    if args.command == "node":
        if args.port is not None and (bad := _check("--port", args.port, 0, 65535)) is not None:
            print(f"crust node: {bad}", file=sys.stderr)
            return 2
        try:
            return asyncio.run(_run_node(args))
        except KeyboardInterrupt:
            return 0
    return 2
