"""Shared Optuna storage: several workers on one study (PostgreSQL, MariaDB, journal file)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import optuna
import pytest
from test_twin import TINY, scan_frame

from bluesky_twin.errors import InputError
from bluesky_twin.twin import DigitalTwin
from bluesky_twin.twin.storage_url import open_storage

WORKER = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {tests!r})
    from test_twin import TINY, scan_frame
    from bluesky_twin.twin import DigitalTwin
    TINY.max_epochs = 15
    DigitalTwin.fit(scan_frame(), ["T", "H"], "M", trials=2, seed=int(sys.argv[1]), search_space=TINY,
                    ensemble_size=1, storage={url!r}, study_name="shared-study")
    """
)


def _run_two_workers(url: str, tests_dir: str) -> None:
    code = WORKER.format(tests=tests_dir, url=url)
    procs = [
        subprocess.Popen([sys.executable, "-c", code, str(seed)], stderr=subprocess.PIPE, text=True) for seed in (1, 2)
    ]
    errors = []
    for p in procs:
        _, err = p.communicate(timeout=300)
        if p.returncode != 0:
            errors.append(err)
    assert not errors, "\n".join(errors)


def _check_study(url: str) -> None:
    study = optuna.load_study(study_name="shared-study", storage=open_storage(url))
    assert len(study.trials) == 4
    finished = [t for t in study.trials if t.state.is_finished()]
    assert len(finished) == 4
    assert study.user_attrs["y_name"] == "M"


def test_two_processes_share_a_journal_study(tmp_path, request) -> None:
    url = f"journal:{tmp_path / 'study.journal'}"
    _run_two_workers(url, str(request.path.parent))
    _check_study(url)


@pytest.mark.services
def test_two_processes_share_a_postgres_study(fresh_postgres_url, request) -> None:
    _run_two_workers(fresh_postgres_url, str(request.path.parent))
    _check_study(fresh_postgres_url)


@pytest.mark.services
def test_two_processes_share_a_mariadb_study(fresh_mariadb_url, request) -> None:
    _run_two_workers(fresh_mariadb_url, str(request.path.parent))
    _check_study(fresh_mariadb_url)


@pytest.mark.services
def test_parallel_threads_on_postgres_and_dashboard_url(fresh_postgres_url, tmp_path) -> None:
    twin = DigitalTwin.fit(
        scan_frame(),
        ["T", "H"],
        "M",
        trials=4,
        jobs=2,
        seed=0,
        search_space=TINY,
        ensemble_size=1,
        storage=fresh_postgres_url,
        study_name="threads",
    )
    assert twin.storage_url() == fresh_postgres_url
    assert twin.metadata["n_trials_complete"] + twin.metadata["n_trials_pruned"] == 4


def test_bad_storage_url() -> None:
    with pytest.raises(InputError, match="unrecognised Optuna storage"):
        open_storage("no-such-thing")
