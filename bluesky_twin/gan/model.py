"""A trained Exp2SimGAN: translation in both directions plus the domain score.

>>> model = Exp2SimModel.load()                 # the shipped model
>>> out = model.translate_and_score(frames)     # (N, H, W), NaN allowed
>>> out["translated"], out["scores"], out["zones"]
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from bluesky_twin.errors import InputError, ModelFileError
from bluesky_twin.gan.domain import DomainScorer
from bluesky_twin.gan.networks import GanConfig, ResnetGenerator, ResolutionResnetGenerator, make_generators
from bluesky_twin.gan.preprocess import Scaling, from_model_space, to_model_space, validate_frames

__all__ = ["Exp2SimModel", "default_model_dir", "CLASSIFIER_DIRS"]

log = logging.getLogger(__name__)

#: Sub-directories holding the optional DUQ classifiers.
CLASSIFIER_DIRS = {"unconvolved": "classifier_unconvolved", "convolved": "classifier_convolved"}


def default_model_dir() -> Path:
    """The shipped model directory, ``bluesky_twin/models/ins_exp2simgan`` (package data)."""
    from importlib.resources import files

    return Path(str(files("bluesky_twin").joinpath("models", "ins_exp2simgan")))


class Exp2SimModel:
    """Exp2Sim (``G_A``: experiment-like -> simulation) and Sim2Exp (``G_B``) generators.

    Parameters
    ----------
    G_A, G_B
        Trained generators.
    config
        Their architecture.
    scaling
        Frame-unit <-> model-space mapping.
    reference
        Training frames (model space, ``(M, *spatial)``) whose Exp2Sim encoder features
        form the domain-score bank; ``None`` disables scoring.
    domain_settings
        :meth:`DomainScorer.settings` (thresholds etc.); ``None`` -> defaults, uncalibrated.
    metadata
        Free-form metadata (training info...).
    classifiers
        Optional ``{"unconvolved": clf, "convolved": clf}`` with ``predict_proba``.
    """

    def __init__(
        self,
        G_A: ResnetGenerator,
        G_B: ResnetGenerator,
        config: GanConfig,
        scaling: Scaling,
        reference: np.ndarray | None = None,
        domain_settings: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
        classifiers: dict[str, Any] | None = None,
        batch_size: int = 64,
    ):
        self.G_A = G_A.eval()
        self.G_B = G_B.eval()
        for p in (*self.G_A.parameters(), *self.G_B.parameters()):
            p.requires_grad_(False)
        self.config = config
        self.scaling = scaling
        self.metadata = dict(metadata or {})
        self.classifiers = dict(classifiers or {})
        self.batch_size = batch_size
        #: the model-directory version it was loaded from (``"v000001"``), else ``None``
        self.model_version: str | None = None
        self.reference = None if reference is None else np.asarray(reference, dtype=np.float32)
        self.scorer: DomainScorer | None = None
        if self.reference is not None:
            bank = self._features_model_space(self.reference)
            if domain_settings:
                self.scorer = DomainScorer.from_settings(bank, domain_settings)
            else:
                self.scorer = DomainScorer(bank)

    # ---------------------------------------------------------------- internals
    def _prepare(self, frames: Any) -> tuple[np.ndarray, np.ndarray]:
        arr = validate_frames(frames, self.config.dims)
        if any(s % 4 for s in arr.shape[1:]):
            raise InputError(f"frame sizes must be divisible by 4, got {arr.shape[1:]}")
        return to_model_space(arr, self.scaling)

    def _batches(self, x: np.ndarray):
        import torch

        for s in range(0, len(x), self.batch_size):
            yield s, torch.from_numpy(np.ascontiguousarray(x[s : s + self.batch_size]))[:, None]

    def _features_model_space(self, x: np.ndarray) -> np.ndarray:
        import torch

        out = []
        with torch.inference_mode():
            for _, xb in self._batches(x):
                (f,) = self.G_A.encode(xb, [self.config.feature_layer])
                out.append(f.flatten(1).numpy())
        return np.concatenate(out)

    def _translate(
        self, G: ResnetGenerator, x: np.ndarray, want_features: bool, valid: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        import torch

        ys, fs = [], []
        use_mask = isinstance(G, ResolutionResnetGenerator) and valid is not None
        with torch.inference_mode():
            for s, xb in self._batches(x):
                kwargs = {}
                if use_mask:  # the resolution layer broadens measured pixels only
                    kwargs["valid"] = torch.from_numpy(
                        np.ascontiguousarray(valid[s : s + self.batch_size], dtype=np.float32)
                    )[:, None]
                if want_features:
                    y, (f,) = G.forward_with_features(xb, [self.config.feature_layer], **kwargs)
                    fs.append(f.flatten(1).numpy())
                else:
                    y = G(xb, **kwargs)
                ys.append(y[:, 0].numpy())
        return np.concatenate(ys), (np.concatenate(fs) if want_features else None)

    def _translate_frames(
        self, G: ResnetGenerator, frames: Any, keep_mask: bool, want_features: bool = False
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Frames -> translated frames in frame units (NaN put back if *keep_mask*), and features."""
        x, valid = self._prepare(frames)
        y, feats = self._translate(G, x, want_features, valid)
        y = from_model_space(y, self.scaling)
        if keep_mask:
            y[~valid] = np.nan
        return y, feats

    def _zones(self, scores: np.ndarray) -> list[str | None]:
        """Zones of frame scores (``None`` each when the frame thresholds are not calibrated)."""
        scorer = self._require_scorer()
        return scorer.frame_zones(scores) if "frame" in scorer.thresholds else [None] * len(scores)

    # ------------------------------------------------------------------ public
    def exp2sim(self, frames: Any, keep_mask: bool = False) -> np.ndarray:
        """Remove instrument resolution: experiment-like frames -> simulation-like frames.

        Parameters
        ----------
        frames
            ``(N, *spatial)`` or a single frame, NaN where masked.
        keep_mask
            Put NaN back where the input was masked (default: return the model's fill-in).
        """
        return self._translate_frames(self.G_A, frames, keep_mask)[0]

    def sim2exp(self, frames: Any, keep_mask: bool = False) -> np.ndarray:
        """Add instrument resolution: simulation frames -> experiment-like frames.

        Parameters
        ----------
        frames
            ``(N, *spatial)`` or a single frame, NaN where masked (for example outside the
            instrument's coverage).
        keep_mask
            Put NaN back where the input was masked (default: return the model's fill-in).
        """
        return self._translate_frames(self.G_B, frames, keep_mask)[0]

    def features(self, frames: Any) -> np.ndarray:
        """(N, F) domain-score features (Exp2Sim encoder after the last downsampling)."""
        x, _ = self._prepare(frames)
        return self._features_model_space(x)

    def _require_scorer(self) -> DomainScorer:
        if self.scorer is None:
            raise ModelFileError("this model has no domain-score reference data")
        return self.scorer

    def score(self, frames: Any) -> tuple[np.ndarray, list[str | None]]:
        """Per-frame domain scores and zones."""
        scores = self._require_scorer().frame_scores(self.features(frames))
        return scores, self._zones(scores)

    def translate_and_score(self, frames: Any, keep_mask: bool = False) -> dict[str, Any]:
        """Exp2Sim translation and domain score from one generator pass.

        Returns
        -------
        dict
            ``translated`` ``(N, *spatial)`` in frame units, ``scores`` (N,), ``zones`` (list of str).
        """
        scorer = self._require_scorer()
        y, feats = self._translate_frames(self.G_A, frames, keep_mask, want_features=True)
        scores = scorer.frame_scores(feats)
        return {"translated": y, "scores": scores, "zones": self._zones(scores)}

    # ------------------------------------------------------------- persistence
    def save(self, path: str | Path, extra_writers: dict[str, Any] | None = None) -> Path:
        """Write the model directory atomically (see :mod:`bluesky_twin.gan.checkpoint`)."""
        from bluesky_twin.gan.checkpoint import write_model_dir

        if self.reference is None:
            raise InputError("cannot save a model without domain reference frames")
        meta = dict(self.metadata)
        meta.update(
            config=self.config.to_dict(),
            preprocessing={"scaling": self.scaling.to_dict(), "nan": "nearest-valid fill; mask weights identity L1"},
            domain=self.scorer.settings() if self.scorer else None,
            classifiers={k: CLASSIFIER_DIRS[k] for k in self.classifiers},
        )
        writers = dict(extra_writers or {})
        for kind, clf in self.classifiers.items():
            writers[CLASSIFIER_DIRS[kind]] = clf.write_files
        sds = {"G_A": self.G_A.state_dict(), "G_B": self.G_B.state_dict()}
        return write_model_dir(path, sds, self.reference, meta, writers)

    @classmethod
    def load(cls, path: str | Path | None = None, load_classifiers: bool = True) -> Exp2SimModel:
        """Load the current version of a model directory (default: the shipped model).

        Every file is checked against its sha256, sizes against bounds, and the
        classifier paths must lie inside the version; raises ModelFileError.
        """
        from bluesky_twin.gan.checkpoint import FORMAT
        from bluesky_twin.modeldir import load_model

        path = Path(path) if path is not None else default_model_dir()
        return load_model(path, FORMAT, lambda version: cls._from_version(version, load_classifiers))

    @classmethod
    def _from_version(cls, version: Any, load_classifiers: bool) -> Exp2SimModel:
        from bluesky_twin.gan.checkpoint import check_metadata, read_config, read_generators, read_reference

        path = version.path
        meta = check_metadata(version)
        config = read_config(meta, path)
        try:
            scaling = Scaling.from_dict(meta["preprocessing"]["scaling"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelFileError(f"{path}/metadata.json has an invalid preprocessing entry: {exc}") from None
        reference = read_reference(version)
        if reference.ndim != config.dims + 1:
            raise ModelFileError(
                f"{path}: domain reference has shape {reference.shape}, expected {config.dims + 1} axes"
            )
        sds = read_generators(version)
        G_A, G_B = make_generators(config, scaling)
        try:
            G_A.load_state_dict(sds["G_A"])
            G_B.load_state_dict(sds["G_B"])
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[0:2]
            raise ModelFileError(
                f"{path}: weights do not match the config in metadata.json: {' '.join(first)}"
            ) from None
        classifiers: dict[str, Any] = {}
        if load_classifiers:
            listed = meta.get("classifiers") or {}
            if not isinstance(listed, dict):
                raise ModelFileError(f"{path}/metadata.json: 'classifiers' is not an object")
            for kind, sub in listed.items():
                classifiers[kind] = _load_classifier(version, sub)
        model = cls(
            G_A,
            G_B,
            config,
            scaling,
            reference=reference,
            domain_settings=meta.get("domain"),
            metadata=meta,
            classifiers=classifiers,
        )
        model.model_version = version.name
        return model


def _load_classifier(version: Any, sub: str) -> Any:
    from bluesky_twin.ins.duq import DUQClassifier

    view = version.sub(sub)  # refuses a path that leaves the version
    try:
        return DUQClassifier.from_version(view)
    except ModelFileError:
        raise
    except Exception as exc:
        raise ModelFileError(f"cannot load classifier {view.path}: {type(exc).__name__}: {exc}") from None
