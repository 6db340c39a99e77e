"""Named objects for plans run through queueserver."""

from __future__ import annotations

import pytest

from bluesky_twin.errors import InputError
from bluesky_twin.registry import register, registered, resolve, unregister


def test_register_resolve_and_errors() -> None:
    obj = object()
    assert register("thing", obj) is obj
    try:
        assert resolve("thing") is obj and resolve(obj) is obj
        assert "thing" in registered()
        with pytest.raises(InputError, match="no trainer is registered as 'missing'"):
            resolve("missing", what="trainer")
        with pytest.raises(InputError, match="not a int"):
            resolve("thing", int, what="trainer")
        with pytest.raises(InputError, match="identifier"):
            register("not a name", obj)
    finally:
        unregister("thing")
    assert "thing" not in registered()
