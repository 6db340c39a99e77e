"""The streaming twin trainer (and its live plot) for the magnetometer.

The trainer is opt-in and quiet: it learns M(T, H) only from runs meant for the twin
(``twin_runs_only``: the twin plans' runs, or ``RE(plan, twin=True)``), refits in a
background thread, and prints ONE status line per fit.  It is registered as
``"twin_trainer"`` (bluesky_twin.registry), so queueserver plans take
``trainer="twin_trainer"``.

Environment:
    BLUESKY_TWIN_PROFILE_TRAINER=0   leave the trainer out
    BLUESKY_TWIN_PROFILE_FIT         JSON keyword arguments of the fits (first fit and refits),
                                     e.g. '{"trials": 2, "budget": 20, "search_space": {"max_epochs": 50}}'
                                     (default: first fit {"trials": 20, "timeout": 300}, refits the trainer's)
"""

import json
import os

twin_trainer = None
twin_plot = None
twin_trainer_token = None
if os.environ.get("BLUESKY_TWIN_PROFILE_TRAINER", "1") != "0":
    try:
        from bluesky_twin.callbacks import TwinTrainer, twin_runs_only
        from bluesky_twin.registry import register
    except Exception as _err:  # noqa: BLE001 - never let an optional part break the session
        print(f"[bluesky-twin] twin trainer unavailable, continuing without it: {type(_err).__name__}: {_err}")
    else:
        _fit, _refit = {"trials": 20, "timeout": 300}, None
        if os.environ.get("BLUESKY_TWIN_PROFILE_FIT"):
            _fit = json.loads(os.environ["BLUESKY_TWIN_PROFILE_FIT"])
            if isinstance(_fit.get("search_space"), dict):
                from bluesky_twin.twin import TwinSearchSpace

                _fit["search_space"] = TwinSearchSpace(**_fit["search_space"])
            _refit = dict(_fit)
        twin_trainer = TwinTrainer(
            ["mpms_temperature", "mpms_field"],
            "mpms_magnetisation",
            fit_kwargs=_fit,
            refit_kwargs=_refit,
            condition=twin_runs_only,
            status_callback=print,
        )
        twin_trainer_token = RE.subscribe(twin_trainer)
        register("twin_trainer", twin_trainer)
        try:
            from bluesky_twin.callbacks import TwinLivePlot

            twin_plot = TwinLivePlot(twin_trainer, x="mpms_temperature", group_by="mpms_field")
        except Exception as _err:  # noqa: BLE001
            print(f"[bluesky-twin] twin live plot unavailable: {type(_err).__name__}: {_err}")
        else:
            if not HEADLESS:
                RE.subscribe(twin_plot)
        print(
            "[bluesky-twin] twin_trainer (registered as 'twin_trainer'): (mpms_temperature, mpms_field) -> "
            "mpms_magnetisation, on twin plans' runs and runs started with twin=True"
        )
