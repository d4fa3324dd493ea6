"""Suite-wide fixtures.

Every test gets its own user cache directory (``XDG_CACHE_HOME``, inherited
by child processes): services keep their bootstrap cache there by default,
and a cache shared between tests would make one test's nodes dial the
long-gone nodes of another.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _private_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    cache = tmp_path_factory.mktemp("xdg-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", str(cache))
        yield cache
