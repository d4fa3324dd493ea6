"""Moving one file between two nodes: ``crust send`` and ``crust recv``.

Both nodes connect to a mutual node (``--via``, e.g. a bootstrap node);
the sender then connects to the receiver by its peer id, which goes
through rendezvous (direct, punched or relayed: the path is reported).

On the connection (priority 0 messages, delivered in order)::

    sender   -> "CRUSTFILE2" JSON {"name", "size", "sha256"}
    receiver -> "CRUSTFILEGO"                  (or "CRUSTFILEERR" reason: refused)
    sender   -> the file, in messages of CHUNK bytes
    receiver -> "CRUSTFILEOK" JSON {"sha256", "size", "saved"}   (or "CRUSTFILEERR" reason)

The sender waits for GO, so nothing but the header reaches a receiver
that has not accepted the file (``--from``, the prompt or ``--yes``).

The receiver never trusts the name: it keeps a sanitized last component
(:func:`safe_name`, decided before the transfer starts), writes into
``NAME.part``, never overwrites (a numbered suffix is added), refuses more
bytes than announced, and moves the file to its name only once the
SHA-256 matches; on any failure, Ctrl-C included, the part file is removed.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import sys
import time
import unicodedata
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

from crust.config import ServiceConfig, parse_host_port
from crust.errors import ConnectionClosed, PeerLost, TransferRefused, UnknownPeer
from crust.events import ContactJoined, ContactLost, LostPeer, NewMessage
from crust.identity import Identity, PeerId
from crust.output import Progress, event_json, human_duration, human_size, printable
from crust.peer import Peer
from crust.service import Service

__all__ = ["Received", "Sent", "TransferRefused", "receive_file", "safe_name", "send_file"]

logger = logging.getLogger(__name__)

HEADER = b"CRUSTFILE2"
GO = b"CRUSTFILEGO"
OK = b"CRUSTFILEOK"
ERR = b"CRUSTFILEERR"
CHUNK = 256 << 10
MAX_HEADER = 4096
#: Longest name kept, in UTF-8 bytes: 255 (the usual file system limit)
#: less room for ".part" and a numbered suffix.
MAX_NAME_BYTES = 240
#: How long the sender waits for the receiver to accept (someone may be
#: reading the prompt).
ACCEPT_TIMEOUT = 600.0

#: Seconds the commands wait for the STUN probe and the contact's answers.
NAT_WAIT = 10.0
#: ``accept(sender_id, name, size)``: whether to take the file.
Accept = Callable[[str, str, int], Awaitable[bool]]


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


def safe_name(name: str) -> str:
    """The file name to save a sender's ``name`` under: NFC-normalized, its
    last path component only (``/`` and ``\\`` both count), control and
    format characters replaced by ``_``, leading dots and spaces removed
    (no hidden ``.bashrc`` lands in a home directory), at most
    :data:`MAX_NAME_BYTES` of UTF-8 (the extension kept); ``received.bin``
    when nothing is left."""
    text = unicodedata.normalize("NFC", name)
    text = text.replace("\\", "/").rsplit("/", 1)[-1]
    text = "".join(
        "_" if unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co", "Zl", "Zp") else ch
        for ch in text
    )
    text = text.lstrip(". ").rstrip(" ")
    if len(text.encode()) > MAX_NAME_BYTES:
        stem, dot, ext = text.rpartition(".")
        # Keep a short extension: it tells what the file is.
        keep = "." + ext if dot and stem and len(ext.encode()) <= 16 else ""
        room = MAX_NAME_BYTES - len(keep.encode())
        cut = text[: len(text) - len(keep)] if keep else text
        cut = cut.encode()[:room].decode(errors="ignore")
        text = cut + keep
    return text or "received.bin"


#: What a one-shot node changes from the library's defaults, unless the
#: configuration file, ``CRUST_*`` or an option sets it: it listens on every
#: interface, neither bootstraps from nor fills the cache, nor gossips or
#: announces itself on the LAN, and meets the other side only through
#: ``--via``, so the path reported is the one rendezvous found.
ONE_SHOT: dict[str, Any] = {
    "hosts": ("0.0.0.0",),
    "cache_size": 0,
    "gossip": False,
    "beacon": False,
}


def node_config(network: str, host: str, identity: str | None) -> ServiceConfig:
    """The one-shot configuration from these values alone (the API's
    shortcut; the commands use :func:`command_config`)."""
    return _with_identity(
        ServiceConfig(**{**ONE_SHOT, "network": network, "hosts": (host,)}),
        Path(identity) if identity else None,
    )


def _with_identity(cfg: ServiceConfig, path: Path | None) -> ServiceConfig:
    # A throwaway identity unless a file is named: two commands on one
    # machine must not share the default identity file.
    if path is not None:
        return cfg.replace(identity_path=path, identity=None)
    return cfg.replace(identity=Identity.generate(), identity_path=None)


def command_config(args: Any) -> ServiceConfig:
    """``crust send``/``recv``'s configuration, built as ``crust node``
    builds its own: defaults, then the file (``--config``, ``$CRUST_CONFIG``
    or the user config file), then ``CRUST_*``, then the options given.
    Settings none of those set take the one-shot values (:data:`ONE_SHOT`),
    and the identity is a throwaway one unless ``--identity``, the file or
    ``CRUST_IDENTITY_PATH`` names a file. Raises
    :class:`~crust.errors.ConfigError` naming the bad setting and where it
    came from."""
    from crust.config_sources import load_config  # deferred: reads files

    given: dict[str, Any] = {
        "network": args.network,
        "hosts": tuple(args.host) if args.host else None,
        "identity_path": Path(args.identity) if args.identity else None,
        "stun_servers": tuple(args.stun) if args.stun else None,
    }
    loaded = load_config(args.config, **{k: v for k, v in given.items() if v is not None})
    unset = {k: v for k, v in ONE_SHOT.items() if loaded.sources.get(k) == "default"}
    cfg = loaded.config.replace(**unset) if unset else loaded.config
    explicit = loaded.sources.get("identity_path") != "default"
    return _with_identity(cfg, cfg.identity_path if explicit else None)


async def _join(svc: Service, via: str) -> Peer:
    # Joined, not just connected: the mutual node keeps us while our link
    # lives, and a lost link is redialled (Service.join, design note 0053).
    return await svc.join(parse_host_port(via))


async def send_file(
    config: ServiceConfig,
    via: str,
    to: str,
    file: Path,
    *,
    progress: IO[str] | None = None,
    timeout: float = 60.0,
    name: str | None = None,
) -> Sent:
    """Send ``file`` to the node with peer id ``to`` through ``via``, under
    ``name`` (default: the file's own). Raises :class:`TransferRefused`
    when the receiver does not take it."""
    name = file.name if name is None else name
    data_size = file.stat().st_size
    digest = hashlib.sha256()
    with file.open("rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    sha = digest.hexdigest()
    async with Service(config) as svc:
        await _join(svc, via)
        # Know whether our NAT is symmetric (from STUN servers, or from the
        # contact's two ports: design note 0062) before asking for a path:
        # it decides on birthday punching.
        await svc.nat_known(NAT_WAIT)
        t0 = time.monotonic()
        target = PeerId.parse(to)
        try:
            peer = await svc.connect(target, timeout=timeout)
        except UnknownPeer:
            raise UnknownPeer(
                f"{target.short} is not connected to {via}: check the id, and that "
                f"`crust recv --via {via}` is running there"
            ) from None
        svc.maintain(peer)
        header = {"name": name, "size": data_size, "sha256": sha}
        verdict = asyncio.ensure_future(_answer(svc, peer, (GO, ERR)))
        try:
            await peer.send(HEADER + json.dumps(header).encode())
            reply = await asyncio.wait_for(verdict, ACCEPT_TIMEOUT)
        finally:
            verdict.cancel()
            if verdict.done() and not verdict.cancelled():
                verdict.exception()
        if reply.startswith(ERR):
            raise TransferRefused(f"the receiver refused: {_reason(reply)}")
        answer = asyncio.ensure_future(_answer(svc, peer, (OK, ERR)))
        done = 0
        try:
            bar = Progress(data_size, progress, f"send {printable(name)}")
            with file.open("rb") as f:
                # A receiver that gives up answers ERR: stop sending then.
                while not answer.done() and (chunk := f.read(CHUNK)):
                    await peer.send(chunk)
                    done += len(chunk)
                    bar.update(done)
            bar.update(done, final=True)
            reply = await asyncio.wait_for(answer, timeout)
        except ConnectionClosed as e:
            # The receiver was lost (it stopped answering, its process is
            # gone): one error saying so and how far we got, never the
            # engine's wording alone nor a second error from the watcher.
            reason = peer.closed_reason or str(e)
            raise PeerLost(
                f"the receiver was lost after {human_size(done)} of {human_size(data_size)}: "
                f"{reason}",
                reason,
                done,
            ) from None
        finally:
            answer.cancel()
            if answer.done() and not answer.cancelled():
                answer.exception()  # seen: no "exception never retrieved" at exit
        if reply.startswith(ERR):
            raise TransferRefused(f"the receiver refused: {_reason(reply)}")
        got = json.loads(reply[len(OK) :])
        return Sent(
            str(peer.id), peer.path, peer.why, name, data_size, sha,
            time.monotonic() - t0, got.get("sha256") == sha and got.get("size") == data_size,
        )  # fmt: skip


def _reason(reply: bytes) -> str:
    return printable(reply[len(ERR) :].decode(errors="replace"))


async def _answer(svc: Service, peer: Peer, kinds: tuple[bytes, ...]) -> bytes:
    async for ev in svc.events():
        if isinstance(ev, NewMessage) and ev.peer.id == peer.id:
            if ev.data.startswith(kinds):
                return bytes(ev.data)
        elif isinstance(ev, LostPeer) and ev.peer.id == peer.id:
            raise PeerLost(f"the receiver was lost: {ev.reason}", ev.reason)
    raise ConnectionError("service closed")


def _target(out_dir: Path, base: str) -> Path:
    """A free name in ``out_dir`` for the sanitized ``base``: neither it
    nor its part file exists."""
    path = out_dir / base
    n = 1
    while path.exists() or _part(path).exists():
        path = out_dir / f"{base}.{n}"
        n += 1
    return path


def _part(path: Path) -> Path:
    return path.with_name(path.name + ".part")


async def receive_file(
    config: ServiceConfig,
    via: str,
    out_dir: Path,
    *,
    ready: Callable[[str], None] | None = None,
    progress: IO[str] | None = None,
    sender: PeerId | None = None,
    accept: Accept | None = None,
    contact: Callable[[ContactLost | ContactJoined], None] | None = None,
) -> Received:
    """Wait for one file; ``ready(peer_id)`` is called once reachable.
    Offers from anyone but ``sender`` (when given) are refused; ``accept``
    (when given) decides on each offer, else every offer is taken.
    ``contact(event)`` hears of the link to ``via`` lost, and rejoined,
    while waiting (the node stays reachable however long it waits)."""
    async with Service(config) as svc:
        events = svc.events()
        await _join(svc, via)
        await svc.nat_known(NAT_WAIT)  # as the sender does: before anyone asks
        if ready is not None:
            ready(str(svc.id))
        async for ev in events:
            if isinstance(ev, (ContactLost, ContactJoined)):
                # The first join is what ready() announces; losses and
                # rejoins after it are news.
                if contact is not None and (isinstance(ev, ContactLost) or ev.rejoined):
                    contact(ev)
                continue
            if not (isinstance(ev, NewMessage) and ev.data.startswith(HEADER)):
                continue
            peer = ev.peer
            try:
                header = json.loads(ev.data[len(HEADER) : len(HEADER) + MAX_HEADER])
                size, sha, name = int(header["size"]), str(header["sha256"]), header["name"]
                if size < 0 or not isinstance(name, str):
                    raise ValueError("negative size or a name that is not a string")
            except (ValueError, KeyError, TypeError) as e:
                await peer.send(ERR + f"bad header: {e}".encode())
                continue
            if sender is not None and peer.id != sender:
                logger.info("refused a file from %s (expecting %s)", peer.id, sender)
                await peer.send(ERR + b"not accepted from this sender")
                continue
            base = safe_name(name)
            if accept is not None and not await accept(str(peer.id), base, size):
                await peer.send(ERR + b"declined")
                raise TransferRefused(f"declined {base} from {peer.id}")
            return await _receive_body(events, peer, _target(out_dir, base), size, sha, progress)
        raise ConnectionError("service closed before a file arrived")


async def _receive_body(
    events: Any,
    peer: Peer,
    path: Path,
    size: int,
    sha: str,
    progress: IO[str] | None,
) -> Received:
    t0 = time.monotonic()
    part = _part(path)
    digest = hashlib.sha256()
    done = 0
    bar = Progress(size, progress, f"recv {path.name}")
    try:
        with part.open("xb") as f:
            await peer.send(GO)
            while done < size:
                ev = await events.__anext__()
                if isinstance(ev, LostPeer) and ev.peer.id == peer.id:
                    raise ConnectionError(
                        f"the sender left after {human_size(done)} of {human_size(size)}: "
                        f"{ev.reason}"
                    )
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
        path = _publish(part, path)
    except BaseException:
        # Ctrl-C (a cancellation) included: a part file is never left behind.
        part.unlink(missing_ok=True)
        raise
    await peer.send(OK + json.dumps({"sha256": got, "size": done, "saved": str(path)}).encode())
    result = Received(str(peer.id), peer.path, str(path), done, got, time.monotonic() - t0)
    # Let the answer leave before the service closes.
    await asyncio.sleep(0.2)
    return result


def _publish(part: Path, path: Path) -> Path:
    """Give the verified ``part`` its final name. A hard link fails rather
    than replace a file that appeared meanwhile (``rename`` would
    overwrite it); then the next free name is taken."""
    while True:
        try:
            os.link(part, path)
        except FileExistsError:
            path = _target(path.parent, path.name)
            continue
        part.unlink()
        return path


def _emit(result: Sent | Received, as_json: bool) -> None:
    if as_json:
        print(json.dumps(asdict(result)), flush=True)
        return
    for key, value in asdict(result).items():
        if value == "":
            continue
        if key == "seconds":
            value = human_duration(value)
        elif key == "size":
            value = f"{human_size(value)} ({value} bytes)"
        print(f"{key:9s} {printable(str(value))}", flush=True)


def run_send(args: Any) -> int:
    """``crust send``; errors propagate to :func:`crust.cli.main`, which
    prints them as one line."""
    file = Path(args.file)
    if not file.is_file():
        print(f"crust send: {file} is not a readable file", file=sys.stderr)
        return 2
    checks: tuple[tuple[str, Callable[[str], object], str], ...] = (
        ("--to", PeerId.parse, args.to),
        ("--via", parse_host_port, args.via),
    )
    for option, check, value in checks:
        try:
            check(value)
        except ValueError as e:
            print(f"crust send: {option} {printable(value)!r}: {e}", file=sys.stderr)
            return 2
    cfg = command_config(args)
    try:
        sent = asyncio.run(
            send_file(cfg, args.via, args.to, file, progress=None if args.json else sys.stderr)
        )
    except PeerLost as e:
        if args.json:
            # The same failure as the line on standard error, for scripts.
            lost = {"error": str(e), "lost": True, "reason": e.reason, "sent": e.sent}
            print(json.dumps(lost), flush=True)
        raise
    _emit(sent, args.json)
    return 0 if sent.verified else 1


def _prompt(stream: IO[str]) -> Accept:
    async def accept(sender: str, name: str, size: int) -> bool:
        stream.write(f"accept {name} ({human_size(size)}) from {sender}? [y/N] ")
        stream.flush()
        # Read when the terminal has a line, the node serving meanwhile. Not
        # input() in a thread: Ctrl-C could not end that thread, and
        # asyncio.run would wait for it at exit.
        loop = asyncio.get_running_loop()
        line: asyncio.Future[str] = loop.create_future()
        fd = sys.stdin.fileno()

        def readable() -> None:
            if not line.done():
                line.set_result(sys.stdin.readline())

        loop.add_reader(fd, readable)
        try:
            answer = await line
        finally:
            loop.remove_reader(fd)
        return answer.strip().lower() in ("y", "yes")

    return accept


def run_recv(args: Any) -> int:
    """``crust recv``; errors propagate to :func:`crust.cli.main`."""
    out_dir = Path(args.out)
    if not out_dir.is_dir():
        print(f"crust recv: --out {out_dir} is not a directory", file=sys.stderr)
        return 2
    try:
        parse_host_port(args.via)
    except ValueError as e:
        print(f"crust recv: --via: {e}", file=sys.stderr)
        return 2
    try:
        sender = PeerId.parse(args.sender) if args.sender else None
    except ValueError as e:
        print(f"crust recv: --from {printable(args.sender)!r}: {e}", file=sys.stderr)
        return 2
    if not args.yes and not sys.stdin.isatty():
        print(
            "crust recv: no terminal to ask whether to accept the file: "
            "pass --yes (with --from PEER_ID to take it only from that sender)",
            file=sys.stderr,
        )
        return 2

    me: list[str] = []

    def ready(pid: str) -> None:
        me.append(pid)
        if args.json:
            print(json.dumps({"ready": pid, "via": args.via}), flush=True)
        else:
            print(f"waiting for a file; reachable as {pid} through {args.via}; "
                  f"send with: crust send --via {args.via} --to {pid} FILE",
                  flush=True)  # fmt: skip

    def contact(ev: ContactLost | ContactJoined) -> None:
        # Said as it happens: a receiver that cannot be reached must not
        # wait in silence.
        if args.json:
            print(json.dumps(event_json(ev)), flush=True)
        elif isinstance(ev, ContactJoined):
            print(f"rejoined {args.via} after {ev.after:.1f} s; reachable again as "
                  f"{me[0] if me else '?'}", flush=True)  # fmt: skip
        elif ev.attempts == 0:
            print(f"lost {args.via} ({printable(ev.reason)}); not reachable until it is "
                  f"rejoined: trying again in {ev.retry_in:.1f} s", flush=True)  # fmt: skip
        else:
            print(f"{args.via} still unreachable after {ev.attempts} tries "
                  f"({printable(ev.reason)}); next in {ev.retry_in:.0f} s", flush=True)  # fmt: skip

    cfg = command_config(args)
    got = asyncio.run(
        receive_file(
            cfg,
            args.via,
            out_dir,
            ready=ready,
            progress=None if args.json else sys.stderr,
            sender=sender,
            accept=None if args.yes else _prompt(sys.stderr),
            contact=contact,
        )
    )
    _emit(got, args.json)
    return 0
