"""Analyses on measured data and digital twins.

* :mod:`~bluesky_twin.analysis.mce` -- magnetocaloric entropy change by the
  Maxwell relation (isofield trapezoid, isothermal forward-difference sum, and
  from a twin with an uncertainty band).
* :mod:`~bluesky_twin.analysis.steps` -- field-step and map-axis (angle) step
  studies that propose the coarsest measurement step within a tolerance.
* :mod:`~bluesky_twin.analysis.robustness` -- the same study per ensemble member:
  how much a proposal depends on the twin's fine structure.
* :mod:`~bluesky_twin.analysis.cli` -- ``bluesky-twin mce`` and ``bluesky-twin steps``.

The analyses need only a :class:`~bluesky_twin.analysis.protocols.TwinLike`:
anything with ``predict(X) -> (mean, std)`` and ``x_names``.
"""
from __future__ import annotations

from importlib import import_module
from typing import Any

# Public name -> submodule.  Resolved lazily (PEP 562) so that importing
# ``bluesky_twin.analysis.cli`` for ``bluesky-twin --help`` does not load numpy/scipy.
_EXPORTS = {
    "EntropyChange": "mce",
    "entropy_change_from_twin": "mce",
    "entropy_change_isofield": "mce",
    "entropy_change_isothermal": "mce",
    "field_to_tesla": "mce",
    "TwinLike": "protocols",
    "supports_members": "protocols",
    "MemberProposals": "robustness",
    "member_step_proposals": "robustness",
    "OscillationMetric": "steps",
    "StepStudy": "steps",
    "angle_step_study": "steps",
    "field_step_study": "steps",
    "oscillation_metric": "steps",
}


def __getattr__(name: str) -> Any:
    try:
        module = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    return getattr(import_module(f"{__name__}.{module}"), name)


def __dir__() -> list[str]:
    return sorted(list(globals()) + list(_EXPORTS))


__all__ = [
    "EntropyChange",
    "MemberProposals",
    "OscillationMetric",
    "StepStudy",
    "TwinLike",
    "angle_step_study",
    "entropy_change_from_twin",
    "entropy_change_isofield",
    "entropy_change_isothermal",
    "field_step_study",
    "field_to_tesla",
    "member_step_proposals",
    "oscillation_metric",
    "supports_members",
]
