"""Widget groups shared by several pages. Widgets in, plain values out; no math here."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import streamlit as st

from dgs_core.optim import registry
from dgs_core.optim.registry import OptimizerInfo
from dgs_core.params import Param
from dgs_core.schedules import ScheduleInfo
from dgs_core.schedules.curves import parse_step_list


def optimizer_label(name: str) -> str:
    """Display label for a registry name, with "(interpretation)" where SPEC supplies the math."""
    info = registry.get(name)
    return f"{info.label} (interpretation)" if info.interpretation else info.label


def optimizer_picker(
    *, key: str, default: Sequence[str], label: str = "Optimizers", exclude: Sequence[str] = ()
) -> list[str]:
    """A multiselect over the registry; returns registry names in display order."""
    options = [n for n in registry.names() if n not in exclude]
    chosen = st.multiselect(
        label,
        options,
        default=[n for n in default if n in options],
        format_func=optimizer_label,
        key=key,
    )
    return [n for n in options if n in chosen]


def _control(spec: Param, value: Any, key: str) -> Any:
    help_text = f"{spec.help} — valid: {spec.describe_range()}" if spec.help else spec.describe_range()
    if spec.kind == "bool":
        return st.checkbox(spec.name, value=bool(value), key=key, help=help_text)
    if spec.kind == "choice":
        choices = list(spec.choices or ())
        index = choices.index(value) if value in choices else 0
        return st.selectbox(spec.name, choices, index=index, key=key, help=help_text)
    if spec.kind == "int":
        return st.number_input(spec.name, value=int(value), step=1, key=key, help=help_text)
    # Deliberately unbounded: an out-of-range value must reach the validator so the page can
    # show its message next to the control rather than silently clamping it.
    fmt = "%.3e" if spec.log else "%.4f"
    return st.number_input(spec.name, value=float(value), format=fmt, key=key, help=help_text)


def hyperparam_controls(
    info: OptimizerInfo,
    *,
    key: str,
    values: Mapping[str, Any] | None = None,
    surface: bool = False,
) -> tuple[dict[str, Any], dict[str, str]]:
    """One control per hyperparameter, starting at ``values`` or the registry defaults.

    Returns ``(chosen, errors)``: the values as entered, and for each invalid one the
    ValueError's message, which is also shown right under its control.
    """
    start = info.defaults
    if surface:
        start.update(info.surface_defaults)
    start.update(values or {})
    chosen: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for spec in info.hyperparams:
        value = _control(spec, start[spec.name], key=f"{key}_{info.name}_{spec.name}")
        try:
            chosen[spec.name] = spec.validate(value)
        except ValueError as exc:
            chosen[spec.name] = value
            errors[spec.name] = str(exc)
            st.error(str(exc))
    return chosen, errors


def changed_hparams(
    info: OptimizerInfo, chosen: Mapping[str, Any], *, surface: bool = False
) -> dict[str, Any]:
    """Only the values that differ from the defaults (what a URL or config needs to keep)."""
    base = info.defaults
    if surface:
        base.update(info.surface_defaults)
    return {k: v for k, v in chosen.items() if base.get(k) != v}


def schedule_param_controls(
    info: ScheduleInfo,
    *,
    key: str,
    values: Mapping[str, Any] | None = None,
    hidden: Sequence[str] = (),
) -> tuple[dict[str, Any], dict[str, str]]:
    """One control per parameter of a schedule, in the registry's order, like
    :func:`hyperparam_controls`: step lists (``multistep``'s milestones) are comma-separated
    text. ``hidden`` parameters get no control and keep their value from ``values`` (or the
    default). Widget keys are ``f"{key}_{info.name}_{parameter}"``.

    Returns ``(chosen, errors)``; each invalid value's ValueError message is also shown
    under its control. Cross-parameter rules (``min_lr <= base_lr``) are the caller's:
    ``ScheduleSpec(info.name, chosen)`` raises them.
    """
    start = {**info.defaults, **(values or {})}
    chosen: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for spec in info.hyperparams:
        if spec.name in hidden:
            chosen[spec.name] = start[spec.name]
            continue
        widget_key = f"{key}_{info.name}_{spec.name}"
        try:
            if spec.kind == "int_list":
                text = st.text_input(
                    spec.name,
                    value=", ".join(str(v) for v in start[spec.name]),
                    key=widget_key,
                    help=f"{spec.help} — valid: {spec.describe_range()}, separated by commas",
                )
                value: Any = text
                chosen[spec.name] = spec.validate(parse_step_list(text, spec.name))
            else:
                value = _control(spec, start[spec.name], key=widget_key)
                chosen[spec.name] = spec.validate(value)
        except ValueError as exc:
            chosen[spec.name] = value
            errors[spec.name] = str(exc)
            st.error(str(exc))
    return chosen, errors
