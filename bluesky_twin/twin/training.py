"""The training loop of a :class:`~bluesky_twin.twin.network.BatchedMLP`.

Each member trains on its own subset of the rows (one subset per
cross-validation fold during the search, all rows for the final ensemble).  The
whole data set stays in memory as one tensor; mini-batches are gathered by
index, so there is no DataLoader and no per-sample Python.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from bluesky_twin.twin.network import BatchedMLP


class PruneSignal(Exception):
    """Raised by a report hook to abandon a trial (translated to optuna.TrialPruned)."""


@dataclass
class TrainResult:
    """Outcome of :func:`train_members`."""

    model: BatchedMLP
    best_val_loss: float
    best_epoch: int
    epochs_run: int
    history: list[float]
    time_limited: bool = False
    #: optimiser steps each member took, and the wall seconds spent in them (no validation)
    steps: int = 0
    step_seconds: float = 0.0


#: the training precisions :func:`train_members` accepts
PRECISIONS = ("float32", "bfloat16")


#: weight of :class:`MonotonePenalty` against the data's mean squared error (standardised units)
MONOTONE_WEIGHT = 10.0


@dataclass(frozen=True)
class MonotonePenalty:
    """A penalty on the prediction running against a known direction along some input axes.

    Physics often fixes the sign of a slope everywhere: the magnetisation of a sample in
    equilibrium never falls as the applied field rises (its susceptibility is not
    negative).  Every optimiser step draws ``points`` random points per member, uniformly
    in the box ``[low, high]`` of the standardised inputs, and adds ``weight`` times the
    mean squared wrong-way slope ``relu(-sign * (f(x + h e) - f(x)) / h)**2`` along each
    axis (``h = step``) to that member's loss.  Data that obey the direction never pay
    it; between two measured lines far apart it stops a network from overshooting the
    next line and coming back, the seed-dependent shape that a derived quantity
    integrated across the gap (dS_M) would otherwise inherit (docs/twin.md, "Monotone
    axes").

    Attributes
    ----------
    axes
        ``(column, sign)`` pairs: the input column and ``+1`` (increasing) or ``-1``
        (decreasing).
    weight
        Weight of the mean squared wrong-way slope against the data's mean squared
        error, both in standardised units.
    low, high
        ``(d,)`` corners of the box the points are drawn in.
    step
        Finite-difference step ``h``, in standardised units.
    points
        Points drawn per member and step.
    """

    axes: tuple[tuple[int, int], ...]
    weight: float
    low: torch.Tensor
    high: torch.Tensor
    step: float = 0.05
    points: int = 64

    @classmethod
    def over(
        cls, X: torch.Tensor, names: Sequence[str], directions: Mapping[str, str], weight: float = MONOTONE_WEIGHT
    ) -> MonotonePenalty | None:
        """The penalty over the box of the standardised rows *X* (``None`` when no axis has a direction).

        *names* are the columns of *X*; *directions* maps some of them to one of
        :data:`~bluesky_twin.twin.space.MONOTONE_DIRECTIONS` (the others are free).
        """
        axes = tuple((i, 1 if directions[n] == "increasing" else -1) for i, n in enumerate(names) if n in directions)
        if not axes or not weight:
            return None
        return cls(axes, float(weight), X.min(dim=0).values, X.max(dim=0).values)

    def probes(self, members: int, gen: torch.Generator) -> torch.Tensor:
        """``(members, (1 + len(axes)) * points, d)`` inputs: the points, then the points stepped along each axis."""
        u = torch.rand(members, self.points, len(self.low), generator=gen)
        x = self.low + u * (self.high - self.low)
        stepped = []
        for axis, _ in self.axes:
            shift = torch.zeros(len(self.low))
            shift[axis] = self.step
            stepped.append(x + shift)
        return torch.cat([x, *stepped], dim=1)

    def loss(self, out: torch.Tensor) -> torch.Tensor:
        """Per-member penalty ``(members,)`` from the predictions at :meth:`probes`, ``(members, n, 1)``."""
        at, *stepped = out.float().split(self.points, dim=1)
        total = torch.zeros(out.shape[0])
        for (_, sign), on in zip(self.axes, stepped):
            wrong_way = torch.relu(-sign * (on - at) / self.step)
            total = total + (wrong_way**2).mean(dim=(1, 2))
        return self.weight * total


def native_bfloat16() -> bool:
    """True when this CPU multiplies bfloat16 matrices in hardware (AVX512-BF16 or AMX).

    Elsewhere oneDNN emulates bfloat16 and it is no faster than float32, so
    :func:`resolve_precision` keeps float32 there.
    """
    import torch

    try:
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except (AttributeError, RuntimeError):  # private helpers: absent in other torch builds
        return False


def resolve_precision(precision: str, n_rows: int, large_rows: int) -> str:
    """The training precision :func:`train_members` should use.

    ``"auto"`` picks ``"bfloat16"`` for data sets of at least *large_rows* rows on a
    CPU with native bfloat16 (there the networks are compute-bound, and the matrix
    products run about 3x faster: 12.8 against 38.2 ms a step for two 6 x 194 members
    at batch 1024 on this project's 2-core AMD EPYC, ``benchmarks/bench_precision.py``),
    else ``"float32"``.  Small data
    sets are dominated by per-step overhead and gain nothing.
    """
    if precision == "auto":
        return "bfloat16" if n_rows >= large_rows and native_bfloat16() else "float32"
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be 'auto' or one of {PRECISIONS}, got {precision!r}")
    return precision


def steps_per_epoch(n_rows: int, batch_size: int, max_steps: int = 0) -> int:
    """Optimiser steps of one epoch over *n_rows* rows (at most *max_steps* when given)."""
    steps = max(1, math.ceil(n_rows / max(1, batch_size)))
    return min(steps, max_steps) if max_steps else steps


def deadline_passed(deadline: float | Callable[[], float | None] | None) -> bool:
    """True once :func:`time.monotonic` has passed *deadline* (a time, a callable giving one, or None)."""
    limit = deadline() if callable(deadline) else deadline
    return limit is not None and time.monotonic() > limit


def _member_batches(
    train_idx: Sequence[torch.Tensor], batch_size: int, gen: torch.Generator, max_steps: int = 0
) -> torch.Tensor:
    """Index tensor ``(members, steps * batch_size)``: a fresh permutation per member.

    Members with fewer rows than the longest one cycle through a second permutation,
    so every member takes the same number of optimiser steps per epoch.  With
    ``max_steps`` an epoch is at most that many steps: on large data sets an epoch
    then sees a fresh random subset of ``max_steps * batch_size`` rows.
    """
    steps = steps_per_epoch(max(len(t) for t in train_idx), batch_size, max_steps)
    total = steps * batch_size
    rows = []
    for idx in train_idx:
        reps = math.ceil(total / len(idx))
        perm = torch.cat([idx[torch.randperm(len(idx), generator=gen)] for _ in range(reps)])
        rows.append(perm[:total])
    return torch.stack(rows)


def train_members(
    model: BatchedMLP,
    X: torch.Tensor,
    y: torch.Tensor,
    train_idx: Sequence[torch.Tensor],
    val_idx: Sequence[torch.Tensor] | None,
    *,
    lr: float,
    batch_size: int,
    weight_decay: float = 0.0,
    max_epochs: int = 500,
    lr_drop_epoch: int = 100,
    lr_drop_factor: float = 5.0,
    patience: int = 40,
    generator: torch.Generator | None = None,
    report: Callable[[int, float], None] | None = None,
    report_every: int = 5,
    max_steps_per_epoch: int = 0,
    deadline: float | Callable[[], float | None] | None = None,
    precision: str = "float32",
    monotone: MonotonePenalty | None = None,
) -> TrainResult:
    """Train every member of *model* with Adam and an MSE loss.

    Parameters
    ----------
    model
        The batched network; ``model.members`` must equal ``len(train_idx)``.
    X, y
        Standardised inputs ``(n, d)`` and targets ``(n, 1)``.
    train_idx, val_idx
        Row indices per member.  With ``val_idx=None`` there is no early stopping
        and training runs for exactly ``max_epochs``.
    lr, batch_size, weight_decay
        Optimiser settings.
    max_epochs, lr_drop_epoch, lr_drop_factor
        The schedule: the learning rate is divided by ``lr_drop_factor`` once
        ``lr_drop_epoch`` epochs have run.
    patience
        Stop when the mean validation loss has not improved for this many epochs;
        the best weights are restored.
    report
        ``report(epoch, val_loss)`` called every ``report_every`` epochs; may raise
        :class:`PruneSignal` to stop.
    max_steps_per_epoch
        Cap on optimiser steps per epoch (``0``: a full pass).
    deadline
        A :func:`time.monotonic` time after which training stops early (the best
        weights so far are kept; without validation, the current ones);
        ``TrainResult.time_limited`` tells.  A callable
        is asked once per epoch, so the deadline may move while training runs.
    precision
        ``"float32"``, or ``"bfloat16"``: the forward and backward matrix products run
        under CPU autocast in bfloat16 while weights, optimiser state and the loss
        stay in float32 (see :func:`resolve_precision`); the validation pass runs
        under the same autocast.
    monotone
        A :class:`MonotonePenalty` added to every step's loss (``None``: the mean
        squared error alone).  Its points come from *generator*, after the batches.

    Returns
    -------
    TrainResult
    """
    if model.members != len(train_idx):
        raise ValueError("one train index set per member is required")
    gen = generator or torch.Generator().manual_seed(0)
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    low_precision = precision == "bfloat16"
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay, foreach=True)
    members = model.members
    if val_idx is not None:
        v_max = max(len(v) for v in val_idx)
        # pad validation rows per member; padded entries get zero weight
        v_rows = torch.zeros(members, v_max, dtype=torch.long)
        v_w = torch.zeros(members, v_max, 1)
        for m, v in enumerate(val_idx):
            v_rows[m, : len(v)] = v
            v_w[m, : len(v)] = 1.0 / len(v)
        Xv, yv = X[v_rows], y[v_rows]
    best = math.inf
    best_epoch = 0
    best_state: list[torch.Tensor] | None = None
    history: list[float] = []
    epoch = 0
    time_limited = False
    steps, step_seconds = 0, 0.0
    for epoch in range(1, max_epochs + 1):
        if epoch == lr_drop_epoch + 1:
            for g in opt.param_groups:
                g["lr"] = lr / lr_drop_factor
        model.train()
        step_start = time.perf_counter()
        order = _member_batches(train_idx, batch_size, gen, max_steps_per_epoch)
        Xe, ye = X[order], y[order]
        for s in range(0, order.shape[1], batch_size):
            xb = Xe[:, s : s + batch_size]
            yb = ye[:, s : s + batch_size]
            opt.zero_grad(set_to_none=True)
            if monotone is not None:  # one forward pass over the batch and the probes
                xb = torch.cat([xb, monotone.probes(members, gen)], dim=1)
            # sum over members of each member's mean loss: members stay independent
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=low_precision):
                out = model(xb)
            if monotone is None:
                loss = ((out.float() - yb) ** 2).mean(dim=(1, 2)).sum()
            else:
                n = yb.shape[1]
                loss = (((out[:, :n].float() - yb) ** 2).mean(dim=(1, 2)) + monotone.loss(out[:, n:])).sum()
            loss.backward()
            opt.step()
            steps += 1
        step_seconds += time.perf_counter() - step_start
        if val_idx is None:
            if deadline_passed(deadline):
                time_limited = True
                break
            continue
        model.eval()
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=low_precision):
            per_member = (((model(Xv).float() - yv) ** 2) * v_w).sum(dim=(1, 2))
            val = float(per_member.mean())
        if not math.isfinite(val):
            break
        history.append(val)
        if val < best:
            best, best_epoch = val, epoch
            best_state = [p.detach().clone() for p in model.parameters()]
        elif epoch - best_epoch >= patience:
            break
        if report is not None and epoch % report_every == 0:
            report(epoch, best)
        if deadline_passed(deadline):
            time_limited = True
            break
    if best_state is not None:
        with torch.no_grad():
            for p, b in zip(model.parameters(), best_state):
                p.copy_(b)
    if val_idx is None:
        best_epoch = epoch
    model.eval()
    return TrainResult(model, best, best_epoch, epoch, history, time_limited, steps, step_seconds)


def line_folds(X: np.ndarray, n_folds: int = 3, seed: int = 0) -> tuple[int, list[np.ndarray]]:
    """Cross-validation folds that hold out whole scan lines.

    Scan data are dense along the swept axis and coarse along the stepped one.  The
    stepped ("line") axis is the one with the fewest distinct values.  Interior lines
    (never the first or last, which would test extrapolation) are dealt to the folds
    in sorted order with a stride of ``n_folds`` (the seed rotates the start), so a
    held-out line always keeps both neighbours: every fold tests interpolation across
    one missing line, the job the twin does between measured lines.  With fewer than
    three interior lines the folds fall back to random rows.

    Returns
    -------
    line_axis, folds
        The index of the line axis (``-1`` for the random-row fallback) and, per fold,
        the row indices held out.
    """
    n = len(X)
    rng = np.random.default_rng(seed)
    counts = [len(np.unique(X[:, j])) for j in range(X.shape[1])]
    axis = int(np.argmin(counts))
    lines = np.unique(X[:, axis])
    if X.shape[1] >= 2 and len(lines) - 2 >= max(3, n_folds) and counts[axis] <= n // 4:
        interior = lines[1:-1]
        k = min(n_folds, len(interior))
        shift = seed % k
        folds = []
        for f in range(k):
            chosen = interior[(f + shift) % k :: k]
            folds.append(np.flatnonzero(np.isin(X[:, axis], chosen)))
        return axis, folds
    perm = rng.permutation(n)
    return -1, [np.sort(perm[f::n_folds]) for f in range(n_folds)]
