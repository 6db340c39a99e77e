"""Every argument of the twin-steered plans is checked before the first message: a bad one is
one line (``InputError``) and nothing moves -- including the grid sizes the arguments imply.

Each case runs the plan in a RunEngine with a ``msg_hook`` that records every message the
plan yields, and asserts that none was yielded (no ``open_run``, no ``set``) and that the
motors stand where they stood.
"""

from __future__ import annotations

import math

import pytest

pytest.importorskip("bluesky")

from bluesky_twin.callbacks import TwinTrainer  # noqa: E402
from bluesky_twin.errors import InputError  # noqa: E402
from bluesky_twin.plans import coarse_to_fine, twin_adaptive_scan, wait_for_twin  # noqa: E402
from bluesky_twin.plans.stubs import MAX_POINTS  # noqa: E402
from bluesky_twin.sim import Magnetometer  # noqa: E402

NAN = float("nan")


@pytest.fixture
def mpms():
    return Magnetometer(name="mpms", seed=0)


@pytest.fixture
def trainer(RE):
    def fit(frame, x, y, warm_start=None, **kwargs):  # never reached: no run may start
        raise AssertionError("a twin was fitted although the plan's arguments are bad")

    tr = TwinTrainer(["mpms_temperature", "mpms_field"], "mpms_magnetisation", fit_function=fit, min_points=3)
    RE.subscribe(tr)
    return tr


def _refused(RE, mpms, plan) -> str:
    """Run *plan*; assert it raised InputError before yielding anything; return the message."""
    messages = []
    RE.msg_hook = messages.append
    before = (mpms.temperature.position, mpms.field.position)
    with pytest.raises(InputError) as err:
        RE(plan)
    assert messages == [], [m.command for m in messages]
    assert (mpms.temperature.position, mpms.field.position) == before
    text = str(err.value)
    assert text and "\n" not in text
    return text


# (keyword overrides, expected part of the message)
C2F_BAD = [
    ({"candidate_steps": [1e-9, 0.5]}, f"at most {MAX_POINTS:,}"),
    ({"candidate_steps": [1e-300, 0.5]}, f"at most {MAX_POINTS:,}"),
    ({"candidate_steps": [0.5]}, "at least two distinct steps"),
    ({"candidate_steps": [-0.1, 0.5]}, "candidate step must be > 0"),
    ({"candidate_steps": [NAN, 0.5]}, "candidate step must be a finite number"),
    ({"candidate_steps": [5.0, 6.0]}, "does not fit in the field range"),
    ({"candidate_steps": "0.1"}, "candidate_steps must be a list"),
    ({"t_num": 10**9}, "t_num must be between 3 and"),
    ({"t_num": 3.5}, "t_num must be an integer"),
    ({"t_num": True}, "t_num must be an integer"),
    ({"fine_t_num": 2}, "fine_t_num must be between 3"),
    ({"fine_t_num": 400_000}, f"at most {MAX_POINTS:,}"),
    ({"t_start": NAN}, "t_start must be a finite number"),
    ({"coarse_fields": [1.0]}, "at least two distinct fields"),
    ({"coarse_fields": [0.5, NAN]}, "coarse field must be a finite number"),
    ({"coarse_fields": [i * 0.5 for i in range(12)], "t_num": 100_000}, f"at most {MAX_POINTS:,}"),
    ({"field_min": "low"}, "field_min must be a number"),
    ({"field_unit": "gauss"}, "field unit must be one of"),
    ({"moment_unit": "furlong"}, "moment unit must be one of"),
    ({"mass_g": -1.0}, "mass_g must be > 0"),
    ({"mass_g": 0.01, "moment_unit": "emu/g"}, "already per mass"),
    ({"tolerance": -0.1}, "tolerance must be >= 0"),
    ({"twin_timeout": NAN}, "twin_timeout must be a finite number"),
    ({"poll_interval": 0}, "poll_interval must be > 0"),
    ({"per_step": "step"}, "per_step must be callable"),
    ({"md": ["sample"]}, "md must be a dict"),
    ({"detectors": []}, "detectors must not be empty"),
    ({"detectors": "mpms"}, "detectors must be a list"),
    ({"trainer": object()}, "trainer must be a TwinTrainer"),
]


@pytest.mark.parametrize(
    "bad, message", C2F_BAD, ids=[f"{next(iter(b))}={list(b.values())[0]!r}"[:40] for b, _ in C2F_BAD]
)
def test_coarse_to_fine_refuses_bad_arguments_before_anything_moves(RE, mpms, trainer, bad, message) -> None:
    kw = {
        "detectors": [mpms],
        "temperature": mpms.temperature,
        "t_start": 20.0,
        "t_stop": 40.0,
        "t_num": 5,
        "field": mpms.field,
        "coarse_fields": [0.5, 1.0, 2.0],
        "trainer": trainer,
        "poll_interval": 0.01,
    }
    kw.update(bad)
    assert message in _refused(RE, mpms, coarse_to_fine(**kw))


def test_the_grid_size_check_names_the_cause(RE, mpms, trainer) -> None:
    text = _refused(
        RE,
        mpms,
        coarse_to_fine(
            [mpms], mpms.temperature, 20, 40, 5, mpms.field, [0, 3], trainer=trainer, candidate_steps=[1e-9, 0.5]
        ),
    )
    assert "field-step study" in text and "candidate steps of at least" in text


ADAPTIVE_BAD = [
    ({"line_num": 10**9}, "line_num must be between 3 and"),
    ({"line_num": 4.2}, "line_num must be an integer"),
    ({"budget": 10_000, "line_num": 1_000}, f"at most {MAX_POINTS:,}"),
    ({"budget": 2.5}, "budget must be an integer"),
    ({"batch_size": 0}, "batch_size must be between 1"),
    ({"acquisition": "magic"}, "acquisition must be one of 'std', 'derived', 'interp'"),
    ({"agent": object()}, "agent must have suggest(n) and ingest(points)"),
    ({"tolerance": NAN}, "tolerance must be a finite number"),
    ({"min_separation": -1.0}, "min_separation must be >= 0"),
    ({"step_range": (1.0,)}, "step_range must be (low, high)"),
    ({"step_range": (NAN, 1.0)}, "step_range end must be a finite number"),
    ({"line_start": 30.0, "line_stop": 30.0}, "line_start and line_stop must differ"),
    ({"line_stop": math.inf}, "line_stop must be a finite number"),
    ({"initial_lines": "1.0"}, "initial_lines must be a list"),
    ({"initial_lines": []}, "initial_lines must not be empty"),
    ({"out_of_limits": "ignore"}, "out_of_limits must be"),
    ({"per_step": 3}, "per_step must be callable"),
    ({"md": "sample"}, "md must be a dict"),
    ({"twin_timeout": -1}, "twin_timeout must be >= 0"),
]


@pytest.mark.parametrize(
    "bad, message", ADAPTIVE_BAD, ids=[f"{next(iter(b))}={list(b.values())[0]!r}"[:40] for b, _ in ADAPTIVE_BAD]
)
def test_twin_adaptive_scan_refuses_bad_arguments_before_anything_moves(RE, mpms, trainer, bad, message) -> None:
    kw = {
        "detectors": [mpms],
        "line_motor": mpms.temperature,
        "line_start": 20.0,
        "line_stop": 40.0,
        "line_num": 5,
        "step_motor": mpms.field,
        "initial_lines": [0.5, 1.0],
        "trainer": trainer,
        "poll_interval": 0.01,
    }
    kw.update(bad)
    assert message in _refused(RE, mpms, twin_adaptive_scan(**kw))


@pytest.mark.parametrize("bad", [{"timeout": NAN}, {"poll_interval": -1}, {"poll_interval": "fast"}])
def test_wait_for_twin_refuses_bad_waits_before_its_first_message(trainer, bad) -> None:
    gen = wait_for_twin(trainer, **bad)
    with pytest.raises(InputError):
        next(gen)
