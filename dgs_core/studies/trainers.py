"""Several training runs as one study: :class:`TrainerStudy`, the one orchestrator of trainers.

The large-batch question (:mod:`~dgs_core.studies.large_batch`) and the Annealing lab's runs
(:mod:`~dgs_core.studies.annealing`) are TrainerStudies over their own configs.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator, Mapping
from typing import Any

from dgs_core.params import invalid
from dgs_core.schedules import ReductionEvent
from dgs_core.studies.protocol import Stop, StudyEvent
from dgs_core.training.config import TrainConfig
from dgs_core.training.results import ProgressEvent, RunResult
from dgs_core.training.trainer import Trainer


class TrainerStudy:
    """One :class:`~dgs_core.training.Trainer` per config, trained round-robin (the Study protocol).

    A turn trains one run up to its next evaluation (``eval_every`` steps), then the next run
    takes its turn, so every run's curves grow together. A run whose trainer has finished (done,
    diverged, or ended by its annealing plan) takes no more turns. Trainers are built on their
    run's first turn. Interleaving never changes the numbers: each trainer has its own data
    order, initialisation and state, and a run trained in turns equals the same run trained in
    one go. Between turns a run's optimizers stay "running"; a stop request ends every run
    "stopped" (:meth:`run` continues them).

    >>> config = TrainConfig(optimizers=["sgd"], steps=4, eval_every=2, diag_every=0,
    ...                      task_params={"n_samples": 100}, device="cpu")
    >>> study = TrainerStudy({"a": config, "b": config.replace(seed=1)})
    >>> [(e.run, e.event.step, e.event.finished, e.done) for e in study.run()]
    [('a', 2, False, 2), ('b', 2, False, 4), ('a', 4, True, 6), ('b', 4, True, 8)]
    >>> study.progress(), study.complete
    ((8, 8), True)
    """

    def __init__(self, configs: Mapping[Hashable, TrainConfig]) -> None:
        if not isinstance(configs, Mapping) or not configs:
            raise ValueError(f"Invalid configs: {configs!r} (must map names to TrainConfigs)")
        for name, config in configs.items():
            if not isinstance(config, TrainConfig):
                raise invalid(f"config {name!r}", config, "a TrainConfig")
        self.configs: dict[Hashable, TrainConfig] = dict(configs)
        self.trainers: dict[Hashable, Trainer] = {}

    def _settled(self, name: Hashable) -> bool:
        """Nothing left to train in run ``name``."""
        trainer = self.trainers.get(name)
        return trainer is not None and trainer.complete

    @property
    def complete(self) -> bool:
        """Every run has finished (none merely stopped or not yet started)."""
        return all(self._settled(name) for name in self.configs)

    def progress(self) -> tuple[int, int]:
        """(steps done, steps planned) over all runs; a run that ended before its budget
        (its plan stopped it, or every optimizer diverged) counts as done."""
        total = sum(c.steps for c in self.configs.values())
        done = 0
        for name, config in self.configs.items():
            trainer = self.trainers.get(name)
            if trainer is not None:
                done += config.steps if trainer.complete else trainer.step
        return done, total

    def run(self, stop: Stop = None) -> Iterator[StudyEvent]:
        """Train every unfinished run in turns, yielding each run's progress events; see the class
        docstring. Each run ends with its ``finished`` event."""
        should_stop = getattr(stop, "is_set", stop)
        pending = [name for name in self.configs if not self._settled(name)]
        running: dict[Hashable, Iterator[ProgressEvent]] = {}
        try:
            while pending:
                for name in list(pending):
                    if name not in running:
                        if should_stop is not None and should_stop():
                            pending.remove(name)  # never started: nothing to keep
                            continue
                        if name not in self.trainers:
                            self.trainers[name] = Trainer(self.configs[name])
                        running[name] = self.trainers[name].run(stop)
                    event = next(running[name], None)
                    if event is None:
                        pending.remove(name)
                        continue
                    yield StudyEvent(name, event, *self.progress())
        finally:  # also when the caller closes this generator: each trainer marks what it kept
            for events in running.values():
                events.close()

    # -- results ---------------------------------------------------------------------------

    @property
    def results(self) -> dict[Hashable, RunResult]:
        """Per run, its single optimizer's result (runs with one optimizer, as the two-phase
        variants); see :meth:`all_results` for runs with several."""
        return {
            name: next(iter(trainer.results.values()))
            for name, trainer in list(self.trainers.items())
            if len(trainer.results) == 1
        }

    def all_results(self, name: Hashable) -> dict[str, RunResult]:
        """Every optimizer's result of run ``name`` (empty before its first turn)."""
        trainer = self.trainers.get(name)
        return {} if trainer is None else trainer.results

    def reductions(self, name: Hashable) -> list[ReductionEvent]:
        """The plateau cuts of run ``name``'s first optimizer (``step``: the validation's
        0-based training step; the new lr applies from metrics row ``step + 2`` on)."""
        trainer = self.trainers.get(name)
        if trainer is None:
            return []
        controller = next(iter(trainer.lanes.values())).controller
        return [] if controller is None else list(controller.reductions)

    def record(self) -> dict[str, Any]:
        """Plain JSON: per run its config (annealing plan included) and, per optimizer, the
        annealing controller's state (plan, validations, phase spans and end reasons)."""
        runs = {}
        for name, config in self.configs.items():
            trainer = self.trainers.get(name)
            lanes = {}
            if trainer is not None:
                for label, lane in trainer.lanes.items():
                    controller = lane.controller
                    cuts = [] if controller is None else controller.reductions
                    lanes[label] = {
                        "status": lane.result.status,
                        "steps": lane.result.steps_done,
                        "annealing": None if controller is None else controller.state_dict(),
                        "reductions": [e.to_dict() for e in cuts],
                    }
            runs[str(name)] = {"config": config.to_dict(), "lanes": lanes}
        return {"runs": runs}
