"""`crust recv --via NODE` stays reachable (issue 16 item 1) and the
commands take their configuration as `crust node` does (item 2), with
real processes: `crust node`, `crust recv --via` it, `crust send --to`.

Against 8b6df56: the node pruned the receiver one prune interval after it
joined ("idle and not maintained"), and the send failed with "is not
connected to"; a receiver whose node restarted waited forever, silent;
`send`/`recv` ignored ``CRUST_*`` and had no ``--config`` or ``--stun``."""

from __future__ import annotations

import hashlib
import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from crust import Identity
from crust.cli import main
from crust.transfer import command_config

PRUNE = 1.5


@pytest.fixture(autouse=True)
def _private_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Identity, config and cache live in user directories: keep the test's
    # apart; no LAN beacon, no cache, and a short prune interval everywhere.
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("CRUST_BEACON", "false")
    monkeypatch.setenv("CRUST_CACHE_SIZE", "0")
    monkeypatch.setenv("CRUST_PRUNE_AFTER", str(PRUNE))
    monkeypatch.delenv("CRUST_CONFIG", raising=False)


class Child:
    """A `crust` process whose output lines are read as they come."""

    def __init__(self, *argv: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "crust", *argv],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        self.err = ""
        assert self.proc.stdout is not None
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        with self.proc.stdout as stream:
            for line in stream:
                self.lines.put(line.rstrip("\n"))

    def expect(self, pattern: str, timeout: float = 20.0) -> re.Match[str]:
        """The first new line matching ``pattern``."""
        give_up = time.monotonic() + timeout
        while True:
            left = give_up - time.monotonic()
            try:
                line = self.lines.get(timeout=max(0.01, left))
            except queue.Empty:
                raise AssertionError(
                    f"no line matching {pattern!r} in {timeout} s; saw {self.seen}"
                ) from None
            self.seen.append(line)
            if m := re.search(pattern, line):
                return m

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(10)
        if self.proc.stderr is not None and not self.proc.stderr.closed:
            with self.proc.stderr as stream:
                self.err = stream.read()
        return self.proc.returncode


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _node(identity: Path, port: int = 0) -> tuple[Child, str]:
    node = Child("node", "--host", "127.0.0.1", "--port", str(port), "--identity", str(identity))
    m = node.expect(r"listening on (127\.0\.0\.1:\d+)")
    return node, m.group(1)


@pytest.fixture
def procs() -> Iterator[list[Child]]:
    started: list[Child] = []
    yield started
    for c in started:
        c.stop()


def _send(via: str, pid: str, file: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "crust", "send", "--via", via, "--host", "127.0.0.1",
         "--to", pid, str(file)],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def _payload(tmp_path: Path) -> tuple[Path, Path, str]:
    src = tmp_path / "payload.bin"
    data = os.urandom(200_000)
    src.write_bytes(data)
    out = tmp_path / "out"
    out.mkdir()
    return src, out, hashlib.sha256(data).hexdigest()


def test_recv_is_reachable_after_twice_the_prune_interval(
    tmp_path: Path, procs: list[Child]
) -> None:
    node, via = _node(tmp_path / "node.key")
    procs.append(node)
    src, out, sha = _payload(tmp_path)
    recv = Child("recv", "--via", via, "--host", "127.0.0.1", "--yes", "--out", str(out))
    procs.append(recv)
    m = recv.expect(rf"waiting for a file; reachable as (\S+) through {via}")
    t0 = time.monotonic()
    time.sleep(2.5 * PRUNE)
    sent = _send(via, m.group(1), src)
    span = time.monotonic() - t0
    assert sent.returncode == 0, sent.stderr
    assert recv.proc.wait(30) == 0
    assert hashlib.sha256((out / "payload.bin").read_bytes()).hexdigest() == sha
    node.stop()
    assert not [ln for ln in node.seen if "pruned" in ln]
    print(f"\nFIGURE crust recv reached by crust send {span:.1f} s after joining "
          f"= {span / PRUNE:.1f} prune intervals")  # fmt: skip


def test_recv_rejoins_its_restarted_node_and_says_so(tmp_path: Path, procs: list[Child]) -> None:
    port = _free_port()
    node, via = _node(tmp_path / "node.key", port)
    procs.append(node)
    src, out, sha = _payload(tmp_path)
    recv = Child("recv", "--via", via, "--host", "127.0.0.1", "--yes", "--out", str(out))
    procs.append(recv)
    pid = recv.expect(r"reachable as (\S+) through")[1]
    assert node.stop() == 130  # Ctrl-C: the node closes its connections
    recv.expect(rf"lost {via} \(.*\); not reachable until it is rejoined", timeout=10)
    time.sleep(1.0)
    t_up = time.monotonic()
    node, _ = _node(tmp_path / "node.key", port)  # same identity, same port
    procs.append(node)
    m = recv.expect(rf"rejoined {via} after ([\d.]+) s; reachable again as {pid}", timeout=15)
    rejoin = time.monotonic() - t_up
    sent = _send(via, pid, src)
    assert sent.returncode == 0, sent.stderr
    assert recv.proc.wait(30) == 0
    assert hashlib.sha256((out / "payload.bin").read_bytes()).hexdigest() == sha
    print(f"\nFIGURE crust recv rejoined {rejoin:.2f} s after its node restarted "
          f"(down {float(m[1]):.2f} s in all)")  # fmt: skip


def test_recv_says_when_its_node_stays_down(tmp_path: Path, procs: list[Child]) -> None:
    node, via = _node(tmp_path / "node.key")
    procs.append(node)
    recv = Child("recv", "--via", via, "--host", "127.0.0.1", "--yes", "--out", str(tmp_path))
    procs.append(recv)
    recv.expect(r"reachable as")
    node.stop()
    recv.expect(r"lost .*trying again in", timeout=10)
    recv.expect(rf"{via} still unreachable after 1 tries \(.*\); next in \d+ s", timeout=15)


# -- the configuration, as `crust node` takes it ---------------------------------


def _args(**kw: object) -> SimpleNamespace:
    base: dict[str, object] = {
        "config": None, "network": None, "host": None, "identity": None, "stun": None,
    }  # fmt: skip
    return SimpleNamespace(**{**base, **kw})


def test_send_and_recv_config_file_env_and_options(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    file = tmp_path / "crust.toml"
    file.write_text('network = "filenet"\nkeepalive = 7.0\nstun_servers = ["10.9.9.9:3478"]\n')
    monkeypatch.setenv("CRUST_KEEPALIVE", "9")
    cfg = command_config(_args(config=str(file)))
    assert cfg.network == "filenet"  # the file
    assert cfg.keepalive == 9.0  # the environment over the file
    assert cfg.prune_after == PRUNE  # CRUST_PRUNE_AFTER
    assert cfg.stun_servers == ("10.9.9.9:3478",)
    # What nobody set keeps the one-shot values; the identity is throwaway.
    assert (cfg.hosts, cfg.cache_size, cfg.gossip, cfg.beacon) == (("0.0.0.0",), 0, False, False)
    assert cfg.identity is not None and cfg.identity_path is None
    other = command_config(_args(config=str(file)))
    assert other.identity is not None and other.identity.peer_id != cfg.identity.peer_id
    # Options over everything.
    monkeypatch.setenv("CRUST_GOSSIP", "true")
    key = tmp_path / "me.key"
    stun = ["127.0.0.1:3478", "127.0.0.2:3479"]
    cfg = command_config(
        _args(config=str(file), network="optnet", host=["127.0.0.1"], stun=stun, identity=str(key))
    )
    assert cfg.network == "optnet" and cfg.hosts == ("127.0.0.1",) and cfg.gossip is True
    assert cfg.stun_servers == ("127.0.0.1:3478", "127.0.0.2:3479")
    assert cfg.identity is None and cfg.identity_path == key


def test_recv_honours_the_environment(tmp_path: Path, procs: list[Child]) -> None:
    """CRUST_NETWORK reaches `crust recv`: a receiver on another network
    than its node's cannot join it (before, the variable was ignored and
    it joined)."""
    node, via = _node(tmp_path / "node.key")
    procs.append(node)
    env = {**os.environ, "CRUST_NETWORK": "elsewhere", "CRUST_CONNECT_TIMEOUT": "2"}
    r = subprocess.run(
        [sys.executable, "-m", "crust", "recv", "--via", via, "--host", "127.0.0.1", "--yes"],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip
    assert r.returncode == 1, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"crust recv: connect to {via} failed")
    assert "Traceback" not in r.stderr


def _one_line(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    try:
        code = main(list(argv))
    except SystemExit as e:
        code = int(e.code or 0)
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert "Traceback" not in err and len(lines) == 1, err
    return code, lines[0]


@pytest.mark.parametrize("command", ["send", "recv", "node"])
def test_bad_stun_servers_are_usage_errors(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, command: str
) -> None:
    extra = {"send": ["--via", "127.0.0.1:9", "--to", "x", str(tmp_path)],
             "recv": ["--via", "127.0.0.1:9"], "node": []}[command]  # fmt: skip
    code, line = _one_line(capsys, command, *extra, "--stun", "stun.example:99999")
    assert code == 2
    assert "--stun" in line and "port must be 1..65535" in line


@pytest.mark.parametrize("command", ["send", "recv"])
def test_bad_configuration_is_one_line(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    command: str,
) -> None:
    f = tmp_path / "f.bin"
    f.write_bytes(b"x")
    extra = {"send": ["--to", str(Identity.generate().peer_id), str(f)],
             "recv": ["--yes"]}[command]  # fmt: skip
    bad = tmp_path / "bad.toml"
    bad.write_text("prune_afterr = 3\n")
    code, line = _one_line(capsys, command, "--via", "127.0.0.1:9", "--config", str(bad), *extra)
    assert code == 2 and "prune_afterr" in line and "did you mean prune_after" in line
    monkeypatch.setenv("CRUST_PRUNE_AFTER", "soon")
    code, line = _one_line(capsys, command, "--via", "127.0.0.1:9", *extra)
    assert code == 2 and "CRUST_PRUNE_AFTER" in line and "'soon'" in line
    code, line = _one_line(capsys, command, "--via", "127.0.0.1:9", "--config",
                           str(tmp_path / "missing.toml"), *extra)  # fmt: skip
    assert code == 2 and "cannot read" in line


def test_recv_json_reports_its_node_as_events(tmp_path: Path, procs: list[Child]) -> None:
    node, via = _node(tmp_path / "node.key")
    procs.append(node)
    recv = Child("recv", "--via", via, "--host", "127.0.0.1", "--yes", "--json",
                 "--out", str(tmp_path))  # fmt: skip
    procs.append(recv)
    ready = json.loads(recv.expect(r'^\{"ready"').string)
    assert ready["via"] == via
    node.stop()
    lost = json.loads(recv.expect(r'"event": "ContactLost"', timeout=10).string)
    host, port = via.rsplit(":", 1)
    assert lost["address"] == [host, int(port)] and lost["attempts"] == 0 and lost["reason"]


def test_node_connect_rejoins_a_restarted_node(tmp_path: Path, procs: list[Child]) -> None:
    port = _free_port()
    a, via = _node(tmp_path / "a.key", port)
    procs.append(a)
    b = Child("node", "--host", "127.0.0.1", "--identity", str(tmp_path / "b.key"),
              "--connect", via)  # fmt: skip
    procs.append(b)
    b.expect(r"^ContactJoined .*rejoined=false")
    assert a.stop() == 130
    b.expect(r"^ContactLost ", timeout=10)
    a, _ = _node(tmp_path / "a.key", port)
    procs.append(a)
    b.expect(r"^ContactJoined .*rejoined=true", timeout=15)
