"""The bootstrap cache file: LRU cap, merge, corruption handling, atomic
writes under kill -9, two processes writing at once."""

from __future__ import annotations

import json
import logging
import os
import random
import signal
import time
import warnings
from pathlib import Path

import pytest

from crust.discovery.cache import BootstrapCache, CacheEntry, default_cache_path
from crust.identity import Identity, PeerId

IDS = [Identity.generate().peer_id for _ in range(8)]


def _entry(pid: PeerId, t: float, port: int = 5000) -> CacheEntry:
    return CacheEntry(pid, (("10.0.0.1", port),), "udp", t, {"observed": "1.2.3.4:5"})


def test_round_trip_and_newest_success_wins(tmp_path: Path) -> None:
    cache = BootstrapCache(tmp_path / "c.json")
    assert cache.load() == []
    assert cache.record([_entry(IDS[0], 100.0), _entry(IDS[1], 200.0)])
    assert cache.record([_entry(IDS[0], 50.0, port=6000)])  # older: ignored
    got = cache.load()
    assert [e.peer_id for e in got] == [IDS[1], IDS[0]]  # most recent first
    assert got[1].endpoints == (("10.0.0.1", 5000),)
    assert got[1].nat == {"observed": "1.2.3.4:5"}
    cache.record([_entry(IDS[0], 300.0, port=7000)])
    assert cache.load()[0] == _entry(IDS[0], 300.0, port=7000)
    cache.forget([IDS[0]])
    assert [e.peer_id for e in cache.load()] == [IDS[1]]
    assert (tmp_path / "c.json").stat().st_mode & 0o777 == 0o600


def test_an_entry_failing_three_start_ups_in_a_row_is_dropped(tmp_path: Path) -> None:
    cache = BootstrapCache(tmp_path / "c.json")
    cache.record([_entry(IDS[0], 100.0), _entry(IDS[1], 200.0)])
    assert cache.record_failures([IDS[0], IDS[2]])  # IDS[2]: not cached, ignored
    assert cache.record_failures([IDS[0]])
    assert {e.peer_id: e.failures for e in cache.load()} == {IDS[0]: 2, IDS[1]: 0}
    cache.record([_entry(IDS[1], 250.0)])
    assert cache.record_failures([IDS[0], IDS[1]])  # the third for IDS[0]
    assert {e.peer_id: e.failures for e in cache.load()} == {IDS[1]: 1}
    # A success starts the count again.
    cache.record([_entry(IDS[1], 300.0)])
    assert cache.load()[0].failures == 0
    # Files written before the count existed read as no failures.
    doc = json.loads((tmp_path / "c.json").read_text())
    del doc["peers"][0]["failures"]
    (tmp_path / "c.json").write_text(json.dumps(doc))
    assert cache.load()[0].failures == 0


def test_capacity_evicts_least_recently_successful(tmp_path: Path) -> None:
    cache = BootstrapCache(tmp_path / "c.json", capacity=5)
    cache.record(_entry(pid, float(i)) for i, pid in enumerate(IDS))
    kept = cache.load()
    assert [e.peer_id for e in kept] == IDS[::-1][:5]
    doc = json.loads((tmp_path / "c.json").read_text())
    assert len(doc["peers"]) == 5


def test_default_capacity_is_200(tmp_path: Path) -> None:
    cache = BootstrapCache(tmp_path / "c.json")
    ids = [Identity.generate().peer_id for _ in range(230)]
    cache.record(_entry(pid, float(i)) for i, pid in enumerate(ids))
    kept = cache.load()
    assert len(kept) == 200
    assert {e.peer_id for e in kept} == set(ids[30:])


@pytest.mark.parametrize(
    "content",
    [
        b"{not json",
        b"\xff\xfe garbage",
        b"[]",
        b'{"format": "something else", "version": 1, "peers": []}',
        b'{"format": "crust-bootstrap-cache", "version": 99, "peers": []}',
        b'{"format": "crust-bootstrap-cache", "version": 1, "peers": {}}',
        b"",
    ],
)
def test_corrupt_file_is_logged_moved_aside_and_replaced(
    tmp_path: Path, content: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "c.json"
    path.write_bytes(content)
    cache = BootstrapCache(path)
    with caplog.at_level(logging.WARNING, logger="crust"):
        assert cache.load() == []
    assert "corrupt" in caplog.text
    assert (tmp_path / "c.json.corrupt").read_bytes() == content
    assert not path.exists()
    assert cache.record([_entry(IDS[0], 1.0)])
    assert [e.peer_id for e in cache.load()] == [IDS[0]]


def test_bad_entries_are_skipped_not_fatal(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "c.json"
    good = _entry(IDS[0], 1.0).to_json()
    bad = [
        {"id": "nope"},
        {**good, "endpoints": []},
        {**good, "endpoints": [["10.0.0.1", 70000]]},
        {**good, "transport": "carrier-pigeon"},
        {**good, "last_success": "yesterday"},
        {**good, "nat": {"a": 1}},
        {**good, "failures": -1},
        {**good, "failures": "many"},
        "just a string",
    ]
    path.write_text(
        json.dumps({"format": "crust-bootstrap-cache", "version": 1, "peers": [*bad, good]})
    )
    with caplog.at_level(logging.WARNING, logger="crust"):
        got = BootstrapCache(path).load()
    assert [e.peer_id for e in got] == [IDS[0]]
    assert sum("skipped" in r.getMessage() for r in caplog.records) == len(bad)


def test_unusable_location_never_raises(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    cache = BootstrapCache(blocker / "sub" / "c.json")  # parent is a file
    assert cache.load() == []
    assert cache.record([_entry(IDS[0], 1.0)]) is False


def test_default_path_is_in_the_user_cache_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    p = default_cache_path("my-net")
    assert p.parent == tmp_path / "crust"
    assert p.name.startswith("bootstrap-") and "my-net" not in p.name
    assert default_cache_path("other") != p


def _writer_child(path: Path, first: int, count: int, seed: int) -> None:
    """In a forked child: record entries one by one, forever or ``count``."""
    rng = random.Random(seed)
    cache = BootstrapCache(path)
    i = 0
    while count < 0 or i < count:
        pid = IDS[rng.randrange(len(IDS))] if count < 0 else EXTRA[first + i]
        cache.record([_entry(pid, time.time(), port=1024 + rng.randrange(60000))])
        i += 1


EXTRA = [Identity.generate().peer_id for _ in range(100)]


def _fork(fn: object, *args: object) -> int:
    # fork() is what makes 120 kills cheap; the child only runs cache code
    # and exits, so Python 3.12's warning about forking a threaded process
    # (a lock held by another thread) does not apply to it.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # the child never returns into pytest
        code = 0
        try:
            fn(*args)  # type: ignore[operator]
        except BaseException:
            code = 1
        os._exit(code)
    return pid


def test_kill_9_during_writes_never_leaves_a_torn_file(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    BootstrapCache(path).record([_entry(IDS[0], 1.0)])
    rng = random.Random(1)
    reps = 120
    mid_write = 0
    for rep in range(reps):
        child = _fork(_writer_child, path, 0, -1, rep)
        time.sleep(rng.uniform(0.001, 0.02))
        os.kill(child, signal.SIGKILL)
        os.waitpid(child, 0)
        # A temp file left behind means the kill landed inside a write.
        mid_write += any(p.name.endswith(".tmp") for p in tmp_path.iterdir())
        doc = json.loads(path.read_bytes())  # always parses
        assert doc["format"] == "crust-bootstrap-cache"
        assert 1 <= len(doc["peers"]) <= len(IDS)
    assert not (tmp_path / "c.json.corrupt").exists()
    assert mid_write >= 5, f"only {mid_write} of {reps} kills hit a write in progress"
    assert len(BootstrapCache(path).load()) >= 1
    # Temp files of killed writers are swept by the next writer.
    BootstrapCache(path).record([_entry(IDS[1], time.time())])
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_two_processes_writing_at_once_lose_nothing(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    children = [_fork(_writer_child, path, 0, 50, 1), _fork(_writer_child, path, 50, 50, 2)]
    for child in children:
        _, status = os.waitpid(child, 0)
        assert os.waitstatus_to_exitcode(status) == 0
    got = BootstrapCache(path).load()
    assert {e.peer_id for e in got} == set(EXTRA)
    assert not (tmp_path / "c.json.corrupt").exists()
