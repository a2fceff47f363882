"""Training-lab speed: steps per second per task, and what the trainer's recording costs.

For each task, three identical runs (same model, optimizer, batches and evaluations):

* bare:     a plain PyTorch loop — ``optimizer.step(closure)`` with torch's usual closure
            (``zero_grad(set_to_none=True)``, loss, backward), ``loss.item()``, and the same
            full training/validation-set evaluations every ``eval_every`` steps, in the same
            small-tensor mode as the trainer (one torch thread, denormals flushed);
* trainer:  :class:`dgs_core.training.Trainer` without diagnostics (``diag_every=0``); it keeps
            the gradients in one flat buffer and zeroes that (same values, fewer calls);
* +diag:    the Trainer with its defaults: diagnostics every ``diag_every`` steps (importance
            EMA every step, a copy of the tracked values on recorded steps), decision-boundary
            checkpoints. The Trainer's records compute their summaries when first read
            (``Diagnostics(lazy=True)``): the page reads them when it redraws.
* summaries: reading every record of a +diag run once at its end, as the page does on its
            redraws (unread records are summarised together), per training step; "+all" adds
            it to +diag: the whole cost of the diagnostics. "+all/trainer" is that cost against
            the trainer without diagnostics, the budget's share taken by the diagnostics alone.

They are advanced alternately one evaluation period at a time, in one process, so that other
work on the machine hits all of them alike; each reports its best period (as timeit does).
Times are the process's CPU time (``time.process_time``; the training runs on one thread): on a
shared machine wall-clock time mostly measures the neighbours. Budget (issue): +all/bare ≤ 1.10.

Run:  .venv/bin/python bench/training_speed.py [--optimizer adam] [--tasks moons,digits] [--quick] [--wall]
"""

from __future__ import annotations

import argparse
import copy
import math
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from torch.nn.functional import cross_entropy

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from dgs_core.device import resolve_device, small_tensor_mode
from dgs_core.optim import registry
from dgs_core.training.config import TrainConfig
from dgs_core.training.tasks import task_names
from dgs_core.training.trainer import Trainer

BUDGET = 1.10


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _bare_loop(trainer: Trainer) -> Iterator[None]:
    """The trainer's first lane as a plain loop: same init, optimizer, batches, evaluations."""
    config = trainer.config
    lane = next(iter(trainer.lanes.values()))
    model = copy.deepcopy(lane.model)
    spec = config.optimizers[0]
    optimizer = registry.create(spec.name, model.parameters(), **lane.result.hparams)
    batches = copy.deepcopy(lane.batches)
    task = trainer.task
    x_train, y_train = task.x_train, task.y_train
    losses: list[float] = []
    for _ in range(config.steps // config.eval_every):
        with small_tensor_mode():  # as the trainer: on while training, off between periods
            for _ in range(config.eval_every):
                index = batches.next("main", config.batch_size)
                x, y = x_train[index], y_train[index]

                def closure(x: torch.Tensor = x, y: torch.Tensor = y) -> torch.Tensor:
                    optimizer.zero_grad(set_to_none=True)
                    loss = cross_entropy(model(x), y)
                    loss.backward()
                    return loss

                losses.append(optimizer.step(closure).item())
            with torch.no_grad():
                for xs, ys in ((x_train, y_train), (task.x_val, task.y_val)):
                    logits = model(xs)
                    float(cross_entropy(logits, ys)), float((logits.argmax(-1) == ys).float().mean())
        yield


def _trainer_loop(trainer: Trainer) -> Iterator[None]:
    for _ in trainer.run():
        yield


def _summaries_per_step(config: TrainConfig, clock: Callable[[], float], repeats: int = 3) -> float:
    """Seconds per training step of summarising every record of a run, read at its end (best of
    ``repeats`` runs)."""
    best = math.inf
    for _ in range(repeats):
        trainer = Trainer(config)
        for _ in trainer.run():
            pass
        records = [record for result in trainer.results.values() for record in result.records]
        start = clock()
        for record in records:
            record.tensors  # noqa: B018 (computes the unread ones)
        best = min(best, (clock() - start) / config.steps)
    return best


def _periods(
    make: Callable[[], Iterator[None]], device: torch.device, clock: Callable[[], float]
) -> Callable[[], float]:
    """Seconds of the next evaluation period of the loop ``make()`` (restarted when exhausted)."""
    state = {"loop": make()}

    def period() -> float:
        _sync(device)
        start = clock()
        try:
            next(state["loop"])
        except StopIteration:
            state["loop"] = make()
            start = clock()
            next(state["loop"])
        _sync(device)
        return clock() - start

    return period


def bench_task(
    task: str, optimizer: str, *, periods: int, eval_every: int, device: str, clock: Callable[[], float]
) -> dict[str, list[float]]:
    """Seconds per step of each loop, one value per period (the loops' periods interleaved)."""
    base = TrainConfig(
        task=task,
        optimizers=[optimizer],
        steps=eval_every * (periods + 1),
        eval_every=eval_every,
        device=device,
    )
    configs = {"bare": base.replace(diag_every=0), "trainer": base.replace(diag_every=0), "+diag": base}
    dev = resolve_device(device)
    loops = {
        "bare": _periods(lambda: _bare_loop(Trainer(configs["bare"])), dev, clock),
        "trainer": _periods(lambda: _trainer_loop(Trainer(configs["trainer"])), dev, clock),
        "+diag": _periods(lambda: _trainer_loop(Trainer(configs["+diag"])), dev, clock),
    }
    for loop in loops.values():  # warm-up period (first calls, allocations)
        loop()
    times: dict[str, list[float]] = {key: [] for key in loops}
    for _ in range(periods):
        for key, loop in loops.items():
            times[key].append(loop() / eval_every)
    times["summaries"] = [_summaries_per_step(configs["+diag"], clock)]
    return times


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--wall", action="store_true", help="wall-clock instead of CPU time")
    parser.add_argument("--optimizer", default="adam", help="registry name (default adam)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--tasks", default=",".join(task_names()), help="comma-separated (default: all)")
    parser.add_argument("--quick", action="store_true", help="fewer periods (smoke run)")
    args = parser.parse_args()
    clock = time.perf_counter if args.wall else time.process_time
    periods = 4 if args.quick else 30
    what = "wall-clock" if args.wall else "CPU"
    print(f"torch {torch.__version__}, {args.device}, {args.optimizer}, {what} time")
    print(f"ms per step, best of {periods} periods of 25 steps (evaluations included);")
    print("paired: median and quartiles of +diag/bare over periods run back to back")
    print(
        f"{'task':<10}{'bare':>8}{'trainer':>9}{'+diag':>8}{'summaries':>10}{'steps/s':>9}{'trainer/bare':>14}"
        f"{'+diag/bare':>12}{'paired (quartiles)':>26}{'+all/bare':>11}{'+all/trainer':>14}"
    )
    worst = 0.0
    for task in args.tasks.split(","):
        times = bench_task(
            task, args.optimizer, periods=periods, eval_every=25, device=args.device, clock=clock
        )
        t = {key: min(values) for key, values in times.items()}
        ratio = t["+diag"] / t["bare"]
        whole = (t["+diag"] + t["summaries"]) / t["bare"]
        worst = max(worst, whole)
        paired = [d / b for b, d in zip(times["bare"], times["+diag"], strict=True)]
        low, median, high = statistics.quantiles(paired, n=4)
        print(
            f"{task:<10}{t['bare'] * 1e3:>8.2f}{t['trainer'] * 1e3:>9.2f}{t['+diag'] * 1e3:>8.2f}"
            f"{t['summaries'] * 1e3:>10.3f}{1 / t['+diag']:>9.0f}{t['trainer'] / t['bare']:>14.3f}"
            f"{ratio:>12.3f}{median:>12.3f} ({low:.3f}–{high:.3f}){whole:>11.3f}"
            f"{(t['+diag'] + t['summaries']) / t['trainer']:>14.3f}"
        )
    print(f"worst +all/bare: {worst:.3f} ({'within' if worst <= BUDGET else 'OVER'} the {BUDGET} budget)")


if __name__ == "__main__":
    main()
