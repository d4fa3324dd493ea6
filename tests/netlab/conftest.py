"""Fixtures for the NAT lab: ``netlab`` gives a fresh :class:`lab.Lab`
(router + server namespace, no sites yet) and closes it after the test.

Every test in this directory is marked ``netlab``. Without root, network
namespaces or a needed tool the tests skip, except when ``CI`` is set:
then a missing capability is a failure, so CI cannot pass by skipping.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from capability import missing

sys.path.insert(0, str(Path(__file__).parent))

from lab import Lab, missing_capabilities

_missing: list[str] | None = None


def require_netlab() -> None:
    """Skips (or, under CI, fails) the calling test when the lab cannot run."""
    global _missing
    if _missing is None:
        _missing = missing_capabilities()
    if _missing:
        missing("NAT lab unavailable: " + "; ".join(_missing))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.netlab)


@pytest.fixture
def netlab() -> Iterator[Lab]:
    require_netlab()
    lab = Lab()
    try:
        yield lab
    finally:
        lab.close()
