"""``bluesky-twin ins train | evaluate | score``: outputs and exit codes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from bluesky_twin.cli import main
from bluesky_twin.gan.model import Exp2SimModel
from bluesky_twin.gan.networks import GanConfig, ResnetGenerator
from bluesky_twin.gan.preprocess import Scaling, to_model_space
from bluesky_twin.modeldir import current_path

TINY = GanConfig(ngf=4, n_blocks=1, ndf=8, nce_layers=("down1", "down2", "res1"), nce_dim=16, num_patches=32)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A tiny calibrated model with both DUQ classifiers, saved to disk."""
    from bluesky_twin.ins.dataset import digits_control, generate_dataset
    from bluesky_twin.ins.duq import DUQClassifier

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    ds = generate_dataset(80, seed=4)
    ref, _ = to_model_space(ds.convolved[:40], Scaling())
    m = Exp2SimModel(ResnetGenerator(TINY), ResnetGenerator(TINY), TINY, Scaling(), reference=ref)
    m.scorer.n_repeats = 200  # (the paper: 1000) keeps the fixture fast
    m.scorer.calibrate(m.features(ds.convolved[40:]), m.features(digits_control(40, seed=1)))
    for kind in ("unconvolved", "convolved"):
        m.classifiers[kind] = DUQClassifier(channels=(4, 4, 4, 4)).fit(getattr(ds, kind), ds.labels, epochs=1)
    path = m.save(tmp_path_factory.mktemp("gan") / "model")
    torch.set_num_threads(old)
    return path


def test_score_writes_per_frame_scores_and_zones(model_dir, tmp_path, capsys):
    from bluesky_twin.ins.dataset import digits_control, generate_dataset

    frames = np.concatenate([generate_dataset(3, seed=9).convolved, digits_control(2, seed=2)])
    src = tmp_path / "frames.npy"
    np.save(src, frames)
    out = tmp_path / "scores.json"
    trans = tmp_path / "translated.npy"
    assert (
        main(["ins", "score", str(src), "--model", str(model_dir), "--json", str(out), "--translated", str(trans)]) == 0
    )
    res = json.loads(out.read_text())
    assert res["n"] == 5 and len(res["frames"]) == 5
    zones = [f["zone"] for f in res["frames"]]
    scores = [f["score"] for f in res["frames"]]
    assert zones[3:] == ["untrustworthy", "untrustworthy"]
    assert max(scores[:3]) < min(scores[3:])
    assert np.load(trans).shape == frames.shape
    assert "frame    0" in capsys.readouterr().out


@pytest.mark.parametrize(
    "content, message",
    [
        (np.zeros((64, 64)), "(N, H, W)"),
        (np.zeros((2, 3, 64, 64)), "(N, H, W)"),
        (np.full((1, 16, 16), np.inf), "inf"),
        (np.zeros((1, 18, 18)), "divisible by 4"),
    ],
)
def test_score_rejects_bad_arrays(model_dir, tmp_path, capsys, content, message):
    src = tmp_path / "bad.npy"
    np.save(src, content)
    out = tmp_path / "out.json"
    assert main(["ins", "score", str(src), "--model", str(model_dir), "--json", str(out)]) == 2
    err = capsys.readouterr().err
    assert "error" in err and message in err
    assert not out.exists()


def test_score_missing_or_unreadable_inputs(model_dir, tmp_path, capsys):
    assert main(["ins", "score", str(tmp_path / "none.npy"), "--model", str(model_dir)]) == 2
    (tmp_path / "junk.npy").write_text("not numpy")
    assert main(["ins", "score", str(tmp_path / "junk.npy"), "--model", str(model_dir)]) == 2
    np.save(tmp_path / "ok.npy", np.zeros((1, 16, 16)))
    assert main(["ins", "score", str(tmp_path / "ok.npy"), "--model", str(tmp_path / "nomodel")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_evaluate_writes_the_table_json(model_dir, tmp_path, capsys):
    out = tmp_path / "eval.json"
    assert (
        main(
            [
                "ins",
                "evaluate",
                "--model",
                str(model_dir),
                "--n",
                "24",
                "--n-domain",
                "20",
                "--seed",
                "5",
                "--json",
                str(out),
            ]
        )
        == 0
    )
    res = json.loads(out.read_text())
    for key in (
        "acc_unconvolved",
        "acc_convolved_raw",
        "acc_convolved_exp2sim",
        "gap_closed_exp2sim",
        "acc_conv_clf_on_convolved",
        "acc_conv_clf_on_unconvolved_raw",
        "acc_conv_clf_on_unconvolved_sim2exp",
        "gap_closed_sim2exp",
        "ms_per_frame",
    ):
        assert key in res
        assert res[key] is None or isinstance(res[key], float)
    for name in ("test", "digits", "near_domain", "experiment_like"):
        assert set(res["domain_score"][name]) >= {"mean", "std", "zone"}
    assert res["domain_score"]["digits"]["zone"] == "untrustworthy"
    assert res["domain_score"]["test"]["mean"] < res["domain_score"]["digits"]["mean"]
    assert "gap closed" in capsys.readouterr().out


def test_evaluate_and_train_exit_codes(model_dir, tmp_path, capsys):
    assert main(["ins", "evaluate", "--model", str(model_dir), "--n", "5"]) == 2
    assert main(["ins", "evaluate", "--model", str(model_dir), "--json", str(tmp_path / "no" / "x.json")]) == 2
    assert main(["ins", "train", "--out", str(model_dir)]) == 2  # exists, no --force
    assert main(["ins", "train", "--out", str(tmp_path / "m"), "--n-reference", "5"]) == 2
    assert main(["ins", "train", "--out", str(tmp_path / "m"), "--n", "100"]) == 2  # too small for the split
    assert not (tmp_path / "m").exists()
    err = capsys.readouterr().err
    assert "--force" in err and "too small" in err


def test_evaluate_needs_classifiers(tmp_path, capsys):
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    ref, _ = to_model_space(rng.random((24, 16, 16)).astype(np.float32), Scaling())
    m = Exp2SimModel(ResnetGenerator(TINY), ResnetGenerator(TINY), TINY, Scaling(), reference=ref)
    d = m.save(tmp_path / "m")
    assert main(["ins", "evaluate", "--model", str(d), "--n", "20"]) == 2
    assert "classifier" in capsys.readouterr().err


def test_train_tiny_end_to_end(tmp_path, capsys):
    out = tmp_path / "model"
    assert (
        main(
            [
                "ins",
                "train",
                "--out",
                str(out),
                "--n",
                "100",
                "--iterations",
                "2",
                "--batch-size",
                "2",
                "--clf-epochs",
                "1",
                "--n-reference",
                "24",
                "--n-calibration",
                "20",
                "--quiet",
                "--threads",
                "1",
            ]
        )
        == 0
    )
    meta = json.loads((current_path(out) / "metadata.json").read_text())
    assert meta["training"]["data"]["n"] == 100
    assert meta["domain"]["thresholds"]["frame"]["trustworthy"] > 0
    assert (current_path(out) / "plots" / "loss_generator.png").exists()
    m = Exp2SimModel.load(out)
    assert meta["training"]["parameters_per_generator"] == sum(p.numel() for p in m.G_A.parameters()) > 0
    assert set(m.classifiers) == {"unconvolved", "convolved"}


def test_train_classifiers_replaces_only_the_classifiers(tmp_path, capsys, reseal_model):
    """``ins train-classifiers``: same generators and calibration, new classifiers with the
    requested input scale, metadata updated, and ``evaluate`` feeds them frame-unit frames."""
    from bluesky_twin.gan.build import training_split
    from bluesky_twin.gan.evaluate import evaluate_model
    from bluesky_twin.ins.dataset import generate_dataset
    from bluesky_twin.io_utils import sha256_file

    out = tmp_path / "model"
    assert (
        main(
            [
                "ins",
                "train",
                "--out",
                str(out),
                "--n",
                "100",
                "--iterations",
                "1",
                "--batch-size",
                "2",
                "--clf-epochs",
                "1",
                "--clf-input-scale",
                "log",
                "--n-reference",
                "24",
                "--n-calibration",
                "20",
                "--quiet",
                "--threads",
                "1",
            ]
        )
        == 0
    )
    v1 = current_path(out)
    before = json.loads((v1 / "metadata.json").read_text())
    assert before["training"]["classifiers"]["input_scale"] == "log"
    frozen = {name: sha256_file(v1 / name) for name in ("generators.pt", "domain_reference.npy")}
    (v1 / "MODEL_CARD.md").write_text("card")
    reseal_model(out)  # the card is part of the checksummed version
    assert (
        main(
            [
                "ins",
                "train-classifiers",
                "--model",
                str(out),
                "--clf-epochs",
                "2",
                "--input-scale",
                "linear",
                "--threads",
                "1",
                "--quiet",
            ]
        )
        == 0
    )
    assert "linear input scale" in capsys.readouterr().out
    v2 = current_path(out)
    assert v2 != v1 and (v1 / "metadata.json").exists()  # a new version; the previous one is kept
    after = json.loads((v2 / "metadata.json").read_text())
    assert {name: sha256_file(v2 / name) for name in frozen} == frozen
    assert (v2 / "MODEL_CARD.md").read_text() == "card" and (v2 / "plots" / "loss_generator.png").exists()
    for key in ("domain", "config", "preprocessing"):
        assert after[key] == before[key], key
    for name in ("generators.pt", "domain_reference.npy"):
        assert after["files"][name] == before["files"][name], name
    assert after["training"]["seconds"] == before["training"]["seconds"]
    rec = after["training"]["classifier_retraining"]
    assert rec["input_scale"] == "linear" and rec["epochs"] == 2 and rec["seconds"] > 0
    assert after["training"]["classifiers"]["input_scale"] == "linear"
    for kind in ("unconvolved", "convolved"):
        clf_meta = json.loads((v2 / f"classifier_{kind}" / "metadata.json").read_text())
        assert clf_meta["preprocessing"]["input_scale"] == "linear" and len(clf_meta["history"]["loss"]) == 2
        assert after["training"]["classifier_validation_accuracy"][kind] == clf_meta["extra"]["validation_accuracy"]

    m = Exp2SimModel.load(out)
    assert {k: c.input_scale for k, c in m.classifiers.items()} == {"unconvolved": "linear", "convolved": "linear"}
    m.scorer.n_repeats = 50
    res = evaluate_model(m, n=20, seed=3, n_domain=20)
    assert res["classifier_input_scale"] == {"unconvolved": "linear", "convolved": "linear"}
    te = generate_dataset(20, seed=3, size=64)
    clf_c = m.classifiers["convolved"]
    assert res["acc_conv_clf_on_unconvolved_sim2exp"] == clf_c.score(m.sim2exp(te.unconvolved), te.labels)
    assert res["acc_conv_clf_on_unconvolved_raw"] == clf_c.score(te.unconvolved, te.labels)
    assert training_split(after)["dataset"].labels.shape == (100,)


def test_train_classifiers_errors(model_dir, tmp_path, capsys):
    # the hand-built fixture records no training data recipe
    assert main(["ins", "train-classifiers", "--model", str(model_dir), "--clf-epochs", "1", "--quiet"]) == 2
    assert "recipe" in capsys.readouterr().err
    assert main(["ins", "train-classifiers", "--model", str(tmp_path / "none"), "--quiet"]) == 2
    assert main(["ins", "train-classifiers", "--model", str(model_dir), "--clf-epochs", "0"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_gap_closed_needs_a_significant_gap():
    from bluesky_twin.gan.evaluate import _gap, _min_gap

    # the paper's Sim2Exp row: 71.8 -> 93.6 against 98.6 closes 81 %
    assert _gap(0.936, 0.718, 0.986, n=500) == pytest.approx(0.813, abs=1e-3)
    # 3 frames out of 500 are no gap (2 standard errors are 1.3 points here)
    assert _min_gap(0.986, 0.992, 500) == pytest.approx(0.0132, abs=5e-4)
    assert np.isnan(_gap(0.994, 0.986, 0.992, n=500))
    assert np.isnan(_gap(0.996, 0.988, 0.982, n=500))  # raw above the reference
    assert _gap(0.994, 0.986, 0.992) == pytest.approx(4 / 3)  # without n: only the sign counts


def test_train_recipe_overrides_are_parsed_and_recorded(tmp_path, capsys) -> None:
    from bluesky_twin.cli import main
    from bluesky_twin.gan.build import data_geometry, data_recipe
    from bluesky_twin.gan.cli import _parse_recipe

    assert _parse_recipe(["e_init=[50, 60, 70]", "chopper_frequency=100"]) == {
        "e_init": (50, 60, 70),
        "chopper_frequency": 100,
    }
    for bad, message in ((["bogus=1"], "KEY=VALUE"), (["e_init"], "KEY=VALUE"), (["e_init=[50,"], "not JSON")):
        rc = main(["ins", "train", "--out", str(tmp_path / "m"), "--recipe", *bad])
        assert rc == 2 and message in capsys.readouterr().err
        assert not (tmp_path / "m").exists()
    # metadata of models trained before the option: cuts, default recipe
    assert data_geometry({"training": {"data": {}}}) == "cut" and data_recipe({}) == {}
    meta = {"training": {"data": {"geometry": "powder", "recipe": {"e_init": [50, 60], "chopper_frequency": 100}}}}
    assert data_geometry(meta) == "powder"
    assert data_recipe(meta) == {"e_init": (50, 60), "chopper_frequency": 100}


@pytest.mark.parametrize("masked", [False, True])
def test_evaluate_keeps_masks_only_when_both_domains_carry_them(model_dir, monkeypatch, masked):
    """With recipe ``mask_unconvolved`` the translations keep the input's NaN mask, as in training."""
    from bluesky_twin.gan import build
    from bluesky_twin.gan.evaluate import evaluate_model
    from bluesky_twin.ins.dataset import generate_dataset

    model = Exp2SimModel.load(model_dir)
    recipe = {"mask_unconvolved": True} if masked else {}
    model.metadata = {**model.metadata, "training": {"data": {"geometry": "cut", "recipe": recipe}}}
    calibration = generate_dataset(12, seed=9, **recipe)
    monkeypatch.setattr(build, "training_split", lambda meta: {"dataset": calibration, "calibration": np.arange(12)})
    seen = []
    for name in ("exp2sim", "sim2exp"):

        def spy(frames, keep_mask=False, _translate=getattr(model, name), _name=name):
            out = _translate(frames, keep_mask=keep_mask)
            seen.append((_name, keep_mask, bool(np.isnan(out).any())))
            return out

        monkeypatch.setattr(model, name, spy)
    res = evaluate_model(model, n=24, seed=5, n_domain=20)
    assert res["recipe"] == ({"mask_unconvolved": True} if masked else {})
    assert {(name, keep) for name, keep, _ in seen} == {("exp2sim", masked), ("sim2exp", masked)}
    # masked recipe: both test-set domains carry the stripes, and so does every translation
    assert all(has_nan == masked for _, _, has_nan in seen)


def test_evaluate_near_domain_control_follows_the_models_geometry_and_recipe(model_dir, monkeypatch):
    """A powder model's near-domain control is powder frames of the other Hamiltonian, not cuts."""
    from bluesky_twin.gan import build
    from bluesky_twin.gan.evaluate import evaluate_model
    from bluesky_twin.ins import dataset

    model = Exp2SimModel.load(model_dir)
    size = int(model.reference.shape[-1])
    recipe = {"e_init": [50, 60], "chopper_frequency": 100}
    model.metadata = {**model.metadata, "training": {"data": {"geometry": "powder", "recipe": recipe}}}
    calibration = dataset.generate_dataset(
        12, seed=9, size=size, geometry="powder", e_init=(50, 60), chopper_frequency=100
    )
    monkeypatch.setattr(build, "training_split", lambda meta: {"dataset": calibration, "calibration": np.arange(12)})
    calls = []
    original = dataset.near_domain_control

    def spy(*args, **kwargs):
        out = original(*args, **kwargs)
        calls.append((kwargs, out))
        return out

    monkeypatch.setattr(dataset, "near_domain_control", spy)
    res = evaluate_model(model, n=24, seed=5, n_domain=20)
    assert res["geometry"] == "powder"
    ((kwargs, frames),) = calls
    assert kwargs["geometry"] == "powder" and kwargs["e_init"] == (50, 60) and kwargs["chopper_frequency"] == 100
    # powder frames: NaN outside the 2theta coverage, in every frame
    assert all(np.isnan(f).any() for f in frames)
