"""2-D test functions (SPEC §5) and the batched optimizer simulator of the Surface lab.

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

Gradient noise (optional, SPEC §5): the optimizer sees ``∇f(x) + σ·ξ_t/√B`` with
``ξ_t ~ N(0, I)`` drawn from ``numpy.random.default_rng(seed)``. Every row sees the same
``ξ_t`` at step ``t`` (common random numbers): a row's result depends only on its own start,
learning rate and the seed, never on which other rows share the batch, and an lr sweep
compares learning rates on the same noise. Optimizers that grow their batch (the AdAdaGrad
family) see per-sample gradients ``∇f(x) + σ·ξ_{t,i}``, ``i < b``, with
``ξ_{t,i}`` from ``default_rng((seed, t))``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

import numpy as np
import torch

from dgs_core import metrics
from dgs_core.device import small_tensor_mode
from dgs_core.optim import adadagrad
from dgs_core.params import invalid

Array = np.ndarray
# f(x, y, xp, **params) -> value ;  grad(x, y, xp, **params) -> (df/dx, df/dy)
_Formula = Callable[..., Any]

# ---------------------------------------------------------------------------------------------
# Surfaces
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Surface:
    """One 2-D test function with its known minima, plotting domain and default start.

    Attributes:
        name: registry key, as in SPEC §5 ("rosenbrock", "styblinski-tang").
        label: display name.
        formula: LaTeX of f(x, y) (without surrounding ``$``).
        description: what the surface teaches, one or two sentences.
        minima: the global minimisers (empty for the unbounded saddle).
        f_min: the global minimum value f*, ``None`` where there is none (saddle).
        domain: ``((x_min, x_max), (y_min, y_max))``, the plotting box and valid starts.
        default_start: SPEC §5's start.
        local_minima: other (non-global) minimisers worth marking and naming in basin maps.
        log_colors: colour contours by log(f − f* + c): the surface spans many decades.
        params: surface parameters (the quadratic's condition number ``kappa``).
    """

    name: str
    label: str
    formula: str
    description: str
    minima: tuple[tuple[float, float], ...]
    f_min: float | None
    domain: tuple[tuple[float, float], tuple[float, float]]
    default_start: tuple[float, float]
    f: _Formula = field(repr=False)
    df: _Formula = field(repr=False)
    local_minima: tuple[tuple[float, float], ...] = ()
    log_colors: bool = False
    params: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))

    # -- evaluation ---------------------------------------------------------------------------
    def value(self, points: Any) -> Any:
        """f at ``points`` of shape ``(..., 2)``: a torch tensor in (differentiable), else numpy."""
        xp, pts = _namespace(points)
        return self.f(pts[..., 0], pts[..., 1], xp, **self.params)

    __call__ = value

    def grad(self, points: Any) -> Any:
        """Closed-form ∇f at ``points`` ``(..., 2)`` → ``(..., 2)`` (torch in → torch out)."""
        xp, pts = _namespace(points)
        gx, gy = self.df(pts[..., 0], pts[..., 1], xp, **self.params)
        if xp is torch:
            return torch.stack(torch.broadcast_tensors(gx, gy), dim=-1)
        return np.stack(np.broadcast_arrays(gx, gy), axis=-1)

    def gap(self, points: Any) -> Any:
        """f − f* (f itself where f* is unknown: the saddle)."""
        value = self.value(points)
        return value if self.f_min is None else value - self.f_min

    # -- domain ---------------------------------------------------------------------------------
    @property
    def all_minima(self) -> tuple[tuple[float, float], ...]:
        """Global minima first, then the local ones (the basin map's categories)."""
        return self.minima + self.local_minima

    def contains(self, points: Any) -> Array:
        """Which of ``points`` ``(..., 2)`` lie inside the domain (boundary included)."""
        pts = np.asarray(points, dtype=float)
        (x0, x1), (y0, y1) = self.domain
        x, y = pts[..., 0], pts[..., 1]
        return (x >= x0) & (x <= x1) & (y >= y0) & (y <= y1)

    def clamp(self, points: Any) -> Array:
        """``points`` clipped into the domain box."""
        pts = np.array(points, dtype=float)
        (x0, x1), (y0, y1) = self.domain
        pts[..., 0] = np.clip(pts[..., 0], x0, x1)
        pts[..., 1] = np.clip(pts[..., 1], y0, y1)
        return pts

    def grid(self, resolution: int = 200) -> tuple[Array, Array, Array]:
        """``(xs, ys, Z)`` over the domain, ``Z[j, i] = f(xs[i], ys[j])`` (contour layout)."""
        (x0, x1), (y0, y1) = self.domain
        xs = np.linspace(x0, x1, resolution)
        ys = np.linspace(y0, y1, resolution)
        with np.errstate(all="ignore"):
            z = self.value(np.stack(np.meshgrid(xs, ys), axis=-1))
        return xs, ys, z

    def with_params(self, **params: float) -> Surface:
        """A copy with new surface parameters (``get_surface("quadratic").with_params(kappa=10)``)."""
        unknown = sorted(set(params) - set(self.params))
        if unknown:
            allowed = ", ".join(self.params) or "none"
            raise ValueError(
                f"Invalid surface parameter for {self.name}: {unknown[0]!r} (allowed: {allowed})"
            )
        merged = {**self.params, **params}
        for key, value in merged.items():
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise ValueError(f"Invalid {key}: {value!r} (must be a finite number > 0)")
        return replace(self, params=MappingProxyType(merged))


def _namespace(points: Any) -> tuple[Any, Any]:
    if isinstance(points, torch.Tensor):
        return torch, points
    return np, np.asarray(points, dtype=float)


# The formulas. Each f(x, y, xp) / df(x, y, xp) pair is checked against autograd in the tests.
_TAU = 2.0 * math.pi


def _rosenbrock(x, y, xp):
    return (1 - x) ** 2 + 100 * (y - x * x) ** 2


def _rosenbrock_grad(x, y, xp):
    d = y - x * x
    return -2 * (1 - x) - 400 * x * d, 200 * d


def _banana(x, y, xp):
    return (1 - x) ** 2 + 20 * (3 * y - x * x) ** 2


def _banana_grad(x, y, xp):
    d = 3 * y - x * x
    return -2 * (1 - x) - 80 * x * d, 120 * d


def _rastrigin(x, y, xp):
    return 20 + x * x - 10 * xp.cos(_TAU * x) + y * y - 10 * xp.cos(_TAU * y)


def _rastrigin_grad(x, y, xp):
    return 2 * x + 10 * _TAU * xp.sin(_TAU * x), 2 * y + 10 * _TAU * xp.sin(_TAU * y)


def _beale(x, y, xp):
    return (1.5 - x + x * y) ** 2 + (2.25 - x + x * y**2) ** 2 + (2.625 - x + x * y**3) ** 2


def _beale_grad(x, y, xp):
    a = 1.5 - x + x * y
    b = 2.25 - x + x * y**2
    c = 2.625 - x + x * y**3
    gx = 2 * a * (y - 1) + 2 * b * (y**2 - 1) + 2 * c * (y**3 - 1)
    gy = 2 * x * (a + 2 * b * y + 3 * c * y**2)
    return gx, gy


def _himmelblau(x, y, xp):
    return (x * x + y - 11) ** 2 + (x + y * y - 7) ** 2


def _himmelblau_grad(x, y, xp):
    u = x * x + y - 11
    v = x + y * y - 7
    return 4 * x * u + 2 * v, 2 * u + 4 * y * v


def _ackley(x, y, xp):
    r = xp.sqrt(0.5 * (x * x + y * y))
    return -20 * xp.exp(-0.2 * r) - xp.exp(0.5 * (xp.cos(_TAU * x) + xp.cos(_TAU * y))) + math.e + 20


def _ackley_grad(x, y, xp):
    r = xp.sqrt(0.5 * (x * x + y * y))
    # d r/dx = x / (2r); at the origin the radial term's limit is 0 (x/r stays bounded).
    radial = 2 * xp.exp(-0.2 * r) / xp.where(r > 0, r, 1.0)
    wave = math.pi * xp.exp(0.5 * (xp.cos(_TAU * x) + xp.cos(_TAU * y)))
    return radial * x + wave * xp.sin(_TAU * x), radial * y + wave * xp.sin(_TAU * y)


def _booth(x, y, xp):
    return (x + 2 * y - 7) ** 2 + (2 * x + y - 5) ** 2


def _booth_grad(x, y, xp):
    a = x + 2 * y - 7
    b = 2 * x + y - 5
    return 2 * a + 4 * b, 4 * a + 2 * b


def _quadratic(x, y, xp, kappa):
    # ½ wᵀ R diag(1, κ) Rᵀ w with R the 45° rotation: Rᵀw = ((x+y)/√2, (y−x)/√2).
    return 0.25 * ((x + y) ** 2 + kappa * (y - x) ** 2)


def _quadratic_grad(x, y, xp, kappa):
    s = 0.5 * (x + y)
    d = 0.5 * kappa * (y - x)
    return s - d, s + d


def _saddle(x, y, xp):
    return x * x - y * y


def _saddle_grad(x, y, xp):
    return 2 * x, -2 * y


_WELL_WIDTH = 0.2


def _wells(x, y, xp):
    right = xp.exp(-((x - 1) ** 2 + y * y) / _WELL_WIDTH)
    left = xp.exp(-((x + 1) ** 2 + y * y) / _WELL_WIDTH)
    return x * x + y * y - 2 * right - 3 * left


def _wells_grad(x, y, xp):
    right = xp.exp(-((x - 1) ** 2 + y * y) / _WELL_WIDTH)
    left = xp.exp(-((x + 1) ** 2 + y * y) / _WELL_WIDTH)
    c_right, c_left = 2 * 2 / _WELL_WIDTH * right, 3 * 2 / _WELL_WIDTH * left
    return 2 * x + c_right * (x - 1) + c_left * (x + 1), 2 * y + (c_right + c_left) * y


def _styblinski_tang(x, y, xp):
    return 0.5 * (x**4 - 16 * x * x + 5 * x + y**4 - 16 * y * y + 5 * y)


def _styblinski_tang_grad(x, y, xp):
    return 2 * x**3 - 16 * x + 2.5, 2 * y**3 - 16 * y + 2.5


# Minimisers to full float64 precision (Newton's method on the formulas above; SPEC §5 lists
# them to 6 digits). Styblinski–Tang's 1-D stationary points solve 2x³ − 16x + 2.5 = 0.
_ST_GLOBAL = -2.903534027771177
_ST_LOCAL = 2.746802770990837

_SURFACES: tuple[Surface, ...] = (
    Surface(
        name="rosenbrock",
        label="Rosenbrock",
        formula=r"(1-x)^2 + 100\,(y-x^2)^2",
        description="A long, curved, flat-bottomed valley: finding it is easy, following it to "
        "(1, 1) is slow, and steps sized for the steep walls crawl along the floor.",
        minima=((1.0, 1.0),),
        f_min=0.0,
        domain=((-2.0, 2.0), (-1.0, 3.0)),
        default_start=(-2.0, 2.0),
        f=_rosenbrock,
        df=_rosenbrock_grad,
        log_colors=True,
    ),
    Surface(
        name="banana",
        label="Banana (scaled Rosenbrock)",
        formula=r"(1-x)^2 + 20\,(3y-x^2)^2",
        description="A milder, rescaled Rosenbrock valley: the same curved floor with walls five "
        "times less steep, so momentum methods can show their speed without diverging.",
        minima=((1.0, 1.0 / 3.0),),
        f_min=0.0,
        domain=((-2.0, 2.0), (-1.0, 1.5)),
        default_start=(-1.21, 0.853),
        f=_banana,
        df=_banana_grad,
        log_colors=True,
    ),
    Surface(
        name="rastrigin",
        label="Rastrigin",
        formula=r"20 + \sum_{i} \left(x_i^2 - 10\cos 2\pi x_i\right)",
        description="A bowl covered in a regular egg-box of local minima: gradient steps get "
        "trapped in the nearest dimple unless the step size or momentum carries them over.",
        minima=((0.0, 0.0),),
        f_min=0.0,
        domain=((-4.5, 4.5), (-4.5, 4.5)),
        default_start=(-2.0, 3.5),
        f=_rastrigin,
        df=_rastrigin_grad,
    ),
    Surface(
        name="beale",
        label="Beale",
        formula=r"(1.5-x+xy)^2 + (2.25-x+xy^2)^2 + (2.625-x+xy^3)^2",
        description="Flat plateaus and sharp ridges with values spanning many decades: "
        "adaptive methods cross the plateaus, plain SGD needs a tiny lr to survive the ridges.",
        minima=((3.0, 0.5),),
        f_min=0.0,
        domain=((-4.5, 4.5), (-4.5, 4.5)),
        default_start=(1.0, 1.5),
        f=_beale,
        df=_beale_grad,
        log_colors=True,
    ),
    Surface(
        name="himmelblau",
        label="Himmelblau",
        formula=r"(x^2+y-11)^2 + (x+y^2-7)^2",
        description="Four equal minima: which one an optimizer reaches from the origin shows "
        "how its steps bend the path (compare the basin maps).",
        minima=(
            (3.0, 2.0),
            (-2.805118086952745, 3.131312518250573),
            (-3.779310253377747, -3.283185991286169),
            (3.5844283403304917, -1.8481265269644034),
        ),
        f_min=0.0,
        domain=((-5.0, 5.0), (-5.0, 5.0)),
        default_start=(0.0, 0.0),
        f=_himmelblau,
        df=_himmelblau_grad,
        log_colors=True,
    ),
    Surface(
        name="ackley",
        label="Ackley",
        formula=r"-20e^{-0.2\sqrt{0.5(x^2+y^2)}} - e^{0.5(\cos 2\pi x+\cos 2\pi y)} + e + 20",
        description="A nearly flat, rippled plateau around one deep funnel: small steps stall in "
        "the ripples, and the funnel's cusp at the origin punishes large ones.",
        minima=((0.0, 0.0),),
        f_min=0.0,
        domain=((-5.0, 5.0), (-5.0, 5.0)),
        default_start=(3.0, 3.0),
        f=_ackley,
        df=_ackley_grad,
    ),
    Surface(
        name="booth",
        label="Booth",
        formula=r"(x+2y-7)^2 + (2x+y-5)^2",
        description="A well-conditioned quadratic bowl (condition number 9): every method "
        "should converge; a baseline for the others.",
        minima=((1.0, 3.0),),
        f_min=0.0,
        domain=((-10.0, 10.0), (-10.0, 10.0)),
        default_start=(-8.0, -8.0),
        f=_booth,
        df=_booth_grad,
        log_colors=True,
    ),
    Surface(
        name="quadratic",
        label="Ill-conditioned quadratic",
        formula=r"\tfrac12\, w^\top R\,\mathrm{diag}(1,\kappa)\,R^\top w,\ R = R_{45^\circ}",
        description="A narrow diagonal valley with condition number κ: one lr cannot suit both "
        "directions, so SGD zig-zags across and crawls along; per-coordinate methods cannot "
        "fix it either, because the valley is rotated 45° away from the axes.",
        minima=((0.0, 0.0),),
        f_min=0.0,
        domain=((-2.0, 2.0), (-2.0, 2.0)),
        default_start=(-1.8, 1.2),
        f=_quadratic,
        df=_quadratic_grad,
        log_colors=True,
        params=MappingProxyType({"kappa": 100.0}),
    ),
    Surface(
        name="saddle",
        label="Saddle",
        formula=r"x^2 - y^2",
        description="No minimum: a start just off the ridge shows how fast each method escapes "
        "the saddle point at the origin (and the loss falls without bound).",
        minima=(),
        f_min=None,
        domain=((-2.0, 2.0), (-2.0, 2.0)),
        default_start=(-1.5, 0.01),
        f=_saddle,
        df=_saddle_grad,
    ),
    Surface(
        name="wells",
        label="Two wells",
        formula=r"x^2+y^2 - 2e^{-((x-1)^2+y^2)/0.2} - 3e^{-((x+1)^2+y^2)/0.2}",
        description="A bowl with a shallow well on the right and a deeper one on the left: "
        "which well an optimizer settles in depends on its momentum and step size.",
        minima=((-0.9363006340109187, 0.0),),
        f_min=-2.0630902517681946,
        domain=((-2.0, 2.0), (-2.0, 2.0)),
        default_start=(0.5, 1.5),
        f=_wells,
        df=_wells_grad,
        local_minima=((0.905317899160115, 0.0),),
    ),
    Surface(
        name="styblinski-tang",
        label="Styblinski–Tang",
        formula=r"\tfrac12 \sum_i \left(x_i^4 - 16x_i^2 + 5x_i\right)",
        description="Four minima of different depths: from the default start (4, 4) plain "
        "gradient descent ends in the shallowest one at (2.75, 2.75), far from the global "
        "minimum at (−2.90, −2.90).",
        minima=((_ST_GLOBAL, _ST_GLOBAL),),
        f_min=-78.33233140754282,
        domain=((-5.0, 5.0), (-5.0, 5.0)),
        default_start=(4.0, 4.0),
        f=_styblinski_tang,
        df=_styblinski_tang_grad,
        local_minima=((_ST_GLOBAL, _ST_LOCAL), (_ST_LOCAL, _ST_GLOBAL), (_ST_LOCAL, _ST_LOCAL)),
        log_colors=True,
    ),
)

SURFACES: Mapping[str, Surface] = MappingProxyType({s.name: s for s in _SURFACES})


def surface_names() -> list[str]:
    """The SPEC §5 surfaces, in table order."""
    return list(SURFACES)


def get_surface(name: str | Surface, **params: float) -> Surface:
    """The surface ``name`` (with optional parameters, e.g. ``kappa`` for the quadratic)."""
    if isinstance(name, Surface):
        return name.with_params(**params) if params else name
    try:
        surface = SURFACES[name]
    except KeyError:
        raise invalid("surface", name, f"one of {', '.join(SURFACES)}") from None
    return surface.with_params(**params) if params else surface


# ---------------------------------------------------------------------------------------------
# Starts and learning-rate grids
# ---------------------------------------------------------------------------------------------

OUTSIDE = ("clamp", "raise")


def check_starts(surface: Surface, start: Any = None, *, outside: str = "clamp") -> tuple[Array, list[str]]:
    """Validate starts: ``(2,)`` or ``(S, 2)`` → ``(S, 2)`` float64 and notes for the user.

    A start outside the domain is clamped into it (``outside="clamp"``, with a note saying
    so) or refused (``outside="raise"``, ``ValueError``). ``None`` is the surface's default.
    """
    if outside not in OUTSIDE:
        raise invalid("outside", outside, f"one of {', '.join(OUTSIDE)}")
    raw = surface.default_start if start is None else start
    try:
        starts = np.array(raw, dtype=float)
    except (TypeError, ValueError):
        raise invalid("start", raw, "a point (x, y) or a list of points") from None
    if starts.ndim == 1:
        starts = starts[None]
    if starts.ndim != 2 or starts.shape[1] != 2 or starts.shape[0] == 0:
        raise ValueError(f"Invalid start: shape {np.shape(raw)} (must be (2,) or (N, 2))")
    if not np.isfinite(starts).all():
        raise invalid("start", raw, "finite")
    notes: list[str] = []
    inside = surface.contains(starts)
    if not inside.all():
        (x0, x1), (y0, y1) = surface.domain
        box = f"x ∈ [{x0:g}, {x1:g}], y ∈ [{y0:g}, {y1:g}]"
        first = tuple(float(v) for v in starts[~inside][0])
        if outside == "raise":
            raise ValueError(f"Invalid start: ({first[0]:g}, {first[1]:g}) is outside the domain {box}")
        clamped = surface.clamp(starts)
        which = f"({first[0]:g}, {first[1]:g})"
        more = f" and {int((~inside).sum()) - 1} more" if (~inside).sum() > 1 else ""
        to = tuple(float(v) for v in clamped[~inside][0])
        notes.append(f"start {which}{more} lies outside {box}: clamped to ({to[0]:g}, {to[1]:g})")
        starts = clamped
    return starts, notes


def lr_grid(
    center: float, *, decades_below: float = 2.0, decades_above: float = 1.5, per_decade: int = 4
) -> Array:
    """A log-spaced grid of learning rates around ``center`` (the default lr), center included.

    >>> lr_grid(1e-2, decades_below=1, decades_above=1, per_decade=2)
    array([0.001     , 0.00316228, 0.01      , 0.03162278, 0.1       ])
    """
    if not (math.isfinite(center) and center > 0):
        raise invalid("center", center, "> 0")
    if int(per_decade) != per_decade or per_decade < 1:
        raise invalid("per_decade", per_decade, "an integer >= 1")
    for name, value in (("decades_below", decades_below), ("decades_above", decades_above)):
        if not (math.isfinite(value) and value >= 0):
            raise ValueError(f"Invalid {name}: {value!r} (must be >= 0)")
    low = round(decades_below * per_decade)
    high = round(decades_above * per_decade)
    return center * 10.0 ** (np.arange(-low, high + 1) / per_decade)


# ---------------------------------------------------------------------------------------------
# The simulator
# ---------------------------------------------------------------------------------------------

SCALING_EPS = 1e-12  # SPEC §4: η_eff = |Δθ| / (|g| + 1e-12)
DEFAULT_TOLERANCE = 1e-3  # ε of "steps to ε" (SPEC §3)
# Hyperparameters whose SPEC default is "equal to lr" (SPEC §1.5: γ̂ = η): unless the caller
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
        points: ``(T + 1, N, 2)`` x_0 … x_T.
        loss: ``(T + 1, N)`` f(x_t).
        grad: ``(T, N, 2)`` the gradient step t + 1 applied: ∇f(x_t) plus noise, clipped when
            clipping is on; for closure optimizers (ExtraSGD) the gradient at the
            extrapolated point, the one their update used.
        lr: ``(T, N)`` η_t, the parameter group's lr when step t + 1 was taken.
        scaling: ``(T, N, 2)`` per-coordinate scaling factor (|Δx| / (|g| + 1e-12)) / η_t
            (SPEC §4): 1 for plain SGD, larger where the optimizer stepped further than η·|g|.
        batch_size: ``(T, N)`` the batch size behind each step's gradient.
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
        """SPEC §3 metrics per row, as ``(N,)`` arrays.

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
            whose SPEC default is "= lr" (ExtraSGD's γ̂) follow each row's lr unless set.
        steps: T ≥ 1.
        seed: seed of the gradient noise.
        noise_std: σ of the gradient noise ∇f + σ·ξ/√B (0 = exact gradients).
        batch_size: B of the noise formula (the "batch size" knob; ignored by optimizers that
            choose their own batch size, which start from their own setting).
        clip_norm: clip each row's gradient to this Euclidean norm; ``None`` (default) = off.
        outside: a start outside the domain is ``"clamp"``-ed (with a note) or ``"raise"``-s.

    Returns:
        A :class:`Run`; ``run.metrics()`` gives SPEC §3's metrics per row.
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


def _check_int(name: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or not low <= value <= high:
        raise ValueError(f"Invalid {name}: {value!r} (must be an integer in [{low}, {high}])")
    return int(value)


def _check_float(name: str, value: Any, *, low: float = 0.0, low_open: bool = False) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"Invalid {name}: {value!r} (must be a number)") from None
    if not math.isfinite(number) or number < low or (low_open and number == low):
        raise ValueError(f"Invalid {name}: {value!r} (must be {'>' if low_open else '>='} {low:g})")
    return number


MAX_STEPS = 100_000
MAX_ROWS = 1_000_000


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
        self.steps = _check_int("steps", steps, 1, MAX_STEPS)
        self.seed = _check_int("seed", seed, 0, 2**63 - 1)
        self.noise_std = _check_float("noise_std", noise_std)
        self.batch = _check_int("batch_size", batch_size, 1, 2**31 - 1)
        self.clip_norm = None if clip_norm is None else _check_float("clip_norm", clip_norm, low_open=True)
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
        batch_hist = np.full((steps, n_rows), self.batch, dtype=np.int64)

        common_noise = None
        if self.noise_std > 0 and batches is None:
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
                    set_grads(g)
                    opt.step()
                    if batches is not None:
                        batches.grow()
                x = current()
                if keep_path:
                    points[t + 1] = x
                    if t == 0:  # the state worth drawing that this optimizer keeps
                        kept = [key for key in _TRACKED_STATE if all(key in opt.state[p] for p in params)]
                        tracked = {key: np.full((steps, n_rows, 2), np.nan) for key in kept}
                    for key, history in tracked.items():
                        for p, (a, b) in zip(params, bounds, strict=True):
                            history[t, a:b] = opt.state[p][key].detach().numpy()
                else:
                    loss[t + 1] = f(x[:, 0], x[:, 1], np, **fparams)
                    np.copyto(last_finite, x, where=np.isfinite(loss[t + 1])[:, None] & np.isfinite(x))
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


@dataclass(frozen=True, eq=False)
class BasinMap:
    """Where an optimizer ends from every start of a grid, and how fast.

    ``xs`` (nx,), ``ys`` (ny,); the other arrays are ``(ny, nx)`` with ``[j, i]`` for the start
    ``(xs[i], ys[j])`` (the heatmap layout).

    Attributes:
        final_point: ``(ny, nx, 2)`` the last (finite) point.
        final_gap: f − f* at the end (f where f* is unknown); +inf where diverged.
        steps_to_tolerance: first step with f − f* < ε, −1 if never.
        diverged_at: first non-finite step, −1 if none.
        basin: index into ``surface.all_minima`` of the minimum the run ended at (within
            ``radius``), :data:`BASIN_ELSEWHERE` (−1) for none, :data:`BASIN_DIVERGED` (−2).
    """

    surface: Surface
    optimizer: str
    hparams: Mapping[str, Any]
    xs: Array
    ys: Array
    final_point: Array
    final_gap: Array
    steps_to_tolerance: Array
    diverged_at: Array
    basin: Array
    steps: int
    tolerance: float
    radius: float
    seconds: float


BASIN_ELSEWHERE = -1
BASIN_DIVERGED = -2


def basin_map(
    surface: Surface | str,
    optimizer: str = "sgd",
    hparams: Mapping[str, Any] | None = None,
    *,
    resolution: int | tuple[int, int] = 100,
    steps: int = 300,
    tolerance: float = DEFAULT_TOLERANCE,
    radius: float | None = None,
    seed: int = 0,
    noise_std: float = 0.0,
    batch_size: int = 1,
    clip_norm: float | None = None,
) -> BasinMap:
    """Run ``optimizer`` from every start of a ``resolution`` grid over the domain, in one batch.

    Each start is its own problem (per-row reductions), so a pixel is exactly the run
    :func:`simulate` gives from that start. ``radius`` (default 2% of the domain's diagonal)
    decides whether a final point sits at one of ``surface.all_minima``.
    """
    surf = get_surface(surface)
    nx, ny = (resolution, resolution) if isinstance(resolution, int | np.integer) else resolution
    nx, ny = _check_int("resolution", nx, 2, 1000), _check_int("resolution", ny, 2, 1000)
    tolerance = _check_float("tolerance", tolerance, low_open=True)
    (x0, x1), (y0, y1) = surf.domain
    radius = (
        0.02 * math.hypot(x1 - x0, y1 - y0)
        if radius is None
        else _check_float("radius", radius, low_open=True)
    )
    xs, ys = np.linspace(x0, x1, nx), np.linspace(y0, y1, ny)
    starts = np.stack(np.meshgrid(xs, ys), axis=-1).reshape(-1, 2)
    engine = _Engine(
        surf,
        optimizer,
        hparams,
        start=starts,
        lrs=None,
        steps=steps,
        seed=seed,
        noise_std=noise_std,
        batch_size=batch_size,
        clip_norm=clip_norm,
        outside="raise",
    )
    raw = engine.run(keep_path=False)
    loss, diverged = raw["loss"], raw["diverged_at"] >= 0
    gap = loss if surf.f_min is None else loss - surf.f_min
    final = raw["final_point"]
    basin = np.full(len(final), BASIN_ELSEWHERE)
    if surf.all_minima:
        distance = np.linalg.norm(final[:, None, :] - np.asarray(surf.all_minima)[None], axis=-1)
        nearest = distance.argmin(axis=1)
        basin = np.where(distance.min(axis=1) <= radius, nearest, BASIN_ELSEWHERE)
    basin[diverged] = BASIN_DIVERGED
    reached = metrics.steps_to_target(gap, tolerance) if surf.f_min is not None else np.full(len(final), -1)
    shape = (ny, nx)
    return BasinMap(
        surface=surf,
        optimizer=engine.info.name,
        hparams=MappingProxyType(dict(engine.hparams)),
        xs=xs,
        ys=ys,
        final_point=final.reshape(ny, nx, 2),
        final_gap=np.where(diverged, np.inf, gap[-1]).reshape(shape),
        steps_to_tolerance=np.asarray(reached).reshape(shape),
        diverged_at=raw["diverged_at"].reshape(shape),
        basin=basin.reshape(shape),
        steps=engine.steps,
        tolerance=tolerance,
        radius=radius,
        seconds=raw["seconds"],
    )


CRITERIA = ("steps_to_tolerance", "final_gap")


@dataclass(frozen=True, eq=False)
class LrSweep:
    """One optimizer at many learning rates from one start, run as one batch.

    ``run`` has one row per learning rate (``run.lrs``); the summary arrays are ``(L,)``.
    ``default_lr`` is the lr the optimizer would use without the sweep.
    """

    run: Run
    default_lr: float
    tolerance: float

    @property
    def lrs(self) -> Array:
        return self.run.lrs

    @property
    def final_gap(self) -> Array:
        return self.run.final_gap

    @property
    def diverged_at(self) -> Array:
        return self.run.diverged_at

    @property
    def default_index(self) -> int | None:
        """The row run at the default lr (None when the sweep's lrs do not contain it)."""
        close = np.isclose(self.lrs, self.default_lr, rtol=1e-9, atol=0.0)
        return int(np.argmax(close)) if close.any() else None

    @property
    def steps_to_tolerance(self) -> Array:
        if self.run.surface.f_min is None:
            return np.full(self.run.rows, metrics.NOT_REACHED)
        return np.atleast_1d(metrics.steps_to_target(self.run.gap, self.tolerance))

    def best_index(self, criterion: str = "steps_to_tolerance") -> int | None:
        """The tuned learning rate's row, or None when every lr diverged.

        ``"steps_to_tolerance"``: fewest steps to ε, ties and rows that never reach ε ranked by
        final gap; ``"final_gap"``: smallest final gap.
        """
        if criterion not in CRITERIA:
            raise invalid("criterion", criterion, f"one of {', '.join(CRITERIA)}")
        gap = np.where(np.isnan(self.final_gap), np.inf, self.final_gap)
        if np.all(self.diverged_at >= 0):
            return None
        if criterion == "final_gap":
            return int(np.argmin(gap))
        reached = self.steps_to_tolerance
        steps = np.where(reached >= 0, reached, np.iinfo(np.int64).max)
        return int(np.lexsort((gap, steps))[0])

    def best_lr(self, criterion: str = "steps_to_tolerance") -> float | None:
        index = self.best_index(criterion)
        return None if index is None else float(self.lrs[index])

    def best_run(self, criterion: str = "steps_to_tolerance") -> Run | None:
        """The tuned row as a run of its own."""
        index = self.best_index(criterion)
        return None if index is None else self.run.row(index)


def lr_sweep(
    surface: Surface | str,
    optimizer: str = "sgd",
    hparams: Mapping[str, Any] | None = None,
    *,
    lrs: Sequence[float] | Array | None = None,
    start: Any = None,
    steps: int = 300,
    tolerance: float = DEFAULT_TOLERANCE,
    **kwargs: Any,
) -> LrSweep:
    """Final gap (and steps to ε) against the learning rate, all lrs in one batch.

    ``lrs`` defaults to :func:`lr_grid` around the optimizer's surface-default lr (the same
    15 points per optimizer: a fair, equal tuning budget). Tuning picks the best row
    (:meth:`LrSweep.best_index`). Each lr is one parameter group; with gradient noise every lr
    sees the same noise sequence (common random numbers). ``kwargs`` go to :func:`simulate`.
    """
    from dgs_core.optim import registry

    surf = get_surface(surface)
    start_point = np.asarray(check_starts(surf, start, outside=kwargs.get("outside", "clamp"))[0])
    if len(start_point) != 1:
        raise ValueError(f"Invalid start: {len(start_point)} points (an lr sweep runs from one start)")
    default_lr = float(registry.get(optimizer).resolve(hparams, surface=True)["lr"])
    grid = lr_grid(default_lr) if lrs is None else lrs
    run = simulate(surf, optimizer, hparams, start=start, lrs=grid, steps=steps, **kwargs)
    return LrSweep(
        run=run, default_lr=default_lr, tolerance=_check_float("tolerance", tolerance, low_open=True)
    )
