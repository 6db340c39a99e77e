"""One study, many worker processes (``fit --processes``, ``bluesky-twin worker``) on real databases.

The kill test runs ``bluesky-twin fit --processes 2`` against PostgreSQL and MariaDB on
127.0.0.1, SIGKILLs the worker process whose trial is running (the study's trial 0 is
held by the ``BLUESKY_TWIN_WORKER_HOLD_S`` hook), and checks that the surviving worker
retries it after the grace period, that the study ends with the requested number of
finished trials and that the final ensemble is built once.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
from test_twin import scan_frame

from bluesky_twin.cli import main
from bluesky_twin.twin.storage_url import STORAGE_ENV, open_storage
from bluesky_twin.twin.workers import HOLD_ENV, SPEC_ATTR

pytestmark = pytest.mark.services

PASSWORD = "Wk9-secret-pw"  # noqa: S105 - the test checks that it never shows
TRIALS = 3


def _with_password(url: str) -> str:
    """*url* with a password (PostgreSQL on 127.0.0.1 trusts the user, so it is accepted)."""
    scheme, rest = url.split("://", 1)
    user, host = rest.split("@", 1)
    return f"{scheme}://{user}:{PASSWORD}@{host}"


def _fit_command(data: Path, out: Path, study: str, processes: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "bluesky_twin.cli",
        "fit",
        str(data),
        "--x",
        "T",
        "--x",
        "H",
        "--y",
        "M",
        "--out",
        str(out),
        "--study",
        study,
        "--processes",
        str(processes),
        "--trials",
        str(TRIALS),
        "--max-epochs",
        "12",
        "--ensemble",
        "1",
        "--heartbeat",
        "1",
        "--grace",
        "3",
    ]


def _wait_for(what: str, check, timeout: float = 120.0, proc: subprocess.Popen | None = None):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        found = check()
        if found is not None:
            return found
        if proc is not None and proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"fit ended (status {proc.returncode}) before {what}:\n{out}\n{err}")
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}")


def _running_trial_zero(url: str, study: str):
    import optuna

    storage = open_storage(url)
    try:
        trials = optuna.load_study(study_name=study, storage=storage).get_trials(deepcopy=False)
    except KeyError:  # the study is not created yet
        return None
    for t in trials:
        if t.number == 0 and t.state == optuna.trial.TrialState.RUNNING and "held_s" in t.user_attrs:
            return t
    return None


def _kill_a_worker_mid_trial(url: str, tmp_path: Path) -> tuple[str, str, Path]:
    """Run ``fit --processes 2``, SIGKILL the worker running trial 0; returns stdout, stderr, model dir."""
    data = tmp_path / "scan.csv"
    scan_frame(n_t=30).to_csv(data, index=False)
    out = tmp_path / "model"
    env = {**os.environ, STORAGE_ENV: url, HOLD_ENV: "120"}
    fit = subprocess.Popen(
        _fit_command(data, out, "killed", 2),
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        trial = _wait_for("trial 0 to run", lambda: _running_trial_zero(url, "killed"), proc=fit)
        pid = int(trial.user_attrs["worker"].rsplit("pid=", 1)[1])
        os.kill(pid, signal.SIGKILL)  # mid-trial: trial 0 is RUNNING in storage
        stdout, stderr = fit.communicate(timeout=180)
    finally:
        if fit.poll() is None:
            fit.kill()
            fit.communicate()
    assert fit.returncode == 0, stderr
    return stdout, stderr, out


def _check_retried(url: str) -> None:
    import optuna
    from optuna.storages import RetryHeartbeatStaleTrialCallback

    state = optuna.trial.TrialState
    trials = optuna.load_study(study_name="killed", storage=open_storage(url)).get_trials()
    by_number = {t.number: t for t in trials}
    assert by_number[0].state == state.FAIL  # failed by a surviving worker once its heartbeat went stale
    assert by_number[0].params  # drawn before the worker was killed
    with warnings.catch_warnings():  # "experimental" since optuna 2.8
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        retries = [t for t in trials if RetryHeartbeatStaleTrialCallback.retried_trial_number(t) == 0]
    assert len(retries) == 1 and retries[0].state in (state.COMPLETE, state.PRUNED)
    assert retries[0].params == by_number[0].params
    finished = [t for t in trials if t.state in (state.COMPLETE, state.PRUNED)]
    assert len(finished) == TRIALS  # one surviving worker: exactly the requested number


def _check_model(out: Path, processes: int) -> dict:
    from bluesky_twin.twin import DigitalTwin

    twin = DigitalTwin.load(out)
    m = twin.metadata
    assert m["worker_processes"] == processes and m["reproducible"] is False
    assert m["n_trials_complete"] + m["n_trials_pruned"] == TRIALS
    return m


def test_killed_worker_trial_is_retried_on_postgres_and_no_password_shows(fresh_postgres_url, tmp_path) -> None:
    url = _with_password(fresh_postgres_url)
    stdout, stderr, out = _kill_a_worker_mid_trial(url, tmp_path)
    _check_retried(url)
    m = _check_model(out, 2)
    assert m["storage"] == url.replace(PASSWORD, "***")
    assert "ended with status -9" in stdout
    # the password is in no output, no file the command wrote, and nowhere in the database
    assert PASSWORD not in stdout + stderr
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert PASSWORD.encode() not in path.read_bytes(), path
    import psycopg2

    conn = psycopg2.connect(fresh_postgres_url)  # every row of every table of the study's database
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'")
            tables = [row[0] for row in cur.fetchall()]
            rows = []
            for table in tables:
                cur.execute(f'SELECT * FROM "{table}"')
                rows += cur.fetchall()
    finally:
        conn.close()
    assert "trial_system_attributes" in tables and rows
    assert PASSWORD not in repr(rows) and "://" not in repr(rows)
    import optuna

    study = optuna.load_study(study_name="killed", storage=open_storage(url))
    assert study.user_attrs[SPEC_ATTR]["target_trials"] == TRIALS


def test_killed_worker_trial_is_retried_on_mariadb(fresh_mariadb_url, tmp_path) -> None:
    _, _, out = _kill_a_worker_mid_trial(fresh_mariadb_url, tmp_path)
    _check_retried(fresh_mariadb_url)
    _check_model(out, 2)


def test_worker_joins_and_refuses_other_data(fresh_postgres_url, tmp_path, capsys, monkeypatch) -> None:
    data = tmp_path / "scan.csv"
    scan_frame(n_t=30).to_csv(data, index=False)
    out = tmp_path / "model"
    cmd = _fit_command(data, out, "joined", 1)[3:]  # in this process: main(argv)
    monkeypatch.setenv(STORAGE_ENV, fresh_postgres_url)
    assert main(cmd) == 0
    assert main(["worker", "--study", "joined", "--quiet"]) == 0  # already complete: runs nothing
    capsys.readouterr()

    other = tmp_path / "other.csv"
    scan_frame(n_t=30, seed=1).to_csv(other, index=False)
    assert main(["worker", "--study", "joined", "--data", str(other)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "are not the data of study 'joined'" in err[0], err

    assert main(["worker", "--study", "nope", "--storage", _with_password(fresh_postgres_url)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no study 'nope'" in err[0] and PASSWORD not in err[0], err


def test_process_options_are_checked_before_anything_is_written(tmp_path, capsys) -> None:
    data = tmp_path / "scan.csv"
    scan_frame(n_t=5).to_csv(data, index=False)
    base = ["fit", str(data), "--x", "T", "--x", "H", "--y", "M", "--out", str(tmp_path / "m")]
    cases = [
        (["--processes", "2", "--storage", f"journal:{tmp_path / 's.journal'}"], "needs a database storage"),
        (["--processes", "2", "--storage", "postgresql://u@h/db", "--budget", "30"], "--budget is not supported"),
        (["--heartbeat", "2"], "--heartbeat applies to worker processes"),
        (["--processes", "2", "--storage", "postgresql://u@h/db", "--heartbeat", "5", "--grace", "5"], "--grace"),
        (["--processes", "65", "--storage", "postgresql://u@h/db"], "--processes must be between 0 and 64"),
    ]
    for extra, message in cases:
        assert main(base + extra) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], (extra, err)
    assert not (tmp_path / "m").exists()
    assert main(["worker", "--study", "s", "--storage", f"journal:{tmp_path / 's.journal'}"]) == 2
    assert "needs a database storage" in capsys.readouterr().err
