"""The Training lab's settings from a configuration, and its link: one way for every page.

A :class:`~dgs_core.training.config.TrainConfig` sets the lab's sidebar through
:func:`seed_controls` (its widgets read these session-state keys), whoever brings it: a link
(``?cfg=``, :meth:`TrainConfig.to_link`), the Runs page's *Open in its lab*, the fair
comparison's tuned run. :func:`publish` puts the configuration of the run just started in the
URL, so the link reopens it: :func:`from_link` reads it on a session's first visit, checked like
any other input, and the lab trains it again when the link's job is gone (another server, a
restart): the same seed gives the same numbers.

The link also keeps how the run is viewed: ``pace=`` (the seconds it is spread over, 0: as fast
as possible; the trainer's ``run(pace=…)``), ``tab=`` (the open tab) and ``step=`` (the step
scrubber's step). Each is checked like the configuration: a bad one is named in a message
and its default applies (:func:`read_view`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import streamlit as st

from app_pages.parts.training_panels import results_of
from app_pages.ui import plain
from dgs_core import jobs
from dgs_core.limits import check_training
from dgs_core.params import Param, invalid
from dgs_core.schedules import SCHEDULES
from dgs_core.training.config import TrainConfig
from dgs_core.training.trainer import PACE

LINK_PARAM = "cfg"
CONSTANT = "constant lr"  # the schedule picker's "no schedule"
TABS = {"train": "Train", "large-batch": "Large-batch question"}  # the link's tab= → the tab
TAB_KEY, STEP_KEY, PACE_KEY = "tab", "step", "pace"  # their names in the link
DEFAULT_PACE_S = 20.0  # the default run (300 steps, 3 optimizers: 1–5 s of work here) lasts ~20 s
PACED, FAST = "paced", "fast"  # the pace control's two modes
_WIDGET_PREFIXES = ("train_hp_", "train_sched_", "train_task_")
_FIELDS = {
    "train_steps": "steps",
    "train_batch": "batch_size",
    "train_policy": "batch_policy",
    "train_max_batch": "max_batch_size",
    "train_seed": "seed",
    "train_eval_every": "eval_every",
    "train_diag_every": "diag_every",
    "train_device": "device",
}


def seed_controls(config: TrainConfig) -> None:
    """The Training lab's sidebar set to ``config``: task and its parameters, model size,
    optimizers and their hyperparameters, schedule and its parameters, and the run settings."""
    state = st.session_state
    for key in [k for k in state if str(k).startswith(_WIDGET_PREFIXES)]:
        del state[key]
    state["train_task"] = config.task
    for name, value in config.task_params.items():
        state[f"train_task_{config.task}_{name}"] = value
    state["train_size"] = config.model.get("size", "small")
    state["train_optimizers"] = [spec.name for spec in config.optimizers]
    for spec in config.optimizers:
        for name, value in spec.hparams.items():
            if isinstance(value, bool | int | float | str):
                state[f"train_hp_{spec.name}_{name}"] = value
    for key, field in _FIELDS.items():
        state[key] = getattr(config, field)
    schedule = config.schedule if config.schedule is not None and config.schedule.name in SCHEDULES else None
    state["train_schedule"] = (
        schedule.name if schedule is not None else CONSTANT
    )  # a chain: not in the picker
    if schedule is not None:
        for name, value in schedule.params.items():
            is_list = isinstance(value, list | tuple)
            state[f"train_sched_{schedule.name}_{name}"] = ", ".join(map(str, value)) if is_list else value


def pace_control() -> tuple[float | None, list[str]]:
    """How the run is watched: spread over about N seconds, or as fast as possible (0)."""
    mode = st.radio(
        "Pace",
        [PACED, FAST],
        format_func=lambda m: "about N seconds" if m == PACED else "as fast as possible",
        horizontal=True,
        key="train_pace",
        help="paced: the run is spread over about N seconds so you can watch the curves grow "
        "(a run that needs longer goes as fast as it can); the numbers are the same either way",
    )
    if mode == FAST:
        return 0.0, []
    seconds = st.number_input(
        "N: the run lasts about (s)", value=DEFAULT_PACE_S, step=5.0, key="train_pace_s"
    )
    try:
        return float(PACE.validate(seconds)), []  # type: ignore[arg-type]  # a float here
    except ValueError as exc:
        st.error(plain(exc))
        return None, [str(exc)]


def session_pace() -> float:
    """The pace the sidebar's control holds (its default where it is not drawn): for a run
    started elsewhere than by Start (Continue, the fair comparison's tuned run)."""
    state = st.session_state
    if state.get("train_pace", PACED) == FAST:
        return 0.0
    try:
        return float(PACE.validate(state.get("train_pace_s", DEFAULT_PACE_S)))  # type: ignore[arg-type]  # a float here
    except ValueError:
        return DEFAULT_PACE_S


def pace_words(pace: float | None) -> str:
    """The pace for a reader: "spread over about 20 s" or "as fast as possible"."""
    return f"spread over about {pace:g} s" if pace else "as fast as possible"


def publish(config: TrainConfig, pace: float) -> None:
    """The run just started, in the URL: the link reopens (and if need be retrains) it, at its
    pace; the scrubber's step of the previous run is dropped."""
    st.query_params[LINK_PARAM] = config.to_link()
    st.query_params[PACE_KEY] = f"{pace:g}"
    st.query_params.pop(STEP_KEY, None)


def _number(name: str, text: str) -> float | int:
    """A link's number ("12" → 12, "2.5" → 2.5); ``ParamError`` naming ``name`` otherwise."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        raise invalid(name, text, "a number") from None


def read_view(query: Mapping[str, str], steps: int | None) -> tuple[dict[str, Any], list[str]]:
    """The link's ``tab``, ``step`` (at most ``steps``, the linked run's length, when known) and
    ``pace`` → ``({name: value} of those given and valid, [why each other one was not used])``.

    >>> read_view({"tab": "large-batch", "step": "12", "pace": "0"}, 300)
    ({'tab': 'large-batch', 'step': 12, 'pace': 0.0}, [])
    >>> read_view({"step": "999", "tab": "plots"}, 300)[1]  # doctest: +NORMALIZE_WHITESPACE
    ["Invalid tab: 'plots' (must be one of 'train', 'large-batch'); the Train tab is shown",
     'Invalid step: 999 (must be an integer in [1, 300]); the scrubber shows the last step']
    """
    specs = {
        TAB_KEY: (Param(TAB_KEY, "train", choices=tuple(TABS)), str, "the Train tab is shown"),
        STEP_KEY: (
            Param(STEP_KEY, 1, low=1, high=steps if steps else math.inf, integer=True),
            lambda text: _number(STEP_KEY, text),
            "the scrubber shows the last step",
        ),
        PACE_KEY: (PACE, lambda text: _number(PACE_KEY, text), f"the pace is about {DEFAULT_PACE_S:g} s"),
    }
    values: dict[str, Any] = {}
    problems: list[str] = []
    for name, (param, parse, fallback) in specs.items():
        if name not in query:
            continue
        try:
            values[name] = param.validate(parse(query[name]))
        except ValueError as exc:
            problems.append(f"{exc}; {fallback}")
    return values, problems


def _seed_view(view: Mapping[str, Any]) -> None:
    state = st.session_state
    if TAB_KEY in view:
        state["train_tab"] = TABS[view[TAB_KEY]]
    if STEP_KEY in view:
        state["train_step_wanted"] = view[STEP_KEY]
    if PACE_KEY in view:
        state["train_pace"] = PACED if view[PACE_KEY] > 0 else FAST
        if view[PACE_KEY] > 0:
            state["train_pace_s"] = float(view[PACE_KEY])


def from_link() -> TrainConfig | None:
    """On a session's first visit, the link's configuration (its widgets seeded), or None; and
    the link's tab, scrubber step and pace (:func:`read_view`).

    A link that cannot be used leaves the defaults and says why, naming the field
    (:func:`link_problems`): a damaged text, an invalid setting, a run over the server's limits.
    """
    if st.session_state.get("train_link_read"):
        return None
    st.session_state["train_link_read"] = True
    problems: list[str] = []
    config = None
    if text := st.query_params.get(LINK_PARAM):
        try:
            config = TrainConfig.from_link(text)
            check_training(config)
        except ValueError as exc:
            problems.append(f"{exc}; the defaults apply")
            config = None
    query = {k: st.query_params[k] for k in (TAB_KEY, STEP_KEY, PACE_KEY) if k in st.query_params}
    view, bad = read_view(query, config.steps if config is not None else None)
    st.session_state["train_link_problems"] = problems + bad
    if config is not None:
        seed_controls(config)
    _seed_view(view)
    return config


def link_problems() -> list[str]:
    """Why parts of the link were not used (once), or []."""
    return st.session_state.pop("train_link_problems", [])


def tab_changed() -> None:
    """The open tab, in the URL (none for the first tab)."""
    slug = next((k for k, label in TABS.items() if label == st.session_state.get("train_tab")), "train")
    if slug == "train":
        st.query_params.pop(TAB_KEY, None)
    else:
        st.query_params[TAB_KEY] = slug


def _step_changed() -> None:
    st.query_params[STEP_KEY] = str(st.session_state["train_step"])


def scrubber(job: jobs.Job | None) -> int | None:
    """The step every panel shows: None (the latest) while a run is live, else the slider's
    (at first the link's ``step=`` for the link's run, else the last step); kept in the URL."""
    trainer, last = results_of(job)
    if job is None or job.running or trainer is None or last < 2:
        return None
    state = st.session_state
    if state.get("train_step_job") != job.id or state.get("train_step", 0) > last:
        wanted = state.pop("train_step_wanted", None)
        state["train_step"] = min(wanted, last) if wanted is not None else last
        state["train_step_job"] = job.id
        if wanted is None:
            st.query_params.pop(STEP_KEY, None)
    return int(
        st.slider(
            "Step — moves every panel",
            min_value=1,
            max_value=last,
            key="train_step",
            on_change=_step_changed,
            help="Curves draw a cursor at this step; the per-parameter views and the decision boundary "
            "show the latest record or evaluation at or before it.",
        )
    )
