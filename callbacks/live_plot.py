"""``TwinLivePlot``: measured readings against the twin's prediction and its +-std band.

For every run, the callback plots the measured y against one scan axis and, for the
same points, the twin's mean prediction with a shaded ``mean +- n_std * std`` band,
one line per value of an optional grouping axis (e.g. one line per field of a set of
isofield temperature sweeps).

Threads
-------
* **Documents** (the RunEngine thread, or Qt's main thread, see below) only store the
  new point and, when a redraw is due, hand it to a worker: O(1) work per event; the
  document thread never waits for ``predict`` or for matplotlib.
* **A worker thread** (``twin-live-plot``, started on demand, gone when idle) takes a
  snapshot of the run's points and the source's current twin and computes the twin
  curve (``predict``).  Requests that arrive while it works are coalesced into one.
* **Drawing** happens where the backend allows: with a Qt backend on Qt's main thread
  (bluesky's :class:`~bluesky.callbacks.mpl_plotting.QtAwareCallback` teleporter, as
  ``LivePlot`` does); with a non-interactive backend (Agg, headless) on the worker;
  with another interactive backend (Tk, macosx...) on the thread that delivers the
  documents, at the next document (or :meth:`TwinLivePlot.wait`).

Redraws
-------
Redrawing matplotlib costs about 0.25 s, so redraws are throttled: at most one every
``min_interval`` seconds and, optionally, every ``every`` events; the final state is
always drawn at the stop document.  A refit of a :class:`TwinTrainer` source (its
refit listener) redraws the current run with the new twin, also after the run
stopped; a source without refit listeners is polled for its ``version`` at each event.
Axes are labelled with the descriptor's ``units`` (or ``egu``) where present.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from typing import Any

import numpy as np
from bluesky.callbacks.core import make_class_safe
from bluesky.callbacks.mpl_plotting import QtAwareCallback, initialize_qt_teleporter

from bluesky_twin.errors import InputError
from bluesky_twin.protocols import Twin, TwinSource

logger = logging.getLogger(__name__)

__all__ = ["TwinLivePlot"]

#: Name under which the worker hands a computed frame to the Qt thread.
_DRAW = "twin_live_plot_draw"
#: Draw modes: Qt main thread, the worker thread, or the document thread.
QT, WORKER, CALLER = "qt", "worker", "caller"


def _refit_listener(plot: TwinLivePlot):
    """A refit listener that does not keep the plot alive."""
    ref = weakref.ref(plot)

    def on_refit(twin: Any, source: Any) -> None:
        target = ref()
        if target is not None:
            target._request("refit")

    return on_refit


def _label(name: str, units: str | None) -> str:
    return f"{name} [{units}]" if units else name


@make_class_safe(logger=logger)
class TwinLivePlot(QtAwareCallback):
    """Live plot of measured vs. predicted values along the scan axis.

    Parameters
    ----------
    source
        A :class:`~bluesky_twin.protocols.TwinSource` such as a
        :class:`~bluesky_twin.callbacks.TwinTrainer` (its latest twin is used at every
        redraw, and every refit redraws) or a fixed :class:`~bluesky_twin.protocols.Twin`.
    x
        Data key plotted on the horizontal axis; must be one of the twin's inputs.
    y
        Measured data key (default: the twin's / trainer's y).
    group_by
        Data key whose value splits the points into lines (rounded to ``group_decimals``).
    ax
        Matplotlib axes; a new figure is made if omitted.
    min_interval
        Seconds between event-driven redraws at least.
    every
        Redraw after this many new events (in addition to the time throttle); ``None``
        means time-throttled only.
    n_std
        Half-width of the band in standard deviations.
    group_decimals
        Decimals to which ``group_by`` values are rounded before grouping.
    stream_name
        Stream whose events are plotted.
    use_teleporter
        Deliver documents and draws to Qt's main thread (bluesky's
        ``QtAwareCallback``).  ``None`` (default): when the matplotlib backend is a Qt
        backend.  Then the plot must be made on the main thread (it calls
        :func:`~bluesky.callbacks.mpl_plotting.initialize_qt_teleporter`).

    Raises
    ------
    InputError
        A source that is neither a ``TwinSource`` nor a ``Twin``, axes that are not
        inputs of the twin, or bad throttle values (one line).

    Notes
    -----
    Thread-safety: documents may come from any one thread; the worker and refit
    listeners share the points under a lock.  :attr:`n_requests` counts the redraws
    asked for, :attr:`n_predicts` the twin curves computed and :attr:`n_redraws` the
    frames drawn (fewer than asked when requests were coalesced).
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
        use_teleporter: bool | None = None,
    ) -> None:
        if not isinstance(source, (TwinSource, Twin)):
            raise InputError(
                "source must be a TwinSource (e.g. a TwinTrainer) or a Twin (predict, x_names, y_name, "
                f"x_range, version); got {type(source).__name__}"
            )
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
        import matplotlib

        if use_teleporter is None:
            use_teleporter = "qt" in matplotlib.get_backend().lower()
        if use_teleporter:
            initialize_qt_teleporter()  # on the main thread; a no-op once done
        super().__init__(use_teleporter=use_teleporter)
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
        if use_teleporter:
            from bluesky.callbacks.mpl_plotting import _get_teleporter

            self._teleporter = _get_teleporter()  # the one QtAwareCallback uses (cached)
            self.draw_mode = QT
        elif getattr(type(ax.figure.canvas), "required_interactive_framework", None) is None:
            self._teleporter = None
            self.draw_mode = WORKER  # Agg & co.: no GUI event loop to respect
        else:
            self._teleporter = None
            self.draw_mode = CALLER
        self.n_requests = 0
        self.n_predicts = 0
        self.n_redraws = 0
        self.drawn_version: str | None = None
        self.errors: list[str] = []
        self._cond = threading.Condition()
        self._draw_lock = threading.Lock()
        self._pending = False
        self._worker_active = False
        self._ready: dict[str, Any] | None = None  # CALLER mode: a computed frame to draw
        add_listener = getattr(source, "add_refit_listener", None)
        self._listens = callable(add_listener)
        if self._listens:
            add_listener(_refit_listener(self))
        self._seen_version: str | None = None
        self._reset()

    # -- source helpers ----------------------------------------------------------------
    def _twin(self) -> Twin | None:
        return self._trainer.twin if self._trainer is not None else self._fixed

    def _x_names(self) -> list[str]:
        return list(self._trainer.x_fields if self._trainer is not None else self._fixed.x_names)

    def _y_name(self) -> str:
        return str(self._trainer.y_field if self._trainer is not None else self._fixed.y_name)

    # -- documents -----------------------------------------------------------------------
    def _reset(self, run_uid: str | None = None, title: str = "") -> None:
        with self._cond:
            self._descriptors: set[str] = set()
            self._points: dict[tuple[str, int], tuple[tuple[float, ...], float]] = {}
            self._since_draw = 0
            self._last_draw = -np.inf
            self._units: dict[str, str] = {}
            self._title = title
            self.run_uid = run_uid

    def __call__(self, name: str, doc: dict, *args: Any, escape: bool = False, **kwargs: Any) -> Any:
        """Take a document (RunEngine callback signature); also draws frames handed over."""
        if name == _DRAW:  # a computed frame teleported to Qt's main thread
            self._apply(doc)
            return None
        if self._ready is not None and self.draw_mode == CALLER:
            self._apply_ready()
        return super().__call__(name, doc, *args, escape=escape, **kwargs)

    def start(self, doc):
        self._reset(doc["uid"], f"scan {doc.get('scan_id', '')}: {self.y} (measured) vs twin")
        super().start(doc)

    def descriptor(self, doc):
        keys = doc.get("data_keys", {})
        if doc.get("name") == self.stream_name and self.y in keys and all(k in keys for k in self._x_names()):
            units = {}
            for k in (self.x, self.y):
                u = keys[k].get("units") or keys[k].get("egu")
                if u:
                    units[k] = str(u)
            with self._cond:
                self._descriptors.add(doc["uid"])
                self._units.update(units)
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
        with self._cond:
            # keyed by (descriptor, seq_num): a pause/resume retake replaces the old point
            self._points[(doc["descriptor"], int(doc["seq_num"]))] = (xs, yv)
            self._since_draw += 1
            now = time.monotonic()
            due = now - self._last_draw >= self.min_interval or (
                self.every is not None and self._since_draw >= self.every
            )
        if not self._listens and self._trainer is not None:
            version = self._trainer.version  # cheap; polled only for sources without listeners
            if version != self._seen_version:  # a refit since the last request
                self._seen_version = version
                due = True
        if due:
            self._request("event")
        super().event(doc)

    def stop(self, doc):
        self._request("stop")
        super().stop(doc)

    # -- the worker ------------------------------------------------------------------------
    def _request(self, reason: str) -> None:
        """Ask the worker for a new frame (never blocks; coalesced while it works)."""
        with self._cond:
            if self.run_uid is None:
                return  # nothing to draw yet (e.g. a refit before the first run)
            self.n_requests += 1
            self._last_draw = time.monotonic()
            self._since_draw = 0
            self._pending = True
            if self._worker_active:
                return
            self._worker_active = True
        threading.Thread(target=self._work, name="twin-live-plot", daemon=True).start()

    def _work(self) -> None:
        while True:
            with self._cond:
                if not self._pending:
                    self._worker_active = False
                    self._cond.notify_all()
                    return
                self._pending = False
                points = list(self._points.values())
                meta = {
                    "run_uid": self.run_uid,
                    "title": self._title,
                    "xlabel": _label(self.x, self._units.get(self.x)),
                    "ylabel": _label(self.y, self._units.get(self.y)),
                }
            try:
                frame = self._compute(points, self._twin())
                frame.update(meta)
                self._deliver(frame)
            except Exception as exc:  # never let a frame kill the worker silently
                logger.exception("TwinLivePlot: could not draw a frame")
                if len(self.errors) < 100:
                    self.errors.append(f"{type(exc).__name__}: {exc}")

    def _compute(self, points: list[tuple[tuple[float, ...], float]], twin: Twin | None) -> dict[str, Any]:
        """The twin curve and the groups of one frame (worker thread; the slow part)."""
        names = self._x_names()
        if points:
            X = np.array([p[0] for p in points], dtype=float)
            y = np.array([p[1] for p in points], dtype=float)
        else:
            X, y = np.empty((0, len(names))), np.empty(0)
        finite = np.isfinite(X).all(axis=1) & np.isfinite(y)
        X, y = X[finite], y[finite]
        mean = std = None
        version = None if twin is None else str(twin.version)
        if twin is not None and len(X):
            mean, std = twin.predict(X)
            self.n_predicts += 1
            mean, std = np.asarray(mean, float).reshape(-1), np.asarray(std, float).reshape(-1)
        ix = names.index(self.x)
        if self.group_by is None:
            groups = np.zeros(len(X))
        else:
            groups = np.round(X[:, names.index(self.group_by)], self.group_decimals)
        lines = []
        for g in np.unique(groups):
            sel = groups == g
            order = np.argsort(X[sel, ix], kind="stable")
            label = f"{self.group_by}={g:g}" if self.group_by is not None else "measured"
            lines.append(
                {
                    "label": label,
                    "x": X[sel, ix][order],
                    "y": y[sel][order],
                    "mean": None if mean is None else mean[sel][order],
                    "std": None if std is None else std[sel][order],
                }
            )
        return {"lines": lines, "version": version, "n_points": int(len(X))}

    def _deliver(self, frame: dict[str, Any]) -> None:
        if self.draw_mode == QT:
            self._teleporter.name_doc_escape.emit(_DRAW, frame, self)
        elif self.draw_mode == WORKER:
            self._apply(frame)
        else:
            with self._cond:
                self._ready = frame

    def _apply_ready(self) -> None:
        with self._cond:
            frame, self._ready = self._ready, None
        if frame is not None:
            self._apply(frame)

    # -- drawing -----------------------------------------------------------------------
    def _apply(self, frame: dict[str, Any]) -> None:
        """Draw a computed frame (on the thread the backend allows; see the module notes)."""
        if frame.get("run_uid") != self.run_uid:
            return  # a frame of a run that has been replaced since
        import matplotlib

        cycle = matplotlib.rcParams["axes.prop_cycle"].by_key().get("color", ["C0"])
        with self._draw_lock:
            ax = self.ax
            for artist in list(ax.lines) + list(ax.collections):
                artist.remove()
            for k, line in enumerate(frame["lines"]):
                color = cycle[k % len(cycle)]
                xs = line["x"]
                ax.plot(xs, line["y"], "o", ms=3, color=color, label=line["label"])
                if line["mean"] is not None:
                    m, s = line["mean"], line["std"]
                    ax.plot(xs, m, "-", lw=1, color=color)
                    ax.fill_between(xs, m - self.n_std * s, m + self.n_std * s, color=color, alpha=0.25, lw=0)
            ax.set_title(frame["title"])
            ax.set_xlabel(frame["xlabel"])
            ax.set_ylabel(frame["ylabel"])
            self.drawn_version = frame["version"]
            if frame["n_points"]:
                ax.legend(loc="best", fontsize="small", title=f"twin {self.drawn_version or '(none yet)'}")
                ax.relim()
                ax.autoscale_view()
            ax.figure.canvas.draw_idle()
            self.n_redraws += 1

    def data(self) -> dict[str, np.ndarray]:
        """The points of the current run: ``X`` (n, n_inputs) and measured ``y``."""
        with self._cond:
            points = list(self._points.values())
        if not points:
            return {"X": np.empty((0, len(self._x_names()))), "y": np.empty(0)}
        X = np.array([p[0] for p in points], dtype=float)
        y = np.array([p[1] for p in points], dtype=float)
        return {"X": X, "y": y}

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until every requested frame is computed (and drawn, except with Qt).

        In Qt mode the frame is then queued to Qt's main thread.  With another
        interactive backend the frame is drawn here, on the calling thread.

        Parameters
        ----------
        timeout
            Seconds to wait at most (``None``: as long as it takes).

        Returns
        -------
        bool
            False if the worker was still busy at the timeout.
        """
        with self._cond:
            done = self._cond.wait_for(lambda: not self._worker_active, timeout=timeout)
        if self.draw_mode == CALLER:
            self._apply_ready()
        return bool(done)

    def redraw(self, *, wait: bool = True, timeout: float | None = None) -> None:
        """Redraw now with the source's current twin (bypasses the throttle).

        Parameters
        ----------
        wait
            Return only once the frame is computed (see :meth:`wait`).
        timeout
            Seconds to wait at most.
        """
        self._request("manual")
        if wait:
            self.wait(timeout)
