"""RunEngine, embedded tiled storage, progress bars and BestEffortCallback.

Environment:
    BLUESKY_TWIN_TILED_DIR   the embedded tiled store (default ~/.local/share/bluesky-twin/tiled)
    BLUESKY_TWIN_TILED_URI   a tiled server URI to write to instead (with BLUESKY_TWIN_TILED_API_KEY)
    MPLBACKEND=Agg           or no display: BestEffortCallback plots are disabled (headless)
"""
import os
import sys

import matplotlib
import bluesky.plan_stubs as bps  # noqa: F401 - for the interactive user
import bluesky.plans as bp  # noqa: F401
import bluesky.preprocessors as bpp  # noqa: F401
from bluesky import RunEngine
from bluesky.callbacks.best_effort import BestEffortCallback
from bluesky.utils import ProgressBarManager

from bluesky_twin.storage import default_store_directory, last_scan_id, make_tiled_writer, open_store, open_tiled

RE = RunEngine({})

if os.environ.get("BLUESKY_TWIN_TILED_URI"):
    TILED_LOCATION = os.environ["BLUESKY_TWIN_TILED_URI"]
    catalog = open_tiled(TILED_LOCATION, api_key=os.environ.get("BLUESKY_TWIN_TILED_API_KEY"))
else:
    TILED_LOCATION = str(default_store_directory())
    catalog = open_store(TILED_LOCATION)
tiled_writer = make_tiled_writer(catalog)
RE.subscribe(tiled_writer)
RE.md["scan_id"] = last_scan_id(catalog)  # continue the numbering of the stored runs

RE.waiting_hook = ProgressBarManager()

HEADLESS = matplotlib.get_backend().lower() in {"agg", "pdf", "ps", "svg", "cairo", "template"} or (
    sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
)
bec = BestEffortCallback()
if HEADLESS:
    bec.disable_plots()
RE.subscribe(bec)

print(f"[bluesky-twin] RunEngine ready; runs are stored in tiled at {TILED_LOCATION} ({len(catalog)} runs)")
