"""Training step time of the twin's batched MLP in float32 and bfloat16, side by side.

The ARPES map (30k points) is the one data set where the networks' arithmetic, not
per-step overhead, sets the fit time; there the twin trains with bfloat16 matrix
products under CPU autocast (``TwinSearchSpace(precision="auto")``) when the CPU has
native bfloat16.  This times one Adam step of a few typical configurations both
ways, interleaved, on one thread, and prints the ratio::

    .venv/bin/python benchmarks/bench_precision.py [--repeats 20]
"""

from __future__ import annotations

import argparse
import time


def step_ms(precision: str, members: int, layers: int, units: int, batch: int, features: int, repeats: int) -> float:
    """Median milliseconds of one training step (forward, backward, Adam)."""
    import statistics

    import torch

    from bluesky_twin.twin.network import BatchedMLP

    gen = torch.Generator().manual_seed(0)
    net = BatchedMLP(
        members,
        2,
        1,
        layers,
        units,
        generator=gen,
        fourier_features=features,
        fourier_scale=[4.0, 1.0] if features else 0.0,
    )
    opt = torch.optim.Adam(net.parameters(), 1e-3, foreach=True)
    x = torch.randn(members, batch, 2, generator=gen)
    y = torch.randn(members, batch, 1, generator=gen)
    times = []
    for i in range(repeats + 3):
        t = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bfloat16"):
            out = net(x)
        loss = ((out.float() - y) ** 2).mean(dim=(1, 2)).sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i >= 3:
            times.append(time.perf_counter() - t)
    return 1e3 * statistics.median(times)


def main() -> None:
    import torch

    from bluesky_twin.twin.training import native_bfloat16

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=20)
    args = ap.parse_args()
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, native bfloat16: {native_bfloat16()}, 1 thread")
    print("| members x (layers x units), batch, Fourier features | float32 ms/step | bfloat16 ms/step | ratio |")
    print("|---|---|---|---|")
    for members, layers, units, batch, features in [
        (1, 5, 150, 1024, 64),
        (2, 6, 194, 1024, 64),
        (1, 10, 200, 1024, 0),
        (3, 6, 165, 68, 0),
    ]:
        fp32 = step_ms("float32", members, layers, units, batch, features, args.repeats)
        bf16 = step_ms("bfloat16", members, layers, units, batch, features, args.repeats)
        print(
            f"| {members} x ({layers} x {units}), {batch}, {features} | {fp32:.1f} | {bf16:.1f} | {fp32 / bf16:.2f}x |",
            flush=True,
        )


if __name__ == "__main__":
    main()
