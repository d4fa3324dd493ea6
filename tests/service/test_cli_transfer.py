"""`crust send` / `crust recv` as commands: a file moves between two
processes that only know a mutual node, with path and SHA-256 reported."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import pty
import sys
import unicodedata
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from crust import Identity, Service, ServiceConfig
from crust.transfer import MAX_NAME_BYTES, TransferRefused, _target, safe_name, send_file

QUIET = {"gossip": False, "beacon": False, "cache_size": 0}


async def _crust(*args: str, stdin: int | None = None) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "crust", *args, stdin=stdin,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip


@contextlib.asynccontextmanager
async def _receiver(
    *args: str, stdin: int | None = None
) -> AsyncIterator[tuple[str, asyncio.subprocess.Process]]:
    """A mutual node on loopback and `crust recv --via` it with ``args``:
    (the --via address, the recv process), killed at the end if running."""
    async with Service(ServiceConfig(identity=Identity.generate(), **QUIET)) as m:
        via = f"127.0.0.1:{m.endpoints[0][1]}"
        recv = await _crust("recv", "--via", via, "--host", "127.0.0.1", *args, stdin=stdin)
        try:
            yield via, recv
        finally:
            if recv.returncode is None:
                recv.kill()
                await recv.wait()


def test_send_and_recv_through_a_mutual_node(tmp_path: Path) -> None:
    data = os.urandom(3_000_000)
    src = tmp_path / "payload.bin"
    src.write_bytes(data)
    out = tmp_path / "out"
    out.mkdir()

    async def main() -> None:
        async with _receiver("--json", "--out", str(out), "--yes") as (via, recv):
            pid = await _ready(recv)
            send = await _crust(
                "send", "--via", via, "--host", "127.0.0.1", "--json", "--to", pid, str(src)
            )
            s_out, s_err = await asyncio.wait_for(send.communicate(), 60)
            assert send.returncode == 0, s_err.decode()
            r_out, r_err = await asyncio.wait_for(recv.communicate(), 30)
            assert recv.returncode == 0, r_err.decode()
            sent, got = json.loads(s_out), json.loads(r_out)
            digest = hashlib.sha256(data).hexdigest()
            assert sent["verified"] and sent["sha256"] == got["sha256"] == digest
            assert sent["size"] == got["size"] == len(data)
            assert sent["path"] == got["path"] == "direct-udp"
            assert Path(got["saved"]).read_bytes() == data

    asyncio.run(asyncio.wait_for(main(), 120))


def test_send_rejects_bad_arguments(tmp_path: Path) -> None:
    async def main() -> None:
        bad = await _crust("send", "--via", "nowhere", "--to", "x", str(tmp_path / "missing"))
        _, err = await bad.communicate()
        assert bad.returncode == 2 and b"not a readable file" in err
        (tmp_path / "f").write_bytes(b"x")
        bad = await _crust("send", "--via", "127.0.0.1:1", "--to", "notanid", str(tmp_path / "f"))
        _, err = await bad.communicate()
        assert bad.returncode == 2 and b"crust send:" in err

    asyncio.run(main())


def test_received_names_stay_inside_the_directory(tmp_path: Path) -> None:
    assert safe_name("../../etc/passwd") == "passwd"
    assert safe_name("..") == "received.bin"
    (tmp_path / "a.txt").write_bytes(b"")
    assert _target(tmp_path, "a.txt") == tmp_path / "a.txt.1"
    # A part file in progress takes its name too.
    (tmp_path / "b.txt.part").write_bytes(b"")
    assert _target(tmp_path, "b.txt") == tmp_path / "b.txt.1"


async def _ready(recv: asyncio.subprocess.Process) -> str:
    """The receiver's peer id, from its first line (--json or not)."""
    assert recv.stdout is not None
    line = (await asyncio.wait_for(recv.stdout.readline(), 20)).decode()
    if line.startswith("{"):
        return str(json.loads(line)["ready"])
    return line.split("--to ")[1].split()[0]


def _sender() -> ServiceConfig:
    return ServiceConfig(identity=Identity.generate(), hosts=("127.0.0.1",), **QUIET)


HOSTILE = [
    # A name that would repaint the terminal and forge an output line.
    ("evil\x1b[2J\x1b[1;1Hname\nsaved     forged.txt", "evil_[2J_[1;1Hname_saved     forged.txt"),
    ("../../.ssh/authorized_keys", "authorized_keys"),
    (".bashrc", "bashrc"),
    ("a" * 300 + ".txt", "a" * (MAX_NAME_BYTES - 4) + ".txt"),
    ("\u202etxt.exe", "_txt.exe"),  # a right-to-left override hiding the extension
    ("cafe\u0301.txt", "caf\u00e9.txt"),  # NFC: one code point, as typed
]


@pytest.mark.parametrize(("announced", "saved"), HOSTILE)
def test_hostile_names_land_safely(tmp_path: Path, announced: str, saved: str) -> None:
    """What lands on disk is the sanitized name inside --out, nothing else;
    what the receiver prints carries no control character."""
    assert safe_name(announced) == saved
    data = os.urandom(100_000)
    src = tmp_path / "payload.bin"
    src.write_bytes(data)
    out = tmp_path / "out"
    out.mkdir()

    async def main() -> tuple[bytes, bytes]:
        async with _receiver("--yes", "--out", str(out)) as (via, recv):
            pid = await _ready(recv)
            sent = await send_file(_sender(), via, pid, src, name=announced)
            assert sent.verified
            r_out, r_err = await asyncio.wait_for(recv.communicate(), 30)
            assert recv.returncode == 0, r_err.decode()
            return r_out, r_err

    r_out, r_err = asyncio.run(asyncio.wait_for(main(), 60))
    assert [p.name for p in out.iterdir()] == [saved]
    assert (out / saved).read_bytes() == data
    assert len(saved.encode()) <= 255 and not saved.startswith(".")
    terminal = (r_out + r_err).decode()
    assert not any(unicodedata.category(c) in ("Cc", "Cf") for c in terminal if c != "\n")
    assert "saved     forged.txt" not in terminal.splitlines()


def test_from_refuses_other_senders(tmp_path: Path) -> None:
    src = tmp_path / "f"
    src.write_bytes(b"hello")
    out = tmp_path / "out"
    out.mkdir()
    expected = str(Identity.generate().peer_id)

    async def main() -> None:
        async with _receiver("--yes", "--from", expected, "--out", str(out)) as (via, recv):
            pid = await _ready(recv)
            with pytest.raises(TransferRefused, match="not accepted from this sender"):
                await send_file(_sender(), via, pid, src)
            assert recv.returncode is None  # still waiting for the right sender

    asyncio.run(asyncio.wait_for(main(), 60))
    assert list(out.iterdir()) == []


@pytest.mark.parametrize("answer", ["y", "n"])
def test_the_prompt_shows_sender_name_and_size(tmp_path: Path, answer: str) -> None:
    """On a terminal, recv asks before taking the file (a pty stands in for
    the user's terminal)."""
    src = tmp_path / "report.pdf"
    src.write_bytes(os.urandom(1_500_000))
    out = tmp_path / "out"
    out.mkdir()
    master, slave = pty.openpty()
    sender_cfg = _sender()
    assert sender_cfg.identity is not None
    sender_id = str(sender_cfg.identity.peer_id)

    async def main() -> tuple[int | None, str, BaseException | None]:
        async with _receiver("--out", str(out), stdin=slave) as (via, recv):
            pid = await _ready(recv)
            send = asyncio.ensure_future(send_file(sender_cfg, via, pid, src))
            assert recv.stderr is not None
            prompt = b""
            while b"[y/N]" not in prompt:
                prompt += await asyncio.wait_for(recv.stderr.read(200), 20)
            os.write(master, answer.encode() + b"\n")
            failure: BaseException | None = None
            try:
                await asyncio.wait_for(send, 30)
            except TransferRefused as e:
                failure = e
            _, rest = await asyncio.wait_for(recv.communicate(), 30)
            return recv.returncode, (prompt + rest).decode(), failure

    try:
        code, err, failure = asyncio.run(asyncio.wait_for(main(), 60))
    finally:
        os.close(master)
        os.close(slave)
    assert f"accept report.pdf (1.5 MB) from {sender_id}? [y/N]" in err
    if answer == "y":
        assert code == 0 and failure is None
        assert (out / "report.pdf").read_bytes() == src.read_bytes()
    else:
        assert code == 1 and isinstance(failure, TransferRefused)
        assert list(out.iterdir()) == []
