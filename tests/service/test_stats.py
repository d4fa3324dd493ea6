"""Service.stats(): a structured, JSON-serialisable snapshot that counts
what happened, and no prints from the library."""

from __future__ import annotations

import ast
import asyncio
import json
from pathlib import Path

import crust
from crust.stats import STATS_DOC, PeerEntry, ServiceStats

PACKAGE = Path(crust.__file__).resolve().parent


async def _exchange() -> tuple[dict[str, object], dict[str, object], dict[str, object]]:
    cfg = crust.ServiceConfig(network="stats-test", backup_port=False, cache_size=0)
    async with crust.Service(cfg, identity=crust.Identity.generate()) as server, crust.Service(
        cfg, identity=crust.Identity.generate()
    ) as client:
        peer = await client.connect(server.endpoints[0])
        for i in range(5):
            await peer.send(bytes(1000 + i))
        got = 0
        async for ev in server.events():
            if isinstance(ev, crust.NewMessage):
                got += 1
                if got == 5:
                    break
        live = client.stats()
        await client.disconnect(peer)
        async for ev in client.events():
            if isinstance(ev, crust.LostPeer):
                break
        return live, client.stats(), server.stats()


def test_stats_structure_and_counters() -> None:
    live, after, server = asyncio.run(asyncio.wait_for(_exchange(), 30))
    for snap in (live, after, server):
        assert set(snap) == set(STATS_DOC) == set(ServiceStats.__annotations__)
        json.dumps(snap)  # plain types only
        for entry in snap["per_peer"].values():
            assert set(entry) == set(PeerEntry.__annotations__)
    assert live["peers"] == 1
    conn = live["connections"]
    assert isinstance(conn, dict)
    assert conn["outgoing"] == 1 and conn["incoming"] == 0
    assert conn["direct-tcp"] + conn["direct-udp"] == 1
    per_peer = live["per_peer"]
    assert isinstance(per_peer, dict) and len(per_peer) == 1
    (entry,) = per_peer.values()
    assert entry["path"] in {"direct-tcp", "direct-udp"}
    assert entry["sent_messages"] >= 5 and entry["rtt"] >= 0
    live_traffic = live["traffic"]
    assert isinstance(live_traffic, dict)
    assert live_traffic["sent_bytes"] >= 5 * 1000

    # The connection ended: its traffic stays in the totals.
    assert after["peers"] == 0 and after["per_peer"] == {}
    after_conn, after_traffic = after["connections"], after["traffic"]
    assert isinstance(after_conn, dict) and isinstance(after_traffic, dict)
    assert after_conn["lost"] == 1
    assert after["lost_reasons"] == {"closed by us": 1}
    assert after_traffic["sent_bytes"] >= live_traffic["sent_bytes"]

    server_conn, handshake = server["connections"], server["handshake"]
    assert isinstance(server_conn, dict) and isinstance(handshake, dict)
    assert server_conn["incoming"] == 1
    assert handshake["completed"] >= 1


def _command_functions(tree: ast.Module) -> set[str]:
    """Top-level functions that belong to a command: entry points (``main``,
    ``run_*``) and helpers called only from such functions."""
    funcs = {
        n.name: n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
    }
    callers: dict[str, set[str]] = {name: set() for name in funcs}
    for name, fn in funcs.items():
        for node in ast.walk(fn):
            if isinstance(node, ast.Name) and node.id in callers and node.id != name:
                callers[node.id].add(name)
    # Module-level uses (e.g. a dispatch table) count as library callers.
    for node in tree.body:
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for sub in ast.walk(node):
                if isinstance(sub, ast.Name) and sub.id in callers:
                    callers[sub.id].add("<module>")
    allowed = {n for n in funcs if n == "main" or n.startswith("run_")}
    while True:
        more = {n for n, c in callers.items() if c and c <= allowed} - allowed
        if not more:
            return allowed
        allowed |= more


def _prints(tree: ast.Module) -> list[int]:
    """Lines of print() calls outside command functions (whose output is
    the program's)."""
    skip = _command_functions(tree)
    lines: list[int] = []
    for top in tree.body:
        if isinstance(top, (ast.FunctionDef, ast.AsyncFunctionDef)) and top.name in skip:
            continue
        for node in ast.walk(top):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id == "print"
            ):
                lines.append(node.lineno)
    return lines


def test_library_does_not_print() -> None:
    """Only the command-line programs write to stdout; everything else logs
    under the ``crust`` logger hierarchy."""
    programs = {"cli.py", "demo.py", "sim_demo.py", "__main__.py"}
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE)
        if rel.name in programs or rel.parts[0] == "bench":
            continue
        offenders += [f"{rel}:{line}" for line in _prints(ast.parse(path.read_text()))]
    assert not offenders, f"print() in library code: {offenders}"
    sample = (
        "def lib():\n    print(1)\n"
        "def _out():\n    print(2)\n"
        "def run_x():\n    _out()\n    lib()\n"
        "def other():\n    lib()\n"
    )
    assert _prints(ast.parse(sample)) == [2]
