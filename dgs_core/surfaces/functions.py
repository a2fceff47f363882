"""The 2-D test functions (docs/algorithms.md#surfaces): value, gradient, domain, minima, start.

Every surface is written once, as arithmetic on ``x`` and ``y`` plus ``xp.exp / xp.cos /
xp.sin / xp.sqrt / xp.where`` where ``xp`` is numpy or torch. The same formula therefore
gives a torch-differentiable value (autograd, the 3-D view) and a fast numpy value and
closed-form gradient for the simulator; the tests check the closed forms against autograd
and finite differences.

>>> rosen = get_surface("rosenbrock")
>>> float(rosen.value([1.0, 1.0]))
0.0
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

import numpy as np
import torch

from dgs_core.params import Param, ParamSet, invalid

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
        name: registry key, as in docs/algorithms.md#surfaces ("rosenbrock", "styblinski-tang").
        label: display name.
        formula: LaTeX of f(x, y) (without surrounding ``$``).
        description: what the surface teaches, one or two sentences.
        minima: the global minimisers (empty for the unbounded saddle).
        f_min: the global minimum value f*, ``None`` where there is none (saddle).
        domain: ``((x_min, x_max), (y_min, y_max))``, the plotting box and valid starts.
        default_start: the start listed in docs/algorithms.md#surfaces.
        local_minima: other (non-global) minimisers worth marking and naming in basin maps.
        log_colors: colour contours by log(f − f* + c): the surface spans many decades.
        params: surface parameters (the quadratic's condition number ``kappa``), their values.
        specs: those parameters' Param specs (valid ranges; the UI's widgets).
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
    specs: ParamSet = field(default_factory=ParamSet)

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
        """A copy with new surface parameters (``get_surface("quadratic").with_params(kappa=10)``);
        ``ParamError`` naming an unknown or out-of-range parameter."""
        merged = self.specs.resolve(params, base=self.params, what=f"surface parameter for {self.name}")
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


# Minimisers to full float64 precision (Newton's method on the formulas above;
# docs/algorithms.md#surfaces lists them to 6 digits). Styblinski–Tang's 1-D stationary points
# solve 2x³ − 16x + 2.5 = 0.
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
        # κ ≥ 1 by definition; above 10⁶ the valley is thinner than the contour grid can draw and
        # f overflows float64's useful range at the domain's corners times typical lrs
        specs=ParamSet((Param("kappa", 100.0, low=1.0, high=1e6, log=True, help="condition number κ"),)),
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
    """The docs/algorithms.md#surfaces surfaces, in table order."""
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
