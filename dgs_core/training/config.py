"""The configuration of a training run: :class:`TrainConfig` and its optimizers (:class:`OptimizerSpec`).

One schema for the Training lab's widgets, its URL, a bundle's ``config.json`` and the CLI:
``TrainConfig.to_dict()`` / ``from_dict()`` round-trip through plain JSON, and every field is
validated on construction (a bad value raises a ``ParamError`` naming the field).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from types import MappingProxyType
from typing import Any

from dgs_core import links
from dgs_core.device import resolve_device
from dgs_core.optim import registry
from dgs_core.params import Param, ParamSet, invalid
from dgs_core.schedules import ScheduleSpec
from dgs_core.schedules.annealing import AnnealingPlan
from dgs_core.training.models import resolve_model_params
from dgs_core.training.tasks import get_task_info

BATCH_POLICIES = ("fixed", "adaptive")
DEFAULT_MAX_STEPS = 20_000


def _frozen(mapping: Mapping[str, Any] | None = None) -> Mapping[str, Any]:
    return MappingProxyType(dict(mapping or {}))


def _plain(value: Any) -> Any:
    """A JSON-ready copy: mappings → dicts, tuples → lists."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


# The fields of TrainConfig that are plain values (the others are records of their own).
FIELDS = ParamSet(
    (
        Param("batch_size", 32, low=1, high=1 << 20, integer=True, help="examples per step"),
        Param("batch_policy", "fixed", choices=BATCH_POLICIES, help="fixed, or grown by a batch-size test"),
        Param("max_batch_size", 1024, low=1, high=1 << 20, integer=True, help="cap of an adaptive batch"),
        Param("steps", 500, low=1, integer=True, help="updates per optimizer"),
        Param("seed", 0, low=0, high=2**63 - 1, integer=True, help="data, initial weights and batch order"),
        Param("eval_every", 25, low=1, integer=True, help="evaluate every this many steps"),
        Param(
            "diag_every", 25, low=0, integer=True, help="record diagnostics every this many steps (0: off)"
        ),
        Param("max_steps", DEFAULT_MAX_STEPS, low=1, integer=True, help="the cap on steps"),
    )
)


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
            raise invalid("label", self.label, "a non-empty string")

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
        raise invalid("optimizer", value, "a name or a (name, hparams) pair")

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
            raise invalid("task_params", self.task_params, "a mapping")
        info.resolve(self.task_params)
        set_(self, "task_params", _frozen(self.task_params))
        if not isinstance(self.model, Mapping):
            raise invalid("model", self.model, "a mapping")
        resolve_model_params(self.task, self.model)
        set_(self, "model", _frozen(self.model))

        if isinstance(self.optimizers, str | Mapping) or not isinstance(self.optimizers, Iterable):
            raise invalid("optimizers", self.optimizers, "a list of optimizers")
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
            raise invalid("schedule", self.schedule, "a ScheduleSpec or its dict")
        if isinstance(self.annealing, Mapping):
            set_(self, "annealing", AnnealingPlan.from_dict(self.annealing))
        if self.annealing is not None and not isinstance(self.annealing, AnnealingPlan):
            raise invalid("annealing", self.annealing, "an AnnealingPlan or its dict")
        if self.schedule is not None and self.annealing is not None:
            raise ValueError("Invalid schedule: set either a schedule or an annealing plan, not both")

        for param in FIELDS:
            set_(self, param.name, param.validate(getattr(self, param.name)))
        if self.max_batch_size < self.batch_size:
            raise FIELDS["max_batch_size"].error(self.max_batch_size, f">= batch_size = {self.batch_size}")
        if self.steps > self.max_steps:
            raise FIELDS["steps"].error(
                self.steps, f"an integer in [1, {self.max_steps}]; the cap is max_steps={self.max_steps}"
            )
        if isinstance(self.diag_keep, list | tuple):
            set_(self, "diag_keep", tuple(self.diag_keep))
        elif not isinstance(self.diag_keep, str):
            raise invalid("diag_keep", self.diag_keep, "'all', 'none' or a list of names")
        if not isinstance(self.device, str):
            raise invalid("device", self.device, "'auto', 'cpu', 'cuda', …")
        try:
            resolve_device(self.device)
        except RuntimeError:
            raise invalid("device", self.device, "'auto', 'cpu', 'cuda', …") from None

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
            raise invalid("config", data, "a mapping")
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

    def to_link(self) -> str:
        """This configuration as one URL-safe text (:func:`dgs_core.links.pack`), for a link's
        ``cfg=``; :meth:`from_link` reads it back.

        >>> config = TrainConfig(optimizers=["sgd", ("adam", {"lr": 0.01})], steps=50)
        >>> TrainConfig.from_link(config.to_link()) == config
        True
        """
        return links.pack(self.to_dict())

    @classmethod
    def from_link(cls, text: str) -> TrainConfig:
        """The configuration of a link's ``cfg=`` text, validated like any other input: a damaged,
        oversized or invalid text raises a ``ParamError`` naming ``cfg`` (or the bad field)."""
        return cls.from_dict(links.unpack(text, "cfg"))
