"""Twin-steered Bluesky plans (installed as ``bluesky_twin.plans``).

* :func:`coarse_to_fine` -- coarse (T, H) grid, twin, field-step study, fine scan at
  the proposed step, measured vs. predicted dS_M.
* :func:`twin_adaptive_scan` -- measure the lines where the twin is least sure (or
  where the dS_M error is largest) until the budget is spent or it converged.
* :func:`translated_ins_scan` -- INS frames at given temperatures, then where their
  live Exp2Sim translations change the most; pauses (or stops steering) on a frame the
  domain score calls untrustworthy.
* Stubs: :func:`wait_for_twin` (polls with ``bps.checkpoint`` + ``bps.sleep``, at
  least as long as the fit's own budget), :func:`check_limits`,
  :func:`clip_to_limits`, :func:`limits_of`.

Plans are typed with :data:`bluesky.utils.MsgGenerator`, bluesky's device protocols
(:class:`~bluesky.protocols.Readable`, :class:`~bluesky.protocols.NamedMovable`) and
the contracts of :mod:`bluesky_twin.protocols` (``TwinSource``, ``LineAgent``).

Parameters are annotated with runtime types (no ``from __future__ import
annotations``), so bluesky-queueserver validates them; objects that are neither
devices nor plans (the trainer, an agent) may be given by the name they are
registered under (:mod:`bluesky_twin.registry`).

Every run a twin steered carries a bounded provenance record in its start document:
``twin_version``, ``twin_study_name``, ``twin_training_runs`` (count) and
``twin_training_digest`` (sha256 of the training runs' uids), plus ``twin_x``/``twin_y``
(used by ``bluesky-twin replay``).  Each run records the decision that made it in a
``decisions`` event stream; the plans return their result (the proposal).
"""

from .adaptive import AdaptiveScanResult, twin_adaptive_scan
from .field_step_plan import CoarseToFineResult, coarse_to_fine
from .ins_steering import InsScanResult, translated_ins_scan
from .stubs import TwinUnavailableError, check_limits, clip_to_limits, limits_of, wait_for_twin

__all__ = [
    "AdaptiveScanResult",
    "CoarseToFineResult",
    "InsScanResult",
    "TwinUnavailableError",
    "check_limits",
    "clip_to_limits",
    "coarse_to_fine",
    "limits_of",
    "translated_ins_scan",
    "twin_adaptive_scan",
    "wait_for_twin",
]
