"""``TwinStream``: the twin's predictions as documents (a derived run with a ``twin`` stream).

A refit happens *after* a run has stopped, so its predictions cannot join that run.
Instead, after every refit :class:`TwinStream` composes a small derived run with
:func:`event_model.compose_run`:

* start: ``plan_name="twin_prediction"``, ``source_run_uid`` (the newest training run),
  ``twin_version``, ``twin_study_name``, ``twin_training_run_uids``, ``twin_x``,
  ``twin_y`` and ``twin_points`` (``"run"`` or ``"grid"``);
* one descriptor, stream ``twin``, with fixed-shape scalar data keys: every twin input,
  the prediction ``<y>_twin``, its ensemble std ``<y>_twin_std``,
  ``outside_training_range`` and, for ``points="run"``, the measured ``<y>``;
* one event page with a row per point, and a stop document.

The documents go to the callables given as ``callbacks`` -- typically a *dedicated*
``TiledWriter`` (do not pass the instance subscribed to the RunEngine: the derived run
is emitted from the trainer's worker thread, concurrently with the RunEngine's
documents).  The latest documents are also kept in :attr:`TwinStream.last_documents`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

__all__ = ["TwinStream", "compose_prediction_run"]

DocumentCallback = Callable[[str, dict], Any]


def compose_prediction_run(
    twin: Any,
    X: np.ndarray,
    *,
    measured: np.ndarray | None = None,
    provenance: Mapping[str, Any] | None = None,
    stream_name: str = "twin",
    md: Mapping[str, Any] | None = None,
) -> list[tuple[str, dict]]:
    """Compose the documents of one derived prediction run.

    Parameters
    ----------
    twin
        The twin (``predict``, ``x_names``, ``y_name``, ``version``).
    X
        ``(n, len(twin.x_names))`` points, in the twin's input order.
    measured
        Optional ``(n,)`` measured values at those points (stored as ``<y>``).
    provenance
        Extra start-document metadata (source run uid, study name...).
    stream_name
        Name of the stream.
    md
        More start-document metadata (overrides).

    Returns
    -------
    list of (name, doc)
        ``start``, ``descriptor``, ``event_page``, ``stop``.
    """
    from event_model import compose_run

    X = np.asarray(X, dtype=float)
    names = list(twin.x_names)
    if X.ndim != 2 or X.shape[1] != len(names) or len(X) == 0:
        raise ValueError(f"X must have shape (n>0, {len(names)}) for inputs {names}; got {X.shape}")
    y = str(twin.y_name)
    mean, std = twin.predict(X)
    mean = np.asarray(mean, dtype=float).reshape(-1)
    std = np.asarray(std, dtype=float).reshape(-1)
    outside = _outside(twin, X)
    metadata = {
        "plan_name": "twin_prediction",
        "purpose": "twin_prediction",
        "twin_version": str(twin.version),
        "twin_x": names,
        "twin_y": y,
        "num_points": int(len(X)),
        "hints": {"dimensions": [([n], stream_name) for n in names[:1]]},
    }
    metadata.update(dict(provenance or {}))
    metadata.update(dict(md or {}))
    bundle = compose_run(metadata=metadata)
    source = "twin_prediction"
    data_keys: dict[str, dict] = {n: {"dtype": "number", "shape": [], "source": source} for n in names}
    data_keys[f"{y}_twin"] = {"dtype": "number", "shape": [], "source": source}
    data_keys[f"{y}_twin_std"] = {"dtype": "number", "shape": [], "source": source}
    data_keys["outside_training_range"] = {"dtype": "boolean", "shape": [], "source": source}
    data: dict[str, list] = {n: X[:, i].tolist() for i, n in enumerate(names)}
    data[f"{y}_twin"] = mean.tolist()
    data[f"{y}_twin_std"] = std.tolist()
    data["outside_training_range"] = [bool(v) for v in outside]
    if measured is not None:
        measured = np.asarray(measured, dtype=float).reshape(-1)
        if len(measured) != len(X):
            raise ValueError(f"measured has {len(measured)} values for {len(X)} points")
        data_keys[y] = {"dtype": "number", "shape": [], "source": source}
        data[y] = measured.tolist()
    desc_bundle = bundle.compose_descriptor(
        name=stream_name, data_keys=data_keys, hints={"twin": {"fields": [f"{y}_twin"]}}
    )
    now = time.time()
    n = len(X)
    page = desc_bundle.compose_event_page(
        data=data,
        timestamps={k: [now] * n for k in data},
        seq_num=list(range(1, n + 1)),
        time=[now] * n,
    )
    stop = bundle.compose_stop(exit_status="success")
    return [
        ("start", bundle.start_doc),
        ("descriptor", desc_bundle.descriptor_doc),
        ("event_page", page),
        ("stop", stop),
    ]


def _outside(twin: Any, X: np.ndarray) -> np.ndarray:
    fn = getattr(twin, "outside_training_range", None)
    if callable(fn):
        return np.asarray(fn(X), dtype=bool).reshape(-1)
    xr = getattr(twin, "x_range", None)
    if xr is None:
        return np.zeros(len(X), dtype=bool)
    xr = np.asarray(xr, dtype=float)
    return ((X < xr[:, 0]) | (X > xr[:, 1])).any(axis=1)


class TwinStream:
    """Emit a derived ``twin`` run after every refit of a trainer.

    Parameters
    ----------
    trainer
        The :class:`~bluesky_twin.callbacks.TwinTrainer` to follow.
    callbacks
        Document callables ``cb(name, doc)`` receiving the derived runs (e.g. a
        dedicated ``TiledWriter``).  Exceptions are logged, not raised.
    grid
        Mapping ``{input name: 1-D values}``; when given, predictions are made on the
        Cartesian product of these values (``points="grid"``).  Otherwise on the
        measured points of the newest training run (``points="run"``).
    max_points
        Refuse grids larger than this (fixed-size documents stay small).
    md
        Extra start-document metadata.
    """

    def __init__(
        self,
        trainer: Any,
        callbacks: Iterable[DocumentCallback] = (),
        *,
        grid: Mapping[str, Sequence[float]] | None = None,
        max_points: int = 100_000,
        md: Mapping[str, Any] | None = None,
    ) -> None:
        self.trainer = trainer
        self.callbacks = list(callbacks)
        self.md = dict(md or {})
        self._grid = None
        if grid is not None:
            names = list(trainer.x_fields)
            if set(grid) != set(names):
                raise ValueError(f"grid must give values for exactly the inputs {names}; got {sorted(grid)}")
            axes = [np.asarray(grid[n], dtype=float).reshape(-1) for n in names]
            if any(len(a) == 0 or not np.isfinite(a).all() for a in axes):
                raise ValueError("grid values must be finite and non-empty")
            size = int(np.prod([len(a) for a in axes]))
            if size > max_points:
                raise ValueError(f"grid has {size} points, more than max_points={max_points}")
            mesh = np.meshgrid(*axes, indexing="ij")
            self._grid = np.stack([m.reshape(-1) for m in mesh], axis=1)
        self._lock = threading.Lock()
        self.last_documents: list[tuple[str, dict]] = []
        self.emitted_run_uids: list[str] = []
        self.errors: list[str] = []
        trainer.add_refit_listener(self._on_refit)

    def _on_refit(self, twin: Any, trainer: Any) -> None:
        runs = trainer.training_run_uids
        source = runs[-1] if runs else None
        provenance = {
            "source_run_uid": source,
            "twin_training_run_uids": list(runs),
            "twin_study_name": trainer.twin_study_name,
        }
        if self._grid is not None:
            X, measured, points = self._grid, None, "grid"
        else:
            if source is None:
                return
            data = trainer.run_data(source)
            X, measured, points = data["x"], data["y"], "run"
        provenance["twin_points"] = points
        docs = compose_prediction_run(twin, X, measured=measured, provenance=provenance, md=self.md)
        self.publish(docs)

    def publish(self, docs: list[tuple[str, dict]]) -> None:
        """Send *docs* to every callback (serialised; errors are logged and kept).

        When a callback fails after it took the start document, it is sent a copy of
        the stop document with ``exit_status="fail"`` (and the error as ``reason``), so
        that a store does not keep a derived run that looks crashed; replay then
        reports it as failed instead of incomplete.
        """
        with self._lock:
            self.last_documents = docs
            self.emitted_run_uids.append(docs[0][1]["uid"])
            for cb in self.callbacks:
                for i, (name, doc) in enumerate(docs):
                    try:
                        cb(name, doc)
                    except Exception as exc:  # a sink must not break the trainer
                        self.errors.append(f"{cb!r} on {name}: {type(exc).__name__}: {exc}")
                        logger.exception("TwinStream: callback %r failed on %s", cb, name)
                        if 0 < i < len(docs) - 1 and docs[-1][0] == "stop":
                            self._close_failed(cb, docs[-1][1], f"{name} document failed: {type(exc).__name__}: {exc}")
                        break

    def _close_failed(self, cb: DocumentCallback, stop: Mapping[str, Any], reason: str) -> None:
        failed = dict(stop, exit_status="fail", reason=reason)
        try:
            cb("stop", failed)
        except Exception as exc:
            self.errors.append(f"{cb!r} on the failure stop: {type(exc).__name__}: {exc}")
            logger.exception("TwinStream: callback %r failed on the failure stop document", cb)
