"""Studies on Ray Tune against a plain loop of the same trials, in one run.

    .venv/bin/python bench/studies.py [--trials 8] [--steps 300] [--skip-fair]

1. Ray's start-up: ``engine.connect()`` of the embedded Ray (first call in the process).
2. A study of 4 optimizers × ``--trials`` trials of ``--steps`` steps on moons (+ one seed run
   each), with 1 and with 2 trials at a time, against the same trials run one after the other
   in this process (``run_trial``, what each Ray worker calls). Ratios are sequential / Ray.
   The per-trial overhead is what Ray adds to a trial: (wall × slots − time inside the trials)
   / trials.
3. The Training lab's fair comparison: 4 optimizers × 8 trials × 3 seeds on moons, wall time
   (target: under a minute on this 2-core machine).

Resident memory of the embedded Ray (its raylet, GCS and worker processes) is read from /proc.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import time

from dgs_core.studies import engine
from dgs_core.studies.sweep import StudySpec, run_trial
from dgs_core.studies.tuner import SweepStudy

OPTIMIZERS = ("sgd", "adam", "dgs", "adan")


def _ray_rss_mb() -> float:
    """Resident memory of Ray's own processes and its workers (MB)."""
    out = subprocess.run(["ps", "-eo", "rss,args"], capture_output=True, text=True).stdout
    total = 0
    for line in out.splitlines()[1:]:
        rss, _, args = line.strip().partition(" ")
        if any(key in args for key in ("raylet", "gcs_server", "ray::", "default_worker.py", "dashboard")):
            total += int(rss)
    return total / 1024


def _study(spec: StudySpec) -> tuple[float, SweepStudy]:
    study = SweepStudy(spec)
    started = time.perf_counter()
    for _ in study.run():
        pass
    return time.perf_counter() - started, study


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--trials", type=int, default=8, help="tuning trials per optimizer (4 optimizers)")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--skip-fair", action="store_true", help="skip the 4 × 8 × 3 fair comparison")
    args = parser.parse_args()
    print(f"cores: {os.cpu_count()}, load average: {os.getloadavg()}")

    started = time.perf_counter()
    info = engine.connect()
    print(f"Ray start-up (embedded, {info.workers} worker slots): {time.perf_counter() - started:.1f} s")

    base = {"task": "moons", "optimizers": list(OPTIMIZERS), "trials": args.trials, "seeds": 1,
            "steps": args.steps, "eval_every": 25, "search": "random"}  # fmt: skip
    walls = {}
    for slots in (1, 2):
        spec = StudySpec.from_dict({**base, "max_concurrent": slots})
        walls[slots], study = _study(spec)
        inside = float(study.result.trials["seconds"].sum())
        trials = len(study.result.trials)
        overhead = (walls[slots] * slots - inside) / trials
        print(f"Ray, {slots} at a time: {trials} trials in {walls[slots]:.1f} s "
              f"(inside the trials {inside:.1f} s; overhead ≈ {overhead:.2f} s per trial)")  # fmt: skip
    print(f"Ray memory while running: ≈ {_ray_rss_mb():.0f} MB resident (Ray's processes and workers)")

    # the same trials, one after the other, in this process
    rows = study.result.trials
    started = time.perf_counter()
    for row in rows.itertuples(index=False):
        run_trial(spec, row.optimizer, json.loads(row.hparams), seed=row.seed)
    sequential = time.perf_counter() - started
    print(f"sequential loop here: {len(rows)} trials in {sequential:.1f} s")
    print(f"ratio sequential / Ray: 1 at a time {sequential / walls[1]:.2f}×, "
          f"2 at a time {sequential / walls[2]:.2f}× (target ≥ 1.6× on 2 cores); "
          f"scaling 1 → 2 at a time {walls[1] / walls[2]:.2f}×")  # fmt: skip

    if not args.skip_fair:
        fair = StudySpec.from_dict({**base, "trials": 8, "seeds": 3, "steps": 300})
        wall, study = _study(fair)
        print(f"fair comparison 4 optimizers × 8 trials × 3 seeds on moons: {wall:.1f} s "
              f"({len(study.result.trials)} trials; target < 60 s)")  # fmt: skip
    engine.shutdown()


if __name__ == "__main__":
    main()
