"""The Training lab's settings from a configuration, and its link: one way for every page.

A :class:`~dgs_core.training.config.TrainConfig` sets the lab's sidebar through
:func:`seed_controls` (its widgets read these session-state keys), whoever brings it: a link
(``?cfg=``, :meth:`TrainConfig.to_link`), the Runs page's *Open in its lab*, the fair
comparison's tuned run. :func:`publish` puts the configuration of the run just started in the
URL, so the link reopens it: :func:`from_link` reads it on a session's first visit, checked like
any other input, and the lab trains it again when the link's job is gone (another server, a
restart): the same seed gives the same numbers.
"""

from __future__ import annotations

import streamlit as st

from dgs_core.limits import check_training
from dgs_core.schedules import SCHEDULES
from dgs_core.training.config import TrainConfig

LINK_PARAM = "cfg"
CONSTANT = "constant lr"  # the schedule picker's "no schedule"
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


def publish(config: TrainConfig) -> None:
    """The run just started, in the URL: the link reopens (and if need be retrains) it."""
    st.query_params[LINK_PARAM] = config.to_link()


def from_link() -> TrainConfig | None:
    """On a session's first visit, the link's configuration (its widgets seeded), or None.

    A link that cannot be used leaves the defaults and says why, naming the field
    (:func:`link_error`): a damaged text, an invalid setting, a run over the server's limits.
    """
    if st.session_state.get("train_link_read"):
        return None
    st.session_state["train_link_read"] = True
    text = st.query_params.get(LINK_PARAM)
    if not text:
        return None
    try:
        config = TrainConfig.from_link(text)
        check_training(config)
    except ValueError as exc:
        st.session_state["train_link_error"] = str(exc)
        return None
    seed_controls(config)
    return config


def link_error() -> str | None:
    """Why the link's configuration was not used (once), or None."""
    return st.session_state.pop("train_link_error", None)
