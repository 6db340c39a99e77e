"""Lazy public names (PEP 562) and install hints for optional extras, in one place.

A package whose public names pull in something heavy (torch, a tiled server,
bluesky's tiled writer) that ``bluesky-twin --help`` must not pay for builds its
module ``__getattr__`` and ``__dir__`` here instead of importing eagerly:

>>> __getattr__, __dir__ = lazy_exports(__name__, {"DigitalTwin": ".twin"})  # doctest: +SKIP

A name whose module needs a package of an optional extra that is not installed
raises :class:`MissingExtraError` (an :class:`ImportError`) whose message ends in the
install command, the way ``blop.ax`` does::

    ImportError: bluesky_twin.ins.maps_resolution needs 'resins', which comes with the
    optional extra 'ins': pip install 'bluesky-twin[ins]'

:func:`with_install_hint` turns that error, raised by a command-line subcommand,
into one line on stderr and exit code 2.

This module imports only the standard library.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Mapping
from importlib import import_module
from typing import Any

__all__ = ["OPTIONAL_EXTRAS", "MissingExtraError", "install_hint", "lazy_exports", "with_install_hint"]

#: Top-level import name of each optional dependency -> the extra that installs it
#: (``[project.optional-dependencies]`` in pyproject.toml).
OPTIONAL_EXTRAS: dict[str, str] = {
    "resins": "ins",
    "ot": "ins",  # POT
    "sklearn": "ins",
    "psycopg2": "services",
    "pymysql": "services",
    "optuna_dashboard": "dashboard",
}

#: A lazily exported name resolves to ``"module"`` (the attribute of the same name),
#: ``"module:attribute"``, or a zero-argument callable that returns the value.
Target = str | Callable[[], Any]


class MissingExtraError(ImportError):
    """A feature needs a package of an optional extra that is not installed.

    Attributes
    ----------
    extra
        The extra to install (``"ins"``).
    """

    def __init__(self, message: str, *, name: str | None = None, extra: str) -> None:
        super().__init__(message, name=name)
        self.extra = extra


def install_hint(exc: BaseException, what: str | None = None) -> str | None:
    """The one-line install hint for *exc*, or ``None`` if it is no missing optional extra.

    Parameters
    ----------
    exc
        An exception raised while importing or running something.
    what
        What needed the package, for the message (default: "this feature").
    """
    if isinstance(exc, MissingExtraError):
        return str(exc)
    if not isinstance(exc, ModuleNotFoundError) or not exc.name:
        return None
    top = exc.name.partition(".")[0]
    extra = OPTIONAL_EXTRAS.get(top)
    if extra is None:
        return None
    return (
        f"{what or 'this feature'} needs {top!r}, which comes with the optional extra {extra!r}: "
        f"pip install 'bluesky-twin[{extra}]'"
    )


def _resolve(package: str, name: str, target: Target) -> Any:
    if callable(target):
        return target()
    module_name, _, attribute = target.partition(":")
    try:
        module = import_module(module_name, package)
    except ModuleNotFoundError as exc:
        hint = install_hint(exc, f"{package}.{name}")
        if hint is None:
            raise
        raise MissingExtraError(hint, name=exc.name, extra=OPTIONAL_EXTRAS[exc.name.partition(".")[0]]) from exc
    return getattr(module, attribute or name)


def lazy_exports(package: str, exports: Mapping[str, Target]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """Build a module's ``__getattr__`` and ``__dir__`` from a name -> module mapping.

    Parameters
    ----------
    package
        The module's ``__name__``; relative module names (``".model"``) resolve
        against it.
    exports
        Public name -> where it lives: ``"module"`` (same attribute name),
        ``"module:attribute"``, or a zero-argument callable returning the value.

    Returns
    -------
    __getattr__, __dir__
        Assign them at module level.  A resolved name is stored in the module, so
        ``__getattr__`` runs once per name.

    Raises
    ------
    AttributeError
        From ``__getattr__``, for a name that is not exported.
    MissingExtraError
        From ``__getattr__``, when the name's module needs an optional extra that is
        not installed (the message ends in the ``pip install`` command).
    """
    table = dict(exports)

    def __getattr__(name: str) -> Any:
        try:
            target = table[name]
        except KeyError:
            raise AttributeError(f"module {package!r} has no attribute {name!r}") from None
        value = _resolve(package, name, target)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(table))

    return __getattr__, __dir__


def with_install_hint(func: Callable[[Any], int | None], what: str) -> Callable[[Any], int | None]:
    """Wrap a command's ``func(args)``: a missing optional extra becomes one line on stderr, exit 2.

    Parameters
    ----------
    func
        The subcommand's function.
    what
        The command, for the message (``"bluesky-twin ins generate"``).
    """

    @functools.wraps(func)
    def run(args: Any) -> int | None:
        try:
            return func(args)
        except ImportError as exc:
            hint = install_hint(exc, what)
            if hint is None:
                raise
            print(f"bluesky-twin: error: {hint}", file=sys.stderr)
            return 2

    return run
