"""What a training run records: one :class:`RunResult` per optimizer, and the progress events.

A :class:`RunResult` grows while the trainer runs (another thread may read it meanwhile: the
tables take the rows that are complete) and survives Stop.
"""

from __future__ import annotations

import bisect
import copy
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from dgs_core import metrics
from dgs_core.diagnostics import DiagnosticRecord
from dgs_core.diagnostics import to_frame as diagnostics_frame
from dgs_core.training.tasks import Task

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
EVAL_COLUMNS = ("train_loss", "train_metric", "val_loss", "val_metric")  # metric: accuracy

DONE, STOPPED, RUNNING = "done", "stopped", "running"

# The weights' trajectory (RunResult.trajectory): at most this many flat float32 snapshots per
# optimizer, and at most this many bytes of them (a model bigger than 1/3 of it keeps 3: the
# initial weights, one more on the thinned grid and the latest).
TRAJECTORY_MAX_SNAPSHOTS = 64
TRAJECTORY_MAX_BYTES = 8 * 2**20


def trajectory_capacity(numel: int) -> int:
    """How many snapshots of a model of ``numel`` parameters a trajectory keeps (at least 3)."""
    return max(3, min(TRAJECTORY_MAX_SNAPSHOTS, TRAJECTORY_MAX_BYTES // (4 * max(1, numel))))


def trajectory_stride(latest: int, *, every: int, capacity: int) -> int:
    """The step spacing of the kept snapshots once the latest one is at step ``latest``.

    A trajectory keeps step 0, every multiple of the stride up to ``latest``, and ``latest``
    itself: ``latest // stride + 2 <= capacity``. The stride is ``every`` (the evaluation
    spacing) times the smallest power of two that fits, so it only ever doubles and a kept
    snapshot is dropped only when it doubles (or when it was the latest and is off the grid).
    The kept steps are a pure function of the evaluated steps: a resumed run keeps the same
    snapshots as an uninterrupted one.

    >>> trajectory_stride(100, every=10, capacity=64), trajectory_stride(1000, every=10, capacity=64)
    (10, 20)
    """
    factor = 1
    while latest // (every * factor) + 2 > capacity:
        factor *= 2
    return every * factor


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
        trajectory: for every task, the weights the optimizer went through, ``{step: flat}``:
            one float32 CPU vector of all parameters (``model.parameters()`` order) at step 0
            (the shared initial weights) and at evaluations, thinned to at most
            :func:`trajectory_capacity` snapshots (see :meth:`record_weights`); for the
            landscape (:mod:`dgs_core.landscape`). Empty for runs read from bundles older than
            format 3.
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
        self.trajectory: dict[int, torch.Tensor] = {}
        self._probe: nn.Module | None = None  # a copy of the model to evaluate checkpoints with
        self._boundaries: dict[tuple[int, int], np.ndarray] = {}
        self._diagnostics: tuple[int, pd.DataFrame] | None = None  # (records, their frame)
        self._bands: dict[tuple, tuple[int, list]] = {}  # quantile_band rows of the first n records
        self.model: nn.Module | None = None
        self.optimizer: torch.optim.Optimizer | None = None

    @property
    def steps_done(self) -> int:
        return len(self.columns["step"])

    def progress(self, *, lr: float = math.nan, batch_size: int | None = None) -> LaneProgress:
        """Its latest values: the last step's loss, lr and batch size, the last evaluation's.

        Safe while the trainer appends from another thread: it reads only the rows every column
        already has, and the evaluation the trainer marks after writing its values. ``lr`` and
        ``batch_size`` stand in before the first step.
        """
        done = min(len(values) for values in self.columns.values())
        evaluated, last = self.last_evaluation, done - 1
        columns = self.columns
        records = self.records
        return LaneProgress(
            label=self.label,
            status=self.status,
            step=done,
            loss=columns["loss"][last] if done else math.nan,
            val_loss=columns["val_loss"][evaluated] if evaluated is not None else math.nan,
            val_metric=columns["val_metric"][evaluated] if evaluated is not None else math.nan,
            lr=columns["lr"][last] if done else lr,
            batch_size=columns["batch_size"][last] if done else batch_size,
            diagnostics=records[-1] if records else None,
            result=self,
        )

    @property
    def losses(self) -> np.ndarray:
        return np.asarray(self.columns["loss"], dtype=float)

    @property
    def metrics(self) -> pd.DataFrame:
        """One row per step: step, epoch, data_source, lr, batch_size, loss, the evaluation
        columns (NaN off evaluation steps) and ``spike`` (docs/algorithms.md#metrics on the loss)."""
        # another thread may be appending a row: take the rows every column already has
        rows = min(len(values) for values in self.columns.values())
        frame = pd.DataFrame({k: v[:rows] for k, v in self.columns.items()}, columns=list(METRIC_COLUMNS))
        frame = frame.astype({"step": "int64", "batch_size": "int64", **{c: "float64" for c in EVAL_COLUMNS}})
        frame["spike"] = self.spike_mask()[:rows]
        return frame

    @property
    def evaluations(self) -> pd.DataFrame:
        """The evaluation steps only."""
        frame = self.metrics
        return frame[frame["val_loss"].notna()].reset_index(drop=True)

    def spike_mask(self) -> np.ndarray:
        """Which steps are loss spikes (docs/algorithms.md#metrics), one flag per step.

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

    def record_weights(self, step: int, flat: torch.Tensor, *, every: int, capacity: int) -> None:
        """Keep ``flat`` (the parameters after ``step`` steps) in :attr:`trajectory`, thinned.

        Keeps step 0, the multiples of :func:`trajectory_stride` and the latest snapshot, so the
        snapshots stay evenly spaced and at most ``capacity``. ``flat`` is kept as it is (not
        copied): the caller passes a fresh tensor. The dict is replaced, never changed in place,
        so a page reading it from another thread sees the old or the new one whole.
        """
        stride = trajectory_stride(step, every=every, capacity=capacity)
        trajectory = {**self.trajectory, step: flat}
        self.trajectory = {s: w for s, w in trajectory.items() if s == step or s % stride == 0}

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
