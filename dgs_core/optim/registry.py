"""The optimizer registry: frozen records that drive the factory, the docs table and the UI.

Variants are data, not subclasses: "momentum" and "nesterov" are torch's SGD with fixed
arguments, "larc" is LARS with ``trust_clip=True``.

>>> import torch
>>> from dgs_core.optim import create, names
>>> "dgs" in names()
True
>>> opt = create("dgs", [torch.zeros(3, requires_grad=True)], lr=0.05)
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import torch

from dgs_core.optim import (
    adadagrad,
    adagrad_norm,
    adan,
    adascale,
    dgs,
    extrasgd,
    lamb,
    lars,
    lion,
    mars,
    muon,
    schedule_free,
)
from dgs_core.optim._compile import ROWS_KEY, with_rows
from dgs_core.optim.adadagrad import AdAdaGrad, AdAdaGradNorm
from dgs_core.optim.adagrad_norm import AdaGradNorm
from dgs_core.optim.adan import Adan
from dgs_core.optim.adascale import AdaScaleSGD
from dgs_core.optim.dgs import DGS
from dgs_core.optim.extrasgd import ExtraSGD
from dgs_core.optim.lamb import LAMB
from dgs_core.optim.lars import LARS
from dgs_core.optim.lion import Lion
from dgs_core.optim.mars import MARS
from dgs_core.optim.muon import Muon
from dgs_core.optim.schedule_free import ScheduleFreeAdamW
from dgs_core.params import Param, ParamSet, Value, invalid


def _frozen(mapping: Mapping[str, Any] | None = None) -> Mapping[str, Any]:
    return MappingProxyType(dict(mapping or {}))


@dataclass(frozen=True)
class OptimizerInfo:
    """Everything DGS Lab knows about one registered optimizer.

    Attributes:
        name: registry key, used in configs, URLs and snapshots ("dgs", "nesterov").
        label: display name ("DGS", "SGD + Nesterov").
        cls: the ``torch.optim.Optimizer`` subclass.
        summary: one line for tables and selectors.
        description: one paragraph for the UI.
        paper: link to the paper or reference implementation.
        interpretation: True when the paper gives no equation and DGS Lab supplies its own
            (docs/algorithms.md labels each one).
        hyperparams: the tunable hyperparameters, with defaults and valid ranges.
        fixed: constructor arguments that define the variant (not shown in the UI).
        tuple_args: constructor arguments built from several flat hyperparameters,
            e.g. ``{"betas": ("beta1", "beta2")}``.
        needs_closure: ``step()`` must be given a closure (see the class docstring).
        batch_test: name of the adaptive batch-size test (AdAdaGrad family), else None.
        group_gradients: each step's batch is ``optimizer.scale`` groups of the base batch size,
            and the caller hands the groups' mean gradients to ``optimizer.measure_gain`` before
            ``step()`` (AdaScale SGD; the trainer and the 2-D simulator do).
        surface_defaults: overrides of the defaults for the 2-D surface lab, where a single
            2-vector is the whole model (documented per optimizer in the README).
        departures: where the class deliberately departs from the official (or reference)
            code, one short sentence each, empty when it does not; the class docstring says
            why, next to the equation each one changes, and :attr:`docs` links the algorithms
            reference.
    """

    name: str
    label: str
    cls: type[torch.optim.Optimizer]
    summary: str
    description: str
    paper: str
    interpretation: bool = False
    hyperparams: ParamSet = field(default_factory=ParamSet)
    fixed: Mapping[str, Any] = field(default_factory=_frozen)
    tuple_args: Mapping[str, tuple[str, ...]] = field(default_factory=_frozen)
    needs_closure: bool = False
    batch_test: str | None = None
    group_gradients: bool = False
    surface_defaults: Mapping[str, Value] = field(default_factory=_frozen)
    departures: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "hyperparams", ParamSet(self.hyperparams))
        object.__setattr__(self, "departures", tuple(self.departures))

    @property
    def docs(self) -> str:
        """The optimizer's section of the algorithms reference (update rule, departures)."""
        return f"docs/algorithms.md#{self.name}"

    @property
    def defaults(self) -> dict[str, Value]:
        """Flat default hyperparameters, as the UI shows them."""
        return self.hyperparams.defaults()

    def hyperparam(self, name: str) -> Param:
        return self.hyperparams[name]

    def resolve(self, hparams: Mapping[str, Any] | None = None, *, surface: bool = False) -> dict[str, Value]:
        """Defaults (plus surface overrides) updated by ``hparams``, validated.

        Raises :class:`~dgs_core.params.ParamError` naming an unknown argument or an invalid value.
        """
        base = self.surface_defaults if surface else None
        return self.hyperparams.resolve(hparams, base=base, what=f"hyperparameter for {self.name}")

    def constructor_kwargs(self, hparams: Mapping[str, Any]) -> dict[str, Any]:
        """Map flat, validated hyperparameters to the class's constructor arguments."""
        kwargs: dict[str, Any] = dict(hparams)
        for arg, parts in self.tuple_args.items():
            kwargs[arg] = tuple(kwargs.pop(p) for p in parts)
        kwargs.update(self.fixed)
        return kwargs


_LR = "learning rate η"
_WD = "weight decay λ (coupled: g ← g + λθ)"


def _lr(default: float) -> Param:
    return Param("lr", default, low=0.0, high=1e3, log=True, help=_LR)


_BASELINE_WD = Param("weight_decay", 0.0, low=0.0, high=10.0, help=_WD)
_MOMENTUM = Param("momentum", 0.9, low=0.0, high=1.0, high_open=True, help="momentum μ")
_BETA1 = Param("beta1", 0.9, low=0.0, high=1.0, high_open=True, help="first-moment EMA β₁")
_BETA2 = Param("beta2", 0.999, low=0.0, high=1.0, high_open=True, help="second-moment EMA β₂")
_ADAM_EPS = Param("eps", 1e-8, low=0.0, high=1.0, log=True, help="denominator ε")

_TORCH_DOCS = "https://docs.pytorch.org/docs/stable/optim.html"

# Departures from the official (or reference) code, explained in each class's docstring.
_LARS_DEPARTURES = (
    "tr = 1 where ‖g‖ = 0 but λ‖θ‖ > 0 (reference, pytorch-optimizer 4.1: τ/λ)",
    "ε = 1e-8 in the trust ratio by default (reference: none; eps=0 matches it)",
)
_ADAGRAD_NORM_DEPARTURES = (
    "b₀ = 0.01, so b² starts at 1e-4 (authors' code: b² starts at 1e-2, b₀ = 0.1)",
    "one accumulator per parameter group (authors' code: one per row of each weight)",
)
_BATCH_SURFACE_DEFAULTS = {"initial_batch_size": 2, "max_batch_size": 256}

_INFOS: tuple[OptimizerInfo, ...] = (
    OptimizerInfo(
        name="sgd",
        label="SGD",
        cls=torch.optim.SGD,
        summary="Plain stochastic gradient descent (torch.optim.SGD).",
        description="θ ← θ − η g. The reference point: one global step size for every parameter, "
        "so it crawls along flat valleys and overshoots across steep ones.",
        paper=_TORCH_DOCS,
        hyperparams=(_lr(0.01), _BASELINE_WD),
        fixed=_frozen({"momentum": 0.0, "nesterov": False}),
        surface_defaults=_frozen({"lr": 1.4e-3}),
    ),
    OptimizerInfo(
        name="momentum",
        label="SGD + momentum",
        cls=torch.optim.SGD,
        summary="SGD with heavy-ball momentum (torch.optim.SGD, momentum=0.9).",
        description="v ← μv + g; θ ← θ − ηv. Momentum accumulates consistent directions and "
        "speeds up along valleys, at the price of overshooting the floor and oscillating.",
        paper=_TORCH_DOCS,
        hyperparams=(_lr(0.01), _MOMENTUM, _BASELINE_WD),
        fixed=_frozen({"nesterov": False}),
        surface_defaults=_frozen({"lr": 4e-4}),
    ),
    OptimizerInfo(
        name="nesterov",
        label="SGD + Nesterov",
        cls=torch.optim.SGD,
        summary="SGD with Nesterov momentum (torch.optim.SGD, nesterov=True).",
        description="v ← μv + g; θ ← θ − η(g + μv). Nesterov's look-ahead damps part of "
        "heavy-ball momentum's overshoot.",
        paper="https://proceedings.mlr.press/v28/sutskever13.html",
        hyperparams=(_lr(0.01), _MOMENTUM, _BASELINE_WD),
        fixed=_frozen({"nesterov": True}),
        surface_defaults=_frozen({"lr": 4e-4}),
    ),
    OptimizerInfo(
        name="adam",
        label="Adam",
        cls=torch.optim.Adam,
        summary="Adam (torch.optim.Adam): bias-corrected first and second moment EMAs.",
        description="Per-element step η·m̂/(√v̂+ε): every coordinate moves at roughly the same "
        "speed whatever its gradient's size, which escapes plateaus but can overshoot.",
        paper="https://arxiv.org/abs/1412.6980",
        hyperparams=(_lr(1e-3), _BETA1, _BETA2, _ADAM_EPS, _BASELINE_WD),
        tuple_args=_frozen({"betas": ("beta1", "beta2")}),
        surface_defaults=_frozen({"lr": 0.1}),
    ),
    OptimizerInfo(
        name="adamw",
        label="AdamW",
        cls=torch.optim.AdamW,
        summary="AdamW (torch.optim.AdamW): Adam with decoupled weight decay.",
        description="Adam whose weight decay shrinks θ directly (θ ← θ(1 − ηλ)) instead of "
        "passing through the adaptive denominator.",
        paper="https://arxiv.org/abs/1711.05101",
        hyperparams=(
            _lr(1e-3),
            _BETA1,
            _BETA2,
            _ADAM_EPS,
            Param("weight_decay", 0.01, low=0.0, high=10.0, help="decoupled weight decay λ"),
        ),
        tuple_args=_frozen({"betas": ("beta1", "beta2")}),
        surface_defaults=_frozen({"lr": 0.1, "weight_decay": 0.0}),
    ),
    OptimizerInfo(
        name="adagrad",
        label="Adagrad",
        cls=torch.optim.Adagrad,
        summary="Adagrad (torch.optim.Adagrad): per-element lr η/√Σg².",
        description="Each coordinate's step shrinks with its accumulated squared gradients: "
        "fast at first, ever more cautious later.",
        paper="https://jmlr.org/papers/v12/duchi11a.html",
        hyperparams=adadagrad.ADAGRAD_HYPERPARAMS,
        surface_defaults=_frozen({"lr": 2.0}),
    ),
    OptimizerInfo(
        name="dgs",
        label="DGS",
        cls=DGS,
        summary="Dynamic Gradient Scaling: importance scores → per-parameter learning rates.",
        description="Keeps an EMA importance score per parameter, turns it into a scaling "
        "factor s = clip(r^(−γ)) of the relative importance r, and steps with the adaptive "
        "rate η·s with momentum: parameters with larger gradients get proportionally smaller "
        "updates. The paper gives no equations; these are DGS Lab's (docs/algorithms.md#dgs).",
        paper="https://doi.org/10.22214/ijraset.2024.62669",
        interpretation=True,
        hyperparams=dgs.HYPERPARAMS,
        surface_defaults=_frozen({"lr": 4e-4}),
        departures=("single-element tensors get s = 1, plain momentum SGD (no code was published)",),
    ),
    OptimizerInfo(
        name="adan",
        label="Adan",
        cls=Adan,
        summary="Adan: adaptive Nesterov momentum with a gradient-difference term.",
        description="Adds an EMA of gradient differences to Adam-style moments, an estimate of "
        "Nesterov's look-ahead that curbs overshoot; follows the official implementation "
        "(betas are 1 − the paper's β).",
        paper="https://arxiv.org/abs/2208.06677",
        hyperparams=adan.HYPERPARAMS,
        tuple_args=_frozen({"betas": ("beta1", "beta2", "beta3")}),
        surface_defaults=_frozen({"lr": 0.05}),
        departures=(
            "each group clips with its own max_grad_norm and ε (official: the defaults' "
            "max_grad_norm and the last group's ε)",
            "steps counted per parameter (official: per group; they differ when a gradient is None)",
        ),
    ),
    OptimizerInfo(
        name="lars",
        label="LARS",
        cls=LARS,
        summary="LARS: layer-wise trust ratio τ‖θ‖/(‖g‖+λ‖θ‖) scales each tensor's step.",
        description="Each weight tensor's step is scaled so its size is a fixed fraction τ of "
        "the tensor's norm, whatever the gradient's magnitude: the large-batch recipe. "
        "Biases and norms (1-D tensors) use plain momentum SGD.",
        paper="https://arxiv.org/abs/1708.03888",
        hyperparams=lars.HYPERPARAMS,
        fixed=_frozen({"trust_clip": False}),
        surface_defaults=_frozen({"lr": 1.0, "exclude_1d": False}),
        departures=_LARS_DEPARTURES,
    ),
    OptimizerInfo(
        name="larc",
        label="LARC",
        cls=LARS,
        summary="LARC: LARS with the trust ratio clipped, tr = min(tr/η, 1).",
        description="LARS whose local rate never exceeds the global one: the trust ratio only "
        "ever shrinks a step.",
        paper="https://arxiv.org/abs/1708.03888",
        hyperparams=lars.HYPERPARAMS,
        fixed=_frozen({"trust_clip": True}),
        surface_defaults=_frozen({"lr": 3e-3, "trust_coefficient": 0.01, "exclude_1d": False}),
        departures=_LARS_DEPARTURES,
    ),
    OptimizerInfo(
        name="lamb",
        label="LAMB",
        cls=LAMB,
        summary="LAMB: Adam's direction with a per-tensor trust ratio ‖θ‖/‖r + λθ‖.",
        description="Computes Adam's bias-corrected direction r = m̂/(√v̂ + ε), adds the weight "
        "decay λθ, and rescales the result per tensor so that each tensor moves by η·min(‖θ‖, 10) "
        "whatever its gradient's size: LARS's layer-wise trust ratio on top of Adam, the recipe "
        "that trained BERT with batches of 32k.",
        paper="https://arxiv.org/abs/1904.00962",
        hyperparams=lamb.HYPERPARAMS,
        tuple_args=_frozen({"betas": ("beta1", "beta2")}),
        # LAMB's step is η·φ(‖θ‖) long whatever the gradient, so with the defaults it circles a
        # minimum at that distance (f − f* ≈ 0.1 at Rosenbrock's (1, 1) for η = 0.01), and it
        # crawls where the path passes the origin (φ = ‖θ‖ → 0: Rosenbrock's valley and booth's
        # diagonal both do). Two of the paper's knobs make it settle, measured with
        # surfaces.simulate (rosenbrock, the κ = 100 quadratic, booth, himmelblau, beale, banana)
        # and 3000 steps from Rosenbrock's (−2, 2): γ_l = 1 keeps the steps from vanishing at the
        # origin, and ε = 0.1 in the trust ratio turns the step into Adam's with lr η·φ/ε where
        # Adam's direction is small (near a minimum), so it anneals as Adam does. η ∈ [0.007,
        # 0.01] at ε = 0.1 and η ∈ [0.015, 0.03] at ε = 0.3 all converge; η = 0.01 ends
        # Rosenbrock at f − f* ≈ 1e-4, η·φ/ε ≈ 0.14 there, about Adam's 2-D lr.
        surface_defaults=_frozen({"lr": 0.01, "eps": 0.1, "trust_norm_min": 1.0}),
        departures=(
            "bias-corrected m and v, as the paper (reference, pytorch-optimizer 4.1: none; "
            "bias_correction=False matches it)",
            "steps of η·φ, as the paper (reference default: divided by 1 − β₁ᵗ, up to 10× longer at first)",
            "weight decay inside the trust ratio, as the paper (reference default: decoupled, outside it)",
        ),
    ),
    OptimizerInfo(
        name="extrasgd",
        label="ExtraSGD",
        cls=ExtraSGD,
        summary="EXTRAP-SGD: gradient taken at an extrapolated point, Nesterov momentum.",
        description="Before each step, moves to an extrapolated point (a gradient step, the last "
        "step's gradient, or noise), takes the gradient there on the same batch and applies "
        "it from the current point: a local extragradient that smooths the large-batch "
        "landscape. The paper released no code; the structure follows its framework.",
        paper="https://arxiv.org/abs/2006.05720",
        interpretation=True,
        hyperparams=extrasgd.HYPERPARAMS,
        needs_closure=True,
        surface_defaults=_frozen({"lr": 2e-4, "extrapolation_lr": 2e-4}),
    ),
    OptimizerInfo(
        name="adagrad_norm",
        label="AdaGrad-Norm",
        cls=AdaGradNorm,
        summary="AdaGrad-Norm: one scalar step size η/b_t with b_t² = b_{t−1}² + ‖g_t‖².",
        description="A single adaptive step size for the whole group, robust to the choice of η: "
        "b_t grows with the gradients seen so far.",
        paper="https://arxiv.org/abs/1806.01811",
        hyperparams=adagrad_norm.HYPERPARAMS,
        surface_defaults=_frozen({"lr": 3.0}),
        departures=_ADAGRAD_NORM_DEPARTURES,
    ),
    OptimizerInfo(
        name="adadagrad",
        label="AdAdaGrad",
        cls=AdAdaGrad,
        summary="AdaGrad with a growing batch size set by a coordinate-wise variance test.",
        description="Trains with AdaGrad and, every few steps, measures how noisy the batch "
        "gradient is in AdaGrad's own per-coordinate metric from per-sample gradients; when the "
        "noise outweighs the signal the batch grows (never shrinks, up to a cap). The exact "
        "coordinate-wise test is DGS Lab's reading of the paper (docs/algorithms.md, AdAdaGrad).",
        paper=adadagrad.PAPER,
        interpretation=True,
        hyperparams=adadagrad.ADADAGRAD_HYPERPARAMS,
        batch_test="coordinatewise",
        # the update rule is AdaGrad's: its 2-D settings carry over
        surface_defaults=_frozen({"lr": 2.0, **_BATCH_SURFACE_DEFAULTS}),
        departures=(
            "the coordinate-wise test is ours (authors' code: AdaGrad with the norm or inner-product tests)",
        ),
    ),
    OptimizerInfo(
        name="adadagrad_norm",
        label="AdAdaGrad-Norm",
        cls=AdAdaGradNorm,
        summary="AdaGrad-Norm with a growing batch size set by the norm test.",
        description="One adaptive step size η/b_t for the whole model (AdaGrad-Norm) and a batch "
        "that grows whenever the per-sample gradients' variance is large against the squared "
        "norm of their mean (the norm test): small, cheap batches early, large ones near a "
        "minimum, where noise dominates.",
        paper=adadagrad.PAPER,
        hyperparams=adadagrad.ADADAGRAD_NORM_HYPERPARAMS,
        batch_test="norm",
        # the update rule is AdaGrad-Norm's: its 2-D settings carry over
        surface_defaults=_frozen({"lr": 3.0, **_BATCH_SURFACE_DEFAULTS}),
        departures=_ADAGRAD_NORM_DEPARTURES,
    ),
    OptimizerInfo(
        name="adascale",
        label="AdaScale SGD",
        cls=AdaScaleSGD,
        summary="AdaScale SGD: a batch of S groups, η scaled by the gain ratio r ∈ [1, S].",
        description="Trains on batches S times the base size and multiplies the base run's "
        "learning rate by the gain ratio r = (σ² + μ²)/(σ²/S + μ²), measured from the spread of "
        "the S group gradients: about S while gradient noise dominates, about 1 once the "
        "gradient's signal does. τ, the sum of the r's, counts the base run's steps the training "
        "is worth; the schedule follows τ. Without gradient noise (the 2-D surfaces' default) "
        "the groups agree, r = 1, and it is plain SGD.",
        paper="https://arxiv.org/abs/2007.05105",
        interpretation=True,
        hyperparams=adascale.HYPERPARAMS,
        group_gradients=True,
        # the update is SGD's (r = 1 without noise): its 2-D lr carries over
        surface_defaults=_frozen({"lr": 1.4e-3}),
    ),
    OptimizerInfo(
        name="mars",
        label="MARS",
        cls=MARS,
        summary="MARS-AdamW: AdamW on a variance-reduced gradient g + γβ₁/(1 − β₁)(g − g_prev).",
        description="Adds a scaled difference of consecutive gradients to the gradient (a "
        "STORM-style variance reduction), clips the result to norm 1 and runs AdamW on it, so "
        "the momentum tracks the current gradient instead of lagging. Matrices get MARS, "
        "vectors and scalars plain AdamW unless optimize_1d (on in the 2-D lab).",
        paper="https://arxiv.org/abs/2411.10438",
        hyperparams=mars.HYPERPARAMS,
        tuple_args=_frozen({"betas": ("beta1", "beta2"), "betas_1d": ("beta1_1d", "beta2_1d")}),
        # optimize_1d: the 2-D lab's point is one row of two numbers, which would otherwise get
        # the 1-D AdamW. The correction is clipped to norm 1, so on the surfaces MARS runs Adam
        # on unit vectors; measured with surfaces.simulate (rosenbrock, the κ = 100 quadratic,
        # booth, himmelblau, beale, banana) and 3000 steps from Rosenbrock's (−2, 2), every
        # η ∈ [0.02, 0.1] converges without diverging; 0.05 sits in the middle.
        surface_defaults=_frozen({"lr": 0.05, "optimize_1d": True}),
        departures=(
            "the 1-D AdamW's weight decay defaults to 0 (reference and official code: 0.1)",
            "steps counted per tensor (reference: per group; the official code counts per tensor)",
            "the 1-D AdamW's lr is a ratio of η that schedules move too (reference: lr_1d/lr, fixed)",
        ),
    ),
    OptimizerInfo(
        name="lion",
        label="Lion",
        cls=Lion,
        summary="Lion: the sign of interpolated momentum; every coordinate steps by ±η.",
        description="Steps each coordinate by exactly η against the sign of β₁m + (1 − β₁)g, "
        "a blend of momentum and the new gradient, then updates the momentum with β₂: the "
        "gradient's size never changes the step's. Found by program search; wants an η several "
        "times smaller than AdamW's, and settles only to within about η of a minimum.",
        paper="https://arxiv.org/abs/2302.06675",
        hyperparams=lion.HYPERPARAMS,
        tuple_args=_frozen({"betas": ("beta1", "beta2")}),
        # Every coordinate moves by exactly ±η, so Lion reaches a minimum only if it lies on the
        # lattice start + ηℤ², and otherwise circles it at a distance of about η. Measured with
        # surfaces.simulate from the default starts: booth (14 units away) needs η ≥ 0.014 to
        # arrive in 1000 steps, while circling Rosenbrock's valley floor keeps f − f* < 1e-2
        # only for η ≤ 0.003. η = 1/80 puts the minima of rosenbrock, booth, quadratic,
        # himmelblau and beale on the lattice of their default starts, and β = (0.95, 0.98),
        # the paper's setting for stability, lets the walk end on them (with (0.9, 0.99) it
        # circles Rosenbrock's minimum at f − f* ≈ 0.04).
        surface_defaults=_frozen({"lr": 0.0125, "beta1": 0.95, "beta2": 0.98}),
    ),
    OptimizerInfo(
        name="muon",
        label="Muon",
        cls=Muon,
        summary="Muon: momentum orthogonalized by Newton–Schulz for matrices, AdamW for the rest.",
        description="On every weight matrix, takes Nesterov momentum and replaces it by the "
        "nearest orthogonal matrix (five Newton–Schulz iterations), so every direction of the "
        "update moves about equally: steepest descent in the spectral norm. Everything that is "
        "not a matrix (biases, gains, scalars) takes AdamW with lr η·adamw_lr_ratio. On the 2-D "
        "surfaces the point is a vector, so the Surface lab shows this AdamW fallback.",
        paper="https://kellerjordan.github.io/posts/muon/",
        hyperparams=muon.HYPERPARAMS,
        tuple_args=_frozen({"adamw_betas": ("adamw_beta1", "adamw_beta2")}),
        # Two settings, one per path. A surface point is a vector: the 2-D lab runs the AdamW
        # fallback, at η·ratio = 0.1, Adam's 2-D lr (its betas (0.9, 0.95) converge there for
        # every ratio in [5, 20] at η = 0.01, measured with surfaces.simulate). A (1, 2) matrix,
        # as a user's own loop may hand it, takes the orthogonalized step, here a normalized
        # momentum step of length ≈ 0.7η, which circles a minimum: at Rosenbrock's (1, 1) it
        # keeps f − f* ≈ 125·(0.7η)², below 1e-2 for η ≤ 0.012 (3000 steps from (−2, 2)).
        surface_defaults=_frozen({"lr": 0.01, "adamw_lr_ratio": 10.0}),
        departures=(
            "Newton–Schulz in float32 or float64 (reference and authors: bfloat16)",
            "matrices chosen by shape, ndim ≥ 2 (reference: groups flagged use_muon)",
            "the AdamW fallback's lr is a ratio of η and its steps are counted per tensor",
        ),
    ),
    OptimizerInfo(
        name="schedule_free",
        label="Schedule-Free AdamW",
        cls=ScheduleFreeAdamW,
        summary="Schedule-Free AdamW: gradients at an interpolation, evaluation at an average.",
        description="Replaces the learning-rate schedule by averaging: an AdamW-like iterate z, "
        "its running average x (the point to evaluate and keep) and the interpolation "
        "y = (1 − β₁)z + β₁x where gradients are taken. The lab evaluates, draws and reports x; "
        "training steps at y.",
        paper="https://arxiv.org/abs/2405.15682",
        hyperparams=schedule_free.HYPERPARAMS,
        tuple_args=_frozen({"betas": ("beta1", "beta2")}),
        # r = 2 (w_t ∝ t², the paper's polynomial averaging): with r = 0 the average weighs the
        # whole path alike, and after Rosenbrock's long valley x (and y) stay 0.02–0.08 above
        # f* at 3000 steps, the O(1/T) of a uniform average; a warmup makes it worse. Measured
        # with surfaces.simulate (rosenbrock, the κ = 100 quadratic, booth, himmelblau, beale,
        # banana: x, the drawn point) and 3000 steps from (−2, 2) (y, where it trains): every
        # γ ∈ [0.05, 0.3] with r ∈ [1.5, 3] converges; γ = 0.1 is Adam's 2-D lr.
        surface_defaults=_frozen({"lr": 0.1, "r": 2.0}),
        departures=(
            "√(1 − β₂ᵗ) corrects the denominator, as the reference (official code: it scales γ_t and so "
            "the averaging weights)",
            "t and the averaging weights counted per tensor (reference and official code: per group)",
        ),
    ),
)

_REGISTRY: Mapping[str, OptimizerInfo] = MappingProxyType({info.name: info for info in _INFOS})


def names() -> list[str]:
    """Registered optimizer names, in display order."""
    return list(_REGISTRY)


def infos() -> list[OptimizerInfo]:
    """Every registered optimizer's record, in display order."""
    return list(_REGISTRY.values())


def get(name: str) -> OptimizerInfo:
    """The record for ``name``; ``ValueError`` naming it when unknown."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise invalid("optimizer", name, f"one of {', '.join(_REGISTRY)}") from None


def create(
    name: str,
    params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
    *,
    surface: bool = False,
    **hparams: Any,
) -> torch.optim.Optimizer:
    """Build the optimizer ``name`` over ``params`` with validated hyperparameters.

    Unspecified hyperparameters take the registry defaults (or, with ``surface=True``, the
    2-D surface defaults). Constructor arguments that are not hyperparameters (``foreach``,
    ``fused``, ``maximize``) pass straight through, to torch's own classes too.
    ``independent_rows=True`` (the batched 2-D simulator) sets that key on every parameter
    group of the optimizers with a per-tensor reduction (see :mod:`dgs_core.optim._compile`);
    the others are elementwise, so their rows are independent already.
    """
    info = get(name)
    switches = {k: hparams.pop(k) for k in list(hparams) if k in _SWITCHES}
    rows = hparams.pop(ROWS_KEY, None)
    kwargs = info.constructor_kwargs(info.resolve(hparams, surface=surface))
    kwargs.update(switches)
    if rows is not None:
        grouped = with_rows(params, rows)  # validates rows
        if issubclass(info.cls, _READS_ROWS):
            params = grouped
    return info.cls(params, **kwargs)


def evaluates_elsewhere(optimizer: torch.optim.Optimizer | type[torch.optim.Optimizer]) -> bool:
    """Whether ``optimizer`` (or its class) is evaluated at another point than the one it trains
    at, with its authors' ``eval()`` / ``train()`` switch (Schedule-Free AdamW: the average x,
    not y)."""
    return callable(getattr(optimizer, "eval", None)) and callable(getattr(optimizer, "train", None))


@contextlib.contextmanager
def at_evaluation_point(optimizer: torch.optim.Optimizer) -> Iterator[None]:
    """Within the block the parameters hold the point to evaluate (``optimizer.eval()``), after
    it the point to train at again (``optimizer.train()``), as Schedule-Free's authors switch;
    a no-op for every other optimizer. The round trip moves the training point by rounding
    only (a few ulps)."""
    if not evaluates_elsewhere(optimizer):
        yield
        return
    optimizer.eval()  # type: ignore[attr-defined]  # evaluates_elsewhere: it has eval() and train()
    try:
        yield
    finally:
        optimizer.train()  # type: ignore[attr-defined]  # evaluates_elsewhere: it has eval() and train()


# Constructor arguments that are not hyperparameters (not knobs of the UI): how an optimizer
# computes, and maximize (ascend the objective), which every optimizer takes as torch's do.
_SWITCHES = frozenset({"foreach", "fused", "maximize"})
# The optimizers with a per-tensor reduction (DGS's mean, LARS's and LAMB's norms, AdaGrad-Norm's
# scalar, Adan's clip norm, AdaScale's gain, MARS's correction norm, Lion's sign agreement,
# Muon's matrices), which read a group's independent_rows key.
_READS_ROWS = (DGS, Adan, LARS, AdaGradNorm, LAMB, AdaScaleSGD, MARS, Lion, Muon)
