"""Twin-backed instruments: rehearse a plan on a saved :class:`~bluesky_twin.twin.DigitalTwin`.

A twin-backed instrument is the simulated instrument it stands in for (same
positioners, limits, ramp rates, settle times, acquisition time, component names and
data keys), except that its detector reads the twin: the ensemble mean at the current
positions plus seeded Gaussian noise at the level of the twin's training residuals.
Load the twin of last week's sample and run tonight's plan on it, with the same plan
code and the same data keys::

    from bluesky_twin.sim import twin_instrument

    mpms = twin_instrument("twins/ErCo2", "magnetometer", name="mpms", seed=0,
                           inputs={"T": "temperature", "H": "field"}, input_scale={"H": 1e4})
    RE(coarse_to_fine([mpms], mpms.temperature, 26, 44, 19, mpms.field, [0, 1, 2], trainer=trainer))
    mpms.truth(T, H)          # the twin's noiseless mean: what a benchmark scores against
    mpms.elapsed_time         # simulated instrument seconds the rehearsal cost

Noise level
-----------
Unless ``noise=`` is given, the noise is the RMS of the twin's residuals on its own
training data, derived from the twin's metadata: ``y_std * sqrt(1 - train_r2)``, with
``y_std`` the (population) standard deviation of the training outputs that the twin's
output scaler stores and ``train_r2`` the R^2 of the fitted twin (line-residual
correction included) on the same data.  That is exact for a twin fitted from scratch.
A warm-started twin keeps its parent's scaler, so its ``y_std`` is the parent data's
and the level is an estimate; :func:`training_noise` with the training data gives the
exact value.

The prediction runs on a worker thread of the device, never on the RunEngine's
thread; readings stay reproducible because that worker is a single thread fed in
trigger order.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from ophyd import Component as Cpt
from ophyd.status import DeviceStatus

from ..errors import InputError
from .arpes import ArpesManipulator
from .base import SimInstrument, as_float_array, finish_after
from .magnetometer import Magnetometer
from .signals import MeasuredSignal
from .transport import TransportCell

__all__ = [
    "TWIN_KINDS",
    "TwinArpesManipulator",
    "TwinInstrument",
    "TwinMagnetometer",
    "TwinTransportCell",
    "metadata_noise",
    "training_noise",
    "twin_instrument",
]


def metadata_noise(twin: Any) -> float:
    """RMS of a twin's residuals on its training data, from its metadata.

    ``y_std * sqrt(1 - train_r2)``: ``y_std`` is the output scaler's standard deviation
    (``metadata["y_scaler"]["scale"]``) and ``train_r2`` the fitted twin's R^2 on its
    training data (``metadata["train_r2"]``).

    Raises
    ------
    InputError
        The twin carries no such metadata (give ``noise=`` instead).
    """
    meta = getattr(twin, "metadata", None)
    try:
        scale = float(np.asarray(meta["y_scaler"]["scale"], dtype=float).reshape(-1)[0])
        r2 = float(meta["train_r2"])
    except (TypeError, KeyError, IndexError, ValueError):
        raise InputError(
            f"{type(twin).__name__} has no y_scaler/train_r2 metadata to derive its noise level from; give noise="
        ) from None
    if not (math.isfinite(scale) and math.isfinite(r2)):
        raise InputError(
            f"the twin's metadata give no finite noise level (y scale {scale}, train_r2 {r2}); give noise="
        )
    return abs(scale) * math.sqrt(max(0.0, 1.0 - r2))


def training_noise(twin: Any, X: Any, y: Any) -> float:
    """RMS of ``y - twin.predict(X)[0]``: the noise level measured on the training data *X*, *y*.

    Parameters
    ----------
    twin
        Anything with ``predict(X) -> (mean, std)``.
    X
        ``(n, d)`` inputs in the twin's ``x_names`` order and units.
    y
        ``(n,)`` measured outputs.
    """
    X = np.atleast_2d(as_float_array("X", X))
    y = as_float_array("y", y).reshape(-1)
    if len(X) != len(y) or not len(y):
        raise InputError(f"X and y must hold the same, non-zero number of points; got {len(X)} and {len(y)}")
    mean, _ = twin.predict(X)
    return float(np.sqrt(np.mean((y - np.asarray(mean, dtype=float)) ** 2)))


def _load_twin(twin: Any) -> Any:
    if isinstance(twin, (str, os.PathLike)):
        from bluesky_twin.twin import DigitalTwin

        return DigitalTwin.load(twin)
    if not callable(getattr(twin, "predict", None)) or not hasattr(twin, "x_names"):
        raise InputError(f"twin must be a DigitalTwin (or a model directory path); got {type(twin).__name__}")
    return twin


class TwinInstrument(SimInstrument):
    """Mixin of the twin-backed instruments: the detector reads a twin instead of a physics model.

    Use it through :func:`twin_instrument` or one of its concrete classes
    (:class:`TwinMagnetometer`, :class:`TwinTransportCell`, :class:`TwinArpesManipulator`).
    Their keyword arguments are those of the instrument they stand in for plus:

    Parameters
    ----------
    twin
        A :class:`~bluesky_twin.twin.DigitalTwin` (any object with ``predict(X) -> (mean,
        std)`` and ``x_names``), or the path of a model directory to load one from.
    inputs
        ``{twin input name: positioner attribute}`` (e.g. ``{"T": "temperature", "H":
        "field"}``).  Default: each twin input is matched to the positioner whose data key
        (``mpms_temperature``) or attribute name (``temperature``) it is.
    input_scale
        ``{twin input name: factor}``: the twin's input is ``factor * position`` (e.g.
        ``{"H": 1e4}`` for a twin trained in oersted driven by a field positioner in tesla).
    noise
        Standard deviation of the Gaussian reading noise, in the twin's output unit.
        Default: :func:`metadata_noise` (the RMS of the twin's training residuals).

    Attributes
    ----------
    twin
        The twin the detector reads.
    noise_level
        The noise standard deviation in use.
    noise_source
        ``"explicit"`` (given as ``noise=``) or ``"training residual rms"`` (:func:`metadata_noise`).
    inputs
        ``{twin input name: positioner attribute}`` in the twin's input order.
    """

    #: attribute of the detector signal the twin's output is written to
    detector_attr: str = ""

    def __init__(
        self,
        prefix: str = "",
        *,
        name: str,
        twin: Any,
        inputs: Mapping[str, str] | None = None,
        input_scale: Mapping[str, float] | None = None,
        noise: float | None = None,
        **kwargs: Any,
    ) -> None:
        self.twin = _load_twin(twin)
        super().__init__(prefix, name=name, **kwargs)
        self.inputs = self._match_inputs(inputs)
        scale = dict(input_scale or {})
        unknown = sorted(set(scale) - set(self.inputs))
        if unknown:
            raise InputError(
                f"{name}: input_scale names {unknown}, which are not inputs of the twin {list(self.inputs)}"
            )
        self._scale = np.array([float(scale.get(k, 1.0)) for k in self.inputs])
        if not (np.all(np.isfinite(self._scale)) and np.all(self._scale != 0)):
            raise InputError(f"{name}: input_scale factors must be finite and non-zero; got {scale}")
        if noise is None:
            self.noise_level, self.noise_source = metadata_noise(self.twin), "training residual rms"
        else:
            value = float(noise)
            if not (math.isfinite(value) and value >= 0):
                raise InputError(f"{name}: noise must be a finite number >= 0; got {noise!r}")
            self.noise_level, self.noise_source = value, "explicit"
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"{name}-twin")
        self._lock = threading.Lock()

    def _match_inputs(self, inputs: Mapping[str, str] | None) -> dict[str, str]:
        names = [str(x) for x in self.twin.x_names]
        attrs = list(self.positioners)
        if inputs is not None:
            mapping = {str(k): str(v) for k, v in dict(inputs).items()}
            missing = [x for x in names if x not in mapping]
            extra = sorted(set(mapping) - set(names))
            bad = sorted(v for v in mapping.values() if v not in attrs)
            if missing or extra or bad:
                raise InputError(
                    f"{self.name}: inputs must map each twin input {names} to a positioner {attrs}; "
                    f"missing {missing}, unknown inputs {extra}, unknown positioners {bad}"
                )
            return {x: mapping[x] for x in names}
        by_key = {**{a: a for a in attrs}, **{p.name: a for a, p in self.positioners.items()}}
        unmatched = [x for x in names if x not in by_key]
        if unmatched:
            raise InputError(
                f"{self.name}: the twin's inputs {unmatched} are no positioner of this instrument {attrs}; "
                f"give inputs={{{', '.join(f'{x!r}: {a!r}' for x, a in zip(names, attrs))}}}"
            )
        return {x: by_key[x] for x in names}

    # -- ground truth ---------------------------------------------------------------------
    def _twin_points(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> tuple[np.ndarray, tuple[int, ...]]:
        attrs = list(self.positioners)
        if len(args) > len(attrs):
            raise InputError(f"{self.name}: truth() takes at most {len(attrs)} positions {attrs}")
        values = dict(zip(attrs, args))
        for key, value in kwargs.items():
            if key not in attrs or key in values:
                raise InputError(f"{self.name}: truth() got an unknown or repeated position {key!r}")
            values[key] = value
        needed = list(dict.fromkeys(self.inputs.values()))
        missing = [a for a in needed if a not in values]
        if missing:
            raise InputError(f"{self.name}: truth() needs the position(s) {missing}")
        arrays = np.broadcast_arrays(*[as_float_array(a, values[a]) for a in needed])
        by_attr = dict(zip(needed, arrays))
        shape = arrays[0].shape
        X = np.column_stack([by_attr[a].reshape(-1) for a in self.inputs.values()]) * self._scale
        return X, shape

    def truth(self, *positions: Any, **by_name: Any) -> np.ndarray:
        """The twin's noiseless mean at the positions (positioner order, or by attribute), broadcast.

        Positions are in the positioners' units (``input_scale`` converts them).
        """
        X, shape = self._twin_points(positions, by_name)
        mean, _ = self.twin.predict(X)
        return np.asarray(mean, dtype=float).reshape(shape)

    def twin_std(self, *positions: Any, **by_name: Any) -> np.ndarray:
        """The twin's ensemble spread at the positions (as :meth:`truth`)."""
        X, shape = self._twin_points(positions, by_name)
        _, std = self.twin.predict(X)
        return np.asarray(std, dtype=float).reshape(shape)

    def noise_sigma(self, *_: Any) -> float:
        """Standard deviation of one reading (the same everywhere: :attr:`noise_level`)."""
        return self.noise_level

    # -- acquisition ----------------------------------------------------------------------
    def _acquire(self) -> None:
        """Read the twin at the current positions (synchronously; :meth:`trigger` uses a worker)."""
        self._read_twin(self._here(), self.clock.elapsed + self.acquisition_time())

    def _here(self) -> dict[str, float]:
        return {a: float(p.position) for a, p in self.positioners.items()}

    def _read_twin(self, here: Mapping[str, float], elapsed: float) -> None:
        with self._lock:
            mean = float(self.truth(**{a: here[a] for a in set(self.inputs.values())}))
            reading = mean + (self._rng.normal(0.0, self.noise_level) if self.noise_level > 0 else 0.0)
            getattr(self, self.detector_attr)._record(float(reading))
            self.elapsed._record(float(elapsed))

    def trigger(self) -> DeviceStatus:
        """Acquire one reading from the twin on the device's worker thread.

        The positions are taken now, the clock advances by the acquisition time now,
        and the status finishes once the twin has answered (and, with ``time_scale >
        0``, the scaled acquisition time has passed).
        """
        duration = self.acquisition_time()
        here = self._here()
        elapsed = self.clock.elapsed + duration
        self.clock.advance(duration)
        status = DeviceStatus(self)
        wall = self.clock.wall_seconds(duration)
        started = threading.Event()

        def work() -> None:
            started.set()
            try:
                self._read_twin(here, elapsed)
            except Exception as exc:  # noqa: BLE001 - handed to the RunEngine through the status
                status.set_exception(exc)
                return
            finish_after(status, wall)

        self._worker.submit(work)
        return status

    def destroy(self) -> None:
        """Stop the worker thread (after pending readings), then destroy the device."""
        self._worker.shutdown(wait=True)
        super().destroy()


class TwinMagnetometer(TwinInstrument, Magnetometer):
    """A :class:`~bluesky_twin.sim.Magnetometer` whose ``magnetisation`` reads a twin.

    Data keys, limits and time model are the magnetometer's (``mpms_temperature``,
    ``mpms_field``, ``mpms_magnetisation``, ``mpms_elapsed``); see :class:`TwinInstrument`
    for the twin's arguments.
    """

    detector_attr = "magnetisation"


class TwinTransportCell(TwinInstrument, TransportCell):
    """A :class:`~bluesky_twin.sim.TransportCell` whose ``resistance`` reads a twin."""

    detector_attr = "resistance"


class TwinArpesManipulator(TwinInstrument, ArpesManipulator):
    """An :class:`~bluesky_twin.sim.ArpesManipulator` whose ``intensity`` reads a twin.

    The reading is the twin's mean plus Gaussian noise, so ``arpes_intensity`` is a float
    (counts per dwell, as the twin was trained on), not the Poisson integer of the
    physics model.
    """

    detector_attr = "intensity"
    intensity = Cpt(MeasuredSignal, value=0.0, units="counts", kind="hinted")


#: ``kind -> (class, default device name)`` accepted by :func:`twin_instrument`
TWIN_KINDS: dict[str, tuple[type[TwinInstrument], str]] = {
    "magnetometer": (TwinMagnetometer, "mpms"),
    "transport": (TwinTransportCell, "ppms"),
    "arpes": (TwinArpesManipulator, "arpes"),
}


def twin_instrument(
    twin: Any,
    kind: str = "magnetometer",
    *,
    name: str | None = None,
    inputs: Mapping[str, str] | None = None,
    input_scale: Mapping[str, float] | None = None,
    noise: float | None = None,
    seed: int | None = None,
    time_scale: float = 0.0,
    **kwargs: Any,
) -> TwinInstrument:
    """Build the twin-backed instrument of *kind* standing in for the sample the twin learned.

    Parameters
    ----------
    twin
        A :class:`~bluesky_twin.twin.DigitalTwin` or the path of its model directory.
    kind
        ``"magnetometer"`` (:class:`TwinMagnetometer`, default name ``mpms``),
        ``"transport"`` (:class:`TwinTransportCell`, ``ppms``) or ``"arpes"``
        (:class:`TwinArpesManipulator`, ``arpes``).
    name
        Device name (data keys are ``{name}_{component}``); default as above.
    inputs, input_scale, noise
        See :class:`TwinInstrument`.
    seed
        Seed of the reading noise and positioner jitter: the same seed gives the same readings.
    time_scale
        Wall-clock seconds per simulated second (``0``: zero-delay).
    **kwargs
        Passed to the instrument class.

    Returns
    -------
    TwinInstrument
        An ophyd device, used like the simulated instrument (``RE(bp.grid_scan([dev], ...))``).

    Raises
    ------
    InputError
        An unknown *kind*, a twin input that matches no positioner, or a bad noise level.
    """
    if kind not in TWIN_KINDS:
        raise InputError(f"unknown instrument kind {kind!r}; choose from {sorted(TWIN_KINDS)}")
    cls, default_name = TWIN_KINDS[kind]
    return cls(
        name=name or default_name,
        twin=twin,
        inputs=inputs,
        input_scale=input_scale,
        noise=noise,
        seed=seed,
        time_scale=time_scale,
        **kwargs,
    )
