"""``TwinLivePlot``: measured readings against the twin's prediction and its +-std band.

For every run, the callback plots the measured y against one scan axis and, for the
same points, the twin's mean prediction with a shaded ``mean +- n_std * std`` band,
one line per value of an optional grouping axis (e.g. one line per field of a set of
isofield temperature sweeps).  The twin is taken from a :class:`TwinTrainer` at every
redraw, so a refit shows up in the next redraw.

Redrawing matplotlib after every point costs about 0.25 s, so redraws are throttled:
at most one every ``min_interval`` seconds and, optionally, every ``every`` events;
the final state is always drawn at the stop document.  It works headless (Agg).
"""
from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
from bluesky.callbacks.core import CallbackBase, make_class_safe

from bluesky_twin.errors import InputError
from bluesky_twin.protocols import Twin, TwinSource

logger = logging.getLogger(__name__)

__all__ = ["TwinLivePlot"]


@make_class_safe(logger=logger)
class TwinLivePlot(CallbackBase):
    """Live plot of measured vs. predicted values along the scan axis.

    Parameters
    ----------
    source
        A :class:`~bluesky_twin.protocols.TwinSource` such as a
        :class:`~bluesky_twin.callbacks.TwinTrainer` (its latest twin is used at every
        redraw) or a fixed :class:`~bluesky_twin.protocols.Twin`.
    x
        Data key plotted on the horizontal axis; must be one of the twin's inputs.
    y
        Measured data key (default: the twin's / trainer's y).
    group_by
        Data key whose value splits the points into lines (rounded to ``group_decimals``).
    ax
        Matplotlib axes; a new figure is made if omitted.
    min_interval
        Seconds between redraws at least.
    every
        Redraw after this many new events (in addition to the time throttle); ``None``
        means time-throttled only.
    n_std
        Half-width of the band in standard deviations.
    stream_name
        Stream whose events are plotted.

    Raises
    ------
    InputError
        A source that is neither a ``TwinSource`` nor a ``Twin``, axes that are not
        inputs of the twin, or bad throttle values (one line).
    """

    def __init__(
        self,
        source: TwinSource | Twin,
        x: str,
        *,
        y: str | None = None,
        group_by: str | None = None,
        ax: Any | None = None,
        min_interval: float = 1.0,
        every: int | None = None,
        n_std: float = 2.0,
        group_decimals: int = 6,
        stream_name: str = "primary",
    ) -> None:
        super().__init__()
        if not isinstance(source, (TwinSource, Twin)):
            raise InputError("source must be a TwinSource (e.g. a TwinTrainer) or a Twin (predict, x_names, y_name, "
                             f"x_range, version); got {type(source).__name__}")
        # which contract the source follows, decided once (not per event)
        self._trainer: TwinSource | None = source if isinstance(source, TwinSource) else None
        self._fixed: Twin | None = None if self._trainer is not None else source
        x_names = self._x_names()
        if x not in x_names:
            raise InputError(f"x={x!r} is not an input of the twin/trainer {x_names}")
        if group_by is not None and group_by not in x_names:
            raise InputError(f"group_by={group_by!r} is not an input of the twin/trainer {x_names}")
        if min_interval < 0 or (every is not None and every < 1):
            raise InputError("min_interval must be >= 0 and every >= 1")
        self.x = x
        self.y = y or self._y_name()
        self.group_by = group_by
        self.min_interval = float(min_interval)
        self.every = every
        self.n_std = float(n_std)
        self.group_decimals = int(group_decimals)
        self.stream_name = stream_name
        if ax is None:
            import matplotlib.pyplot as plt

            _, ax = plt.subplots()
        self.ax = ax
        self.n_redraws = 0
        self.drawn_version: str | None = None
        self._reset()

    # -- source helpers ----------------------------------------------------------------
    def _twin(self) -> Twin | None:
        return self._trainer.twin if self._trainer is not None else self._fixed

    def _x_names(self) -> list[str]:
        return list(self._trainer.x_fields if self._trainer is not None else self._fixed.x_names)

    def _y_name(self) -> str:
        return str(self._trainer.y_field if self._trainer is not None else self._fixed.y_name)

    # -- documents -----------------------------------------------------------------------
    def _reset(self) -> None:
        self._descriptors: set[str] = set()
        self._points: dict[tuple[str, int], tuple[tuple[float, ...], float]] = {}
        self._since_draw = 0
        self._last_draw = -np.inf
        self.run_uid: str | None = None

    def start(self, doc):
        self._reset()
        self.run_uid = doc["uid"]
        self.ax.cla()
        self.ax.set_title(f"scan {doc.get('scan_id', '')}: {self.y} (measured) vs twin")
        super().start(doc)

    def descriptor(self, doc):
        keys = doc.get("data_keys", {})
        if doc.get("name") == self.stream_name and self.y in keys and all(k in keys for k in self._x_names()):
            self._descriptors.add(doc["uid"])
        super().descriptor(doc)

    def event(self, doc):
        if doc["descriptor"] not in self._descriptors:
            return
        data = doc["data"]
        try:
            xs = tuple(float(data[k]) for k in self._x_names())
            yv = float(data[self.y])
        except (TypeError, ValueError):
            return
        # keyed by (descriptor, seq_num): a pause/resume retake replaces the old point
        self._points[(doc["descriptor"], int(doc["seq_num"]))] = (xs, yv)
        self._since_draw += 1
        now = time.monotonic()
        due_time = now - self._last_draw >= self.min_interval
        due_count = self.every is not None and self._since_draw >= self.every
        if due_time or due_count:
            self.redraw()
        super().event(doc)

    def stop(self, doc):
        self.redraw()
        super().stop(doc)

    # -- drawing -----------------------------------------------------------------------
    def data(self) -> dict[str, np.ndarray]:
        """The points of the current run: ``X`` (n, n_inputs) and measured ``y``."""
        if not self._points:
            return {"X": np.empty((0, len(self._x_names()))), "y": np.empty(0)}
        X = np.array([p[0] for p in self._points.values()], dtype=float)
        y = np.array([p[1] for p in self._points.values()], dtype=float)
        return {"X": X, "y": y}

    def redraw(self) -> None:
        """Redraw now (the throttle calls this; call it yourself to force a redraw)."""
        self._last_draw = time.monotonic()
        self._since_draw = 0
        d = self.data()
        X, y = d["X"], d["y"]
        names = self._x_names()
        ix = names.index(self.x)
        finite = np.isfinite(X).all(axis=1) & np.isfinite(y)
        X, y = X[finite], y[finite]
        twin = self._twin()
        mean = std = None
        if twin is not None and len(X):
            mean, std = twin.predict(X)
            mean, std = np.asarray(mean, float).reshape(-1), np.asarray(std, float).reshape(-1)
        ax = self.ax
        for artist in list(ax.lines) + list(ax.collections):
            artist.remove()
        if self.group_by is None:
            groups = np.zeros(len(X))
        else:
            groups = np.round(X[:, names.index(self.group_by)], self.group_decimals)
        import matplotlib

        cycle = matplotlib.rcParams["axes.prop_cycle"].by_key().get("color", ["C0"])
        for k, g in enumerate(np.unique(groups)):
            sel = groups == g
            order = np.argsort(X[sel, ix], kind="stable")
            xs = X[sel, ix][order]
            color = cycle[k % len(cycle)]
            label = f"{self.group_by}={g:g}" if self.group_by is not None else "measured"
            ax.plot(xs, y[sel][order], "o", ms=3, color=color, label=label)
            if mean is not None:
                m, s = mean[sel][order], std[sel][order]
                ax.plot(xs, m, "-", lw=1, color=color)
                ax.fill_between(xs, m - self.n_std * s, m + self.n_std * s, color=color, alpha=0.25, lw=0)
        ax.set_xlabel(self.x)
        ax.set_ylabel(self.y)
        self.drawn_version = None if twin is None else str(twin.version)
        if len(X):
            ax.legend(loc="best", fontsize="small", title=f"twin {self.drawn_version or '(none yet)'}")
            ax.relim()
            ax.autoscale_view()
        ax.figure.canvas.draw_idle()
        self.n_redraws += 1
