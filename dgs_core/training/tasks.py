"""Training-lab tasks: small data sets generated or shipped with scikit-learn, no downloads.

Every task is a classification problem ``model(x) -> logits`` with a cross-entropy loss and
accuracy as its validation metric, so one trainer, one loss and one per-sample-gradient path
serve them all:

========  ===================================================  ===========
name      data                                                 model
========  ===================================================  ===========
moons     two interleaved half circles (scikit-learn)          MLP
circles   a circle inside a ring (scikit-learn)                MLP
spirals   ``classes`` interleaved spiral arms                  MLP
digits    scikit-learn's 8×8 hand-written digits (1,797)       residual CNN
modular   ``a ∘ b mod p`` as the token sequence ``a ∘ b =``    causal transformer
========  ===================================================  ===========

The pool of examples is shuffled once with ``seed`` and split into validation (a fraction
``val_fraction``) and training data. For the annealing lab the training set carries
``label_noise`` (that fraction of its labels replaced by a random *other* class) and a clean
"high-quality" subset (a fraction ``hq_fraction`` of the training examples, whose labels are
never noised). The validation set is always clean.

>>> task = make_task("moons", seed=0, n_samples=200)
>>> task.x_train.shape, task.num_classes
(torch.Size([150, 2]), 2)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Any

import numpy as np
import torch

from dgs_core.params import Param, ParamSet, invalid

DATA_SOURCES = ("main", "hq")


_COMMON = (
    Param("val_fraction", 0.25, low=0.05, high=0.9, help="fraction of the pool held out for validation"),
    Param(
        "label_noise", 0.0, low=0.0, high=0.9, help="fraction of training labels replaced by another class"
    ),
    Param(
        "hq_fraction", 0.2, low=0.0, high=1.0, help="fraction of training examples kept clean (the HQ subset)"
    ),
)


@dataclass(frozen=True)
class TaskInfo:
    """A task's record: label, one-line summary, the model family it uses and its parameters."""

    name: str
    label: str
    summary: str
    model: str  # "mlp", "cnn" or "transformer"
    params: ParamSet

    def __post_init__(self) -> None:
        object.__setattr__(self, "params", ParamSet(self.params))

    @property
    def defaults(self) -> dict[str, Any]:
        return self.params.defaults()

    def resolve(self, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Defaults updated by ``params``, validated; ``ParamError`` names a bad parameter."""
        resolved = self.params.resolve(params, what=f"task parameter for {self.name}")
        if resolved["label_noise"] + resolved["hq_fraction"] > 1.0:
            raise invalid(
                "label_noise",
                resolved["label_noise"],
                "<= 1 - hq_fraction: label_noise + hq_fraction must be <= 1, the HQ subset is never noised",
            )
        return resolved


_INFOS = (
    TaskInfo(
        "moons",
        "Two moons",
        "Two interleaved half circles in 2-D; an MLP learns a curved boundary.",
        "mlp",
        (
            Param("n_samples", 1000, low=20, high=100_000, integer=True),
            Param("noise", 0.2, low=0.0, high=2.0),
            *_COMMON,
        ),
    ),
    TaskInfo(
        "circles",
        "Circles",
        "A circle inside a ring in 2-D; the boundary must close on itself.",
        "mlp",
        (
            Param("n_samples", 1000, low=20, high=100_000, integer=True),
            Param("noise", 0.1, low=0.0, high=2.0),
            Param("factor", 0.5, low=0.05, high=0.95, help="inner radius / outer radius"),
            *_COMMON,
        ),
    ),
    TaskInfo(
        "spirals",
        "Spirals",
        "Interleaved spiral arms in 2-D, the hardest of the three for a small MLP.",
        "mlp",
        (
            Param("n_samples", 1200, low=20, high=100_000, integer=True),
            Param("noise", 0.05, low=0.0, high=1.0),
            Param("classes", 3, low=2, high=8, integer=True),
            Param("turns", 1.0, low=0.25, high=4.0, help="turns of each arm"),
            *_COMMON,
        ),
    ),
    TaskInfo(
        "digits",
        "Digits 8×8",
        "scikit-learn's 1,797 hand-written 8×8 digits, ten classes, a small residual CNN.",
        "cnn",
        _COMMON,
    ),
    TaskInfo(
        "modular",
        "Modular arithmetic",
        "Predict c = a ∘ b mod p from the tokens 'a ∘ b =' with a tiny causal transformer.",
        "transformer",
        (
            Param("modulus", 23, low=2, high=97, integer=True, help="p; the pool is all p² pairs"),
            Param("operation", "add", choices=("add", "sub", "mul")),
            Param(
                "val_fraction", 0.5, low=0.05, high=0.9, help="fraction of the pairs held out for validation"
            ),
            *_COMMON[1:],
        ),
    ),
)

_REGISTRY: dict[str, TaskInfo] = {info.name: info for info in _INFOS}
TASK_NAMES: tuple[str, ...] = tuple(_REGISTRY)


def task_names() -> list[str]:
    """Registered task names, in display order."""
    return list(_REGISTRY)


def get_task_info(name: str) -> TaskInfo:
    """The record for ``name``; ``ValueError`` naming it when unknown."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise invalid("task", name, f"one of {', '.join(_REGISTRY)}") from None


@dataclass(frozen=True, eq=False)
class Task:
    """A generated data set, split and ready for training.

    Attributes:
        name: task name.
        params: the resolved task parameters (plain JSON values).
        x_train, y_train: training inputs and (possibly noised) labels.
        x_val, y_val: validation inputs and clean labels.
        hq_index: indices into the training set of the clean high-quality subset.
        noisy: bool mask over the training set, True where the label was replaced.
        num_classes: number of classes (the model's output width).
        vocab_size: token vocabulary (sequence tasks), else None.
        bounds: (x_min, x_max, y_min, y_max) of the plotting window for 2-D tasks, else None.
    """

    name: str
    params: Mapping[str, Any]
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    hq_index: torch.Tensor
    noisy: torch.Tensor
    num_classes: int
    vocab_size: int | None = None
    bounds: tuple[float, float, float, float] | None = None

    @property
    def x_hq(self) -> torch.Tensor:
        return self.x_train[self.hq_index]

    @property
    def y_hq(self) -> torch.Tensor:
        return self.y_train[self.hq_index]

    @property
    def info(self) -> TaskInfo:
        return _REGISTRY[self.name]

    @property
    def is_2d(self) -> bool:
        return self.bounds is not None

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    @property
    def n_train(self) -> int:
        return int(self.x_train.shape[0])

    def source(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Training inputs and labels of a data source: "main" (all) or "hq" (clean subset)."""
        if name == "main":
            return self.x_train, self.y_train
        if name == "hq":
            return self.x_hq, self.y_hq
        raise ValueError(f"Invalid data source: {name!r} (must be one of {', '.join(DATA_SOURCES)})")

    def to(self, device: torch.device | str) -> Task:
        """A copy with every tensor on ``device``."""
        moved = {
            k: getattr(self, k).to(device)
            for k in ("x_train", "y_train", "x_val", "y_val", "hq_index", "noisy")
        }
        return replace(self, **moved)

    def grid(self, resolution: int = 60) -> tuple[np.ndarray, np.ndarray, torch.Tensor]:
        """For 2-D tasks: axis ticks ``xs``, ``ys`` and the (resolution², 2) points, row-major in y."""
        if self.bounds is None:
            raise ValueError(f"Invalid task for a decision boundary: {self.name!r} (not a 2-D task)")
        x0, x1, y0, y1 = self.bounds
        xs = np.linspace(x0, x1, resolution, dtype=np.float32)
        ys = np.linspace(y0, y1, resolution, dtype=np.float32)
        gx, gy = np.meshgrid(xs, ys)
        points = torch.from_numpy(np.stack([gx.ravel(), gy.ravel()], axis=1))
        return xs, ys, points


def make_task(name: str, *, seed: int = 0, **params: Any) -> Task:
    """Generate task ``name`` with ``seed``; ``params`` override :attr:`TaskInfo.defaults`.

    Raises ``ValueError`` naming an unknown task or an invalid parameter.
    """
    info = get_task_info(name)
    p = info.resolve(params)
    rng = np.random.default_rng(seed)
    vocab_size = None
    if name == "moons":
        from sklearn.datasets import make_moons

        x, y = make_moons(p["n_samples"], noise=p["noise"], random_state=_sk_seed(rng))
    elif name == "circles":
        from sklearn.datasets import make_circles

        x, y = make_circles(p["n_samples"], noise=p["noise"], factor=p["factor"], random_state=_sk_seed(rng))
    elif name == "spirals":
        x, y = _spirals(rng, p["n_samples"], p["classes"], p["turns"], p["noise"])
    elif name == "digits":
        from sklearn.datasets import load_digits

        digits = load_digits()
        x = (digits.images / 16.0).reshape(-1, 1, 8, 8)
        y = digits.target
    else:  # modular
        x, y = _modular(p["modulus"], p["operation"])
        vocab_size = p["modulus"] + 2  # residues, the operator token, "="
    num_classes = int(y.max()) + 1 if name != "modular" else p["modulus"]

    order = rng.permutation(len(y))
    n_val = max(1, round(p["val_fraction"] * len(y)))
    if len(y) - n_val < 2:
        raise ValueError(
            f"Invalid val_fraction: {p['val_fraction']!r} (leaves fewer than 2 training examples)"
        )
    val, train = order[:n_val], order[n_val:]
    x_train, y_train = x[train], y[train].copy()
    n_train = len(train)

    # The HQ subset and the noised labels are disjoint draws from the training set.
    picks = rng.permutation(n_train)
    n_hq = round(p["hq_fraction"] * n_train)
    n_noisy = round(p["label_noise"] * n_train)
    hq_index = np.sort(picks[:n_hq])
    noisy_index = picks[n_hq : n_hq + n_noisy]
    # a uniformly random *other* class: add 1..C-1 modulo C
    shift = rng.integers(1, num_classes, size=len(noisy_index))
    y_train[noisy_index] = (y_train[noisy_index] + shift) % num_classes
    noisy = np.zeros(n_train, dtype=bool)
    noisy[noisy_index] = True

    x_dtype = torch.long if name == "modular" else torch.float32
    bounds = _bounds(x) if x.ndim == 2 and name != "modular" else None
    return Task(
        name=name,
        params=MappingProxyType(p),
        x_train=torch.as_tensor(x_train, dtype=x_dtype),
        y_train=torch.as_tensor(y_train, dtype=torch.long),
        x_val=torch.as_tensor(x[val], dtype=x_dtype),
        y_val=torch.as_tensor(y[val], dtype=torch.long),
        hq_index=torch.as_tensor(hq_index, dtype=torch.long),
        noisy=torch.as_tensor(noisy),
        num_classes=num_classes,
        vocab_size=vocab_size,
        bounds=bounds,
    )


def _sk_seed(rng: np.random.Generator) -> int:
    return int(rng.integers(0, 2**31 - 1))


def _spirals(
    rng: np.random.Generator, n: int, classes: int, turns: float, noise: float
) -> tuple[np.ndarray, np.ndarray]:
    """``classes`` arms r = t, angle = 2π·turns·t + 2πk/classes, t ∈ [0.05, 1], plus N(0, noise²)."""
    y = np.arange(n) % classes
    t = 0.05 + 0.95 * rng.random(n)
    angle = 2 * np.pi * turns * t + 2 * np.pi * y / classes
    x = np.stack([t * np.cos(angle), t * np.sin(angle)], axis=1)
    x += noise * rng.standard_normal(x.shape)
    return x, y


_OPERATIONS = {"add": np.add, "sub": np.subtract, "mul": np.multiply}


def _modular(p: int, operation: str) -> tuple[np.ndarray, np.ndarray]:
    """Every pair: tokens [a, OP, b, EQ] with OP = p, EQ = p + 1; label (a ∘ b) mod p."""
    a, b = np.meshgrid(np.arange(p), np.arange(p), indexing="ij")
    a, b = a.ravel(), b.ravel()
    x = np.stack([a, np.full_like(a, p), b, np.full_like(a, p + 1)], axis=1)
    y = np.mod(_OPERATIONS[operation](a, b), p)
    return x, y


def _bounds(x: np.ndarray, margin: float = 0.15) -> tuple[float, float, float, float]:
    lo, hi = x.min(axis=0), x.max(axis=0)
    pad = margin * (hi - lo)
    return (float(lo[0] - pad[0]), float(hi[0] + pad[0]), float(lo[1] - pad[1]), float(hi[1] + pad[1]))
