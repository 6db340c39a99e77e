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


def test_a_deferred_object_is_built_when_a_plan_resolves_its_name() -> None:
    """The profile registers its lazily built translation callback before it exists."""
    from bluesky_twin.beamline import LazyCallback
    from bluesky_twin.protocols import Deferred

    built = []

    def factory():
        built.append(object())
        return built[-1]

    lazy = LazyCallback(factory, label="INS translation")
    assert isinstance(lazy, Deferred) and not built
    register("deferred_translation", lazy)
    try:
        first = resolve("deferred_translation", what="translation")
        assert built == [first]  # built once, on the first resolution
        assert resolve("deferred_translation") is first and built == [first]
        assert resolve(lazy) is lazy  # the object itself is passed through, as any object
    finally:
        unregister("deferred_translation")


def test_a_deferred_object_that_failed_to_build_says_why() -> None:
    from bluesky_twin.beamline import LazyCallback

    def factory():
        raise ImportError("no torch here")

    lazy = LazyCallback(factory, required=False, label="INS translation")
    lazy("start", {"uid": "u"})  # the profile's optional callback fails once and stays off
    register("broken_translation", lazy)
    try:
        with pytest.raises(RuntimeError, match="INS translation is unavailable: ImportError: no torch here"):
            resolve("broken_translation")
    finally:
        unregister("broken_translation")
