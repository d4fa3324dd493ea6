"""The demos and the command line, as a user runs them."""

from __future__ import annotations

import io
import subprocess
import sys

from crust.cli import main
from crust.demo import run_demo
from crust.sim_demo import run_demo as run_sim_demo


def test_local_demo_over_tcp_and_udp() -> None:
    out = io.StringIO()
    r = run_demo(blob_mb=20, out=out)
    assert r.ok, out.getvalue()
    assert r.paths == {"bob": "direct-tcp", "carol": "direct-udp"}
    text = out.getvalue()
    assert "hello world from alice to bob" in text and "hello world from carol to alice" in text
    assert text.count("sha256 ok") == 2


def test_simulated_demo_moves_the_blob_intact() -> None:
    out = io.StringIO()
    r = run_sim_demo(blob_mb=4, loss=0.02, out=out)
    assert r.hello_ok and r.blob_ok and r.blob_bytes == 4 << 20
    assert r.goodput_bps > 0.6 * 50e6
    assert "sha256 ok" in out.getvalue()


def test_cli_version_and_errors() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "crust", "--version"], capture_output=True, text=True, check=True
    )
    assert done.stdout.startswith("crust ")
    assert main(["demo", "--loss", "0.9"]) == 2
    bad = subprocess.run(
        [sys.executable, "-m", "crust", "demo", "--mb", "0"], capture_output=True, text=True
    )
    assert bad.returncode == 2 and "--mb must be in" in bad.stderr
