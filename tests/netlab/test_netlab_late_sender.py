"""A late sender across NATs, through the commands (issue 16, item 8).

``crust recv --via NODE`` behind one NAT joins a ``crust node`` on the
public side and waits; ``crust send --to ID --via NODE`` behind another NAT
starts only after twice the node's prune interval. Before the reachability
contract (docs/design/0053) the node pruned the idle receiver one prune
interval after it joined and the send failed with "not connected here".
The prune interval is shortened for the test through ``CRUST_PRUNE_AFTER``
(every process reads it: crust/config_sources.py), so the test takes
seconds, not minutes. tests/service/test_cli_reach.py is the loopback version.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from pathlib import Path

from lab import BOOTSTRAP_IP, Lab

PRUNE = 2.0
PORT = 7300


def _env(home: Path) -> dict[str, str]:
    # Private identity/config/cache directories, no LAN beacon, no address
    # cache, and the short prune interval in every process.
    return dict(
        os.environ,
        PYTHONUNBUFFERED="1",
        XDG_DATA_HOME=str(home / "data"),
        XDG_CONFIG_HOME=str(home / "config"),
        XDG_CACHE_HOME=str(home / "cache"),
        CRUST_BEACON="false",
        CRUST_CACHE_SIZE="0",
        CRUST_PRUNE_AFTER=str(PRUNE),
    )


def test_late_sender_reaches_recv_across_nats(netlab: Lab, tmp_path: Path) -> None:
    node = netlab.server.spawn(
        sys.executable, "-m", "crust", "node", "--host", BOOTSTRAP_IP, "--port", str(PORT),
        "--identity", str(tmp_path / "node.key"), env=_env(tmp_path / "node"),
    )  # fmt: skip
    node.expect(r"listening on ", 30)
    via = f"{BOOTSTRAP_IP}:{PORT}"
    rsite, ssite = netlab.add_site("r", "cone-fw"), netlab.add_site("s", "cone-fw")
    data = os.urandom(500_000)
    src = tmp_path / "late.bin"
    src.write_bytes(data)
    out = tmp_path / "out"
    out.mkdir()
    recv = rsite.host.spawn(
        sys.executable, "-m", "crust", "recv", "--via", via, "--host", rsite.host.ip,
        "--out", str(out), "--json", "--yes", env=_env(tmp_path / "recv"),
    )  # fmt: skip
    peer_id = json.loads(recv.readline(30))["ready"]
    joined = time.monotonic()
    time.sleep(2 * PRUNE + 0.5)
    send = ssite.host.spawn(
        sys.executable, "-m", "crust", "send", "--via", via, "--host", ssite.host.ip,
        "--to", peer_id, str(src), "--json", env=_env(tmp_path / "send"),
    )  # fmt: skip
    sent = json.loads(send.readline(60))
    span = time.monotonic() - joined
    got = json.loads(recv.readline(60))
    assert send.wait(10) == 0 and recv.wait(10) == 0, (send.stderr()[-2000:], recv.stderr()[-2000:])
    digest = hashlib.sha256(data).hexdigest()
    assert sent["verified"] and sent["sha256"] == got["sha256"] == digest, (sent, got)
    assert Path(got["saved"]).read_bytes() == data
    # Two cone NATs with firewalls: punched; relayed would still be a pass
    # of the reachability contract, but not what this pair should get.
    assert sent["path"] in ("punched-udp", "relayed"), sent
    assert not [ln for ln in node.stdout_lines + node.stderr_lines if "pruned" in ln]
    print(
        f"\nFIGURE late sender (cone-fw -> cone-fw, crust send/recv via crust node, "
        f"prune {PRUNE:.0f} s): sent {span:.1f} s after recv joined "
        f"= {span / PRUNE:.1f} prune intervals, path {sent['path']}, "
        f"{sent['seconds']:.2f} s to send"
    )
