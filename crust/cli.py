"""The ``crust`` command line (also ``python -m crust``)."""

from __future__ import annotations

import argparse
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
        "demo", help="two nodes say hello and move a blob over a simulated lossy path"
    )
    demo.add_argument("--mb", type=int, default=20, help="blob size in MB (default 20)")
    demo.add_argument("--mbit", type=int, default=50, help="path rate in Mbit/s (default 50)")
    demo.add_argument("--rtt-ms", type=int, default=30, help="round trip in ms (default 30)")
    demo.add_argument("--loss", type=float, default=0.01, help="random loss 0..1 (default 0.01)")
    demo.add_argument("--seed", type=int, default=1, help="simulation seed (default 1)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(name)s %(message)s")
    if args.command == "demo":
        from crust.demo import run_demo  # deferred: keeps `crust --version` fast

        for name, value, lo, hi in (
            ("--mb", args.mb, 1, 10_000),
            ("--mbit", args.mbit, 1, 100_000),
            ("--rtt-ms", args.rtt_ms, 1, 10_000),
        ):
            if not lo <= value <= hi:
                print(f"crust demo: {name} must be in {lo}..{hi}, got {value}", file=sys.stderr)
                return 2
        if not 0.0 <= args.loss < 0.5:
            print(f"crust demo: --loss must be in [0, 0.5), got {args.loss}", file=sys.stderr)
            return 2
        result = run_demo(
            blob_mb=args.mb,
            bandwidth_mbit=args.mbit,
            rtt_ms=args.rtt_ms,
            loss=args.loss,
            seed=args.seed,
        )
        return 0 if result.hello_ok and result.blob_ok else 1
    return 2
