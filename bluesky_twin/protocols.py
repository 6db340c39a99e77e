"""The typed contracts between twins, what trains them and what uses them.

Written the way :mod:`bluesky.protocols` and ``blop.protocols`` are: small
:func:`~typing.runtime_checkable` :class:`~typing.Protocol` classes, composed where a
consumer needs more.  Code that receives one of these objects checks it with
``isinstance(obj, Protocol)`` (or :func:`require`, which raises
:class:`~bluesky_twin.errors.InputError` in one line) instead of sniffing attributes.

``isinstance`` against a runtime-checkable protocol checks that the members exist,
not their signatures: the docstrings state what each member must do.

Twins
    :class:`TwinLike` (``predict(X) -> (mean, std)``, ``x_names``): all the analyses
    and the line agent need; an analytic function in a test is one.
    :class:`HasXRange` (``x_range``): gives the analyses their default grids.
    :class:`Twin` (``TwinLike`` + ``y_name``, ``x_range``, ``version``): a trained
    twin (``DigitalTwin``, ``TabulatedTwin``); the live plot and provenance need it.
    :class:`EnsembleTwin` (``TwinLike`` + ``ensemble_size``,
    ``predict(X, return_members=True)``): ensemble bands of dS_M, member-by-member
    step studies.
    :class:`HasNetworksOnly` (``networks_only()``) and :class:`CorrectedTwin`
    (``Twin`` + ``networks_only()``, ``line_residual``): ``DigitalTwin``; step
    studies and derivatives use the networks alone.
Sources
    :class:`TwinSource` (``twin``, ``version``, ``x_fields``, ``y_field``, ``poll``,
    ``wait_for_version``, ``provenance``, ``status``): the ``TwinTrainer``; used by
    the plans, the agent and the live plot.  :class:`RecordingTwinSource` adds
    ``runs`` and ``run_data(uid)`` (``coarse_to_fine`` compares the fine run with
    the twin).
Agents
    :class:`LineAgent` (``suggest(num_points)``, ``ingest(points)``) and
    :class:`ScoringLineAgent` (+ ``last_scores``): ``TwinLineAgent``; used by
    ``twin_adaptive_scan``.  :class:`AdaptiveAgent` (``ingest(x, y)``,
    ``suggest(batch_size) -> (docs, points)``, ``report()``): bluesky-adaptive's
    shape, which ``twin_adaptive_scan`` also accepts.
Devices
    :class:`HasLimits` (``limits``): ophyd positioners; the plan stubs keep every
    move inside.

Devices follow bluesky's own protocols (:class:`bluesky.protocols.Readable`,
:class:`~bluesky.protocols.Movable`, :class:`~bluesky.protocols.HasName`,
:class:`~bluesky.protocols.HasHints`); this module only adds :class:`HasLimits`.

Importing this module imports neither numpy nor bluesky.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, runtime_checkable

from bluesky_twin.errors import InputError

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    from numpy.typing import ArrayLike

__all__ = [
    "AdaptiveAgent",
    "BoundedLineAgent",
    "CorrectedTwin",
    "Deferred",
    "EnsembleTwin",
    "HasLimits",
    "HasNetworksOnly",
    "HasXRange",
    "LineAgent",
    "RecordingTwinSource",
    "ScoringLineAgent",
    "Twin",
    "TwinLike",
    "TwinSource",
    "protocol_members",
    "require",
]

T = TypeVar("T")


# ----------------------------------------------------------------------------- twins


@runtime_checkable
class TwinLike(Protocol):
    """A model of one measured quantity over named scan axes: all an analysis needs.

    An exact analytic function in a test is as good a ``TwinLike`` as a trained
    :class:`~bluesky_twin.twin.DigitalTwin`.
    """

    @property
    @abstractmethod
    def x_names(self) -> Sequence[str]:
        """Names of the scan axes (device data keys), in the column order of ``predict``."""
        ...

    @abstractmethod
    def predict(self, X: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
        """Predict at ``X`` of shape ``(n, len(x_names))``, in the axes' own units.

        Returns
        -------
        mean, std
            ``(n,)`` arrays in the unit of the measured quantity; ``std`` is the
            model's uncertainty (zero for an exact model).
        """
        ...


@runtime_checkable
class HasXRange(Protocol):
    """Something that knows the box it was trained on (default ranges of the analyses)."""

    @property
    @abstractmethod
    def x_range(self) -> np.ndarray:
        """``(len(x_names), 2)`` array of ``[low, high]`` per axis."""
        ...


@runtime_checkable
class Twin(TwinLike, HasXRange, Protocol):
    """A trained digital twin: a :class:`TwinLike` that names its output and its version.

    :class:`~bluesky_twin.twin.DigitalTwin` and :class:`~bluesky_twin.twin.TabulatedTwin`
    are twins.  The version goes into the start document of every run the twin steers.
    """

    @property
    @abstractmethod
    def y_name(self) -> str:
        """Name (data key) of the predicted quantity."""
        ...

    @property
    @abstractmethod
    def version(self) -> str:
        """Unique version string of this fit."""
        ...


@runtime_checkable
class EnsembleTwin(TwinLike, Protocol):
    """A twin made of an ensemble whose members can be asked one by one.

    ``predict(X)`` returns the members' mean and (population) standard deviation;
    ``predict(X, return_members=True)`` returns the ``(ensemble_size, n)`` member
    predictions.  Uncertainty bands of derived quantities are then the spread of the
    quantity over members, not a bound from ``std``.
    """

    @property
    @abstractmethod
    def ensemble_size(self) -> int:
        """Number of members (rows of ``predict(X, return_members=True)``)."""
        ...

    @abstractmethod
    def predict(self, X: ArrayLike, *, return_members: bool = False) -> Any:
        """``(mean, std)``, or the ``(ensemble_size, n)`` members with ``return_members=True``."""
        ...


@runtime_checkable
class HasNetworksOnly(Protocol):
    """A twin that adds a correction to its smooth model and can leave it out.

    A :class:`~bluesky_twin.twin.DigitalTwin` of a large map adds a line-residual
    correction that is linear between measured lines; step studies and derivatives
    use the networks alone (see :func:`bluesky_twin.analysis.protocols.smooth_model`).
    """

    @abstractmethod
    def networks_only(self) -> TwinLike:
        """The same twin without the correction (itself when it has none)."""
        ...


@runtime_checkable
class CorrectedTwin(Twin, HasNetworksOnly, Protocol):
    """A :class:`Twin` made of networks plus an optional line-residual correction
    (:class:`~bluesky_twin.twin.DigitalTwin`)."""

    @property
    @abstractmethod
    def line_residual(self) -> Any:
        """The correction added to the networks (``None``: the networks alone)."""
        ...


# ----------------------------------------------------------------------------- sources


@runtime_checkable
class TwinSource(Protocol):
    """Keeps the latest twin of a stream of runs and lets a plan wait for a refit.

    :class:`~bluesky_twin.callbacks.TwinTrainer` is one.  Every member is safe to
    use from any thread; ``twin`` and ``version`` change when a refit finishes.
    """

    @property
    @abstractmethod
    def x_fields(self) -> list[str]:
        """Data keys of the twin's inputs, in order."""
        ...

    @property
    @abstractmethod
    def y_field(self) -> str:
        """Data key of the modelled quantity."""
        ...

    @property
    @abstractmethod
    def twin(self) -> Twin | None:
        """The latest twin, ``None`` before the first successful fit."""
        ...

    @property
    @abstractmethod
    def version(self) -> str | None:
        """Version of :attr:`twin` (``None`` without one)."""
        ...

    @property
    @abstractmethod
    def status(self) -> dict[str, Any]:
        """JSON-friendly state: at least ``state`` and ``last_error``."""
        ...

    @abstractmethod
    def poll(self, *, newer_than: str | None = None, run_uid: str | None = None) -> tuple[bool, Twin | None]:
        """Non-blocking: ``(done, twin)``; ``done`` once a twin newer than *newer_than*
        (and trained on *run_uid*) exists, or once it can no longer appear (twin ``None``)."""
        ...

    @abstractmethod
    def wait_for_version(
        self, newer_than: str | None = None, timeout: float | None = None, *, run_uid: str | None = None
    ) -> Twin | None:
        """Block (never inside a plan) until :meth:`poll` would be done; the twin or ``None``."""
        ...

    @abstractmethod
    def provenance(self) -> dict[str, Any]:
        """Start-document metadata of the current twin (``twin_version``,
        ``twin_training_run_uids``, ``twin_study_name``, ``twin_x``, ``twin_y``)."""
        ...


@runtime_checkable
class RecordingTwinSource(TwinSource, Protocol):
    """A :class:`TwinSource` that also keeps the readings of the runs it trained on."""

    @property
    @abstractmethod
    def runs(self) -> Mapping[str, Any]:
        """A report per run seen (accepted, skipped, why), keyed by run uid."""
        ...

    @abstractmethod
    def run_data(self, uid: str) -> dict[str, np.ndarray]:
        """``{"x": (n, len(x_fields)), "y": (n,)}`` of an accepted run; ``KeyError`` otherwise."""
        ...


# ----------------------------------------------------------------------------- agents


@runtime_checkable
class LineAgent(Protocol):
    """Proposes the next lines to measure (the bluesky-adaptive / blop / Xopt verbs).

    A point is a dict keyed by device names, e.g. ``{"mpms_field": 1.25}``: the value
    of the stepped axis of a line along which the line axis is swept.
    """

    @abstractmethod
    def ingest(self, points: Sequence[Mapping[str, Any]]) -> None:
        """Record measured points."""
        ...

    @abstractmethod
    def suggest(self, num_points: int = 1) -> list[dict[str, Any]]:
        """The next *num_points* points, best first (fewer when nothing is left)."""
        ...


@runtime_checkable
class Deferred(Protocol):
    """An object built on first use that stands in for the real one until then.

    :func:`bluesky_twin.registry.resolve` builds a registered ``Deferred`` when a plan asks
    for it by name (the profile's lazily built INS translation callback, for example).
    """

    @abstractmethod
    def build(self) -> Any:
        """The real object, built now if it was not built yet."""
        ...


@runtime_checkable
class BoundedLineAgent(LineAgent, Protocol):
    """A :class:`LineAgent` that knows the range it proposes in and how close two lines may be.

    :func:`~bluesky_twin.plans.twin_adaptive_scan` takes ``step_range`` and
    ``min_separation`` from such an agent when they are not given, so the plan never
    refuses the agent's proposals for a range or spacing it did not choose.
    """

    @property
    @abstractmethod
    def bounds(self) -> tuple[float, float]:
        """``(low, high)`` of the stepped axis the agent proposes lines in."""
        ...

    @property
    @abstractmethod
    def min_separation(self) -> float:
        """Least distance the agent keeps between a proposal and a measured line."""
        ...


@runtime_checkable
class ScoringLineAgent(LineAgent, Protocol):
    """A :class:`LineAgent` that exposes the scores behind its last suggestion.

    Plans stop when the best score falls below their tolerance (converged).
    """

    @property
    @abstractmethod
    def last_scores(self) -> np.ndarray | None:
        """Dimensionless score of every candidate at the last :meth:`suggest` (``None`` before)."""
        ...


@runtime_checkable
class AdaptiveAgent(Protocol):
    """An agent of bluesky-adaptive's shape (``bluesky_adaptive.agents``).

    ``isinstance`` cannot tell it from a :class:`LineAgent` by its members alone
    (both have ``ingest`` and ``suggest``): a bluesky-adaptive agent's ``ingest`` takes
    two required arguments.
    """

    @abstractmethod
    def ingest(self, independent_variable: Any, dependent_variable: Any) -> Any:
        """Record one measurement: the position (*independent*) and what was read there."""
        ...

    @abstractmethod
    def suggest(self, batch_size: int = 1) -> tuple[Sequence[Mapping[str, Any]], Sequence[Any]]:
        """``(docs, points)``: a document per suggestion and the *batch_size* next points."""
        ...

    @abstractmethod
    def report(self) -> Mapping[str, Any]:
        """A summary of the agent's state (bluesky-adaptive writes it as a document)."""
        ...


# ----------------------------------------------------------------------------- devices


@runtime_checkable
class HasLimits(Protocol):
    """A positioner that declares soft limits (ophyd's ``limits``; ``low >= high`` means none)."""

    @property
    @abstractmethod
    def limits(self) -> tuple[float, float]:
        """``(low, high)``."""
        ...


# ----------------------------------------------------------------------------- checks


def protocol_members(protocol: type) -> list[str]:
    """The public members a runtime-checkable *protocol* (and its protocol bases) declares."""
    names: set[str] = set()
    for base in protocol.__mro__:
        if base is Protocol or not getattr(base, "_is_protocol", False):
            continue
        names.update(n for n in (*vars(base), *getattr(base, "__annotations__", {})) if not n.startswith("_"))
    return sorted(names)


def require(obj: Any, protocol: type[T], what: str, expected: str | None = None) -> T:
    """Return *obj* if it implements *protocol*, else raise a one-line :class:`InputError`.

    Parameters
    ----------
    obj
        The object to check.
    protocol
        A runtime-checkable protocol of this module (or :mod:`bluesky.protocols`).
    what
        What *obj* is, for the message (``"trainer"``).
    expected
        What it should have been (default ``"a <Protocol>"``).

    Raises
    ------
    InputError
        ``"<what> must be <expected> (it has no 'a', 'b'); got <type>"``.
    """
    if isinstance(obj, protocol):
        return obj
    missing = [m for m in protocol_members(protocol) if not hasattr(obj, m)]
    lacks = f" (it has no {', '.join(map(repr, missing))})" if missing else ""
    raise InputError(f"{what} must be {expected or 'a ' + protocol.__name__}{lacks}; got {type(obj).__name__}")
