"""The multi-optimizer trainer: one task, one initialisation, one data order, several optimizers.

Every optimizer in a :class:`TrainConfig` trains its own copy of the same freshly initialised
model on the same batches (same seed → same init and the same shuffles), in lockstep, so the
live views grow together. One step of one optimizer, top to bottom::

    lr       = optimizer lr × schedule(t) / schedule's base lr       (or the annealing plan's)
    x, y     = next batch of the data source (main, or the clean HQ subset when annealing)
    if adaptive batches and a test is due:  optimizer.propose_batch_size(per-sample grads)
    diagnostics.before_step()                                        (remembers θ_t)
    loss     = optimizer.step(closure)    closure: zero grads, loss(model(x), y), backward
    record   = diagnostics.after_step(t, lr)                         (every diag_every steps)

A record keeps a copy of the tracked values of its step; its summaries are computed when it is
first read (``Diagnostics(lazy=True)``), by whoever reads it: the page when it redraws, all the
records it has not read yet in one go.

A non-finite loss stops that optimizer with "diverged at step t"; the others go on. Every
``eval_every`` steps the trainer evaluates each model on the whole training and validation
sets (and, for 2-D tasks, keeps a copy of the weights for the decision boundary) and yields a
:class:`ProgressEvent`. A stop request ends the run cleanly: what was recorded stays in
:attr:`Trainer.results`, and :meth:`Trainer.run` continues where it stopped. From
:meth:`Trainer.state_dict` a run resumes with bit-identical metrics, weights and diagnostics on
the CPU (the state holds each lane's :class:`~dgs_core.diagnostics.Diagnostics` state: its
importance EMA and step counts).

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

import bisect
import contextlib
import copy
import json
import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from types import MappingProxyType
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.nn.functional import cross_entropy

from dgs_core import metrics
from dgs_core.annealing import AnnealingController, AnnealingPlan
from dgs_core.batching import per_sample_grads
from dgs_core.device import resolve_device, small_tensor_mode
from dgs_core.diagnostics import DiagnosticRecord, Diagnostics
from dgs_core.diagnostics import to_frame as diagnostics_frame
from dgs_core.models import build_model, resolve_model_params
from dgs_core.optim import registry
from dgs_core.schedules import ScheduleSpec, build
from dgs_core.tasks import Task, get_task_info, make_task

BATCH_POLICIES = ("fixed", "adaptive")
DEFAULT_MAX_STEPS = 20_000
METRIC_COLUMNS = (
    "step",
    "epoch",
    "data_source",
    "lr",
    "batch_size",
    "loss",
    "train_loss",
    "train_metric",
    "val_loss",
    "val_metric",
)
_EVAL_COLUMNS = ("train_loss", "train_metric", "val_loss", "val_metric")  # metric: accuracy

DONE, STOPPED, RUNNING = "done", "stopped", "running"


def _frozen(mapping: Mapping[str, Any] | None = None) -> Mapping[str, Any]:
    return MappingProxyType(dict(mapping or {}))


def _plain(value: Any) -> Any:
    """A JSON-ready copy: mappings → dicts, tuples → lists."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _check_int(name: str, value: Any, low: int, high: int | None = None, why: str = "") -> int:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | np.integer)
        or value < low
        or (high is not None and value > high)
    ):
        bound = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ValueError(f"Invalid {name}: {value!r} (must be an integer {bound}{why})")
    return int(value)


# ---------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OptimizerSpec:
    """One optimizer of a run: a registry name, its hyperparameters and an optional label.

    The label keys the results; it defaults to the name ("sgd", then "sgd#2" for a second SGD).
    """

    name: str
    hparams: Mapping[str, Any] = field(default_factory=_frozen)
    label: str | None = None

    def __post_init__(self) -> None:
        info = registry.get(self.name)  # ValueError naming an unknown optimizer
        if not isinstance(self.hparams, Mapping):
            raise ValueError(f"Invalid hparams for {self.name}: {self.hparams!r} (must be a mapping)")
        info.resolve(self.hparams)  # ValueError naming the bad hyperparameter
        object.__setattr__(self, "hparams", _frozen(self.hparams))
        if self.label is not None and (not isinstance(self.label, str) or not self.label):
            raise ValueError(f"Invalid label: {self.label!r} (must be a non-empty string)")

    @classmethod
    def of(cls, value: OptimizerSpec | str | Sequence[Any] | Mapping[str, Any]) -> OptimizerSpec:
        """From a spec, a name, a (name, hparams[, label]) pair or a {"name", "hparams", "label"} dict."""
        if isinstance(value, OptimizerSpec):
            return value
        if isinstance(value, str):
            return cls(value)
        if isinstance(value, Mapping):
            unknown = sorted(set(value) - {"name", "hparams", "label"})
            if unknown or "name" not in value:
                raise ValueError(
                    f"Invalid optimizer: {dict(value)!r} (needs 'name'; may have 'hparams', 'label')"
                )
            return cls(value["name"], value.get("hparams", {}), value.get("label"))
        if isinstance(value, list | tuple) and 1 <= len(value) <= 3:
            return cls(*value)
        raise ValueError(f"Invalid optimizer: {value!r} (must be a name or a (name, hparams) pair)")

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "hparams": _plain(self.hparams), "label": self.label}

    def __hash__(self) -> int:
        return hash(json.dumps(self.to_dict(), sort_keys=True))


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a run; frozen, validated, plain JSON via :meth:`to_dict`.

    Attributes:
        task: a task name (:func:`dgs_core.tasks.task_names`).
        task_params: overrides of the task's parameters (n_samples, noise, label_noise, hq_fraction, …).
        model: ``{"size": "tiny" | "small" | "medium", …overrides}`` (:mod:`dgs_core.models`).
        optimizers: the optimizers to compare, each an :class:`OptimizerSpec` or (name, hparams).
        schedule: a :class:`~dgs_core.schedules.ScheduleSpec` (or its dict) shaping every
            optimizer's lr: lr_t = lr · schedule(t) / (the schedule's peak base_lr), so an
            optimizer whose lr equals the schedule's base_lr follows the schedule exactly.
        annealing: an :class:`~dgs_core.annealing.AnnealingPlan` (or its dict) instead of a
            schedule: per step it sets the lr (scaled the same way) and the data source, and an
            optimizer stops when its plan finishes (each optimizer has its own controller, fed
            its own validation metric).
        batch_size: examples per step (capped at the data source's size).
        batch_policy: "fixed", or "adaptive": optimizers with a batch-size test (AdAdaGrad,
            AdAdaGrad-Norm) grow their batch from ``batch_size`` up to ``max_batch_size``;
            the others keep ``batch_size``.
        steps: updates per optimizer; at most ``max_steps``.
        seed: the seed of the data, the initialisation and the batch order.
        eval_every: evaluate and yield a progress event every this many steps (and at the end).
        diag_every: record diagnostics on step 1 and every this many steps (0: off).
        diag_keep: tensors whose per-element values are kept for heatmaps: "all", "none", or names.
        device: "auto" (CUDA, then MPS, then CPU), "cpu", "cuda", …
        max_steps: the cap on ``steps``; a longer run is refused.
    """

    task: str = "moons"
    task_params: Mapping[str, Any] = field(default_factory=_frozen)
    model: Mapping[str, Any] = field(default_factory=lambda: _frozen({"size": "small"}))
    optimizers: tuple[OptimizerSpec, ...] = (OptimizerSpec("sgd"), OptimizerSpec("dgs"))
    schedule: ScheduleSpec | None = None
    annealing: AnnealingPlan | None = None
    batch_size: int = 32
    batch_policy: str = "fixed"
    max_batch_size: int = 1024
    steps: int = 500
    seed: int = 0
    eval_every: int = 25
    diag_every: int = 25
    diag_keep: str | tuple[str, ...] = "all"
    device: str = "auto"
    max_steps: int = DEFAULT_MAX_STEPS

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        info = get_task_info(self.task)
        if not isinstance(self.task_params, Mapping):
            raise ValueError(f"Invalid task_params: {self.task_params!r} (must be a mapping)")
        info.resolve(self.task_params)
        set_(self, "task_params", _frozen(self.task_params))
        if not isinstance(self.model, Mapping):
            raise ValueError(f"Invalid model: {self.model!r} (must be a mapping)")
        resolve_model_params(self.task, self.model)
        set_(self, "model", _frozen(self.model))

        if isinstance(self.optimizers, str | Mapping) or not isinstance(self.optimizers, Iterable):
            raise ValueError(f"Invalid optimizers: {self.optimizers!r} (must be a list of optimizers)")
        specs = tuple(OptimizerSpec.of(o) for o in self.optimizers)
        if not specs:
            raise ValueError("Invalid optimizers: [] (must name at least one optimizer)")
        set_(self, "optimizers", specs)
        labels = [s.label for s in specs if s.label is not None]
        if len(labels) != len(set(labels)):
            raise ValueError(f"Invalid label: {labels!r} (labels must be unique)")

        if isinstance(self.schedule, Mapping):
            set_(self, "schedule", ScheduleSpec.from_dict(self.schedule))
        if self.schedule is not None and not isinstance(self.schedule, ScheduleSpec):
            raise ValueError(f"Invalid schedule: {self.schedule!r} (must be a ScheduleSpec or its dict)")
        if isinstance(self.annealing, Mapping):
            set_(self, "annealing", AnnealingPlan.from_dict(self.annealing))
        if self.annealing is not None and not isinstance(self.annealing, AnnealingPlan):
            raise ValueError(f"Invalid annealing: {self.annealing!r} (must be an AnnealingPlan or its dict)")
        if self.schedule is not None and self.annealing is not None:
            raise ValueError("Invalid schedule: set either a schedule or an annealing plan, not both")

        _check_int("batch_size", self.batch_size, 1, 1 << 20)
        if self.batch_policy not in BATCH_POLICIES:
            raise ValueError(f"Invalid batch_policy: {self.batch_policy!r} (must be one of fixed, adaptive)")
        _check_int("max_batch_size", self.max_batch_size, self.batch_size, 1 << 20, " and >= batch_size")
        _check_int("max_steps", self.max_steps, 1)
        _check_int("steps", self.steps, 1, self.max_steps, f"; the cap is max_steps={self.max_steps}")
        _check_int("seed", self.seed, 0, 2**63 - 1)
        _check_int("eval_every", self.eval_every, 1)
        _check_int("diag_every", self.diag_every, 0)
        if isinstance(self.diag_keep, list | tuple):
            set_(self, "diag_keep", tuple(self.diag_keep))
        elif not isinstance(self.diag_keep, str):
            raise ValueError(
                f"Invalid diag_keep: {self.diag_keep!r} (must be 'all', 'none' or a list of names)"
            )
        if not isinstance(self.device, str):
            raise ValueError(f"Invalid device: {self.device!r} (must be 'auto', 'cpu', 'cuda', …)")
        try:
            resolve_device(self.device)
        except RuntimeError:
            raise ValueError(f"Invalid device: {self.device!r} (must be 'auto', 'cpu', 'cuda', …)") from None

    @property
    def labels(self) -> list[str]:
        """The result key of each optimizer, in order."""
        out: list[str] = []
        for spec in self.optimizers:
            label = spec.label or spec.name
            k = 2
            while label in out:
                label, k = f"{spec.label or spec.name}#{k}", k + 1
            out.append(label)
        return out

    def replace(self, **changes: Any) -> TrainConfig:
        """A validated copy with ``changes``."""
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON (lists and dicts), the inverse of :meth:`from_dict`."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "optimizers":
                value = [s.to_dict() for s in value]
            elif isinstance(value, ScheduleSpec | AnnealingPlan):
                value = value.to_dict()
            out[f.name] = _plain(value)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainConfig:
        """Rebuild and validate a config from :meth:`to_dict`'s output."""
        if not isinstance(data, Mapping):
            raise ValueError(f"Invalid config: {data!r} (must be a mapping)")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(
                f"Invalid config field: {unknown[0]!r} (must be one of {', '.join(sorted(known))})"
            )
        return cls(**data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    def __hash__(self) -> int:
        return hash(self.to_json())

    @classmethod
    def from_json(cls, text: str) -> TrainConfig:
        return cls.from_dict(json.loads(text))


# ---------------------------------------------------------------------------------------------
# Results and progress events
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LaneProgress:
    """One optimizer's state in a :class:`ProgressEvent` (its latest values)."""

    label: str
    status: str
    step: int
    loss: float
    val_loss: float
    val_metric: float
    lr: float
    batch_size: int
    diagnostics: DiagnosticRecord | None
    result: RunResult = field(repr=False, compare=False)

    @property
    def spikes(self) -> int:
        """Loss spikes up to this event's step, counted when read (most events are not asked:
        the flags of a step never change, so a later count of the first ``step`` steps is the
        same number)."""
        return int(metrics.count_runs(self.result.spike_mask()[: self.step]))


@dataclass(frozen=True)
class ProgressEvent:
    """Yielded every ``eval_every`` steps and once when the run ends (``finished``)."""

    step: int
    total_steps: int
    lanes: Mapping[str, LaneProgress]
    finished: bool
    elapsed_s: float


class RunResult:
    """What one optimizer's run recorded; survives Stop and grows while the run goes on.

    A page may read it from another thread while :meth:`Trainer.run` appends: the tables
    take the rows that are complete.

    Attributes:
        label, name, hparams: the optimizer (hparams resolved: defaults filled in).
        status: "running", "done", "stopped" or "diverged at step t"; ``reason`` says why
            an annealing plan ended ("budget", "min_lr reached", …).
        records: diagnostic records (:class:`~dgs_core.diagnostics.DiagnosticRecord`), in step order.
        element_index: where the kept per-element copies come from (rows/cols of each tensor).
        checkpoints: for 2-D tasks, the weights at every evaluation, ``{step: state_dict}``
            (CPU copies; a few thousand numbers each), for :meth:`boundary_at`.
        model, optimizer: the live objects (final after the run).
    """

    def __init__(self, label: str, name: str, hparams: Mapping[str, Any]) -> None:
        self.label = label
        self.name = name
        self.hparams = dict(hparams)
        self.status = RUNNING
        self.reason = ""
        self.columns: dict[str, list] = {c: [] for c in METRIC_COLUMNS}
        self.last_evaluation: int | None = None  # row of the latest evaluation
        self._spike_mask = np.zeros(0, dtype=bool)  # verdicts so far (they never change later)
        self.records: list[DiagnosticRecord] = []
        self.element_index: dict[str, torch.Tensor] = {}
        self.checkpoints: dict[int, dict[str, torch.Tensor]] = {}
        self._probe: nn.Module | None = None  # a copy of the model to evaluate checkpoints with
        self._boundaries: dict[tuple[int, int], np.ndarray] = {}
        self._diagnostics: tuple[int, pd.DataFrame] | None = None  # (records, their frame)
        self._bands: dict[tuple, tuple[int, list]] = {}  # quantile_band rows of the first n records
        self.model: nn.Module | None = None
        self.optimizer: torch.optim.Optimizer | None = None

    @property
    def steps_done(self) -> int:
        return len(self.columns["step"])

    @property
    def losses(self) -> np.ndarray:
        return np.asarray(self.columns["loss"], dtype=float)

    @property
    def metrics(self) -> pd.DataFrame:
        """One row per step: step, epoch, data_source, lr, batch_size, loss, the evaluation
        columns (NaN off evaluation steps) and ``spike`` (SPEC §3 on the loss)."""
        # another thread may be appending a row: take the rows every column already has
        rows = min(len(values) for values in self.columns.values())
        frame = pd.DataFrame({k: v[:rows] for k, v in self.columns.items()}, columns=list(METRIC_COLUMNS))
        frame = frame.astype(
            {"step": "int64", "batch_size": "int64", **{c: "float64" for c in _EVAL_COLUMNS}}
        )
        frame["spike"] = self.spike_mask()[:rows]
        return frame

    @property
    def evaluations(self) -> pd.DataFrame:
        """The evaluation steps only."""
        frame = self.metrics
        return frame[frame["val_loss"].notna()].reset_index(drop=True)

    def spike_mask(self) -> np.ndarray:
        """Which steps are loss spikes (SPEC §3), one flag per step.

        A step's verdict depends only on the losses before it, so the flags are computed once,
        for the new steps with a window of history: the cost per call stays O(new steps).
        """
        # The trainer thread and the page both call this: work on one local snapshot so a
        # concurrent call can never join its flags onto a list that has grown meanwhile.
        known = self._spike_mask
        done, total = len(known), self.steps_done
        if total > done:
            start = max(0, done - metrics.SPIKE_WINDOW)
            fresh = metrics.spike_mask(self.columns["loss"][start:total], since=done - start)[done - start :]
            known = np.concatenate([known, fresh])
            self._spike_mask = known
        return known[:total]

    @property
    def spikes(self) -> int:
        """Loss spikes so far (a run of consecutive spike steps counts once)."""
        return int(metrics.count_runs(self.spike_mask()))

    @property
    def diagnostics(self) -> pd.DataFrame:
        """Every diagnostic record in long format: step, tensor, quantity, statistic, value."""
        records = list(self.records)
        if self._diagnostics is None:
            self._diagnostics = (len(records), diagnostics_frame(records))
        done, frame = self._diagnostics
        if len(records) > done:  # only the new records are converted
            frame = pd.concat([frame, diagnostics_frame(records[done:])], ignore_index=True)
            self._diagnostics = (len(records), frame)
        return frame

    def record_at(self, step: int) -> DiagnosticRecord | None:
        """The latest diagnostic record at or before ``step`` (the scrubber's record)."""
        steps = [r.step for r in self.records]
        i = bisect.bisect_right(steps, step) - 1
        return self.records[i] if i >= 0 else None

    @torch.no_grad()
    def boundary_at(self, task: Task, step: int, resolution: int = 60) -> tuple[int, np.ndarray] | None:
        """Class probabilities on ``task.grid(resolution)`` from the latest checkpoint at or
        before ``step``: (the checkpoint's step, array (resolution, resolution, classes)).

        Computed when asked (and cached), so training pays only for copying the weights.
        """
        steps = sorted(self.checkpoints)
        i = bisect.bisect_right(steps, step) - 1
        if i < 0 or self.model is None:
            return None
        key = (steps[i], resolution)
        if key not in self._boundaries:
            if self._probe is None:
                self._probe = copy.deepcopy(self.model)
            self._probe.load_state_dict(self.checkpoints[steps[i]])
            points = task.grid(resolution)[2].to(next(self._probe.parameters()).device)
            probs = self._probe(points).softmax(dim=-1)
            self._boundaries[key] = probs.reshape(resolution, resolution, -1).cpu().numpy()
        return steps[i], self._boundaries[key]

    def layer_table(self, quantity: str, statistic: str = "mean") -> pd.DataFrame:
        """A tensor × step table of one diagnostic (e.g. "importance", "scaling_factor")."""
        frame = self.diagnostics
        frame = frame[(frame["quantity"] == quantity) & (frame["statistic"] == statistic)]
        table = frame.pivot_table(index="tensor", columns="step", values="value", sort=False)
        return table

    def elements_at(self, step: int, quantity: str) -> dict[str, torch.Tensor]:
        """Per-element values of ``quantity`` for every kept tensor at the scrubber's ``step``."""
        record = self.record_at(step)
        if record is None:
            return {}
        suffix = f"/{quantity}"
        return {k[: -len(suffix)]: v for k, v in record.elements.items() if k.endswith(suffix)}

    def quantile_band(
        self, quantity: str = "lr_eff", quantiles: Sequence[float] = (0.05, 0.25, 0.5, 0.75, 0.95)
    ) -> pd.DataFrame:
        """Per recorded step, quantiles of ``quantity`` over every parameter of the model.

        Pools the kept per-element values of all tensors, each weighted by the number of
        parameters it stands for (numel / kept elements). Columns: step, q05, …, q95.
        Rows are computed once per record (cached), so a live view pays only for new records.
        """
        key = (quantity, tuple(quantiles))
        done, rows = self._bands.setdefault(key, (0, []))
        records = list(self.records)
        for record in records[done:]:
            values, weights = [], []
            for tensor in record.tensors:
                kept = record.elements.get(f"{tensor.name}/{quantity}")
                if kept is not None and kept.numel():
                    values.append(kept.reshape(-1).numpy())
                    weights.append(np.full(kept.numel(), tensor.numel / kept.numel()))
            if not values:
                continue
            rows.append(
                [
                    record.step,
                    *_weighted_quantiles(np.concatenate(values), np.concatenate(weights), quantiles),
                ]
            )
        self._bands[key] = (len(records), rows)
        names = [f"q{round(q * 100):02d}" for q in quantiles]
        return pd.DataFrame(rows, columns=["step", *names])


def _weighted_quantiles(values: np.ndarray, weights: np.ndarray, quantiles: Sequence[float]) -> list[float]:
    finite = np.isfinite(values)
    values, weights = values[finite], weights[finite]
    if not len(values):
        return [math.nan] * len(quantiles)
    order = np.argsort(values)
    values, cumulative = values[order], np.cumsum(weights[order])
    positions = np.asarray(quantiles) * cumulative[-1]
    return values[np.minimum(np.searchsorted(cumulative, positions), len(values) - 1)].tolist()


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
    checks it), so none would have been None. The diagnostics then read all the gradients as
    one tensor (see ``dgs_core.diagnostics``).
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
    samples: int = 0  # examples seen, for the epoch column
    weights: list[tuple[str, torch.Tensor]] = field(default_factory=list)  # state_dict's items (in place)
    grads: torch.Tensor | None = None  # every p.grad is a view of this flat buffer (_flat_grads)

    @property
    def active(self) -> bool:
        return self.result.status == RUNNING

    @property
    def batch_size(self) -> int:
        """The optimizer's own batch size (AdAdaGrad family), else the run's."""
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
            raise ValueError(f"Invalid config: {config!r} (must be a TrainConfig)")
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

        # One initialisation, copied into every lane; the global RNG is left as it was.
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(config.seed)  # the CPU generator only: init is on CPU
            initial = build_model(self.task, config.model).to(self.device)
        self.lanes: dict[str, _Lane] = {}
        for label, spec in zip(config.labels, config.optimizers, strict=True):
            self.lanes[label] = self._make_lane(label, spec, copy.deepcopy(initial))

    def _lr_factor(self, schedule: Callable[[int], float] | None) -> Callable[[int], float] | None:
        if schedule is None and self.config.schedule is not None:
            schedule = build(self.config.schedule)
        if schedule is None:
            return None
        if not callable(schedule):
            raise ValueError(f"Invalid schedule: {schedule!r} (must be callable)")
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
            weights=list(model.state_dict().items()),  # updated in place: looked up once
            grads=_flat_grads(model),
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

    def run(self, stop: Callable[[], bool] | Any = None) -> Iterator[ProgressEvent]:
        """Train to ``config.steps`` (from where the last call stopped), yielding progress.

        ``stop``: a callable returning True, or an object with ``is_set()`` (a
        ``threading.Event``), checked before every step. Stopping — or closing this
        generator — marks the running optimizers "stopped" and keeps everything recorded;
        calling :meth:`run` again resumes them.
        """
        should_stop = getattr(stop, "is_set", stop)
        for lane in self.lanes.values():
            if lane.result.status == STOPPED:
                lane.result.status = RUNNING
        start = time.perf_counter()
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
                if self.step % every == 0 or self.step == steps:
                    for lane in running:
                        if lane.active:
                            self._evaluate(lane)
                    return self.step < steps and not self.finished
        return False

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
            factor = None if self._factor is None else self._factor(step)
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

        if lane.adaptive and optimizer.test_due:  # type: ignore[attr-defined]
            # per-sample gradients at θ_t on this batch; the step applies the proposal
            optimizer.propose_batch_size(per_sample_grads(model, cross_entropy, x, y))  # type: ignore[attr-defined]
        if lane.diagnostics is not None:
            # records on steps 1, k, 2k, … whatever the diagnostics' own counter says
            lane.diagnostics.before_step(record=step == 0 or (step + 1) % self.config.diag_every == 0)
        loss = optimizer.step(closure).item()
        if lane.diagnostics is not None:
            record = lane.diagnostics.after_step(step + 1, lr=lr)
            if record is not None:
                result.records.append(record)

        used = len(index)
        lane.samples += used
        columns = result.columns
        columns["step"].append(step + 1)
        columns["epoch"].append(lane.samples / self._n_train)
        columns["data_source"].append(source)
        columns["lr"].append(lr)
        columns["batch_size"].append(used)
        columns["loss"].append(loss)
        for name in _EVAL_COLUMNS:
            columns[name].append(math.nan)
        if not math.isfinite(loss):
            result.status = metrics.divergence_message(step + 1)

    @torch.no_grad()
    def _evaluate(self, lane: _Lane, *, observe: bool = True) -> None:
        """Evaluate the lane's model after its last step, into that step's row.

        Whole training set (as trained on, noisy labels included) and validation set; the
        weights of 2-D tasks' models for the decision boundary; the validation goes to the plan
        (its loss, or its accuracy when the plan's metric_mode is "max").
        """
        result, model = lane.result, lane.model
        step = result.columns["step"][-1]
        # one flat copy: a few thousand numbers, cheaper than a check per tensor
        if not bool(torch.cat([p.reshape(-1) for p in model.parameters()]).isfinite().all()):
            result.status = metrics.divergence_message(step)
            return
        train_loss, train_metric = _loss_and_accuracy(model, *self._sources["main"])
        val_loss, val_metric = _loss_and_accuracy(model, self.task.x_val, self.task.y_val)
        for name, value in zip(_EVAL_COLUMNS, (train_loss, train_metric, val_loss, val_metric), strict=True):
            result.columns[name][-1] = value
        result.last_evaluation = result.steps_done - 1
        if self.task.is_2d:
            result.checkpoints[step] = {k: v.detach().to("cpu", copy=True) for k, v in lane.weights}
        if observe and lane.controller is not None:
            metric = val_loss if lane.controller.plan.metric_mode == "min" else val_metric
            lane.controller.observe_validation(step - 1, metric)

    def _event(self, *, finished: bool, elapsed: float) -> ProgressEvent:
        lanes = {}
        for label, lane in self.lanes.items():
            r = lane.result
            last_eval = r.last_evaluation
            lanes[label] = LaneProgress(
                label=label,
                status=r.status,
                step=r.steps_done,
                loss=r.columns["loss"][-1] if r.steps_done else math.nan,
                val_loss=r.columns["val_loss"][last_eval] if last_eval is not None else math.nan,
                val_metric=r.columns["val_metric"][last_eval] if last_eval is not None else math.nan,
                lr=r.columns["lr"][-1] if r.steps_done else lane.lr,
                batch_size=r.columns["batch_size"][-1] if r.steps_done else lane.batch_size,
                diagnostics=r.records[-1] if r.records else None,
                result=r,
            )
        return ProgressEvent(self.step, self.config.steps, MappingProxyType(lanes), finished, elapsed)

    # -- save and resume -------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue the run: config, step, and per optimizer the model,
        optimizer state, data position, recorded metrics, records and checkpoints.

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


# ---------------------------------------------------------------------------------------------
# The large-batch question
# ---------------------------------------------------------------------------------------------

# SGD, LARS and ExtraSGD for the large-batch question. LARS: τ = 0.01 with η = 0.5 moves each
# weight tensor by about 0.5 % of its norm per step (before momentum) and its biases by plain
# momentum SGD at 0.5; a small sweep on moons and digits (batches 16 vs 256, equal epochs) found it
# the best of η ∈ {0.1, 0.5, 1}, τ ∈ {1e-3, 1e-2} at the large batch. SGD and ExtraSGD keep 0.1.
LARGE_BATCH_DEFAULTS: Mapping[str, Mapping[str, Any]] = MappingProxyType(
    {
        "sgd": {"lr": 0.1},
        "lars": {"lr": 0.5, "trust_coefficient": 0.01},
        "extrasgd": {"lr": 0.1, "extrapolation_lr": 0.1},
    }
)
LR_SCALINGS = ("none", "linear", "sqrt")


def large_batch_configs(
    base: TrainConfig,
    *,
    small_batch: int = 16,
    large_batch: int = 512,
    epochs: float = 20.0,
    lr_scaling: str = "none",
) -> dict[int, TrainConfig]:
    """The same run at two batch sizes and equal epochs: ``{batch_size: config}``.

    Steps = ⌈epochs · n_train / batch⌉ (at least 1). ``lr_scaling`` multiplies each
    optimizer's lr at the large batch by B/b ("linear", Goyal et al. 2017) or √(B/b)
    ("sqrt"), or leaves it ("none"). The base config's optimizers are used as they are;
    :func:`large_batch_base` gives the default SGD, LARS and ExtraSGD. Raises ``ValueError``
    naming a bad argument, or ``steps`` with the cap when a run would exceed ``max_steps``.
    """
    _check_int("small_batch", small_batch, 1)
    _check_int("large_batch", large_batch, small_batch + 1, None, " and > small_batch")
    if not (isinstance(epochs, int | float) and math.isfinite(epochs) and epochs > 0):
        raise ValueError(f"Invalid epochs: {epochs!r} (must be > 0)")
    if lr_scaling not in LR_SCALINGS:
        raise ValueError(f"Invalid lr_scaling: {lr_scaling!r} (must be one of {', '.join(LR_SCALINGS)})")
    n_train = make_task(base.task, seed=base.seed, **base.task_params).n_train
    out = {}
    for batch in (small_batch, large_batch):
        ratio = batch / small_batch
        scale = {"none": 1.0, "linear": ratio, "sqrt": math.sqrt(ratio)}[lr_scaling]
        optimizers = []
        for label, spec in zip(base.labels, base.optimizers, strict=True):
            hparams = dict(spec.hparams)
            if scale != 1.0:
                hparams["lr"] = registry.get(spec.name).resolve(spec.hparams)["lr"] * scale
            optimizers.append(OptimizerSpec(spec.name, hparams, label))
        b = min(batch, n_train)
        steps = max(1, math.ceil(epochs * n_train / b))
        out[batch] = base.replace(
            batch_size=batch,
            batch_policy="fixed",
            max_batch_size=max(batch, base.max_batch_size),
            steps=steps,
            eval_every=max(1, steps // 20),
            optimizers=tuple(optimizers),
        )
    return out


def large_batch_base(task: str = "moons", **changes: Any) -> TrainConfig:
    """A config for the large-batch question: SGD, LARS and ExtraSGD with the lab's lrs."""
    optimizers = tuple(OptimizerSpec(name, hparams) for name, hparams in LARGE_BATCH_DEFAULTS.items())
    return TrainConfig(task=task, optimizers=changes.pop("optimizers", optimizers), **changes)


@dataclass(frozen=True)
class StudyEvent:
    """A progress event of one of the study's runs."""

    batch_size: int
    event: ProgressEvent


class LargeBatchStudy:
    """Runs :func:`large_batch_configs` one after the other; :meth:`gap` compares them.

    >>> study = LargeBatchStudy(large_batch_base("moons", task_params={"n_samples": 200}),
    ...                         small_batch=16, large_batch=128, epochs=1)
    >>> _ = list(study.run())
    >>> list(study.gap()["optimizer"])
    ['sgd', 'sgd', 'lars', 'lars', 'extrasgd', 'extrasgd']
    """

    def __init__(self, base: TrainConfig, **kwargs: Any) -> None:
        self.configs = large_batch_configs(base, **kwargs)
        self.trainers: dict[int, Trainer] = {}

    def run(self, stop: Callable[[], bool] | Any = None) -> Iterator[StudyEvent]:
        should_stop = getattr(stop, "is_set", stop)
        for batch, config in self.configs.items():
            trainer = self.trainers.get(batch)
            if trainer is None:
                trainer = self.trainers[batch] = Trainer(config)
            elif trainer.complete:
                continue
            for event in trainer.run(stop):
                yield StudyEvent(batch, event)
            if should_stop is not None and should_stop():
                return

    def gap(self) -> pd.DataFrame:
        """One row per optimizer and batch size, from each run's last evaluation."""
        return large_batch_gap({b: t.results for b, t in self.trainers.items()})


def large_batch_gap(results: Mapping[int, Mapping[str, RunResult]]) -> pd.DataFrame:
    """Train/validation gap per optimizer at each batch size (last evaluation of each run).

    Columns: optimizer (label), name, batch_size, steps, epochs, train_loss, train_metric,
    val_loss, val_metric, loss_gap (val − train), metric_gap (train − val), status.
    """
    rows = []
    labels = list(dict.fromkeys(label for runs in results.values() for label in runs))
    for label in labels:
        for batch in sorted(results):
            r = results[batch].get(label)
            if r is None:
                continue
            evals = r.evaluations
            last = {c: float(evals[c].iloc[-1]) if len(evals) else math.nan for c in _EVAL_COLUMNS}
            rows.append(
                {
                    "optimizer": label,
                    "name": r.name,
                    "batch_size": batch,
                    "steps": r.steps_done,
                    "epochs": float(r.columns["epoch"][-1]) if r.steps_done else 0.0,
                    **last,
                    "loss_gap": last["val_loss"] - last["train_loss"],
                    "metric_gap": last["train_metric"] - last["val_metric"],
                    "status": r.status,
                }
            )
    return pd.DataFrame(rows)
