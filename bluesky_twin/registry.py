"""Objects that plans take by name.

bluesky-queueserver passes plan parameters as JSON: devices and plans travel by name,
and any other object (a :class:`~bluesky_twin.callbacks.TwinTrainer`, a line agent)
cannot be a parameter at all.  The profile therefore registers such objects under a
name, and the plans accept either the object itself (IPython) or its name
(queueserver)::

    from bluesky_twin.registry import register
    register("twin_trainer", twin_trainer)
    RE(coarse_to_fine(..., trainer="twin_trainer"))

An object that is built on first use (the profile's :class:`~bluesky_twin.beamline.LazyCallback`,
which loads torch only when an INS run starts) may be registered before it exists: an object
with a ``build()`` method (:class:`~bluesky_twin.protocols.Deferred`) is built when a plan
resolves its name, and the built object is what the plan gets.

The registry is per process and thread-safe.
"""

from __future__ import annotations

import threading
from typing import Any, TypeVar

from bluesky_twin.errors import InputError
from bluesky_twin.protocols import Deferred

__all__ = ["register", "unregister", "registered", "resolve"]

T = TypeVar("T")

_objects: dict[str, Any] = {}
_guard = threading.Lock()


def register(name: str, obj: T) -> T:
    """Register *obj* under *name* (replacing an earlier object of that name); return *obj*."""
    if not isinstance(name, str) or not name.isidentifier():
        raise InputError(f"a registry name must be a Python identifier, got {name!r}")
    with _guard:
        _objects[name] = obj
    return obj


def unregister(name: str) -> None:
    """Forget *name* (no error if it was never registered)."""
    with _guard:
        _objects.pop(name, None)


def registered() -> dict[str, Any]:
    """A copy of the registry: ``{name: object}``."""
    with _guard:
        return dict(_objects)


def resolve(value: Any, kind: type | None = None, what: str = "object") -> Any:
    """The object *value* names (or *value* itself), checked against *kind*.

    Parameters
    ----------
    value
        A registered name, or the object itself.
    kind
        A runtime-checkable Protocol or class the object must satisfy (``None``: any).
    what
        What the object is, for the error message ("trainer", "agent").

    Raises
    ------
    InputError
        An unknown name, or an object that does not satisfy *kind*.

    Notes
    -----
    A registered :class:`~bluesky_twin.protocols.Deferred` is built (``obj.build()``) and the
    built object returned and checked.
    """
    obj = value
    if isinstance(value, str):
        with _guard:
            if value not in _objects:
                known = ", ".join(sorted(_objects)) or "none"
                raise InputError(
                    f"no {what} is registered as {value!r} (registered: {known}); "
                    "register it with bluesky_twin.registry.register(name, obj)"
                )
            obj = _objects[value]
    if isinstance(value, str) and isinstance(obj, Deferred):
        obj = obj.build()  # registered before it was needed (the profile's lazily built callbacks)
    if kind is not None and not isinstance(obj, kind):
        raise InputError(f"the {what} {value!r} is a {type(obj).__name__}, not a {getattr(kind, '__name__', kind)}")
    return obj
