"""crust_config's fields are spelled once, in csrc/crust_config_fields.h
(docs/design/0065-config-fields-once.md): the Python side generated from it
(crust/_config.pxi, the struct in crust/_crust.pxd, the Config stub in
crust/_core.pyi) is checked in, and this fails when it is out of date."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from crust import _core

ROOT = Path(__file__).resolve().parents[2]
GEN = ROOT / "scripts" / "gen_config.py"
FIELDS_H = ROOT / "csrc" / "crust_config_fields.h"

needs_source = pytest.mark.skipif(not FIELDS_H.exists(), reason="no source tree (csrc/)")


@needs_source
def test_generated_files_are_up_to_date() -> None:
    proc = subprocess.run(
        [sys.executable, str(GEN), "--check"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, (
        f"run `python scripts/gen_config.py` and commit the result:\n{proc.stdout}{proc.stderr}"
    )


@needs_source
def test_check_notices_a_stale_file(tmp_path: Path) -> None:
    """The check is not vacuous: a field the generated files lack is found."""
    fields_h = FIELDS_H.read_text()
    extra = "    X(uint32_t, brand_new_field, 0, 0, 1, 0)                                    \\\n"
    anchor = "    X(uint64_t, lost_timeout_us,"
    assert anchor in fields_h
    fake_h = tmp_path / "crust_config_fields.h"
    fake_h.write_text(fields_h.replace(anchor, extra + anchor))
    proc = subprocess.run(
        [sys.executable, str(GEN), "--check", "--fields", str(fake_h)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    assert "_config.pxi: out of date" in proc.stdout
    assert "_core.pyi: out of date" in proc.stdout


@needs_source
def test_the_built_module_has_the_listed_fields() -> None:
    sys.path.insert(0, str(GEN.parent))
    try:
        import gen_config
    finally:
        sys.path.remove(str(GEN.parent))
    listed = [name for name, _bits in gen_config.fields()]
    assert list(_core.Config().as_dict()) == listed
    assert len(listed) == len(set(listed))
