"""Reproducible fits: without a time limit a seed gives the same twin, whatever ``jobs`` and the load.

The search runs in synchronous batches (ask in order, train in threads, tell in order)
and a trial's pruning sees earlier batches only, so thread timing cannot change the
sampler's history or the pruner's decisions.  One of the runs below shares the
process with a thread that keeps the CPU and the interpreter busy.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from test_twin import TINY, scan_frame

from bluesky_twin.cli import main
from bluesky_twin.modeldir import current_path
from bluesky_twin.twin import DigitalTwin, FitConfig

#: Metadata that legitimately differ between two runs of the same fit.
TIMING_KEYS = {"fit_seconds", "created", "study_name", "files"}


@contextlib.contextmanager
def busy_machine() -> Iterator[None]:
    """Keep a thread busy with BLAS work and Python loops (a loaded machine, a contended GIL)."""
    stop = threading.Event()

    def burn() -> None:
        a = np.random.default_rng(0).normal(size=(200, 200))
        while not stop.is_set():
            a = np.tanh(a @ a.T)
            sum(i * i for i in range(2_000))
            stop.wait(0.001)

    worker = threading.Thread(target=burn, daemon=True)
    worker.start()
    try:
        yield
    finally:
        stop.set()
        worker.join()


def _fit(jobs: int, trials: list[Any]) -> DigitalTwin:
    return DigitalTwin.fit(
        scan_frame(),
        ["T", "H"],
        "M",
        trials=6,
        seed=5,
        jobs=jobs,
        search_space=TINY,
        ensemble_size=3,
        trial_callback=lambda study, trial: trials.append(trial),
    )


def _trials(trials: list[Any]) -> list[tuple]:
    return [(t.number, t.state, t.params, t.value, t.intermediate_values) for t in trials]


def _weights(twin: DigitalTwin) -> list[torch.Tensor]:
    return [v.clone() for m in twin._models for v in m.state_dict().values()]


def test_jobs_1_and_2_give_the_same_twin_on_a_busy_or_an_idle_machine() -> None:
    seen: dict[str, list[Any]] = {"idle": [], "busy": [], "jobs1": []}
    idle = _fit(2, seen["idle"])
    with busy_machine():
        busy = _fit(2, seen["busy"])
    one = _fit(1, seen["jobs1"])
    assert idle.metadata["reproducible"] and idle.metadata["trial_batch"] == 2
    for other, name in ((busy, "busy"), (one, "jobs1")):
        assert other.version == idle.version, name
        for key in ("best_params", "ensemble", "n_trials_complete", "n_trials_pruned", "n_trials_failed", "train_r2"):
            assert other.metadata[key] == idle.metadata[key], (name, key)
        assert len(_weights(other)) == len(_weights(idle))
        for a, b in zip(_weights(other), _weights(idle), strict=True):
            assert torch.equal(a, b), name
        assert _trials(seen[name]) == _trials(seen["idle"]), name
    assert [t.number for t in seen["idle"]] == list(range(6))  # told in trial-number order
    assert FitConfig(jobs=1).batch_width() == FitConfig(jobs=2).batch_width() == 2


def _cli_fit(csv: Path, out: Path) -> dict[str, Any]:
    args = ["fit", str(csv), "--x", "T", "--x", "H", "--y", "M", "--out", str(out)]
    assert main([*args, "--trials", "4", "--max-epochs", "40", "--ensemble", "2", "--seed", "0", "--jobs", "2"]) == 0
    return json.loads((current_path(out) / "metadata.json").read_text())


def test_the_cli_writes_the_same_weights_twice(tmp_path: Path) -> None:
    csv = tmp_path / "scan.csv"
    scan_frame().to_csv(csv, index=False)
    first = _cli_fit(csv, tmp_path / "a")
    with busy_machine():
        second = _cli_fit(csv, tmp_path / "b")
    weights = [(current_path(tmp_path / d) / "ensemble.pt").read_bytes() for d in ("a", "b")]
    assert weights[0] == weights[1]
    assert first["files"]["ensemble.pt"] == second["files"]["ensemble.pt"]
    assert {k: v for k, v in first.items() if k not in TIMING_KEYS} == {
        k: v for k, v in second.items() if k not in TIMING_KEYS
    }


@pytest.mark.parametrize("kwargs", [{"timeout": 60.0}, {"budget": 60.0}])
def test_a_time_limit_gives_up_reproducibility(kwargs: dict[str, float]) -> None:
    config = FitConfig(jobs=2, **kwargs)
    assert not config.reproducible
    assert FitConfig(jobs=2).reproducible and FitConfig(jobs=4).batch_width() == 4
    assert FitConfig(jobs=4, trial_batch=2).batch_width() == 2


def test_a_failing_trial_stops_its_batch_and_is_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    from bluesky_twin.twin import _search

    original = _search._Objective.__call__

    def objective(self, trial):
        if trial.number == 0:
            raise RuntimeError("boom")
        return original(self, trial)

    monkeypatch.setattr(_search._Objective, "__call__", objective)
    told: list[Any] = []
    with pytest.raises(RuntimeError, match="boom"):
        _fit(2, told)
    assert [(t.number, t.state.name) for t in told] == [(0, "FAIL"), (1, "FAIL")]  # the batch, no more


def test_a_batch_trial_is_pruned_against_earlier_batches_only() -> None:
    from types import SimpleNamespace as T

    from bluesky_twin.twin._search import _BatchPruner

    class Study:
        def get_trials(self, deepcopy=True, states=None):
            return [T(number=n) for n in range(6)]

    seen = []
    pruner = _BatchPruner(T(prune=lambda study, trial: seen.append([t.number for t in study.get_trials()])))
    pruner.start_batch([2, 3])
    pruner.prune(Study(), T(number=3))
    pruner.prune(Study(), T(number=5))  # not in a batch (a search with a time limit): the whole study
    assert seen == [[0, 1, 3], [0, 1, 2, 3, 4, 5]]


def test_a_batch_width_fixes_the_result_whatever_the_jobs(tmp_path: Path, capsys) -> None:
    """``trial_batch`` (``--trial-batch``) sets the result; ``jobs`` only how many trials run at once."""
    kw = dict(trials=4, seed=3, search_space=TINY, ensemble_size=2)
    three = DigitalTwin.fit(scan_frame(), ["T", "H"], "M", jobs=3, trial_batch=2, **kw)
    one = DigitalTwin.fit(scan_frame(), ["T", "H"], "M", jobs=1, **kw)
    assert three.metadata["trial_batch"] == 2 and three.version == one.version
    csv = tmp_path / "scan.csv"
    scan_frame().to_csv(csv, index=False)
    args = ["fit", str(csv), "--x", "T", "--x", "H", "--y", "M", "--out", str(tmp_path / "m")]
    assert main([*args, "--trial-batch", "0"]) == 2
    assert "--trial-batch" in capsys.readouterr().err and not (tmp_path / "m").exists()


def test_dropout_masks_do_not_depend_on_the_global_generator() -> None:
    """Dropout draws from each model's own generator: parallel trials never race on torch's global one."""
    from bluesky_twin.twin.network import BatchedMLP

    def forward() -> torch.Tensor:
        model = BatchedMLP(2, 2, 1, 2, 8, dropout=0.3, generator=torch.Generator().manual_seed(3))
        model.train()
        return model(torch.randn(2, 5, 2, generator=torch.Generator().manual_seed(1)))

    first = forward()
    torch.manual_seed(99)  # another thread's draws in between
    torch.rand(10)
    assert torch.equal(first, forward())
