"""The fault suite: every test here is marked ``faults`` (``pytest -m faults`` runs them alone).

Each test reproduces one way a user could lose data or get a wrong answer silently
(see docs/reliability.md for the table of cases) and asserts what was stored against
what was produced.  Fixtures of ``tests/conftest.py`` are available here too.
"""
from __future__ import annotations

from pathlib import Path

import pytest

_HERE = Path(__file__).parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if Path(str(item.fspath)).parent == _HERE:
            item.add_marker(pytest.mark.faults)
