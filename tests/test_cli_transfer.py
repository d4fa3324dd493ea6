"""`crust send` / `crust recv` as commands: a file moves between two
processes that only know a mutual node, with path and SHA-256 reported."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sys
from pathlib import Path

from crust import Identity, Service, ServiceConfig
from crust.transfer import _target, safe_name

QUIET = {"gossip": False, "beacon": False, "cache_size": 0}


async def _crust(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "crust", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip


def test_send_and_recv_through_a_mutual_node(tmp_path: Path) -> None:
    data = os.urandom(3_000_000)
    src = tmp_path / "payload.bin"
    src.write_bytes(data)
    out = tmp_path / "out"
    out.mkdir()

    async def main() -> None:
        cfg = ServiceConfig(identity=Identity.generate(), **QUIET)
        async with Service(cfg) as m:
            via = f"127.0.0.1:{m.endpoints[0][1]}"
            common = ["--via", via, "--host", "127.0.0.1", "--json"]
            recv = await _crust("recv", *common, "--out", str(out), "--yes")
            try:
                assert recv.stdout is not None
                ready = json.loads(await asyncio.wait_for(recv.stdout.readline(), 20))
                send = await _crust("send", *common, "--to", ready["ready"], str(src))
                s_out, s_err = await asyncio.wait_for(send.communicate(), 60)
                assert send.returncode == 0, s_err.decode()
                r_out, r_err = await asyncio.wait_for(recv.communicate(), 30)
                assert recv.returncode == 0, r_err.decode()
            finally:
                if recv.returncode is None:
                    recv.kill()
                    await recv.wait()
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
