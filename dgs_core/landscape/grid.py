"""The loss on a grid over a plane, along a line between two solutions, and a cache of grids.

Every evaluation here is the task's mean cross-entropy on a whole split ("train": the
training set as trained on; "val": the validation set) at many weight vectors. Two
implementations with one interface (:func:`losses_at`):

``loop``
    The reference, read first: for each weight vector, one forward pass of the model with
    those weights, ``cross_entropy(model(x), y)``.
``batched``
    The fast path: ``torch.func.vmap`` over the weight vectors of
    ``functional_call(model, weights, (x,))`` — one call evaluates a chunk of grid points,
    the two splits in one forward pass (their inputs concatenated; the lab's models have no
    batch statistics, so an example's logits do not depend on its neighbours). A call's size
    is planned from the model's activations per example (:func:`plan_chunks`): near a working
    set that keeps the CPU's caches useful (big models: fewer points, and the examples in
    slices whose summed losses are added up), never above the memory budget.

A parity test holds them equal; ``method="auto"`` (the default) picks the faster for the model
and device (:func:`resolve_method`). Both report ``progress(done, total)`` after each chunk (the
loop: each point) and stop early when ``stop()`` turns true; what was not evaluated is NaN
and the result says it is incomplete.

>>> from dgs_core.landscape import Landscape, PlaneSpec, build_plane
>>> from dgs_core.training import TrainConfig, Trainer
>>> trainer = Trainer(TrainConfig(task="moons", optimizers=["sgd", "adam"], steps=20, eval_every=10,
...                               task_params={"n_samples": 200}, device="cpu"))
>>> _ = list(trainer.run())
>>> landscape = Landscape.from_trainer(trainer)
>>> plane = build_plane(landscape, PlaneSpec.exact("sgd", "adam"))
>>> grid = evaluate_grid(landscape, plane, GridSpec(resolution=21), progress=lambda done, total: None)
>>> grid.losses["val"].shape, grid.paths["adam"].coords.shape
((21, 21), (3, 2))
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.func import functional_call, vmap
from torch.nn.functional import cross_entropy

from dgs_core.landscape.planes import Plane, PlaneSpec, ProjectedPath, build_plane
from dgs_core.landscape.weights import SPLITS, Landscape
from dgs_core.params import Param, ParamSet, check_keys, invalid

METHODS = ("auto", "batched", "loop")
GRID_COLUMNS = ("i", "j", "x", "y", "train_loss", "val_loss")
RANDOM_EXTENT = (-1.0, 1.0, -1.0, 1.0)  # Li et al. 2018's plots of filter-normalized planes

SETTINGS = ParamSet(
    (
        Param("resolution", 41, low=3, high=201, integer=True, help="grid points per axis"),
        Param("margin", 0.25, low=0.0, high=10.0, help="room around the paths, × their span"),
        Param(
            "memory_budget_mb", 1024, low=1, high=1 << 20, integer=True, help="memory of one batched chunk"
        ),
        Param("points", 41, low=3, high=1001, integer=True, help="points along an interpolation"),
    )
)

Progress = Callable[[int, int], None] | None
Stop = Callable[[], bool] | None


# ---------------------------------------------------------------------------------------------
# Losses at many weight vectors: the reference and the fast path
# ---------------------------------------------------------------------------------------------


def _check_splits(splits: Sequence[str]) -> tuple[str, ...]:
    if isinstance(splits, str) or not splits or any(s not in SPLITS for s in splits):
        raise invalid("splits", splits, f"a non-empty list of {', '.join(SPLITS)}")
    return tuple(dict.fromkeys(splits))


@torch.no_grad()
def _loop(landscape: Landscape, weights: torch.Tensor, splits: Sequence[str]) -> dict[str, torch.Tensor]:
    """The reference: the model with each weight vector in turn, one forward pass per split."""
    out = {split: torch.empty(len(weights)) for split in splits}
    for i, w in enumerate(weights):
        model = landscape.model_at(w)
        for split in splits:
            x, y = landscape.data(split)
            out[split][i] = float(cross_entropy(model(x), y))
    return out


# A batched call's working set: the activations of its grid points on its examples, about this
# many bytes (counted as Landscape.activations_per_example, float32). Measured on this 2-core CPU,
# one thread: the digits CNN's CPU time per grid point was ~23 ms with 16 points × 128 examples
# per call (120 MB) and ~80 ms with 32 × 449 (830 MB); the moons MLP's (250 validation examples)
# 0.6 ms with 64 points per call and 0.2 ms with 256 (34 MB), where the per-call overhead dominates.
WORKING_SET_BYTES = 128 * 2**20
MIN_POINTS_PER_CALL = 16  # slice the examples rather than go below this many points per call
# Memory of a call, as a multiple of its counted activations: the elementwise work inside
# forward() (residual adds, ReLUs, attention scores) and vmap's batched GroupNorm/LayerNorm
# (normalise, then scale and shift as separate tensors) are not module outputs (an estimate).
ACTIVATION_FACTOR = 3


@dataclass(frozen=True)
class ChunkPlan:
    """How a batched evaluation is cut: ``points`` weight vectors per call, the examples in
    slices of at most ``examples`` (the whole splits at once when that is all of them)."""

    points: int
    examples: int


def plan_chunks(landscape: Landscape, splits: Sequence[str], memory_budget_mb: int) -> ChunkPlan:
    """Points and examples per batched call: near :data:`WORKING_SET_BYTES` of activations
    (speed), within ``memory_budget_mb`` (memory: ``ACTIVATION_FACTOR`` × the activations plus
    the points' weights).

    Raises a ``ParamError`` naming ``memory_budget_mb`` when not even one point on one example
    fits.
    """
    budget = SETTINGS["memory_budget_mb"].validate(memory_budget_mb) * 2**20
    per_example = 4 * landscape.activations_per_example
    weights = 4 * landscape.numel
    total = sum(int(landscape.data(split)[0].shape[0]) for split in splits)
    if ACTIVATION_FACTOR * per_example + weights > budget:
        need = (ACTIVATION_FACTOR * per_example + weights) / 2**20
        raise invalid(
            "memory_budget_mb",
            memory_budget_mb,
            f">= {math.ceil(need)}: one grid point of this model on one example needs about {need:.1f} MB",
        )
    examples = total
    if per_example * total * MIN_POINTS_PER_CALL > WORKING_SET_BYTES:
        examples = max(1, WORKING_SET_BYTES // (per_example * MIN_POINTS_PER_CALL))
    points = max(1, WORKING_SET_BYTES // (per_example * examples))
    points = min(points, max(1, budget // (ACTIVATION_FACTOR * per_example * examples + weights)))
    if ACTIVATION_FACTOR * per_example * examples + weights > budget:  # one point, fewer examples
        examples = max(1, (budget - weights) // (ACTIVATION_FACTOR * per_example))
    return ChunkPlan(int(points), int(min(examples, total)))


def _batched_function(
    landscape: Landscape, splits: Sequence[str], examples: int
) -> Callable[[torch.Tensor], torch.Tensor]:
    """``f(weights (b, n)) -> (b, len(splits))``: every split's mean loss, vmapped over the
    weight vectors; the examples in slices of at most ``examples`` (each slice's summed loss
    added up, then divided by the split's size)."""
    data = [landscape.data(split) for split in splits]
    counts = torch.tensor([float(len(y)) for _, y in data], device=landscape.device)
    # pieces: (inputs, [(split index, labels), …]) for one forward pass each
    if examples >= sum(len(y) for _, y in data):
        pieces = [(torch.cat([x for x, _ in data]), [(k, y) for k, (_, y) in enumerate(data)])]
    else:
        pieces = [
            (xs, [(k, ys)])
            for k, (x, y) in enumerate(data)
            for xs, ys in zip(x.split(examples), y.split(examples), strict=True)
        ]
    model, layout = landscape.model, landscape.layout

    def losses(flat: torch.Tensor) -> torch.Tensor:
        params = layout.unflatten(flat)
        sums = [flat.new_zeros(())] * len(splits)
        for inputs, targets in pieces:
            logits = functional_call(model, params, (inputs,)).split([len(y) for _, y in targets])
            for (k, y), z in zip(targets, logits, strict=True):
                sums[k] = sums[k] + cross_entropy(z, y, reduction="sum")
        return torch.stack(sums) / counts

    return vmap(losses)


def resolve_method(landscape: Landscape, method: str) -> str:
    """``method``, with "auto" resolved: the loop for a model with convolutions on the CPU, the
    batched path otherwise.

    Why: vmap over a convolution's weights runs it as a grouped convolution, which oneDNN does
    at about half the speed per group of the plain one on this CPU (8 vs 4.3 ms per 16 → 16
    channel 3×3 conv on 449 8×8 digits); with vmap's batched GroupNorm the digits CNN's 41 × 41
    grid took 57 s (one thread) and 99 s (two) against the loop's 30 s and 15 s
    (bench/landscape.py). The MLPs and the transformer gain from it (moons: 1.3× on one
    thread, 7× on two; modular: 1.0×), and so should every model on a GPU, where one kernel
    launch per grid point dominates the loop.
    """
    if method not in METHODS:
        raise invalid("method", method, f"one of {', '.join(METHODS)}")
    if method != "auto":
        return method
    convolution = (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d)
    convolutions = any(isinstance(m, convolution) for m in landscape.model.modules())
    return "loop" if convolutions and landscape.device.type == "cpu" else "batched"


def losses_at(
    landscape: Landscape,
    weights: Callable[[int, int], torch.Tensor],
    count: int,
    *,
    splits: Sequence[str] = SPLITS,
    method: str = "auto",
    memory_budget_mb: int = 1024,
    progress: Progress = None,
    stop: Stop = None,
) -> tuple[dict[str, np.ndarray], int]:
    """The loss on each split at ``count`` weight vectors, and how many were evaluated.

    ``weights(start, stop)`` gives vectors ``start … stop − 1`` as ``(stop − start, n)`` float32
    (made when needed: a grid's vectors never all exist at once). Values not evaluated (after
    ``stop()``) are NaN.
    """
    splits = _check_splits(splits)
    method = resolve_method(landscape, method)
    plan = plan_chunks(landscape, splits, memory_budget_mb)
    chunk = 1 if method == "loop" else plan.points
    out = {split: np.full(count, np.nan) for split in splits}
    function = _batched_function(landscape, splits, plan.examples) if method == "batched" else None
    done = 0
    while done < count:
        if stop is not None and stop():
            break
        end = min(count, done + chunk)
        block = weights(done, end)
        if function is None:
            values = _loop(landscape, block, splits)
            for split in splits:
                out[split][done:end] = values[split].numpy()
        else:
            with torch.no_grad():
                values = function(block.to(landscape.device)).cpu().double().numpy()
            for k, split in enumerate(splits):
                out[split][done:end] = values[:, k]
        done = end
        if progress is not None:
            progress(done, count)
    return out, done


# ---------------------------------------------------------------------------------------------
# Grids over a plane
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GridSpec:
    """The grid over a plane: ``resolution`` × ``resolution`` points spanning ``extent``.

    Attributes:
        resolution: points per axis (3 … 201).
        extent: ``(x_min, x_max, y_min, y_max)`` in plane coordinates; None: around every
            path's projection and the plane's anchors, widened by ``margin`` × the larger of
            their two spans on each side (a random plane: ``(-1, 1, -1, 1)``, as Li et al.).
        margin: see ``extent``.
    """

    resolution: int = 41
    extent: tuple[float, float, float, float] | None = None
    margin: float = 0.25

    def __post_init__(self) -> None:
        object.__setattr__(self, "resolution", SETTINGS["resolution"].validate(self.resolution))
        object.__setattr__(self, "margin", SETTINGS["margin"].validate(self.margin))
        if self.extent is not None:
            extent = self.extent
            ok = isinstance(extent, Sequence) and not isinstance(extent, str) and len(extent) == 4
            # extent is the caller's value: ok checks it first
            values = [Param("extent", 0.0).validate(v) for v in extent] if ok else []  # type: ignore[union-attr]  # (reason above)
            if not ok or not (values[0] < values[1] and values[2] < values[3]):
                raise invalid(
                    "extent", extent, "(x_min, x_max, y_min, y_max) with x_min < x_max and y_min < y_max"
                )
            # floats: Param("extent", 0.0) validates floats
            object.__setattr__(self, "extent", tuple(float(v) for v in values))  # type: ignore[arg-type]  # (reason above)

    def to_dict(self) -> dict[str, Any]:
        return {
            "resolution": self.resolution,
            "extent": None if self.extent is None else list(self.extent),
            "margin": self.margin,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GridSpec:
        if not isinstance(data, Mapping):
            raise invalid("grid", data, "a mapping")
        check_keys(data, [f.name for f in dataclasses.fields(cls)], "grid")
        extent = data.get("extent")
        return cls(**{**data, "extent": None if extent is None else tuple(extent)})

    def axes(self, plane: Plane, paths: Mapping[str, ProjectedPath]) -> tuple[np.ndarray, np.ndarray]:
        """The x and y ticks (float64) of this grid over ``plane``."""
        extent = self.extent
        if extent is None and plane.spec.kind == "random":
            extent = RANDOM_EXTENT
        if extent is None:
            points = np.concatenate(
                [p.coords for p in paths.values()] + [np.asarray(list(plane.anchors.values()))]
            )
            low, high = points.min(axis=0), points.max(axis=0)
            pad = self.margin * max(float((high - low).max()), 1e-12)
            extent = (low[0] - pad, high[0] + pad, low[1] - pad, high[1] + pad)
        r = self.resolution
        return np.linspace(extent[0], extent[1], r), np.linspace(extent[2], extent[3], r)


@dataclass(frozen=True, eq=False)
class LossGrid:
    """The losses on a grid over a plane, with every path projected onto it.

    Attributes:
        plane: the plane (what it is, how faithful: ``plane.title``).
        grid: the grid asked for.
        xs, ys: ``(R,)`` the ticks.
        losses: per evaluated split, ``(R, R)`` with ``[j, i]`` the loss at ``(xs[i], ys[j])``
            (row-major in y, as plotly's contours); NaN where not evaluated.
        paths: per optimizer, its projection (and the losses along it, when asked).
        complete: False when stopped before every point was evaluated.
        seconds: the evaluation's wall time.
    """

    plane: Plane
    grid: GridSpec
    xs: np.ndarray
    ys: np.ndarray
    losses: Mapping[str, np.ndarray]
    paths: Mapping[str, ProjectedPath]
    complete: bool
    seconds: float

    @property
    def title(self) -> str:
        return self.plane.title

    def frame(self) -> pd.DataFrame:
        """One row per grid point: i, j, x, y, train_loss, val_loss (NaN: not evaluated)."""
        r = len(self.xs)
        j, i = np.divmod(np.arange(r * r), r)
        nan = np.full((r, r), np.nan)
        return pd.DataFrame(
            {
                "i": i.astype(np.int64),
                "j": j.astype(np.int64),
                "x": self.xs[i],
                "y": self.ys[j],
                "train_loss": self.losses.get("train", nan).reshape(-1),
                "val_loss": self.losses.get("val", nan).reshape(-1),
            },
            columns=list(GRID_COLUMNS),
        )


def evaluate_grid(
    landscape: Landscape,
    plane: Plane,
    grid: GridSpec | None = None,
    *,
    splits: Sequence[str] = SPLITS,
    method: str = "auto",
    memory_budget_mb: int = 1024,
    path_losses: bool = True,
    progress: Progress = None,
    stop: Stop = None,
) -> LossGrid:
    """The loss on ``splits`` over ``grid`` on ``plane``, and every path projected onto it.

    ``path_losses``: also evaluate each path at its recorded weights and at their projections
    (2 × the recorded snapshots more points, after the grid). ``progress(done, total)`` counts
    every point (grid and paths). Raises ``ParamError`` naming ``splits``, ``method`` or
    ``memory_budget_mb``.
    """
    grid = GridSpec() if grid is None else grid
    if not isinstance(grid, GridSpec):
        raise invalid("grid", grid, "a GridSpec")
    splits = _check_splits(splits)
    start = time.perf_counter()
    paths = plane.project(landscape)
    xs, ys = grid.axes(plane, paths)
    gx, gy = np.meshgrid(xs, ys)  # [j, i]: row-major in y
    coords = torch.from_numpy(np.stack([gx.ravel(), gy.ravel()], axis=1))
    path_points: list[tuple[str, torch.Tensor]] = []
    if path_losses:
        for label, path in paths.items():
            path_points += [
                (label, landscape.paths[label].weights),
                (label, plane.points(torch.from_numpy(path.coords))),
            ]
    extra = sum(len(w) for _, w in path_points)
    total = len(coords) + extra
    settings = {"splits": splits, "method": method, "memory_budget_mb": memory_budget_mb, "stop": stop}

    def grid_progress(done: int, _count: int) -> None:
        if progress is not None:
            progress(done, total)

    values, done = losses_at(
        landscape, lambda a, b: plane.points(coords[a:b]), len(coords), progress=grid_progress, **settings
    )
    complete = done == len(coords)
    losses = {split: v.reshape(len(ys), len(xs)) for split, v in values.items()}
    if path_points and complete:
        stacked = torch.cat([w for _, w in path_points])
        offset = len(coords)

        def path_progress(done: int, _count: int) -> None:
            if progress is not None:
                progress(offset + done, total)

        along, done = losses_at(
            landscape, lambda a, b: stacked[a:b], len(stacked), progress=path_progress, **settings
        )
        complete = done == len(stacked)
        cursor = 0
        for n, (label, weights) in enumerate(path_points):
            k = len(weights)
            part = {split: along[split][cursor : cursor + k] for split in splits}
            key = "losses" if n % 2 == 0 else "plane_losses"
            paths[label] = dataclasses.replace(paths[label], **{key: MappingProxyType(part)})
            cursor += k
    return LossGrid(
        plane,
        grid,
        xs,
        ys,
        MappingProxyType(losses),
        MappingProxyType(paths),
        complete,
        time.perf_counter() - start,
    )


# ---------------------------------------------------------------------------------------------
# 1-D interpolation between two solutions
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Interpolation:
    """The loss along ``θ(α) = (1 − α) θ_start + α θ_end`` (Goodfellow, Vinyals and Saxe 2015,
    https://arxiv.org/abs/1412.6544; between a small- and a large-batch solution: Keskar et al.
    2017, https://arxiv.org/abs/1609.04836).

    Attributes:
        start, end: the optimizers' labels (their final weights sit at α = 0 and α = 1).
        alphas: ``(p,)`` the points.
        losses: per split, ``(p,)``; NaN where not evaluated.
        distance: ‖θ_end − θ_start‖.
        complete: False when stopped early.
    """

    start: str
    end: str
    alphas: np.ndarray
    losses: Mapping[str, np.ndarray]
    distance: float
    complete: bool

    def frame(self) -> pd.DataFrame:
        """alpha, train_loss, val_loss (NaN where not evaluated)."""
        nan = np.full(len(self.alphas), np.nan)
        return pd.DataFrame({"alpha": self.alphas, **{f"{s}_loss": self.losses.get(s, nan) for s in SPLITS}})


def interpolate(
    landscape: Landscape,
    start: str,
    end: str,
    *,
    points: int = 41,
    alpha_range: tuple[float, float] = (-0.5, 1.5),
    splits: Sequence[str] = SPLITS,
    method: str = "auto",
    memory_budget_mb: int = 1024,
    progress: Progress = None,
    stop: Stop = None,
) -> Interpolation:
    """The loss along the line through two optimizers' final weights, at ``points`` evenly
    spaced α in ``alpha_range`` (the defaults reach half the distance beyond each end).

    The line's arithmetic is float64, so α = 0 and α = 1 give the two solutions exactly (when
    they are among the points). Raises ``ParamError`` naming ``start``, ``end``, ``points`` or
    ``alpha_range``.
    """
    origin = landscape.path(start, field="start").final.to(torch.float64)
    target = landscape.path(end, field="end").final.to(torch.float64)
    if end == start:
        raise invalid("end", end, f"another optimizer than start={start!r}")
    count = SETTINGS["points"].validate(points)
    ok = isinstance(alpha_range, Sequence) and not isinstance(alpha_range, str) and len(alpha_range) == 2
    low, high = (
        (Param("alpha_range", 0.0, low=-10.0, high=10.0).validate(a) for a in alpha_range) if ok else (0, 0)
    )
    if not ok or not low < high:
        raise invalid("alpha_range", alpha_range, "(low, high) with -10 <= low < high <= 10")
    alphas = np.linspace(low, high, count)
    direction = target - origin
    line = torch.from_numpy(alphas)

    def weights(a: int, b: int) -> torch.Tensor:
        return (origin + line[a:b, None] * direction).to(torch.float32)

    values, done = losses_at(
        landscape,
        weights,
        count,
        splits=splits,
        method=method,
        memory_budget_mb=memory_budget_mb,
        progress=progress,
        stop=stop,
    )
    return Interpolation(start, end, alphas, MappingProxyType(values), float(direction.norm()), done == count)


# ---------------------------------------------------------------------------------------------
# The cache
# ---------------------------------------------------------------------------------------------


class LandscapeCache:
    """Finished grids, least recently used first out (at most ``max_entries``), thread-safe.

    A grid is a pure function of the run's weights, the plane, the grid and the splits, so
    :meth:`key` is the SHA-256 of ``landscape.fingerprint`` (architecture, every path's steps and
    weights, the task's data: see :attr:`Landscape.fingerprint`), ``PlaneSpec.to_json()``,
    ``GridSpec.to_dict()``, the splits and ``path_losses``. The method and memory budget are not
    part of it (they change how, not what). Incomplete (stopped) grids are not kept.
    """

    def __init__(self, max_entries: int = 8) -> None:
        self.max_entries = Param("max_entries", 8, low=1, high=1000, integer=True).validate(max_entries)
        self._entries: OrderedDict[str, LossGrid] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def key(
        landscape: Landscape,
        spec: PlaneSpec,
        grid: GridSpec,
        splits: Sequence[str] = SPLITS,
        path_losses: bool = True,
    ) -> str:
        parts = [landscape.fingerprint, spec.to_json(), json.dumps(grid.to_dict(), sort_keys=True)]
        parts += [",".join(_check_splits(splits)), str(bool(path_losses))]
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()

    def get(self, key: str) -> LossGrid | None:
        with self._lock:
            found = self._entries.get(key)
            if found is not None:
                self._entries.move_to_end(key)
            return found

    def put(self, key: str, grid: LossGrid) -> None:
        if not grid.complete:
            return
        with self._lock:
            self._entries[key] = grid
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)

    def grid(
        self,
        landscape: Landscape,
        spec: PlaneSpec,
        grid: GridSpec | None = None,
        *,
        splits: Sequence[str] = SPLITS,
        path_losses: bool = True,
        **kwargs: Any,
    ) -> LossGrid:
        """The cached grid, or a new one (built, evaluated with ``kwargs``, and kept if complete)."""
        grid = GridSpec() if grid is None else grid
        key = self.key(landscape, spec, grid, splits, path_losses)
        found = self.get(key)
        if found is not None:
            return found
        result = evaluate_grid(
            landscape, build_plane(landscape, spec), grid, splits=splits, path_losses=path_losses, **kwargs
        )
        self.put(key, result)
        return result
