"""Running a :class:`~dgs_core.studies.sweep.StudySpec` on Ray Tune, and what it yields.

:class:`SweepStudy` follows the Study protocol: ``run(stop)`` yields a :class:`SweepEvent` per
finished trial, and ``progress()`` says (trials done, trials in all). One plan (:class:`_Plan`:
the tuning trials, then the winners over the seeds) picks every trial. The trials run as one
Ray Tune experiment, whose searcher is the plan (the reference path; ASHA and clusters), or on
the embedded Ray's warm trial processes (:mod:`~dgs_core.studies.runners`), the same
``run_trial`` without a fresh process per study. ``stop()`` returning True cancels
the running trials; the finished ones are kept. :attr:`SweepStudy.result` is a
:class:`StudyResult`: the trials as a pandas frame, the seed runs' curves, the best
configuration per optimizer.
"""

from __future__ import annotations

import json
import math
import os
import queue
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from dgs_core.params import invalid
from dgs_core.studies import engine
from dgs_core.studies.runners import RunnerPool
from dgs_core.studies.sweep import SEEDS, TUNE, Range, StudySpec, run_trial
from dgs_core.training.config import TrainConfig

# Tune's own result files (JSON, CSV, TensorBoard per trial) are not used: the results are
# collected in memory by a callback. Writing them cost ~0.1 s per trial here.
os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")

TRIAL_COLUMNS = (
    "phase",
    "optimizer",
    "trial",
    "seed",
    "hparams",
    "score",
    "status",
    "diverged_at",
    "step",
    "seconds",
)
CURVE_COLUMNS = ("optimizer", "seed", "step", "value")


@dataclass(frozen=True)
class SweepEvent:
    """One finished trial: the study's progress and the trial's row."""

    done: int
    total: int
    phase: str
    row: Mapping[str, Any]


@dataclass
class StudyResult:
    """What a study measured.

    Attributes:
        spec: the study.
        trials: one row per trial (:data:`TRIAL_COLUMNS`; ``hparams`` as JSON text, and one
            ``hp.<name>`` column per searched hyperparameter).
        curves: the seed runs' curves, long format: optimizer, seed, step, value (the
            validation loss for training studies, f − f* for surface studies).
        address: where it ran ("local" or the cluster's address).
    """

    spec: StudySpec
    trials: pd.DataFrame
    curves: pd.DataFrame
    address: str = "local"

    @property
    def best(self) -> pd.DataFrame:
        """Per optimizer: its best tuned configuration, that trial's score, and the seeds'
        mean and standard deviation of the score (NaN where a phase did not finish)."""
        rows = []
        ascending = self.spec.mode == "min"
        for name in self.spec.optimizers:
            tuned = self.trials[(self.trials["phase"] == TUNE) & (self.trials["optimizer"] == name)]
            seeds = self.trials[(self.trials["phase"] == SEEDS) & (self.trials["optimizer"] == name)]
            finite = tuned[np.isfinite(tuned["score"])]
            best = finite.sort_values("score", ascending=ascending, kind="stable").head(1)
            scores = seeds["score"].to_numpy(dtype=float)
            rows.append(
                {
                    "optimizer": name,
                    "hparams": best["hparams"].iloc[0] if len(best) else "",
                    "tuned_score": float(best["score"].iloc[0]) if len(best) else math.nan,
                    "seed_mean": float(np.mean(scores)) if len(scores) else math.nan,
                    "seed_std": float(np.std(scores, ddof=1)) if len(scores) > 1 else math.nan,
                    "seeds": len(scores),
                    "diverged": int((tuned["diverged_at"] >= 0).sum()),
                    "trials": len(tuned),
                }
            )
        return pd.DataFrame(rows)

    def best_hparams(self, optimizer: str) -> dict[str, Any]:
        """The best tuned hyperparameters of ``optimizer`` (empty when no trial finished)."""
        text = self.best.set_index("optimizer").loc[optimizer, "hparams"]
        return json.loads(text) if text else {}

    def tuned_config(self, *, eval_every: int, diag_every: int, device: str = "cpu") -> TrainConfig:
        """The tuned configurations as one ordinary training run: every optimizer at its best
        hyperparameters (its defaults where no trial finished) on the study's task, model,
        steps, batch size and seed, side by side — what the Training lab trains live."""
        spec = self.spec
        if spec.kind != "training":
            raise invalid("kind", spec.kind, "a training study (a surface study has no training run)")
        return TrainConfig(
            task=spec.task,
            task_params=spec.task_params,
            model=spec.model,
            optimizers=[(name, self.best_hparams(name)) for name in spec.optimizers],
            steps=spec.steps,
            batch_size=spec.batch_size,
            eval_every=eval_every,
            diag_every=diag_every,
            seed=spec.seed,
            device=device,
        )


def grid_points(ranges: Mapping[str, Range], trials: int) -> list[dict[str, Any]]:
    """``trials`` configurations spread over the ranges: the product of evenly spaced values per
    hyperparameter (log-spaced on a log scale), thinned evenly to exactly ``trials``."""
    names = list(ranges)
    per_axis = max(1, math.ceil(trials ** (1 / len(names))))
    axes = []
    for hp in names:
        rng = ranges[hp]
        if rng.choices is not None:
            axes.append(list(rng.choices))
        elif rng.log:
            axes.append(np.geomspace(rng.low, rng.high, per_axis).tolist())
        else:
            axes.append(np.linspace(rng.low, rng.high, per_axis).tolist())
    grid = [dict(zip(names, values, strict=True)) for values in _product(axes)]
    keep = np.unique(np.round(np.linspace(0, len(grid) - 1, min(trials, len(grid)))).astype(int))
    return [grid[i] for i in keep]


def _product(axes: list[list[Any]]) -> list[tuple[Any, ...]]:
    out: list[tuple[Any, ...]] = [()]
    for axis in axes:
        out = [(*prefix, value) for prefix in out for value in axis]
    return out


def _trainable(config: dict[str, Any], spec: dict[str, Any]) -> None:
    """What a Ray worker runs for one trial (importable by reference).

    Every evaluation is reported only when ASHA reads them: a function trainable's
    ``tune.report`` waits until the driver's Tune loop has taken the result (a round trip per
    report), and nothing else reads the intermediate results (the rows, the search and the
    progress use the final one).
    """
    from ray import tune

    study = StudySpec.from_dict(spec)
    started = time.perf_counter()
    final = run_trial(
        study,
        config["optimizer"],
        config["hparams"],
        config["seed"],
        report=tune.report if _early_stopping(study) else None,
    )
    tune.report(
        {
            **{k: v for k, v in final.items() if k != "curve"},
            "curve": final["curve"],
            "seconds": time.perf_counter() - started,
            "final": True,
        }
    )


# The running studies' in-memory sinks, by id. Tune pickles its callbacks and stoppers with the
# experiment's state, so those hold only an id (a queue or a lock cannot be pickled).
_SINKS: dict[str, tuple[list[dict], queue.Queue, list[int], Callable[[], bool]]] = {}


def _sink(key: str) -> tuple[list[dict], queue.Queue, list[int], Callable[[], bool]]:
    # a module-level function: cloudpickle refers to it by name, so the sinks are never pickled
    return _SINKS[key]


class _Collector:
    """A Tune callback (built lazily: Ray's classes load on first use) that keeps every trial's
    last result in memory and queues a row per finished trial."""

    @staticmethod
    def make(spec: StudySpec, sink: str) -> Any:
        from ray.tune import Callback

        class Collector(Callback):
            def __init__(self) -> None:
                self.last: dict[str, dict] = {}

            def __getstate__(self) -> dict:
                return {"last": {}}

            def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
                self.last[trial.trial_id] = result

            def _finish(self, trial, status: str) -> None:
                _record(spec, sink, trial.config, self.last.get(trial.trial_id, {}), status)

            def on_trial_complete(self, iteration, trials, trial, **info) -> None:
                self._finish(trial, "done")

            def on_trial_error(self, iteration, trials, trial, **info) -> None:
                self._finish(trial, "error")

        return Collector()


def _record(
    spec: StudySpec, sink: str, config: Mapping[str, Any], result: Mapping[str, Any], status: str
) -> None:
    """A finished trial's row, from its config and last result, added to the study's sink."""
    rows, out, counter, _ = _sink(sink)
    phase = config["phase"]
    diverged = int(result.get("diverged_at", -1))
    if status == "done" and diverged >= 0:
        status = f"diverged at step {diverged}"
    elif status == "done" and not result.get("final"):
        status = "stopped early (ASHA)"
    row = {
        "phase": phase,
        "optimizer": config["optimizer"],
        "trial": len([r for r in rows if r["phase"] == phase and r["optimizer"] == config["optimizer"]]),
        "seed": int(config["seed"]),
        "hparams": json.dumps(config["hparams"], sort_keys=True),
        "score": float(result.get("score", _worst(spec))),
        "status": status,
        "diverged_at": diverged,
        "step": int(result.get("step", 0)),
        "seconds": float(result.get("seconds", result.get("time_total_s", math.nan))),
        "curve": result.get("curve"),
    }
    rows.append(row)
    counter[0] += 1
    out.put((counter[0], row))  # the count with the row: two trials may end between two reads


def _worst(spec: StudySpec) -> float:
    return math.inf if spec.mode == "min" else -math.inf


def _sample(
    ranges: Mapping[str, Range], rng: np.random.Generator, integer: Mapping[str, bool]
) -> dict[str, Any]:
    """One random configuration: log-uniform, uniform, an integer, or one of the choices."""
    out: dict[str, Any] = {}
    for hp, r in ranges.items():
        if r.choices is not None:
            out[hp] = r.choices[int(rng.integers(len(r.choices)))]
            continue
        value = (
            math.exp(rng.uniform(math.log(r.low), math.log(r.high))) if r.log else rng.uniform(r.low, r.high)
        )
        out[hp] = round(value) if integer[hp] else float(value)
    return out


def _optuna_space(ranges: Mapping[str, Range], integer: Mapping[str, bool]) -> dict[str, Any]:
    """The ranges as Optuna distributions (what Ray Tune's OptunaSearch adapter takes)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space: dict[str, Any] = {}
    for hp, r in ranges.items():
        if r.choices is not None:
            space[hp] = optuna.distributions.CategoricalDistribution(list(r.choices))
        elif integer[hp]:
            space[hp] = optuna.distributions.IntDistribution(int(r.low), int(r.high), log=r.log)
        else:
            space[hp] = optuna.distributions.FloatDistribution(r.low, r.high, log=r.log)
    return space


def _integer(spec: StudySpec, name: str) -> dict[str, bool]:
    from dgs_core.optim import registry

    info = registry.get(name)
    return {hp: info.hyperparam(hp).integer for hp in spec.space[name]}


class _Plan:
    """What a study runs, in order: the tuning trials (the same number per optimizer,
    interleaved so every optimizer progresses together), then each optimizer's best configuration
    over the seeds. Plain data (Tune pickles its searcher); the searcher below asks it."""

    def __init__(self, spec: StudySpec) -> None:
        self.spec = spec
        self.results: dict[str, dict[str, Any]] = {}  # trial id → {optimizer, hparams, score}
        self.phase_of: dict[str, str] = {}
        self.order = [name for _ in range(spec.trials) for name in spec.optimizers]
        self.issued = 0
        self.fixed: dict[str, list[dict[str, Any]]] = {}  # random and grid: every trial's hparams
        self.tpe: dict[str, Any] = {}
        for k, name in enumerate(spec.optimizers):
            integer = _integer(spec, name)
            if spec.search == "grid":
                self.fixed[name] = grid_points(spec.space[name], spec.trials)
            elif spec.search == "random":
                rng = np.random.default_rng([spec.seed, k])
                self.fixed[name] = [_sample(spec.space[name], rng, integer) for _ in range(spec.trials)]
            else:
                from ray.tune.search.optuna import OptunaSearch

                self.tpe[name] = OptunaSearch(
                    space=_optuna_space(spec.space[name], integer),
                    metric="score",
                    mode=spec.mode,
                    seed=spec.seed + k,
                )
        self.used = dict.fromkeys(spec.optimizers, 0)
        self.seed_runs: list[dict[str, Any]] | None = None

    def next(self, trial_id: str) -> dict[str, Any] | str | None:
        """The next trial's config, None to wait (tuning still running), "finished"."""
        spec = self.spec
        while self.issued < len(self.order):
            name = self.order[self.issued]
            index = self.used[name]
            if name in self.tpe:
                hparams = self.tpe[name].suggest(trial_id)
                if hparams is None:
                    return None
            else:
                if index >= len(self.fixed[name]):  # a grid thinner than the budget
                    self.issued += 1
                    continue
                hparams = self.fixed[name][index]
            self.issued += 1
            self.used[name] += 1
            self.phase_of[trial_id] = TUNE
            self.results[trial_id] = {"optimizer": name, "hparams": dict(hparams)}
            return {"phase": TUNE, "optimizer": name, "seed": spec.seed, "hparams": dict(hparams)}
        if self.seed_runs is None:
            tuned = [r for t, r in self.results.items() if self.phase_of[t] == TUNE]
            if any("score" not in r for r in tuned):
                return None  # the winners are not known yet
            self.seed_runs = [
                {"phase": SEEDS, "optimizer": name, "seed": spec.seed + i, "hparams": self.best(name)}
                for name in spec.optimizers
                for i in range(spec.seeds)
            ]
        if not self.seed_runs:
            return "finished"
        self.phase_of[trial_id] = SEEDS
        return self.seed_runs.pop(0)

    def best(self, name: str) -> dict[str, Any]:
        sign = 1.0 if self.spec.mode == "min" else -1.0
        tuned = [
            r
            for t, r in self.results.items()
            if self.phase_of[t] == TUNE and r["optimizer"] == name and math.isfinite(r.get("score", math.inf))
        ]
        if not tuned:  # every trial diverged: the default configuration
            return {}
        return dict(min(tuned, key=lambda r: sign * r["score"])["hparams"])

    def complete(self, trial_id: str, result: Mapping[str, Any] | None) -> None:
        if trial_id in self.results:
            score = (result or {}).get("score")
            self.results[trial_id]["score"] = float(score) if score is not None else _worst(self.spec)
            name = self.results[trial_id]["optimizer"]
            if name in self.tpe:
                self.tpe[name].on_trial_complete(trial_id, dict(result or {"score": _worst(self.spec)}))


def _searcher(plan: _Plan) -> Any:
    from ray.tune.search import Searcher

    class StudySearcher(Searcher):
        def __init__(self) -> None:
            super().__init__(metric="score", mode=plan.spec.mode)

        def suggest(self, trial_id: str) -> dict[str, Any] | None:
            out = plan.next(trial_id)
            return Searcher.FINISHED if out == "finished" else out

        def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
            plan.complete(trial_id, result)

    return StudySearcher()


def _early_stopping(spec: StudySpec) -> bool:
    """ASHA stops poor tuning trials early (training studies: a surface trial reports once)."""
    return spec.early_stopping == "asha" and spec.kind == "training"


def _scheduler(spec: StudySpec) -> Any:
    """ASHA on the tuning trials (never on the seed runs), or first-in-first-out."""
    from ray.tune.schedulers import AsyncHyperBandScheduler, FIFOScheduler, TrialScheduler

    if not _early_stopping(spec):
        return FIFOScheduler()
    evaluations = math.ceil(spec.steps / min(spec.eval_every, spec.steps)) + 1  # + the final report

    class TuningASHA(AsyncHyperBandScheduler):
        def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
            if trial.config.get("phase") == SEEDS:
                return TrialScheduler.CONTINUE
            return super().on_trial_result(tune_controller, trial, result)

    return TuningASHA(max_t=evaluations, grace_period=max(1, evaluations // 4), reduction_factor=2)


class SweepStudy:
    """A study run on Ray Tune (see the module docstring)."""

    def __init__(self, spec: StudySpec, *, address: str | None = None, warm_runners: bool = True) -> None:
        """``warm_runners``: on the embedded Ray, run the trials on its warm trial processes
        (:mod:`~dgs_core.studies.runners`) unless ASHA stops them early; False runs every study
        on Ray Tune's own trial processes (the reference path, with the same numbers)."""
        if not isinstance(spec, StudySpec):
            raise TypeError("SweepStudy needs a StudySpec")
        self.spec = spec
        self.address = address
        self.warm_runners = warm_runners
        self.rows: list[dict[str, Any]] = []
        self._done = [0]
        self.result: StudyResult | None = None
        self.error: str | None = None
        self.traceback: str | None = None

    def progress(self) -> tuple[int, int]:
        """(trials finished, trials in all)."""
        return self._done[0], self.spec.trials_total

    def snapshot(self) -> StudyResult:
        """What has finished so far, as a result (readable from another thread while ``run``
        goes on); after ``run`` ends, :attr:`result`."""
        if self.result is not None:
            return self.result
        return self._result(self.address or engine.ADDRESS_LOCAL)

    def run(self, stop: Callable[[], bool] | None = None) -> Iterator[SweepEvent]:
        """Tune every optimizer, then re-run the winners over the seeds; yields one event per
        finished trial. Keeps what finished when ``stop()`` turns True."""
        stop = stop or (lambda: False)
        info = engine.connect(self.address)
        events: queue.Queue = queue.Queue()
        thread = threading.Thread(
            target=self._fit, args=(info.workers, events, stop), name="dgs-study", daemon=True
        )
        thread.start()
        while thread.is_alive() or not events.empty():
            try:
                done, row = events.get(timeout=0.2)
            except queue.Empty:
                continue
            yield SweepEvent(done, self.spec.trials_total, row["phase"], row)
        thread.join()
        if self.error is not None:
            raise RuntimeError(self.error)
        self.result = self._result(info.address)

    def _fit(self, workers: int, out: queue.Queue, stop: Callable[[], bool]) -> None:
        sink = f"study-{id(self)}"
        _SINKS[sink] = (self.rows, out, self._done, stop)
        pool = engine.runner_pool() if self.warm_runners and not _early_stopping(self.spec) else None
        try:
            if pool is not None:
                self._fit_on_runners(pool, sink, workers, stop)
            else:
                self._fit_on_tune(sink, workers)
        except Exception as exc:  # reported by run() in the caller's thread
            self.error = f"{type(exc).__name__}: {exc}"
            self.traceback = traceback.format_exc()
        finally:
            _SINKS.pop(sink, None)

    def _fit_on_tune(self, sink: str, workers: int) -> None:
        """The study as one Ray Tune experiment: the plan is its searcher, a trial its process."""
        from ray import tune

        spec = self.spec
        with tempfile.TemporaryDirectory(prefix="dgs-study-") as storage:
            tuner = tune.Tuner(
                tune.with_parameters(_trainable, spec=spec.to_dict()),
                tune_config=tune.TuneConfig(
                    metric="score",
                    mode=spec.mode,
                    search_alg=_searcher(_Plan(spec)),
                    scheduler=_scheduler(spec),
                    num_samples=spec.trials_total,
                    max_concurrent_trials=spec.max_concurrent or workers,
                    reuse_actors=True,
                ),
                run_config=tune.RunConfig(
                    name="study",
                    storage_path=storage,
                    verbose=0,
                    log_to_file=False,
                    callbacks=[_Collector.make(spec, sink)],
                    stop=_StopAll.make(sink),
                ),
            )
            with _quiet_tune():
                tuner.fit()

    def _fit_on_runners(self, pool: RunnerPool, sink: str, workers: int, stop: Callable[[], bool]) -> None:
        """The study on the embedded Ray's warm runners: the plan picks every trial, as Tune asks
        it on the other path; up to ``max_concurrent`` trials run at once. Stop ends the running
        trials (their runners are replaced) and keeps the finished ones."""
        import ray

        spec, plan = self.spec, _Plan(self.spec)
        payload = spec.to_dict()
        at_once = min(spec.max_concurrent or workers, pool.count)
        running: dict[Any, tuple[str, Any, dict[str, Any]]] = {}  # result ref → (id, runner, config)
        issued, finished = 0, False
        while not stop():
            while not finished and len(running) < at_once:
                runner = pool.acquire(timeout_s=0.2)  # None: another study holds every runner
                if runner is None:
                    break
                trial_id = f"trial-{issued}"
                config = plan.next(trial_id)
                if not isinstance(config, dict):  # None: waiting for the tuning's winners
                    pool.release(runner)
                    finished = config == "finished"
                    if not running and not finished:
                        raise RuntimeError("the study's plan waits for no running trial")
                    break
                issued += 1
                ref = runner.run.remote(payload, config["optimizer"], config["hparams"], config["seed"])
                running[ref] = (trial_id, runner, config)
            if finished and not running:
                return
            ready, _ = ray.wait(list(running), num_returns=1, timeout=0.2) if running else ([], [])
            for ref in ready:
                trial_id, runner, config = running.pop(ref)
                try:
                    result, status = ray.get(ref), "done"
                    pool.release(runner)
                except ray.exceptions.RayActorError:  # the runner died: a fresh one replaces it
                    result, status = {}, "error"
                    pool.replace(runner)
                except ray.exceptions.RayTaskError:  # the trial raised
                    result, status = {}, "error"
                    pool.release(runner)
                plan.complete(trial_id, result or None)
                _record(spec, sink, config, result, status)
        for _, runner, _ in running.values():
            pool.replace(runner)

    def _frame(self, rows: list[dict[str, Any]]) -> pd.DataFrame:
        rows = [{k: v for k, v in r.items() if k != "curve"} for r in rows]
        frame = pd.DataFrame(rows, columns=list(TRIAL_COLUMNS))
        frame = frame.sort_values(["phase", "optimizer", "trial"], key=_order(self.spec), kind="stable")
        return with_hparam_columns(frame.reset_index(drop=True), self.spec)

    def _result(self, address: str) -> StudyResult:
        rows = list(self.rows)  # Tune's thread may append while a page reads
        curves = []
        for row in rows:
            if row["phase"] != SEEDS or not row.get("curve"):
                continue
            curve = row["curve"]
            values = curve["val_loss"] if self.spec.kind == "training" else curve["gap"]
            for step, value in zip(curve["step"], values, strict=True):
                curves.append(
                    {
                        "optimizer": row["optimizer"],
                        "seed": row["seed"],
                        "step": int(step),
                        "value": float(value),
                    }
                )
        frame = pd.DataFrame(curves, columns=list(CURVE_COLUMNS))
        frame = frame.sort_values(["optimizer", "seed", "step"], key=_order(self.spec), kind="stable")
        return StudyResult(self.spec, self._frame(rows), frame.reset_index(drop=True), address)


def with_hparam_columns(trials: pd.DataFrame, spec: StudySpec) -> pd.DataFrame:
    """``trials`` with one ``hp.<name>`` column per searched hyperparameter (from the JSON)."""
    out = trials.copy()
    for hp in sorted({hp for ranges in spec.space.values() for hp in ranges}):
        out[f"hp.{hp}"] = [json.loads(h).get(hp, math.nan) for h in out["hparams"]]
    return out


def _order(spec: StudySpec) -> Callable[[pd.Series], pd.Series]:
    """Sort keys: tuning before seeds, optimizers in the spec's order."""
    ranks = {TUNE: 0, SEEDS: 1, **{name: k for k, name in enumerate(spec.optimizers)}}

    def key(column: pd.Series) -> pd.Series:
        return column.map(ranks) if column.name in ("phase", "optimizer") else column

    return key


class _quiet_tune:  # noqa: N801 (a context manager)
    """Tune logs a warning per trial when it builds its ResultGrid from files we do not write."""

    def __enter__(self) -> None:
        import logging

        self.loggers = [logging.getLogger(n) for n in ("ray.tune", "ray.tune.result_grid", "ray.tune.tuner")]
        self.levels = [lg.level for lg in self.loggers]
        for lg in self.loggers:
            lg.setLevel(logging.ERROR)

    def __exit__(self, *exc: object) -> None:
        for lg, level in zip(self.loggers, self.levels, strict=True):
            lg.setLevel(level)


class _StopAll:
    @staticmethod
    def make(sink: str) -> Any:
        from ray.tune import Stopper

        class StopAll(Stopper):
            def __call__(self, trial_id: str, result: dict) -> bool:
                return False

            def stop_all(self) -> bool:
                return bool(_sink(sink)[3]())

        return StopAll()
