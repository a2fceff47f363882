"""Surface-lab simulator timings against the issue's targets, on CPU.

    .venv/bin/python bench/surface_sim.py [--surface rosenbrock] [--repeats 3]

1. Compare: the eight default optimizers × 500 steps from the default start, one after the
   other (what the page runs for the overlay and small multiples). Target ≤ 0.3 s in total.
   Reference: a plain torch loop over the same optimizers (one (1, 2) tensor, autograd
   gradients, no recording), timed in the same run.
2. Basin map: 100 × 100 starts × 300 steps for one optimizer, as one batch. Target ≤ 3 s
   per optimizer.

Each figure is the best of ``--repeats`` runs (the machine may be shared); ratios below 1 meet
the target. Only the simulation loop is timed for (1) (``Run.seconds``, the page's compute;
post-processing is listed separately), the whole ``basin_map`` call for (2).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dgs_core.optim import registry
from dgs_core.surfaces.functions import get_surface
from dgs_core.surfaces.simulator import simulate
from dgs_core.surfaces.studies import basin_map

DEFAULT_EIGHT = ("sgd", "momentum", "adam", "lars", "adan", "dgs", "extrasgd", "adagrad_norm")
COMPARE_TARGET_S = 0.3
BASIN_TARGET_S = 3.0


def plain_loop_seconds(surface_name: str, name: str, steps: int) -> float:
    """The reference: what a notebook user writes, with torch's default threading."""
    surface = get_surface(surface_name)
    point = torch.tensor([surface.default_start], dtype=torch.float64, requires_grad=True)
    info = registry.get(name)
    hparams = {}
    if "extrapolation_lr" in info.defaults:
        hparams["extrapolation_lr"] = info.resolve(surface=True)["lr"]
    opt = registry.create(name, [point], surface=True, independent_rows=True, **hparams)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = surface.value(point).sum()
        loss.backward()
        return loss

    started = time.perf_counter()
    for _ in range(steps):
        if info.needs_closure:
            opt.step(closure)
        else:
            closure()
            opt.step()
    return time.perf_counter() - started


def best(values: list[float]) -> float:
    return min(values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--surface", default="rosenbrock")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--basin-optimizers", nargs="*", default=list(DEFAULT_EIGHT))
    args = parser.parse_args()

    simulate(args.surface, "sgd", steps=5)  # imports and first-call warm-up
    print(f"surface: {args.surface}, torch {torch.__version__}, {torch.get_num_threads()} threads, CPU")
    print(f"\n1. eight optimizers × 500 steps from {get_surface(args.surface).default_start}")
    print(f"   {'optimizer':<14}{'loop s':>9}{'total s':>9}{'plain torch s':>15}")
    loop_total = call_total = plain_total = 0.0
    for name in DEFAULT_EIGHT:
        loops, calls, plains = [], [], []
        for _ in range(args.repeats):
            started = time.perf_counter()
            run = simulate(args.surface, name, steps=500)
            calls.append(time.perf_counter() - started)
            loops.append(run.seconds)
            plains.append(plain_loop_seconds(args.surface, name, 500))
        loop_total += best(loops)
        call_total += best(calls)
        plain_total += best(plains)
        print(f"   {name:<14}{best(loops):>9.4f}{best(calls):>9.4f}{best(plains):>15.4f}")
    print(f"   {'all eight':<14}{loop_total:>9.4f}{call_total:>9.4f}{plain_total:>15.4f}")
    print(
        f"   simulation loop: {loop_total:.3f} s = {loop_total / COMPARE_TARGET_S:.2f} × target "
        f"({COMPARE_TARGET_S} s), {loop_total / plain_total:.2f} × the plain torch loop; "
        f"whole simulate() calls incl. recording and metrics inputs: {call_total:.3f} s = "
        f"{call_total / COMPARE_TARGET_S:.2f} × target"
    )

    print("\n2. basin map, 100 × 100 starts × 300 steps, one batch per optimizer")
    worst = 0.0
    for name in args.basin_optimizers:
        times = []
        for _ in range(args.repeats):
            started = time.perf_counter()
            basin_map(args.surface, name, resolution=100, steps=300)
            times.append(time.perf_counter() - started)
        worst = max(worst, best(times))
        print(
            f"   {name:<14}{best(times):>8.3f} s = {best(times) / BASIN_TARGET_S:.2f} × target "
            f"({BASIN_TARGET_S} s)"
        )
    print(f"   slowest: {worst:.3f} s = {worst / BASIN_TARGET_S:.2f} × target")


if __name__ == "__main__":
    main()
