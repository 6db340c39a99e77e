"""The simulated instruments (swap these lines for real ophyd devices at a beamline).

Environment:
    BLUESKY_TWIN_SIM_SEED         noise seed (default: fresh randomness)
    BLUESKY_TWIN_SIM_TIME_SCALE   wall seconds per simulated second (default 0: no waiting)
"""

import os

from bluesky_twin.sim import make_instruments

_seed = os.environ.get("BLUESKY_TWIN_SIM_SEED")
sim = make_instruments(
    seed=int(_seed) if _seed else None,
    time_scale=float(os.environ.get("BLUESKY_TWIN_SIM_TIME_SCALE", "0")),
)
mpms, ppms, arpes, ins = sim.mpms, sim.ppms, sim.arpes, sim.ins  # magnetometer, transport, ARPES, INS

print("[bluesky-twin] instruments: mpms (T, H -> M), ppms (T, H -> R), arpes (theta1, theta2 -> I), ins (frames)")
