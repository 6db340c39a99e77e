"""Twin-steered plans (bluesky_twin.plans) next to bluesky's own bp / bps."""
try:
    import bluesky_twin.plans as twin_plans
    from bluesky_twin.plans import *  # noqa: F401,F403 - the plans' public names
except Exception as _err:  # noqa: BLE001 - never let an optional part break the session
    twin_plans = None
    print(f"[bluesky-twin] twin plans unavailable: {type(_err).__name__}: {_err}")
else:
    _names = getattr(twin_plans, "__all__", [n for n in dir(twin_plans) if not n.startswith("_")])
    print(f"[bluesky-twin] plans: {', '.join(sorted(_names)) or '(none yet)'}")
