"""Build the libFuzzer targets (tests/fuzz/fuzz_*.c) with clang and run each
for a bounded time against its seed corpus (tests/data/fuzz_*/).

Any crash, leak, sanitizer report (ASan, UBSan) or broken engine invariant
fails the test, naming the input libFuzzer saved; reproduce it with
``<binary> <input>``. The run time per target is CRUST_FUZZ_SECONDS, by
default 30 s under CI and 10 s otherwise (longer runs by hand). Targets run one after another:
each keeps one core busy, and CI machines have two.

clang is required under CI (scripts/test.sh installs it when missing);
elsewhere its absence skips these tests.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from capability import missing
from cbuild import build, run

ROOT = Path(__file__).resolve().parents[2]
CSRC = ROOT / "csrc"
FUZZ = ROOT / "tests" / "fuzz"
DATA = ROOT / "tests" / "data"
TARGETS = ["fuzz_frame", "fuzz_packet", "fuzz_conn"]

COMMON = [
    "-std=gnu11",
    "-g",
    "-O1",
    "-fno-sanitize-recover=undefined",
    "-fno-omit-frame-pointer",
    f"-I{CSRC}",
]
# csrc/ gets coverage instrumentation and sanitizers; its warnings are
# already errors in the gcc builds of tests/engine/test_c_units.py, so a clang-only
# warning there does not stop fuzzing. The harnesses themselves are strict.
CORE_FLAGS = [*COMMON, "-fsanitize=fuzzer-no-link,address,undefined"]
TARGET_FLAGS = [*COMMON, "-fsanitize=fuzzer,address,undefined", "-Wall", "-Wextra", "-Werror"]
RUN_ENV = {
    "ASAN_OPTIONS": "detect_leaks=1:abort_on_error=0",
    "UBSAN_OPTIONS": "halt_on_error=1:print_stacktrace=1",
}
EXECS_RE = re.compile(r"stat::number_of_executed_units:\s*(\d+)")

pytestmark = pytest.mark.skipif(not CSRC.joinpath("crust.h").exists(), reason="no source tree")


def _seconds() -> int:
    default = 30 if os.environ.get("CI") else 10
    return int(os.environ.get("CRUST_FUZZ_SECONDS", default))


def _clang() -> str:
    clang = shutil.which("clang")
    if clang is None:
        missing("clang not found: libFuzzer targets need it (scripts/test.sh installs it as root)")
    return clang


@pytest.fixture(scope="session")
def fuzzers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    """Every target built once: csrc/ compiled once, in parallel, then linked
    with each harness."""
    clang = _clang()
    out = tmp_path_factory.mktemp("fuzzers")
    objects = [out / f"{src.stem}.o" for src in sorted(CSRC.glob("*.c"))]
    core = [[clang, *CORE_FLAGS, "-c", str(CSRC / f"{o.stem}.c"), "-o", str(o)] for o in objects]
    build(core, "csrc/ for fuzzing")
    build(
        [
            [
                clang,
                *TARGET_FLAGS,
                str(FUZZ / f"{name}.c"),
                *map(str, objects),
                "-o",
                str(out / name),
                "-lm",
            ]
            for name in TARGETS
        ],
        "the fuzz targets",
    )
    yield {name: out / name for name in TARGETS}


@pytest.mark.parametrize("target", TARGETS)
def test_fuzz_target(target: str, fuzzers: dict[str, Path], tmp_path: Path) -> None:
    seeds = DATA / target
    assert seeds.is_dir() and any(seeds.iterdir()), f"no seed corpus in {seeds}"
    seconds = _seconds()
    # New inputs go to a scratch corpus; the seed directory stays as committed.
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    cmd = [
        str(fuzzers[target]),
        f"-max_total_time={seconds}",
        "-print_final_stats=1",
        "-timeout=20",
        "-rss_limit_mb=2048",
        "-max_len=8192",
        f"-artifact_prefix={tmp_path}/",
        str(corpus),
        str(seeds),
    ]
    proc = run(cmd, env={**os.environ, **RUN_ENV}, timeout=seconds + 300)
    execs = EXECS_RE.search(proc.stdout)
    artifacts = sorted(p.name for p in tmp_path.iterdir() if p.is_file())
    if proc.returncode != 0 or artifacts or "ERROR:" in proc.stdout:
        tail = "\n".join(proc.stdout.splitlines()[-80:])
        pytest.fail(
            f"{target} found a problem (exit {proc.returncode}); saved inputs {artifacts} in "
            f"{tmp_path}; reproduce with `{fuzzers[target]} <input>`:\n{tail}",
            pytrace=False,
        )
    assert execs is not None, f"no final stats from libFuzzer:\n{proc.stdout[-3000:]}"
    print(f"{target}: {int(execs.group(1))} executions in {seconds} s")
    assert int(execs.group(1)) > 0
