"""Domain-of-applicability score (Exp2SimGAN).

Features are the Exp2Sim generator's encoder activations after the last
downsampling, flattened (64 x 16 x 16 = 16,384 numbers for a 64 x 64 frame with
the ``small`` preset).  A frame (or a set of frames) is compared with the
training data by an entropic Sinkhorn approximation of the Wasserstein distance
(POT's batched solver ``ot.solve_batch``, log-domain Sinkhorn, squared Euclidean
cost, eps = 0.1, at most 100 iterations) between 20 random training feature
vectors and the new features, repeated many times; the score is the mean.

**Cost scale.**  Squared distances between 16k-dimensional features are of order
1e3-1e5, where ``exp(-C / 0.1)`` underflows.  The cost matrix is therefore divided
by a fixed ``cost_scale`` (the median train-vs-reference squared distance, stored
with the model) before Sinkhorn, and the transport cost is multiplied back, so
scores are in the original units (squared feature distance, comparable with the
paper's 73k ... 240k) and eps = 0.1 is *relative* to the typical cost, i.e.
eps_abs = 0.1 * cost_scale.

**Two levels.**

* *frame* score: 20 reference vectors vs 1 frame.  With a single target point the
  transport plan is forced (all mass goes to that point) so Sinkhorn returns the
  mean squared distance to the 20 reference vectors exactly; averaged over the
  repeats it estimates the mean distance to the reference bank.  The reference
  subsets are drawn once (seeded), so a frame's score is deterministic.
* *set* score: 20 reference vectors vs 20 random frames of the set, repeated; the
  mean and std of that distribution (the paper's numbers).

Thresholds are calibrated per level and stored with the model: a score is
'trustworthy' if <= the 95th percentile of train-vs-train, 'untrustworthy' if >=
the 5th percentile of an out-of-distribution control (digits), otherwise 'expert
opinion'.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

__all__ = ["Thresholds", "DomainScorer", "ZONES", "zone_of"]

ZONES = ("trustworthy", "expert opinion", "untrustworthy")


@dataclass(frozen=True)
class Thresholds:
    """Zone boundaries (score units) for one level (frame or set)."""

    trustworthy: float
    untrustworthy: float

    def zone(self, score: float) -> str:
        """'trustworthy', 'expert opinion' or 'untrustworthy' (NaN -> 'untrustworthy')."""
        return zone_of(score, self.trustworthy, self.untrustworthy)


def zone_of(score: float, trust: float, untrust: float) -> str:
    """Zone of *score* given the two thresholds."""
    if not np.isfinite(score) or score >= untrust:
        return ZONES[2]
    if score <= trust:
        return ZONES[0]
    return ZONES[1]


class DomainScorer:
    """Sinkhorn domain score against a bank of training features.

    Parameters
    ----------
    bank
        (M, F) training feature vectors (M >= n_ref).
    cost_scale
        Divisor of the squared-distance cost before Sinkhorn (see module docs);
        ``None`` takes the median bank-vs-bank squared distance.
    eps
        Entropic regularisation (relative to ``cost_scale``).
    n_ref
        Training vectors per repeat (20 in the paper).
    n_repeats
        Repeats for set scores (1000 in the paper).
    frame_repeats
        Repeats for single-frame scores.
    max_iter
        Sinkhorn iterations.
    seed
        Seed of the reference subsets.
    thresholds
        ``{"frame": Thresholds, "set": Thresholds}`` from :meth:`calibrate` or metadata.
    """

    def __init__(
        self,
        bank: np.ndarray,
        cost_scale: float | None = None,
        eps: float = 0.1,
        n_ref: int = 20,
        n_repeats: int = 1000,
        frame_repeats: int = 1000,
        max_iter: int = 100,
        seed: int = 0,
        thresholds: dict[str, Thresholds] | None = None,
    ):
        bank = np.ascontiguousarray(bank, dtype=np.float32)
        if bank.ndim != 2 or len(bank) < n_ref:
            raise ValueError(f"bank must be (M >= {n_ref}, F), got {bank.shape}")
        self.bank = bank
        self.bank_sq = np.einsum("ij,ij->i", bank, bank, dtype=np.float64).astype(np.float32)
        import torch

        # matrix products through torch: it honours torch.set_num_threads, while numpy's
        # multi-threaded BLAS can run 30x slower on a shared, busy CPU
        self._bank_t = torch.from_numpy(bank)
        self.eps = float(eps)
        self.n_ref = int(n_ref)
        self.n_repeats = int(n_repeats)
        self.frame_repeats = int(frame_repeats)
        self.max_iter = int(max_iter)
        self.seed = int(seed)
        rng = np.random.default_rng(seed)
        m = len(bank)
        self._frame_idx = np.stack([rng.choice(m, n_ref, replace=False) for _ in range(self.frame_repeats)])
        if cost_scale is None:
            d = self.sqdist(bank[: min(m, 200)])
            cost_scale = float(np.median(d[d > 0])) if (d > 0).any() else 1.0
        self.cost_scale = float(cost_scale)
        self.thresholds = dict(thresholds or {})

    # ------------------------------------------------------------------ basics
    def sqdist(self, feats: np.ndarray) -> np.ndarray:
        """(N, M) squared Euclidean distances between *feats* and the bank."""
        import torch

        feats = np.ascontiguousarray(feats, dtype=np.float32)
        sq = np.einsum("ij,ij->i", feats, feats)
        with torch.inference_mode():
            cross = (torch.from_numpy(feats) @ self._bank_t.T).numpy()
        d = sq[:, None] + self.bank_sq[None, :] - 2.0 * cross
        return np.maximum(d, 0.0)

    def _sinkhorn(self, costs: np.ndarray) -> np.ndarray:
        """Batched entropic OT cost <T, C> for (B, n, m) costs in original units."""
        import ot

        res = ot.solve_batch(
            costs / self.cost_scale, reg=self.eps, method="log_sinkhorn", max_iter=self.max_iter, tol=1e-6
        )
        return np.asarray(res.value_linear, dtype=np.float64) * self.cost_scale

    # ------------------------------------------------------------------ scores
    def frame_score_repeats(self, feats: np.ndarray, chunk: int = 64) -> np.ndarray:
        """(N, frame_repeats) Sinkhorn values of each frame vs the fixed reference subsets."""
        feats = np.atleast_2d(np.asarray(feats, dtype=np.float32))
        out = np.empty((len(feats), self.frame_repeats))
        for s in range(0, len(feats), chunk):
            d = self.sqdist(feats[s : s + chunk])  # (n, M)
            costs = d[:, self._frame_idx]  # (n, R, n_ref)
            n = len(d)
            vals = self._sinkhorn(costs.reshape(n * self.frame_repeats, self.n_ref, 1))
            out[s : s + chunk] = vals.reshape(n, self.frame_repeats)
        return out

    def frame_scores(self, feats: np.ndarray) -> np.ndarray:
        """(N,) per-frame scores (mean over the repeats)."""
        return self.frame_score_repeats(feats).mean(axis=1)

    def set_distribution(
        self,
        feats: np.ndarray,
        n_repeats: int | None = None,
        seed: int = 0,
        n_query: int | None = None,
        chunk: int = 250,
    ) -> np.ndarray:
        """Sinkhorn values between 20 random reference vectors and 20 random frames of the set.

        Parameters
        ----------
        feats
            (N, F) features of the set (all of them are used when N < n_query).
        n_repeats
            Number of repeats (default ``self.n_repeats``).
        seed
            Seed of the random subsets.
        n_query
            Frames of the set per repeat (default ``n_ref``).
        """
        feats = np.atleast_2d(np.asarray(feats, dtype=np.float32))
        n_repeats = n_repeats or self.n_repeats
        n_query = min(n_query or self.n_ref, len(feats))
        rng = np.random.default_rng(seed)
        d = self.sqdist(feats)  # (N, M)
        m = len(self.bank)
        ref_idx = np.stack([rng.choice(m, self.n_ref, replace=False) for _ in range(n_repeats)])
        q_idx = np.stack([rng.choice(len(feats), n_query, replace=False) for _ in range(n_repeats)])
        values = np.empty(n_repeats)
        for s in range(0, n_repeats, chunk):
            r = ref_idx[s : s + chunk]
            q = q_idx[s : s + chunk]
            costs = d[q[:, None, :], r[:, :, None]]  # (b, n_ref, n_query)
            values[s : s + chunk] = self._sinkhorn(costs)
        return values

    def set_summary(self, feats: np.ndarray, seed: int = 0, n_repeats: int | None = None) -> dict[str, Any]:
        """{mean, std, zone, n} of :meth:`set_distribution`, zone from the 'set' thresholds."""
        vals = self.set_distribution(feats, n_repeats=n_repeats, seed=seed)
        mean = float(vals.mean())
        zone = self.thresholds["set"].zone(mean) if "set" in self.thresholds else None
        return {"mean": mean, "std": float(vals.std()), "zone": zone, "n": int(len(np.atleast_2d(feats)))}

    def frame_zones(self, scores: np.ndarray) -> list[str]:
        """Zone of each frame score (needs calibrated 'frame' thresholds)."""
        if "frame" not in self.thresholds:
            raise ValueError("domain score thresholds are not calibrated")
        t = self.thresholds["frame"]
        return [t.zone(float(s)) for s in np.atleast_1d(scores)]

    # ------------------------------------------------------------- calibration
    def calibrate(self, train_feats: np.ndarray, ood_feats: np.ndarray, seed: int = 0) -> dict[str, Any]:
        """Set thresholds from held-out training features and an OOD control.

        trustworthy <= 95th percentile of train-vs-train, untrustworthy >= 5th
        percentile of OOD-vs-train, per level.  If the two overlap the untrustworthy
        bound is raised to the trustworthy one (no expert zone) and this is reported.

        Returns
        -------
        dict
            Calibration summary (percentiles and the overlap flags) for the metadata.
        """
        info: dict[str, Any] = {}
        f_train = self.frame_scores(train_feats)
        f_ood = self.frame_scores(ood_feats)
        s_train = self.set_distribution(train_feats, seed=seed)
        s_ood = self.set_distribution(ood_feats, seed=seed + 1)
        for level, tr, od in (("frame", f_train, f_ood), ("set", s_train, s_ood)):
            trust = float(np.percentile(tr, 95))
            untrust = float(np.percentile(od, 5))
            overlap = untrust <= trust
            if overlap:
                untrust = trust
            self.thresholds[level] = Thresholds(trust, untrust)
            info[level] = {
                "trustworthy": trust,
                "untrustworthy": untrust,
                "overlap": overlap,
                "train_mean": float(tr.mean()),
                "ood_mean": float(od.mean()),
                "n_train": len(tr),
                "n_ood": len(od),
            }
        return info

    # ------------------------------------------------------------- persistence
    def settings(self) -> dict[str, Any]:
        """JSON-serialisable settings (everything but the bank)."""
        return {
            "eps": self.eps,
            "n_ref": self.n_ref,
            "n_repeats": self.n_repeats,
            "frame_repeats": self.frame_repeats,
            "max_iter": self.max_iter,
            "seed": self.seed,
            "cost_scale": self.cost_scale,
            "cost": "squared euclidean",
            "solver": "ot.solve_batch(method='log_sinkhorn')",
            "thresholds": {k: asdict(v) for k, v in self.thresholds.items()},
        }

    @classmethod
    def from_settings(cls, bank: np.ndarray, settings: dict[str, Any], **overrides: Any) -> DomainScorer:
        """Rebuild from :meth:`settings` and the bank."""
        kw = {k: settings[k] for k in ("eps", "n_ref", "n_repeats", "frame_repeats", "max_iter", "seed", "cost_scale")}
        kw.update(overrides)
        thresholds = {k: Thresholds(**v) for k, v in settings.get("thresholds", {}).items()}
        return cls(bank, thresholds=thresholds, **kw)
