"""One rule for tests that need something the machine may lack (a
compiler, a module from the ``test`` extra, AES-NI, network namespaces):
elsewhere its absence skips the test, but under CI (``CI`` set) it fails
it, because CI must have every capability and cannot pass by skipping."""

from __future__ import annotations

import os
from typing import NoReturn

import pytest

CI = bool(os.environ.get("CI"))


def missing(why: str) -> NoReturn:
    """The test cannot run here because of ``why``."""
    if CI:
        pytest.fail(f"{why} (CI is set: a missing capability is a failure)")
    pytest.skip(why)
