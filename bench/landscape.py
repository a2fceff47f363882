"""Landscape lab speed: a 41 × 41 loss grid, the vmapped fast path against the plain loop.

Two runs, trained here first (three optimizers from one initialisation):

* moons, the small MLP: the grid on the training and the validation set (target ≤ 2 s);
* digits, the small residual CNN: the grid on the validation set (target ≤ 30 s).

On each, the exact plane through the initial weights and SGD's and Adam's final weights; the
grid alone (no path losses). The batched path (``torch.func.vmap`` over grid points, chunked by
:func:`dgs_core.landscape.grid.plan_chunks`) and the reference loop (one forward pass per grid
point and split) evaluate the same grid, alternately, ``--repeats`` times in this process; each
reports its best wall time and that run's process CPU time, and the ratio loop / batched of the
best times (the issue expects ≥ 5×). The two must agree (the largest relative difference is
printed). The grid's time against the target is that of the method ``method="auto"`` picks
(:func:`dgs_core.landscape.grid.resolve_method`). Also timed once: the 41 points of an
interpolation and the sharpness table (power iteration, ``max_iter`` 100, tol 1e-3).

The loop over all 1,681 points of the digits grid takes about a minute; ``--loop-points N``
times it on the first N points and scales up (said so in the output).

Run:  .venv/bin/python bench/landscape.py [--tasks moons,digits] [--repeats 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from dgs_core.landscape import (
    GridSpec,
    Landscape,
    PlaneSpec,
    build_plane,
    interpolate,
    losses_at,
    sharpness_table,
)
from dgs_core.landscape.grid import plan_chunks, resolve_method
from dgs_core.training.config import TrainConfig
from dgs_core.training.trainer import Trainer

TARGETS = {"moons": 2.0, "digits": 30.0}  # the issue's; other tasks have none
SPLITS = {"moons": ("train", "val"), "digits": ("val",), "modular": ("val",)}
STEPS = {"moons": 500, "digits": 300, "modular": 300}
RESOLUTION = 41


def _trained(task: str) -> Landscape:
    config = TrainConfig(
        task=task,
        optimizers=[("sgd", {"lr": 0.1}), ("adam", {"lr": 0.01}), "dgs"],
        steps=STEPS[task],
        eval_every=25,
        diag_every=0,
        device="cpu",
    )
    trainer = Trainer(config)
    list(trainer.run())
    return Landscape.from_trainer(trainer)


def _timed(function) -> tuple[float, float, object]:
    wall, cpu = time.perf_counter(), time.process_time()
    result = function()
    return time.perf_counter() - wall, time.process_time() - cpu, result


def bench(task: str, repeats: int, loop_points: int | None) -> dict[str, object]:
    landscape = _trained(task)
    splits = SPLITS[task]
    plane = build_plane(landscape, PlaneSpec.exact("sgd", "adam"))
    paths = plane.project(landscape)
    xs, ys = GridSpec(resolution=RESOLUTION).axes(plane, paths)
    gx, gy = np.meshgrid(xs, ys)
    coords = torch.from_numpy(np.stack([gx.ravel(), gy.ravel()], axis=1))
    total = len(coords)
    looped = min(total, loop_points or total)

    def points(a: int, b: int) -> torch.Tensor:
        return plane.points(coords[a:b])

    def batched() -> dict[str, np.ndarray]:
        return losses_at(landscape, points, total, splits=splits, method="batched")[0]

    def loop() -> dict[str, np.ndarray]:
        return losses_at(landscape, points, looped, splits=splits, method="loop")[0]

    fast, slow = [], []
    for _ in range(repeats):
        fast.append(_timed(batched))
        slow.append(_timed(loop))
    best_fast, best_slow = min(fast, key=lambda t: t[0]), min(slow, key=lambda t: t[0])
    scale = total / looped
    difference = max(
        float(np.max(np.abs(best_fast[2][s][:looped] - best_slow[2][s]) / np.abs(best_slow[2][s])))
        for s in splits
    )
    interpolation = _timed(lambda: interpolate(landscape, "sgd", "adam", points=RESOLUTION, splits=splits))
    sharpness = _timed(lambda: sharpness_table(landscape))
    plan = plan_chunks(landscape, splits, 1024)
    auto = resolve_method(landscape, "auto")
    return {
        "task": task,
        "params": landscape.numel,
        "examples": sum(len(landscape.data(s)[1]) for s in splits),
        "splits": "+".join(splits),
        "plan": f"{plan.points} points × {plan.examples} examples",
        "batched_s": best_fast[0],
        "batched_cpu_s": best_fast[1],
        "loop_s": best_slow[0] * scale,
        "loop_cpu_s": best_slow[1] * scale,
        "loop_note": "" if looped == total else f" (first {looped} points, scaled ×{scale:.1f})",
        "ratio": best_slow[0] * scale / best_fast[0],
        "auto": auto,
        "auto_s": best_fast[0] if auto == "batched" else best_slow[0] * scale,
        "target": TARGETS.get(task, float("inf")),
        "max_rel_diff": difference,
        "all_batched_s": [round(t[0], 2) for t in fast],
        "interpolation_s": interpolation[0],
        "sharpness_s": sharpness[0],
        "sharpness_iterations": sharpness[2]["iterations"].tolist(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default="moons,digits")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--loop-points", type=int, default=None, help="time the loop on this many points")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, grid {RESOLUTION}×{RESOLUTION}")
    for task in args.tasks.split(","):
        r = bench(task, args.repeats, args.loop_points)
        met = "✓" if r["auto_s"] <= r["target"] else "✗"
        print(
            f"\n{task}: {r['params']} parameters, {r['examples']} examples ({r['splits']}), "
            f"batched calls of {r['plan']}\n"
            f"  batched  {r['batched_s']:.2f} s wall, {r['batched_cpu_s']:.2f} s CPU "
            f"(every run: {r['all_batched_s']})\n"
            f"  loop     {r['loop_s']:.2f} s wall, {r['loop_cpu_s']:.2f} s CPU{r['loop_note']}\n"
            f"  loop / batched = {r['ratio']:.1f}×   (largest relative difference {r['max_rel_diff']:.1e})\n"
            f"  method='auto' picks {r['auto']}: the grid in {r['auto_s']:.2f} s "
            f"(target ≤ {r['target']:g} s {met})\n"
            f"  interpolation, {RESOLUTION} points: {r['interpolation_s']:.2f} s; sharpness of 3 solutions: "
            f"{r['sharpness_s']:.1f} s (power iterations {r['sharpness_iterations']})"
        )


if __name__ == "__main__":
    main()
