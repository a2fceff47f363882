"""Planes through weight space, each a frozen record of what it is and how faithful it is.

Three kinds (:class:`PlaneSpec`, built by :func:`build_plane`):

``exact``
    The plane through the shared initial weights θ₀ and two optimizers' final weights θ_A, θ_B
    (Garipov et al. 2018, "Loss Surfaces, Mode Connectivity, and Fast Ensembling of DNNs",
    https://arxiv.org/abs/1802.10026, draw such planes). Its axes are orthonormalised
    (Gram–Schmidt), so coordinates are Euclidean distances in weight space and angles are true::

        e₁ = (θ_A − θ₀) / ‖θ_A − θ₀‖,   e₂ = b⊥ / ‖b⊥‖,   b⊥ = (θ_B − θ₀) − ((θ_B − θ₀)·e₁) e₁

    θ₀ sits at (0, 0), θ_A at (‖θ_A − θ₀‖, 0), θ_B at ((θ_B − θ₀)·e₁, ‖b⊥‖): all three lie on the
    plane, so the losses drawn there are exact.
``pca``
    The two principal directions of every recorded weight vector of the chosen optimizers
    together (one plane for all paths). Li et al. 2018 §7 ("Visualizing the Loss Landscape of
    Neural Nets", https://arxiv.org/abs/1712.09913) do this for one trajectory, centred at its
    final weights; with several optimizers the centre is ours to choose: ``"mean"`` of all the
    points (the default: plain PCA, and the explained variance has its usual meaning),
    ``"initial"`` (the shared start: every path begins at the origin) or an optimizer's label
    (its final weights, as Li et al.). The directions are the top right-singular vectors of the
    points minus the centre; the explained variance of each is its squared singular value over
    their sum (the share of Σ‖θᵢ − centre‖² it captures, which is the variance when the centre is
    the mean). A point's distance from the plane says how far the drawn path is from the real one.
``random``
    Two filter-normalised random directions around one optimizer's final weights (Li et al.
    2018 §4, as their code, ``net_plotter.py``, does it): each direction is N(0, I), drawn
    with ``torch.Generator().manual_seed(seed)`` (float64, the first direction for all tensors,
    then the second), and each filter of it is rescaled to the norm of the same filter of the
    weights, ``d_i ← d_i · ‖θ_i‖ / (‖d_i‖ + 1e-10)``. A filter is a slice along the first
    dimension: a convolution's output channel, a linear layer's row (one neuron's weights),
    an embedding's row (one token). Tensors with at most one dimension (biases, GroupNorm and
    LayerNorm scales and shifts) get a zero direction by default; with
    ``include_bias_and_norm`` their direction is the weights themselves, as the reference code
    does. The axes are not orthogonalised (random directions in high dimension nearly are):
    coordinates are the α, β of θ* + α d₁ + β d₂. Note: a random plane rarely contains the
    paths (they lie far from it; the distances say so).

Every plane reports the largest distance of any recorded weight vector from it
(:attr:`Plane.max_distance`) and, for scale, the largest distance of one from the plane's origin
(:attr:`Plane.extent`). All plane arithmetic is float64; points on it are cast to float32 (the
models' dtype) only when evaluated, so the exact plane's three points come back bit for bit.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import Any

import numpy as np
import torch

from dgs_core.landscape.weights import Landscape, ParamLayout
from dgs_core.params import Param, check_keys, invalid

PLANE_KINDS = ("exact", "pca", "random")
PCA_CENTRES = ("mean", "initial")  # or an optimizer's label: its final weights
_SEED = Param("seed", 0, low=0, high=2**63 - 1, integer=True, help="random plane's directions")
_EPSILON = 1e-10  # Li et al.'s guard against a zero-norm filter of the direction


@dataclass(frozen=True)
class PlaneSpec:
    """What plane to build: plain, validated values (JSON via :meth:`to_dict`).

    Attributes:
        kind: "exact", "pca" or "random".
        labels: exact: the two optimizers whose final weights span the plane with the initial
            weights; pca: whose recorded weights the PCA takes (empty: all); random: the one
            optimizer whose final weights the plane is centred on.
        centre: pca only: "mean", "initial" or an optimizer's label.
        seed: random only: the directions' seed.
        include_bias_and_norm: random only: give 1-D tensors (biases, norms) a direction too.

    >>> PlaneSpec.exact("sgd", "adam").to_dict()["labels"]
    ['sgd', 'adam']
    """

    kind: str
    labels: tuple[str, ...] = ()
    centre: str = "mean"
    seed: int = 0
    include_bias_and_norm: bool = False

    def __post_init__(self) -> None:
        if self.kind not in PLANE_KINDS:
            raise invalid("kind", self.kind, f"one of {', '.join(PLANE_KINDS)}")
        labels = self.labels
        if isinstance(labels, str) or not isinstance(labels, Sequence):
            raise invalid("labels", labels, "a list of optimizer labels")
        labels = tuple(labels)
        if not all(isinstance(label, str) and label for label in labels) or len(set(labels)) != len(labels):
            raise invalid("labels", list(labels), "distinct optimizer labels")
        wanted = {"exact": "two optimizers' labels", "random": "one optimizer's label"}
        count = {"exact": 2, "random": 1}.get(self.kind)
        if count is not None and len(labels) != count:
            raise invalid("labels", list(labels), wanted[self.kind])
        object.__setattr__(self, "labels", labels)
        object.__setattr__(self, "seed", _SEED.validate(self.seed))
        if not isinstance(self.include_bias_and_norm, bool):
            raise invalid("include_bias_and_norm", self.include_bias_and_norm, "True or False")
        if not isinstance(self.centre, str) or not self.centre:
            raise invalid("centre", self.centre, f"one of {', '.join(PCA_CENTRES)} or an optimizer's label")
        # a field that does not apply to the kind keeps its default: one plane, one spec (and one cache key)
        for name, applies in (("centre", "pca"), ("seed", "random"), ("include_bias_and_norm", "random")):
            default = next(f.default for f in fields(self) if f.name == name)
            if self.kind != applies and getattr(self, name) != default:
                raise invalid(
                    name, getattr(self, name), f"left at {default!r}: it applies to {applies} planes only"
                )

    @classmethod
    def exact(cls, first: str, second: str) -> PlaneSpec:
        return cls("exact", (first, second))

    @classmethod
    def pca(cls, labels: Sequence[str] = (), centre: str = "mean") -> PlaneSpec:
        return cls("pca", tuple(labels), centre=centre)

    @classmethod
    def random(cls, label: str, seed: int = 0, include_bias_and_norm: bool = False) -> PlaneSpec:
        return cls("random", (label,), seed=seed, include_bias_and_norm=include_bias_and_norm)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "labels": list(self.labels),
            "centre": self.centre,
            "seed": self.seed,
            "include_bias_and_norm": self.include_bias_and_norm,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PlaneSpec:
        if not isinstance(data, Mapping):
            raise invalid("plane", data, "a mapping")
        check_keys(data, [f.name for f in fields(cls)], "plane")
        if "kind" not in data:
            raise invalid("kind", None, f"one of {', '.join(PLANE_KINDS)}")
        return cls(**data)


@dataclass(frozen=True, eq=False)
class ProjectedPath:
    """One optimizer's recorded weights seen on a plane.

    Attributes:
        label, name, status: the optimizer.
        steps: ``(k,)`` the recorded steps (the last: the final weights).
        coords: ``(k, 2)`` plane coordinates of each recorded weight vector's orthogonal
            projection (least squares in the plane's axes).
        distances: ``(k,)`` how far each recorded vector is from the plane (‖θ − its projection‖).
        losses: per split, ``(k,)`` the loss at the recorded weights themselves (the truth).
        plane_losses: per split, ``(k,)`` the loss at their projections (on the plane, like the
            contours); where the two differ, the drawn path is not the real one.
    """

    label: str
    name: str
    status: str
    steps: np.ndarray
    coords: np.ndarray
    distances: np.ndarray
    losses: Mapping[str, np.ndarray] = field(default_factory=lambda: MappingProxyType({}))
    plane_losses: Mapping[str, np.ndarray] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True, eq=False)
class Plane:
    """A plane ``origin + x·directions[0] + y·directions[1]`` and how faithful it is.

    Attributes:
        spec: what was asked for.
        origin: ``(n,)`` float64 on the CPU: the point at (0, 0).
        directions: ``(2, n)`` float64: the axes (orthonormal for exact and pca planes).
        axis_titles: what each axis measures.
        anchors: named points that lie exactly on the plane, and their coordinates.
        explained_variance: pca: each direction's share (see the module docstring); else None.
        max_distance: the largest distance of a recorded weight vector (any path) from the plane.
        extent: the largest distance of a recorded weight vector from ``origin`` (the scale of
            ``max_distance``).
    """

    spec: PlaneSpec
    origin: torch.Tensor
    directions: torch.Tensor
    axis_titles: tuple[str, str]
    anchors: Mapping[str, tuple[float, float]]
    explained_variance: tuple[float, float] | None
    max_distance: float
    extent: float

    def coordinates(self, weights: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """Coordinates ``(k, 2)`` of the orthogonal projections of ``weights`` ``(k, n)`` onto
        the plane, and each vector's distance ``(k,)`` from it."""
        return _project(self.origin, self.directions, weights)

    def points(self, coords: torch.Tensor) -> torch.Tensor:
        """Weight vectors ``(p, n)`` float32 at plane coordinates ``(p, 2)``, computed in float64
        (pass float64 coordinates: float32 ones are rounded before they get here)."""
        return (self.origin + coords.to(torch.float64) @ self.directions).to(torch.float32)

    @property
    def relative_distance(self) -> float:
        return self.max_distance / self.extent if self.extent > 0 else 0.0

    @property
    def title(self) -> str:
        """Which plane, and how faithful it is."""
        spec = self.spec
        share = f"{self.relative_distance:.0%} of their largest distance from the origin"
        off = f"{self.max_distance:.3g} ({share})"
        if spec.kind == "exact":
            a, b = spec.labels
            return (
                f"Exact plane through the initial weights, {a} and {b} · exact at those three points; "
                f"recorded weights up to {off} off the plane"
            )
        if spec.kind == "pca":
            first, second = self.explained_variance or (0.0, 0.0)
            centre = spec.centre if spec.centre in PCA_CENTRES else f"{spec.centre}'s final weights"
            return (
                f"PCA plane of {', '.join(spec.labels) or 'every path'} (centre: {centre}) · explained "
                f"variance {first:.1%} + {second:.1%} = {first + second:.1%}; recorded weights up to {off} "
                "off the plane"
            )
        extra = "biases and norms included" if spec.include_bias_and_norm else "biases and norms left out"
        return (
            f"Filter-normalized random plane around {spec.labels[0]}'s final weights (seed {spec.seed}, "
            f"{extra}) · recorded weights up to {off} off the plane"
        )

    def project(self, landscape: Landscape) -> dict[str, ProjectedPath]:
        """Every path of ``landscape`` projected onto the plane (no losses yet)."""
        out = {}
        for label, path in landscape.paths.items():
            coords, distances = self.coordinates(path.weights)
            steps = np.asarray(path.steps, dtype=np.int64)
            out[label] = ProjectedPath(label, path.name, path.status, steps, coords, distances)
        return out


# ---------------------------------------------------------------------------------------------
# Building planes
# ---------------------------------------------------------------------------------------------


def build_plane(landscape: Landscape, spec: PlaneSpec) -> Plane:
    """The plane ``spec`` asks for, through ``landscape``'s weights.

    Raises ``ParamError`` naming ``labels`` (an unknown optimizer, or weights that span no
    plane), ``centre`` (an unknown centre) or ``plane`` (the initial weights were not recorded).
    """
    if not isinstance(spec, PlaneSpec):
        raise invalid("plane", spec, "a PlaneSpec")
    for label in spec.labels:
        landscape.path(label, field="labels")
    if spec.kind == "exact":
        origin, directions, titles, anchors = _exact(landscape, *spec.labels)
        variance = None
    elif spec.kind == "pca":
        origin, directions, titles, anchors, variance = _pca(
            landscape, spec.labels or landscape.labels, spec.centre
        )
    else:
        variance = None
        final = landscape.path(spec.labels[0]).final.to(torch.float64)
        origin = final
        directions = random_directions(
            landscape.layout, final, seed=spec.seed, include_bias_and_norm=spec.include_bias_and_norm
        )
        titles = ("α (filter-normalized direction 1)", "β (filter-normalized direction 2)")
        anchors = {spec.labels[0]: (0.0, 0.0)}
    everything = torch.cat([p.weights for p in landscape.paths.values()])
    _, distances = _project(origin, directions, everything)
    extent = float((everything.to(torch.float64) - origin).norm(dim=1).max())
    return Plane(
        spec, origin, directions, titles, MappingProxyType(anchors), variance, float(distances.max()), extent
    )


def _project(
    origin: torch.Tensor, directions: torch.Tensor, weights: torch.Tensor
) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares coordinates c = (DDᵀ)⁻¹ D (θ − o) of each row of ``weights`` in the plane's
    axes D, and each row's distance ‖θ − o − cᵀD‖ from the plane (float64)."""
    offsets = weights.to(torch.float64) - origin
    coords = torch.linalg.solve(directions @ directions.T, directions @ offsets.T).T
    residual = offsets - coords @ directions
    return coords.numpy(), residual.norm(dim=1).numpy()


def _exact(
    landscape: Landscape, first: str, second: str
) -> tuple[torch.Tensor, torch.Tensor, tuple[str, str], dict[str, tuple[float, float]]]:
    if landscape.initial is None:
        raise invalid(
            "plane",
            "exact",
            "a plane through recorded initial weights (this run has none: bundles record them "
            "from format 3 on; train it again to draw this plane)",
        )
    origin = landscape.initial.to(torch.float64)
    a = landscape.path(first).final.to(torch.float64) - origin
    b = landscape.path(second).final.to(torch.float64) - origin
    a_norm = float(a.norm())
    if a_norm == 0.0:
        raise invalid("labels", first, "an optimizer that moved away from the initial weights")
    e1 = a / a_norm
    along = float(b @ e1)
    across = b - along * e1
    across_norm = float(across.norm())
    if across_norm <= 1e-6 * max(float(b.norm()), 1e-30):
        raise invalid(
            "labels",
            [first, second],
            "two optimizers whose final weights and the initial weights span a plane (these are on one line)",
        )
    e2 = across / across_norm
    titles = (f"towards {first} (distance)", f"towards {second}, orthogonal (distance)")
    anchors = {"initial": (0.0, 0.0), first: (a_norm, 0.0), second: (along, across_norm)}
    return origin, torch.stack([e1, e2]), titles, anchors


def _pca(
    landscape: Landscape, labels: Sequence[str], centre: str
) -> tuple[torch.Tensor, torch.Tensor, tuple[str, str], dict[str, tuple[float, float]], tuple[float, float]]:
    points = torch.cat([landscape.path(label, field="labels").weights for label in labels]).to(torch.float64)
    if centre == "mean":
        origin = points.mean(dim=0)
    elif centre == "initial":
        if landscape.initial is None:
            raise invalid(
                "centre", centre, "'mean' or an optimizer's label (this run has no initial weights)"
            )
        origin = landscape.initial.to(torch.float64)
    elif centre in landscape.paths:
        origin = landscape.paths[centre].final.to(torch.float64)
    else:
        raise invalid(
            "centre", centre, f"one of {', '.join(PCA_CENTRES)} or one of {', '.join(landscape.labels)}"
        )
    _, singular, vh = torch.linalg.svd(points - origin, full_matrices=False)
    total = float((singular**2).sum())
    if len(singular) < 2 or float(singular[1]) <= 1e-9 * max(float(singular[0]), 1e-30):
        raise invalid(
            "labels", list(labels), "optimizers whose recorded weights span at least two dimensions"
        )
    directions = vh[:2].clone()
    # SVD's signs are arbitrary: point each axis towards the first optimizer's final weights (or,
    # when those are the centre, towards the point of its path farthest from it)
    path = landscape.path(labels[0]).weights.to(torch.float64) - origin
    reference = path[-1] if float(path[-1].norm()) > 0 else path[int(path.norm(dim=1).argmax())]
    for i in range(2):
        if float(directions[i] @ reference) < 0:
            directions[i] = -directions[i]
    variance = (float(singular[0] ** 2) / total, float(singular[1] ** 2) / total)
    titles = (f"PC 1 ({variance[0]:.1%})", f"PC 2 ({variance[1]:.1%})")
    anchors = {"centre": (0.0, 0.0)} if centre == "mean" else {centre: (0.0, 0.0)}
    return origin, directions, titles, anchors, variance


def filter_normalize(
    direction: Mapping[str, torch.Tensor],
    weights: Mapping[str, torch.Tensor],
    *,
    include_bias_and_norm: bool = False,
) -> dict[str, torch.Tensor]:
    """Li et al. 2018's filter normalisation of a direction (a new dict; see the module docstring).

    Each slice ``d[i]`` along the first dimension of a tensor with 2 or more dimensions is scaled
    to ``‖θ[i]‖ / (‖d[i]‖ + 1e-10)`` times itself; a tensor with at most one dimension becomes
    zero, or with ``include_bias_and_norm`` a copy of the weights (as the reference code).
    """
    out = {}
    for name, d in direction.items():
        w = weights[name]
        if d.ndim <= 1:
            out[name] = w.clone() if include_bias_and_norm else torch.zeros_like(d)
            continue
        dims = tuple(range(1, d.ndim))
        d_norm = d.pow(2).sum(dim=dims, keepdim=True).sqrt()
        w_norm = w.pow(2).sum(dim=dims, keepdim=True).sqrt()
        out[name] = d * (w_norm / (d_norm + _EPSILON))
    return out


def random_directions(
    layout: ParamLayout, weights: torch.Tensor, *, seed: int, include_bias_and_norm: bool = False
) -> torch.Tensor:
    """Two filter-normalised N(0, I) directions ``(2, n)`` float64 around ``weights`` (seeded)."""
    generator = torch.Generator().manual_seed(seed)
    named = layout.unflatten(weights.to(torch.float64))
    rows = []
    for _ in range(2):
        raw = {
            n: torch.randn(s, generator=generator, dtype=torch.float64)
            for n, s in zip(layout.names, layout.shapes, strict=True)
        }
        rows.append(layout.flatten(filter_normalize(raw, named, include_bias_and_norm=include_bias_and_norm)))
    direction = torch.stack(rows)
    if not bool(direction.any(dim=1).all()):
        raise invalid(
            "include_bias_and_norm",
            include_bias_and_norm,
            "True: the model has only 1-D parameters, which False leaves out (a zero direction)",
        )
    return direction
