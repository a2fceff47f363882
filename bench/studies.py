"""Studies on Ray Tune against a plain loop of the same trials, in one run.

    .venv/bin/python bench/studies.py [--trials 8] [--steps 300] [--skip-fair] [--page-target]

1. Ray's start-up: ``engine.connect()`` of the embedded Ray (first call in the process), its
   warm trial processes included.
2. A study of 4 optimizers × ``--trials`` trials of ``--steps`` steps on moons (+ one seed run
   each) on the warm runners, 1 and 2 trials at a time, and on Ray Tune's own trial processes
   (the reference path), 2 at a time, against the same trials run one after the other in this
   process (``run_trial``, what each Ray worker calls, after the same warm-up trial a runner
   runs). Ratios are sequential / Ray. The per-trial overhead is what Ray adds to a trial:
   (wall × slots − time inside the trials) / trials.
3. The Training lab's fair comparison: 4 optimizers × 8 trials × 3 seeds on moons, wall time
   (target: under a minute on this 2-core machine).

Resident memory of the embedded Ray (its GCS, raylet, agents and worker processes: this process's
descendants, so another Ray on the machine is not counted) by psutil, or from /proc without it.
``--page-target`` runs only 3., as the Training lab runs it (a study job), with Ray's start-up and
its peak resident memory.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from bench.proc import descendants, resident_mb
from dgs_core.studies import engine, runners, study_job
from dgs_core.studies.sweep import StudySpec, run_trial
from dgs_core.studies.tuner import SweepStudy

OPTIMIZERS = ("sgd", "adam", "dgs", "adan")


def _ray_rss_mb() -> float:
    """Resident memory of the processes this one started (the embedded Ray: GCS, raylet, its
    agents and the trial workers), in MB; psutil when installed, else /proc. Other Ray
    instances on the machine (other users) are not counted."""
    try:
        import psutil
    except ImportError:
        psutil = None
    if psutil is not None:
        me = psutil.Process()
        return sum(p.memory_info().rss for p in me.children(recursive=True)) / (1 << 20)
    return resident_mb(descendants(os.getpid()))


class _PeakRss:
    """Samples :func:`_ray_rss_mb` every ``period`` seconds in a thread; ``peak`` in MB."""

    def __init__(self, period: float = 0.5) -> None:
        self.peak, self._stop = 0.0, threading.Event()
        self._thread = threading.Thread(target=self._run, args=(period,), daemon=True)

    def _run(self, period: float) -> None:
        while not self._stop.wait(period):
            self.peak = max(self.peak, _ray_rss_mb())

    def __enter__(self) -> _PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def page_target() -> None:
    """The Training lab's fair comparison with the page's defaults (4 optimizers × 8 trials ×
    3 seeds, 300 steps on moons), run as the page runs it: a study job on the embedded Ray."""
    print(f"cores: {os.cpu_count()}, load average: {os.getloadavg()}")
    before = _ray_rss_mb()
    started = time.perf_counter()
    info = engine.connect()
    startup = time.perf_counter() - started
    idle = _ray_rss_mb() - before
    print(
        f"Ray start-up (embedded, {info.workers} worker slots): {startup:.1f} s; "
        f"resident after start-up {idle:.0f} MB"
    )
    spec = StudySpec()  # the page's defaults: moons, sgd/adam/dgs/adan, 8 trials, 3 seeds, 300 steps
    job = study_job(lambda: SweepStudy(spec), name="fair")
    with _PeakRss() as rss:
        started = time.perf_counter()
        job.start()
        job.join()
        wall = time.perf_counter() - started
    if job.state != "done":
        raise SystemExit(f"the study ended {job.state}: {job.error}")
    trials = job.payload.result.trials
    print(
        f"fair comparison {len(spec.optimizers)} optimizers × {spec.trials} trials × {spec.seeds} seeds "
        f"on moons ({len(trials)} trials of {spec.steps} steps): {wall:.1f} s with Ray up "
        f"(+ {startup:.1f} s start-up on a server's first study); target < 60 s"
    )
    print(
        f"Ray resident memory: peak {rss.peak:.0f} MB while the study ran "
        f"({info.workers} workers), {_ray_rss_mb():.0f} MB after it"
    )
    engine.shutdown()


def _trial_threads() -> int:
    """torch's intra-op threads inside a trial (``run_trial`` trains in ``small_tensor_mode``)."""
    import torch

    from dgs_core.device import small_tensor_mode

    with small_tensor_mode():
        return torch.get_num_threads()


def _study(spec: StudySpec, warm: bool = True) -> tuple[float, SweepStudy, list[tuple[float, float]]]:
    """Wall time, the study (on the warm runners, or on Ray Tune's trial processes), and per
    trial in the order they finished: when its row arrived (seconds from the start) and how
    long it ran."""
    study = SweepStudy(spec, warm_runners=warm)
    arrived = []
    started = time.perf_counter()
    for event in study.run():
        arrived.append((time.perf_counter() - started, event.row["seconds"]))
    return time.perf_counter() - started, study, arrived


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--trials", type=int, default=8, help="tuning trials per optimizer (4 optimizers)")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--skip-fair", action="store_true", help="skip the 4 × 8 × 3 fair comparison")
    parser.add_argument(
        "--page-target",
        action="store_true",
        help="only the Training lab's fair comparison, run as the page runs it, with Ray's memory",
    )
    args = parser.parse_args()
    if args.page_target:
        page_target()
        return
    print(f"cores: {os.cpu_count()}, load average: {os.getloadavg()}")

    started = time.perf_counter()
    info = engine.connect()
    print(f"Ray start-up (embedded, {info.workers} worker slots): {time.perf_counter() - started:.1f} s")

    base = {
        "task": "moons",
        "optimizers": list(OPTIMIZERS),
        "trials": args.trials,
        "seeds": 1,
        "steps": args.steps,
        "eval_every": 25,
        "search": "random",
    }
    walls = {}
    runs = [(1, True), (2, True), (2, False)]  # (trials at a time, on the warm runners)
    for slots, warm in runs:
        spec = StudySpec.from_dict({**base, "max_concurrent": slots})
        walls[slots, warm], study, arrived = _study(spec, warm)
        wall = walls[slots, warm]
        seconds = study.result.trials["seconds"]
        inside, trials = float(seconds.sum()), len(seconds)
        # the study's start: until the first trial began (on Tune: its set-up, and its trial
        # processes starting and importing torch); its end: after the last trial's row
        first_began = max(0.0, arrived[0][0] - arrived[0][1])
        ending = wall - arrived[-1][0]
        per_trial = ((wall - first_began - ending) * slots - inside) / trials
        spread = (wall * slots - inside) / trials
        where = "warm runners" if warm else "Ray Tune's trial processes"
        print(
            f"Ray ({where}), {slots} at a time: {trials} trials in {wall:.1f} s (inside the trials "
            f"{inside:.1f} s, {inside / trials:.2f} s each); the study's start {first_began:.1f} s, "
            f"its end {ending:.1f} s; between them ≈ {per_trial:.3f} s per trial "
            f"(all of Ray's overhead spread over the trials: {spread:.2f} s)"
        )
    print(f"Ray memory while running: ≈ {_ray_rss_mb():.0f} MB resident (Ray's processes and workers)")

    # the same trials, one after the other, in this process, warmed up as a runner is
    rows = study.result.trials
    run_trial(StudySpec.from_dict(runners.WARM_UP), "sgd", {}, 0)
    started = time.perf_counter()
    for row in rows.itertuples(index=False):
        run_trial(spec, row.optimizer, json.loads(row.hparams), seed=row.seed)
    sequential = time.perf_counter() - started
    print(
        f"sequential loop here: {len(rows)} trials in {sequential:.1f} s "
        f"(each trial, here as in a Ray worker, with {_trial_threads()} torch intra-op thread)"
    )
    print(
        f"ratio sequential / Ray on the warm runners: 1 at a time {sequential / walls[1, True]:.2f}×, "
        f"2 at a time {sequential / walls[2, True]:.2f}× (target ≥ 1.6× on 2 cores); "
        f"scaling 1 → 2 at a time {walls[1, True] / walls[2, True]:.2f}×; "
        f"on Ray Tune's trial processes, 2 at a time {sequential / walls[2, False]:.2f}×"
    )

    if not args.skip_fair:
        fair = StudySpec.from_dict({**base, "trials": 8, "seeds": 3, "steps": 300})
        wall, study, _ = _study(fair)
        print(
            f"fair comparison 4 optimizers × 8 trials × 3 seeds on moons: {wall:.1f} s "
            f"({len(study.result.trials)} trials; target < 60 s)"
        )
    engine.shutdown()


if __name__ == "__main__":
    main()
