"""A copied, moved or restored embedded store keeps its event data.

Runs are written with a real RunEngine (scalar tables in ``tabular.db`` and INS frames
as zarr arrays under ``data/``), the whole store directory is copied elsewhere and the
original is renamed away; what the copy gives back is compared with what was produced.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import stat

import numpy as np
import pytest

bp = pytest.importorskip("bluesky.plans")

from storage_helpers import Recorder, documents_equal, replay_comparable  # noqa: E402

from bluesky_twin.callbacks import TwinTrainer  # noqa: E402
from bluesky_twin.errors import InputError  # noqa: E402
from bluesky_twin.replay import replay_runs  # noqa: E402
from bluesky_twin.storage import (  # noqa: E402
    close_store,
    iter_run_documents,
    make_tiled_writer,
    open_store,
    open_tiled,
    read_stream,
    rebase_store_paths,
    select_runs,
)

X_FIELDS = ["mpms_temperature", "mpms_field"]
Y_FIELD = "mpms_magnetisation"


def _recorded_paths(directory):
    with sqlite3.connect(directory / "catalog.db") as connection:
        uris = [row[0] for row in connection.execute("SELECT data_uri FROM assets")]
    connection.close()
    return uris


@pytest.fixture
def written_store(RE, mpms, ins_spectrometer, tmp_path):
    """A store with a magnetometer grid scan and an INS scan (2D frames), closed; and what was produced."""
    recorder = Recorder()
    directory = tmp_path / "original"
    client = open_store(directory)
    RE.subscribe(recorder)
    RE.subscribe(make_tiled_writer(client))
    (grid,) = RE(bp.grid_scan([mpms], mpms.field, 0.5, 1.5, 2, mpms.temperature, 26, 44, 5))
    (frames,) = RE(bp.scan([ins_spectrometer], ins_spectrometer.temperature, 5.0, 15.0, 2))
    close_store(client)
    return directory, recorder, (grid, frames)


def _assert_same_as_produced(client, recorder, uids):
    for uid in uids:
        live = recorder.run(uid)
        replayed = list(iter_run_documents(client, uids=[uid]))
        assert [n for n, _ in replayed] == [n for n, _ in live]
        for (name, a), (_, b) in zip(live, replayed):
            assert documents_equal(replay_comparable(name, a), replay_comparable(name, b)), name
        events = [doc["data"] for name, doc in live if name == "event"]
        stored = read_stream(client[uid])
        for field in events[0]:
            np.testing.assert_array_equal(stored[field], np.array([e[field] for e in events]), err_msg=field)


def test_copied_store_replays_the_same_data_after_the_original_is_gone(written_store, tmp_path):
    original, recorder, (grid, frames) = written_store
    copy = tmp_path / "elsewhere" / "copy"
    shutil.copytree(original, copy)
    original.rename(tmp_path / "renamed-away")
    client = open_tiled(copy)
    try:
        _assert_same_as_produced(client, recorder, [grid, frames])
        # replay through the trainer: the rows are those the RunEngine produced
        trainer = TwinTrainer(X_FIELDS, Y_FIELD, auto_refit=False)
        reports = replay_runs(select_runs(client, uids=[grid]), trainer)
        assert (reports[grid].state, reports[grid].n_points) == ("accepted", 10)
        produced = [doc["data"] for name, doc in recorder.run(grid) if name == "event"]
        np.testing.assert_array_equal(trainer.run_data(grid)["y"], [e[Y_FIELD] for e in produced])
        # the copy keeps growing on its own
        frames_back = read_stream(client[frames], fields=["ins_frame"])["ins_frame"]
        assert frames_back.shape == (2, 64, 64)
    finally:
        close_store(client)
    assert all(str(copy) in uri for uri in _recorded_paths(copy))
    assert not (tmp_path / "original").exists()


def test_a_copy_next_to_the_original_reads_its_own_files(written_store, tmp_path):
    """A backup copy must not silently read (or depend on) the original's files."""
    original, recorder, (grid, frames) = written_store
    copy = tmp_path / "backup"
    shutil.copytree(original, copy)
    client = open_tiled(copy)
    close_store(client)
    assert all(str(copy) in uri for uri in _recorded_paths(copy))
    assert all(str(original) in uri for uri in _recorded_paths(original))  # the original is untouched
    shutil.rmtree(original)
    client = open_tiled(copy)
    try:
        _assert_same_as_produced(client, recorder, [grid, frames])
    finally:
        close_store(client)


def test_moved_there_and_back_and_opened_through_a_link(written_store, tmp_path):
    original, recorder, (grid, frames) = written_store
    moved = tmp_path / "moved"
    original.rename(moved)
    assert rebase_store_paths(moved) == {str(original): str(moved)}
    moved.rename(original)
    client = open_tiled(original)  # back where it was written: rebased back
    try:
        _assert_same_as_produced(client, recorder, [grid])
    finally:
        close_store(client)
    # a symbolic link to a store is the same store: nothing is rewritten
    link = tmp_path / "link"
    link.symlink_to(original, target_is_directory=True)
    before = _recorded_paths(original)
    assert rebase_store_paths(link) == {}
    client = open_tiled(link)
    try:
        _assert_same_as_produced(client, recorder, [frames])
    finally:
        close_store(client)
    assert _recorded_paths(original) == before


def test_a_read_only_moved_store_is_a_clear_error(written_store, tmp_path, monkeypatch):
    original, _, _ = written_store
    copy = tmp_path / "read-only"
    shutil.copytree(original, copy)
    catalog = copy / "catalog.db"
    os.chmod(catalog, stat.S_IRUSR)
    if os.access(catalog, os.W_OK):  # root ignores file modes: refuse writes to it instead
        from bluesky_twin.storage import _relocate

        connect = sqlite3.connect

        def read_only(database, *args, **kwargs):
            if "mode=ro" not in str(database):
                raise sqlite3.OperationalError("attempt to write a readonly database")
            return connect(database, *args, **kwargs)

        monkeypatch.setattr(_relocate.sqlite3, "connect", read_only)
    with pytest.raises(InputError, match="was moved from .* make catalog.db writable"):
        open_tiled(copy)
    monkeypatch.undo()
    assert all(str(original) in uri for uri in _recorded_paths(copy))  # left as it was
