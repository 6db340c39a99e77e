"""Analyses on measured data and digital twins.

* :mod:`~bluesky_twin.analysis.mce` -- magnetocaloric entropy change by the
  Maxwell relation (isofield trapezoid, isothermal forward-difference sum, and
  from a twin with an uncertainty band).
* :mod:`~bluesky_twin.analysis.steps` -- field-step and map-axis (angle) step
  studies that propose the coarsest measurement step within a tolerance.
* :mod:`~bluesky_twin.analysis.config` -- their criteria and timing models
  (:class:`FieldStepCriteria`, :class:`FieldTiming`, :class:`AngleStepCriteria`,
  :class:`LineTiming`), shared with ``bluesky-twin steps`` and the plans.
* :mod:`~bluesky_twin.analysis.robustness` -- the same study per ensemble member:
  how much a proposal depends on the twin's fine structure.
* :mod:`~bluesky_twin.analysis.plotting` -- their figures.
* :mod:`~bluesky_twin.analysis.cli` -- ``bluesky-twin mce`` and ``bluesky-twin steps``.

The analyses need only a :class:`~bluesky_twin.protocols.TwinLike`: anything with
``predict(X) -> (mean, std)`` and ``x_names`` (see :mod:`bluesky_twin.protocols`).

Public names resolve on first use (:func:`bluesky_twin._lazy.lazy_exports`) so that
importing ``bluesky_twin.analysis.cli`` for ``bluesky-twin --help`` loads neither
numpy nor scipy.
"""

from __future__ import annotations

from bluesky_twin._lazy import lazy_exports

__all__ = [
    "AngleStepCriteria",
    "EntropyChange",
    "FieldStepCriteria",
    "FieldTiming",
    "LineTiming",
    "MemberProposals",
    "OscillationMetric",
    "StepStudy",
    "TwinLike",
    "angle_step_study",
    "entropy_change_from_twin",
    "entropy_change_isofield",
    "entropy_change_isothermal",
    "entropy_change_twin_corrected",
    "field_step_study",
    "field_to_tesla",
    "member_step_proposals",
    "oscillation_metric",
    "plot_entropy_change",
    "plot_step_study",
    "supports_members",
]

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "AngleStepCriteria": ".config",
        "FieldStepCriteria": ".config",
        "FieldTiming": ".config",
        "LineTiming": ".config",
        "EntropyChange": ".mce",
        "entropy_change_from_twin": ".mce",
        "entropy_change_twin_corrected": ".mce",
        "entropy_change_isofield": ".mce",
        "entropy_change_isothermal": ".mce",
        "field_to_tesla": ".mce",
        "TwinLike": "bluesky_twin.protocols",
        "supports_members": ".protocols",
        "MemberProposals": ".robustness",
        "member_step_proposals": ".robustness",
        "OscillationMetric": ".steps",
        "StepStudy": ".steps",
        "angle_step_study": ".steps",
        "field_step_study": ".steps",
        "oscillation_metric": ".steps",
        "plot_entropy_change": ".plotting",
        "plot_step_study": ".plotting",
    },
)
