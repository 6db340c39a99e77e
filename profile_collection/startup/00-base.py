"""RunEngine, tiled store, INS translation, progress bars and BestEffortCallback (docs/bluesky.md).

Heavy parts are built on first use (bluesky_twin.beamline): tiled at the first run, torch when
a run has ``ins_frame``.  ``RE(plan)`` returns a RunEngineResult and prints a one-line summary of
a twin plan's result.  Subscription order, tokens kept: ``translation_token`` (its stream must
reach the writer before the stop document), ``tiled_writer_token``, ``bec_token``.

Environment: BLUESKY_TWIN_TILED_DIR (the embedded store), BLUESKY_TWIN_TILED_URI and
BLUESKY_TWIN_TILED_API_KEY (a tiled server instead), BLUESKY_TWIN_PROFILE_TRANSLATION=0 (no INS
translation), MPLBACKEND=Agg or no display (headless: no BestEffortCallback plots).
"""

import os
import sys

import matplotlib
import bluesky.plan_stubs as bps  # noqa: F401 - for the interactive user
import bluesky.plans as bp  # noqa: F401
import bluesky.preprocessors as bpp  # noqa: F401
from bluesky.callbacks.best_effort import BestEffortCallback
from bluesky.utils import ProgressBarManager

from bluesky_twin.beamline import LazyCallback, LazyCatalog, TwinRunEngine, twin_summary  # noqa: F401
from bluesky_twin.storage import default_store_directory, last_scan_id, make_tiled_writer, open_store, open_tiled

RE = TwinRunEngine({})
RE.waiting_hook = ProgressBarManager()

HEADLESS = matplotlib.get_backend().lower() in {"agg", "pdf", "ps", "svg", "cairo", "template"} or (
    sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
)

if os.environ.get("BLUESKY_TWIN_TILED_URI"):
    TILED_LOCATION = os.environ["BLUESKY_TWIN_TILED_URI"]
    catalog = LazyCatalog(
        lambda uri: open_tiled(uri, api_key=os.environ.get("BLUESKY_TWIN_TILED_API_KEY")), TILED_LOCATION
    )
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
        _make_translation,
        when=lambda name, doc: name == "descriptor" and "ins_frame" in doc.get("data_keys", {}),
        required=False,
        label="INS translation",
    )
    translation_token = RE.subscribe(translation)  # first: its stream reaches the writer before stop
tiled_writer_token = RE.subscribe(tiled_writer)

bec = BestEffortCallback()
if HEADLESS:
    bec.disable_plots()
bec_token = RE.subscribe(bec)

print(f"[bluesky-twin] RunEngine ready; runs are stored in tiled at {TILED_LOCATION} (opened at the first run)")
