"""The two shipped models load (format 1, migrated in memory) and translate exactly as before.

The fingerprints below were computed BEFORE the configuration refactor (nested
``GanConfig.resolution``, format 2): ``exp2sim`` / ``sim2exp`` of three seeded gamma
frames with NaN stripes, torch 2.13.0+cpu, one thread.  The float32 outputs are
deterministic for one torch build, CPU vendor, instruction set and thread count (oneDNN
picks its kernels by instruction set), so their sha256 is compared exactly only where all
four match a recorded platform: the AMD EPYC AVX-512 values were computed before the
refactor, the Intel Xeon AVX-512 values with the refactored code (7769aa0, whose GAN code is
unchanged since) after its tolerance checks against the pre-refactor numbers passed there,
and the AMD EPYC AVX2 values (a family 25 model 1 CPU without AVX-512) at 667bedc after the
tolerance checks passed there.  The means,
standard deviations, sample pixels and domain scores are compared with a tolerance
everywhere.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.usefixtures("one_torch_thread")

MODELS = Path(__file__).resolve().parents[1] / "bluesky_twin" / "models"
#: torch build on which the sha256 values were computed (bitwise results depend on it).
HASH_TORCH = "2.13.0+cpu"
#: sha256 of the outputs on Intel AVX-512 CPUs (``FINGERPRINTS[...]["sha256"]``: AMD AVX-512),
#: torch HASH_TORCH, one thread
SHA256_INTEL = {
    ("ins_exp2simgan", "exp2sim"): "1f06d90e374204b8e1888a756a75d4fbddad3f3b8f77b4f51b7d006114405e3a",
    ("ins_exp2simgan", "sim2exp"): "286e345d858ffcd31a546cd35996939dfdcadb636427630b0bc7555e959977f3",
    ("ins_exp2simgan_powder", "exp2sim"): "3e977e5183763ccf80fc783d2c937e768fad50e6a356f15dcb035a26a975e9fe",
    ("ins_exp2simgan_powder", "sim2exp"): "e7a1a629b7a0c1dc32a88e5c0ddd26c8b8c9f45c6d9f5d197719a02bf6be9375",
}


#: the same on AMD CPUs whose widest instruction set torch uses is AVX2
SHA256_AMD_AVX2 = {
    ("ins_exp2simgan", "exp2sim"): "b840ab9a6c09be23ee8d4b37b1a5e06de6be398a609b90082c0ff364771d045e",
    ("ins_exp2simgan", "sim2exp"): "3e4bbe7e3a23a666c5301e5e7c434021ba4144f6ec5870c5d2f76e7679230c69",
    ("ins_exp2simgan_powder", "exp2sim"): "308c54fb246ed5e6d3c1eb87ece943c3ebb62452746a8d9a71469104ed607c56",
    ("ins_exp2simgan_powder", "sim2exp"): "d174ad9ef2ddb9d549b97dc62afd2f6340a77d90a3b048216aa5b036381b021d",
}


def _cpu_vendor() -> str:
    """``vendor_id`` from /proc/cpuinfo (``""`` where there is none)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("vendor_id"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


FINGERPRINTS = {
    ("ins_exp2simgan", "exp2sim"): {
        "sha256": "038764b7c1f966a9caeccfb63160869951830cf2fcbd5734a08701a19bd68aaf",
        "mean": [0.007291108, 0.007414545, 0.007380112],
        "std": [0.02302582, 0.02479377, 0.02632439],
        "pixels": [
            0.003309175,
            0.0009137471,
            0.01736231,
            0.003148705,
            0.003326672,
            0.0004063843,
            0.001530536,
            0.002060033,
            0.02672264,
            0.1158728,
            0.002148181,
            0.006082962,
        ],
    },
    ("ins_exp2simgan", "sim2exp"): {
        "sha256": "6056276c9f2fdd6753948dc742fc40d73debaa2c9595debbf1df29b2957a99e1",
        "mean": [0.09115251, 0.09188583, 0.09501984],
        "std": [0.1918287, 0.1966523, 0.2349109],
        "pixels": [
            1.712516,
            0.9785667,
            1.425697,
            1.21374,
            0.01578988,
            0.03626576,
            0.03344342,
            0.01816028,
            0.02510515,
            0.07363267,
            0.05131353,
            0.04572759,
        ],
    },
    ("ins_exp2simgan", "score"): {"scores": [13146.99, 12746.9, 12262.51]},
    ("ins_exp2simgan_powder", "exp2sim"): {
        "sha256": "ebe62414737ae3aa4ec4344d1a2394013392fab78f92b17a4e29ae2c1ae687c9",
        "mean": [0.02712031, 0.05134642, 0.03298062],
        "std": [0.05191487, 0.08323423, 0.06029455],
        "pixels": [
            0.0003742484,
            0.001006094,
            4.644003e-07,
            1.847113e-05,
            0.01452068,
            0.0002259059,
            8.443635e-08,
            0.00687677,
            0.006817391,
            0.0001105938,
            0.04702325,
            0.003102924,
        ],
    },
    ("ins_exp2simgan_powder", "sim2exp"): {
        "sha256": "00a4b7782cee1ca61bf7c4f27a70773eb4951469def4a13ed0622f0f61300b65",
        "mean": [0.836938, 0.8350429, 0.8204916],
        "std": [0.2403599, 0.2432495, 0.2464263],
        "pixels": [
            1.255215,
            1.416965,
            1.20883,
            1.307709,
            0.7521479,
            0.852822,
            0.7574924,
            0.8348881,
            0.7134669,
            1.007476,
            0.7462528,
            0.6398562,
        ],
    },
    ("ins_exp2simgan_powder", "score"): {"scores": [10389.54, 10351.2, 10195.15]},
}


def _frames() -> np.ndarray:
    rng = np.random.default_rng(0)
    x = rng.gamma(2.0, 0.5, size=(3, 64, 64)).astype(np.float32)
    x[0, :, 10] = np.nan
    x[1, 5:9, :] = np.nan
    return x


@pytest.fixture(scope="module", params=["ins_exp2simgan", "ins_exp2simgan_powder"])
def shipped(request):
    from bluesky_twin.gan.model import Exp2SimModel

    return request.param, Exp2SimModel.load(MODELS / request.param, load_classifiers=False)


@pytest.mark.parametrize("direction", ["exp2sim", "sim2exp"])
def test_shipped_outputs_match_the_stored_fingerprints(shipped, direction):
    import torch

    name, model = shipped
    torch.manual_seed(0)
    y = getattr(model, direction)(_frames()).astype(np.float32)
    ref = FINGERPRINTS[(name, direction)]
    y64 = y.astype(np.float64)
    np.testing.assert_allclose(y64.reshape(3, -1).mean(1), ref["mean"], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(y64.reshape(3, -1).std(1), ref["std"], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(y64[:, ::16, ::16].ravel()[:12], ref["pixels"], rtol=1e-4, atol=1e-6)
    expected = {
        ("AuthenticAMD", "AVX512"): ref["sha256"],
        ("GenuineIntel", "AVX512"): SHA256_INTEL[(name, direction)],
        ("AuthenticAMD", "AVX2"): SHA256_AMD_AVX2[(name, direction)],
    }.get((_cpu_vendor(), torch.backends.cpu.get_cpu_capability()))
    if torch.__version__ == HASH_TORCH and torch.get_num_threads() == 1 and expected is not None:
        assert hashlib.sha256(np.ascontiguousarray(y).tobytes()).hexdigest() == expected


def test_shipped_domain_scores_match(shipped):
    name, model = shipped
    scores, _ = model.score(_frames())
    np.testing.assert_allclose(scores, FINGERPRINTS[(name, "score")]["scores"], rtol=1e-5)


def test_shipped_models_are_format_1_on_disk_and_migrated_in_memory(shipped):
    from bluesky_twin.gan.checkpoint import FORMAT_VERSION
    from bluesky_twin.gan.config import GanConfig, ResolutionConfig
    from bluesky_twin.modeldir import current_path

    name, model = shipped
    on_disk = json.loads((current_path(MODELS / name) / "metadata.json").read_text())
    assert on_disk["format_version"] == 1 and "resolution" not in on_disk["config"]
    assert model.metadata["format_version"] == FORMAT_VERSION == 2
    assert model.metadata["migrated_from_format_version"] == 1
    pseudo = model.metadata["training"]["train_config"]["pseudo_pair"]
    if name == "ins_exp2simgan":
        assert model.config == GanConfig()
        assert pseudo == {"weight": 0.0, "widths": "learned", "finetune": 0}
    else:
        res = model.config.resolution
        assert res == ResolutionConfig(
            instrument=True, residual=False, stochastic=True, poisson=True, sigma_bounds=res.sigma_bounds
        )
        assert len(res.sigma_bounds[0]) == 64 and res.sigma_bounds[0][0] == pytest.approx(7.48194)
        assert pseudo == {"weight": 10, "widths": "uniform", "finetune": 1500}


def test_shipped_powder_command_gives_the_shipped_config():
    """The recorded command, parsed by today's CLI, names the architecture the model was trained with."""
    from bluesky_twin.cli import build_parser
    from bluesky_twin.gan.cli import _train_config
    from bluesky_twin.gan.model import Exp2SimModel

    model = Exp2SimModel.load(MODELS / "ins_exp2simgan_powder", load_classifiers=False)
    argv = model.metadata["training"]["command"].split()[1:]
    args = build_parser().parse_args([a.strip("'") for a in argv])
    config = _train_config(args)
    assert config.resolved_gan() == model.config
    assert config.train.to_dict() == model.metadata["training"]["train_config"]


def test_format_2_config_must_be_complete_and_config_errors_are_input_errors():
    from bluesky_twin.errors import InputError, ModelFileError
    from bluesky_twin.gan.checkpoint import read_config
    from bluesky_twin.gan.config import CLASSIFIER_INPUT_SCALES, GanConfig, TrainConfig
    from bluesky_twin.ins.duq import INPUT_SCALES

    full = GanConfig().to_dict()
    assert read_config({"config": full}, "m") == GanConfig()
    partial = {k: v for k, v in full.items() if k != "ngf"}
    with pytest.raises(ModelFileError, match="missing"):
        read_config({"config": partial}, "m")  # format 2 is not filled from today's defaults
    with pytest.raises(ModelFileError, match="invalid config"):
        read_config({"config": {**full, "ngf": 0}}, "m")
    for make in (lambda: GanConfig(ngf=0), lambda: TrainConfig(iterations=0), lambda: GanConfig.preset("huge")):
        with pytest.raises(InputError):
            make()
    assert CLASSIFIER_INPUT_SCALES == INPUT_SCALES
