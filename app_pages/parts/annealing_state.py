"""The Annealing lab's state in its link: session state ↔ :class:`AnnealingLabConfig` ↔ URL.

On a session's first visit :func:`from_link` reads the page's ``?anneal=`` link, validated like
any other input, and :func:`seed_controls` sets every widget of the three tabs to it (a bad link
leaves the lab's start and says why, naming the field: :func:`link_error`). After each run the
page hands what its widgets hold to :func:`publish`, which keeps the URL equal to it, so a copied
link reopens the same tab, schedules and settings. A part whose widgets hold an invalid value
keeps its last valid state in the link.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import streamlit as st

from dgs_core.optim import registry
from dgs_core.schedules import PLATEAU_HYPERPARAMS, SCHEDULES
from dgs_core.schedules.plateau import PLATEAU_DEMO_HYPERPARAMS
from dgs_core.studies.annealing_lab import LINK_PARAM, TABS, AnnealingLabConfig

CONFIG = "anneal_config"  # the last valid configuration, the one in the URL
TAB_KEY = "anneal_tab"
OWN_WARMUP = ("warmup", "warmup_cosine", "wsd", "one_cycle")  # no extra warmup offered by default
_SEEDED_PREFIXES = ("anneal_sched_", "anneal_prefix_", "anneal_plateau_", "anneal_eff_", "anneal_tp_")
_RUN_SETTINGS = {  # the two-phase tab's plain widgets → TwoPhaseSettings' fields
    "anneal_tp_seed": "seed",
    "anneal_tp_optimizer": "optimizer",
    "anneal_tp_metric": "metric",
    "anneal_tp_eval_every": "eval_every",
    "anneal_tp_main_steps": "main_steps",
    "anneal_tp_anneal_steps": "anneal_steps",
    "anneal_tp_shape": "anneal_shape",
    "anneal_tp_floor": "min_lr_ratio",
    "anneal_tp_factor": "plateau_factor",
    "anneal_tp_patience": "plateau_patience",
    "anneal_tp_stop_patience": "stop_patience",
    "anneal_tp_sf": "schedule_free",
    "anneal_tp_sf_lr": "schedule_free_lr",
}


def _widget_value(spec: Any, value: Any) -> Any:
    """What the spec's widget holds for ``value`` (ui.param_controls): step lists as text, numbers
    of the widget's own type."""
    if spec.kind == "int_list":
        return ", ".join(str(v) for v in value)
    if spec.kind == "int":
        return int(value)
    if spec.kind == "float":
        return float(value)
    return value


def _seed_params(specs: Any, values: Any, key: str) -> None:
    by_name = {s.name: s for s in specs}
    for name, value in values.items():
        if name in by_name:
            st.session_state[f"{key}_{name}"] = _widget_value(by_name[name], value)


def show_prefix(name: str) -> bool:
    """Whether the composer offers an extra warmup before schedule ``name``: schedules without a
    warmup of their own, and any schedule a link gives one."""
    return name not in OWN_WARMUP or bool(st.session_state.get(f"anneal_prefix_{name}", 0))


def seed_controls(config: AnnealingLabConfig) -> None:
    """Every widget of the lab set to ``config`` (and the open tab)."""
    state = st.session_state
    for key in [k for k in state if str(k).startswith(_SEEDED_PREFIXES)]:
        del state[key]
    state[TAB_KEY] = TABS[config.tab]
    state["anneal_run_steps"] = config.run_steps
    state["anneal_curves"] = [c.schedule.name for c in config.curves]
    state["anneal_log_y"] = config.log_y
    for curve in config.curves:
        name = curve.schedule.name
        _seed_params(SCHEDULES[name].hyperparams, curve.schedule.params, f"anneal_sched_{name}")
        if curve.warmup_before or name not in OWN_WARMUP:
            state[f"anneal_prefix_{name}"] = curve.warmup_before
    _seed_params(PLATEAU_HYPERPARAMS, config.plateau, "anneal_plateau_plateau")
    _seed_params(PLATEAU_DEMO_HYPERPARAMS, config.plateau, "anneal_plateau_toy")
    effective = config.effective
    if (curve := config.effective_curve) is not None:
        state["anneal_eff_curve"] = curve.label
    state["anneal_eff_task"] = effective.task
    state["anneal_eff_optimizers"] = [o.name for o in effective.optimizers]
    for spec in effective.optimizers:
        _seed_params(registry.get(spec.name).hyperparams, spec.hparams, f"anneal_eff_{spec.name}")
    two_phase = config.two_phase
    state["anneal_tp_task"] = two_phase.task
    state["anneal_tp_noise"] = float(two_phase.task_params.get("label_noise", 0.0))
    state["anneal_tp_hq"] = float(two_phase.task_params.get("hq_fraction", 0.2))
    for key, field in _RUN_SETTINGS.items():
        state[key] = getattr(two_phase, field)
    _seed_params(
        registry.get(two_phase.optimizer).hyperparams, two_phase.hparams, f"anneal_tp_{two_phase.optimizer}"
    )
    state[CONFIG] = config


def from_link() -> None:
    """On a session's first visit, the link's configuration seeds the widgets; a link that
    cannot be used leaves the lab's start and keeps the reason for :func:`link_error`."""
    if st.session_state.get("anneal_link_read"):
        return
    st.session_state["anneal_link_read"] = True
    text = st.query_params.get(LINK_PARAM)
    if not text:
        return
    try:
        config = AnnealingLabConfig.from_link(text)
    except ValueError as exc:
        st.session_state["anneal_link_error"] = str(exc)
        return
    seed_controls(config)


def link_error() -> str | None:
    """Why the link's configuration was not used (once), or None."""
    return st.session_state.pop("anneal_link_error", None)


def current() -> AnnealingLabConfig:
    """The last valid configuration (the lab's start before any)."""
    config = st.session_state.get(CONFIG)
    return config if isinstance(config, AnnealingLabConfig) else AnnealingLabConfig()


def publish(**parts: Any) -> AnnealingLabConfig:
    """The widgets' state into the URL: ``parts`` are the configuration's fields as the widgets
    hold them, None for a part with an invalid value (it keeps its last valid state)."""
    config = current()
    changes = {name: value for name, value in parts.items() if value is not None}
    try:
        config = config.replace(**changes)
    except ValueError:  # the effective tab's schedule has left the composer: its first curve
        effective = replace(changes.get("effective", config.effective), schedule="")
        try:
            config = config.replace(**{**changes, "effective": effective})
        except ValueError:  # not expected (each part is checked at its widgets): keep the last link
            pass
    st.session_state[CONFIG] = config
    link = config.to_link()
    if st.query_params.get(LINK_PARAM) != link:
        st.query_params[LINK_PARAM] = link
    return config
