"""Embedded tiled storage: real RunEngine scans of every simulated instrument, read back and replayed."""

from __future__ import annotations

import numpy as np
import pytest
from storage_helpers import Recorder, documents_equal, replay_comparable

from bluesky_twin.errors import InputError
from bluesky_twin.storage import (
    close_store,
    iter_run_documents,
    make_tiled_writer,
    open_store,
    open_tiled,
    read_stream,
    select_runs,
)


def _live_columns(docs):
    rows = [doc["data"] for name, doc in docs if name == "event"]
    return {key: np.array([row[key] for row in rows]) for key in rows[0]}


def _assert_replay_equals_live(live, replayed):
    assert [n for n, _ in replayed] == [n for n, _ in live]
    for (name, live_doc), (_, stored_doc) in zip(live, replayed):
        a, b = replay_comparable(name, live_doc), replay_comparable(name, stored_doc)
        assert documents_equal(a, b), (name, a, b)
    # everything outside an event's regenerated uid is identical, descriptors included
    live_descriptors = [replay_comparable("descriptor", d) for n, d in live if n == "descriptor"]
    assert live_descriptors and all("dtype_numpy" in k for d in live_descriptors for k in d["data_keys"].values())


def _scan_plans(hw):
    import bluesky.plans as bp

    return {
        "mpms": bp.grid_scan([hw.mpms], hw.mpms.field, 0.5, 2.0, 3, hw.mpms.temperature, 20.0, 50.0, 7),
        "ppms": bp.grid_scan([hw.ppms], hw.ppms.field, 0.0, 0.6, 3, hw.ppms.temperature, 2.0, 10.0, 5),
        "arpes": bp.grid_scan([hw.arpes], hw.arpes.theta2, -10.0, 10.0, 3, hw.arpes.theta1, -20.0, 20.0, 9),
        "ins": bp.scan([hw.ins], hw.ins.temperature, 5.0, 15.0, 3),
    }


def test_every_instrument_scan_is_stored_read_back_and_replayed(RE, sim_hw, tiled_store):
    recorder = Recorder()
    RE.subscribe(recorder)
    RE.subscribe(make_tiled_writer(tiled_store))
    uids = {}
    for key, plan in _scan_plans(sim_hw).items():
        (uids[key],) = RE(plan, sample=f"{key}-sample")
    assert sorted(tiled_store) == sorted(uids.values())

    for key, uid in uids.items():
        run = tiled_store[uid]
        live = recorder.run(uid)
        expected = _live_columns(live)
        stored = read_stream(run)
        assert set(stored) == set(expected), key
        for field, values in expected.items():
            np.testing.assert_array_equal(stored[field], values, err_msg=f"{key}:{field}")
        replayed = list(run.documents())
        _assert_replay_equals_live(live, replayed)

    frames = read_stream(tiled_store[uids["ins"]], fields=["ins_frame"])["ins_frame"]
    assert frames.shape == (3, 64, 64) and frames.dtype == np.float32
    assert np.isnan(frames).any()  # detector gaps survive the round trip


def test_iter_run_documents_selects_by_uid_and_query(RE, mpms, tiled_store):
    import bluesky.plans as bp
    from tiled.queries import Key

    recorder = Recorder()
    RE.subscribe(recorder)
    RE.subscribe(make_tiled_writer(tiled_store))
    (first,) = RE(bp.scan([mpms], mpms.temperature, 20, 40, 5), sample="ErCo2", purpose="coarse")
    (second,) = RE(bp.scan([mpms], mpms.temperature, 20, 40, 5), sample="ErCo2", purpose="fine")
    (other,) = RE(bp.count([mpms], 2), sample="Fe3Ga4")

    both = list(iter_run_documents(tiled_store, uids=[second, first[:8]]))
    starts = [doc["uid"] for name, doc in both if name == "start"]
    assert starts == [second, first]  # order as asked, partial uid accepted
    _assert_replay_equals_live(recorder.run(second) + recorder.run(first), both)

    by_mapping = [d["uid"] for n, d in iter_run_documents(tiled_store, query={"sample": "ErCo2"}) if n == "start"]
    assert sorted(by_mapping) == sorted([first, second])
    by_query = [
        d["uid"]
        for n, d in iter_run_documents(tiled_store, query=[Key("sample") == "ErCo2", Key("purpose") == "fine"])
        if n == "start"
    ]
    assert by_query == [second]
    everything = [d["uid"] for n, d in iter_run_documents(tiled_store) if n == "start"]
    assert everything == [first, second, other]

    with pytest.raises(InputError, match="no stored run"):
        select_runs(tiled_store, uids=["0123456789abcdef"])
    with pytest.raises(InputError, match="match the query"):
        select_runs(tiled_store, query={"sample": "nothing-like-this"})
    with pytest.raises(InputError):
        select_runs(tiled_store, query="sample == ErCo2")


def test_store_persists_and_reopens_without_catalog_init(RE, mpms, tmp_path, monkeypatch):
    import bluesky.plans as bp

    from bluesky_twin.storage import _catalog

    directory = tmp_path / "store"
    client = open_store(directory)
    RE.subscribe(make_tiled_writer(client))
    (uid,) = RE(bp.scan([mpms], mpms.field, 0.1, 1.0, 4))
    before = read_stream(client[uid])
    close_store(client)

    # Neither re-opening nor creating another store may run tiled's (slow) catalog init:
    # a ready template is copied instead.
    def forbidden(uri):
        raise AssertionError(f"catalog init ran for {uri}")

    monkeypatch.setattr(_catalog, "_initialise_catalog", forbidden)
    reopened = open_tiled(directory)
    try:
        after = read_stream(reopened[uid])
        for field, values in before.items():
            np.testing.assert_array_equal(after[field], values)
    finally:
        close_store(reopened)
    fresh = open_store(tmp_path / "another")
    try:
        assert list(fresh) == []
    finally:
        close_store(fresh)


def test_bad_locations_are_clear_errors(tmp_path):
    with pytest.raises(InputError, match="no embedded tiled store"):
        open_tiled(tmp_path / "missing")
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    with pytest.raises(InputError, match="not a directory"):
        open_store(a_file)
    bogus = tmp_path / "bogus"
    bogus.mkdir()
    (bogus / "catalog.db").write_text("not sqlite")
    with pytest.raises(InputError, match="not a tiled catalog"):
        open_store(bogus)
    with pytest.raises(InputError, match="unsupported"):
        open_tiled("ftp://example.org/runs")
    # a catalog from another tiled version is refused with instructions, not half-opened
    import shutil
    import sqlite3

    from bluesky_twin.storage import catalog_template

    future = tmp_path / "future"
    future.mkdir()
    shutil.copyfile(catalog_template(), future / "catalog.db")
    with sqlite3.connect(future / "catalog.db") as connection:
        connection.execute("UPDATE alembic_version SET version_num = 'ffffffffffff'")
    with pytest.raises(InputError, match="schema revision ffffffffffff"):
        open_store(future)
    with pytest.raises(InputError, match="alphanumeric"):
        from bluesky_twin.storage import serve_store

        with serve_store(tmp_path / "y", api_key="has spaces"):
            pass
    with pytest.raises(InputError, match="unsupported catalog URI"):
        open_store(tmp_path / "x", catalog_uri="mongodb://localhost/db")


def test_http_server_with_api_key_works_like_the_embedded_store(RE, mpms, tmp_path):
    import bluesky.plans as bp

    from bluesky_twin.storage import serve_store

    recorder = Recorder()
    RE.subscribe(recorder)
    with serve_store(tmp_path / "served", api_key="secretkey123") as uri:
        client = open_tiled(uri, api_key="secretkey123")
        RE.subscribe(make_tiled_writer(client))
        (uid,) = RE(bp.scan([mpms], mpms.temperature, 30, 40, 6))
        _assert_replay_equals_live(recorder.run(uid), list(iter_run_documents(client, uids=[uid])))
        client.context.close()
        from tiled.client import from_uri

        with pytest.raises(Exception, match="401|Unauthorized|API key|authenticat"):
            from_uri(uri, api_key="wrongkey456")


@pytest.mark.services
def test_tiled_catalog_on_postgresql(RE, mpms, tmp_path, fresh_postgres_url):
    import bluesky.plans as bp

    catalog_uri = fresh_postgres_url.replace("postgresql://", "postgresql+asyncpg://", 1)
    client = open_store(tmp_path / "pg", catalog_uri=catalog_uri)
    try:
        recorder = Recorder()
        RE.subscribe(recorder)
        RE.subscribe(make_tiled_writer(client))
        (uid,) = RE(bp.grid_scan([mpms], mpms.field, 0.5, 1.0, 2, mpms.temperature, 25, 45, 5))
        stored = read_stream(client[uid])
        expected = _live_columns(recorder.run(uid))
        for field, values in expected.items():
            np.testing.assert_array_equal(stored[field], values)
        _assert_replay_equals_live(recorder.run(uid), list(iter_run_documents(client, uids=[uid])))
    finally:
        close_store(client)
    assert not (tmp_path / "pg" / "catalog.db").exists()  # the catalog really lives in PostgreSQL


def test_run_without_stop_replays_without_stop(RE, mpms, tiled_store):
    """A run interrupted before its stop document (crash, kill) replays as it was written."""
    import bluesky.plans as bp

    recorder = Recorder()
    RE.subscribe(recorder)
    RE(bp.scan([mpms], mpms.temperature, 25, 45, 5))
    writer = make_tiled_writer(tiled_store, batch_size=1)
    for name, doc in recorder.docs[:-1]:  # everything but the stop document
        writer(name, doc)
    uid = recorder.docs[0][1]["uid"]
    replayed = list(iter_run_documents(tiled_store, uids=[uid]))
    assert [n for n, _ in replayed] == ["start", "descriptor"] + ["event"] * 5
    _assert_replay_equals_live(recorder.docs[:-1], replayed)
    with pytest.raises(InputError):
        make_tiled_writer(tiled_store, batch_size=0)
