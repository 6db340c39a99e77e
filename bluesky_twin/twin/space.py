"""The hyper-parameter search space of the twin (Terashima et al. 2023 defaults)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

#: final-ensemble epoch floor
DEFAULT_FINAL_EPOCHS = 150
#: the directions :attr:`TwinSearchSpace.monotone` can hold an axis to
MONOTONE_DIRECTIONS = ("increasing", "decreasing")


@dataclass
class TwinSearchSpace:
    """Ranges Optuna's TPE sampler searches over, and the fixed training schedule.

    The defaults follow the paper: 2-10 hidden layers of 50-200 nodes, Adam with a
    log-uniform learning rate in 5e-4..5e-3, a batch size of 16..1024 (capped by the
    data size), at most 500 epochs with the learning rate divided by 5 after 100.

    Attributes
    ----------
    n_layers, n_units
        Inclusive integer ranges for depth and width.
    small_data_max_units, small_data_rows
        Widest hidden layer searched on data sets of fewer than ``small_data_rows``
        rows: :meth:`resolved` caps the upper end of ``n_units`` there (``None``: no
        cap, the paper's 50-200).  A step's cost grows with the square of the width.
        Measured (docs/twin.md, "Network width on small scans"): on the 808-point
        ErCo2 scan the narrower range fits in about two thirds of the time with a
        lower between-line error and seed spread; on the 2737-point Fe3Ga4 scan it
        doubled the seed spread of the dS_M curves, hence the row limit.
    lr
        Log-uniform learning-rate range.
    batch_size
        Log-uniform batch-size range; the upper end is capped by the training-set size.
    weight_decay
        Log-uniform L2 weight-decay range (Adam ``weight_decay``).
    dropout
        Uniform dropout range; ``(0, 0)`` disables dropout.
    activations
        Candidate activations.
    max_epochs, lr_drop_epoch, lr_drop_factor
        Training schedule.
    patience
        Early-stopping patience in epochs (on the held-out-lines validation loss).
    max_steps_per_epoch
        An epoch is at most this many optimiser steps (``0`` disables): the
        smallest batch size is raised to ``n / max_steps_per_epoch`` and, where even
        the largest batch cannot cover the data in that many steps, each epoch
        trains on a fresh random subset.  Small MLPs pay a per-step overhead, so
        this bounds a trial's cost; with the width cap below it departs from the
        paper's space (for 808 points the smallest batch becomes 68; for the 30k-point
        ARPES map an epoch sees 8192 random points).
    min_final_epochs
        Floor on the epochs of the final all-data ensemble (the search's best
        epoch is used when larger); ``None``: 150.  Raised (e.g. 250 with full-pass
        final epochs) it fits the measured lines of a large map more tightly at some
        cost between them (docs/twin.md, "Fitting the lines more tightly").
    encodings
        Candidate input encodings: ``"raw"`` (the standardised coordinates, as in
        the paper) and ``"fourier"`` (plus ``fourier_features`` random Fourier
        features, see :class:`~bluesky_twin.twin.network.BatchedMLP`).
    fourier_scale
        Log-uniform range of the Fourier frequencies' standard deviation.
    fourier_per_axis
        Search one scale per input axis (``fourier_scale_0``, ``fourier_scale_1``,
        ...) instead of one for all: scan data are dense along the swept axis and
        coarse along the stepped one, so the structure a network can follow differs
        per axis.  ``"auto"`` (default): per axis on large maps (at least
        :data:`~bluesky_twin.twin.LARGE_DATA_ROWS` rows, where a line holds
        hundreds of points), one scale otherwise.  Measured (docs/twin.md): on the
        30k-point ARPES map it fits the lines better *and* scores better on held-out
        lines; on the 808-point ErCo2 scan the search once picked a per-axis
        configuration whose dS_M curve was far less smooth.
    fourier_features
        Number of Fourier frequencies when that encoding is drawn.
    final_steps_per_epoch
        Cap on optimiser steps per epoch of the final all-data ensemble (``0``: full
        passes; ``None``: ``max_steps_per_epoch``, the search's own epochs, for which
        its best epoch was chosen on held-out lines).  On a large map, where capped
        epochs are random subsets, ``0`` with a higher ``min_final_epochs`` raises the
        training fit: on ARPES R^2 0.97-0.98 instead of 0.945-0.958, but with 7-12 %
        more between-line error (docs/twin.md), so it is not the default.
    line_residual
        Add a :class:`~bluesky_twin.twin.line_residual.LineResidual` correction: the
        networks' residual on each measured line, smoothed along the line (width by
        leave-one-out), kept on the line and carried to the space between lines only
        as far as each line's neighbours predict it.  ``"auto"`` (default): on large
        two-axis maps (at least
        :data:`~bluesky_twin.twin.LARGE_DATA_ROWS` rows), where a line holds
        hundreds of points and the networks, tuned on held-out lines, leave sharp
        detail along the lines; off on small scans, whose derived quantities
        (dM/dT) want the networks' smoothness.
    input_scales
        Column name to the scale it is read on before standardisation, one of
        ``"linear"`` (default for a column not named) and ``"sqrt"`` (the signed square
        root, :data:`~bluesky_twin.twin._scaler.INPUT_SCALES`).  ``"sqrt"`` on the field
        of an M(T, H) scan spreads the low fields, where magnetisation changes fastest
        and coarse scans put most of their lines.  Measured (docs/twin.md, "Input
        scales"): on ErCo2 it narrows the seed spread of the dS_M curve from 3.01 % to
        1.80 % and lowers the dS_M error against the simulated magnetometer's truth; on
        Fe3Ga4, whose transition moves far with field, it widens the spread, so it is a
        choice per sample, not a default.  A warm start keeps its twin's scales.
    monotone
        Column name to the direction the modelled quantity runs along it, one of
        ``"increasing"`` and ``"decreasing"``
        (:data:`MONOTONE_DIRECTIONS`); a column not named is
        free.  Every network then trains with a
        :class:`~bluesky_twin.twin.training.MonotonePenalty` on slopes that run the
        wrong way between the data.  For a magnetisation M(T, H) the field is
        ``"increasing"`` (a sample in equilibrium has no negative susceptibility).
        Measured (docs/twin.md, "Monotone axes"): on Fe3Ga4, whose first-order
        transition crosses the wide gap between the 1 T and 2 T lines, networks
        otherwise overshoot the 2 T line inside the gap, each seed its own way.
    precision
        Training precision: ``"auto"`` (bfloat16 matrix products for data sets of at
        least :data:`~bluesky_twin.twin.LARGE_DATA_ROWS` rows on a CPU with native
        bfloat16, else float32), ``"float32"`` or ``"bfloat16"``.  Weights, optimiser
        state and predictions stay float32 either way.
    """

    n_layers: tuple[int, int] = (2, 10)
    n_units: tuple[int, int] = (50, 200)
    small_data_max_units: int | None = 128
    small_data_rows: int = 2000
    lr: tuple[float, float] = (5e-4, 5e-3)
    batch_size: tuple[int, int] = (16, 1024)
    weight_decay: tuple[float, float] = (1e-8, 1e-3)
    dropout: tuple[float, float] = (0.0, 0.0)
    activations: tuple[str, ...] = ("relu", "silu", "tanh")
    max_epochs: int = 500
    lr_drop_epoch: int = 100
    lr_drop_factor: float = 5.0
    patience: int = 30
    max_steps_per_epoch: int = 8
    min_final_epochs: int | None = None
    encodings: tuple[str, ...] = ("raw", "fourier")
    fourier_scale: tuple[float, float] = (0.5, 8.0)
    fourier_per_axis: bool | str = "auto"
    fourier_features: int = 64
    final_steps_per_epoch: int | None = None
    precision: str = "auto"
    line_residual: bool | str = "auto"
    input_scales: dict[str, str] = field(default_factory=dict)
    monotone: dict[str, str] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def capped(cls, max_epochs: int) -> TwinSearchSpace:
        """The default space with training capped at *max_epochs*, the schedule shortened to fit.

        The learning-rate drop and the final ensemble's epoch floor move down to
        *max_epochs* when they lie beyond it (the ``--max-epochs`` of ``replay`` and
        ``trainer serve``).

        Examples
        --------
        >>> s = TwinSearchSpace.capped(15)
        >>> (s.max_epochs, s.lr_drop_epoch, s.min_final_epochs)
        (15, 15, 15)
        """
        default = cls()
        return replace(
            default,
            max_epochs=max_epochs,
            lr_drop_epoch=min(default.lr_drop_epoch, max_epochs),
            min_final_epochs=min(DEFAULT_FINAL_EPOCHS, max_epochs),
        )

    def resolved(self, n_rows: int, large_rows: int) -> TwinSearchSpace:
        """A copy with the data-dependent defaults settled for *n_rows* rows.

        ``fourier_per_axis="auto"``, ``final_steps_per_epoch=None``,
        ``min_final_epochs=None``, ``precision="auto"`` and ``line_residual="auto"``
        become concrete values (data sets of at least *large_rows* rows count as
        large maps), and below ``small_data_rows`` rows ``n_units`` is capped at
        ``small_data_max_units``; the result is what a fit records, with the cap
        settled (``small_data_max_units=None``), so a warm start searches the same
        widths whatever its data size.

        Raises
        ------
        ValueError
            For an unknown ``precision``, ``fourier_per_axis`` or ``line_residual`` value.
        """
        from bluesky_twin.twin._scaler import INPUT_SCALES
        from bluesky_twin.twin.training import resolve_precision

        large = n_rows >= large_rows
        if not isinstance(self.input_scales, dict) or not all(
            isinstance(k, str) and v in INPUT_SCALES for k, v in self.input_scales.items()
        ):
            raise ValueError(
                f"input_scales must map column names to one of {list(INPUT_SCALES)}, got {self.input_scales!r}"
            )
        if not isinstance(self.monotone, dict) or not all(
            isinstance(k, str) and v in MONOTONE_DIRECTIONS for k, v in self.monotone.items()
        ):
            raise ValueError(
                f"monotone must map column names to one of {list(MONOTONE_DIRECTIONS)}, got {self.monotone!r}"
            )
        out = replace(self, extra=dict(self.extra), input_scales=dict(self.input_scales), monotone=dict(self.monotone))
        if self.fourier_per_axis == "auto":
            out.fourier_per_axis = large
        elif not isinstance(self.fourier_per_axis, bool):
            raise ValueError(f"fourier_per_axis must be True, False or 'auto', got {self.fourier_per_axis!r}")
        if self.line_residual == "auto":
            out.line_residual = large
        elif not isinstance(self.line_residual, bool):
            raise ValueError(f"line_residual must be True, False or 'auto', got {self.line_residual!r}")
        if self.final_steps_per_epoch is None:
            out.final_steps_per_epoch = self.max_steps_per_epoch
        if self.min_final_epochs is None:
            out.min_final_epochs = DEFAULT_FINAL_EPOCHS
        out.precision = resolve_precision(self.precision, n_rows, large_rows)
        if self.small_data_max_units is not None:
            cap = int(self.small_data_max_units)
            if cap < 1:
                raise ValueError(f"small_data_max_units must be a positive width or None, got {cap}")
            if int(self.small_data_rows) < 0:
                raise ValueError(f"small_data_rows must be a row count >= 0, got {self.small_data_rows}")
            if n_rows < self.small_data_rows:
                hi = min(self.n_units[1], cap)
                out.n_units = (min(self.n_units[0], hi), hi)
            out.small_data_max_units = None
        return out

    @property
    def final_step_cap(self) -> int:
        """Optimiser-step cap of a final-ensemble epoch (``0``: full passes)."""
        return self.max_steps_per_epoch if self.final_steps_per_epoch is None else int(self.final_steps_per_epoch)

    def batch_bounds(self, n_train: int) -> tuple[int, int]:
        """Batch-size range for a training set of *n_train* points."""
        hi = max(1, min(self.batch_size[1], n_train))
        lo = min(self.batch_size[0], hi)
        if self.max_steps_per_epoch:
            lo = max(lo, min(hi, -(-n_train // self.max_steps_per_epoch)))
        return lo, hi

    def suggest(self, trial: Any, n_train: int, n_in: int = 1) -> dict[str, Any]:
        """Draw one configuration from an :class:`optuna.trial.Trial` (``n_in`` input axes)."""
        lo, hi = self.batch_bounds(n_train)
        params: dict[str, Any] = {
            "n_layers": trial.suggest_int("n_layers", *self.n_layers),
            "n_units": trial.suggest_int("n_units", *self.n_units),
            "lr": trial.suggest_float("lr", *self.lr, log=True),
            "batch_size": trial.suggest_int("batch_size", lo, hi, log=True) if hi > lo else hi,
            "weight_decay": trial.suggest_float("weight_decay", *self.weight_decay, log=True),
            "activation": trial.suggest_categorical("activation", list(self.activations)),
        }
        encoding = (
            trial.suggest_categorical("encoding", list(self.encodings))
            if len(self.encodings) > 1
            else self.encodings[0]
        )
        if encoding == "fourier":
            params["fourier_features"] = int(self.fourier_features)
            if self.fourier_per_axis is True and n_in > 1:  # "auto" is settled by resolved()
                params["fourier_scale"] = [
                    trial.suggest_float(f"fourier_scale_{i}", *self.fourier_scale, log=True) for i in range(n_in)
                ]
            else:
                params["fourier_scale"] = trial.suggest_float("fourier_scale", *self.fourier_scale, log=True)
        elif encoding != "raw":
            raise ValueError(f"unknown input encoding {encoding!r} (expected 'raw' or 'fourier')")
        if self.dropout[1] > 0:
            params["dropout"] = trial.suggest_float("dropout", *self.dropout)
        else:
            params["dropout"] = 0.0
        return params

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k, v in d.items():
            if isinstance(v, tuple):
                d[k] = list(v)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TwinSearchSpace:
        # a recorded space is resolved: a twin saved before the width cap existed
        # searched the widths its n_units says
        kw: dict[str, Any] = {"small_data_max_units": None}
        for k, v in d.items():
            if k not in cls.__dataclass_fields__:
                continue
            kw[k] = tuple(v) if isinstance(v, list) else v
        return cls(**kw)
