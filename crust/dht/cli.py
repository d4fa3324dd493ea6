"""``crust resolve PEER_ID`` and the DHT line of ``crust nat``.

Both start a DHT node of their own (read-only: it publishes nothing and
answers no queries) with the configured ``dht_port``, ``dht_bootstrap`` and
``dht_settings`` (file, ``CRUST_DHT_*`` variables), whether or not ``dht``
is on: asking is what the user ran them for.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import time
from typing import Any

from crust.config import ServiceConfig, parse_host_port
from crust.errors import CrustError, NoBootstrap

__all__ = ["dht_status", "run_resolve"]


def _bootstrap(cfg: ServiceConfig) -> tuple[tuple[str, int], ...]:
    if not cfg.dht_bootstrap:
        raise NoBootstrap(
            "no DHT bootstrap nodes configured: set dht_bootstrap in the config file or "
            "CRUST_DHT_BOOTSTRAP=host:port,... (e.g. router.bittorrent.com:6881 for the public DHT)"
        )
    return tuple(parse_host_port(b) for b in cfg.dht_bootstrap)


def _text(addr: tuple[str, int]) -> str:
    return f"[{addr[0]}]:{addr[1]}" if ":" in addr[0] else f"{addr[0]}:{addr[1]}"


def run_resolve(args: argparse.Namespace) -> int:
    """``crust resolve``: print a peer's verified DHT record."""
    from crust.config_sources import load_config
    from crust.identity import Identity, PeerId
    from crust.service import Service

    pid = PeerId.parse(args.peer_id)
    cfg = load_config(args.config).config
    _bootstrap(cfg)
    cfg = cfg.replace(
        dht=True,
        dht_publish=False,
        identity=Identity.generate(),  # a throwaway: resolving needs no identity
        beacon=False,
        cache_size=0,
        gossip=False,
        port=0,
        upnp=False,
        natpmp=False,
        stun_servers=(),
        connect_timeout=args.timeout,
    )

    async def main() -> tuple[Any, float]:
        async with Service(cfg) as svc:
            t0 = time.perf_counter()
            record = await svc.resolve(pid)
            return record, time.perf_counter() - t0

    record, took = asyncio.run(main())
    if args.json:
        print(json.dumps({
            "peer_id": str(pid),
            "seq": record.seq,
            "issued": record.issued,
            "expires": record.expires,
            "endpoints": [_text(a) for a in record.endpoints],
            "contacts": [
                {"peer_id": str(c.peer_id), "address": _text(c.address)}
                for c in record.contacts
            ],
            "seconds": round(took, 3),
        }))  # fmt: skip
        return 0
    print(f"peer {pid}")
    print(f"  record seq {record.seq}, made {time.ctime(record.issued)}, "
          f"expires {time.ctime(record.expires)} (found in {took * 1000:.0f} ms)")  # fmt: skip
    for a in record.endpoints:
        print(f"  endpoint {_text(a)}")
    for c in record.contacts:
        print(f"  contact  {c.peer_id} at {_text(c.address)}")
    return 0


async def _probe(cfg: ServiceConfig, seconds: float) -> dict[str, Any]:
    from crust.dht.node import DhtNode

    host = next((h for h in cfg.hosts if ":" not in h), cfg.hosts[0])
    node = DhtNode(
        host, cfg.dht_port, _bootstrap(cfg),
        extra_settings={"dht_read_only": True, **cfg.dht_settings},
    )  # fmt: skip
    await node.start()
    t0 = time.perf_counter()
    try:
        while node.state.nodes == 0 and time.perf_counter() - t0 < seconds:
            await asyncio.sleep(0.1)
    finally:
        await node.close()
    return {"nodes": node.state.nodes, "seconds": round(time.perf_counter() - t0, 2)}


def dht_status(seconds: float = 5.0) -> dict[str, Any]:
    """What ``crust nat`` says about the DHT: configured or not, libtorrent
    present or not, and (when there are bootstrap nodes) whether a node
    reaches them within ``seconds``."""
    from crust.config_sources import load_config

    out: dict[str, Any] = {"enabled": False, "libtorrent": False, "reachable": None}
    try:
        cfg = load_config().config
    except CrustError as exc:
        out["error"] = str(exc)
        return out
    out["enabled"] = cfg.dht
    out["publish"] = cfg.dht and cfg.dht_publish
    out["bootstrap"] = list(cfg.dht_bootstrap)
    out["libtorrent"] = importlib.util.find_spec("libtorrent") is not None
    if not out["libtorrent"] or not cfg.dht_bootstrap:
        return out
    try:
        probe = asyncio.run(_probe(cfg, seconds))
    except CrustError as exc:
        out["error"] = str(exc)
        return out
    out.update(probe)
    out["reachable"] = probe["nodes"] > 0
    return out


def render_status(s: dict[str, Any]) -> str:
    """One line (two when there is advice) for ``crust nat``."""
    if s.get("error"):
        return f"DHT: {s['error']}"
    state = "off"
    if s["enabled"]:
        state = "on, publishing our record" if s.get("publish") else "on, not publishing"
    if not s["libtorrent"]:
        return f"DHT: {state}; libtorrent missing (pip install 'crust[dht]')"
    if not s.get("bootstrap"):
        return f"DHT: {state}; no bootstrap nodes configured (dht_bootstrap)"
    if s["reachable"]:
        return (f"DHT: {state}; reached through {', '.join(s['bootstrap'])}: "
                f"{s['nodes']} nodes in {s['seconds']} s")  # fmt: skip
    return (f"DHT: {state}; no answer from {', '.join(s['bootstrap'])} in {s['seconds']} s\n"
            "  UDP to the DHT looks blocked: rely on shared contacts (contacts, bootstrap "
            "nodes) or a relay you run, or try another dht_port / bootstrap node")  # fmt: skip
