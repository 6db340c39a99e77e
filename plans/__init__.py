"""Twin-steered Bluesky plans (installed as ``bluesky_twin.plans``).

* :func:`coarse_to_fine` -- coarse (T, H) grid, twin, field-step study, fine scan at
  the proposed step, measured vs. predicted dS_M.
* :func:`twin_adaptive_scan` -- measure the lines where the twin is least sure (or
  where the dS_M error is largest) until the budget is spent or it converged.
* Stubs: :func:`wait_for_twin` (polls with ``bps.sleep``), :func:`check_limits`,
  :func:`clip_to_limits`, :func:`limits_of`.

Every run a twin steered carries ``twin_version``, ``twin_training_run_uids``,
``twin_study_name`` (and ``twin_x``/``twin_y``, used by ``bluesky-twin replay``) in its
start document.
"""
from __future__ import annotations

from importlib import import_module
from typing import Any

__all__ = [
    "AdaptiveScanResult",
    "CoarseToFineResult",
    "TwinUnavailableError",
    "check_limits",
    "clip_to_limits",
    "coarse_to_fine",
    "limits_of",
    "twin_adaptive_scan",
    "wait_for_twin",
]

_LAZY = {
    "AdaptiveScanResult": ".adaptive",
    "twin_adaptive_scan": ".adaptive",
    "CoarseToFineResult": ".field_step_plan",
    "coarse_to_fine": ".field_step_plan",
    "TwinUnavailableError": ".stubs",
    "check_limits": ".stubs",
    "clip_to_limits": ".stubs",
    "limits_of": ".stubs",
    "wait_for_twin": ".stubs",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
