"""The trainer as a service on the 0MQ document bus, in another process, with real 0MQ on loopback.

RunEngine (this process) -> TiledWriter (a tiled server with an API key, this process)
and bluesky's ``Publisher`` -> ``bluesky-0MQ-proxy`` (a subprocess) -> ``bluesky-twin
trainer serve`` (a subprocess) -> a model directory -> ``PublishedTwinSource`` (this
process), which the plans use as they use the in-process trainer.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

bp = pytest.importorskip("bluesky.plans")
bps = pytest.importorskip("bluesky.plan_stubs")
pytest.importorskip("zmq")

from bluesky.callbacks.zmq import Publisher  # noqa: E402

from bluesky_twin.cli import main  # noqa: E402
from bluesky_twin.service import BusRunTracker, PublishedTwinSource, read_status, status_path  # noqa: E402

X_FIELDS = ["mpms_temperature", "mpms_field"]
Y_FIELD = "mpms_magnetisation"
KEY = "servicetestkey123"
KEY_ENV = "BLUESKY_TWIN_SERVICE_TEST_KEY"
# small fits: one trial, few epochs, two networks (a fit takes about a second)
FAST = ["--trials", "1", "--refit-trials", "1", "--max-epochs", "15", "--ensemble-size", "2"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def proxy(tmp_path):
    """``bluesky-0MQ-proxy`` in a subprocess on two loopback ports: ``(in_port, out_port)``."""
    exe = Path(sys.executable).with_name("bluesky-0MQ-proxy")
    in_port, out_port = _free_port(), _free_port()
    proc = subprocess.Popen(
        [str(exe), "--in-address", f"127.0.0.1:{in_port}", "--out-address", f"127.0.0.1:{out_port}"],
        stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / "proxy.log", "w"),  # noqa: SIM115 - closed with the process
    )
    try:
        yield in_port, out_port
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture
def served_store(tmp_path):
    """A tiled server of an embedded store with an API key, in this process: its URI."""
    from bluesky_twin.storage import serve_store

    with serve_store(tmp_path / "tiled", api_key=KEY) as uri:
        yield uri


@pytest.fixture
def publishing_RE(RE, served_store, proxy):  # noqa: N802 - the Bluesky convention
    """The RunEngine writing to the store first, then publishing on the bus: ``(RE, publisher, store)``."""
    from bluesky_twin.storage import make_tiled_writer, open_tiled

    client = open_tiled(served_store, api_key=KEY)
    RE.subscribe(make_tiled_writer(client))
    publisher = Publisher(f"127.0.0.1:{proxy[0]}")
    yield RE, publisher, client
    publisher.close()
    client.context.close()


class _Service:
    """``bluesky-twin trainer serve`` in a subprocess."""

    def __init__(self, tmp_path: Path, model_dir: Path, out_port: int, uri: str, *extra: str) -> None:
        self.model_dir = model_dir
        self.log = tmp_path / f"service-{time.monotonic_ns()}.log"
        env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
        env[KEY_ENV] = KEY
        cmd = [sys.executable, "-m", "bluesky_twin", "trainer", "serve", "--bus", f"127.0.0.1:{out_port}"]
        cmd += ["--model-dir", str(model_dir), "--tiled", uri, "--api-key-env", KEY_ENV]
        cmd += [*(a for f in X_FIELDS for a in ("--x", f)), "--y", Y_FIELD, *extra]
        self._fh = open(self.log, "w")  # noqa: SIM115 - closed in stop()/kill()
        self.proc = subprocess.Popen(cmd, stdout=self._fh, stderr=subprocess.STDOUT, env=env)

    def wait_listening(self, timeout: float = 60.0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = read_status(self.model_dir) or {}
            if status.get("pid") == self.proc.pid and status.get("state") == "listening":
                return status
            assert self.proc.poll() is None, self.log.read_text()
            time.sleep(0.1)
        raise AssertionError(f"the service did not start listening: {self.log.read_text()}")

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(10)
        self._fh.close()

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(60)
        finally:
            self._fh.close()


@pytest.fixture
def services():
    started: list[_Service] = []
    yield started
    for svc in started:
        if svc.proc.poll() is None:
            svc.kill()


def _grid(mpms, field_lo, field_hi, **kw):
    """A 3 x 6 grid of (field, temperature): 18 events."""
    return bp.grid_scan([mpms], mpms.field, field_lo, field_hi, 3, mpms.temperature, 25, 45, 6, **kw)


def _wait_for(predicate, timeout: float, what: str, log: Path | None = None, extra=lambda: ""):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}" + (f":\n{log.read_text()}" if log else "") + f"\n{extra()}")


def test_service_killed_while_plans_run_restarts_and_trains_on_every_accepted_run(
    publishing_RE, mpms, tmp_path, proxy, served_store, services
):
    from bluesky_twin.plans import wait_for_twin
    from bluesky_twin.protocols import RecordingTwinSource

    RE, publisher, store = publishing_RE
    RE.subscribe(publisher)
    model_dir = tmp_path / "twin"
    svc = _Service(tmp_path, model_dir, proxy[1], served_store, *FAST)
    services.append(svc)
    svc.wait_listening()
    # the fields come from the service's status; run data from the store
    source = PublishedTwinSource(model_dir, refresh_interval=0.1, store=store)
    assert isinstance(source, RecordingTwinSource) and source.x_fields == X_FIELDS and source.y_field == Y_FIELD
    (u1,) = RE(_grid(mpms, 0, 2))
    twin1 = source.wait_for_version(run_uid=u1, timeout=60)
    assert twin1 is not None, svc.log.read_text()
    assert source.training_run_uids == [u1] and source.runs[u1]["state"] == "accepted"
    assert source.run_data(u1)["x"].shape == (18, 2) and source.status["version"] == twin1.version

    def kill_service_at(step_number):
        count = [0]

        def per_step(detectors, step, pos_cache):
            count[0] += 1
            if count[0] == step_number:
                svc.kill()  # SIGKILL in the middle of the run
            yield from bps.one_nd_step(detectors, step, pos_cache)

        return per_step

    (u2,) = RE(_grid(mpms, 0.5, 1.5, per_step=kill_service_at(5)))
    assert svc.proc.returncode == -signal.SIGKILL
    (u3,) = RE(_grid(mpms, 0.25, 1.75))  # the service is down for the whole run
    svc2 = _Service(tmp_path, model_dir, proxy[1], served_store, *FAST)
    services.append(svc2)
    status = svc2.wait_listening()
    assert status["caught_up_runs"] == 3  # u1, u2, u3 from the store

    got: dict = {}

    def next_plan():
        got["uid"] = yield from _grid(mpms, 0.75, 1.25)
        got["twin"] = yield from wait_for_twin(source, run_uid=got["uid"], timeout=90, poll_interval=0.1)

    RE(next_plan())
    twin = got["twin"]
    assert twin is not None, svc2.log.read_text()
    accepted = {u1, u2, u3, got["uid"]}
    assert set(twin.metadata["training_run_uids"]) == accepted
    assert set(source.provenance()["twin_training_run_uids"]) == accepted
    service_meta = twin.metadata["service"]
    assert set(service_meta["accepted_run_uids"]) == accepted
    assert service_meta["data_sha256"] == twin.metadata["data_sha256"]
    assert KEY not in json.dumps(twin.metadata) and KEY not in status_path(model_dir).read_text()
    # readable by the RunEngine host's account, whoever runs the service
    assert (model_dir / "versions" / twin.model_version).stat().st_mode & 0o005 == 0o005
    assert (model_dir / "CURRENT").stat().st_mode & 0o004
    assert svc2.stop() == 0  # SIGTERM: a clean stop
    final = read_status(model_dir)
    assert final["state"] == "stopped" and final["gaps"]["unfilled"] == 0
    assert not (model_dir / ".lock").exists()
    assert "stopped" in svc2.log.read_text()
    source.close()


class _Dropping:
    """A publisher wrapper that drops the documents *drop(name, doc)* selects (a lossy bus)."""

    def __init__(self, publisher, drop) -> None:
        self.publisher = publisher
        self.drop = drop
        self.dropped = 0

    def __call__(self, name, doc):
        if self.drop(name, doc):
            self.dropped += 1
            return
        self.publisher(name, doc)


def test_gaps_on_the_bus_are_detected_and_filled_from_the_store(
    publishing_RE, mpms, tmp_path, proxy, served_store, services
):
    RE, publisher, _ = publishing_RE
    plan_of: dict[str, str] = {}  # run start uid -> which loss to simulate
    desc_of: dict[str, str] = {}

    def drop(name, doc):
        if name == "start":
            return doc.get("loss") == "start"
        run = desc_of.get(doc.get("descriptor")) if name == "event" else doc.get("run_start")
        loss = plan_of.get(run)
        if name == "event":
            return (loss == "middle" and doc["seq_num"] in (3, 5)) or (loss == "tail" and doc["seq_num"] > 16)
        return name == "stop" and loss == "stop"

    def remember(name, doc):
        if name == "start":
            plan_of[doc["uid"]] = doc.get("loss", "")
        elif name == "descriptor":
            desc_of[doc["uid"]] = doc["run_start"]

    RE.subscribe(remember)
    lossy = _Dropping(publisher, drop)
    RE.subscribe(lossy)
    model_dir = tmp_path / "twin"
    svc = _Service(tmp_path, model_dir, proxy[1], served_store, "--no-train", "--stop-timeout", "1")
    services.append(svc)
    svc.wait_listening()
    time.sleep(0.5)  # 0MQ's subscription reaches the proxy a moment after the connection: lose nothing here
    uids = {}
    for loss in ("middle", "tail", "start", "none", "stop"):
        (uids[loss],) = RE(_grid(mpms, 0, 2, md={"loss": loss}))
    assert lossy.dropped == 2 + 2 + 1 + 1

    def all_runs_complete():
        status = read_status(model_dir) or {}
        runs = status.get("runs") or {}
        done = all((runs.get(u) or {}).get("state") == "accepted" for u in uids.values())
        return status if done else None

    status = _wait_for(
        all_runs_complete, 60, "all five runs accepted", svc.log, lambda: status_path(model_dir).read_text()
    )
    for uid in uids.values():
        assert status["runs"][uid]["n_points"] == 18  # every row, the lost ones filled from the store
    gaps = status["gaps"]
    assert gaps["runs_with_gaps"] == 4 and gaps["filled"] == 4 and gaps["unfilled"] == 0, gaps
    assert gaps["stops_without_start"] == 1 and gaps["stops_short"] == 1 and gaps["runs_without_stop"] == 1
    # 2 in the middle + 2 at the end + the 18 of the run whose start was lost
    assert gaps["missing_events"] == 22 and gaps["events_filled"] == 22
    assert set(gaps["filled_runs"]) == {uids["middle"], uids["tail"], uids["start"], uids["stop"]}
    assert status["events"] == 5 * 18 - 4  # what the bus delivered
    assert svc.stop() == 0


def test_tracker_deduplicates_runs_from_the_store_and_the_bus():
    seen: list = []
    tracker = BusRunTracker(lambda name, doc: seen.append((name, doc)))
    start = {"uid": "run-1", "time": 0.0}
    desc = {"uid": "d-1", "run_start": "run-1", "name": "primary", "data_keys": {}}
    events = [{"descriptor": "d-1", "seq_num": i, "uid": f"e{i}", "data": {}, "time": 0.0} for i in (1, 2)]
    stop = {"uid": "s-1", "run_start": "run-1", "exit_status": "success", "num_events": {"primary": 2}}
    docs = [("start", start), ("descriptor", desc), *[("event", e) for e in events], ("stop", stop)]
    tracker.feed_stored(docs)
    for name, doc in docs:  # the same run again, from the bus
        tracker.feed(name, doc)
    assert len(seen) == len(docs) and tracker.gaps.duplicate_runs == 1 and tracker.gaps.runs_with_gaps == 0
    # a stop without its start and no store: counted, not filled, nothing forwarded
    tracker.feed("stop", dict(stop, uid="s-2", run_start="run-2"))
    assert tracker.gaps.stops_without_start == 1 and tracker.gaps.unfilled == 1 and len(seen) == len(docs)


def test_bad_arguments_exit_2_with_one_line(tmp_path, capsys, monkeypatch):
    base = ["trainer", "serve", "--x", "a", "--y", "b"]
    monkeypatch.delenv("UNSET_KEY_VAR", raising=False)
    (tmp_path / "file").write_text("x")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("x")
    cases = [
        (["--bus", "nohost", "--model-dir", str(tmp_path / "m")], "HOST:PORT"),
        (["--bus", "127.0.0.1:99999", "--model-dir", str(tmp_path / "m")], "HOST:PORT"),
        (["--bus", "127.0.0.1:5568", "--model-dir", str(tmp_path / "file")], "is a file"),
        (["--bus", "127.0.0.1:5568", "--model-dir", str(tmp_path / "other")], "refusing"),
        (
            ["--bus", "127.0.0.1:5568", "--model-dir", str(tmp_path / "m"), "--tiled", "http://127.0.0.1:1"]
            + ["--api-key-env", "UNSET_KEY_VAR"],
            "UNSET_KEY_VAR",
        ),
        (["--bus", "127.0.0.1:5568", "--model-dir", str(tmp_path / "m"), "--trials", "0"], "--trials"),
        (["--bus", "127.0.0.1:5568", "--model-dir", str(tmp_path / "m"), "--restarts", "0"], "--restarts"),
        (
            ["--bus", "127.0.0.1:5568", "--model-dir", str(tmp_path / "m"), "--restarts", "2", "--budget", "9"],
            "--restarts takes no --budget",
        ),
        (
            ["--bus", "127.0.0.1:5568", "--model-dir", str(tmp_path / "m"), "--tiled", "http://127.0.0.1:1"]
            + ["--api-key-env", "SET_KEY_VAR"],
            "cannot reach the tiled server",
        ),
    ]
    monkeypatch.setenv("SET_KEY_VAR", "abc123secret")
    for extra, message in cases:
        assert main([*base, *extra]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
        assert "abc123secret" not in err
    assert not (tmp_path / "m").exists()
    assert main(["trainer", "status", "--model-dir", str(tmp_path / "m")]) == 2
    assert "no trainer service status" in capsys.readouterr().err


@pytest.mark.services
def test_the_service_catches_up_from_and_fills_from_a_tiled_server_on_postgresql(
    RE, mpms, tmp_path, proxy, fresh_postgres_url, services
):
    """The facility layout: runs in ``bluesky-twin store serve`` (catalog and tables in PostgreSQL)."""
    from test_tiled_postgres import served

    from bluesky_twin.storage import make_tiled_writer, open_tiled

    with served(fresh_postgres_url, tmp_path, "--api-key-env", KEY_ENV, env={KEY_ENV: KEY}) as (uri, _):
        client = open_tiled(uri, api_key=KEY)
        RE.subscribe(make_tiled_writer(client))
        (u1,) = RE(_grid(mpms, 0, 2))  # stored before the service starts: caught up from PostgreSQL
        publisher = Publisher(f"127.0.0.1:{proxy[0]}")
        # the bus loses this run's stop document: the service must take it from the store
        RE.subscribe(_Dropping(publisher, lambda name, doc: name == "stop"))
        model_dir = tmp_path / "twin"
        svc = _Service(tmp_path, model_dir, proxy[1], uri, *FAST, "--stop-timeout", "2")
        services.append(svc)
        assert svc.wait_listening()["caught_up_runs"] == 1
        source = PublishedTwinSource(model_dir, refresh_interval=0.1, store=client)
        (u2,) = RE(_grid(mpms, 0.5, 1.5))
        twin = source.wait_for_version(run_uid=u2, timeout=90)
        assert twin is not None, svc.log.read_text()
        assert set(twin.metadata["training_run_uids"]) == {u1, u2}
        gaps = read_status(model_dir)["gaps"]
        assert gaps["runs_without_stop"] >= 1 and gaps["filled"] >= 1 and gaps["unfilled"] == 0
        assert svc.stop() == 0
        source.close()
        publisher.close()
        client.context.close()


def test_a_sustained_stream_reaches_the_service_whole(tmp_path):
    """Section 4 of the load path at test scale: 5 runs of 1000 zero-delay events through
    RunEngine -> Publisher -> proxy -> ``trainer serve --no-train``, all counted on arrival
    (``benchmarks/bench_bus.py`` runs the same path with 100,000 events)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "bench_bus", Path(__file__).resolve().parents[1] / "benchmarks" / "bench_bus.py"
    )
    bench_bus = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench_bus)
    result = bench_bus.run(5000, 1000, tmp_path)
    assert result["events_received"] == result["events_sent"] == 5000
    assert result["runs_complete"] == 5 and result["service_exit"] == 0
    assert result["gaps"]["runs_with_gaps"] == 0
    assert result["rss_end_mib"] < result["rss_start_mib"] + 50  # no per-event growth worth a test's notice


def test_restarts_reach_every_fit_and_refit(tmp_path):
    import argparse

    from bluesky_twin.service import cli as service_cli

    parser = argparse.ArgumentParser()
    service_cli.register(parser.add_subparsers())
    argv = ["trainer", "serve", "--bus", "127.0.0.1:5568", "--model-dir", str(tmp_path / "m")]
    args = parser.parse_args([*argv, "--x", "a", "--y", "b", "--restarts", "3"])
    config = service_cli._config(args)
    assert config.fit_kwargs["restarts"] == 3 and config.refit_kwargs["restarts"] == 3
    plain = service_cli._config(parser.parse_args([*argv, "--x", "a", "--y", "b"]))
    assert "restarts" not in plain.fit_kwargs


def test_input_scales_reach_every_fit_and_refit(tmp_path):
    import argparse

    from bluesky_twin.errors import InputError
    from bluesky_twin.service import cli as service_cli

    parser = argparse.ArgumentParser()
    service_cli.register(parser.add_subparsers())
    argv = ["trainer", "serve", "--bus", "127.0.0.1:5568", "--model-dir", str(tmp_path / "m"), "--x", "t", "--x", "h"]
    config = service_cli._config(parser.parse_args([*argv, "--y", "m", "--input-scale", "h=sqrt", "--max-epochs", "9"]))
    for kwargs in (config.fit_kwargs, config.refit_kwargs):
        assert kwargs["search_space"].input_scales == {"h": "sqrt"} and kwargs["search_space"].max_epochs == 9
    assert "search_space" not in service_cli._config(parser.parse_args([*argv, "--y", "m"])).fit_kwargs
    with pytest.raises(InputError, match="not an --x axis"):
        service_cli._config(parser.parse_args([*argv, "--y", "m", "--input-scale", "m=sqrt"]))


def test_monotone_directions_reach_every_fit_and_refit(tmp_path):
    import argparse

    from bluesky_twin.errors import InputError
    from bluesky_twin.service import cli as service_cli

    parser = argparse.ArgumentParser()
    service_cli.register(parser.add_subparsers())
    argv = ["trainer", "serve", "--bus", "127.0.0.1:5568", "--model-dir", str(tmp_path / "m"), "--x", "t", "--x", "h"]
    config = service_cli._config(parser.parse_args([*argv, "--y", "m", "--monotone", "h=increasing"]))
    for kwargs in (config.fit_kwargs, config.refit_kwargs):
        assert kwargs["search_space"].monotone == {"h": "increasing"}
    with pytest.raises(InputError, match="--monotone .h=up.: expected COL=DIRECTION"):
        service_cli._config(parser.parse_args([*argv, "--y", "m", "--monotone", "h=up"]))
    with pytest.raises(InputError, match="not an --x axis"):
        service_cli._config(parser.parse_args([*argv, "--y", "m", "--monotone", "m=increasing"]))
