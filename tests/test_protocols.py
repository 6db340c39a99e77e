"""The typed contracts (bluesky_twin.protocols), the step-study configs and the lazy-export helper."""

from __future__ import annotations

import subprocess
import sys
import types

import numpy as np
import pytest

from bluesky_twin import protocols as P
from bluesky_twin._lazy import MissingExtraError, install_hint, lazy_exports, with_install_hint
from bluesky_twin.analysis.config import AngleStepCriteria, FieldStepCriteria, FieldTiming, LineTiming, split_options
from bluesky_twin.errors import InputError


class Analytic:
    x_names = ["T", "H"]

    def predict(self, X):
        X = np.asarray(X, dtype=float)
        return X[:, 0], np.zeros(len(X))


class Full(Analytic):
    y_name = "M"
    version = "v1"
    x_range = np.array([[0.0, 1.0], [0.0, 1.0]])


class Ensemble(Full):
    ensemble_size = 2

    def predict(self, X, *, return_members=False):
        m = np.vstack([np.asarray(X, float)[:, 0]] * 2)
        return m if return_members else (m.mean(0), m.std(0))


def test_twin_protocols_are_layered() -> None:
    a, f, e = Analytic(), Full(), Ensemble()
    assert isinstance(a, P.TwinLike) and not isinstance(a, P.Twin) and not isinstance(a, P.HasXRange)
    assert isinstance(f, P.Twin) and isinstance(f, P.HasXRange) and not isinstance(f, P.EnsembleTwin)
    assert isinstance(e, P.EnsembleTwin) and isinstance(e, P.Twin)
    assert P.protocol_members(P.Twin) == ["predict", "version", "x_names", "x_range", "y_name"]


def test_require_raises_one_line_input_error() -> None:
    assert P.require(Full(), P.Twin, "twin") is not None
    with pytest.raises(InputError) as err:
        P.require(Analytic(), P.Twin, "the twin")
    text = str(err.value)
    assert "\n" not in text and "'version'" in text and "'y_name'" in text and "got Analytic" in text


def test_the_trainer_and_the_agent_meet_their_contracts() -> None:
    pytest.importorskip("bluesky")
    from bluesky_twin.agent import TwinLineAgent
    from bluesky_twin.callbacks import TwinTrainer

    trainer = TwinTrainer(["T", "H"], "M")
    assert isinstance(trainer, P.RecordingTwinSource) and not isinstance(trainer, P.TwinLike)
    agent = TwinLineAgent(trainer, step_axis="H", line_axis="T", line_points=[1, 2, 3], bounds=(0, 1))
    assert isinstance(agent, P.ScoringLineAgent)
    with pytest.raises(InputError, match="twin_source must be a TwinSource"):
        TwinLineAgent(object(), step_axis="H", line_axis="T", line_points=[1, 2, 3], bounds=(0, 1))


def test_the_live_plot_refuses_what_is_no_source_or_twin() -> None:
    pytest.importorskip("matplotlib")
    from bluesky_twin.callbacks import TwinLivePlot

    with pytest.raises(InputError, match="source must be a TwinSource"):
        TwinLivePlot(Analytic(), x="T")  # no y_name / version: not a Twin


def test_ensemble_bands_need_an_ensemble_twin() -> None:
    from bluesky_twin.analysis import entropy_change_from_twin

    T, H = np.linspace(0.1, 0.9, 9), np.linspace(0.1, 0.9, 5)
    assert entropy_change_from_twin(Ensemble(), T, H).std_kind == "ensemble"
    assert entropy_change_from_twin(Full(), T, H).std_kind == "bound"
    with pytest.raises(InputError, match="ensemble_size"):
        entropy_change_from_twin(Full(), T, H, use_members=True)


# ----------------------------------------------------------------------------- configs


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: FieldStepCriteria(tolerance=-1), "tolerance must be >= 0"),
        (lambda: FieldStepCriteria(check_fields="some"), "check_fields must be 'top' or 'all'"),
        (lambda: FieldStepCriteria(extrema_tolerance=0.5), "extrema_tolerance must be an integer"),
        (lambda: FieldTiming(time_per_point_s=0), "time_per_point_s must be a positive number"),
        (lambda: FieldTiming(sweep_rate_T_per_min=float("nan")), "must be a finite number"),
        (lambda: AngleStepCriteria(min_recall=1.5), "min_recall must be <= 1"),
        (lambda: AngleStepCriteria(peak_tolerance="near"), "peak_tolerance must be a number"),
        (lambda: LineTiming(time_per_line_s=-1.0), "time_per_line_s must be >= 0"),
    ],
)
def test_configs_refuse_bad_values_in_one_line(make, message) -> None:
    with pytest.raises(InputError) as err:
        make()
    assert message in str(err.value) and "\n" not in str(err.value)


def test_timing_models() -> None:
    t = FieldTiming(
        time_per_point_s=2.0, temperature_rate_K_per_min=2.0, sweep_rate_T_per_min=0.5, settle_s_per_field=60.0
    )
    assert t.time_s(11, 201, 50.0, 4.99) == pytest.approx(11 * 201 * 2 + 11 * 25 * 60 + 4.99 / 0.5 * 60 + 11 * 60)
    assert np.isnan(FieldTiming().time_s(11, 201, 50.0, 5.0))
    assert LineTiming(time_per_point_s=0.5).time_s(31, 401) == pytest.approx(31 * 401 * 0.5)
    assert np.isnan(LineTiming().time_s(3, 3))
    assert FieldStepCriteria(tolerance=0.1).to_json_dict()["tolerance_wiggle"] == 0.1


def test_split_options_builds_configs_from_keywords() -> None:
    criteria, timing = split_options(
        "study", {"tolerance": 0.2, "time_per_point_s": 1.0}, FieldStepCriteria, None, FieldTiming, None
    )
    assert criteria == FieldStepCriteria(tolerance=0.2) and timing == FieldTiming(time_per_point_s=1.0)
    with pytest.raises(InputError, match="not both"):
        split_options("study", {"tolerance": 0.2}, FieldStepCriteria, FieldStepCriteria(), FieldTiming, None)
    with pytest.raises(InputError, match="criteria must be a FieldStepCriteria"):
        split_options("study", {}, FieldStepCriteria, AngleStepCriteria(), FieldTiming, None)
    with pytest.raises(TypeError, match="unexpected keyword argument 'tolerence'"):
        split_options("study", {"tolerence": 0.2}, FieldStepCriteria, None, FieldTiming, None)


def test_a_study_takes_config_objects_or_keywords_alike() -> None:
    from bluesky_twin.analysis import field_step_study

    class Transition(Full):
        x_range = np.array([[10.0, 60.0], [100.0, 50000.0]])

        def predict(self, X):
            X = np.asarray(X, dtype=float)
            return 0.5 * (1.0 - np.tanh(X[:, 0] - 30.0 - 10.0 * X[:, 1] * 1e-4)), np.zeros(len(X))

    a = field_step_study(Transition(), steps=[0.05, 0.1, 0.3], tolerance=0.5, time_per_point_s=1.0)
    b = field_step_study(
        Transition(),
        steps=[0.05, 0.1, 0.3],
        criteria=FieldStepCriteria(tolerance=0.5),
        timing=FieldTiming(time_per_point_s=1.0),
    )
    assert a.to_json_dict() == b.to_json_dict()
    assert a.criteria["tolerance_wiggle"] == 0.5 and a.meta["timing"]["time_per_point_s"] == 1.0


# ----------------------------------------------------------------------------- lazy exports


def test_lazy_exports_resolve_once_and_list_names(monkeypatch) -> None:
    module = types.ModuleType("fake_pkg")
    monkeypatch.setitem(sys.modules, "fake_pkg", module)
    calls = []
    module.__getattr__, module.__dir__ = lazy_exports(
        "fake_pkg", {"sqrt": "math", "pi_value": "math:pi", "made": lambda: calls.append(1) or "value"}
    )
    assert module.sqrt(4.0) == 2.0 and module.pi_value == pytest.approx(3.14159, abs=1e-5)
    assert module.made == "value" and module.made == "value" and calls == [1]  # cached in the module
    assert {"sqrt", "pi_value", "made"} <= set(dir(module))
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        module.nope  # noqa: B018


def test_a_missing_optional_extra_gives_the_install_hint(monkeypatch, capsys) -> None:
    monkeypatch.setitem(sys.modules, "resins", None)  # `import resins` now fails
    module = types.ModuleType("fake_ins")
    monkeypatch.setitem(sys.modules, "fake_ins", module)
    module.__getattr__, _ = lazy_exports("fake_ins", {"resins": "resins"})
    with pytest.raises(MissingExtraError, match=r"pip install 'bluesky-twin\[ins\]'") as err:
        module.resins  # noqa: B018
    assert err.value.extra == "ins" and isinstance(err.value, ImportError)
    assert install_hint(ModuleNotFoundError("x", name="numpy")) is None

    def run(args):
        import resins  # noqa: F401

    assert with_install_hint(run, "bluesky-twin ins generate")(None) == 2
    err_line = capsys.readouterr().err.strip()
    assert err_line.startswith("bluesky-twin: error: bluesky-twin ins generate needs 'resins'") and "\n" not in err_line


def test_a_broken_subcommand_module_is_not_hidden(monkeypatch) -> None:
    from bluesky_twin import cli

    monkeypatch.setattr(cli, "_TOP_LEVEL", [*cli._TOP_LEVEL, "bluesky_twin.no_such_cli_module"])
    with pytest.raises(ModuleNotFoundError):
        cli.build_parser()


def test_packages_stay_light_where_help_needs_them() -> None:
    code = (
        "import sys, bluesky_twin, bluesky_twin.analysis, bluesky_twin.protocols, bluesky_twin.gan; "
        "print([m for m in ('torch', 'numpy', 'bluesky', 'scipy') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
