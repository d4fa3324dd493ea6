"""Measured figures a test reports: printed (``pytest -s``) and, when
``CRUST_FIGURES`` names a file, appended to it as JSON lines, so a whole
run's figures (a fresh clone's, say) can be collected for a closing note."""

from __future__ import annotations

import json
import os
from typing import Any


def append(record: dict[str, Any]) -> None:
    """Add one JSON line to ``$CRUST_FIGURES`` when it is set."""
    path = os.environ.get("CRUST_FIGURES")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps(record) + "\n")


def figure(name: str, **values: Any) -> None:
    """A measured figure: printed, and recorded as ``{"figure": name, ...}``."""
    print(f"\nFIGURE {name}: {json.dumps(values)}")
    append({"figure": name, **values})
