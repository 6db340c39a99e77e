"""Simulated instruments: limits, noise statistics, physics, ground truth, time model."""

from __future__ import annotations

import numpy as np
import pytest
from ophyd.utils import LimitError as OphydLimitError

from bluesky_twin.errors import InputError, LimitError


# --------------------------------------------------------------------------------------
# limits
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("instrument", "axis", "bad"),
    [
        ("mpms", "field", 7.5),
        ("mpms", "field", -0.1),
        ("mpms", "temperature", 1.0),
        ("mpms", "temperature", float("nan")),
        ("ppms", "temperature", 401.0),
        ("arpes", "theta2", 15.5),
        ("arpes", "theta1", -30.0),
    ],
)
def test_positioner_refuses_out_of_limit_moves(instrument, axis, bad):
    from bluesky_twin.sim import make_instruments

    positioner = getattr(getattr(make_instruments(include=(instrument,)), instrument), axis)
    before = (positioner.position, positioner.setpoint.get(), positioner.clock.elapsed)
    with pytest.raises(LimitError) as info:
        positioner.set(bad)
    assert isinstance(info.value, OphydLimitError)  # ophyd code catches it too
    assert positioner.name in str(info.value)
    # nothing moved, no time was spent
    assert (positioner.position, positioner.setpoint.get(), positioner.clock.elapsed) == before


def test_limits_are_exposed_and_edges_allowed(mpms):
    assert mpms.field.limits == (0.0, 7.0)
    assert mpms.temperature.limits == (2.0, 400.0)
    assert (mpms.field.low_limit, mpms.field.high_limit) == (0.0, 7.0)
    mpms.field.set(7.0).wait(1)
    assert mpms.field.position == 7.0


def test_runengine_scan_outside_limits_fails_without_moving(RE, mpms):
    import bluesky.plans as bp

    docs = []
    RE.subscribe(lambda name, doc: docs.append((name, doc)))
    with pytest.raises(LimitError):
        RE(bp.scan([mpms], mpms.field, 6.0, 8.0, 3))
    assert mpms.field.setpoint.get() <= 7.0
    stop = [doc for name, doc in docs if name == "stop"][0]
    assert stop["exit_status"] == "fail"


# --------------------------------------------------------------------------------------
# magnetometer physics and noise
# --------------------------------------------------------------------------------------
def _transition_from_truth(mpms, field):
    temps = np.linspace(20, 60, 4001)
    m = mpms.truth(temps, field)
    return temps[np.argmin(np.gradient(m, temps))]


def test_magnetometer_transition_shifts_up_with_field(mpms):
    tc = [_transition_from_truth(mpms, h) for h in (0.1, 1.0, 3.0, 5.0)]
    assert 32.5 < tc[0] < 34.0  # ErCo2: ~33 K at low field
    assert 34.0 < tc[1] < 36.5
    assert np.all(np.diff(tc) > 0.8), tc  # strong field dependence
    # first order: steep drop at low field, M below Tc far above M above Tc
    m = mpms.truth([tc[1] - 3, tc[1] + 3], 1.0)
    assert m[0] > 4 * m[1]
    slope = np.gradient(mpms.truth(np.linspace(30, 40, 1001), 1.0), 0.01).min()
    assert slope < -0.02  # raw units per kelvin, like the ErCo2 data


def test_magnetometer_transition_seen_in_noisy_scan(RE, mpms):
    """The transition temperature measured by a real scan shifts with field too."""
    import bluesky.plans as bp

    found = {}
    for field in (0.5, 4.0):
        rows = []
        token = RE.subscribe(lambda name, doc, rows=rows: rows.append(doc["data"]) if name == "event" else None)
        RE(bp.grid_scan([mpms], mpms.field, field, field, 1, mpms.temperature, 25.0, 50.0, 101))
        t = np.array([r["mpms_temperature"] for r in rows])
        m = np.array([r["mpms_magnetisation"] for r in rows])
        found[field] = t[np.argmin(np.diff(m))]
        RE.unsubscribe(token)
    assert found[4.0] - found[0.5] > 3.0, found


def test_magnetometer_noise_statistics(mpms):
    mpms.temperature.set(20.0).wait(1)
    mpms.field.set(1.0).wait(1)
    readings = []
    for _ in range(400):
        mpms.trigger().wait(1)
        readings.append(mpms.magnetisation.get())
    readings = np.array(readings)
    truth = float(mpms.truth(mpms.temperature.position, mpms.field.position))
    sigma = float(mpms.noise_sigma(truth))
    assert np.std(readings) == pytest.approx(sigma, rel=0.2)
    assert abs(readings.mean() - truth) < 4 * sigma / np.sqrt(len(readings))
    assert len(np.unique(readings)) == len(readings)  # not frozen between triggers


def test_noise_shrinks_with_averaging_time(mpms):
    short = float(mpms.noise_sigma(0.0))
    mpms.averaging_time.put(8.0)
    assert float(mpms.noise_sigma(0.0)) == pytest.approx(short / 2)


def test_truth_is_vectorised_and_validates(mpms, ppms, arpes):
    t = np.linspace(10, 60, 7)[:, None]
    h = np.array([0.1, 1.0, 5.0])[None, :]
    assert mpms.truth(t, h).shape == (7, 3)
    assert ppms.truth(t, h).shape == (7, 3)
    assert arpes.truth(np.zeros((4, 1)), np.zeros((1, 5))).shape == (4, 5)
    with pytest.raises(InputError):
        mpms.truth([10.0, np.nan], 1.0)
    with pytest.raises(InputError):
        ppms.truth(-1.0, 0.0)


def test_truth_matches_readings_up_to_noise(RE, mpms):
    import bluesky.plans as bp

    rows = []
    RE.subscribe(lambda name, doc: rows.append(doc["data"]) if name == "event" else None)
    RE(bp.grid_scan([mpms], mpms.field, 0.2, 3.0, 4, mpms.temperature, 10.0, 60.0, 26))
    t = np.array([r["mpms_temperature"] for r in rows])
    h = np.array([r["mpms_field"] for r in rows])
    m = np.array([r["mpms_magnetisation"] for r in rows])
    z = (m - mpms.truth(t, h)) / mpms.noise_sigma(mpms.truth(t, h))
    assert abs(z.mean()) < 0.5
    assert 0.7 < z.std() < 1.3
    # the temperature readback is the real sample temperature, near but not at the setpoint
    setpoints = np.array([r["mpms_temperature_setpoint"] for r in rows])
    assert 0 < np.abs(t - setpoints).max() < 0.05


# --------------------------------------------------------------------------------------
# transport, ARPES, INS
# --------------------------------------------------------------------------------------
def test_transport_superconducting_transition(ppms):
    temps = np.linspace(1.8, 12, 2001)
    r0 = ppms.truth(temps, 0.0)
    rn = float(ppms.model.normal_resistance(10.0, 0.0))
    assert r0[0] < 1e-3 * rn  # superconducting at 2 K
    assert r0[-1] == pytest.approx(float(ppms.model.normal_resistance(12.0, 0.0)), rel=1e-3)
    t_half = temps[np.argmin(np.abs(r0 - rn / 2))]
    assert 8.0 < t_half < 9.0  # PdH-like Tc at zero field
    t_half_field = temps[np.argmin(np.abs(ppms.truth(temps, 0.5) - rn / 2))]
    assert t_half_field < t_half - 1.5  # Tc falls with field
    assert float(ppms.truth(2.0, 1.5)) > 0.9 * rn  # above Hc2(0): normal


def test_transport_noise_about_one_percent(ppms):
    ppms.temperature.set(10.0).wait(1)
    values = []
    for _ in range(300):
        ppms.trigger().wait(1)
        values.append(ppms.resistance.get())
    assert np.std(values) == pytest.approx(ppms.noise_sigma(), rel=0.2)
    assert 0.003 < np.std(values) / np.mean(values) < 0.03


def test_arpes_peaks_edge_and_poisson_noise(arpes):
    theta1 = np.linspace(-25, 25, 2001)
    line = arpes.truth(theta1, 0.0)
    # several peaks inside the acceptance
    from scipy.signal import find_peaks

    peaks, _ = find_peaks(line, prominence=50)
    assert len(peaks) >= 4
    # edge sensitivity: intensity changes by > 10x within 1 degree at the acceptance edge
    inside, outside = arpes.truth([18.5, 20.5], 0.0)
    assert inside > 10 * outside
    # Poisson statistics: variance equals the mean
    arpes.theta1.set(-5.0).wait(1)
    counts = []
    for _ in range(400):
        arpes.trigger().wait(1)
        counts.append(arpes.intensity.get())
    expected = float(arpes.truth(arpes.theta1.position, arpes.theta2.position))
    assert np.mean(counts) == pytest.approx(expected, rel=0.05)
    assert np.var(counts) == pytest.approx(expected, rel=0.25)
    assert all(isinstance(c, int) for c in counts)


def test_ins_frames_shape_noise_and_hidden_parameters(ins_spectrometer):
    ins = ins_spectrometer
    assert ins.describe()["ins_frame"]["shape"] == [64, 64]
    assert ins.describe()["ins_frame"]["dtype"] == "array"
    truth = ins.truth()
    ins.trigger().wait(1)
    first = ins.frame.get().copy()
    ins.trigger().wait(1)
    second = ins.frame.get()
    assert first.shape == (64, 64) and first.dtype == np.float32
    mask = np.isnan(truth)
    assert mask.any() and np.array_equal(np.isnan(first), mask)  # fixed detector gaps
    assert not np.array_equal(first[~mask], second[~mask])  # fresh counting noise
    # Poisson(N lambda) / N: mean error ~ 0, relative noise shrinks with counting time
    resid = (first - truth)[~mask]
    assert abs(resid.mean()) < 0.01
    ins.counting_time.put(ins.counting_time.get() * 16)
    ins.trigger().wait(1)
    resid_long = (ins.frame.get() - truth)[~mask]
    assert np.std(resid_long) < 0.4 * np.std(resid)
    # hidden parameters are not written to any reading or configuration
    text = repr(ins.read()) + repr(ins.read_configuration())
    assert "J1" not in text and "J2" not in text
    assert ins.hidden_parameters == {"J1": 0.65, "J2": 0.12}


def test_ins_rejects_unstable_sample():
    from bluesky_twin.sim import InsSpectrometer

    with pytest.raises(InputError):
        InsSpectrometer(name="bad", J1=0.5, J2=0.4)


# --------------------------------------------------------------------------------------
# time model
# --------------------------------------------------------------------------------------
def test_point_time_model(mpms):
    rate_t = mpms.temperature.ramp_rate
    rate_h = mpms.field.ramp_rate
    expected = (
        10.0 / rate_t
        + mpms.temperature.settle_time.get()
        + 0.5 / rate_h
        + mpms.field.settle_time.get()
        + mpms.averaging_time.get()
    )
    assert mpms.point_time((20.0, 1.0), (30.0, 1.5)) == pytest.approx(expected)
    # no move: only the averaging time
    assert mpms.point_time((20.0, 1.0), {"temperature": 20.0, "mpms_field": 1.0}) == pytest.approx(
        mpms.averaging_time.get()
    )
    with pytest.raises(LimitError):
        mpms.point_time((20.0, 1.0), (20.0, 9.0))
    with pytest.raises(InputError):
        mpms.point_time((20.0, 1.0), (20.0,))


def test_clock_accumulates_what_point_time_predicts(RE, mpms):
    import bluesky.plans as bp

    points = [(t, h) for h in (0.5, 1.0) for t in (20.0, 30.0, 40.0)]
    predicted = mpms.measurement_time(points)
    start = mpms.clock.elapsed
    RE(bp.grid_scan([mpms], mpms.field, 0.5, 1.0, 2, mpms.temperature, 20.0, 40.0, 3))
    assert mpms.clock.elapsed - start == pytest.approx(predicted)
    assert predicted > 280.0 / (10.0 / 60.0)  # cooling from 300 K at 10 K/min dominates


def test_zero_delay_does_not_sleep_and_time_scale_does(mpms):
    import time

    t0 = time.perf_counter()
    mpms.temperature.set(10.0).wait(1)  # 290 K at 10 K/min: ~29 simulated minutes
    assert time.perf_counter() - t0 < 0.5
    mpms.clock.time_scale = 1e-4
    seen = []
    mpms.field.subscribe(lambda value, **kw: seen.append(value), run=False)
    t0 = time.perf_counter()
    status = mpms.field.set(1.0)  # 100 s ramp + 10 s settle -> 11 ms wall
    assert not status.done
    status.wait(2)
    assert time.perf_counter() - t0 >= 0.010
    assert len(seen) > 2 and seen[-1] == pytest.approx(1.0)  # the readback ramped
    with pytest.raises(InputError):
        mpms.clock.time_scale = -1


def test_make_instruments_namespace():
    from bluesky_twin.sim import make_instruments

    hw = make_instruments(seed=3, include=("mpms", "arpes"))
    assert hw.mpms.name == "mpms" and hw.arpes.name == "arpes"
    assert not hasattr(hw, "ins")
    assert hw.mpms.hints == {"fields": ["mpms_magnetisation"]}
    with pytest.raises(InputError):
        make_instruments(include=("nope",))
    again = make_instruments(seed=3, include=("mpms",))
    hw.mpms.trigger()
    again.mpms.trigger()
    assert hw.mpms.magnetisation.get() == again.mpms.magnetisation.get()  # seeded


def test_stop_interrupts_a_real_time_ramp(mpms):
    import time

    from ophyd.utils import StatusTimeoutError

    mpms.clock.time_scale = 1e-2  # 7 T at 0.01 T/s = 700 s ramp -> 7 s wall
    status = mpms.field.set(7.0)
    time.sleep(0.3)
    mpms.stop()
    with pytest.raises(Exception) as info:
        status.wait(2)
    assert not isinstance(info.value, StatusTimeoutError)
    assert not status.success
    assert 0.0 < mpms.field.position < 7.0  # stopped part-way
