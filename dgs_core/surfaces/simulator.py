"""The batched optimizer simulator of the Surface lab: every registered optimizer on a 2-D surface.

Every surface is written once, as arithmetic on ``x`` and ``y`` plus ``xp.exp / xp.cos /
xp.sin / xp.sqrt / xp.where`` where ``xp`` is numpy or torch. The same formula therefore
gives a torch-differentiable value (autograd, the 3-D view) and a fast numpy value and
closed-form gradient for the simulator; the tests check the closed forms against autograd
and finite differences.

>>> from dgs_core.surfaces import get_surface, simulate
>>> rosen = get_surface("rosenbrock")
>>> float(rosen.value([1.0, 1.0]))
0.0
>>> run = simulate(rosen, "adam", steps=200)             # one start, registry defaults
>>> run.points.shape                                      # (steps + 1, rows, 2)
(201, 1, 2)
>>> sweep = simulate(rosen, "sgd", lrs=[1e-4, 1e-3, 1e-2], steps=200)  # three rows, one batch

Rows are independent problems: many starts and/or many learning rates advance together as
one batch (one parameter group per learning rate, each an ``(S, 2)`` tensor built with
``independent_rows=True``, so tensor-level reductions such as LARS's norms, DGS's means and
AdaGrad-Norm's accumulator are taken per row). A row whose loss or point becomes
non-finite is recorded as diverged at that step and frozen at its last finite point; the
other rows go on.

Gradient noise (optional, docs/algorithms.md#surfaces): the optimizer sees ``∇f(x) + σ·ξ_t/√B`` with
``ξ_t ~ N(0, I)`` drawn from ``numpy.random.default_rng(seed)``. Every row sees the same
``ξ_t`` at step ``t`` (common random numbers): a row's result depends only on its own start,
learning rate and the seed, never on which other rows share the batch, and an lr sweep
compares learning rates on the same noise. Optimizers that grow their batch (the AdAdaGrad
family) see per-sample gradients ``∇f(x) + σ·ξ_{t,i}``, ``i < b``, with
``ξ_{t,i}`` from ``default_rng((seed, t))``. AdaScale SGD's steps take S groups of B examples:
its group gradients ``∇f(x) + σ·ξ_{t,i}/√B``, ``i < S``, go to its ``measure_gain``, and the step's
gradient is their mean (see :class:`_GradientGroups`).

Schedule-Free AdamW takes its gradients at y and is evaluated at x, the average of its iterates
(``optimizer.eval()`` / ``optimizer.train()``, as its authors switch): the recorded points, losses
and metrics are x's, the point the optimizer would be evaluated at; the recorded gradients are
the ones its steps used, taken at y.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Any

import numpy as np
import torch

from dgs_core import metrics
from dgs_core.device import small_tensor_mode
from dgs_core.optim import adadagrad
from dgs_core.params import Param, invalid
from dgs_core.surfaces.functions import Surface, check_starts, get_surface

Array = np.ndarray

# ---------------------------------------------------------------------------------------------
# The simulator
# ---------------------------------------------------------------------------------------------

SCALING_EPS = 1e-12  # docs/algorithms.md#diagnostics: η_eff = |Δθ| / (|g| + 1e-12)
DEFAULT_TOLERANCE = 1e-3  # ε of "steps to ε" (docs/algorithms.md#metrics)
# Hyperparameters whose documented default is "equal to lr" (docs/algorithms.md#extrasgd:
# γ̂ = η): unless the caller
# sets them, each row's value follows that row's learning rate.
_TIED_TO_LR = {"extrapolation_lr"}
# Optimizer state the figures draw: DGS's scaling factor s_t, ExtraSGD's x_t + δ.
_TRACKED_STATE = ("scale", "extrapolated")


@dataclass(frozen=True, eq=False)
class Run:
    """One simulation: a batch of N independent rows (starts × learning rates), T steps.

    Row ``r = i_lr · S + i_start`` (learning-rate-major). Arrays are float64 numpy, time first.
    A diverged row (``diverged_at[r] = d ≥ 1``) keeps its last finite point and loss from step
    d on (frozen, so plots and metrics need no special case); its per-step arrays (``grad``,
    ``lr``, ``scaling``, ``scale``, ``extrapolated``) are NaN from index d − 1 on, the step
    that diverged, except ``grad`` whose index d − 1 still holds the gradient that launched it.

    Attributes:
        surface: the surface.
        optimizer: registry name.
        hparams: the resolved hyperparameters (surface defaults + the caller's), as given to
            the registry; per-row learning rates are in ``lrs``.
        starts: ``(N, 2)`` start of each row.
        lrs: ``(N,)`` learning rate of each row.
        points: ``(T + 1, N, 2)`` x_0 … x_T (Schedule-Free AdamW: its evaluation point x, the
            average, not y where it takes gradients).
        loss: ``(T + 1, N)`` f(x_t).
        grad: ``(T, N, 2)`` the gradient step t + 1 applied: ∇f(x_t) plus noise, clipped when
            clipping is on; for closure optimizers (ExtraSGD) the gradient at the
            extrapolated point, the one their update used.
        lr: ``(T, N)`` η_t, the parameter group's lr when step t + 1 was taken.
        scaling: ``(T, N, 2)`` per-coordinate scaling factor (|Δx| / (|g| + 1e-12)) / η_t
            (docs/algorithms.md#diagnostics): 1 for plain SGD, larger where the optimizer stepped
            further than η·|g|.
        batch_size: ``(T, N)`` the batch size behind each step's gradient (AdaScale: S·B).
        diverged_at: ``(N,)`` first step with a non-finite point or loss, −1 if none.
        scale: ``(T, N, 2)`` DGS's own scaling factor s_t (``state["scale"]``), else None.
        extrapolated: ``(T, N, 2)`` ExtraSGD's extrapolated points x_t + δ, else None.
        noise_std, batch, clip_norm, seed: the gradient-noise and clipping settings.
        notes: messages for the user (clamped starts).
        seconds: wall time of the simulation loop.
    """

    surface: Surface
    optimizer: str
    hparams: Mapping[str, Any]
    starts: Array
    lrs: Array
    points: Array
    loss: Array
    grad: Array
    lr: Array
    scaling: Array
    batch_size: Array
    diverged_at: Array
    scale: Array | None = None
    extrapolated: Array | None = None
    noise_std: float = 0.0
    batch: int = 1
    clip_norm: float | None = None
    seed: int = 0
    notes: tuple[str, ...] = ()
    seconds: float = 0.0

    @property
    def steps(self) -> int:
        """T, the number of steps simulated."""
        return self.points.shape[0] - 1

    @property
    def rows(self) -> int:
        """N, the number of independent rows."""
        return self.points.shape[1]

    @property
    def length(self) -> Array:
        """``(N,)`` number of valid points per row: T + 1, or d for a row diverged at step d."""
        return np.where(self.diverged_at >= 0, self.diverged_at, self.steps + 1)

    @property
    def gap(self) -> Array:
        """``(T + 1, N)`` f(x_t) − f* (the loss itself where f* is unknown)."""
        return self.loss if self.surface.f_min is None else self.loss - self.surface.f_min

    @property
    def final_gap(self) -> Array:
        """``(N,)`` gap at the last step; +inf for diverged rows."""
        return np.where(self.diverged_at >= 0, np.inf, self.gap[-1])

    def row(self, index: int) -> Run:
        """Row ``index`` as a run of its own (N = 1)."""
        if not -self.rows <= index < self.rows:
            raise ValueError(f"Invalid index: {index} (must be in [0, {self.rows}))")
        pick = slice(index, index + 1) if index != -1 else slice(-1, None)
        sliced = {
            "starts": self.starts[pick],
            "lrs": self.lrs[pick],
            "diverged_at": self.diverged_at[pick],
        }
        for name in ("points", "loss", "grad", "lr", "scaling", "batch_size", "scale", "extrapolated"):
            value = getattr(self, name)
            sliced[name] = None if value is None else value[:, pick]
        return replace(self, **sliced)

    def metrics(
        self,
        *,
        tolerance: float = DEFAULT_TOLERANCE,
        window: int = metrics.SPIKE_WINDOW,
        tau: float = metrics.SPIKE_TAU,
    ) -> dict[str, Array]:
        """docs/algorithms.md#metrics metrics per row, as ``(N,)`` arrays.

        Keys: ``final_gap`` (+inf when diverged), ``steps_to_tolerance`` (first t with
        f(x_t) − f* < ε, −1 if never or f* unknown), ``overshoots`` and
        ``overshoot_fraction`` (⟨∇f(x_{t+1}), x_{t+1} − x_t⟩ > 0, fraction of the row's valid
        steps), ``oscillations`` and ``oscillation_fraction`` (cos(Δ_t, Δ_{t−1}) < 0),
        ``spikes`` (K on the gap, runs counted once), ``diverged_at`` (−1 if not).
        """
        gap = self.gap
        true_grad = self.surface.grad(self.points[1:])  # geometry: noise-free ∇f
        overshoot = metrics.overshoot_mask(self.points, true_grad)
        oscillation = metrics.oscillation_mask(self.points)
        valid_steps = self.length - 1
        # frozen rows take zero-length steps after diverging: no event is counted there
        if self.surface.f_min is None:
            reached = np.full(self.rows, metrics.NOT_REACHED)
        else:
            reached = metrics.steps_to_target(gap, tolerance)
        return {
            "final_gap": self.final_gap,
            "steps_to_tolerance": np.atleast_1d(reached),
            "overshoots": overshoot.sum(axis=0),
            "overshoot_fraction": metrics.event_fraction(overshoot, valid_steps),
            "oscillations": oscillation.sum(axis=0),
            "oscillation_fraction": metrics.event_fraction(oscillation, valid_steps),
            "spikes": np.atleast_1d(metrics.count_spikes(gap, window=window, tau=tau)),
            "diverged_at": self.diverged_at,
        }


def simulate(
    surface: Surface | str,
    optimizer: str = "sgd",
    hparams: Mapping[str, Any] | None = None,
    *,
    start: Any = None,
    lrs: Sequence[float] | Array | None = None,
    steps: int = 500,
    seed: int = 0,
    noise_std: float = 0.0,
    batch_size: int = 1,
    clip_norm: float | None = None,
    outside: str = "clamp",
) -> Run:
    """Run a registered optimizer on a 2-D surface from one or many starts, at one or many lrs.

    Args:
        surface: a :class:`Surface` or its name.
        optimizer: a registry name (``dgs_core.optim.names()``); every registered optimizer
            works, including closure optimizers (ExtraSGD) and adaptive batch sizes
            (AdAdaGrad family).
        hparams: hyperparameters on top of the registry's surface defaults.
        start: ``(x, y)`` or ``(S, 2)`` starts; ``None`` = the surface's default start.
        lrs: learning rates to sweep; rows are lrs × starts (lr-major). ``None`` = the one lr
            of ``hparams`` / the surface default. Each lr is one parameter group. Hyperparameters
            whose documented default is "= lr" (ExtraSGD's γ̂) follow each row's lr unless set.
        steps: T ≥ 1.
        seed: seed of the gradient noise.
        noise_std: σ of the gradient noise ∇f + σ·ξ/√B (0 = exact gradients).
        batch_size: B of the noise formula (the "batch size" knob; ignored by optimizers that
            choose their own batch size, which start from their own setting).
        clip_norm: clip each row's gradient to this Euclidean norm; ``None`` (default) = off.
        outside: a start outside the domain is ``"clamp"``-ed (with a note) or ``"raise"``-s.

    Returns:
        A :class:`Run`; ``run.metrics()`` gives the metrics of docs/algorithms.md#metrics per row.
    """
    surf = get_surface(surface)
    engine = _Engine(
        surf,
        optimizer,
        hparams,
        start=start,
        lrs=lrs,
        steps=steps,
        seed=seed,
        noise_std=noise_std,
        batch_size=batch_size,
        clip_norm=clip_norm,
        outside=outside,
    )
    raw = engine.run(keep_path=True)
    return Run(
        surface=surf,
        optimizer=engine.info.name,
        hparams=MappingProxyType(dict(engine.hparams)),
        starts=raw["points"][0].copy(),
        lrs=raw["lrs"],
        points=raw["points"],
        loss=raw["loss"],
        grad=raw["grad"],
        lr=raw["lr"],
        scaling=raw["scaling"],
        batch_size=raw["batch_size"],
        diverged_at=raw["diverged_at"],
        scale=raw.get("scale"),
        extrapolated=raw.get("extrapolated"),
        noise_std=engine.noise_std,
        batch=engine.batch,
        clip_norm=engine.clip_norm,
        seed=engine.seed,
        notes=tuple(engine.notes),
        seconds=raw["seconds"],
    )


MAX_STEPS = 100_000
MAX_ROWS = 1_000_000
# The simulator's settings; SurfaceConfig's fields are these specs (narrowed where the lab needs).
STEPS = Param("steps", 500, low=1, high=MAX_STEPS, integer=True, help="steps simulated")
SEED = Param("seed", 0, low=0, high=2**63 - 1, integer=True, help="seed of the gradient noise")
NOISE_STD = Param("noise_std", 0.0, low=0.0, high=1e3, help="gradient noise σ: ∇f + σ·ξ/√B")
BATCH_SIZE = Param("batch_size", 1, low=1, high=4096, integer=True, help="B of the noise formula")
CLIP_NORM = Param(
    "clip_norm", None, low=0.0, low_open=True, high=1e6, optional=True, help="gradient-norm clip (None: off)"
)


class _Engine:
    """The simulation loop behind :func:`simulate`, :func:`basin_map` and :func:`lr_sweep`.

    One parameter group per learning rate, each an ``(S, 2)`` float64 tensor (the S starts),
    built by the registry with ``independent_rows=True``. Gradients are the surfaces' closed
    forms in numpy, handed to torch without a copy (``torch.from_numpy``); positions are read
    back the same way. Rows never interact: the noise is common to all rows, clipping is per
    row, and divergence is found afterwards from the recorded losses (a NaN row stays NaN
    inside its own row), then frozen.
    """

    def __init__(
        self,
        surface: Surface,
        optimizer: str,
        hparams: Mapping[str, Any] | None,
        *,
        start: Any,
        lrs: Any,
        steps: int,
        seed: int,
        noise_std: float,
        batch_size: int,
        clip_norm: float | None,
        outside: str,
    ) -> None:
        from dgs_core.optim import registry  # late: the registry imports every optimizer

        self.surface = surface
        self.info = registry.get(optimizer)
        self.user_hparams = dict(hparams or {})
        self.hparams = self.info.resolve(self.user_hparams, surface=True)
        self.steps = STEPS.validate(steps)
        self.seed = SEED.validate(seed)
        self.noise_std = NOISE_STD.validate(noise_std)
        self.batch = BATCH_SIZE.validate(batch_size)
        self.clip_norm = CLIP_NORM.validate(clip_norm)
        self.starts, self.notes = check_starts(surface, start, outside=outside)
        if lrs is None:
            self.lr_values = np.array([self.hparams["lr"]], dtype=float)
        else:
            values = np.atleast_1d(np.asarray(lrs, dtype=float))
            if values.ndim != 1 or values.size == 0:
                raise invalid("lrs", lrs, "a non-empty sequence of numbers")
            lr_spec = self.info.hyperparam("lr")
            self.lr_values = np.array([lr_spec.validate(v) for v in values], dtype=float)
        # hyperparameters tied to the lr (not set by the caller) take each group's lr
        self.tied = sorted(
            name for name in _TIED_TO_LR if name in self.hparams and name not in self.user_hparams
        )
        if len(self.lr_values) == 1:
            self.hparams.update(dict.fromkeys(self.tied, float(self.lr_values[0])))
        self.n_starts = len(self.starts)
        self.n_rows = self.n_starts * len(self.lr_values)
        if self.n_rows > MAX_ROWS:
            raise ValueError(f"Invalid starts × lrs: {self.n_rows} rows (must be <= {MAX_ROWS})")

    def _build(self) -> tuple[torch.optim.Optimizer, list[torch.Tensor]]:
        from dgs_core.optim import registry

        params, groups = [], []
        for lr in self.lr_values:
            # requires_grad: closure optimizers (ExtraSGD) only move parameters that require it
            p = torch.tensor(self.starts, dtype=torch.float64, requires_grad=True)
            params.append(p)
            groups.append({"params": [p], "lr": float(lr), **dict.fromkeys(self.tied, float(lr))})
        opt = registry.create(
            self.info.name, groups, surface=True, independent_rows=True, **self.user_hparams
        )
        return opt, params

    def run(self, *, keep_path: bool = True) -> dict[str, Any]:
        """Simulate; the raw arrays (see :class:`Run`).

        ``keep_path=False`` (basin maps: many rows) keeps only the loss per step, the final
        point and the divergence step, not the path, gradients and scaling factors.
        """
        with small_tensor_mode():  # tiny tensors (at most a few 10⁴ elements)
            return self._run(keep_path)

    def _run(self, keep_path: bool) -> dict[str, Any]:
        from dgs_core.optim import registry  # late: the registry imports every optimizer

        surface, steps, n_rows = self.surface, self.steps, self.n_rows
        bounds = [(k * self.n_starts, (k + 1) * self.n_starts) for k in range(len(self.lr_values))]
        opt, params = self._build()
        groups = opt.param_groups
        needs_closure = self.info.needs_closure
        f, df, fparams = surface.f, surface.df, surface.params

        x0 = np.tile(self.starts, (len(self.lr_values), 1))
        if keep_path:  # the losses come in one call at the end
            loss = None
            points = np.empty((steps + 1, n_rows, 2))
            points[0] = x0
            grads = np.full((steps, n_rows, 2), np.nan)
            lr_hist = np.full((steps, n_rows), np.nan)
        else:  # the loss per step (steps to ε, divergence), the last finite point
            loss = np.full((steps + 1, n_rows), np.nan)
            last_finite = x0.copy()
        tracked: dict[str, Array] = {}  # _TRACKED_STATE's histories, for the keys the optimizer keeps
        batches = _RowBatches.create(self, opt, params, bounds)
        gain_groups = _GradientGroups.create(self, opt, params, bounds)
        # AdaScale's steps take S groups of B examples (one batch of S·B)
        group_count = gain_groups.scale if gain_groups is not None else 1
        batch_hist = np.full((steps, n_rows), self.batch * group_count, dtype=np.int64)
        # Schedule-Free trains at y and evaluates at x: the path, the loss and the metrics are x's
        evaluate_elsewhere = registry.evaluates_elsewhere(opt)

        common_noise = None
        if self.noise_std > 0 and batches is None and gain_groups is None:
            rng = np.random.default_rng(self.seed)
            common_noise = rng.standard_normal((steps, 2)) * (self.noise_std / math.sqrt(self.batch))
        clip = self.clip_norm
        noise_now: Array | None = None  # the step's noise: (2,) common or (N, 2) per row

        def gradient(x: Array, out: Array | None = None) -> Array:
            gx, gy = df(x[:, 0], x[:, 1], np, **fparams)
            g = np.empty((n_rows, 2)) if out is None else out
            g[:, 0] = gx  # (cheaper than np.stack on these small arrays)
            g[:, 1] = gy
            if noise_now is not None:
                g += noise_now
            if clip is not None:
                norm = np.sqrt(np.einsum("ij,ij->i", g, g))
                g *= np.minimum(1.0, clip / np.where(norm > 0, norm, 1.0))[:, None]
            return g

        def current() -> Array:
            if len(params) == 1:
                return params[0].detach().numpy()
            return np.concatenate([p.detach().numpy() for p in params])

        def set_grads(g: Array) -> None:
            for p, (a, b) in zip(params, bounds, strict=True):
                p.grad = torch.from_numpy(g[a:b])

        def evaluation_point() -> Array:
            # the authors' protocol: eval() moves the parameters to x, train() back to y
            with registry.at_evaluation_point(opt):
                return current().copy()

        def closure() -> torch.Tensor:
            # torch's convention: loss and gradients at the *current* parameters, on the
            # step's batch (here: the step's noise draw, the same for every call in a step).
            x = current()
            set_grads(gradient(x))
            return torch.tensor(float(np.sum(f(x[:, 0], x[:, 1], np, **fparams))))

        x = x0
        started = time.perf_counter()
        with np.errstate(all="ignore"):
            if not keep_path:
                loss[0] = f(x[:, 0], x[:, 1], np, **fparams)
            for t in range(steps):
                if batches is not None:
                    batch_hist[t] = batches.sizes
                    noise_now = batches.noise(t)
                elif gain_groups is not None:
                    noise_now = gain_groups.noise(t)
                elif common_noise is not None:
                    noise_now = common_noise[t]
                if keep_path:
                    for group, (a, b) in zip(groups, bounds, strict=True):
                        lr_hist[t, a:b] = group["lr"]
                if needs_closure:
                    opt.step(closure)  # the closure computes every gradient
                    if keep_path:  # the gradient the update applied: at the extrapolated point
                        grads[t] = np.concatenate([p.grad.numpy() for p in params])
                else:
                    g = gradient(x, out=grads[t] if keep_path else None)
                    if batches is not None:
                        batches.test(t, x)
                    if gain_groups is not None:
                        gain_groups.measure(x)
                    set_grads(g)
                    opt.step()
                    if batches is not None:
                        batches.grow()
                x = current()  # where the next gradient is taken
                drawn = evaluation_point() if evaluate_elsewhere else x
                if keep_path:
                    points[t + 1] = drawn
                    if t == 0:  # the state worth drawing that this optimizer keeps
                        kept = [key for key in _TRACKED_STATE if all(key in opt.state[p] for p in params)]
                        tracked = {key: np.full((steps, n_rows, 2), np.nan) for key in kept}
                    for key, history in tracked.items():
                        for p, (a, b) in zip(params, bounds, strict=True):
                            history[t, a:b] = opt.state[p][key].detach().numpy()
                else:
                    loss[t + 1] = f(drawn[:, 0], drawn[:, 1], np, **fparams)
                    finite = np.isfinite(loss[t + 1])[:, None] & np.isfinite(drawn)
                    np.copyto(last_finite, drawn, where=finite)
                if t % 64 == 63 and not np.isfinite(x).any():
                    # every row diverged: nothing left to simulate (the rest stays NaN)
                    if keep_path:
                        points[t + 2 :] = np.nan
                    break
            seconds = time.perf_counter() - started
            if keep_path:
                loss = f(points[..., 0], points[..., 1], np, **fparams)
                finite = np.isfinite(points).all(axis=-1) & np.isfinite(loss)
            else:
                finite = np.isfinite(loss)
            diverged_at = np.atleast_1d(metrics.first_nonfinite(np.where(finite, 0.0, np.nan)))
            out: dict[str, Any] = {
                "loss": loss,
                "diverged_at": diverged_at,
                "batch_size": batch_hist,
                "lrs": np.repeat(self.lr_values, self.n_starts),
                "seconds": seconds,
            }
            if keep_path:
                scaling = np.abs(np.diff(points, axis=0)) / (np.abs(grads) + SCALING_EPS) / lr_hist[..., None]
        for r in np.flatnonzero(diverged_at >= 0):
            d = diverged_at[r]
            loss[d:, r] = loss[d - 1, r]
            if keep_path:
                points[d:, r] = points[d - 1, r]
                grads[d:, r] = np.nan
                for array in (lr_hist, scaling, *tracked.values()):
                    array[d - 1 :, r] = np.nan
        if keep_path:
            out.update(points=points, grad=grads, lr=lr_hist, scaling=scaling, **tracked)
            out["final_point"] = points[-1]
        else:
            out["final_point"] = last_finite
        return out


class _RowBatches:
    """Per-row adaptive batch sizes for the AdAdaGrad family (registry ``batch_test``).

    The optimizer classes keep one batch size for their whole model; on the surface every row
    is its own problem, so the simulator keeps one per row and runs the registry's test on
    each row's own per-sample gradients ``∇f(x_t) + σ·ξ_{t,i}`` (the batched form of
    :mod:`dgs_core.batching`'s tests: G of shape (rows, n, 2) → (rows,)), then grows it as the
    optimizer would: ``b ← min(b_max, max(b, b'))``, testing every ``test_interval`` steps.
    Step t's gradient is ``∇f(x_t) + σ·mean_{i<b} ξ_{t,i}`` with ``ξ_{t,i}`` from
    ``default_rng((seed, t))``, so a row's noise depends on its own batch size only. The
    variance needs two samples: a row at b = 1 is tested on ``ξ_{t,0}, ξ_{t,1}``.
    """

    def __init__(
        self,
        engine: _Engine,
        opt: torch.optim.Optimizer,
        params: list[torch.Tensor],
        bounds: list[tuple[int, int]],
        test: Callable[..., Any],
    ) -> None:
        h = engine.hparams
        self.engine, self.opt, self.params, self.bounds, self.test_fn = engine, opt, params, bounds, test
        self.sizes = np.full(engine.n_rows, int(h["initial_batch_size"]), dtype=np.int64)
        self.max_batch = int(h["max_batch_size"])
        self.interval = int(h["test_interval"])
        self.constant = float(h["test_constant"])
        self.proposal: Array | None = None
        self.xi: Array | None = None

    @classmethod
    def create(
        cls,
        engine: _Engine,
        opt: torch.optim.Optimizer,
        params: list[torch.Tensor],
        bounds: list[tuple[int, int]],
    ) -> _RowBatches | None:
        if engine.info.batch_test is None:
            return None
        return cls(engine, opt, params, bounds, adadagrad.TESTS[engine.info.batch_test])

    def noise(self, t: int) -> Array | None:
        if self.engine.noise_std == 0:
            self.xi = None
            return None
        n = max(int(self.sizes.max()), 2)
        self.xi = np.random.default_rng((self.engine.seed, t)).standard_normal((n, 2))
        means = np.cumsum(self.xi, axis=0)[self.sizes - 1] / self.sizes[:, None]
        return self.engine.noise_std * means

    def test(self, t: int, x: Array) -> None:
        self.proposal = None
        # Without noise every per-sample gradient is the same: zero variance, b' = 1 ≤ b.
        if t % self.interval != 0 or self.xi is None:
            return
        gx, gy = self.engine.surface.df(x[:, 0], x[:, 1], np, **self.engine.surface.params)
        exact = np.stack((gx, gy), axis=-1)
        alive = np.isfinite(exact).all(axis=-1) & np.isfinite(x).all(axis=-1)  # diverged rows: no test
        proposal = self.sizes.copy()
        for size in np.unique(self.sizes[alive]):
            rows = np.flatnonzero(alive & (self.sizes == size))
            n = max(int(size), 2)
            G = torch.from_numpy(exact[rows, None, :] + self.engine.noise_std * self.xi[None, :n])
            extra = self._extras(rows, G) if self.engine.info.batch_test == "coordinatewise" else {}
            proposal[rows] = np.asarray(self.test_fn(G, self.constant, **extra)).reshape(-1)
        self.proposal = proposal

    def _extras(self, rows: Array, G: torch.Tensor) -> dict[str, Any]:
        # AdaGrad's accumulator for the step about to be taken, per row: G_{t−1} + g_B²
        # (as AdAdaGrad's own test does for its whole model), and its ε.
        accumulator = torch.cat(
            [
                self.opt.state[p]["sum"] if "sum" in self.opt.state[p] else torch.zeros_like(p)
                for p in self.params
            ]
        ).detach()
        eps = np.concatenate(
            [
                np.full(b - a, group["eps"])
                for group, (a, b) in zip(self.opt.param_groups, self.bounds, strict=True)
            ]
        )
        return {
            "accumulator": accumulator[rows] + G.mean(dim=1).square(),
            "eps": torch.from_numpy(eps[rows])[:, None],
        }

    def grow(self) -> None:
        if self.proposal is not None:
            np.minimum(self.max_batch, np.maximum(self.sizes, self.proposal), out=self.sizes)


class _GradientGroups:
    """The S group gradients of AdaScale SGD (registry ``group_gradients``).

    A step's batch is S groups of B examples (B the noise formula's batch size): group i's
    gradient is ``∇f(x_t) + σ·ξ_{t,i}/√B`` with ``ξ_{t,i}``, i < S, from
    ``default_rng((seed, t))``, the same for every row (common random numbers), and the step's
    gradient is their mean, ``∇f(x_t) + σ·mean_i ξ_{t,i}/√B``. Before each step the simulator
    hands every row's S group gradients to ``measure_gain`` (the optimizer's rows are the
    simulator's, so each row has its own gain ratio). Without noise the groups agree, σ̂² = 0
    and r = 1 exactly: the measurement is skipped. Clipping, when on, applies to the step's
    gradient only.
    """

    def __init__(
        self,
        engine: _Engine,
        opt: torch.optim.Optimizer,
        params: list[torch.Tensor],
        bounds: list[tuple[int, int]],
    ) -> None:
        self.engine, self.opt, self.params, self.bounds = engine, opt, params, bounds
        # made for group_gradients optimizers (AdaScale) only
        self.scale = int(opt.scale)  # type: ignore[attr-defined]  # (reason above)
        self.deviations: Array | None = None  # (S, 2): group i's noise σ·ξ_{t,i}/√B

    @classmethod
    def create(
        cls,
        engine: _Engine,
        opt: torch.optim.Optimizer,
        params: list[torch.Tensor],
        bounds: list[tuple[int, int]],
    ) -> _GradientGroups | None:
        return cls(engine, opt, params, bounds) if engine.info.group_gradients else None

    def noise(self, t: int) -> Array | None:
        """The step's noise (2,), the mean of the groups'; None without noise."""
        if self.engine.noise_std == 0:
            self.deviations = None
            return None
        xi = np.random.default_rng((self.engine.seed, t)).standard_normal((self.scale, 2))
        self.deviations = xi * (self.engine.noise_std / math.sqrt(self.engine.batch))
        return self.deviations.mean(axis=0)

    def measure(self, x: Array) -> None:
        if self.deviations is None:
            return
        gx, gy = self.engine.surface.df(x[:, 0], x[:, 1], np, **self.engine.surface.params)
        exact = np.stack((gx, gy), axis=-1)  # (N, 2)
        groups = exact[None] + self.deviations[:, None, :]  # (S, N, 2)
        # made for group_gradients optimizers (AdaScale) only
        self.opt.measure_gain([torch.from_numpy(groups[:, a:b]) for a, b in self.bounds])  # type: ignore[attr-defined]  # (reason above)


# ---------------------------------------------------------------------------------------------
# Instant views: many optimizers, basin maps, learning-rate sweeps
# ---------------------------------------------------------------------------------------------


def compare(
    surface: Surface | str,
    optimizers: Sequence[str] | Mapping[str, Mapping[str, Any] | None],
    **kwargs: Any,
) -> dict[str, Run]:
    """:func:`simulate` for several optimizers on the same surface, start, seed and noise.

    ``optimizers``: names (registry surface defaults) or ``{name: hparams}``. ``kwargs`` go to
    :func:`simulate` (``start``, ``steps``, ``seed``, ``noise_std``, ``batch_size``,
    ``clip_norm``, ``outside``). Returns ``{name: Run}`` in the given order.
    """
    surf = get_surface(surface)
    chosen = optimizers if isinstance(optimizers, Mapping) else dict.fromkeys(optimizers)
    return {name: simulate(surf, name, hparams, **kwargs) for name, hparams in chosen.items()}
