"""The soak tests: registered here (marker ``soak``) and skipped unless DKIMD_SOAK=1.

They run for minutes, so they are not part of the default ``pytest`` run; use
``scripts/soak.sh`` (or ``DKIMD_SOAK=1 python -m pytest tests/soak -s``).
"""

from __future__ import annotations

import os

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "soak: long load run (minutes); needs DKIMD_SOAK=1")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("DKIMD_SOAK") == "1":
        return
    skip = pytest.mark.skip(reason="soak test: set DKIMD_SOAK=1 or run scripts/soak.sh")
    for item in items:
        if item.get_closest_marker("soak") is not None:
            item.add_marker(skip)
