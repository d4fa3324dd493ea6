"""The ``crust`` command line (also ``python -m crust``)."""

from __future__ import annotations

import argparse
import asyncio
import difflib
import json
import logging
import re
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from crust._version import __version__
from crust.errors import CrustError

__all__ = ["main"]


class _Parser(argparse.ArgumentParser):
    """argparse, with a usage error on one line (not the whole usage
    first) and the close option or command names suggested."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {self._suggest(message)} (see {self.prog} --help)\n")

    def _suggest(self, message: str) -> str:
        if m := re.match(r"unrecognized arguments: (\S+)", message):
            # The top parser reports the subcommand's unknown options:
            # suggest from every option of every parser.
            word = m.group(1).split("=", 1)[0]
            close = difflib.get_close_matches(word, sorted(_all_options(self)), n=2)
            if close:
                return f"unknown option {word}; did you mean {' or '.join(close)}?"
            return f"unknown option {word}"
        if m := re.match(r"argument (\S+): invalid choice: '([^']*)'", message):
            choices = [a for act in self._actions for a in (act.choices or ())]
            close = difflib.get_close_matches(m.group(2), [str(c) for c in choices], n=2)
            if close:
                return f"{m.group(1)}: unknown {m.group(2)!r}; did you mean {' or '.join(close)}?"
        return message


def _all_options(parser: argparse.ArgumentParser) -> set[str]:
    out: set[str] = set()
    for action in parser._actions:
        out.update(s for s in action.option_strings if s.startswith("--"))
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                out |= _all_options(child)
    return out


def _port(text: str) -> int:
    """``--port``: the configuration's own rule, so both say the same."""
    from crust.config import port_problem

    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if (why := port_problem(port)) is not None:
        raise argparse.ArgumentTypeError(why)
    return port


def _stun_server(text: str) -> str:
    """``--stun HOST[:PORT]`` as a ``stun_servers`` entry (port 3478 by
    default), checked now so a typo is a usage error, not a silent NAT
    that is never classified."""
    from crust.asyncio.doctor import parse_server

    try:
        host, port = parse_server(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _add_stun(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--stun",
        action="append",
        type=_stun_server,
        metavar="HOST[:PORT]",
        help="STUN server to learn our public address and NAT type from (repeatable; "
        "port 3478 by default; two tell a symmetric NAT apart; replaces stun_servers)",
    )


def _add_config(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config",
        metavar="FILE",
        help="TOML configuration file (else $CRUST_CONFIG or the user config file); "
        "CRUST_* variables and the options here override it (see `crust config`)",
    )


def _add_common(p: argparse.ArgumentParser, *, top: bool) -> None:
    """Options every command takes, before or after its name (after it,
    SUPPRESS keeps the value given before unless repeated)."""
    default: object = argparse.SUPPRESS
    p.add_argument(
        "--log-level",
        default="WARNING" if top else default,
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="level of the crust loggers (default: WARNING)",
    )
    p.add_argument(
        "--debug",
        action="store_true",
        default=False if top else default,
        help="show the traceback of an error instead of one line",
    )


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="crust", description="Reliable, encrypted peer-to-peer connections.")
    p.add_argument("--version", action="version", version=f"crust {__version__}")
    _add_common(p, top=True)
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
        "figures (min, median and max over the rounds, and their spread) and ratios (each "
        "baseline runs just before each round it is compared with; median of the "
        "per-round ratios) and save pytest-benchmark JSON. About 6 minutes; --smoke "
        "runs every case at tiny sizes in seconds (figures meaningless); --compare "
        "prints each ratio's change against an earlier run.",
    )
    bench.add_argument("--smoke", action="store_true", help="tiny sizes, one round")
    bench.add_argument("--rounds", type=int, help="rounds per case (default 3)")
    bench.add_argument(
        "--json", default="crust-bench.json", help="JSON output (default crust-bench.json)"
    )
    bench.add_argument(
        "--only", action="append", metavar="TEXT", help="run cases whose name contains TEXT"
    )
    bench.add_argument(
        "--compare",
        nargs="+",
        metavar="JSON",
        help="OLD.json: run, then print each ratio before and after and the change in %%; "
        "OLD.json NEW.json: compare two earlier runs without running",
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

    node = sub.add_parser(
        "node",
        help="run a long-lived node, printing its events",
        description="Run a node until Ctrl-C: print its id and endpoints, then one line "
        "per event (--json: one JSON object per line).",
    )
    _add_config(node)
    node.add_argument("--network", help="network name (default crust)")
    node.add_argument("--host", action="append", help="address to listen on (repeatable)")
    node.add_argument("--port", type=_port, help="port: 0 = random (default), else 1025..65535")
    node.add_argument(
        "--connect",
        action="append",
        default=[],
        type=_connect_target,
        metavar="HOST:PORT|PEER_ID",
        help="peer to dial (repeatable); the node exits if it cannot",
    )
    node.add_argument("--identity", help="identity key file (default: user data dir)")
    _add_stun(node)
    node.add_argument(
        "--json", action="store_true", help="print events as JSON lines (one object per event)"
    )
    node.add_argument(
        "--metrics-port",
        type=int,
        metavar="PORT",
        help="serve the stats for Prometheus on this port (needs crust[metrics])",
    )
    node.add_argument(
        "--metrics-host",
        default="127.0.0.1",
        help="address of the metrics server (default 127.0.0.1)",
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
    config.add_argument(
        "--format",
        choices=["toml", "json"],
        default="toml",
        help="toml (default: a valid config file, sources as comments) or json",
    )
    nat = sub.add_parser(
        "nat",
        help="NAT doctor: addresses, STUN mapping/filtering, UPnP, PCP/NAT-PMP, what it means",
        description="Print local addresses, the reflexive address(es) and NAT mapping and "
        "filtering behaviour seen by STUN servers (RFC 5780 tests when the server supports "
        "them), whether a UPnP gateway answers and maps a trial port, whether the default "
        "gateway maps one by PCP or NAT-PMP, which protocol a node would map its ports with, "
        "and what that means for connectivity.",
    )
    nat.add_argument(
        "--stun",
        action="append",
        metavar="HOST[:PORT]",
        help="STUN server (repeatable; port 3478 by default; default: the configured stun_servers)",
    )
    nat.add_argument(
        "--via",
        action="append",
        metavar="HOST:PORT",
        help="crust node to ask where it sees us, on both of its ports (repeatable); "
        "tells a symmetric NAT apart without STUN",
    )
    nat.add_argument("--no-upnp", action="store_true", help="skip the UPnP gateway search")
    nat.add_argument(
        "--no-natpmp", action="store_true", help="skip the PCP/NAT-PMP trial mapping"
    )
    nat.add_argument(
        "--gateway",
        metavar="HOST[:PORT]",
        help="where PCP/NAT-PMP ask (default: the default route's gateway, port 5351)",
    )
    nat.add_argument("--host", default="0.0.0.0", help="local address to probe from")
    nat.add_argument("--json", action="store_true", help="machine-readable output")

    resolve = sub.add_parser(
        "resolve",
        help="look a peer up in the DHT: its signed endpoint record",
        description="Find PEER_ID's endpoint record in the BitTorrent Mainline DHT "
        "(BEP 44, verified: signature, key, sequence number, expiry) and print its "
        "endpoints and contacts. Uses dht_bootstrap, dht_port and dht_settings from the "
        "configuration; publishes nothing.",
    )
    resolve.add_argument("peer_id", metavar="PEER_ID", help="the peer's id")
    resolve.add_argument("--config", metavar="FILE", help="TOML configuration file")
    resolve.add_argument(
        "--timeout", type=float, default=10.0, help="seconds to look (default 10)"
    )
    resolve.add_argument("--json", action="store_true", help="one JSON object")

    for name, what in (
        ("send", "send a file to a node by its peer id, through a mutual node"),
        ("recv", "wait for one file from `crust send`, through a mutual node"),
    ):
        t = sub.add_parser(name, help=what, description=what + " (crust.transfer).")
        t.add_argument(
            "--via", required=True, metavar="HOST:PORT", help="node both sides connect to"
        )
        _add_config(t)
        t.add_argument("--network", help="network name (default crust)")
        t.add_argument(
            "--host", action="append", help="address to listen on (repeatable; default 0.0.0.0)"
        )
        t.add_argument("--identity", help="identity key file (default: a throwaway one)")
        _add_stun(t)
        t.add_argument("--json", action="store_true", help="one JSON line, no progress bar")
        if name == "send":
            t.add_argument("--to", required=True, metavar="PEER_ID", help="the receiver's id")
            t.add_argument("file", help="file to send")
        else:
            t.add_argument("--out", default=".", help="directory to save into (default .)")
            t.add_argument(
                "--from",
                dest="sender",
                metavar="PEER_ID",
                help="accept a file only from this peer (others are refused)",
            )
            t.add_argument(
                "--yes",
                action="store_true",
                help="accept without asking (needed when stdin is not a terminal)",
            )
    for child in sub.choices.values():
        _add_common(child, top=False)
    return p


def _print_config(args: argparse.Namespace) -> int:
    from crust.config_sources import load_config, parse_setting  # deferred, as in node

    overrides: dict[str, Any] = {}
    for item in args.set:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            print(f"crust config: --set {item!r}: expected NAME=VALUE", file=sys.stderr)
            return 2
        key = name.strip().lower()
        # Written as the CRUST_* variable would be, applied as an argument
        # (the highest precedence); errors name --set, not the variable.
        overrides[key] = parse_setting(key, value, "--set")
    loaded = load_config(args.file, **overrides)
    if args.format == "json":
        print(json.dumps(loaded.to_json(), indent=1))
    else:
        print(loaded.describe())
    return 0


def _run_bench(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from crust.bench import compare
    from crust.bench.report import json_document, table  # deferred: heavy imports
    from crust.bench.suite import FULL, SMOKE, Suite

    if args.soak is not None:
        return _run_soak(args.soak, args.transport)
    if args.rounds is not None and not 1 <= args.rounds <= 100:
        print(f"crust bench: --rounds must be in 1..100, got {args.rounds}", file=sys.stderr)
        return 2
    old = None
    if args.compare is not None:
        if len(args.compare) > 2:
            print("crust bench: --compare takes OLD.json [NEW.json]", file=sys.stderr)
            return 2
        try:
            old = compare.load(args.compare[0])
            new = compare.load(args.compare[1]) if len(args.compare) == 2 else None
        except (OSError, ValueError, KeyError) as e:
            print(f"crust bench: --compare: {e}", file=sys.stderr)
            return 2
        if new is not None:
            print(compare.text(old, new))
            return 0
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
    if old is not None:
        print("\n" + compare.text(old, compare.load(args.json)), flush=True)
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


def _connect_target(text: str) -> object:
    """A ``--connect`` value as ``Service.connect`` takes it: HOST:PORT or a
    peer id (one a connected peer can introduce us to)."""
    from crust.config import parse_host_port
    from crust.identity import PeerId

    if ":" in text:
        try:
            return parse_host_port(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(f"{e} (expected HOST:PORT or a peer id)") from None
    try:
        return PeerId.parse(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(
            f"{text!r} is neither HOST:PORT nor a peer id ({e})"
        ) from None


async def _run_node(args: argparse.Namespace) -> int:
    # Deferred imports keep `crust --version` fast.
    from pathlib import Path

    from crust import Service, load_config  # deferred, as above
    from crust.output import event_json, event_line

    # Only options given on the command line override the file/environment.
    given = {
        "network": args.network,
        "hosts": tuple(args.host) if args.host else None,
        "port": args.port,
        "identity_path": Path(args.identity) if args.identity else None,
        "stun_servers": tuple(args.stun) if args.stun else None,
    }
    cfg = load_config(args.config, **{k: v for k, v in given.items() if v is not None}).config

    def show(record: dict[str, object], line: str) -> None:
        print(json.dumps(record) if args.json else line, flush=True)

    async with Service(cfg) as svc:
        show({"event": "Started", "id": str(svc.id), "endpoints": [list(e) for e in svc.endpoints]},
             f"node {svc.id}")  # fmt: skip
        if not args.json:
            for host, port in svc.endpoints:
                print(f"listening on {host}:{port} (tcp+udp)", flush=True)
        metrics = None
        if args.metrics_port is not None:
            from crust.metrics import serve  # deferred: needs crust[metrics]

            metrics = await serve(svc, args.metrics_port, args.metrics_host)
            host, port = metrics.address
            show({"event": "MetricsServing", "url": f"http://{host}:{port}/metrics"},
                 f"metrics on http://{host}:{port}/metrics")  # fmt: skip
        try:
            for target in args.connect:
                try:
                    # An address is joined: kept, and redialled should that
                    # node restart (design note 0053); an id is connected.
                    if isinstance(target, tuple):
                        peer = await svc.join(target)
                    else:
                        peer = await svc.connect(target)
                except CrustError as e:
                    # A failed --connect ends the node: what was asked for
                    # did not happen (`contacts` in the config keep retrying).
                    if args.debug:
                        raise
                    print(f"crust node: --connect {_shown(target)}: {_one_line(e)}",
                          file=sys.stderr)  # fmt: skip
                    return 1
                svc.maintain(peer)
            # Events are the node's output (stdout), not log records: the
            # loggers stay for what goes wrong inside.
            async for ev in svc.events():
                show(event_json(ev), event_line(ev))
        finally:
            if metrics is not None:
                metrics.close()
    return 0


def _shown(target: object) -> str:
    if isinstance(target, tuple):
        return f"{target[0]}:{target[1]}"
    return str(target)


def _run(args: argparse.Namespace) -> int:
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
        from crust.asyncio.doctor import run_cli  # deferred, as above

        return run_cli(args)
    if args.command == "node":
        return asyncio.run(_run_node(args))
    if args.command == "resolve":
        from crust.dht.cli import run_resolve  # deferred: optional extra

        return run_resolve(args)
    return 2


def _one_line(exc: BaseException) -> str:
    """The exception's message on one line (a peer's text could hold
    newlines or escape codes: they are shown, not obeyed)."""
    from crust.output import printable

    text = str(exc) or type(exc).__name__
    return printable(" ".join(text.split("\n")))


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        # Reported by the command's own parser, so the suggestions are its options.
        commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        commands.choices[args.command].error(f"unrecognized arguments: {' '.join(extra)}")
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(name)s %(message)s")
    prog = f"crust {args.command}"
    try:
        return _run(args)
    except KeyboardInterrupt:
        # 128 + SIGINT, as a shell reports a command Ctrl-C ended.
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if args.debug:
            raise
        # A bad setting is a usage error (2); anything else failed (1).
        from crust.errors import ConfigError

        if isinstance(exc, (CrustError, OSError, ValueError, LookupError, asyncio.TimeoutError)):
            print(f"{prog}: {_one_line(exc)}", file=sys.stderr)
        else:
            print(
                f"{prog}: unexpected {type(exc).__name__}: {_one_line(exc)} "
                "(--debug shows the traceback)",
                file=sys.stderr,
            )
        return 2 if isinstance(exc, ConfigError) else 1
