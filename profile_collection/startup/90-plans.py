"""Twin-steered plans (bluesky_twin.plans) and bluesky's standard plans, bound by name.

bluesky-queueserver lists only names bound to plan functions, so the standard plans are
imported by name here (``import bluesky.plans as bp`` in 00-base.py is for IPython users).
"""

from bluesky.plans import (  # noqa: F401 - the plans queueserver lists
    count,
    grid_scan,
    list_grid_scan,
    list_scan,
    log_scan,
    rel_grid_scan,
    rel_list_grid_scan,
    rel_list_scan,
    rel_log_scan,
    rel_scan,
    scan,
    scan_nd,
)

try:
    import bluesky_twin.plans as twin_plans
    from bluesky_twin.plans import *  # noqa: F401,F403 - the plans' public names
except Exception as _err:  # noqa: BLE001 - never let an optional part break the session
    twin_plans = None
    print(f"[bluesky-twin] twin plans unavailable: {type(_err).__name__}: {_err}")
else:
    if globals().get("translation") is not None:  # 00-base.py's; queueserver: translation="translation"
        __import__("bluesky_twin.registry").registry.register("translation", globals()["translation"])
    _names = getattr(twin_plans, "__all__", [n for n in dir(twin_plans) if not n.startswith("_")])
    print(f"[bluesky-twin] plans: {', '.join(sorted(_names)) or '(none yet)'}; bluesky's count, scan, grid_scan, ...")
