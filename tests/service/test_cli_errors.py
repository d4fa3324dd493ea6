"""Every bad input of issue 17 gives one line on standard error, the right
exit code (2: usage or configuration, 1: the operation failed, 130:
Ctrl-C) and no traceback; ``--debug`` brings the traceback back.

Most cases run ``crust.cli.main`` in this process (an escaping exception
would fail the test as a traceback would); the ones about signals, log
noise and the whole program run it as a child process."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from crust import Identity, Service, ServiceConfig
from crust.cli import main

QUIET = {"gossip": False, "beacon": False, "cache_size": 0}
ID = str(Identity.generate().peer_id)


@pytest.fixture(autouse=True)
def _private_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A node's identity and config live in the user directories: keep the
    # test's apart, and no LAN beacon from a test node.
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("CRUST_BEACON", "false")
    monkeypatch.setenv("CRUST_CACHE_SIZE", "0")


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    """``crust ARGV`` in this process: (exit code, the one error line)."""
    try:
        code = main(list(argv))
    except SystemExit as e:  # argparse's usage errors
        code = int(e.code or 0)
    return code, one_line(capsys.readouterr().err)


def one_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert "Traceback" not in err, err
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture
def mutual() -> Iterator[str]:
    """A node on loopback, as ``--via`` (run on a thread's event loop)."""
    loop = asyncio.new_event_loop()
    started: asyncio.Future[str] = loop.create_future()
    stop = asyncio.Event()

    async def node() -> None:
        async with Service(ServiceConfig(identity=Identity.generate(), **QUIET)) as m:
            started.set_result(f"127.0.0.1:{m.endpoints[0][1]}")
            await stop.wait()

    import threading

    thread = threading.Thread(target=loop.run_until_complete, args=(node(),), daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not started.done():
        assert time.monotonic() < deadline, "the mutual node did not start"
        time.sleep(0.01)
    yield started.result()
    loop.call_soon_threadsafe(stop.set)
    thread.join(10)
    loop.close()


# -- usage and configuration: exit 2 ---------------------------------------------


def test_a_short_peer_id_says_how_long_it_is(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    (tmp_path / "f").write_bytes(b"x")
    code, line = run(
        capsys, "send", "--via", "127.0.0.1:5000", "--to", "abcdefg", str(tmp_path / "f")
    )
    assert code == 2
    assert line.startswith("crust send: --to 'abcdefg': ")
    assert "56 characters" in line and "has 7" in line and "expected 56 got" not in line


def test_set_blames_the_option_not_an_environment_variable(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, line = run(capsys, "config", "--set", "port=abc")
    assert code == 2
    assert "port (--set)" in line and "an integer" in line and "CRUST_PORT" not in line


@pytest.mark.parametrize(("argv", "want"), [
    (("config", "--set", "gosip=false"), "did you mean gossip?"),
    (("config", "--set", "conect_timeout=3"), "did you mean connect_timeout?"),
    (("node", "--prot", "5000"), "unknown option --prot; did you mean --port"),
    (("recv", "--via", "127.0.0.1:1", "--form", ID), "did you mean --from?"),
    (("nod",), "unknown 'nod'; did you mean node?"),
])  # fmt: skip
def test_misspellings_get_a_suggestion(
    capsys: pytest.CaptureFixture[str], argv: tuple[str, ...], want: str
) -> None:
    code, line = run(capsys, *argv)
    assert code == 2 and want in line, line


def test_a_misspelt_key_in_the_file_gets_a_suggestion_not_a_list(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "c.toml"
    path.write_text("netwrok = 'x'\n")
    code, line = run(capsys, "config", "--file", str(path))
    assert code == 2 and "did you mean network?" in line
    assert "beacon_port" not in line  # not the list of every key


@pytest.mark.parametrize("port", ["80", "70000"])
def test_ports_are_checked_by_one_rule(capsys: pytest.CaptureFixture[str], port: str) -> None:
    code, line = run(capsys, "node", "--port", port)
    assert code == 2
    assert f"must be 0 (random) or 1025..65535, got {port}" in line


def test_connect_nonsense_mentions_host_port(capsys: pytest.CaptureFixture[str]) -> None:
    code, line = run(capsys, "node", "--connect", "nonsense")
    assert code == 2 and "HOST:PORT" in line and "'nonsense'" in line


def test_an_unresolvable_stun_server_is_named(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The resolver is replaced: no DNS query leaves the machine.
    def fail(*_: object, **__: object) -> None:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", fail)
    code, line = run(capsys, "nat", "--stun", "stun.nowhere.invalid", "--no-upnp")
    assert code == 2
    assert "'stun.nowhere.invalid'" in line and "cannot resolve" in line


def test_recv_without_a_terminal_needs_yes(capsys: pytest.CaptureFixture[str]) -> None:
    # Under pytest, standard input is not a terminal.
    code, line = run(capsys, "recv", "--via", "127.0.0.1:5000")
    assert code == 2 and "--yes" in line and "terminal" in line


# -- failures at run time: exit 1 ------------------------------------------------


def test_port_in_use(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as busy:
        busy.bind(("127.0.0.1", 0))
        port = busy.getsockname()[1]
        code, line = run(capsys, "node", "--host", "127.0.0.1", "--port", str(port))
    assert code == 1
    assert line.startswith("crust node: cannot listen on 127.0.0.1 port")


def test_damaged_identity_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    key = tmp_path / "identity.key"
    key.write_text("this is not a key\n")
    key.chmod(0o600)
    code, line = run(capsys, "node", "--identity", str(key))
    assert code == 1 and str(key) in line


def test_directory_as_identity(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, line = run(capsys, "node", "--identity", str(tmp_path))
    assert code == 1 and str(tmp_path) in line


def test_connect_to_a_peer_id_nobody_knows(capsys: pytest.CaptureFixture[str]) -> None:
    code, line = run(capsys, "node", "--host", "127.0.0.1", "--connect", ID)
    assert code == 1
    assert line.startswith(f"crust node: --connect {ID}: ")


def test_send_to_an_id_that_is_not_there_says_what_to_do(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, mutual: str
) -> None:
    f = tmp_path / "f"
    f.write_bytes(b"x")
    code, line = run(capsys, "send", "--via", mutual, "--host", "127.0.0.1", "--to", ID, str(f))
    assert code == 1
    assert f"is not connected to {mutual}" in line and "crust recv --via" in line


def test_send_when_the_receiver_stops(tmp_path: Path, mutual: str) -> None:
    """The receiver accepts, takes a little, then is stopped by Ctrl-C: the
    sender says so in one line, and the receiver leaves no file behind,
    under the final name or the part file's."""
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(40_000_000))
    out = tmp_path / "out"
    out.mkdir()
    recv = child("recv", "--via", mutual, "--host", "127.0.0.1", "--yes", "--json",
                 "--out", str(out))  # fmt: skip
    try:
        assert recv.stdout is not None
        ready = recv.stdout.readline()
        pid = ready.split('"')[3]
        send = child("send", "--via", mutual, "--host", "127.0.0.1", "--to", pid, str(big))
        # Kill the receiver as soon as its part file has some bytes.
        deadline = time.monotonic() + 30
        while not any(p.stat().st_size for p in out.glob("*.part")):
            assert time.monotonic() < deadline and send.poll() is None, send.communicate()
            time.sleep(0.005)
        assert interrupt(recv) == "crust recv: interrupted"
        _, err = send.communicate(timeout=60)
    finally:
        recv.kill()
        recv.communicate()
    assert send.returncode == 1, err
    assert one_line(err).startswith("crust send: ")
    assert list(out.iterdir()) == []


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_send_when_the_receiver_is_killed(
    tmp_path: Path, mutual: str, monkeypatch: pytest.MonkeyPatch, as_json: bool
) -> None:
    """The receiver's process is killed mid-transfer over UDP (issue 15): the
    sender notices within seconds (ICMP port unreachable, then an
    unanswered probe), says so in one line (and, with --json, as a JSON
    object on standard output) and exits 1, no traceback. Against 498f1dd
    it waited for the 60 s idle timeout."""
    monkeypatch.setenv("CRUST_TCP", "false")  # the children: UDP only
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(40_000_000))
    out = tmp_path / "out"
    out.mkdir()
    recv = child("recv", "--via", mutual, "--host", "127.0.0.1", "--yes", "--json",
                 "--out", str(out))  # fmt: skip
    try:
        assert recv.stdout is not None
        pid = recv.stdout.readline().split('"')[3]
        json_flag = ["--json"] if as_json else []
        send = child("send", "--via", mutual, "--host", "127.0.0.1", "--to", pid, *json_flag,
                     str(big))  # fmt: skip
        deadline = time.monotonic() + 30
        while not any(p.stat().st_size for p in out.glob("*.part")):
            assert time.monotonic() < deadline and send.poll() is None, send.communicate()
            time.sleep(0.005)
        recv.kill()
        t0 = time.monotonic()
        stdout, err = send.communicate(timeout=60)
        took = time.monotonic() - t0
    finally:
        recv.kill()
        recv.communicate()
    assert send.returncode == 1, err
    line = one_line(err)
    assert line.startswith("crust send: the receiver was lost after "), line
    assert "peer unreachable" in line, line
    assert took < 5.0, f"{took:.2f} s to notice"
    if as_json:
        report = json.loads(stdout.strip().splitlines()[-1])
        assert report["lost"] is True and report["reason"].startswith("peer unreachable")
        assert report["sent"] > 0 and report["error"] == line[len("crust send: ") :]


# -- Ctrl-C: exit 130, no traceback ------------------------------------------------


def child(*argv: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "crust", *argv],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def interrupt(proc: subprocess.Popen[str]) -> str:
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 130, err
    return one_line(err)


def test_ctrl_c_while_receiving_exits_130(mutual: str, tmp_path: Path) -> None:
    recv = child("recv", "--via", mutual, "--host", "127.0.0.1", "--yes", "--out", str(tmp_path))
    assert recv.stdout is not None
    assert recv.stdout.readline().startswith("waiting for a file")
    assert interrupt(recv) == "crust recv: interrupted"


def test_ctrl_c_while_send_connects_exits_130(tmp_path: Path) -> None:
    f = tmp_path / "f"
    f.write_bytes(b"x")
    # A --via that never answers: the send is stuck connecting.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        via = f"127.0.0.1:{silent.getsockname()[1]}"
        send = child("send", "--via", via, "--host", "127.0.0.1", "--to", ID, str(f))
        time.sleep(1.5)
        assert send.poll() is None
        assert interrupt(send) == "crust send: interrupted"


def test_ctrl_c_in_a_node_exits_130(tmp_path: Path) -> None:
    node = child("node", "--host", "127.0.0.1")
    assert node.stdout is not None
    assert node.stdout.readline().startswith("node ")
    assert interrupt(node) == "crust node: interrupted"


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    key = tmp_path / "identity.key"
    key.write_text("garbage\n")
    key.chmod(0o600)
    proc = child("node", "--identity", str(key), "--debug")
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 1
    assert "Traceback" in err and "IdentityError" in err
