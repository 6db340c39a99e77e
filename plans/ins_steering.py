"""``translated_ins_scan``: a temperature scan of INS frames steered on their Exp2Sim translations.

Each frame is translated live by a :class:`~bluesky_twin.callbacks.TranslationCallback`
(off the RunEngine's thread); the plan waits for the translation of every frame it
measures and steers on the translated frames: after the given temperatures it bisects
the temperature interval whose translated frames differ the most, until the frame
budget is spent.

The trust gate: a frame whose domain score falls in the ``"untrustworthy"`` zone (or
that got no translation) is not steered on.  The plan records it in its ``decisions``
stream (``decision_trusted=0``, ``decision_trust_reason``) and then, with
``untrusted="pause"`` (default), pauses the RunEngine (resume to go on steering,
abort to end), or, with ``untrusted="stop"``, stops steering and ends the run.
"""

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field as dc_field
from typing import Any, Protocol, runtime_checkable

import numpy as np
from bluesky.protocols import NamedMovable, Readable
from bluesky.utils import MsgGenerator

from bluesky_twin.errors import InputError
from bluesky_twin.protocols import require

from .stubs import (
    check_limits,
    motor_dimensions,
    record_decision,
    require_devices,
    require_int,
    require_number,
    resolve_named,
)

logger = logging.getLogger(__name__)

__all__ = ["INS_UNTRUSTED_MODES", "InsScanResult", "TranslationSource", "translated_ins_scan"]

#: What :func:`translated_ins_scan` does after an untrustworthy frame.
INS_UNTRUSTED_MODES = ("pause", "stop")


@runtime_checkable
class TranslationSource(Protocol):
    """What :func:`translated_ins_scan` reads from the live translation: a
    :class:`~bluesky_twin.callbacks.TranslationCallback` subscribed to the RunEngine."""

    @property
    def field(self) -> str:
        """Data key of the frames it translates."""

    @property
    def results(self) -> Any:
        """The current run's last results (:class:`~bluesky_twin.callbacks.translation.TranslationResult`)."""

    @property
    def run_stats(self) -> dict[str, int]:
        """The current run's counters (``submitted``, ``processed``, ``skipped``, ...)."""

    @property
    def pause_engine(self) -> Any:
        """The RunEngine it asks to pause on an untrustworthy frame, or ``None``."""


@dataclass
class InsScanResult:
    """Outcome of :func:`translated_ins_scan`.

    Attributes
    ----------
    run_uid
        The run.
    temperatures
        Temperatures measured, in order.
    zones, scores
        Domain-of-applicability zone and score of each frame (``""``/NaN: no translation).
    trusted
        Per frame: steered on (its zone is not ``"untrustworthy"`` and it was translated).
    reason
        Why it stopped: ``"budget"``, ``"exhausted"`` (no interval wider than
        ``2 * min_step`` left) or ``"untrustworthy"`` (``untrusted="stop"``).
    pauses
        Pauses the gate asked for (``untrusted="pause"``).
    decisions
        The decisions recorded in the ``decisions`` stream.
    """

    run_uid: str = ""
    temperatures: list[float] = dc_field(default_factory=list)
    zones: list[str] = dc_field(default_factory=list)
    scores: list[float] = dc_field(default_factory=list)
    trusted: list[bool] = dc_field(default_factory=list)
    reason: str = ""
    pauses: int = 0
    decisions: list[dict[str, Any]] = dc_field(default_factory=list)


def _change(a: np.ndarray, b: np.ndarray) -> float:
    """RMS difference of two translated frames over the pixels finite in both."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    ok = np.isfinite(a) & np.isfinite(b)
    return float(np.sqrt(np.mean((a[ok] - b[ok]) ** 2))) if ok.any() else float("nan")


def _intervals(frames: dict[float, np.ndarray], min_step: float) -> tuple[list[float], list[float]]:
    """Midpoints of the intervals between steered-on temperatures wider than ``2 * min_step``,
    and the change of the translated frames across each."""
    temps = sorted(frames)
    mids, changes = [], []
    for lo, hi in zip(temps[:-1], temps[1:]):
        if hi - lo >= 2 * min_step:
            mids.append(0.5 * (lo + hi))
            changes.append(_change(frames[lo], frames[hi]))
    return mids, changes


def _wait_translation(
    translation: TranslationSource, run_uid: str, seq_num: int, timeout: float, poll_interval: float
) -> MsgGenerator[tuple[Any, str]]:
    """Wait (``bps.checkpoint`` + ``bps.sleep`` polls) for the translation of frame *seq_num*.

    Returns ``(result, "")``, or ``(None, why)`` when the frame was skipped, dropped or
    failed, or nothing came within *timeout* seconds (time paused does not count).
    """
    import bluesky.plan_stubs as bps

    waited, settled = 0.0, False
    while True:
        yield from bps.checkpoint()
        for result in list(translation.results):
            if result.run_uid == run_uid and result.source_seq_num == seq_num:
                return result, ""
        stats = translation.run_stats
        done = sum(stats.get(k, 0) for k in ("processed", "dropped", "skipped", "errors", "unfinished"))
        if stats.get("submitted", 0) >= seq_num and done >= stats.get("submitted", 0):
            if settled:  # accounted for on two polls running and still no result: it is not coming
                return None, "no translation (the frame was skipped, dropped or failed: see the translation counters)"
            settled = True  # a translated frame is counted just before its result is kept: look again
        if waited >= timeout:
            return None, f"no translation within {timeout:g} s"
        t0 = time.monotonic()
        yield from bps.sleep(poll_interval)
        elapsed = time.monotonic() - t0
        waited += elapsed if elapsed <= poll_interval + 1.0 else poll_interval


def translated_ins_scan(
    detectors: Sequence[Readable],
    temperature: NamedMovable,
    temperatures: Sequence[float],
    *,
    translation: TranslationSource | str,
    budget: int | None = None,
    min_step: float = 1.0,
    untrusted: str = "pause",
    translation_timeout: float = 60.0,
    poll_interval: float = 0.05,
    md: dict | None = None,
) -> MsgGenerator[InsScanResult]:
    """Measure INS frames at *temperatures*, then where their translations change the most.

    Parameters
    ----------
    detectors
        Readable devices; one of them produces the frames the translation callback
        translates (its ``field``, ``ins_frame`` for the simulated spectrometer).
    temperature
        The sample-temperature positioner.
    temperatures
        The first temperatures, measured in the order given.
    translation
        The :class:`~bluesky_twin.callbacks.TranslationCallback` subscribed to the
        RunEngine (or the name it is registered under, :mod:`bluesky_twin.registry`).
    budget
        Frames in all (the first temperatures included); default: the first
        temperatures only (no steering).
    min_step
        Intervals narrower than ``2 * min_step`` (kelvin) are not bisected.
    untrusted
        After an untrustworthy frame (domain zone ``"untrustworthy"``, or no
        translation): ``"pause"`` -- record it, then pause the RunEngine (resume to go on
        steering without that frame, abort to end; when the callback has its own
        ``pause_engine``, its deferred pause is the one taken); ``"stop"`` -- record it
        and stop steering: the run ends with ``reason="untrustworthy"``.
    translation_timeout, poll_interval
        How long to wait for each frame's translation, and how often to look.
    md
        Extra metadata for the run.

    Returns
    -------
    InsScanResult

    Notes
    -----
    One run (``plan_name="translated_ins_scan"``): the ``primary`` stream of frames,
    the callback's ``translation`` stream, and a ``decisions`` stream with one
    decision per frame: ``decision_temperature``, ``decision_seq_num``,
    ``decision_domain_score``, ``decision_domain_zone``, ``decision_trusted`` (0/1),
    ``decision_trust_reason``, ``decision_untrusted`` (the mode),
    ``decision_next_temperature`` (NaN: none) and ``decision_stop_reason``, one row per
    candidate interval (``decision_value``: its midpoint, ``decision_score``: the
    change of the translated frames across it, ``decision_proposed``).

    Raises
    ------
    InputError
        A bad argument (one line), before the first message: nothing has moved.
    LimitError
        A temperature outside the positioner's limits.
    """
    import bluesky.plan_stubs as bps
    import bluesky.preprocessors as bpp

    # ---- argument checks: all before the first message ----
    detectors = require_devices(detectors, {"temperature": temperature})
    translation = require(
        resolve_named(translation, "translation"),
        TranslationSource,
        "translation",
        "a TranslationCallback subscribed to the RunEngine",
    )
    if isinstance(temperatures, (str, bytes)) or not hasattr(temperatures, "__iter__"):
        raise InputError(f"temperatures must be a list of temperatures; got {temperatures!r}")
    first = [require_number("temperature", t) for t in temperatures]
    if not first:
        raise InputError("temperatures must not be empty")
    check_limits(temperature, first, what="temperature")
    budget = require_int("budget", budget if budget is not None else len(first), minimum=len(first))
    min_step = require_number("min_step", min_step, minimum=0.0, strict=True)
    if untrusted not in INS_UNTRUSTED_MODES:
        raise InputError(f"untrusted must be one of {list(INS_UNTRUSTED_MODES)}; got {untrusted!r}")
    translation_timeout = require_number("translation_timeout", translation_timeout, minimum=0.0)
    poll_interval = require_number("poll_interval", poll_interval, minimum=0.0, strict=True)
    if md is not None and not isinstance(md, dict):
        raise InputError(f"md must be a dict or None; got {type(md).__name__}")

    _md = {
        "detectors": [d.name for d in detectors],
        "motors": [temperature.name],
        "plan_name": "translated_ins_scan",
        "plan_args": {
            "detectors": list(map(repr, detectors)),
            "temperature": repr(temperature),
            "temperatures": first,
            "translation": repr(translation),
            "budget": budget,
            "min_step": min_step,
            "untrusted": untrusted,
        },
        "translation_field": translation.field,
        "hints": {"dimensions": motor_dimensions([temperature])},
    }
    _md.update(md or {})
    result = InsScanResult()
    steered_on: dict[float, np.ndarray] = {}
    signals: dict[str, Any] = {}  # the decisions stream's signals, the same for every decision of the run

    @bpp.stage_decorator(list(detectors) + [temperature])
    def inner() -> MsgGenerator[InsScanResult]:
        result.run_uid = yield from bps.open_run(_md)
        queue = list(first)
        seq = 0
        while queue:
            t = queue.pop(0)
            yield from bps.checkpoint()
            yield from bps.mv(temperature, t)
            yield from bps.trigger_and_read(list(detectors) + [temperature])
            seq += 1
            found, why = yield from _wait_translation(
                translation, result.run_uid, seq, translation_timeout, poll_interval
            )
            zone = found.zone if found is not None else ""
            score = float(found.score) if found is not None else float("nan")
            ok = found is not None and zone != "untrustworthy"
            if found is not None and not ok:
                why = f"domain score {score:.4g} is in the untrustworthy zone"
            result.temperatures.append(float(t))
            result.zones.append(zone)
            result.scores.append(score)
            result.trusted.append(ok)
            if ok:
                steered_on[float(t)] = found.translated
            mids, changes = _intervals(steered_on, min_step)
            nxt = float("nan")
            stop = ""
            if not ok and untrusted == "stop":
                stop = "untrustworthy"
            elif not queue and len(result.temperatures) < budget:
                ranked = [(c, m) for c, m in zip(changes, mids) if math.isfinite(c)]
                if ranked:
                    nxt = max(ranked)[1]
                    queue.append(nxt)
                else:
                    stop = "exhausted"
            elif not queue:
                stop = "budget"
            decision = {
                "temperature": float(t),
                "seq_num": seq,
                "domain_score": score,
                "domain_zone": zone,
                "trusted": int(ok),
                "trust_reason": why if not ok else "",
                "untrusted": untrusted,
                "next_temperature": nxt,
                "stop_reason": stop,
                "rows": {"value": mids, "score": changes, "proposed": [int(m == nxt) for m in mids]},
            }
            result.decisions.append(decision)
            rows = decision["rows"] if mids else {"value": [np.nan], "score": [np.nan], "proposed": [0]}
            yield from record_decision({k: v for k, v in decision.items() if k != "rows"}, rows, signals=signals)
            if not ok:
                logger.warning("translated_ins_scan: frame %d at %g K not trusted: %s", seq, t, why)
            if not ok and untrusted == "pause":
                result.pauses += 1
                if translation.pause_engine is None:
                    yield from bps.checkpoint()
                    yield from bps.pause()
                else:  # the callback asked for a deferred pause: it lands at one of these checkpoints
                    for _ in range(3):
                        yield from bps.checkpoint()
                        yield from bps.sleep(poll_interval)
            if stop:
                result.reason = stop
                break
        yield from bps.close_run()
        return result

    return (yield from inner())
