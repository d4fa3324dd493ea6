"""Build and run the C unit tests (tests/c/test_*.c) against csrc/*.c.

Each test program is built twice with the system compiler: once optimised
with warnings as errors, once with AddressSanitizer and UBSan. This needs
the source tree, not the installed package, so paths are found relative to
this file.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from capability import missing
from cbuild import build, run

ROOT = Path(__file__).resolve().parents[2]
CSRC = ROOT / "csrc"
C_TESTS = sorted((ROOT / "tests" / "c").glob("test_*.c"))

COMMON_FLAGS = ["-std=gnu11", f"-I{CSRC}"]
BUILDS = {
    "werror": ["-O2", "-Wall", "-Wextra", "-Werror"],
    "sanitize": [
        "-O1",
        "-g",
        "-fsanitize=address,undefined",
        "-fno-sanitize-recover=undefined",
        "-fno-omit-frame-pointer",
    ],
}
RUN_ENV = {
    "ASAN_OPTIONS": "detect_leaks=1",
    "UBSAN_OPTIONS": "halt_on_error=1:print_stacktrace=1",
}
BUILD_TIMEOUT = 600
RUN_TIMEOUT = 600


def _compiler() -> str:
    cc = shutil.which(os.environ.get("CC", "cc"))
    if cc is None:
        missing("no C compiler (cc) found; set CC or install gcc/clang")
    return cc


def _run(cmd: list[str], cwd: Path, timeout: int, env: dict[str, str] | None = None) -> str:
    proc = run(cmd, cwd=cwd, env=env, timeout=timeout)
    if proc.returncode != 0:
        pytest.fail(
            f"{' '.join(cmd)}\nexited with {proc.returncode}:\n{proc.stdout}", pytrace=False
        )
    return proc.stdout


@pytest.fixture(scope="session")
def core_objects(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, list[Path]]]:
    """csrc/*.c compiled once per build kind, in parallel."""
    cc = _compiler()
    sources = sorted(CSRC.glob("*.c"))
    if not sources:
        pytest.fail(f"no C sources in {CSRC}")
    jobs = []
    objects: dict[str, list[Path]] = {}
    for kind, flags in BUILDS.items():
        out = tmp_path_factory.mktemp(f"core-{kind}")
        objects[kind] = []
        for src in sources:
            obj = out / (src.stem + ".o")
            objects[kind].append(obj)
            jobs.append([cc, *COMMON_FLAGS, *flags, "-c", str(src), "-o", str(obj)])
    build(jobs, "csrc/")
    yield objects


@pytest.mark.skipif(not CSRC.joinpath("crust.h").exists(), reason="no source tree (csrc/)")
@pytest.mark.parametrize("kind", list(BUILDS))
@pytest.mark.parametrize("source", C_TESTS, ids=[p.stem for p in C_TESTS])
def test_c_unit(
    source: Path, kind: str, core_objects: dict[str, list[Path]], tmp_path: Path
) -> None:
    cc = _compiler()
    binary = tmp_path / source.stem
    _run(
        [
            cc,
            *COMMON_FLAGS,
            *BUILDS[kind],
            str(source),
            *map(str, core_objects[kind]),
            "-o",
            str(binary),
            "-lm",
        ],
        cwd=tmp_path,
        timeout=BUILD_TIMEOUT,
    )
    env = {**os.environ, **RUN_ENV} if kind == "sanitize" else None
    output = _run([str(binary)], cwd=tmp_path, timeout=RUN_TIMEOUT, env=env)
    print(output)
