"""Faults around model directories: outputs never clobbered, loads never torn, files loaded safely.

Every test here failed on the code before the versioned model directory
(``bluesky_twin.modeldir``) landed, except where a docstring says the case already held.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from bluesky_twin.cli import main
from bluesky_twin.errors import InputError, ModelFileError
from bluesky_twin.modeldir import current_path, writer_lock
from bluesky_twin.twin import DigitalTwin, TwinSearchSpace

TINY = TwinSearchSpace(
    n_layers=(2, 2),
    n_units=(8, 12),
    lr=(3e-3, 1e-2),
    batch_size=(32, 64),
    max_epochs=15,
    lr_drop_epoch=10,
    patience=5,
    activations=("tanh",),
    encodings=("raw",),
)
FIT_TAIL = ["--x", "T", "--x", "H", "--y", "M", "--trials", "1", "--max-epochs", "10", "--ensemble", "1"]


def _scan(seed: int = 0, scale: float = 1.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for h in (0.5, 1.0, 2.0, 3.0, 4.0):
        t = np.sort(rng.uniform(10, 60, 25))
        rows.append(pd.DataFrame({"T": t, "H": h, "M": scale * np.tanh(h) * (1 - np.tanh((t - 30) / 5))}))
    return pd.concat(rows, ignore_index=True)


@pytest.fixture(scope="module")
def twins() -> tuple[DigitalTwin, DigitalTwin]:
    """Two different small twins (A and B)."""
    a = DigitalTwin.fit(_scan(0), ["T", "H"], "M", trials=1, seed=0, search_space=TINY, ensemble_size=1)
    b = DigitalTwin.fit(_scan(1, 3.0), ["T", "H"], "M", trials=1, seed=1, search_space=TINY, ensemble_size=2)
    assert a.version != b.version
    return a, b


@pytest.fixture
def csv_path(tmp_path: Path) -> Path:
    path = tmp_path / "scan.csv"
    _scan().to_csv(path, index=False)
    return path


def _one_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


# ----------------------------------------------------------------------------- 1. outputs
def test_fit_warm_start_refuses_a_user_directory(twins, csv_path, tmp_path, capsys) -> None:
    """Before: ``fit --warm-start M --out DIR`` replaced DIR whole (notes.txt gone, exit 0)."""
    warm = twins[0].save(tmp_path / "warm")
    user = tmp_path / "results"
    user.mkdir()
    (user / "notes.txt").write_text("beamtime notes")
    for extra in ([], ["--overwrite"]):
        rc = main(["fit", str(csv_path), *FIT_TAIL, "--warm-start", str(warm), "--out", str(user), *extra])
        assert rc == 2
        assert "holds no twin model" in _one_line(capsys)
        assert sorted(p.name for p in user.iterdir()) == ["notes.txt"]
        assert (user / "notes.txt").read_text() == "beamtime notes"


def test_replay_refuses_a_user_directory(tiled_store_dir, tmp_path, capsys) -> None:
    """Before: ``replay --out DIR`` replaced a non-empty directory that was not a model."""
    user = tmp_path / "results"
    user.mkdir()
    (user / "notes.txt").write_text("keep")
    assert main(["replay", "--tiled", str(tiled_store_dir), "--out", str(user), "--overwrite"]) == 2
    assert "holds no twin model" in _one_line(capsys)
    assert (user / "notes.txt").read_text() == "keep" and len(list(user.iterdir())) == 1
    afile = tmp_path / "a-file"
    afile.write_text("keep")
    assert main(["replay", "--tiled", str(tiled_store_dir), "--out", str(afile)]) == 2
    assert "is a file" in _one_line(capsys) and afile.read_text() == "keep"


def test_refit_into_a_model_needs_overwrite_and_keeps_the_previous_version(csv_path, tmp_path, capsys) -> None:
    out = tmp_path / "twin"
    assert main(["fit", str(csv_path), *FIT_TAIL, "--out", str(out)]) == 0
    first = current_path(out)
    before = {p.name: p.read_bytes() for p in first.iterdir()}
    capsys.readouterr()
    assert main(["fit", str(csv_path), *FIT_TAIL, "--out", str(out)]) == 2
    assert "--overwrite" in _one_line(capsys)
    assert current_path(out) == first
    assert main(["fit", str(csv_path), *FIT_TAIL, "--out", str(out), "--overwrite", "--seed", "5"]) == 0
    second = current_path(out)
    assert second != first
    assert {p.name: p.read_bytes() for p in first.iterdir()} == before  # the old version is intact
    assert DigitalTwin.load(out).model_version == second.name


def test_predict_never_overwrites_without_asking_and_never_its_input(twins, tmp_path, capsys) -> None:
    """Before: ``predict --out F`` overwrote an existing file, even its own input CSV."""
    model = twins[0].save(tmp_path / "m")
    pts = tmp_path / "points.csv"
    pd.DataFrame({"T": [20.0, 30.0], "H": [1.0, 2.0]}).to_csv(pts, index=False)
    original = pts.read_bytes()
    for extra in ([], ["--overwrite"]):
        assert main(["predict", str(model), str(pts), "--out", str(pts), *extra]) == 2
        assert "own input" in _one_line(capsys)
        assert pts.read_bytes() == original
    out = tmp_path / "pred.csv"
    out.write_text("previous predictions")
    assert main(["predict", str(model), str(pts), "--out", str(out)]) == 2
    assert "--overwrite" in _one_line(capsys) and out.read_text() == "previous predictions"
    assert main(["predict", str(model), str(pts), "--out", str(out), "--overwrite"]) == 0
    assert list(pd.read_csv(out).columns[:3]) == ["T", "H", "M"]


def test_every_file_writing_command_refuses_an_existing_output(twins, tmp_path, capsys) -> None:
    """mce/steps prefixes, ins generate and the demo: an existing output is never replaced unasked."""
    model = twins[0].save(tmp_path / "m")
    for name in ("out.csv", "cuts.npz"):
        (tmp_path / name).write_text("mine")
    assert main(["mce", str(model), "--out", str(tmp_path / "out")]) == 2
    assert "--overwrite" in _one_line(capsys)
    assert main(["ins", "generate", "--n", "2", "--out", str(tmp_path / "cuts.npz")]) == 2
    assert "--overwrite" in _one_line(capsys)
    user = tmp_path / "mine"
    user.mkdir()
    (user / "thesis.tex").write_text("chapter 1")
    assert main(["demo", "--out", str(user)]) == 2
    assert "holds no demo output" in _one_line(capsys)
    assert (tmp_path / "out.csv").read_text() == "mine" and (tmp_path / "cuts.npz").read_text() == "mine"
    assert [p.name for p in user.iterdir()] == ["thesis.tex"]


# ----------------------------------------------------------------------------- 2. consistency
_WRITER = textwrap.dedent("""
    import sys
    from bluesky_twin.twin import DigitalTwin
    src, dest, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    twin = DigitalTwin.load(src)
    print("ready", flush=True)
    for _ in range(n):
        twin.save(dest)
    print("done", flush=True)
""")


def test_interleaved_saves_never_give_a_reader_a_mixed_model(twins, tmp_path) -> None:
    """Before: with 160 interleaved saves, 10 of 1,832 loads mixed one twin's metadata with
    another's weights, and one save crashed with FileNotFoundError."""
    a, b = twins
    b_dir = b.save(tmp_path / "b-source")
    dest = tmp_path / "shared"
    a.save(dest)
    X = np.array([[20.0, 1.0], [35.0, 2.5], [50.0, 4.0]])
    expected = {a.version: a.predict(X)[0], b.version: b.predict(X)[0]}
    writer = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(b_dir), str(dest), "80"], stdout=subprocess.PIPE, text=True
    )
    assert writer.stdout is not None and writer.stdout.readline().strip() == "ready"
    errors: list[BaseException] = []

    def save_a() -> None:
        try:
            for _ in range(80):
                a.save(dest)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    thread = threading.Thread(target=save_a)
    thread.start()
    loads, seen = 0, set()
    while thread.is_alive() or writer.poll() is None:
        twin = DigitalTwin.load(dest)
        loads += 1
        seen.add(twin.version)
        np.testing.assert_array_equal(twin.predict(X)[0], expected[twin.version])  # never mixed
        assert twin.ensemble_size == sum(e["members"] for e in twin.metadata["ensemble"])
    thread.join()
    assert writer.wait(timeout=120) == 0
    assert not errors, errors
    assert loads > 10 and seen == set(expected)
    versions = dest / "versions"
    assert not [p for p in versions.iterdir() if p.name.startswith(".")]  # no temporary directory left
    assert 1 <= len(list(versions.iterdir())) <= 3 + 2  # pruned to the newest few (+ in-flight)


_HOLDER = textwrap.dedent("""
    import sys, time
    from bluesky_twin.modeldir import writer_lock
    with writer_lock(sys.argv[1]):
        print("held", flush=True)
        time.sleep(60)
""")


def test_a_second_process_writing_the_same_model_is_refused(csv_path, tmp_path, capsys) -> None:
    """Before: two processes fitting into one --out both printed 'wrote'."""
    out = tmp_path / "twin"
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        assert main(["fit", str(csv_path), *FIT_TAIL, "--out", str(out)]) == 2
        line = _one_line(capsys)
        assert f"being written by pid {holder.pid}" in line
        assert not (out / "CURRENT").exists()
    finally:
        holder.kill()
        holder.wait()
    # the owner is gone: its stale lock is taken over
    assert main(["fit", str(csv_path), *FIT_TAIL, "--out", str(out)]) == 0
    assert not (out / ".lock").exists()
    DigitalTwin.load(out)


def test_a_failed_command_leaves_no_directory_behind(tmp_path, capsys) -> None:
    bad = tmp_path / "bad.csv"
    pd.DataFrame({"T": [1.0, 2.0], "H": [1.0, 1.0], "M": [0.0, 1.0]}).to_csv(bad, index=False)
    out = tmp_path / "twin"
    assert main(["fit", str(bad), *FIT_TAIL, "--out", str(out)]) == 2
    _one_line(capsys)
    assert not out.exists()
    with writer_lock(out):
        with writer_lock(out):  # re-entrant in one process
            assert (out / ".lock").exists()
    assert not out.exists()


# ----------------------------------------------------------------------------- 2. checksums
def _gan(tmp_path: Path, with_classifier: bool = True) -> Path:
    from bluesky_twin.gan.model import Exp2SimModel
    from bluesky_twin.gan.networks import GanConfig, ResnetGenerator
    from bluesky_twin.gan.preprocess import Scaling, to_model_space
    from bluesky_twin.ins.duq import DUQClassifier

    torch.manual_seed(0)
    cfg = GanConfig(ngf=4, n_blocks=1, ndf=8, nce_layers=("down1", "down2", "res1"), nce_dim=16, num_patches=32)
    rng = np.random.default_rng(0)
    frames = rng.gamma(0.5, 0.2, size=(24, 16, 16)).astype(np.float32)
    ref, _ = to_model_space(frames, Scaling())
    classifiers = {}
    if with_classifier:
        clf = DUQClassifier(channels=(4, 4), embedding_dim=8, centroid_dim=4)
        labels = np.arange(24) % 2
        classifiers["unconvolved"] = clf.fit(
            frames + labels[:, None, None], labels, epochs=1, seed=0, num_threads=1, progress=False
        )
    m = Exp2SimModel(ResnetGenerator(cfg), ResnetGenerator(cfg), cfg, Scaling(), reference=ref, classifiers=classifiers)
    return m.save(tmp_path / "gan")


def _duq(tmp_path: Path) -> Path:
    from bluesky_twin.ins.duq import DUQClassifier

    rng = np.random.default_rng(1)
    frames = rng.random((16, 16, 16)).astype(np.float32)
    labels = np.arange(16) % 2
    clf = DUQClassifier(channels=(4, 4), embedding_dim=8, centroid_dim=4).fit(
        frames + labels[:, None, None], labels, epochs=1, seed=0, num_threads=1, progress=False
    )
    return clf.save(tmp_path / "duq")


def _loader(kind: str):
    from bluesky_twin.gan.model import Exp2SimModel
    from bluesky_twin.ins.duq import DUQClassifier

    return {"twin": DigitalTwin.load, "gan": Exp2SimModel.load, "duq": DUQClassifier.load}[kind]


@pytest.fixture
def model_dirs(twins, tmp_path) -> dict[str, Path]:
    return {"twin": twins[1].save(tmp_path / "twin"), "gan": _gan(tmp_path), "duq": _duq(tmp_path)}


@pytest.mark.parametrize("kind", ["twin", "gan", "duq"])
def test_every_model_kind_verifies_every_file(kind, model_dirs, reseal_model) -> None:
    """Before: the twin had no checksums, and a GAN file without a checksum entry was loaded unchecked."""
    root = model_dirs[kind]
    load = _loader(kind)
    load(root)
    vdir = current_path(root)
    victim = next(p for p in sorted(vdir.rglob("*")) if p.is_file() and p.name != "metadata.json")
    good = victim.read_bytes()
    victim.write_bytes(good[:-1] + bytes([good[-1] ^ 1]))
    with pytest.raises(ModelFileError, match="does not match its checksum"):
        load(root)
    victim.write_bytes(good)
    (vdir / "stray.bin").write_bytes(b"unlisted")
    with pytest.raises(ModelFileError, match="no checksum entry"):
        load(root)
    (vdir / "stray.bin").unlink()
    meta = json.loads((vdir / "metadata.json").read_text())
    listed = next(iter(meta["files"]))
    meta["files"].pop(listed)  # a missing entry is an error, not a skip
    (vdir / "metadata.json").write_text(json.dumps(meta))
    reseal_model(root, keep_entries=True)
    with pytest.raises(ModelFileError, match="no checksum entry"):
        load(root)


def _craft(root: Path, reseal, edit) -> None:
    vdir = current_path(root)
    meta = json.loads((vdir / "metadata.json").read_text())
    edit(meta)
    (vdir / "metadata.json").write_text(json.dumps(meta))
    reseal(root)


@pytest.mark.parametrize(
    "kind, edit",
    [
        ("twin", lambda m: m["ensemble"][0]["params"].update(n_units=1_000_000)),
        ("twin", lambda m: m["ensemble"][0].update(members=100_000)),
        ("twin", lambda m: m["ensemble"][0]["params"].update(n_layers=10_000)),
        ("gan", lambda m: m["config"].update(ngf=100_000)),
        ("gan", lambda m: m["config"].update(n_blocks=1_000_000)),
        ("duq", lambda m: m["config"].update(channels=[4, 10**7])),
        ("duq", lambda m: m["config"].update(embedding_dim=10**9)),
    ],
)
def test_sizes_in_metadata_are_bounded_before_allocation(kind, edit, model_dirs, reseal_model) -> None:
    """Before: a crafted metadata.json asked for 16 GB and 2.9 TB."""
    root = model_dirs[kind]
    _craft(root, reseal_model, edit)
    tracemalloc.start()
    try:
        with pytest.raises(ModelFileError, match="outside the sane range|parameters"):
            _loader(kind)(root)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 100 * 2**20


def test_a_reference_array_header_cannot_ask_for_terabytes(model_dirs, reseal_model) -> None:
    root = model_dirs["gan"]
    ref = current_path(root) / "domain_reference.npy"
    header = np.lib.format.header_data_from_array_1_0(np.zeros((1, 16, 16), np.float16))
    header["shape"] = (10**7, 4096, 4096)
    with open(ref, "wb") as fh:
        np.lib.format.write_array_header_1_0(fh, header)
        fh.write(b"\0" * 512)
    reseal_model(root)
    with pytest.raises(ModelFileError, match="declares shape"):
        _loader("gan")(root)


@pytest.mark.parametrize("sub", ["../../outside", "/etc", "classifier_unconvolved/../../..", "~root"])
def test_paths_in_metadata_stay_inside_the_model(sub, model_dirs, reseal_model, tmp_path) -> None:
    root = model_dirs["gan"]
    _craft(root, reseal_model, lambda m: m.update(classifiers={"unconvolved": sub}))
    with pytest.raises(ModelFileError, match="leaves the model directory|invalid path"):
        _loader("gan")(root)


class _Payload:
    """Unpickling this creates a marker file: proof that a pickle was executed."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize("kind", ["twin", "gan", "duq"])
def test_a_malicious_pickle_in_any_model_file_is_never_executed(kind, model_dirs, reseal_model, tmp_path) -> None:
    """Held before for the weights (``weights_only=True``); checked here for every file of every kind."""
    root = model_dirs[kind]
    vdir = current_path(root)
    targets = [p for p in sorted(vdir.rglob("*")) if p.suffix in (".pt", ".npy", ".npz", ".journal")]
    assert targets
    for target in targets:
        original = target.read_bytes()
        marker = tmp_path / f"pwned-{kind}-{target.name}"
        if target.suffix == ".pt":
            torch.save({"x": _Payload(marker)}, target)
        elif target.suffix in (".npy", ".npz"):
            arr = np.empty(1, dtype=object)
            arr[0] = _Payload(marker)
            if target.suffix == ".npy":
                np.save(target, arr, allow_pickle=True)
            else:
                np.savez(target, a=arr)
        else:
            continue
        reseal_model(root)
        with pytest.raises(ModelFileError):
            _loader(kind)(root)
        assert not marker.exists(), f"{target.name}: the pickle ran"
        target.write_bytes(original)
        reseal_model(root)
    _loader(kind)(root)


# ----------------------------------------------------------------------------- 4/6. absurd input
def test_absurd_readings_are_refused_and_metadata_is_strict_json(tmp_path, capsys) -> None:
    """Before: a 1e308 reading gave train R^2 nan, NaN predictions, exit 0 and 'Infinity' in metadata.json."""
    df = _scan()
    df.loc[3, "M"] = 1e308
    csv = tmp_path / "absurd.csv"
    df.to_csv(csv, index=False)
    out = tmp_path / "twin"
    assert main(["fit", str(csv), *FIT_TAIL, "--out", str(out)]) == 2
    assert "too large" in _one_line(capsys)
    assert not out.exists()
    from bluesky_twin.modeldir import dumps_strict

    with pytest.raises(ValueError, match="non-finite number at a.b"):
        dumps_strict({"a": {"b": float("inf")}})


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--x", "T", "--x", "M", "--y", "M"], "cannot be a scan axis"),
        (["--x", "T", "--x", "H", "--y", "M", "--max-epochs", "0"], "--max-epochs"),
        (["--x", "T", "--x", "H", "--y", "M", "--timeout", "-5"], "--timeout"),
        (["--x", "T", "--x", "H", "--y", "M", "--budget", "nan"], "--budget"),
        (["--x", "T", "--x", "H", "--y", "M", "--trials", "1000000000"], "--trials"),
        (["--x", "T", "--x", "H", "--y", "M", "--ensemble", "100000"], "--ensemble"),
    ],
)
def test_fit_options_are_checked_before_anything_runs(argv, message, csv_path, tmp_path, capsys) -> None:
    out = tmp_path / "twin"
    assert main(["fit", str(csv_path), *argv, "--out", str(out)]) == 2
    assert message in _one_line(capsys)
    assert not out.exists()
    with pytest.raises(InputError, match="also given as a scan axis"):
        DigitalTwin.fit(_scan(), ["T", "M"], "M", trials=1)


def test_an_old_flat_model_directory_is_upgraded_in_place(twins, tmp_path, capsys) -> None:
    """A directory of the unversioned layout: refused with a hint, then converted by ``upgrade-model``."""
    from bluesky_twin.modeldir import upgrade_flat_dir

    root = twins[0].save(tmp_path / "m")
    flat = tmp_path / "flat"
    vdir = current_path(root)
    os.rename(vdir, flat)
    meta = json.loads((flat / "metadata.json").read_text())
    meta.pop("files")
    (flat / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(ModelFileError, match="upgrade-model"):
        DigitalTwin.load(flat)
    assert main(["upgrade-model", str(flat)]) == 0
    assert DigitalTwin.load(flat).version == twins[0].version
    with pytest.raises(InputError, match="already uses the versioned layout"):
        upgrade_flat_dir(flat)


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_a_version_is_as_readable_as_the_umask_allows(umask, tmp_path) -> None:
    """A model for a RunEngine under another account: the version's modes follow the umask,
    not the private modes of temporary files (0700/0600)."""
    from bluesky_twin.modeldir import write_version

    def write(tmp: Path) -> None:
        (tmp / "weights.bin").write_bytes(b"\0" * 8)

    old = os.umask(umask)
    try:
        name = write_version(tmp_path / "model", {"format": "test-model"}, write)
    finally:
        os.umask(old)
    version = tmp_path / "model" / "versions" / name
    modes = {p.name: p.stat().st_mode & 0o777 for p in [version, *version.iterdir(), tmp_path / "model" / "CURRENT"]}
    assert modes == {
        name: 0o777 & ~umask,
        "weights.bin": 0o666 & ~umask,
        "metadata.json": 0o666 & ~umask,
        "CURRENT": 0o666 & ~umask,
    }


def test_a_writer_that_points_late_at_a_pruned_version_repairs_the_pointer(tmp_path, monkeypatch) -> None:
    """Before: a save that published its version, then pointed CURRENT at it only after other
    saves had pruned it, left CURRENT naming a missing version (seen once in CI as
    "version v000037 named in CURRENT is missing")."""
    from bluesky_twin import modeldir as md

    root = tmp_path / "m"

    def write(i: int) -> str:
        return md.write_version(root, {"format": "race-test", "i": i}, lambda d: (d / "x.txt").write_text(str(i)))

    write(0)
    real_point_at = md._point_at
    gate, parked = threading.Event(), threading.Event()

    def point_late(r, fmt, name, metadata):
        if threading.current_thread().name == "late" and not gate.is_set():
            parked.set()
            gate.wait(30)
        real_point_at(r, fmt, name, metadata)

    monkeypatch.setattr(md, "_point_at", point_late)
    late = threading.Thread(target=write, args=(1,), name="late")
    late.start()
    assert parked.wait(30)
    late_version = md._version_names(root / md.VERSIONS_DIR)[-1]
    for i in range(2, 3 + md.KEEP_VERSIONS):  # newer saves prune the late writer's version
        write(i)
    assert late_version not in md._version_names(root / md.VERSIONS_DIR)
    gate.set()
    late.join(30)
    names = md._version_names(root / md.VERSIONS_DIR)
    assert md._read_pointer(root)["version"] == names[-1]  # the newest, not the pruned one
    assert json.loads(md.open_version(root, "race-test").files["metadata.json"])["i"] == 2 + md.KEEP_VERSIONS
