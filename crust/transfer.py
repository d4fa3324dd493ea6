"""Moving one file between two nodes: ``crust send`` and ``crust recv``.

Both nodes connect to a mutual node (``--via``, e.g. a bootstrap node);
the sender then connects to the receiver by its peer id, which goes
through rendezvous (direct, punched or relayed: the path is reported).

On the connection (priority 0 messages, delivered in order)::

    sender   -> "CRUSTFILE1" JSON {"name", "size", "sha256"}
    sender   -> the file, in messages of CHUNK bytes
    receiver -> "CRUSTFILEOK" JSON {"sha256", "size", "saved"}   (or "CRUSTFILEERR" reason)

The receiver keeps only the name's last component, never overwrites (a
numbered suffix is added), refuses more bytes than announced and checks the
SHA-256 before it answers.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

from crust.config import ServiceConfig, parse_host_port
from crust.events import LostPeer, NewMessage
from crust.identity import Identity, PeerId
from crust.peer import Peer
from crust.service import Service

__all__ = ["Received", "Sent", "receive_file", "send_file"]

logger = logging.getLogger(__name__)

HEADER = b"CRUSTFILE1"
OK = b"CRUSTFILEOK"
ERR = b"CRUSTFILEERR"
CHUNK = 256 << 10
MAX_HEADER = 4096


@dataclass(frozen=True)
class Sent:
    peer: str
    path: str
    why: str
    name: str
    size: int
    sha256: str
    seconds: float
    verified: bool


@dataclass(frozen=True)
class Received:
    peer: str
    path: str
    saved: str
    size: int
    sha256: str
    seconds: float


class Progress:
    """A one-line progress bar on ``stream`` (redrawn at most 10 times/s)."""

    def __init__(self, total: int, stream: IO[str] | None, label: str) -> None:
        self.total = max(total, 1)
        self.stream = stream
        self.label = label
        self.start = time.monotonic()
        self._drawn = 0.0

    def update(self, done: int, *, final: bool = False) -> None:
        if self.stream is None:
            return
        now = time.monotonic()
        if not final and now - self._drawn < 0.1:
            return
        self._drawn = now
        frac = min(done / self.total, 1.0)
        rate = done / max(now - self.start, 1e-6) / 1e6
        bar = "#" * int(frac * 30)
        end = "\n" if final else ""
        self.stream.write(f"\r{self.label} [{bar:<30}] {frac:6.1%} {rate:7.2f} MB/s{end}")
        self.stream.flush()


def node_config(network: str, host: str, identity: str | None) -> ServiceConfig:
    # A throwaway identity unless one is given: two commands on one machine
    # must not share the default identity file. A one-shot node neither
    # bootstraps from nor fills the cache, and meets the other side only
    # through --via, so the path reported is the one rendezvous found.
    ident = None if identity else Identity.generate()
    return ServiceConfig(
        network=network,
        hosts=(host,),
        identity=ident,
        identity_path=Path(identity) if identity else None,
        cache_size=0,
        gossip=False,
        beacon=False,
    )


async def _join(svc: Service, via: str) -> Peer:
    m = await svc.connect(parse_host_port(via))
    svc.maintain(m)
    return m


async def send_file(
    config: ServiceConfig,
    via: str,
    to: str,
    file: Path,
    *,
    progress: IO[str] | None = None,
    timeout: float = 60.0,
) -> Sent:
    """Send ``file`` to the node with peer id ``to`` through ``via``."""
    data_size = file.stat().st_size
    digest = hashlib.sha256()
    with file.open("rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    sha = digest.hexdigest()
    async with Service(config) as svc:
        await _join(svc, via)
        t0 = time.monotonic()
        peer = await svc.connect(PeerId.parse(to), timeout=timeout)
        svc.maintain(peer)
        answer = asyncio.ensure_future(_answer(svc, peer))
        try:
            header = {"name": file.name, "size": data_size, "sha256": sha}
            await peer.send(HEADER + json.dumps(header).encode())
            bar = Progress(data_size, progress, f"send {file.name}")
            done = 0
            with file.open("rb") as f:
                while chunk := f.read(CHUNK):
                    await peer.send(chunk)
                    done += len(chunk)
                    bar.update(done)
            bar.update(done, final=True)
            reply = await asyncio.wait_for(answer, timeout)
        finally:
            answer.cancel()
        if reply.startswith(ERR):
            raise ConnectionError(
                f"the receiver refused: {reply[len(ERR) :].decode(errors='replace')}"
            )
        got = json.loads(reply[len(OK) :])
        return Sent(
            str(peer.id), peer.path, peer.why, file.name, data_size, sha,
            time.monotonic() - t0, got.get("sha256") == sha and got.get("size") == data_size,
        )  # fmt: skip


async def _answer(svc: Service, peer: Peer) -> bytes:
    async for ev in svc.events():
        if isinstance(ev, NewMessage) and ev.peer.id == peer.id:
            if ev.data.startswith((OK, ERR)):
                return bytes(ev.data)
        elif isinstance(ev, LostPeer) and ev.peer.id == peer.id:
            raise ConnectionError(f"the receiver left: {ev.reason}")
    raise ConnectionError("service closed")


def _target(out_dir: Path, name: str) -> Path:
    base = Path(name).name
    if base in ("", ".", "..") or "\x00" in base:
        base = "received.bin"
    path = out_dir / base
    n = 1
    while path.exists():
        path = out_dir / f"{base}.{n}"
        n += 1
    return path


async def receive_file(
    config: ServiceConfig,
    via: str,
    out_dir: Path,
    *,
    ready: Any = None,
    progress: IO[str] | None = None,
) -> Received:
    """Wait for one file; ``ready(peer_id)`` is called once reachable."""
    async with Service(config) as svc:
        await _join(svc, via)
        if ready is not None:
            ready(str(svc.id))
        events = svc.events()
        async for ev in events:
            if isinstance(ev, NewMessage) and ev.data.startswith(HEADER):
                peer = ev.peer
                try:
                    header = json.loads(ev.data[len(HEADER) : len(HEADER) + MAX_HEADER])
                    size, sha, name = int(header["size"]), str(header["sha256"]), header["name"]
                except (ValueError, KeyError, TypeError) as e:
                    await peer.send(ERR + f"bad header: {e}".encode())
                    continue
                return await _receive_body(
                    svc, events, peer, out_dir, str(name), size, sha, progress
                )
        raise ConnectionError("service closed before a file arrived")


async def _receive_body(
    svc: Service,
    events: Any,
    peer: Peer,
    out_dir: Path,
    name: str,
    size: int,
    sha: str,
    progress: IO[str] | None,
) -> Received:
    t0 = time.monotonic()
    path = _target(out_dir, name)
    digest = hashlib.sha256()
    done = 0
    bar = Progress(size, progress, f"recv {path.name}")
    with path.open("xb") as f:
        while done < size:
            ev = await events.__anext__()
            if isinstance(ev, LostPeer) and ev.peer.id == peer.id:
                raise ConnectionError(f"the sender left after {done} of {size} bytes: {ev.reason}")
            if not isinstance(ev, NewMessage) or ev.peer.id != peer.id:
                continue
            if done + len(ev.data) > size:
                await peer.send(ERR + b"more bytes than announced")
                raise ConnectionError("the sender sent more bytes than announced")
            f.write(ev.data)
            digest.update(ev.data)
            done += len(ev.data)
            bar.update(done)
    bar.update(done, final=True)
    got = digest.hexdigest()
    if got != sha:
        await peer.send(ERR + b"SHA-256 mismatch")
        raise ConnectionError(f"SHA-256 mismatch: announced {sha}, received {got}")
    await peer.send(OK + json.dumps({"sha256": got, "size": done, "saved": str(path)}).encode())
    result = Received(str(peer.id), peer.path, str(path), done, got, time.monotonic() - t0)
    # Let the answer leave before the service closes.
    await asyncio.sleep(0.2)
    return result


def _emit(result: Sent | Received, as_json: bool) -> None:
    if as_json:
        print(json.dumps(asdict(result)), flush=True)
        return
    for key, value in asdict(result).items():
        if value != "":
            print(f"{key:9s} {value}", flush=True)


def run_send(args: Any) -> int:
    file = Path(args.file)
    if not file.is_file():
        print(f"crust send: {file} is not a readable file", file=sys.stderr)
        return 2
    try:
        PeerId.parse(args.to)
        parse_host_port(args.via)
    except ValueError as e:
        print(f"crust send: {e}", file=sys.stderr)
        return 2
    cfg = node_config(args.network, args.host, args.identity)
    try:
        sent = asyncio.run(
            send_file(cfg, args.via, args.to, file, progress=None if args.json else sys.stderr)
        )
    except (ConnectionError, OSError, LookupError, asyncio.TimeoutError) as e:
        print(f"crust send: {e}", file=sys.stderr)
        return 1
    _emit(sent, args.json)
    return 0 if sent.verified else 1


def run_recv(args: Any) -> int:
    out_dir = Path(args.out)
    if not out_dir.is_dir():
        print(f"crust recv: --out {out_dir} is not a directory", file=sys.stderr)
        return 2
    try:
        parse_host_port(args.via)
    except ValueError as e:
        print(f"crust recv: {e}", file=sys.stderr)
        return 2

    def ready(pid: str) -> None:
        if args.json:
            print(json.dumps({"ready": pid}), flush=True)
        else:
            print(f"waiting for a file; send with: crust send --via {args.via} --to {pid} FILE",
                  flush=True)  # fmt: skip

    cfg = node_config(args.network, args.host, args.identity)
    try:
        got = asyncio.run(
            receive_file(
                cfg, args.via, out_dir, ready=ready, progress=None if args.json else sys.stderr
            )
        )
    except (ConnectionError, OSError) as e:
        print(f"crust recv: {e}", file=sys.stderr)
        return 1
    _emit(got, args.json)
    return 0
