"""The streaming twin trainer (and its live plot) for the magnetometer.

The trainer learns M(T, H) from every successful magnetometer run, refitting in a
background thread; runs without these fields are ignored.  Set
BLUESKY_TWIN_PROFILE_TRAINER=0 to leave it out.
"""
import os

twin_trainer = None
twin_plot = None
if os.environ.get("BLUESKY_TWIN_PROFILE_TRAINER", "1") != "0":
    try:
        from bluesky_twin.callbacks import TwinTrainer
    except Exception as _err:  # noqa: BLE001 - never let an optional part break the session
        print(f"[bluesky-twin] twin trainer unavailable, continuing without it: {type(_err).__name__}: {_err}")
    else:
        twin_trainer = TwinTrainer(
            ["mpms_temperature", "mpms_field"], "mpms_magnetisation", fit_kwargs={"trials": 20, "timeout": 300}
        )
        RE.subscribe(twin_trainer)
        try:
            from bluesky_twin.callbacks import TwinLivePlot

            twin_plot = TwinLivePlot(twin_trainer, x="mpms_temperature", group_by="mpms_field")
        except Exception as _err:  # noqa: BLE001
            print(f"[bluesky-twin] twin live plot unavailable: {type(_err).__name__}: {_err}")
        else:
            if not HEADLESS:
                RE.subscribe(twin_plot)
        print("[bluesky-twin] twin_trainer subscribed: (mpms_temperature, mpms_field) -> mpms_magnetisation")
