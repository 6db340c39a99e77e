"""How far a step proposal depends on which ensemble member one asks.

A step study (:func:`~bluesky_twin.analysis.steps.field_step_study`,
:func:`~bluesky_twin.analysis.steps.angle_step_study`) compares dS_M curves or
maps simulated on candidate grids.  Fine structure decides where a coarse step
starts to oscillate, and fine structure is exactly what two equally good twins
disagree on.  :func:`member_step_proposals` repeats the study once per ensemble
member (each member answering alone, as if it were the twin) and reports the
spread of the proposals next to the ensemble's own.  The finest member proposal
is the *conservative* step: every member accepts it.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from bluesky_twin.analysis.protocols import ENSEMBLE_EXPECTED, smooth_model
from bluesky_twin.protocols import EnsembleTwin, HasXRange, require


class _MemberCache:
    """Per-member predictions of a twin, computed once per distinct point set."""

    def __init__(self, twin: EnsembleTwin, max_entries: int = 256) -> None:
        self.twin = twin
        self.max_entries = max_entries
        self._store: OrderedDict[tuple[tuple[int, ...], bytes], np.ndarray] = OrderedDict()

    def members(self, X: np.ndarray) -> np.ndarray:
        X = np.ascontiguousarray(X, dtype=float)
        key = (X.shape, X.tobytes())
        hit = self._store.get(key)
        if hit is None:
            hit = np.asarray(self.twin.predict(X, return_members=True), dtype=float)
            self._store[key] = hit
            if len(self._store) > self.max_entries:
                self._store.popitem(last=False)
        else:
            self._store.move_to_end(key)
        return hit


class MemberTwin:
    """One ensemble member of a twin, behaving as a twin of its own (an
    :class:`~bluesky_twin.protocols.EnsembleTwin` of one member).

    Parameters
    ----------
    twin
        An :class:`~bluesky_twin.protocols.EnsembleTwin`.
    index
        The member.
    cache
        Shared per-member prediction cache (so that asking every member costs one
        ensemble pass per point set).
    """

    ensemble_size = 1

    def __init__(self, twin: EnsembleTwin, index: int, cache: _MemberCache | None = None) -> None:
        self.twin = require(twin, EnsembleTwin, "the twin", ENSEMBLE_EXPECTED)
        self.index = int(index)
        self._cache = cache or _MemberCache(twin)
        self.x_names = list(twin.x_names)
        if isinstance(twin, HasXRange):
            self.x_range = np.asarray(twin.x_range, dtype=float)

    def predict(self, X: np.ndarray, *, return_members: bool = False) -> Any:
        """Mean (this member) and a zero std, or ``(1, n)`` members."""
        m = self._cache.members(np.atleast_2d(np.asarray(X, dtype=float)))[self.index]
        if return_members:
            return m[None, :]
        return m, np.zeros_like(m)


@dataclass(frozen=True)
class MemberProposals:
    """Step proposals of the ensemble and of each member.

    Attributes
    ----------
    ensemble
        The ensemble mean's proposal (what the study reports).
    members
        One proposal per member.
    conservative
        The finest member proposal: a step every member accepts.
    agreement
        Fraction of members proposing the ensemble's step.
    """

    ensemble: float
    members: tuple[float, ...]

    @property
    def conservative(self) -> float:
        return float(min(self.members))

    @property
    def agreement(self) -> float:
        return float(np.mean(np.isclose(self.members, self.ensemble)))

    def to_json_dict(self) -> dict[str, Any]:
        return {
            "ensemble": self.ensemble,
            "members": list(self.members),
            "conservative": self.conservative,
            "median": float(np.median(self.members)),
            "agreement": self.agreement,
        }


def member_step_proposals(
    study: Callable[..., Any], twin: EnsembleTwin, *, ensemble_study: Any = None, **kwargs: Any
) -> MemberProposals:
    """Run *study* for the ensemble and for every member of *twin*.

    Parameters
    ----------
    study
        :func:`~bluesky_twin.analysis.steps.field_step_study` or
        :func:`~bluesky_twin.analysis.steps.angle_step_study`.
    twin
        An :class:`~bluesky_twin.protocols.EnsembleTwin` that declares its ``x_range``.
    ensemble_study
        The ensemble's study if already computed (its ``proposed_step`` is reused).
    **kwargs
        Passed to *study* unchanged.

    Raises
    ------
    InputError
        If the twin is no :class:`~bluesky_twin.protocols.EnsembleTwin` or has no ``x_range``.
    """
    twin = require(smooth_model(twin), EnsembleTwin, "for a member-by-member step study the twin", ENSEMBLE_EXPECTED)
    require(twin, HasXRange, "for a member-by-member step study the twin", "a twin that declares its x_range")
    cache = _MemberCache(twin)
    if ensemble_study is None:
        ensemble_study = study(twin, **kwargs)
    proposals = tuple(
        float(study(MemberTwin(twin, i, cache), **kwargs).proposed_step) for i in range(int(twin.ensemble_size))
    )
    return MemberProposals(float(ensemble_study.proposed_step), proposals)
