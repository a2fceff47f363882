"""Lessons: guided sequences of steps through the labs, written as data a teacher can edit.

A lesson is one Markdown file in ``assets/lessons/`` (``01-learning-rate.md``…). It opens with
a header and then holds its steps; every header is TOML between ``+++`` lines::

    +++
    title = "Gradient descent and the learning rate"
    summary = "Too small, right, too large: what one number does to a descent."
    +++

    +++ step
    title = "A learning rate too small"
    lab = "surface"                     # surface | training | annealing | study
    figure = "panels"                   # what the step draws (see FIGURES)
    controls = ["sgd.lr"]               # the one or two controls the step offers
    try = "Raise the learning rate ten times and press Run."
    [config]                            # the lab's own configuration schema
    surface = "quadratic"
    optimizers = ["sgd"]
    [config.hparams.sgd]
    lr = 0.0002
    [[checks]]                          # what the prose claims, checked by a test
    optimizer = "sgd"
    metric = "final_gap"
    above = 0.1
    +++
    The prose of the step, Markdown with $math$.

Configurations use each lab's one schema (``SurfaceConfig``, ``TrainConfig``, the Annealing
lab's curves and ``TwoPhaseSettings``, ``StudySpec``), so a step's "open in the lab" link
carries exactly its state. Steps whose runs take longer than a page should wait
(``prepared = true``) ship as small bundles in ``assets/lessons/prepared/``, made by
``python -m dgs_core lessons --rebuild``; a test checks they were made by the current configs.

A malformed lesson raises :class:`LessonError` naming the file, the step and the field;
:func:`load_lessons` keeps the others and reports it. ``$DGS_LAB_LESSONS_DIR`` points the Lessons
page at another folder of lessons (:func:`lessons_dir`).

A step's controls are live on the Lessons page for Surface-lab steps (:func:`control_start`,
:func:`with_controls`); :func:`lab_link` is its "open in the lab" link, with the step's exact
state.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dgs_core.params import Param, check_keys

LESSONS_DIR = Path(__file__).resolve().parents[1] / "assets" / "lessons"
LESSONS_DIR_ENV = "DGS_LAB_LESSONS_DIR"
PREPARED = "prepared"
LABS = ("surface", "training", "annealing", "study")
FIGURES: Mapping[str, tuple[str, ...]] = {
    "surface": ("panels", "overlay", "loss", "scaling", "basin", "sensitivity", "tuning"),
    "training": ("loss", "accuracy", "lr", "batch", "importance", "scaling", "histogram", "boundary"),
    "annealing": ("schedules", "two_phase", "effective_lr"),
    "study": ("sensitivity", "seed_bands"),
}
SURFACE_METRICS = (
    "final_gap",
    "steps_to_tolerance",
    "overshoot_fraction",
    "oscillation_fraction",
    "diverged_at",
)
TRAINING_METRICS = (
    "val_loss",
    "val_metric",
    "train_loss",
    "train_metric",
    "batch_size",
    "batch_grown_at",
    "diverged_at",
)
_STEP_KEYS = ("title", "lab", "figure", "controls", "try", "config", "checks", "prepared")
_CHECK_KEYS = ("optimizer", "metric", "above", "below", "equals", "more_than", "less_than")
_MAX_STEPS = 40


class LessonError(ValueError):
    """A lesson file that cannot be used; the message names the file, the step and the field."""


@dataclass(frozen=True)
class Check:
    """A claim of a step's prose, as numbers: ``optimizer``'s ``metric`` is above / below /
    equal to a value, or more / less than another optimizer's."""

    optimizer: str
    metric: str
    above: float | None = None
    below: float | None = None
    equals: float | None = None
    more_than: str | None = None
    less_than: str | None = None

    def failures(self, values: Mapping[str, Mapping[str, float]]) -> list[str]:
        """What does not hold, given ``{optimizer: {metric: value}}`` (empty: the claim holds)."""
        mine = values[self.optimizer][self.metric]
        out = []
        if self.above is not None and not mine > self.above:
            out.append(f"{self.optimizer} {self.metric} = {mine:.4g}, not above {self.above:g}")
        if self.below is not None and not mine < self.below:
            out.append(f"{self.optimizer} {self.metric} = {mine:.4g}, not below {self.below:g}")
        if self.equals is not None and not math.isclose(mine, self.equals, rel_tol=1e-9, abs_tol=1e-12):
            out.append(f"{self.optimizer} {self.metric} = {mine:.4g}, not {self.equals:g}")
        for other, sign, word in ((self.more_than, 1, "more"), (self.less_than, -1, "less")):
            if other is not None and not sign * (mine - values[other][self.metric]) > 0:
                theirs = values[other][self.metric]
                out.append(
                    f"{self.optimizer} {self.metric} = {mine:.4g} is not {word} than {other}'s {theirs:.4g}"
                )
        return out


@dataclass(frozen=True)
class Step:
    """One step of a lesson (see the module docstring for the fields)."""

    lesson: str
    index: int
    title: str
    lab: str
    figure: str
    body: str
    config: Mapping[str, Any]
    controls: tuple[str, ...] = ()
    try_this: str = ""
    checks: tuple[Check, ...] = ()
    prepared: bool = False

    @property
    def prepared_name(self) -> str:
        """The file name of the step's prepared bundle in ``assets/lessons/prepared/``: named by
        a hash of the step's whole configuration, so steps with the same run share one bundle and
        a changed configuration needs a new one."""
        return f"{self.lesson}-{config_hash(self.lab_config())}.zip"

    def lab_config(self) -> Any:
        """The step's configuration in its lab's schema (validated)."""
        return _schema(self.lab, self.config)


@dataclass(frozen=True)
class Lesson:
    """A lesson: its file's stem as id ("01-learning-rate"), title, summary and steps."""

    id: str
    title: str
    summary: str
    steps: tuple[Step, ...] = field(default_factory=tuple)


def config_hash(config: Any) -> str:
    """12 hex digits of the SHA-256 of a configuration's plain JSON (``to_dict()``)."""
    text = json.dumps(config.to_dict(), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _schema(lab: str, config: Mapping[str, Any]) -> Any:
    if lab == "surface":
        from dgs_core.surfaces.config import SurfaceConfig

        return SurfaceConfig.from_dict(config)
    if lab == "training":
        from dgs_core.training.config import TrainConfig

        return TrainConfig.from_dict(config)
    if lab == "study":
        from dgs_core.studies.sweep import StudySpec

        return StudySpec.from_dict(config)
    # annealing: either the composer's curves or the two-phase demo's settings
    check_keys(config, ("curves", "run_steps", "two_phase"), "annealing config")
    if "two_phase" in config:
        from dgs_core.studies.annealing import TwoPhaseSettings

        return TwoPhaseSettings(**config["two_phase"])
    from dgs_core.schedules.curves import CurveSpec, check_run_steps

    run_steps = check_run_steps(config.get("run_steps", 300))
    curves = [CurveSpec(**c) for c in config.get("curves", ())]
    if not curves:
        raise ValueError("Invalid curves: [] (an annealing step draws at least one curve)")
    for curve in curves:
        curve.check_run(run_steps)
    return curves, run_steps


def _blocks(text: str, where: str) -> list[tuple[str, str, str]]:
    """(kind, header TOML, body) per block: the lesson header ("") and each step ("step")."""
    lines = text.splitlines()
    blocks: list[tuple[str, list[str], list[str]]] = []
    i = 0
    while i < len(lines):
        line = lines[i].strip()
        if line in ("+++", "+++ step"):
            kind = "step" if line == "+++ step" else ""
            end = next((j for j in range(i + 1, len(lines)) if lines[j].strip() == "+++"), None)
            if end is None:
                raise LessonError(f"{where}: a header opened on line {i + 1} is never closed with +++")
            blocks.append((kind, lines[i + 1 : end], []))
            i = end + 1
            continue
        if not blocks:
            if line:
                raise LessonError(f"{where}: text before the lesson's +++ header (line {i + 1})")
        else:
            blocks[-1][2].append(lines[i])
        i += 1
    return [(kind, "\n".join(header), "\n".join(body).strip()) for kind, header, body in blocks]


def parse_lesson(path: Path) -> Lesson:
    """The lesson in ``path``; :class:`LessonError` naming the file, step and field."""
    where = path.name
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise LessonError(f"{where}: cannot be read ({exc})") from None
    blocks = _blocks(text, where)
    if not blocks or blocks[0][0] != "":
        raise LessonError(f"{where}: the file must open with a +++ lesson header")
    header = _toml(blocks[0][1], where)
    try:
        check_keys(header, ("title", "summary"), "lesson header")
        title = _text(header, "title", where)
        summary = _text(header, "summary", where, required=False)
    except ValueError as exc:
        raise LessonError(f"{where}: {exc}") from None
    steps = []
    for index, (kind, raw, body) in enumerate(blocks[1:]):
        if kind != "step":
            raise LessonError(f"{where}: block {index + 2} must be a '+++ step' header")
        steps.append(_step(path.stem, index, _toml(raw, f"{where}, step {index + 1}"), body, where))
    if not steps or len(steps) > _MAX_STEPS:
        raise LessonError(f"{where}: a lesson has 1 to {_MAX_STEPS} steps (this one has {len(steps)})")
    return Lesson(id=path.stem, title=title, summary=summary, steps=tuple(steps))


def _toml(text: str, where: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise LessonError(f"{where}: the header is not valid TOML ({exc})") from None


def _text(data: Mapping[str, Any], key: str, where: str, *, required: bool = True) -> str:
    value = data.get(key, "")
    if not isinstance(value, str) or (required and not value.strip()):
        raise LessonError(
            f"{where}: Invalid {key}: {value!r} (must be {'non-empty ' if required else ''}text)"
        )
    return value.strip()


def _step(lesson: str, index: int, data: dict[str, Any], body: str, where: str) -> Step:
    at = f"{where}, step {index + 1}"
    try:
        check_keys(data, _STEP_KEYS, "step")
        lab = Param("lab", "surface", choices=LABS).validate(data.get("lab"))
        figure = Param("figure", FIGURES[lab][0], choices=FIGURES[lab]).validate(
            data.get("figure", FIGURES[lab][0])
        )
        config = data.get("config", {})
        if not isinstance(config, Mapping):
            raise ValueError(f"Invalid config: {config!r} (must be a table)")
        controls = data.get("controls", [])
        if (
            not isinstance(controls, list)
            or not all(isinstance(c, str) for c in controls)
            or len(controls) > 3
        ):
            raise ValueError(f"Invalid controls: {controls!r} (must be a list of at most 3 names)")
        prepared = Param("prepared", False).validate(data.get("prepared", False))
        checks = tuple(_check(c, lab) for c in data.get("checks", []))
        step = Step(
            lesson=lesson,
            index=index,
            title=_text(data, "title", at),
            lab=lab,
            figure=figure,
            body=body,
            config=config,
            controls=tuple(controls),
            try_this=_text(data, "try", at, required=False),
            checks=checks,
            prepared=prepared,
        )
        step.lab_config()  # the lab's own validation
        for name in step.controls:
            _check_control(step, name)
        return step
    except LessonError:
        raise
    except (ValueError, TypeError) as exc:
        raise LessonError(f"{at}: {exc}") from None


def _check(data: Any, lab: str) -> Check:
    if not isinstance(data, Mapping):
        raise ValueError(f"Invalid checks: {data!r} (each must be a table)")
    check_keys(data, _CHECK_KEYS, "check")
    metrics = SURFACE_METRICS if lab == "surface" else TRAINING_METRICS
    Param("metric", metrics[0], choices=metrics).validate(data.get("metric"))
    if lab not in ("surface", "training"):
        raise ValueError(f"Invalid checks: a {lab} step has no checkable metrics")
    return Check(**data)


def _check_control(step: Step, name: str) -> None:
    """A control names an optimizer hyperparameter ("sgd.lr") or a field of the lab's config."""
    from dgs_core.optim import registry

    optimizer, _, hparam = name.partition(".")
    if hparam:
        info = registry.get(optimizer)
        if hparam not in info.hyperparams.names:
            raise ValueError(f"Invalid controls: {name!r} ({optimizer} has no hyperparameter {hparam!r})")
        return
    config = step.lab_config()
    if not hasattr(config, name):
        raise ValueError(f"Invalid controls: {name!r} (not a field of the {step.lab} lab's config)")


def load_lessons(directory: Path = LESSONS_DIR) -> tuple[list[Lesson], list[str]]:
    """Every lesson in ``directory`` (by file name) and the errors of those that could not load."""
    lessons, errors = [], []
    for path in sorted(directory.glob("*.md")):
        try:
            lessons.append(parse_lesson(path))
        except LessonError as exc:
            errors.append(str(exc))
    return lessons, errors


def check_values(step: Step, values: Mapping[str, Mapping[str, float]]) -> list[str]:
    """Every claim of ``step`` that the run's ``values`` contradict."""
    return [failure for check in step.checks for failure in check.failures(values)]


def surface_values(runs: Mapping[str, Any]) -> dict[str, dict[str, float]]:
    """``{optimizer: {metric: value}}`` of Surface-lab runs (one start each)."""
    out = {}
    for name, run in runs.items():
        metrics = run.metrics()
        out[name] = {m: float(metrics[m][0]) for m in SURFACE_METRICS}
    return out


def training_values(results: Mapping[str, Any]) -> dict[str, dict[str, float]]:
    """``{label: {metric: value}}`` at each optimizer's last evaluation; ``batch_size`` the last
    step's, ``batch_grown_at`` the first step whose batch is larger than the first one (−1: never)."""
    out = {}
    for label, result in results.items():
        evaluations = result.evaluations
        last = evaluations.iloc[-1] if len(evaluations) else None
        diverged = result.status.startswith("diverged")
        out[label] = {m: math.nan if last is None else float(last[m]) for m in TRAINING_METRICS[:4]}
        steps, sizes = result.metrics["step"].to_numpy(), result.metrics["batch_size"].to_numpy()
        grown = steps[sizes > sizes[0]] if len(sizes) else steps[:0]
        out[label]["batch_size"] = float(sizes[-1]) if len(sizes) else math.nan
        out[label]["batch_grown_at"] = float(grown[0]) if len(grown) else -1.0
        out[label]["diverged_at"] = float(result.status.rsplit(" ", 1)[-1]) if diverged else -1.0
    return out


def step_runs(step: Step, directory: Path = LESSONS_DIR) -> Any:
    """The step's run: ``{name: Run}`` (surface), a ``Bundle`` (prepared), the results of a
    live training run (``{label: RunResult}``), or None for the steps that draw no run."""
    config = step.lab_config()
    if step.prepared:
        from dgs_core.runs.read import read_bundle

        return read_bundle(prepared_path(step, directory))
    if step.lab == "surface":
        return config.simulate()
    if step.lab == "training":
        from dgs_core.training.trainer import Trainer

        trainer = Trainer(config)
        list(trainer.run())
        return trainer.results
    return None


def check_step(step: Step, directory: Path = LESSONS_DIR) -> list[str]:
    """Run ``step`` and return every claim its checks make that the numbers contradict."""
    if not step.checks:
        return []
    runs = step_runs(step, directory)
    if step.lab == "surface":
        values = surface_values(runs)
    else:
        values = training_values(runs.results if hasattr(runs, "results") else runs)
    return check_values(step, values)


def prepared_path(step: Step, directory: Path = LESSONS_DIR) -> Path:
    return directory / PREPARED / step.prepared_name


def rebuild(directory: Path = LESSONS_DIR, *, only: Sequence[str] = ()) -> list[Path]:
    """Re-make every prepared bundle (``python -m dgs_core lessons --rebuild``); returns them.

    The bundles hold no figures (the Lessons page draws each step from the data; figures would
    add plotly.js to every file): a few hundred kilobytes each."""
    from dgs_core.runs.study import export_study
    from dgs_core.runs.training import export_training
    from dgs_core.studies.tuner import SweepStudy
    from dgs_core.training.trainer import Trainer

    lessons, errors = load_lessons(directory)
    if errors:
        raise LessonError("; ".join(errors))
    written = []
    (directory / PREPARED).mkdir(parents=True, exist_ok=True)
    for lesson in lessons:
        for step in lesson.steps:
            if (
                not step.prepared
                or (only and lesson.id not in only)
                or prepared_path(step, directory) in written
            ):
                continue
            config = step.lab_config()
            if step.lab == "training":
                trainer = Trainer(config)
                list(trainer.run())
                data = export_training(trainer, name=step.title)
            elif step.lab == "study":
                study = SweepStudy(config)
                list(study.run())
                data = export_study(study.result, name=step.title)
            else:
                raise LessonError(
                    f"{lesson.id}, step {step.index + 1}: only training and study steps are prepared"
                )
            path = prepared_path(step, directory)
            path.write_bytes(data)
            written.append(path)
    return written


def lessons_dir() -> Path:
    """The folder the Lessons page reads: ``$DGS_LAB_LESSONS_DIR``, else the shipped lessons."""
    return Path(os.environ.get(LESSONS_DIR_ENV) or LESSONS_DIR)


# ---------------------------------------------------------------------------------------------
# A step's controls and its link into the lab
# ---------------------------------------------------------------------------------------------

# The Surface lab's view that shows a step's figure (its loss and scaling curves sit beside the panels).
SURFACE_VIEWS = {"overlay": "overlay", "basin": "basin", "sensitivity": "sensitivity", "tuning": "tuning"}


def control_param(step: Step, name: str) -> Param:
    """The validated spec behind a control: an optimizer hyperparameter ("sgd.lr") or a field of
    the Surface lab's config ("steps")."""
    from dgs_core.optim import registry
    from dgs_core.surfaces.config import FIELDS

    optimizer, _, hparam = name.partition(".")
    if hparam:
        return registry.get(optimizer).hyperparams[hparam]
    if name not in FIELDS.names:
        raise ValueError(f"Invalid controls: {name!r} (no control for this field on the Lessons page)")
    return FIELDS[name]


def control_start(step: Step, config: Any, name: str) -> Any:
    """A control's value in the step's (Surface-lab) configuration, defaults filled in."""
    from dgs_core.optim import registry

    optimizer, _, hparam = name.partition(".")
    if not hparam:
        return getattr(config, name)
    info = registry.get(optimizer)
    return {**info.defaults, **info.surface_defaults, **config.hparams_for(optimizer)}[hparam]


def with_controls(step: Step, values: Mapping[str, Any]) -> Any:
    """The step's Surface-lab configuration with its controls set to ``values`` (validated:
    a :class:`~dgs_core.params.ParamError` names the field)."""
    if step.lab != "surface":
        raise ValueError(f"Invalid controls: a {step.lab} step's controls are set in its lab")
    data = step.lab_config().to_dict()
    for name, value in values.items():
        optimizer, _, hparam = name.partition(".")
        if hparam:
            if optimizer not in data["optimizers"]:
                raise ValueError(f"Invalid controls: {name!r} ({optimizer} is not in this step)")
            data["hparams"].setdefault(optimizer, {})[hparam] = value
        else:
            data[name] = value
    return _schema("surface", data)


@dataclass(frozen=True)
class LabLink:
    """Where "open in the lab" goes: the lab page's url path and the query string it reads."""

    page: str
    query: Mapping[str, str]


def lab_link(step: Step, config: Any = None) -> LabLink:
    """The step's lab with its exact state in the URL: the Surface lab its whole configuration,
    the Training lab a ``cfg=`` link it trains, its fair comparison a ``study=`` link whose
    settings it fills in, the Annealing lab an ``anneal=`` link of its tab and settings.
    ``config``: the step's configuration as its controls set it (default: the step's own)."""
    config = step.lab_config() if config is None else config
    if step.lab == "surface":
        from dataclasses import replace

        view = SURFACE_VIEWS.get(step.figure, "panels")
        return LabLink("surface", replace(config, view=view, step=None).to_query())
    if step.lab == "training":  # the Training lab trains a link's configuration (cfg=)
        return LabLink("training", {"cfg": config.to_link()})
    if step.lab == "study":  # the Training lab's fair comparison, its settings filled in
        return LabLink("training", {"train_mode": "fair", "study": config.to_link()})
    # the Annealing lab's whole state (tab, schedules, settings) in anneal=
    from dgs_core.studies.annealing_lab import LINK_PARAM, annealing_lab_config

    return LabLink("annealing", {LINK_PARAM: annealing_lab_config(step.figure, config).to_link()})
