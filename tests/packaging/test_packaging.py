"""Packaging promises that need no build: the metadata in pyproject.toml,
the private PyNaCl interface crust depends on, and what importing crust
from the source tree says. (tests/packaging/test_wheel.py checks the built wheel.)"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import nacl
from nacl._sodium import ffi, lib

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())

# The combined-mode AEAD signature crust's C core calls through a pointer
# (csrc/aead.c's table and csrc/noise.c).
_ENCRYPT = (
    "int(*)(unsigned char *, unsigned long long *, unsigned char *, unsigned long long, "
    "unsigned char *, unsigned long long, unsigned char *, unsigned char *, unsigned char *)"
)
_DECRYPT = (
    "int(*)(unsigned char *, unsigned long long *, unsigned char *, unsigned char *, "
    "unsigned long long, unsigned char *, unsigned long long, unsigned char *, unsigned char *)"
)
#: Every libsodium function taken from nacl._sodium, with its cffi type.
NEEDED = {
    "crypto_aead_chacha20poly1305_ietf_encrypt": _ENCRYPT,
    "crypto_aead_chacha20poly1305_ietf_decrypt": _DECRYPT,
    "crypto_aead_aes256gcm_encrypt": _ENCRYPT,
    "crypto_aead_aes256gcm_decrypt": _DECRYPT,
    "crypto_aead_aes256gcm_is_available": "int(*)()",
    "crypto_scalarmult_base": "int(*)(unsigned char *, unsigned char *)",
    "crypto_scalarmult": "int(*)(unsigned char *, unsigned char *, unsigned char *)",
    # csrc/noise.c's BLAKE2b (crust_noise_b2b_*_fn), streaming.
    "crypto_generichash_blake2b_init_salt_personal": (
        "int(*)(void *, unsigned char *, size_t, size_t, unsigned char *, unsigned char *)"
    ),
    "crypto_generichash_blake2b_update": "int(*)(void *, unsigned char *, unsigned long long)",
    "crypto_generichash_blake2b_final": "int(*)(void *, unsigned char *, size_t)",
    "crypto_generichash_statebytes": "size_t(*)()",
}
#: Used when present (libsodium >= 1.0.19).
OPTIONAL = {"crypto_aead_aegis128l_encrypt": _ENCRYPT, "crypto_aead_aegis128l_decrypt": _DECRYPT}


def test_pynacl_private_module_has_the_expected_shape() -> None:
    """crust takes raw function pointers from PyNaCl's private cffi module;
    a PyNaCl release that renames or retypes one must fail here, loudly,
    not corrupt memory in the C core."""
    for name, want in NEEDED.items():
        assert hasattr(lib, name), f"nacl._sodium.lib.{name} is gone (PyNaCl {nacl.__version__})"
        got = ffi.getctype(ffi.typeof(ffi.addressof(lib, name)))
        assert got == want, f"nacl._sodium.lib.{name} changed type: {got}"
    for name, want in OPTIONAL.items():
        if hasattr(lib, name):
            assert ffi.getctype(ffi.typeof(ffi.addressof(lib, name))) == want, name


def test_pynacl_bound_covers_the_installed_version() -> None:
    (spec,) = [d for d in PROJECT["project"]["dependencies"] if d.startswith("pynacl")]
    low, high = re.fullmatch(r"pynacl>=([\d.]+),<([\d.]+)", spec).groups()  # type: ignore[union-attr]

    def version(text: str) -> tuple[int, ...]:
        return tuple(int(p) for p in text.split(".")[:2])

    assert version(low) <= version(nacl.__version__) < version(high), (spec, nacl.__version__)


def test_metadata() -> None:
    project = PROJECT["project"]
    assert project["license"] == "MIT" and project["license-files"] == ["LICENSE"]
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")
    # crust does not import numpy: tests do, so it is a test dependency only.
    assert not [d for d in project["dependencies"] if d.startswith("numpy")]
    sources = [p for p in (ROOT / "crust").rglob("*") if p.suffix in (".py", ".pyx", ".pyi")]
    importers = [p for p in sources if re.search(r"^\s*(import|from) numpy", p.read_text(), re.M)]
    assert not importers
    assert any(d.startswith("numpy") for d in project["optional-dependencies"]["test"])
    classifiers = project["classifiers"]
    for minor in range(10, 15):
        assert f"Programming Language :: Python :: 3.{minor}" in classifiers
    # PEP 639: the license is the expression, not a classifier.
    assert not [c for c in classifiers if c.startswith("License ::")]
    assert "cp314-*" in PROJECT["tool"]["cibuildwheel"]["build"]
    groups = PROJECT["dependency-groups"]
    assert {"dev", "docs", "fuzzing"} <= set(groups)
    assert {"include-group": "docs"} in groups["dev"]


def test_importing_from_the_source_tree_says_what_to_do(tmp_path: Path) -> None:
    # A copy of the sources, without any compiled module next to them.
    shutil.copytree(ROOT / "crust", tmp_path / "crust", ignore=shutil.ignore_patterns("*.so"))
    done = subprocess.run(
        [sys.executable, "-c", "import crust"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: crust's compiled core (crust._core) is missing")
    assert "pip install ." in last and "partially initialized" not in done.stderr
