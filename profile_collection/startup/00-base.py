"""RunEngine, the profile's lazy helpers, progress bars and BestEffortCallback.

Start-up stays fast (a few seconds) because what is heavy is built on first use:
tiled and torch (the INS translation) are imported by the first run that needs them,
through :class:`LazyCallback` and :class:`LazyCatalog`.

``RE`` is a :class:`TwinRunEngine`: a ``RunEngine(call_returns_result=True)`` (``RE(plan)``
returns a ``RunEngineResult``; ``.plan_result`` is the plan's return value) that prints a
one-line summary (:func:`twin_summary`) when a twin plan returns its result.

Runs go to tiled; INS frames are translated into a ``translation`` stream of the same run.
Subscription order (tokens kept by name, ``RE.unsubscribe(translation_token)`` etc.):

1. ``translation`` (``translation_token``): the INS ``TranslationCallback`` (Exp2Sim + domain
   score, callbacks/translation.py).  Built, and torch imported, only when a run has an
   ``ins_frame`` data key; its ``translation`` stream goes to ``tiled_writer``.  Subscribed BEFORE
   the writer, so that stream reaches the writer ahead of the run's stop document.
2. ``tiled_writer`` (``tiled_writer_token``): TiledWriter into ``catalog``; tiled is imported
   and the store opened at the first run (or at the first use of ``catalog``).
3. ``bec`` (``bec_token``): BestEffortCallback, plots off when headless.

Scan numbering continues from the last stored run (read when the first run opens).

Environment:
    BLUESKY_TWIN_TILED_DIR        the embedded tiled store (default ~/.local/share/bluesky-twin/tiled)
    BLUESKY_TWIN_TILED_URI        a tiled server URI to write to instead (with BLUESKY_TWIN_TILED_API_KEY)
    BLUESKY_TWIN_PROFILE_TRANSLATION=0   leave the INS translation out
    MPLBACKEND=Agg                or no display: BestEffortCallback plots are disabled (headless)
"""
import os
import sys
import threading

import matplotlib
import bluesky.plan_stubs as bps  # noqa: F401 - for the interactive user
import bluesky.plans as bp  # noqa: F401
import bluesky.preprocessors as bpp  # noqa: F401
from bluesky import RunEngine
from bluesky.callbacks.best_effort import BestEffortCallback
from bluesky.utils import ProgressBarManager

from bluesky_twin.storage import default_store_directory, last_scan_id, make_tiled_writer, open_store, open_tiled


def twin_summary(result):
    """One line about a twin plan's result (``coarse_to_fine``, ``twin_adaptive_scan``), else ``None``."""
    kind = type(result).__name__
    if kind == "CoarseToFineResult":
        ok = "" if result.proposal_ok else " (only the finest step passed)"
        rmse = "n/a" if result.dsm_rmse_pct is None else f"{result.dsm_rmse_pct:.2f} %"
        return (f"coarse_to_fine: field step {result.proposed_field_step}{ok}, {len(result.fine_fields)} fine "
                f"fields, twin {result.twin_version}, dS_M rmse {rmse}, runs {[u[:8] for u in result.run_uids]}")
    if kind == "AdaptiveScanResult":
        return (f"twin_adaptive_scan: {result.reason}; lines {result.measured_lines} in {len(result.run_uids)} "
                f"runs, next {result.proposal}, twin {result.twin_versions[-1] if result.twin_versions else None}")
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


RE = TwinRunEngine({})
RE.waiting_hook = ProgressBarManager()

HEADLESS = matplotlib.get_backend().lower() in {"agg", "pdf", "ps", "svg", "cairo", "template"} or (
    sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
)

if os.environ.get("BLUESKY_TWIN_TILED_URI"):
    TILED_LOCATION = os.environ["BLUESKY_TWIN_TILED_URI"]
    catalog = LazyCatalog(lambda uri: open_tiled(uri, api_key=os.environ.get("BLUESKY_TWIN_TILED_API_KEY")),
                          TILED_LOCATION)
else:
    TILED_LOCATION = str(default_store_directory())
    catalog = LazyCatalog(open_store, TILED_LOCATION)


def _continue_scan_ids(md, _seen=[]):  # noqa: B006 - read the stored numbering once
    if not _seen:
        md["scan_id"] = max(int(md.get("scan_id", 0)), last_scan_id(catalog.open()))
        _seen.append(True)
    return md.get("scan_id", 0) + 1


RE.scan_id_source = _continue_scan_ids
tiled_writer = LazyCallback(lambda: make_tiled_writer(catalog.open()), label="tiled writer")


def _make_translation():
    from bluesky_twin.callbacks import TranslationCallback

    callback = TranslationCallback(field="ins_frame", summary_stream="translation_summary")
    callback.subscribe(tiled_writer)
    return callback


translation = None
translation_token = None
if os.environ.get("BLUESKY_TWIN_PROFILE_TRANSLATION", "1") != "0":
    translation = LazyCallback(
        _make_translation, when=lambda name, doc: name == "descriptor" and "ins_frame" in doc.get("data_keys", {}),
        required=False, label="INS translation",
    )
    translation_token = RE.subscribe(translation)  # first: its stream reaches the writer before stop
tiled_writer_token = RE.subscribe(tiled_writer)

bec = BestEffortCallback()
if HEADLESS:
    bec.disable_plots()
bec_token = RE.subscribe(bec)

print(f"[bluesky-twin] RunEngine ready; runs are stored in tiled at {TILED_LOCATION} (opened at the first run)")
