"""The weights a landscape is drawn from: every optimizer's path through weight space, one
model and one task (:class:`Landscape`).

A path is what the trainer recorded (``RunResult.trajectory``: the shared initial weights at
step 0, then thinned evaluations) followed by the final weights (the model as it is now: a
stopped run may have moved on since its last evaluation). All vectors are flat, in the order of
``model.parameters()`` (:class:`ParamLayout`), float32 on the CPU.

>>> from dgs_core.training import TrainConfig, Trainer
>>> trainer = Trainer(TrainConfig(task="moons", optimizers=["sgd", "adam"], steps=20, eval_every=10,
...                               task_params={"n_samples": 200}, device="cpu"))
>>> _ = list(trainer.run())
>>> landscape = Landscape.from_trainer(trainer)
>>> landscape.labels, landscape.paths["adam"].steps
(('sgd', 'adam'), (0, 10, 20))
"""

from __future__ import annotations

import copy
import hashlib
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import torch
from torch import nn
from torch.func import functional_call
from torch.nn.functional import cross_entropy

from dgs_core.optim import registry
from dgs_core.params import ParamError, invalid
from dgs_core.training.results import RunResult
from dgs_core.training.tasks import Task

if TYPE_CHECKING:
    from dgs_core.studies.large_batch import LargeBatchStudy
    from dgs_core.training.trainer import Trainer


class TrainingBundle(Protocol):
    """What :meth:`Landscape.from_bundle` reads of a :class:`dgs_core.runs.Bundle` (the runs
    layer sits above this one: it stores landscapes, so this module does not import it)."""

    kind: str
    notes: tuple[str, ...]
    trainer: Trainer | None


SPLITS = ("train", "val")  # the task's training set (as trained on) and its validation set


@dataclass(frozen=True)
class ParamLayout:
    """Where each parameter tensor sits in a flat weight vector (``model.parameters()`` order)."""

    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]

    @classmethod
    def of(cls, model: nn.Module) -> ParamLayout:
        named = list(model.named_parameters())
        return cls(tuple(n for n, _ in named), tuple(tuple(p.shape) for _, p in named))

    @property
    def sizes(self) -> list[int]:
        return [math.prod(shape) for shape in self.shapes]

    @property
    def numel(self) -> int:
        return sum(self.sizes)

    def unflatten(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """``{name: view}`` of a flat vector ``(..., numel)``: each ``(..., *shape)``."""
        lead = tuple(flat.shape[:-1])
        parts = flat.split(self.sizes, dim=-1)
        return {n: p.reshape(*lead, *s) for n, p, s in zip(self.names, parts, self.shapes, strict=True)}

    def flatten(self, tensors: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The inverse of :meth:`unflatten` for one vector."""
        return torch.cat([tensors[n].reshape(-1) for n in self.names])


def flat_parameters(model: nn.Module) -> torch.Tensor:
    """All of ``model``'s parameters as one new float32 CPU vector."""
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()]).to("cpu", torch.float32)


@dataclass(frozen=True, eq=False)
class WeightPath:
    """One optimizer's weights over its run.

    Attributes:
        label, name, status: the optimizer's label, registry name and how its run ended.
        steps: the steps of the rows of ``weights``, increasing; the last is the final weights'.
        weights: ``(len(steps), numel)`` float32 on the CPU.
        source: "trajectory" (recorded by the trainer), "checkpoints" (a bundle older than
            format 3: the 2-D tasks' checkpoints) or "final" (nothing recorded: the final
            weights alone).
    """

    label: str
    name: str
    status: str
    steps: tuple[int, ...]
    weights: torch.Tensor
    source: str = "trajectory"

    @property
    def final(self) -> torch.Tensor:
        return self.weights[-1]

    @property
    def initial(self) -> torch.Tensor | None:
        """The weights at step 0, when they were recorded."""
        return self.weights[0] if self.steps[0] == 0 else None

    @classmethod
    def of(cls, label: str, result: RunResult) -> WeightPath:
        """A run's path: its trajectory (or, from older bundles, its checkpoints), then its
        current weights when they are finite and newer (a diverged run ends at its last finite
        snapshot). An optimizer evaluated elsewhere than it trains (Schedule-Free AdamW) ends at
        its last evaluation: its snapshots are taken at the evaluation point x, its current
        weights are y, where it takes gradients (docs/algorithms.md#schedule_free)."""
        snapshots, source = dict(result.trajectory), "trajectory"
        if not snapshots and result.checkpoints:
            source = "checkpoints"
            names = [n for n, _ in result.model.named_parameters()] if result.model is not None else []
            snapshots = {
                s: torch.cat([w[n].reshape(-1) for n in names]).float() for s, w in result.checkpoints.items()
            }
        # the live optimizer, or (a run read from a bundle) its class
        optimizer = result.optimizer if result.optimizer is not None else registry.get(result.name).cls
        if result.model is not None and not registry.evaluates_elsewhere(optimizer):
            final = flat_parameters(result.model)
            step = result.steps_done
            if bool(final.isfinite().all()) and (not snapshots or step > max(snapshots)):
                snapshots[step] = final
                if source == "trajectory" and len(snapshots) == 1:
                    source = "final"
        if not snapshots:
            raise invalid("runs", label, "a run with recorded weights (it has none: it never started?)")
        steps = tuple(sorted(snapshots))
        weights = torch.stack([snapshots[s].to("cpu", torch.float32) for s in steps])
        return cls(label, result.name, result.status, steps, weights, source)


class Landscape:
    """Several optimizers' weight paths over one model and one task, read-only.

    Every path with recorded initial weights must start from the same ones (the trainer gives
    each optimizer a copy of one initialisation): a ``ParamError`` naming ``runs`` otherwise.

    Args:
        paths: ``{label: WeightPath}``, in display order.
        model: a module of the runs' architecture (copied; its own weights are never used).
        task: the data (training and validation sets) the losses are computed on.
        notes: what the landscape had to make do with (older bundles).
    """

    def __init__(
        self, paths: Mapping[str, WeightPath], model: nn.Module, task: Task, *, notes: Sequence[str] = ()
    ) -> None:
        if not paths:
            raise invalid("runs", dict(paths), "at least one optimizer's run")
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.layout = ParamLayout.of(self.model)
        self.task = task
        self.device = next(self.model.parameters()).device
        self.paths: dict[str, WeightPath] = dict(paths)
        for label, path in self.paths.items():
            if path.weights.ndim != 2 or path.weights.shape[1] != self.layout.numel:
                raise invalid(
                    "runs",
                    label,
                    f"weights of the model's {self.layout.numel} parameters (a different model)",
                )
        starts = {label: p.initial for label, p in self.paths.items() if p.initial is not None}
        if starts:
            first, reference = next(iter(starts.items()))
            for label, start in starts.items():
                if not torch.equal(start, reference):
                    gap = float((start - reference).norm())
                    raise ParamError(
                        "runs",
                        list(self.paths),
                        f"Invalid runs: {list(self.paths)} (must start from the same initial weights: "
                        f"{label!r} starts {gap:.3g} away from {first!r})",
                    )
        self.initial: torch.Tensor | None = next(iter(starts.values())) if starts else None
        self.notes = tuple(notes) + tuple(
            f"{label}: no recorded trajectory (an older bundle): its path is "
            + (
                "its checkpoints and final weights"
                if p.source == "checkpoints"
                else "its final weights alone"
            )
            for label, p in self.paths.items()
            if p.source != "trajectory"
        )
        self._fingerprint: str | None = None
        self._probe: nn.Module | None = None
        self._activations: int | None = None

    # -- construction from runs --------------------------------------------------------------

    @classmethod
    def from_results(
        cls, results: Mapping[str, RunResult], task: Task, *, notes: Sequence[str] = ()
    ) -> Landscape:
        """From ``{label: RunResult}`` (each with its live or loaded ``model``) and their task."""
        results = dict(results)
        if not results:
            raise invalid("runs", results, "at least one optimizer's run")
        models = [r.model for r in results.values() if r.model is not None]
        if not models:
            raise invalid("runs", list(results), "runs with their models")
        paths = {label: WeightPath.of(label, r) for label, r in results.items()}
        return cls(paths, models[0], task, notes=notes)

    @classmethod
    def from_trainer(cls, trainer: Trainer, labels: Sequence[str] | None = None) -> Landscape:
        """A finished, stopped or running trainer's optimizers (all, or ``labels``)."""
        results = trainer.results
        return cls.from_results(_pick(results, labels), trainer.task)

    @classmethod
    def from_bundle(cls, bundle: TrainingBundle, labels: Sequence[str] | None = None) -> Landscape:
        """A training bundle read back (:func:`dgs_core.runs.read_bundle`); its notes (e.g. an
        older format's) become the landscape's."""
        if bundle.kind != "training" or bundle.trainer is None:
            raise invalid("bundle", bundle.kind, "a training bundle")
        trainer = bundle.trainer
        return cls.from_results(_pick(trainer.results, labels), trainer.task, notes=bundle.notes)

    @classmethod
    def from_large_batch(cls, study: LargeBatchStudy, labels: Sequence[str] | None = None) -> Landscape:
        """Both runs of a large-batch study: each optimizer at the small and the large batch,
        labelled ``"<label> · batch <b>"`` (both runs use one config but for the batch, so they
        share the task and the initial weights)."""
        if not study.trainers:
            raise invalid("study", "not run", "a study that has trained (run it first)")
        trainers = [study.trainers[b] for b in sorted(study.trainers)]
        task = trainers[0].task
        for trainer in trainers[1:]:
            if not _same_data(trainer.task, task):
                raise invalid("task", trainer.config.task, "the same data in every run of the study")
        results = {}
        for batch, trainer in sorted(study.trainers.items()):
            for label, result in _pick(trainer.results, labels).items():
                results[f"{label} · batch {batch}"] = result
        return cls.from_results(results, task)

    # -- what it holds -----------------------------------------------------------------------

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(self.paths)

    @property
    def numel(self) -> int:
        return self.layout.numel

    def path(self, label: Any, field: str = "label") -> WeightPath:
        """The path of ``label``; a ``ParamError`` naming ``field`` when there is none."""
        if not isinstance(label, str) or label not in self.paths:
            raise invalid(field, label, f"one of {', '.join(map(repr, self.paths))}")
        return self.paths[label]

    def data(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs and labels of ``split``: "train" (the training set, noisy labels included, as
        trained on and as the trainer's train_loss) or "val"."""
        if split == "train":
            return self.task.x_train, self.task.y_train
        if split == "val":
            return self.task.x_val, self.task.y_val
        raise invalid("splits", split, f"one of {', '.join(SPLITS)}")

    @property
    def fingerprint(self) -> str:
        """SHA-256 of everything a landscape's numbers depend on: the architecture (the module's
        repr and parameter layout), every path (labels, steps, weights' bytes) and the task's
        data. Computed once: a landscape copies its weights and never changes."""
        if self._fingerprint is None:
            digest = hashlib.sha256()
            digest.update(repr(self.model).encode())
            digest.update(repr((self.layout.names, self.layout.shapes)).encode())
            for label, path in self.paths.items():
                digest.update(repr((label, path.name, path.steps)).encode())
                digest.update(path.weights.numpy().tobytes())
            for tensor in (self.task.x_train, self.task.y_train, self.task.x_val, self.task.y_val):
                digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
            self._fingerprint = digest.hexdigest()
        return self._fingerprint

    # -- losses --------------------------------------------------------------------------------

    def functional_loss(self, split: str) -> Callable[[torch.Tensor], torch.Tensor]:
        """``loss(flat) -> scalar``: the task's mean cross-entropy on ``split`` at the weights
        ``flat`` (through ``torch.func.functional_call``, so it can be vmapped and differentiated)."""
        x, y = self.data(split)
        model, layout = self.model, self.layout

        def loss(flat: torch.Tensor) -> torch.Tensor:
            return cross_entropy(functional_call(model, layout.unflatten(flat), (x,)), y)

        return loss

    def model_at(self, weights: torch.Tensor) -> nn.Module:
        """A copy of the model holding ``weights`` (the plain way: ``vector_to_parameters``);
        the same copy each call, so use it before asking for another."""
        if self._probe is None:
            self._probe = copy.deepcopy(self.model)
        torch.nn.utils.vector_to_parameters(weights.to(self.device, torch.float32), self._probe.parameters())
        return self._probe

    @torch.no_grad()
    def evaluate(self, weights: torch.Tensor, split: str) -> tuple[float, float]:
        """Mean cross-entropy and accuracy on ``split`` at one flat weight vector."""
        x, y = self.data(split)
        logits = self.model_at(weights)(x)
        return float(cross_entropy(logits, y)), float((logits.argmax(dim=-1) == y).float().mean())

    @property
    @torch.no_grad()
    def activations_per_example(self) -> int:
        """How many numbers the model's modules output for one example (counted once with
        forward hooks on every module, containers included): the size of one example's
        activations, for planning batched evaluations."""
        if self._activations is None:
            counted = [0]

            def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
                outputs = output if isinstance(output, tuple | list) else (output,)
                counted[0] += sum(o[0].numel() for o in outputs if isinstance(o, torch.Tensor) and o.ndim)

            handles = [m.register_forward_hook(hook) for m in self.model.modules()]
            try:
                self.model(self.task.x_val[:1])
            finally:
                for handle in handles:
                    handle.remove()
            self._activations = counted[0]
        return self._activations


def _pick(results: Mapping[str, RunResult], labels: Sequence[str] | None) -> dict[str, RunResult]:
    if labels is None:
        return dict(results)
    if isinstance(labels, str) or not all(isinstance(label, str) for label in labels):
        raise invalid("labels", labels, "a list of optimizer labels")
    for label in labels:
        if label not in results:
            raise invalid("labels", label, f"one of {', '.join(map(repr, results))}")
    return {label: results[label] for label in labels}


def _same_data(a: Task, b: Task) -> bool:
    return all(
        torch.equal(getattr(a, k).cpu(), getattr(b, k).cpu())
        for k in ("x_train", "y_train", "x_val", "y_val")
    )
