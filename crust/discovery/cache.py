"""The bootstrap cache: peers we were directly connected to, kept on disk so
a restarted node finds the network again without the beacon or contacts.

One JSON file (default: the user cache directory, one file per network),
at most ``capacity`` entries; the least recently successful go first, and
an entry that failed :data:`MAX_FAILURES` start-ups in a row (a node gone
for good) is dropped, so dead entries do not hold up the next start. Every
write is a read-merge-write under an exclusive ``fcntl`` lock on a
companion ``.lock`` file, and lands atomically (temp file in the same
directory, fsync, rename, fsync of the directory), so processes sharing the
file never lose each other's entries and a crash (even ``kill -9``) leaves
either the old or the new file, never a torn one. A file that does not
parse is logged, moved aside (``.corrupt``) and replaced; nothing here
raises on bad file contents or I/O errors, because a cache must never stop
a node from starting.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import logging
import math
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from crust.discovery.beacon import network_tag
from crust.identity import InvalidPeerId, PeerId

__all__ = ["DEFAULT_CAPACITY", "MAX_FAILURES", "BootstrapCache", "CacheEntry", "default_cache_path"]

logger = logging.getLogger(__name__)

DEFAULT_CAPACITY = 200
#: Failed bootstrap attempts in a row after which an entry is dropped.
MAX_FAILURES = 3
FORMAT = "crust-bootstrap-cache"
VERSION = 1
#: A cache file larger than this is not ours (200 entries are ~60 KB).
_MAX_FILE = 4 << 20
_MAX_ENDPOINTS = 8
_TRANSPORTS = ("tcp", "udp")


def default_cache_path(network: str) -> Path:
    """``<user cache dir>/crust/bootstrap-<network tag>.json``: one file per
    network (the tag, not the name, keeps odd names out of file names)."""
    import platformdirs  # deferred: only this path needs it

    return platformdirs.user_cache_path("crust", appauthor=False) / (
        f"bootstrap-{network_tag(network).hex()}.json"
    )


@dataclass(frozen=True, slots=True)
class CacheEntry:
    """One peer: where it listened, which transport worked, when we last
    connected (Unix time), NAT facts we observed (short strings), and how
    many bootstrap attempts failed since."""

    peer_id: PeerId
    endpoints: tuple[tuple[str, int], ...]
    transport: str
    last_success: float
    nat: dict[str, str] = field(default_factory=dict, compare=False)
    failures: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "id": str(self.peer_id),
            "endpoints": [[h, p] for h, p in self.endpoints],
            "transport": self.transport,
            "last_success": self.last_success,
            "nat": dict(self.nat),
            "failures": self.failures,
        }

    @classmethod
    def from_json(cls, obj: Any) -> CacheEntry:
        """ValueError (saying what) unless ``obj`` is a well-formed entry."""
        if not isinstance(obj, dict):
            raise ValueError(f"entry is {type(obj).__name__}, not an object")
        try:
            peer_id = PeerId.parse(obj["id"]) if isinstance(obj.get("id"), str) else None
        except InvalidPeerId as exc:
            raise ValueError(f"bad id: {exc}") from None
        if peer_id is None:
            raise ValueError("missing id")
        eps = obj.get("endpoints")
        if not isinstance(eps, list) or not 0 < len(eps) <= _MAX_ENDPOINTS:
            raise ValueError(f"endpoints must be a list of 1..{_MAX_ENDPOINTS}")
        endpoints: list[tuple[str, int]] = []
        for ep in eps:
            if not (
                isinstance(ep, list)
                and len(ep) == 2
                and isinstance(ep[0], str)
                and isinstance(ep[1], int)
                and 0 < ep[1] < 65536
                and 0 < len(ep[0]) <= 64
            ):
                raise ValueError(f"bad endpoint {ep!r}")
            endpoints.append((ep[0], ep[1]))
        transport = obj.get("transport")
        if transport not in _TRANSPORTS:
            raise ValueError(f"transport must be one of {_TRANSPORTS}, got {transport!r}")
        last = obj.get("last_success")
        if not isinstance(last, (int, float)) or isinstance(last, bool) or not math.isfinite(last):
            raise ValueError(f"bad last_success {last!r}")
        nat = obj.get("nat", {})
        if not isinstance(nat, dict) or not all(
            isinstance(k, str) and isinstance(v, str) and len(k) + len(v) < 200
            for k, v in nat.items()
        ):
            raise ValueError("nat must map short strings to short strings")
        failures = obj.get("failures", 0)  # absent in older files
        if not isinstance(failures, int) or isinstance(failures, bool) or not 0 <= failures < 1000:
            raise ValueError(f"bad failures {failures!r}")
        return cls(peer_id, tuple(endpoints), transport, float(last), dict(nat), failures)


class BootstrapCache:
    """The cache file at ``path``; see the module docstring."""

    def __init__(self, path: Path, capacity: int = DEFAULT_CAPACITY) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.path = Path(path)
        self.capacity = capacity
        self._lock_path = self.path.with_name(self.path.name + ".lock")

    # -- reading -------------------------------------------------------------------

    def load(self) -> list[CacheEntry]:
        """The entries, most recently successful first. A corrupt file is
        moved aside (and an empty list returned); an unreadable one is
        logged and treated as empty."""
        try:
            with self._locked():
                return self._read_locked()
        except OSError as exc:
            logger.warning("bootstrap cache %s unusable: %s", self.path, exc)
            return []

    # -- writing ----------------------------------------------------------------------

    def record(self, entries: Iterable[CacheEntry]) -> bool:
        """Merge ``entries`` (newer success wins per peer id), keep the
        ``capacity`` most recent, write atomically. False (logged) when the
        file could not be written."""
        new = list(entries)
        if not new:
            return True
        try:
            with self._locked():
                merged = {e.peer_id: e for e in self._read_locked()}
                for e in new:
                    old = merged.get(e.peer_id)
                    if old is None or e.last_success >= old.last_success:
                        merged[e.peer_id] = e
                self._write_locked(merged.values())
            return True
        except OSError as exc:
            logger.warning("bootstrap cache %s not written: %s", self.path, exc)
            return False

    def record_failures(self, peer_ids: Iterable[PeerId]) -> bool:
        """One more failed bootstrap attempt for each of ``peer_ids``; an
        entry that reaches :data:`MAX_FAILURES` is dropped. A success
        (:meth:`record`) starts the count again."""
        failed = set(peer_ids)
        if not failed:
            return True
        try:
            with self._locked():
                kept = []
                for e in self._read_locked():
                    if e.peer_id in failed:
                        if e.failures + 1 >= MAX_FAILURES:
                            logger.info(
                                "bootstrap cache: dropping %s (failed %d times)",
                                e.peer_id.short,
                                MAX_FAILURES,
                            )
                            continue
                        e = dataclasses.replace(e, failures=e.failures + 1)
                    kept.append(e)
                self._write_locked(kept)
            return True
        except OSError as exc:
            logger.warning("bootstrap cache %s not written: %s", self.path, exc)
            return False

    def forget(self, peer_ids: Iterable[PeerId]) -> bool:
        """Remove entries (e.g. blacklisted peers)."""
        drop = set(peer_ids)
        try:
            with self._locked():
                kept = [e for e in self._read_locked() if e.peer_id not in drop]
                self._write_locked(kept)
            return True
        except OSError as exc:
            logger.warning("bootstrap cache %s not written: %s", self.path, exc)
            return False

    # -- internals -----------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def _read_locked(self) -> list[CacheEntry]:
        try:
            with open(self.path, "rb") as f:
                raw = f.read(_MAX_FILE + 1)
        except FileNotFoundError:
            return []
        try:
            if len(raw) > _MAX_FILE:
                raise ValueError(f"larger than {_MAX_FILE} bytes")
            doc = json.loads(raw)
            if not isinstance(doc, dict) or doc.get("format") != FORMAT:
                raise ValueError("not a crust bootstrap cache")
            if doc.get("version") != VERSION:
                raise ValueError(f"unknown version {doc.get('version')!r}")
            items = doc.get("peers")
            if not isinstance(items, list):
                raise ValueError("'peers' is not a list")
        except ValueError as exc:  # json.JSONDecodeError and UnicodeDecodeError too
            self._move_aside(str(exc))
            return []
        entries: dict[PeerId, CacheEntry] = {}
        for i, item in enumerate(items):
            try:
                e = CacheEntry.from_json(item)
            except ValueError as exc:
                logger.warning("bootstrap cache %s: entry %d skipped: %s", self.path, i, exc)
                continue
            if e.peer_id not in entries or e.last_success > entries[e.peer_id].last_success:
                entries[e.peer_id] = e
        out = sorted(entries.values(), key=lambda e: e.last_success, reverse=True)
        return out[: self.capacity]

    def _move_aside(self, why: str) -> None:
        aside = self.path.with_name(self.path.name + ".corrupt")
        logger.warning(
            "bootstrap cache %s is corrupt (%s): moved to %s, starting empty", self.path, why, aside
        )
        try:
            os.replace(self.path, aside)
        except OSError as exc:
            logger.warning("could not move %s aside: %s", self.path, exc)

    def _write_locked(self, entries: Iterable[CacheEntry]) -> None:
        ordered = sorted(entries, key=lambda e: e.last_success, reverse=True)[: self.capacity]
        doc = {
            "format": FORMAT,
            "version": VERSION,
            "written": time.time(),
            "peers": [e.to_json() for e in ordered],
        }
        data = json.dumps(doc, indent=1).encode()
        directory = self.path.parent
        self._remove_stale_temps()
        tmp = directory / f".{self.path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)

    def _remove_stale_temps(self) -> None:
        """Temp files of writers killed mid-write (we hold the lock, so no
        live writer owns one)."""
        for stale in self.path.parent.glob(f".{self.path.name}.*.tmp"):
            with contextlib.suppress(OSError):
                stale.unlink()
