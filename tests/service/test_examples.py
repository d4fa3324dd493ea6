"""Every example in examples/ runs and does what it says.

tests/packaging/test_wheel.py runs this file again with the interpreter of a fresh
virtual environment that has only the built wheel installed, so the
examples are checked against what users install, not the source tree.
"""

from __future__ import annotations

import contextlib
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from capability import missing

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
TIMEOUT = 60


def _env(tmp_path: Path) -> dict[str, str]:
    # Identity and bootstrap cache files go to private directories, never the user's.
    env = dict(os.environ)
    env["XDG_DATA_HOME"] = str(tmp_path / "data")
    env["XDG_CACHE_HOME"] = str(tmp_path / "cache")
    env["HOME"] = str(tmp_path)
    return env


def _run(name: str, *args: str, env: dict[str, str]) -> str:
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env=env,
    )
    assert done.returncode == 0, f"{name} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def test_every_example_has_a_test() -> None:
    tested = {
        "bootstrap_node.py",
        "echo.py",
        "file_share.py",
        "hello_peer.py",
        "lan_chat.py",
        "simulated_path.py",
    }
    assert {p.name for p in EXAMPLES.glob("*.py")} == tested


def test_echo_is_at_most_fifteen_lines_of_code(tmp_path: Path) -> None:
    assert _run("echo.py", env=_env(tmp_path)).strip() == "echoed: hello, echo"
    source = (EXAMPLES / "echo.py").read_text().splitlines()
    code = [line for line in source if line.strip() and not line.lstrip().startswith("#")]
    # The module docstring is one line; the rest is code.
    assert len(code) - 1 <= 15, code


def test_hello_peer_two_processes(tmp_path: Path) -> None:
    env = _env(tmp_path)
    listener = subprocess.Popen(
        [sys.executable, str(EXAMPLES / "hello_peer.py")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert listener.stdout is not None
        first = listener.stdout.readline()
        assert first.startswith("listening on "), first + listener.communicate(timeout=5)[1]
        address = first.split()[2]
        listener_id = first.split()[-1]
        out = _run("hello_peer.py", address, env=env)
        assert f"connected to {listener_id} over direct-tcp" in out
        assert out.strip().endswith("answers 'hello to you too'")
        rest, err = listener.communicate(timeout=TIMEOUT)
        assert listener.returncode == 0, err
        assert "connected over direct-tcp" in rest and "says 'hello'" in rest
    finally:
        if listener.poll() is None:
            listener.kill()
            listener.communicate()


def test_file_share_by_peer_id(tmp_path: Path) -> None:
    env = _env(tmp_path)
    shared = tmp_path / "shared.bin"
    shared.write_bytes(os.urandom(3 << 20) + b"tail")
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    sender = subprocess.Popen(
        [sys.executable, str(EXAMPLES / "file_share.py"), "send", str(shared)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert sender.stdout is not None
        first = sender.stdout.readline().split()
        assert first[:3] == ["python", "file_share.py", "receive"], first
        peer_id, address = first[3], first[4]
        out = _run("file_share.py", "receive", peer_id, address, str(inbox), env=env)
        assert "100% of 3145732 bytes" in out
        assert out.strip().splitlines()[-1].startswith("sha256 ok: ")
        assert (inbox / "shared.bin").read_bytes() == shared.read_bytes()
        rest, err = sender.communicate(timeout=TIMEOUT)
        assert sender.returncode == 0, err
        assert rest.strip().endswith(": sha256 ok")
    finally:
        if sender.poll() is None:
            sender.kill()
            sender.communicate()


def test_file_share_refuses_the_wrong_peer(tmp_path: Path) -> None:
    """The peer id is checked by the handshake: another id fails to connect."""
    env = _env(tmp_path)
    shared = tmp_path / "shared.bin"
    shared.write_bytes(b"secret")
    sender = subprocess.Popen(
        [sys.executable, str(EXAMPLES / "file_share.py"), "send", str(shared)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert sender.stdout is not None
        address = sender.stdout.readline().split()[4]
        someone_else = subprocess.run(
            [sys.executable, "-c", "import crust; print(crust.Identity.generate().peer_id)"],
            capture_output=True,
            text=True,
            check=True,
            timeout=TIMEOUT,
        ).stdout.strip()
        inbox = tmp_path / "inbox"
        inbox.mkdir()
        receive = ["receive", someone_else, address, str(inbox)]
        done = subprocess.run(
            [sys.executable, str(EXAMPLES / "file_share.py"), *receive],
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            env=env,
        )
        assert done.returncode != 0
        # The traceback names crust.errors.ConnectTimeout (the wrong node
        # never answers) or ConnectError: ConnectionErrors both.
        assert re.search(r"crust\.errors\.Connect(Timeout|Error): ", done.stderr), done.stderr
        assert list(inbox.iterdir()) == []
    finally:
        sender.kill()
        sender.communicate()


class _Program:
    """An example running in the background; its stdout read line by line."""

    def __init__(self, env: dict[str, str], name: str, *args: str) -> None:
        self.popen = subprocess.Popen(
            [sys.executable, "-u", str(EXAMPLES / name), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.lines: list[str] = []
        # Lines arrive through a reader thread, so that a program that stops
        # printing fails the test with its output instead of hanging it.
        self._queue: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        # stop() may close the pipe under us: that is the end too.
        with contextlib.suppress(ValueError, OSError):
            for line in self.popen.stdout:
                self._queue.put(line)
        self._queue.put("")  # end of output

    def expect(self, fragment: str, count: int = 1) -> str:
        """Read until ``count`` lines containing ``fragment`` were printed."""
        deadline = time.monotonic() + TIMEOUT
        while sum(fragment in line for line in self.lines) < count:
            try:
                line = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(
                    f"no {fragment!r} after {TIMEOUT} s in {self.lines}"
                ) from None
            if not line:
                _, err = self.popen.communicate(timeout=5)
                raise AssertionError(f"no {fragment!r} in {self.lines}; stderr:\n{err}")
            self.lines.append(line.rstrip("\n"))
        return next(line for line in reversed(self.lines) if fragment in line)

    def stop(self) -> None:
        """Interrupt (Ctrl-C) if still running; always reap it and close its pipes."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGINT)
        try:
            self.popen.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.communicate()


def test_lan_chat_through_a_bootstrap_node(tmp_path: Path) -> None:
    """Three chat nodes given only the bootstrap node's address find each
    other through it (contact gossip) and a line typed at one reaches the
    others. On loopback the beacon stays silent; the LAN path is tested in
    tests/netlab/test_netlab_examples.py."""
    env = _env(tmp_path)
    programs: list[_Program] = []
    try:
        node = _Program(env, "bootstrap_node.py", "--host", "127.0.0.1", "--port", "0")
        programs.append(node)
        contact = node.expect("bootstrap node ").split()[-1]
        chats = {}
        for name in ("alice", "bob", "carol"):
            chats[name] = _Program(
                env, "lan_chat.py", name, "--host", "127.0.0.1", "--contact", contact
            )
            programs.append(chats[name])
        for chat in chats.values():
            # The bootstrap node and the two other chats.
            chat.expect("joined over", count=3)
        carol = chats["carol"].popen
        assert carol.stdin is not None
        carol.stdin.write("hello from carol\n")
        carol.stdin.flush()
        for name in ("alice", "bob"):
            chats[name].expect("carol: hello from carol")
        # End of input: carol leaves, and the others see her go.
        _, err = carol.communicate(timeout=TIMEOUT)
        assert carol.returncode == 0, err
        for name in ("alice", "bob"):
            chats[name].expect(" left: ")
        stats = node.expect('"peers": 3')
        assert '"incoming": 3' in stats
    finally:
        for program in programs:
            program.stop()


def test_simulated_path(tmp_path: Path) -> None:
    out = _run("simulated_path.py", env=_env(tmp_path)).splitlines()
    assert out[0].startswith("1 MiB arrived after ")
    assert out[-1] == "sha256 ok: True"
    # 2 % loss on the path: the transfer had something to recover from.
    lost = int(out[1].split("lost ")[1].split(",")[0])
    assert lost > 0


def test_c_engine_pair(tmp_path: Path) -> None:
    """The C embedding example builds against csrc/ alone and runs."""
    source_root = EXAMPLES.parent
    if not (source_root / "csrc" / "crust.h").exists():
        missing("needs the source tree (csrc/)")
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        missing("no C compiler")
    binary = tmp_path / "engine_pair"
    subprocess.run(
        [
            cc, "-std=gnu11", "-O1", "-Wall", "-Wextra", "-Werror",
            f"-I{source_root / 'csrc'}", str(EXAMPLES / "c" / "engine_pair.c"),
            *map(str, sorted((source_root / "csrc").glob("*.c"))), "-lm", "-o", str(binary),
        ],
        check=True,
        timeout=120,
    )  # fmt: skip
    done = subprocess.run([str(binary)], capture_output=True, text=True, timeout=TIMEOUT)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[:2] == ["b got: hello from C", "a got: hello from b"]
