"""The demo and the command line, as a user runs them."""

from __future__ import annotations

import io
import subprocess
import sys

from crust.cli import main
from crust.demo import run_demo


def test_demo_moves_the_blob_intact() -> None:
    out = io.StringIO()
    r = run_demo(blob_mb=4, loss=0.02, out=out)
    assert r.hello_ok and r.blob_ok and r.blob_bytes == 4 << 20
    assert r.goodput_bps > 0.6 * 50e6
    text = out.getvalue()
    assert "hello world from alice" in text and "sha256 ok" in text


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
