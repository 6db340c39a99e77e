"""Optuna studies and their credentials: one study holds one data set, secrets stay secret,
a lost database keeps its trials and the same command resumes, a garbage journal is one line.

Each test runs ``bluesky-twin fit`` (or ``DigitalTwin.fit``) on a tiny synthetic scan with a
tiny search (``--max-epochs 12``) and asserts on what the study and the model directory hold.
"""

from __future__ import annotations

import re
import socket
import threading
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest

from bluesky_twin.cli import main
from bluesky_twin.errors import InputError
from bluesky_twin.twin import DigitalTwin, TwinSearchSpace
from bluesky_twin.twin.storage_url import STORAGE_ENV, StorageLostError, mask_url, open_storage

SECRET = "s3cret-Pw"
# finished trials of a short, seeded search: pruned or complete, both count as done
FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
SMALL = TwinSearchSpace(
    n_layers=(2, 2), n_units=(8, 16), batch_size=(32, 64), max_epochs=12, min_final_epochs=12, patience=5
)


def _scan(path: Path, seed: int = 0, y: str = "M") -> Path:
    """Four isofield temperature sweeps of a smooth M(T, H), written to *path*."""
    rng = np.random.default_rng(seed)
    rows = []
    for h in (0.5, 1.0, 1.5, 2.0):
        t = np.sort(rng.uniform(10, 60, 20))
        rows.append(pd.DataFrame({"T": t, "H": h, y: np.tanh(h) * (1 - np.tanh((t - 30) / 4)) + 0.02 * h}))
    pd.concat(rows, ignore_index=True).to_csv(path, index=False)
    return path


def _fit_args(data: Path, out: Path, storage: str | None, study: str, trials: int, y: str = "M") -> list[str]:
    args = [
        "fit",
        str(data),
        "--x",
        "T",
        "--x",
        "H",
        "--y",
        y,
        "--out",
        str(out),
        "--study",
        study,
        "--trials",
        str(trials),
        "--max-epochs",
        "12",
        "--ensemble",
        "1",
    ]
    return args + (["--storage", storage] if storage is not None else [])


def _error_lines(capsys: pytest.CaptureFixture[str]) -> list[str]:
    err = capsys.readouterr().err
    # tqdm redraws its bar on stderr with carriage returns; what the user reads is the rest
    return [
        ln
        for ln in err.splitlines()
        if ln.strip() and "trial/s]" not in ln and "it/s]" not in ln and not re.match(r"^twin \w+:", ln.split("\r")[-1])
    ]


def _finished(url: str, study: str) -> list[optuna.trial.FrozenTrial]:
    s = optuna.load_study(study_name=study, storage=open_storage(url))
    return [t for t in s.get_trials(deepcopy=False) if t.state in FINISHED]


# --------------------------------------------------------------------------- one study, one data set


def test_reusing_a_study_on_other_data_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"journal:{tmp_path / 'studies.journal'}"
    a, b = _scan(tmp_path / "a.csv", seed=0), _scan(tmp_path / "b.csv", seed=1)
    assert main(_fit_args(a, tmp_path / "model_a", url, "shared", trials=2)) == 0
    capsys.readouterr()
    rc = main(_fit_args(b, tmp_path / "model_b", url, "shared", trials=2))
    lines = _error_lines(capsys)
    assert rc == 2
    assert len(lines) == 1 and "other data" in lines[0] and "'shared'" in lines[0], lines
    assert not (tmp_path / "model_b").exists()  # nothing written
    assert len(_finished(url, "shared")) == 2  # and nothing added to the study


def test_reusing_a_study_for_another_quantity_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"journal:{tmp_path / 'studies.journal'}"
    data = _scan(tmp_path / "a.csv")
    frame = pd.read_csv(data)
    frame["M2"] = 2 * frame["M"]
    frame.to_csv(data, index=False)
    assert main(_fit_args(data, tmp_path / "m", url, "s", trials=2)) == 0
    capsys.readouterr()
    assert main(_fit_args(data, tmp_path / "m2", url, "s", trials=2, y="M2")) == 2
    lines = _error_lines(capsys)
    assert len(lines) == 1 and "M(T, H), not M2(T, H)" in lines[0], lines


def test_the_same_command_resumes_a_study_and_counts_its_finished_trials(tmp_path: Path) -> None:
    url = f"journal:{tmp_path / 'studies.journal'}"
    data = _scan(tmp_path / "a.csv")
    assert main(_fit_args(data, tmp_path / "m", url, "resume", trials=2)) == 0
    first = DigitalTwin.load(tmp_path / "m")
    # the same command again: the two finished trials count, nothing runs, same model inputs
    assert main(_fit_args(data, tmp_path / "m", url, "resume", trials=2) + ["--force"]) == 0
    assert len(_finished(url, "resume")) == 2
    # a larger --trials runs only the missing ones
    assert main(_fit_args(data, tmp_path / "m", url, "resume", trials=3) + ["--force"]) == 0
    finished = _finished(url, "resume")
    assert len(finished) == 3
    assert {t.user_attrs["worker"] for t in finished} == {finished[0].user_attrs["worker"]}
    again = DigitalTwin.load(tmp_path / "m")
    assert again.metadata["data_sha256"] == first.metadata["data_sha256"]
    assert again.metadata["n_trials_complete"] + again.metadata["n_trials_pruned"] == 3


def test_a_study_with_no_completed_trial_takes_the_new_data(tmp_path: Path) -> None:
    """A fit whose trials all failed leaves nothing to mix up: a retry on more data may reuse the name."""
    url = f"journal:{tmp_path / 'studies.journal'}"
    storage = open_storage(url)
    study = optuna.create_study(study_name="retry", storage=storage)
    study.set_user_attr("data_sha256", "0" * 64)
    study.set_user_attr("x_names", ["T", "H"])
    study.set_user_attr("y_name", "M")
    study.tell(study.ask(), state=optuna.trial.TrialState.FAIL)
    twin = DigitalTwin.fit(
        pd.read_csv(_scan(tmp_path / "a.csv")),
        ["T", "H"],
        "M",
        trials=2,
        storage=url,
        study_name="retry",
        search_space=SMALL,
        ensemble_size=1,
    )
    attrs = optuna.load_study(study_name="retry", storage=open_storage(url)).user_attrs
    assert attrs["data_sha256"] == twin.metadata["data_sha256"]


# --------------------------------------------------------------------------- secrets


def test_mask_url_hides_passwords() -> None:
    assert (
        mask_url(f"postgresql://user:{SECRET}@db.example:5432/optuna") == "postgresql://user:***@db.example:5432/optuna"
    )
    assert mask_url("postgresql://user@host/db") == "postgresql://user@host/db"
    assert SECRET not in mask_url(f"mysql+pymysql://u:{SECRET}@h/db?charset=utf8")
    assert SECRET not in mask_url(f"postgresql://u@h/db?sslmode=require&password={SECRET}")
    assert SECRET not in mask_url(f"postgresql://u:p@{SECRET}@h/db")  # an unescaped '@' in the password


def test_an_unreachable_storage_never_echoes_its_password(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"postgresql://someone:{SECRET}@127.0.0.1:{port}/nowhere"
    with pytest.raises(InputError) as err:
        open_storage(url)
    assert SECRET not in str(err.value) and "someone:***@" in str(err.value)
    assert "\n" not in str(err.value)
    rc = main(_fit_args(_scan(tmp_path / "a.csv"), tmp_path / "m", url, "s", trials=1))
    err_text = capsys.readouterr().err
    assert rc == 2 and SECRET not in err_text and "***" in err_text


@pytest.mark.services
def test_the_password_is_not_stored_and_comes_from_the_environment(
    fresh_postgres_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # trust authentication ignores the password: a URL with one still connects
    url = re.sub(r"//([^@/:]+)@", rf"//\1:{SECRET}@", fresh_postgres_url)
    assert SECRET in url
    monkeypatch.setenv(STORAGE_ENV, url)
    data = _scan(tmp_path / "a.csv")
    assert main(_fit_args(data, tmp_path / "m", None, "env", trials=2)) == 0  # no --storage: the variable
    out = capsys.readouterr()
    assert SECRET not in out.out + out.err
    assert len(_finished(url, "env")) == 2  # the study is in that database
    twin = DigitalTwin.load(tmp_path / "m")
    assert twin.metadata["storage"] == mask_url(url) and SECRET not in str(twin.metadata)
    # the masked URL of a saved twin resolves through the variable, and only through it
    assert open_storage(twin.storage_url()) is not None
    monkeypatch.delenv(STORAGE_ENV)
    with pytest.raises(InputError, match=STORAGE_ENV) as err:
        open_storage(twin.storage_url())
    assert SECRET not in str(err.value)


# --------------------------------------------------------------------------- a lost database


class Forwarder:
    """A TCP forwarder on 127.0.0.1 in front of a server; ``close()`` cuts every connection."""

    def __init__(self, target: tuple[str, int], port: int = 0) -> None:
        self.target = target
        self._lock = threading.Lock()
        self._socks: list[socket.socket] = []
        self._closed = False
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", port))
        self._listener.listen(16)
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._closed:
                    client.close()
                    upstream.close()
                    return
                self._socks += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(a: socket.socket, b: socket.socket) -> None:
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        for s in (a, b):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self) -> None:
        with self._lock:
            self._closed = True
            socks, self._socks = self._socks, []
        for s in [self._listener, *socks]:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()


@pytest.fixture
def forwarded_postgres(fresh_postgres_url: str):
    """``(direct_url, forwarded_url, forwarder)``; the forwarded URL carries a password."""
    m = re.match(r"postgresql://([^@/:]+)@([^/:]+):(\d+)/(.+)$", fresh_postgres_url)
    assert m, fresh_postgres_url
    user, host, port, db = m.groups()
    fwd = Forwarder((host, int(port)))
    yield fresh_postgres_url, f"postgresql://{user}:{SECRET}@127.0.0.1:{fwd.port}/{db}", fwd
    fwd.close()


def _cut_after(fwd: Forwarder, n: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the next ``DigitalTwin.fit`` cut the database connection once *n* trials finished."""
    original = DigitalTwin.fit.__func__
    seen = []

    def cut(study, trial) -> None:
        if trial.state in FINISHED:
            seen.append(trial.number)
            if len(seen) == n:
                fwd.close()

    def fit(cls, *args, **kwargs):
        monkeypatch.undo()  # once
        return original(cls, *args, **{**kwargs, "trial_callback": cut})

    monkeypatch.setattr(DigitalTwin, "fit", classmethod(fit))


@pytest.mark.services
def test_a_lost_database_is_one_line_keeps_the_trials_and_the_same_command_resumes(
    forwarded_postgres, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    direct, url, fwd = forwarded_postgres
    args = _fit_args(_scan(tmp_path / "a.csv"), tmp_path / "m", url, "lost", trials=4)
    _cut_after(fwd, 2, monkeypatch)
    rc = main(args)
    lines = _error_lines(capsys)
    assert rc == 2
    assert len(lines) == 1 and "lost the connection" in lines[0] and "resume" in lines[0], lines
    assert SECRET not in lines[0] and ":***@" in lines[0]
    assert not (tmp_path / "m").exists()
    kept = _finished(direct, "lost")
    assert len(kept) == 2  # the finished trials are in the database
    # the database is back: the very same command runs the two missing trials and writes the model
    back = Forwarder(fwd.target, port=fwd.port)
    try:
        assert main(args) == 0
    finally:
        back.close()
    finished = _finished(direct, "lost")
    assert len(finished) == 4 and {t.number for t in kept} <= {t.number for t in finished}
    twin = DigitalTwin.load(tmp_path / "m")
    assert twin.metadata["n_trials_complete"] + twin.metadata["n_trials_pruned"] == 4
    assert SECRET not in str(twin.metadata)


@pytest.mark.services
def test_a_database_lost_inside_a_trial_is_one_line(
    forwarded_postgres, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    direct, url, fwd = forwarded_postgres
    original = optuna.trial.Trial.report

    def report(self, value, step):
        if self.number == 1:  # at the second trial's first report: mid-way through it
            fwd.close()
        return original(self, value, step)

    monkeypatch.setattr(optuna.trial.Trial, "report", report)
    with pytest.raises(StorageLostError) as err:
        DigitalTwin.fit(
            pd.read_csv(_scan(tmp_path / "a.csv")),
            ["T", "H"],
            "M",
            trials=3,
            storage=url,
            study_name="inside",
            search_space=SMALL,
            ensemble_size=1,
        )
    msg = str(err.value)
    assert "\n" not in msg and "lost the connection" in msg and SECRET not in msg
    assert len(_finished(direct, "inside")) == 1


# --------------------------------------------------------------------------- a garbage journal


@pytest.mark.parametrize(
    "content", [bytes(range(256)) * 4, b'{"op_code": 0,\n\xff\xfe not json\n'], ids=["random-bytes", "broken-utf8-json"]
)
def test_a_garbage_journal_is_one_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes
) -> None:
    journal = tmp_path / "garbage.journal"
    journal.write_bytes(content)
    rc = main(_fit_args(_scan(tmp_path / "a.csv"), tmp_path / "m", f"journal:{journal}", "s", trials=1))
    lines = _error_lines(capsys)
    assert rc == 2
    assert len(lines) == 1 and "not an Optuna journal" in lines[0], lines
    assert journal.read_bytes() == content  # left as it was
    assert not (tmp_path / "m").exists()
