"""csrc/noise.c under AddressSanitizer and UBSan with the real libsodium
(tests/fuzz/noise_sanitized.c): hostile handshake messages read into
buffers of exactly the promised size, refused reads leaving the state
untouched, with plain and masked ephemerals (docs/design/0082). Needs a C
compiler with the sanitizers (CI has gcc)."""

from __future__ import annotations

import os
import shutil
import sysconfig
from pathlib import Path

import nacl._sodium
from capability import missing
from cbuild import build, run

ROOT = Path(__file__).resolve().parents[2]
CSRC = ROOT / "csrc"

def test_noise_under_sanitizers(tmp_path: Path) -> None:
    cc = shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        missing("no C compiler for the sanitizer build")
    if not sysconfig.get_config_var("Py_ENABLE_SHARED"):
        # PyNaCl's module refers to the interpreter's symbols: dlopen()
        # outside Python needs them from a shared libpython.
        missing("this Python has no shared libpython to load PyNaCl's module with")
    libdir = str(sysconfig.get_config_var("LIBDIR"))
    exe = tmp_path / "noise_sanitized"
    build(
        [
            [
                cc,
                "-std=gnu11",
                "-g",
                "-O1",
                "-fsanitize=address,undefined",
                "-fno-sanitize-recover=all",
                "-fno-omit-frame-pointer",
                "-Wall",
                "-Wextra",
                "-Werror",
                f"-I{CSRC}",
                str(ROOT / "tests" / "fuzz" / "noise_sanitized.c"),
                str(CSRC / "noise.c"),
                str(CSRC / "elligator.c"),
                str(CSRC / "fe25519.c"),
                "-o",
                str(exe),
                "-ldl",
                f"-L{libdir}",
                f"-Wl,-rpath,{libdir}",
                f"-lpython{sysconfig.get_config_var('LDVERSION')}",
            ]
        ],
        "the Noise sanitizer harness",
    )
    env = {**os.environ, "ASAN_OPTIONS": "detect_leaks=0", "UBSAN_OPTIONS": "print_stacktrace=1"}
    proc = run([str(exe), nacl._sodium.__file__, "400", "19"], env=env, timeout=120)
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert "400 handshakes" in proc.stdout
    # Half the private keys have no representative: one redraw per key on
    # average, about 400 for the 200 masked handshakes' 400 ephemeral keys.
    redrawn = int(proc.stdout.split("accepted, ")[1].split()[0])
    assert 100 < redrawn < 800, proc.stdout
