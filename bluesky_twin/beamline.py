"""What an IPython profile at a beamline needs around the RunEngine, kept out of the startup files.

* :class:`TwinRunEngine`: ``RunEngine(call_returns_result=True)`` that prints a one-line
  summary (:func:`twin_summary`) when a twin plan returns its result;
* :class:`LazyCallback`: subscribe now, build the real callback (and import what it needs,
  torch for the INS translation) at the first document that needs it;
* :class:`LazyCatalog`: a tiled catalog opened on first use, so that start-up does not pay
  for tiled.

``profile_collection/startup/00-base.py`` wires them; see docs/bluesky.md.
"""

import threading

from bluesky import RunEngine

__all__ = ["LazyCallback", "LazyCatalog", "TwinRunEngine", "twin_summary"]


def twin_summary(result):
    """One line about a twin plan's result (``coarse_to_fine``, ``twin_adaptive_scan``), else ``None``."""
    kind = type(result).__name__
    if kind == "CoarseToFineResult":
        ok = "" if result.proposal_ok else " (only the finest step passed)"
        rmse = "n/a" if result.dsm_rmse_pct is None else f"{result.dsm_rmse_pct:.2f} %"
        return (
            f"coarse_to_fine: field step {result.proposed_field_step}{ok}, {len(result.fine_fields)} fine "
            f"fields, twin {result.twin_version}, dS_M rmse {rmse}, runs {[u[:8] for u in result.run_uids]}"
        )
    if kind == "AdaptiveScanResult":
        return (
            f"twin_adaptive_scan: {result.reason}; lines {result.measured_lines} in {len(result.run_uids)} "
            f"runs, next {result.proposal}, twin {result.twin_versions[-1] if result.twin_versions else None}"
        )
    return None


class TwinRunEngine(RunEngine):
    """``RunEngine(call_returns_result=True)`` that prints :func:`twin_summary` of a plan's result."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("call_returns_result", True)
        super().__init__(*args, **kwargs)

    def __call__(self, *args, **kwargs):
        return self._summarised(super().__call__(*args, **kwargs))

    def resume(self):
        return self._summarised(super().resume())

    @staticmethod
    def _summarised(out):
        line = twin_summary(getattr(out, "plan_result", None))
        if line:
            print(f"[bluesky-twin] {line}")
        return out


class LazyCallback:
    """Subscribe now, build later: ``factory()`` makes the real callback at the first document for
    which ``when(name, doc)`` is true (default: the first one), after replaying the current run's
    start and descriptors to it.  A failing optional (``required=False``) callback says why once and stays off."""

    def __init__(self, factory, when=None, required=True, label="callback"):
        self.factory, self.when, self.required, self.label = factory, when, required, label
        self.callback, self.error, self._run_docs = None, None, []

    def __call__(self, name, doc):
        if self.callback is None and self.error is None:
            if self.when is None or self.when(name, doc):
                try:
                    self.callback = self.factory()
                except Exception as err:  # noqa: BLE001
                    if self.required:
                        raise
                    self.error = err
                    print(f"[bluesky-twin] {self.label} unavailable: {type(err).__name__}: {err}")
                for n, d in self._run_docs if self.callback is not None else ():
                    self.callback(n, d)
                self._run_docs = []
            elif name in ("start", "descriptor"):
                self._run_docs = ([] if name == "start" else self._run_docs) + [(name, doc)]
        if self.callback is not None:
            return self.callback(name, doc)

    def build(self):
        """The real callback, built now if it was not yet (a plan that takes it by name needs it)."""
        if self.callback is None:
            if self.error is not None:
                raise RuntimeError(f"the {self.label} is unavailable: {type(self.error).__name__}: {self.error}")
            self.callback = self.factory()
        return self.callback

    def __getattr__(self, attr):  # the real callback's attributes, once built
        if self.__dict__.get("callback") is None:
            raise AttributeError(f"{attr!r}: the {self.__dict__.get('label')} is built on first use")
        return getattr(self.__dict__["callback"], attr)


class LazyCatalog:
    """A tiled catalog opened on first use (``catalog[-1]``, ``len(catalog)``...); ``open()`` gives the client."""

    def __init__(self, opener, location):
        self._opener, self.location, self._client, self._lock = opener, location, None, threading.Lock()

    def open(self):
        with self._lock:
            if self._client is None:
                self._client = self._opener(self.location)
            return self._client

    def __getattr__(self, attr):
        return getattr(self.open(), attr)

    def __getitem__(self, key):
        return self.open()[key]

    def __len__(self):
        return len(self.open())

    def __iter__(self):
        return iter(self.open())

    def __contains__(self, key):
        return key in self.open()

    def __repr__(self):
        if self._client is None:
            return f"<tiled runs at {self.location} (opened on first use)>"
        return repr(self._client)
