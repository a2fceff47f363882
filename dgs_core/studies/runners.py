"""Warm trial processes for studies on the embedded Ray: a pool kept from one study to the next.

Ray Tune starts its trial processes afresh for every experiment (they live as long as one
``Tuner.fit``), and a fresh process spends seconds importing torch and warming it up before its
first trial. A trial of 300 steps on moons takes about 0.4 s, so a study of 36 of them (about
13 s one after the other) cannot repay that start on two cores (``bench/studies.py``: Tune's
processes made the study 0.5–0.8× the plain loop). On the embedded Ray a study therefore runs
its trials on a :class:`RunnerPool`: one :class:`TrialRunner` (a Ray actor) per worker slot,
started with Ray, torch imported and one tiny trial run, kept until Ray shuts down. A runner
runs ``run_trial``, the same function a Tune trial runs, one trial at a time, so the numbers are
the same (tested). The study's plan (with Tune's Optuna adapter for TPE) still chooses every
trial; :meth:`dgs_core.studies.tuner.SweepStudy.run` decides where they run.

Studies with early stopping (Tune's ASHA reads every evaluation) and studies on a cluster run on
Ray Tune's own trial processes, the reference path.
"""

from __future__ import annotations

import queue
import time
from typing import Any

# A few steps on moons: what warms a fresh runner (torch's first calls, the data) before its
# first real trial, which would otherwise take several times as long as the next ones.
WARM_UP = {"task": "moons", "optimizers": ["sgd"], "trials": 1, "seeds": 1, "steps": 2, "eval_every": 1}


class TrialRunner:
    """One warm process that runs trials one after the other (a Ray actor in a pool)."""

    def __init__(self) -> None:
        from dgs_core.studies.sweep import StudySpec, run_trial

        run_trial(StudySpec.from_dict(WARM_UP), "sgd", {}, 0)

    def run(self, spec: dict[str, Any], optimizer: str, hparams: dict[str, Any], seed: int) -> dict:
        """One trial (``run_trial``): its final metrics, ``seconds`` it took, ``final`` True."""
        from dgs_core.studies.sweep import StudySpec, run_trial

        started = time.perf_counter()
        final = run_trial(StudySpec.from_dict(spec), optimizer, hparams, seed)
        return {**final, "seconds": time.perf_counter() - started, "final": True}


class RunnerPool:
    """``count`` runners on the embedded Ray, shared by the studies that run at once: a study
    takes a free runner for each trial (:meth:`acquire`) and gives it back after
    (:meth:`release`); a runner whose trial was cancelled or which died is replaced
    (:meth:`replace`)."""

    def __init__(self, count: int) -> None:
        import ray

        # No CPU of Ray's own: the pool's size is the number of trials at once. (Tune's trial
        # processes, for an ASHA study, take Ray's CPUs; a runner holding one would leave them
        # none while it sits idle.)
        self._actor = ray.remote(num_cpus=0)(TrialRunner)
        self.count = count
        self._free: queue.Queue = queue.Queue()
        runners = [self._actor.remote() for _ in range(count)]
        ray.get([runner.__ray_ready__.remote() for runner in runners])  # warm before the first study
        for runner in runners:
            self._free.put(runner)

    def acquire(self, timeout_s: float) -> Any | None:
        """A free runner, or None after ``timeout_s`` (every runner busy with another study)."""
        try:
            return self._free.get(timeout=timeout_s)
        except queue.Empty:
            return None

    def release(self, runner: Any) -> None:
        self._free.put(runner)

    def replace(self, runner: Any) -> None:
        """End ``runner`` (its trial, if one runs: Stop) and put a fresh one in its place (it
        warms up in the background; its first trial waits for that)."""
        import ray

        ray.kill(runner, no_restart=True)
        self._free.put(self._actor.remote())
