"""Running a claim: tune on the Studies engine, measure over seeds, compute the verdict.

:class:`ClaimRun` follows the Study protocol (:mod:`dgs_core.studies.protocol`: ``run(stop)``
yields a ``StudyEvent`` per finished piece of work and returns soon after ``stop`` says so,
keeping what finished; ``progress()`` says how far it is; :attr:`ClaimRun.result` holds the
outcome once all is done), so a page runs it with ``studies.study_job``. Three phases:

1. **Tuning** — every :class:`~dgs_core.claims.base.Tuning` trial, each a
   :func:`~dgs_core.studies.sweep.run_trial` (the function a
   :class:`~dgs_core.studies.tuner.SweepStudy` runs on Ray Tune) at the tuning seed; the best
   configuration per optimizer as a grid ``SweepStudy`` would pick it.
2. **Measurement** — every arm at every measurement seed (held out: the tuning seed is not one
   of them), a :class:`~dgs_core.training.trainer.Trainer` run summarised in the worker.
3. **Extra** — a claim's own work in this process (the 2-D surfaces: numpy, seconds).

The trials and runs are Ray tasks on the engine of :mod:`dgs_core.studies.engine` (an embedded
Ray, or the cluster at ``address``), or run one after the other in this process
(``in_process=True``); the numbers are the same either way (each run is deterministic in its
configuration and seed). A Ray Tune experiment per tuning would cost 20–30 s of start-up here
(measured: an actor per worker importing torch) against milliseconds for a task on Ray's
reused workers, which is why the trials go to Ray as plain tasks.
"""

from __future__ import annotations

import json
import math
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

import dgs_core
from dgs_core import metrics
from dgs_core.claims.base import Claim, Plan, Tuning
from dgs_core.claims.verdicts import Verdict
from dgs_core.studies.protocol import Stop, StudyEvent
from dgs_core.studies.sweep import StudySpec, run_trial
from dgs_core.training.config import TrainConfig
from dgs_core.training.results import DONE, STOPPED
from dgs_core.training.trainer import Trainer

TUNE, MEASURE, EXTRA = "tune", "measure", "extra"
TUNING_COLUMNS = ("tuning", "optimizer", "trial", "hparams", "score", "diverged_at")
RUN_COLUMNS = (
    "arm",
    "group",
    "optimizer",
    "seed",
    "lr",
    "status",
    "diverged_at",
    "steps",
    "samples",
    "max_batch",
    "spikes",
    "chance_loss",
    "final_val_loss",
    "final_val_accuracy",
    "best_val_loss",
    "final_train_loss",
)
CURVE_COLUMNS = ("arm", "group", "seed", "step", "samples", "val_loss", "val_accuracy", "train_loss")
_REPO = Path(__file__).resolve().parents[2]


# ---------------------------------------------------------------------------------------------
# What a worker runs (module-level functions: Ray refers to them by name)
# ---------------------------------------------------------------------------------------------


def tuning_trial(spec: dict[str, Any], optimizer: str, hparams: dict[str, Any], seed: int) -> dict[str, Any]:
    """One tuning trial: :func:`run_trial`'s score, without its curve."""
    out = run_trial(StudySpec.from_dict(spec), optimizer, hparams, seed)
    return {"score": float(out["score"]), "diverged_at": int(out["diverged_at"])}


def measured_run(config: dict[str, Any], samples: int | None) -> dict[str, Any]:
    """Train ``config`` (one optimizer) and summarise it: the scalars of a ``runs.csv`` row and
    the evaluation rows of ``curves.csv``. With ``samples``, stop at the first step at which that
    many examples have been seen (the config evaluates every step, so that step is evaluated).
    """
    trainer = Trainer(TrainConfig.from_dict(config))
    result = next(iter(trainer.results.values()))
    seen = result.columns["batch_size"]
    stop = None if samples is None else (lambda: sum(seen) >= samples)
    for _ in trainer.run(stop=stop):
        pass
    frame = result.metrics
    frame["samples"] = frame["batch_size"].cumsum()
    evaluations = frame[frame["val_loss"].notna()]
    status = DONE if result.status == STOPPED else result.status  # stopped at the samples budget
    diverged = status.startswith("diverged")
    last = evaluations.iloc[-1] if len(evaluations) else None
    summary = {
        "lr": float(result.hparams["lr"]),
        "status": status,
        "diverged_at": int(status.rsplit(" ", 1)[-1]) if diverged else -1,
        "steps": int(result.steps_done),
        "samples": int(sum(seen)),
        "max_batch": int(max(seen)) if seen else 0,
        "spikes": int(metrics.count_runs(result.spike_mask())),  # docs/algorithms.md#metrics
        "chance_loss": math.log(trainer.task.num_classes),
        "final_val_loss": math.nan if diverged or last is None else float(last["val_loss"]),
        "final_val_accuracy": math.nan if diverged or last is None else float(last["val_metric"]),
        "best_val_loss": float(evaluations["val_loss"].min()) if len(evaluations) else math.nan,
        "final_train_loss": math.nan if diverged or last is None else float(last["train_loss"]),
    }
    curve = {
        "step": evaluations["step"].astype(int).tolist(),
        "samples": evaluations["samples"].astype(int).tolist(),
        "val_loss": evaluations["val_loss"].tolist(),
        "val_accuracy": evaluations["val_metric"].tolist(),
        "train_loss": evaluations["train_loss"].tolist(),
    }
    return {"summary": summary, "curve": curve}


# ---------------------------------------------------------------------------------------------
# Where the work runs
# ---------------------------------------------------------------------------------------------

_REMOTE: dict[Callable, Any] = {}


def _each(
    fn: Callable[..., dict[str, Any]],
    calls: Mapping[int, tuple[Any, ...]],
    *,
    ray_engine: bool,
    stop: Callable[[], bool],
) -> Iterator[tuple[int, dict[str, Any]]]:
    """``fn(*call)`` for every ``{index: call}``, as (index, result) in the order they finish;
    ends early (unfinished calls cancelled) once ``stop()`` is True."""
    if not ray_engine:
        for index, call in calls.items():
            if stop():
                return
            yield index, fn(*call)
        return
    import ray

    remote = _REMOTE.get(fn)
    if remote is None:
        remote = _REMOTE[fn] = ray.remote(num_cpus=1, max_retries=0)(fn)
    index_of = {remote.remote(*call): index for index, call in calls.items()}
    pending = list(index_of)
    try:
        while pending and not stop():
            done, pending = ray.wait(pending, num_returns=1, timeout=0.5)
            for ref in done:
                yield index_of[ref], ray.get(ref)
    finally:
        for ref in pending:
            ray.cancel(ref, force=True)


# ---------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------


@dataclass
class ClaimResult:
    """A claim's outcome: its tables, numbers, verdict and record (plain JSON, see
    :func:`dgs_core.claims.store.save_result` for the files)."""

    claim: Claim
    tables: dict[str, pd.DataFrame]
    numbers: dict[str, Any]
    verdict: Verdict
    record: dict[str, Any]


def best_hparams(tuning: Tuning, rows: pd.DataFrame, optimizer: str) -> dict[str, Any]:
    """The trial a grid ``SweepStudy`` would pick: the first best finite score in grid order
    (lowest for a "min" metric); no finite score: {} (the optimizer's defaults)."""
    mine = rows[(rows["tuning"] == tuning.key) & (rows["optimizer"] == optimizer)].sort_values("trial")
    finite = mine[np.isfinite(mine["score"].to_numpy(dtype=float))]
    if not len(finite):
        return {}
    sign = 1.0 if tuning.spec.mode == "min" else -1.0
    position = int(np.argmin(sign * finite["score"].to_numpy(dtype=float)))
    return json.loads(finite["hparams"].iloc[position])


class ClaimRun:
    """A claim at a budget, run on the Studies engine (see the module docstring); a Study
    (:mod:`dgs_core.studies.protocol`): :meth:`run` yields a
    :class:`~dgs_core.studies.protocol.StudyEvent` per finished piece of work (``run``: what
    finished, ``event``: its phase, "tune", "measure" or "extra"), and :meth:`progress` counts
    those pieces.

    >>> from dgs_core.claims import get_claim
    >>> run = ClaimRun(get_claim("annealing_hq"), "smoke", in_process=True)
    >>> _ = list(run.run())
    >>> run.result.verdict.outcome in ("holds", "partly", "does not hold at this scale", "inconclusive")
    True
    """

    def __init__(
        self, claim: Claim, budget: str = "full", *, address: str | None = None, in_process: bool = False
    ) -> None:
        self.claim = claim
        self.plan: Plan = claim.plan_for(budget)
        self.address = address
        self.in_process = in_process
        self.result: ClaimResult | None = None
        self.where: str | None = None
        self.seconds = 0.0  # time spent in run(), over all its calls
        # what finished, kept across a stop: call index → the worker's output
        self._tuned: dict[int, dict[str, Any]] = {}
        self._measured: dict[int, dict[str, Any]] = {}
        self._extra_done = 0
        self._started = 0.0

    def progress(self) -> tuple[int, int]:
        """(pieces of work done, pieces in all): tuning trials, measured runs, extra pieces."""
        return len(self._tuned) + len(self._measured) + self._extra_done, self.plan.total

    def _engine(self) -> bool:
        """Connect once; True when the work goes to Ray."""
        if self.where is None:
            self.where = "in process"
            if not self.in_process and (self.plan.tunings or self.plan.arms):
                from dgs_core.studies import engine

                self.where = engine.connect(self.address).address
        return self.where != "in process"

    def run(self, stop: Stop = None) -> Iterator[StudyEvent]:
        """Tune, measure, run the extra work, yielding one event per finished piece; then
        :attr:`result`. Once ``stop`` (a callable, or an object with ``is_set()``) says so, it
        returns soon after, keeping every finished trial and run; calling it again continues."""
        should_stop = getattr(stop, "is_set", stop) or (lambda: False)
        self._started = time.perf_counter()
        try:
            yield from self._run(self.plan, should_stop)
        finally:
            self.seconds += time.perf_counter() - self._started

    def _run(self, plan: Plan, stop: Callable[[], bool]) -> Iterator[StudyEvent]:
        ray_engine = self._engine()

        # 1. tuning
        calls, keys = {}, []
        for tuning in plan.tunings:
            for name in tuning.spec.optimizers:
                for trial, hparams in enumerate(tuning.trials(name)):
                    index = len(keys)
                    keys.append((tuning.key, name, trial, hparams))
                    if index not in self._tuned:
                        calls[index] = (tuning.spec.to_dict(), name, hparams, tuning.spec.seed)
        for index, out in _each(tuning_trial, calls, ray_engine=ray_engine, stop=stop):
            self._tuned[index] = out
            key, name, _, _ = keys[index]
            yield self._event(TUNE, f"{key} · {name}")
        if len(self._tuned) < len(keys):
            return  # stopped
        tuning_table = pd.DataFrame(
            [
                {
                    "tuning": key,
                    "optimizer": name,
                    "trial": trial,
                    "hparams": json.dumps(hparams, sort_keys=True),
                    **self._tuned[index],
                }
                for index, (key, name, trial, hparams) in enumerate(keys)
            ],
            columns=list(TUNING_COLUMNS),
        )
        tuned = {
            t.key: {name: best_hparams(t, tuning_table, name) for name in t.spec.optimizers}
            for t in plan.tunings
        }

        # 2. measurement: every arm at every seed, with its tuned hyperparameters
        calls, arms = {}, []
        for arm in plan.arms:
            best = tuned[arm.tuned[0]][arm.tuned[1]] if arm.tuned else None
            tuning = plan.tuning(arm.tuned[0]) if arm.tuned else None
            for seed in plan.seeds:
                index = len(arms)
                arms.append((arm, seed))
                if index not in self._measured:
                    calls[index] = (arm.configure(best, tuning, seed).to_dict(), arm.samples)
        for index, out in _each(measured_run, calls, ray_engine=ray_engine, stop=stop):
            self._measured[index] = out
            arm, seed = arms[index]
            yield self._event(MEASURE, f"{arm.label} · seed {seed}")
        if len(self._measured) < len(arms):
            return  # stopped
        tables = {"tuning": tuning_table, **_measured_tables(arms, self._measured)}

        # 3. the claim's own work, in this process (seconds: redone in full after a stop)
        if self.claim.extra is not None:
            self._extra_done = 0
            rows: dict[str, list[dict[str, Any]]] = {}
            for label, produced in self.claim.extra(plan):
                if stop():
                    self._extra_done = 0
                    return
                for name, new in produced.items():
                    rows.setdefault(name, []).extend(new)
                self._extra_done += 1
                yield self._event(EXTRA, label)
            tables.update({name: pd.DataFrame(value) for name, value in rows.items()})

        numbers = self.claim.numbers(tables, plan.extra)
        verdict = self.claim.verdict(numbers)
        seconds = self.seconds + time.perf_counter() - self._started
        record = make_record(
            self.claim, plan, tuned, tables, numbers, verdict, seconds=seconds, where=self.where or ""
        )
        self.result = ClaimResult(self.claim, tables, numbers, verdict, record)

    def _event(self, phase: str, label: str) -> StudyEvent:
        done, total = self.progress()
        return StudyEvent(run=label, event=phase, done=done, total=total)


def _measured_tables(
    arms: Sequence[tuple[Any, int]], outs: Mapping[int, dict[str, Any]]
) -> dict[str, pd.DataFrame]:
    """``runs`` (one row per arm and seed) and ``curves`` (its evaluations) from the workers."""
    runs, curves = [], []
    for index, (arm, seed) in enumerate(arms):
        out = outs[index]
        runs.append(
            {"arm": arm.label, "group": arm.group, "optimizer": arm.optimizer, "seed": seed, **out["summary"]}
        )
        curve = pd.DataFrame(out["curve"])
        curve.insert(0, "arm", arm.label)
        curve.insert(1, "group", arm.group)
        curve.insert(2, "seed", seed)
        curves.append(curve)
    return {
        "runs": pd.DataFrame(runs, columns=list(RUN_COLUMNS)),
        "curves": pd.concat(curves, ignore_index=True)[list(CURVE_COLUMNS)]
        if curves
        else pd.DataFrame(columns=list(CURVE_COLUMNS)),
    }


# ---------------------------------------------------------------------------------------------
# The record
# ---------------------------------------------------------------------------------------------


def code_version() -> dict[str, Any]:
    """dgs_core's version and, in a git checkout, the commit and whether the tree had changes."""
    out: dict[str, Any] = {"dgs_core": dgs_core.__version__, "git_commit": None, "git_dirty": None}
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=_REPO, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=_REPO,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return out
    return {**out, "git_commit": commit or None, "git_dirty": bool(status.strip())}


def _created() -> str:
    """Now (UTC), or ``SOURCE_DATE_EPOCH`` when set (reproducible files)."""
    import os

    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    moment = datetime.fromtimestamp(int(epoch), UTC) if epoch else datetime.now(UTC)
    return moment.replace(microsecond=0).isoformat()


def experiments(
    claim: Claim, plan: Plan, tuned: Mapping[str, Mapping[str, Any]], tables: Mapping[str, pd.DataFrame]
) -> list[dict[str, Any]]:
    """The configurations a card opens in the labs: whatever the plan adds
    (``extra["experiments"]``: the Annealing lab's settings), the claim's own (the surfaces at
    their tuned lrs), and each arm as run at the first seed (tuned)."""
    out = list(plan.extra.get("experiments", ()))
    if claim.lab_configs is not None:
        out.extend(claim.lab_configs(plan, tables))
    for arm in plan.arms:
        best = tuned[arm.tuned[0]][arm.tuned[1]] if arm.tuned else None
        tuning = plan.tuning(arm.tuned[0]) if arm.tuned else None
        config = arm.configure(best, tuning, plan.seeds[0])
        out.append({"label": arm.label, "lab": "training", "config": config.to_dict()})
    return out


def make_record(
    claim: Claim,
    plan: Plan,
    tuned: Mapping[str, Mapping[str, Any]],
    tables: Mapping[str, pd.DataFrame],
    numbers: Mapping[str, Any],
    verdict: Verdict,
    *,
    seconds: float,
    where: str,
) -> dict[str, Any]:
    """The JSON record shipped beside the tables."""
    import torch

    return {
        **claim.describe(),
        "budget": plan.budget,
        "config_hash": plan.config_hash,
        "code_version": code_version(),
        "torch": torch.__version__,
        "created": _created(),
        "seconds": round(seconds, 1),
        "engine": where,
        "seeds": list(plan.seeds),
        "tuned": {key: dict(best) for key, best in tuned.items()},
        "experiments": experiments(claim, plan, tuned, tables),
        "tables": sorted(tables),
        "numbers": dict(numbers),
        "verdict": verdict.to_dict(),
    }
