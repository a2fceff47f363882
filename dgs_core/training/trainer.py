"""The multi-optimizer trainer: one task, one initialisation, one data order, several optimizers.

Every optimizer in a :class:`TrainConfig` trains its own copy of the same freshly initialised
model on the same batches (same seed → same init and the same shuffles), in lockstep, so the
live views grow together. One step of one optimizer, top to bottom::

    lr       = optimizer lr × schedule(t) / schedule's base lr       (or the annealing plan's)
    x, y     = next batch of the data source (main, or the clean HQ subset when annealing)
    if adaptive batches and a test is due:  optimizer.propose_batch_size(per-sample grads)
    if AdaScale:  optimizer.measure_gain(the S groups' gradients)
    diagnostics.before_step()                                        (remembers θ_t)
    loss     = optimizer.step(closure)    closure: zero grads, loss(model(x), y), backward
    record   = diagnostics.after_step(t, lr)                         (every diag_every steps)

A record keeps a copy of the tracked values of its step; its summaries are computed when it is
first read (``Diagnostics(lazy=True)``), by whoever reads it: the page when it redraws, all the
records it has not read yet in one go.

A non-finite loss stops that optimizer with "diverged at step t"; the others go on. Every
``eval_every`` steps the trainer evaluates each model on the whole training and validation
sets (and, for 2-D tasks, keeps a copy of the weights for the decision boundary; for every
task, a flat float32 copy in the thinned weight trajectory, ``RunResult.trajectory``) and
yields a :class:`ProgressEvent`. ``run(pace=N)`` spreads the run over about N seconds (a sleep
after each step, so a page can watch it grow; a run slower than that goes as fast as it can):
the pace is how a run is watched, not what it computes, so it is no part of the configuration.
A stop request ends the run cleanly: what was recorded stays in
:attr:`Trainer.results`, and :meth:`Trainer.run` continues where it stopped. From
:meth:`Trainer.state_dict` a run resumes with bit-identical metrics, weights and diagnostics on
the CPU (the state holds each lane's :class:`~dgs_core.diagnostics.Diagnostics` state: its
importance EMA and step counts).

An optimizer with ``eval()`` and ``train()`` methods (Schedule-Free AdamW, which trains at y and
is evaluated at the average x) is switched to ``eval()`` for each evaluation and back to
``train()`` after it, as its authors do. AdaScale SGD (registry ``group_gradients``) draws S·b
examples per step, S its ``scale`` and b the run's batch size; before the step it gets the S
groups' mean gradients (consecutive groups of b examples, ``batching.group_grads``), and the
schedule is read at ⌊τ⌋, its scale-invariant iteration count, instead of t. The run still takes
``config.steps`` steps: once τ passes the schedule's end the lr stays at its last value.

Steps: row ``step = t`` of the metrics is the t-th update (t = 1, 2, …); its ``lr`` is
``schedule(t − 1)`` (schedules count from 0), its ``loss`` the mini-batch loss the optimizer
reported (for ExtraSGD: at the extrapolated point), and its validation columns, on evaluation
steps, describe the parameters after the update.

>>> config = TrainConfig(task="moons", optimizers=[("sgd", {"lr": 0.1}), ("adam", {})], steps=20,
...                      eval_every=10, task_params={"n_samples": 200})
>>> trainer = Trainer(config)
>>> events = list(trainer.run())
>>> [e.step for e in events], trainer.results["adam"].status
([10, 20], 'done')
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.functional import cross_entropy

from dgs_core import metrics
from dgs_core.device import resolve_device, small_tensor_mode
from dgs_core.diagnostics import Diagnostics
from dgs_core.limits import check_diagnostics
from dgs_core.optim import registry
from dgs_core.params import Param, invalid
from dgs_core.schedules import ScheduleSpec, build
from dgs_core.schedules.annealing import AnnealingController, AnnealingPlan
from dgs_core.training.batching import group_grads, per_sample_grads
from dgs_core.training.config import OptimizerSpec, TrainConfig
from dgs_core.training.models import build_model
from dgs_core.training.results import (
    DONE,
    EVAL_COLUMNS,
    METRIC_COLUMNS,
    RUNNING,
    STOPPED,
    ProgressEvent,
    RunResult,
    trajectory_capacity,
)
from dgs_core.training.tasks import Task, make_task

# run(pace=…): the seconds a run is spread over (0: as fast as possible), and how often a paced
# wait looks at the stop request
PACE = Param("pace", 0.0, low=0.0, high=3600.0, help="the run lasts about this many seconds (0: fast)")
PACE_TICK_S = 0.05

# ---------------------------------------------------------------------------------------------
# The data order
# ---------------------------------------------------------------------------------------------


class BatchOrder:
    """Epoch-wise shuffles of each data source, a pure function of (seed, source, epoch).

    A batch of ``b`` takes the next ``b`` indices of the current epoch's permutation; when
    fewer than ``b`` are left, the next epoch starts (the remainder is dropped, as
    ``drop_last``). Two optimizers with the same batch sizes see the same batches; the state
    is two integers per source, so a resumed run continues the same order.
    """

    def __init__(self, seed: int, sizes: Mapping[str, int], device: torch.device) -> None:
        self.seed, self.sizes, self.device = seed, dict(sizes), device
        self.cursor = {source: [0, 0] for source in self.sizes}  # [epoch, position]
        self._perm: dict[str, tuple[int, torch.Tensor]] = {}

    def next(self, source: str, batch_size: int) -> torch.Tensor:
        """Indices of the next batch from ``source`` (at most the source's size)."""
        n = self.sizes[source]
        if n == 0:
            raise ValueError(f"Invalid data source: {source!r} (it is empty; raise the task's hq_fraction)")
        b = min(batch_size, n)
        epoch, position = self.cursor[source]
        if position + b > n:
            epoch, position = epoch + 1, 0
        self.cursor[source] = [epoch, position + b]
        return self._permutation(source, epoch)[position : position + b]

    def _permutation(self, source: str, epoch: int) -> torch.Tensor:
        cached = self._perm.get(source)
        if cached is None or cached[0] != epoch:
            key = [self.seed, list(self.sizes).index(source), epoch]
            seed = int(np.random.SeedSequence(key).generate_state(1, dtype=np.uint64)[0] >> 1)
            generator = torch.Generator().manual_seed(seed)
            cached = (epoch, torch.randperm(self.sizes[source], generator=generator).to(self.device))
            self._perm[source] = cached
        return cached[1]

    def state_dict(self) -> dict[str, list[int]]:
        return {source: list(c) for source, c in self.cursor.items()}

    def load_state_dict(self, state: Mapping[str, Sequence[int]]) -> None:
        self.cursor = {source: [int(state[source][0]), int(state[source][1])] for source in self.sizes}


# ---------------------------------------------------------------------------------------------
# The trainer
# ---------------------------------------------------------------------------------------------


def _loss_and_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``model`` on (x, y)."""
    logits = model(x)
    return float(cross_entropy(logits, y)), float((logits.argmax(dim=-1) == y).float().mean())


def _flat_grads(model: nn.Module) -> torch.Tensor | None:
    """One zeroed buffer for all of ``model``'s gradients, each ``p.grad`` a view of it, in the
    parameters' order; None when the parameters differ in dtype or device.

    Zeroing it is one call where ``zero_grad(set_to_none=True)`` is a Python loop, and backward
    adds each new gradient into its view (``p.grad += g`` when a gradient exists): the same
    values, since every parameter of the lab's models gets a gradient on every step (a test
    checks it), so none would have been None. The trainer hands the buffer to the diagnostics
    (``Diagnostics(flat_grads=...)``), which then read all the gradients as one tensor.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    if not params or len({(p.dtype, p.device) for p in params}) > 1:
        return None
    flat = torch.zeros(sum(p.numel() for p in params), dtype=params[0].dtype, device=params[0].device)
    for p, view in zip(params, flat.split([p.numel() for p in params]), strict=True):
        p.grad = view.view(p.shape)
    return flat


def _schedule_peak(spec: ScheduleSpec) -> float:
    """The lr a schedule is relative to: its base_lr, or the largest base_lr of a chain."""
    if spec.segments:
        return max(_schedule_peak(s) for _, s in spec.segments)
    return float(spec.params["base_lr"])


def _plan_reference(plan: AnnealingPlan) -> float:
    """The lr an annealing plan is relative to: its first phase's base_lr or initial_lr."""
    first = plan.phases[0]
    if first.schedule is not None:
        return _schedule_peak(first.schedule)
    return float(first.plateau.initial_lr)  # type: ignore[union-attr,arg-type]  # required by AnnealingPlan


@dataclass(eq=False)
class _Lane:
    """The live objects of one optimizer's run."""

    result: RunResult
    model: nn.Module
    optimizer: torch.optim.Optimizer
    lr: float  # the optimizer's configured lr
    adaptive: bool  # grows its batch by its batch-size test
    batches: BatchOrder
    diagnostics: Diagnostics | None
    controller: AnnealingController | None
    fixed_batch: int
    gain_groups: int = 0  # AdaScale's S: the batch is S groups of fixed_batch (0: not AdaScale)
    samples: int = 0  # examples seen, for the epoch column
    weights: list[tuple[str, torch.Tensor]] = field(default_factory=list)  # state_dict's items (in place)
    grads: torch.Tensor | None = None  # every p.grad is a view of this flat buffer (_flat_grads)

    @property
    def active(self) -> bool:
        return self.result.status == RUNNING

    @property
    def batch_size(self) -> int:
        """The optimizer's own batch size (AdAdaGrad family), S times the run's (AdaScale), else
        the run's."""
        if self.gain_groups:
            return self.gain_groups * self.fixed_batch
        return int(getattr(self.optimizer, "batch_size", self.fixed_batch))


class Trainer:
    """Runs the optimizers of a :class:`TrainConfig` side by side; see the module docstring.

    Args:
        config: the run.
        schedule: a callable ``step -> lr factor`` overriding ``config.schedule`` (each
            optimizer's lr is multiplied by it); not saved with the config. A schedule object
            built from a spec (``dgs_core.schedules.build``) is scaled by its base lr instead,
            exactly like ``config.schedule``.
    """

    def __init__(self, config: TrainConfig, *, schedule: Callable[[int], float] | None = None) -> None:
        if not isinstance(config, TrainConfig):
            raise invalid("config", config, "a TrainConfig")
        self.config = config
        self.device = resolve_device(config.device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"Invalid device: {config.device!r} (CUDA is not available here)")
        self.task: Task = make_task(config.task, seed=config.seed, **config.task_params).to(self.device)
        self._sources = {name: self.task.source(name) for name in ("main", "hq")}
        self._n_train = self.task.n_train
        plan = config.annealing
        if (
            plan is not None
            and any(p.data_source == "hq" for p in plan.phases)
            and not len(self.task.hq_index)
        ):
            raise ValueError(
                f"Invalid hq_fraction: {self.task.params['hq_fraction']!r} (the annealing plan trains on "
                "the HQ subset, which it leaves empty)"
            )
        self._factor = self._lr_factor(schedule)
        self._plan_lr = 1.0 if plan is None else _plan_reference(plan)  # maps to each optimizer's lr
        if self._plan_lr <= 0:
            raise ValueError(f"Invalid annealing: first lr {self._plan_lr!r} (must be > 0 to scale the lrs)")
        self.step = 0  # completed lockstep steps
        self._clock = (0.0, 0, 0.0)  # run()'s start, its first step and the paced seconds per step

        # One initialisation, copied into every lane; the global RNG is left as it was.
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(config.seed)  # the CPU generator only: init is on CPU
            initial = build_model(self.task, config.model).to(self.device)
        self.lanes: dict[str, _Lane] = {}
        for label, spec in zip(config.labels, config.optimizers, strict=True):
            self.lanes[label] = self._make_lane(label, spec, copy.deepcopy(initial))
        # The weights' trajectory starts with the shared initial weights (one tensor for all lanes).
        start = torch.cat([p.detach().reshape(-1) for p in initial.parameters()]).to("cpu", torch.float32)
        self._trajectory_capacity = trajectory_capacity(start.numel())
        for lane in self.lanes.values():
            self._record_weights(lane, 0, start)

    def _lr_factor(self, schedule: Callable[[int], float] | None) -> Callable[[int], float] | None:
        if schedule is None and self.config.schedule is not None:
            schedule = build(self.config.schedule)
        if schedule is None:
            return None
        if not callable(schedule):
            raise invalid("schedule", schedule, "callable")
        spec = getattr(schedule, "spec", None)
        peak = _schedule_peak(spec) if isinstance(spec, ScheduleSpec) else 1.0
        if peak <= 0:
            raise ValueError(f"Invalid schedule: base_lr {peak!r} (must be > 0 to scale the optimizers' lr)")
        return lambda step: float(schedule(step)) / peak

    def _make_lane(self, label: str, spec: OptimizerSpec, model: nn.Module) -> _Lane:
        config = self.config
        info = registry.get(spec.name)
        hparams = dict(spec.hparams)
        known = {h.name for h in info.hyperparams}
        # The run's settings fill in what the user left open: the batch-size range, the seed.
        for key, value in (
            ("initial_batch_size", config.batch_size),
            ("max_batch_size", config.max_batch_size),
            ("seed", config.seed % 2**32),
        ):
            if key in known and key not in hparams:
                hparams[key] = value
        hparams = info.resolve(hparams)
        optimizer = registry.create(spec.name, model.parameters(), **hparams)
        result = RunResult(label, spec.name, hparams)
        result.model, result.optimizer = model, optimizer
        grads = _flat_grads(model)
        diagnostics = None
        if config.diag_every:
            keep: Any = () if config.diag_keep == "none" else config.diag_keep
            diagnostics = Diagnostics(
                optimizer,
                model.named_parameters(),
                every=config.diag_every,
                keep=keep,
                keep_max_elements=1024,
                grads="after",  # the loop clears p.grad before step(closure); read what it consumed
                seed=config.seed,
                lazy=True,  # summaries computed where the records are read (the page), not here
                flat_grads=grads,  # every p.grad is a view of it: read in one call
            )
            result.element_index = diagnostics.element_index
        controller = None
        if config.annealing is not None:
            controller = AnnealingController(config.annealing)
        sizes = {name: int(x.shape[0]) for name, (x, _) in self._sources.items()}
        return _Lane(
            result=result,
            model=model,
            optimizer=optimizer,
            lr=float(hparams["lr"]),
            adaptive=config.batch_policy == "adaptive" and info.batch_test is not None,
            batches=BatchOrder(config.seed, sizes, self.device),
            diagnostics=diagnostics,
            controller=controller,
            fixed_batch=config.batch_size,
            # group_gradients: an AdaScale, which has .scale
            gain_groups=int(optimizer.scale) if info.group_gradients else 0,  # type: ignore[attr-defined]  # (reason above)
            weights=list(model.state_dict().items()),  # updated in place: looked up once
            grads=grads,
        )

    # -- results ---------------------------------------------------------------------------

    @property
    def results(self) -> dict[str, RunResult]:
        """Per optimizer label, what has been recorded so far."""
        return {label: lane.result for label, lane in self.lanes.items()}

    @property
    def finished(self) -> bool:
        """No optimizer is running (each is done, diverged or stopped)."""
        return not any(lane.active for lane in self.lanes.values())

    @property
    def complete(self) -> bool:
        """Nothing left to train: every optimizer is done or diverged (none merely stopped)."""
        return all(lane.result.status not in (RUNNING, STOPPED) for lane in self.lanes.values())

    # -- the loop --------------------------------------------------------------------------

    def run(self, stop: Callable[[], bool] | Any = None, *, pace: float = 0.0) -> Iterator[ProgressEvent]:
        """Train to ``config.steps`` (from where the last call stopped), yielding progress.

        ``stop``: a callable returning True, or an object with ``is_set()`` (a
        ``threading.Event``), checked before every step. Stopping — or closing this
        generator — marks the running optimizers "stopped" and keeps everything recorded;
        calling :meth:`run` again resumes them.

        ``pace``: spread the whole run (``config.steps``) over about this many seconds: step k of
        this call is not over before ``k · pace / steps`` seconds (a resumed run takes its share
        of the pace); 0: as fast as possible. ``stop`` is checked every PACE_TICK_S while it waits.
        """
        pace = float(PACE.validate(pace))  # type: ignore[arg-type]  # validate gives a float here
        should_stop = getattr(stop, "is_set", stop)
        for lane in self.lanes.values():
            if lane.result.status == STOPPED:
                lane.result.status = RUNNING
        start = time.perf_counter()
        self._clock = (start, self.step, pace / self.config.steps)
        try:
            while self._advance(should_stop):
                yield self._event(finished=False, elapsed=time.perf_counter() - start)
        finally:  # also when the caller closes the generator
            for lane in self.lanes.values():
                if lane.active:
                    lane.result.status = DONE if self.step >= self.config.steps else STOPPED
        yield self._event(finished=True, elapsed=time.perf_counter() - start)

    def _advance(self, should_stop: Callable[[], bool] | None) -> bool:
        """Train every running optimizer up to the next evaluation; True if the run goes on.

        On the CPU in small-tensor mode (one intra-op thread, denormals flushed: the models
        are tiny, and converging optimizer states drift into the slow denormal range), only
        while training, so the caller's code between progress events runs as it was.
        """
        steps, every = self.config.steps, self.config.eval_every
        lanes = list(self.lanes.values())
        plans = any(lane.controller is not None for lane in lanes)
        with small_tensor_mode() if self.device.type == "cpu" else contextlib.nullcontext():
            while self.step < steps:
                if should_stop is not None and should_stop():
                    return False
                if plans:
                    self._end_finished_plans()
                running = [lane for lane in lanes if lane.result.status == RUNNING]
                if not running:
                    return False
                for lane in running:
                    self._train_step(lane, self.step)
                self.step += 1
                if self._clock[2]:
                    self._wait_for_pace(should_stop)
                if self.step % every == 0 or self.step == steps:
                    for lane in running:
                        if lane.active:
                            self._evaluate(lane)
                    return self.step < steps and not self.finished
        return False

    def _wait_for_pace(self, should_stop: Callable[[], bool] | None) -> None:
        """Sleep until this step is due on the paced clock (:meth:`run`'s ``pace``), or a stop."""
        start, first, per_step = self._clock
        due = start + (self.step - first) * per_step
        while (left := due - time.perf_counter()) > 0:
            if should_stop is not None and should_stop():
                return
            time.sleep(min(left, PACE_TICK_S))

    def _end_finished_plans(self) -> None:
        """Lanes whose annealing plan ends before this step are done; evaluate their last step."""
        for lane in self.lanes.values():
            if lane.active and lane.controller is not None and lane.controller.finished(self.step):
                result = lane.result
                if result.steps_done and result.last_evaluation != result.steps_done - 1:
                    self._evaluate(lane, observe=False)
                result.status, result.reason = DONE, lane.controller.end_reason

    def _train_step(self, lane: _Lane, step: int) -> None:
        """One update of one optimizer; ``step`` counts from 0 (the row is ``step + 1``)."""
        model, optimizer, result = lane.model, lane.optimizer, lane.result
        controller = lane.controller
        if controller is not None:
            factor = controller.lr(step) / self._plan_lr
        else:
            # AdaScale follows the schedule in scale-invariant iterations τ (its gain ratios' sum)
            # gain_groups: an AdaScale, which has .tau
            at = int(optimizer.tau) if lane.gain_groups else step  # type: ignore[attr-defined]  # (reason above)
            factor = None if self._factor is None else self._factor(at)
        lr = lane.lr if factor is None else lane.lr * factor
        if factor is not None:
            for group in optimizer.param_groups:
                group["lr"] = lr
        source = controller.data_source(step) if controller is not None else "main"
        x_all, y_all = self._sources[source]
        batch_size = lane.batch_size
        index = lane.batches.next(source, batch_size)
        x, y = x_all[index], y_all[index]

        grads = lane.grads

        def closure() -> torch.Tensor:
            if grads is not None:
                grads.zero_()  # backward adds into the views: as fresh gradients, in one call
            else:
                optimizer.zero_grad(set_to_none=True)
            loss = cross_entropy(model(x), y)
            loss.backward()
            return loss

        # adaptive: AdAdaGrad(-Norm), which has test_due
        if lane.adaptive and optimizer.test_due:  # type: ignore[attr-defined]  # (reason above)
            # per-sample gradients at θ_t on this batch; the step applies the proposal
            # adaptive: AdAdaGrad(-Norm), which has propose_batch_size
            optimizer.propose_batch_size(per_sample_grads(model, cross_entropy, x, y))  # type: ignore[attr-defined]  # (reason above)
        if lane.gain_groups > 1:  # AdaScale: the S groups' gradients at θ_t, before the step
            # gain_groups > 1: AdaScale, which has measure_gain
            optimizer.measure_gain(group_grads(model, cross_entropy, x, y, lane.gain_groups))  # type: ignore[attr-defined]  # (reason above)
        if lane.diagnostics is not None:
            # records on steps 1, k, 2k, … whatever the diagnostics' own counter says
            lane.diagnostics.before_step(record=step == 0 or (step + 1) % self.config.diag_every == 0)
        loss = optimizer.step(closure).item()
        if lane.diagnostics is not None:
            record = lane.diagnostics.after_step(step + 1, lr=lr)
            if record is not None:
                result.records.append(record)
                if len(result.records) == 1:  # a record's size depends on the model: known now
                    self._check_diagnostics(record.nbytes)

        used = len(index)
        lane.samples += used
        columns = result.columns
        columns["step"].append(step + 1)
        columns["epoch"].append(lane.samples / self._n_train)
        columns["data_source"].append(source)
        columns["lr"].append(lr)
        columns["batch_size"].append(used)
        columns["loss"].append(loss)
        for name in EVAL_COLUMNS:
            columns[name].append(math.nan)
        if not math.isfinite(loss):
            result.status = metrics.divergence_message(step + 1)

    def _check_diagnostics(self, record_bytes: int) -> None:
        """The run's records (one per ``diag_every`` steps) fit the server's memory limit."""
        config = self.config
        records = math.ceil(config.steps / config.diag_every) + 1
        check_diagnostics(
            record_bytes=record_bytes,
            records=records,
            optimizers=len(self.lanes),
            diag_every=config.diag_every,
        )

    @torch.no_grad()
    def _evaluate(self, lane: _Lane, *, observe: bool = True) -> None:
        """Evaluate the lane's model after its last step, into that step's row.

        Whole training set (as trained on, noisy labels included) and validation set; the
        weights of 2-D tasks' models for the decision boundary; the validation goes to the plan
        (its loss, or its accuracy when the plan's metric_mode is "max"). An optimizer that
        evaluates elsewhere than it trains (``eval()`` / ``train()``: Schedule-Free AdamW) is
        evaluated, checked and checkpointed at its evaluation point.
        """
        with registry.at_evaluation_point(lane.optimizer):
            self._evaluate_model(lane, observe=observe)

    def _evaluate_model(self, lane: _Lane, *, observe: bool) -> None:
        result, model = lane.result, lane.model
        step = result.columns["step"][-1]
        # one flat copy: a few thousand numbers, cheaper than a check per tensor; it is also
        # the trajectory's snapshot of this step
        flat = torch.cat([p.reshape(-1) for p in model.parameters()])
        if not bool(flat.isfinite().all()):
            result.status = metrics.divergence_message(step)
            return
        train_loss, train_metric = _loss_and_accuracy(model, *self._sources["main"])
        val_loss, val_metric = _loss_and_accuracy(model, self.task.x_val, self.task.y_val)
        for name, value in zip(EVAL_COLUMNS, (train_loss, train_metric, val_loss, val_metric), strict=True):
            result.columns[name][-1] = value
        result.last_evaluation = result.steps_done - 1
        if self.task.is_2d:
            result.checkpoints[step] = {k: v.detach().to("cpu", copy=True) for k, v in lane.weights}
        self._record_weights(lane, step, flat.to("cpu", torch.float32))
        if observe and lane.controller is not None:
            metric = val_loss if lane.controller.plan.metric_mode == "min" else val_metric
            lane.controller.observe_validation(step - 1, metric)

    def _record_weights(self, lane: _Lane, step: int, flat: torch.Tensor) -> None:
        """Keep a snapshot in the lane's trajectory: evenly thinned to at most the capacity."""
        lane.result.record_weights(
            step, flat, every=self.config.eval_every, capacity=self._trajectory_capacity
        )

    def _event(self, *, finished: bool, elapsed: float) -> ProgressEvent:
        lanes = {
            label: lane.result.progress(lr=lane.lr, batch_size=lane.batch_size)
            for label, lane in self.lanes.items()
        }
        return ProgressEvent(self.step, self.config.steps, MappingProxyType(lanes), finished, elapsed)

    # -- save and resume -------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue the run: config, step, and per optimizer the model,
        optimizer state, data position, recorded metrics, records, checkpoints and trajectory.

        Tensors are detached copies on their device; the rest is plain Python.
        """
        lanes = {}
        for label, lane in self.lanes.items():
            r = lane.result
            lanes[label] = {
                "status": r.status,
                "reason": r.reason,
                "samples": lane.samples,
                "model": {k: v.detach().clone() for k, v in lane.model.state_dict().items()},
                "optimizer": copy.deepcopy(lane.optimizer.state_dict()),
                "batches": lane.batches.state_dict(),
                "columns": {k: list(v) for k, v in r.columns.items()},
                "records": list(r.records),
                "checkpoints": dict(r.checkpoints),
                "trajectory": dict(r.trajectory),
                "annealing": None if lane.controller is None else lane.controller.state_dict(),
                "diagnostics": None if lane.diagnostics is None else lane.diagnostics.state_dict(),
            }
        return {"config": self.config.to_dict(), "step": self.step, "lanes": lanes}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from :meth:`state_dict`'s output (the config must be the same run)."""
        if TrainConfig.from_dict(state["config"]) != self.config:
            raise ValueError("Invalid state: its config differs from this trainer's config")
        if set(state["lanes"]) != set(self.lanes):
            raise ValueError(
                f"Invalid state: optimizers {sorted(state['lanes'])} (must be {sorted(self.lanes)})"
            )
        self.step = int(state["step"])
        for label, saved in state["lanes"].items():
            lane = self.lanes[label]
            lane.model.load_state_dict(saved["model"])
            lane.optimizer.load_state_dict(copy.deepcopy(saved["optimizer"]))
            lane.batches.load_state_dict(saved["batches"])
            lane.samples = int(saved["samples"])
            r = lane.result
            r.status, r.reason = saved["status"], saved["reason"]
            r.columns = {k: list(saved["columns"][k]) for k in METRIC_COLUMNS}
            r._spike_mask = np.zeros(0, dtype=bool)
            evaluated = [i for i, v in enumerate(r.columns["val_loss"]) if not math.isnan(v)]
            r.last_evaluation = evaluated[-1] if evaluated else None
            r.records, r._diagnostics, r._bands = list(saved["records"]), None, {}
            r.checkpoints, r._boundaries = dict(saved["checkpoints"]), {}
            # states saved before the trajectory existed (bundles of format 2): none recorded
            r.trajectory = dict(saved.get("trajectory") or {})
            if lane.controller is not None and saved["annealing"] is not None:
                lane.controller.load_state_dict(saved["annealing"])
            # states saved before diagnostics had one (no "diagnostics" key): the EMA restarts
            if lane.diagnostics is not None and saved.get("diagnostics") is not None:
                lane.diagnostics.load_state_dict(saved["diagnostics"])

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any]) -> Trainer:
        """A trainer rebuilt from a saved state, ready to :meth:`run` on."""
        trainer = cls(TrainConfig.from_dict(state["config"]))
        trainer.load_state_dict(state)
        return trainer
