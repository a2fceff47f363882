"""Widget groups shared by the pages, built from Param specs. Widgets in, plain values out; no math.

:func:`param_controls` draws one control per :class:`~dgs_core.params.Param` (numbers, choices,
switches, step lists) and every group here is built on it: an optimizer's hyperparameters, a
schedule's parameters, a task's parameters, the plateau settings. An invalid value is shown
right under its control; a config's :class:`~dgs_core.params.ParamError` goes under the widget
its ``field`` names (:class:`FieldSlots`). :func:`presenter_mode` is presenter mode for
every page (app.py calls it once).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import streamlit as st

from dgs_core.optim import registry
from dgs_core.params import Param
from dgs_core.schedules import ScheduleInfo
from dgs_core.schedules.curves import parse_step_list
from dgs_core.training.models import SIZES, resolve_model_params
from dgs_core.training.tasks import get_task_info, task_names
from dgs_core.viz.lessons import PROJECTOR_FONT

Errors = dict[str, str]


# ---------------------------------------------------------------------------------------------
# Controls from Param specs
# ---------------------------------------------------------------------------------------------


def _help(spec: Param, suffix: str = "") -> str:
    valid = f"valid: {spec.describe_range()}{suffix}"
    return f"{spec.help} — {valid}" if spec.help else valid


def _control(spec: Param, value: Any, key: str) -> Any:
    """The widget for one spec; returns what it holds (a step list as parsed text)."""
    kind = spec.kind
    if kind == "bool":
        return st.checkbox(spec.name, value=bool(value), key=key, help=_help(spec))
    if kind == "choice":
        choices = list(spec.choices or ())
        index = choices.index(value) if value in choices else 0
        return st.selectbox(spec.name, choices, index=index, key=key, help=_help(spec))
    if kind == "int_list":
        shown = ", ".join(str(v) for v in value)
        text = st.text_input(spec.name, value=shown, key=key, help=_help(spec, ", separated by commas"))
        return parse_step_list(text, spec.name)  # ParamError naming the field for bad text
    if kind == "int":
        return st.number_input(spec.name, value=int(value), step=1, key=key, help=_help(spec))
    # Deliberately unbounded: an out-of-range value must reach the validator so the page can
    # show its message next to the control rather than silently clamping it.
    fmt = "%.3e" if spec.log else "%.4f"
    return st.number_input(spec.name, value=float(value), format=fmt, key=key, help=_help(spec))


def param_controls(
    params: Iterable[Param],
    *,
    key: str,
    values: Mapping[str, Any] | None = None,
    hidden: Sequence[str] = (),
) -> tuple[dict[str, Any], Errors]:
    """One control per spec, in order, starting at ``values`` (else the spec's default).

    Widget keys are ``f"{key}_{name}"``. ``hidden`` specs get no control and keep their start
    value. Returns ``(chosen, errors)``: the values as entered (validated where valid) and, per
    invalid one, the error's message, which is also shown right under its control.
    """
    start = dict(values or {})
    chosen: dict[str, Any] = {}
    errors: Errors = {}
    for spec in params:
        value = start.get(spec.name, spec.default)
        if spec.name in hidden:
            chosen[spec.name] = value
            continue
        try:
            value = _control(spec, value, key=f"{key}_{spec.name}")
            chosen[spec.name] = spec.validate(value)
        except ValueError as exc:
            chosen[spec.name] = value
            errors[spec.name] = str(exc)
            st.error(plain(exc))
    return chosen, errors


# Markdown (and its extensions: autolinks, emoji, math) acts on these; escaped, they show as typed.
_MARKDOWN = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~$:&])")


def plain(text: object) -> str:
    """Untrusted text (a link's value, a bundle's name, an error quoting either) for Streamlit's
    Markdown elements: every character Markdown would act on is escaped, so ``![x](http://…)``
    shows as those characters and the browser fetches nothing."""
    return _MARKDOWN.sub(r"\\\1", str(text))


class FieldSlots:
    """Places right under widgets, by the field they hold, for the errors of a whole config.

    ``add("steps")`` after a widget reserves its place; ``show(error)`` writes a
    :class:`~dgs_core.params.ParamError` into the place of ``error.field`` (True), or nowhere
    when no widget holds that field (False: the caller shows it elsewhere).
    """

    def __init__(self) -> None:
        self._slots: dict[str, Any] = {}

    def add(self, *fields: str) -> None:
        place = st.empty()
        for name in fields:
            self._slots[name] = place

    def show(self, error: ValueError) -> bool:
        place = self._slots.get(getattr(error, "field", None))  # type: ignore[arg-type]  # None: no field
        if place is None:
            return False
        place.error(plain(error))
        return True


# ---------------------------------------------------------------------------------------------
# Optimizers
# ---------------------------------------------------------------------------------------------


def optimizer_label(name: str) -> str:
    """Display label for a registry name, with "(interpretation)" where the lab supplies the math."""
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


def _start(name: str, values: Mapping[str, Any] | None, surface: bool) -> dict[str, Any]:
    info = registry.get(name)
    return {**info.defaults, **(info.surface_defaults if surface else {}), **(values or {})}


def hyperparam_controls(
    name: str,
    *,
    key: str,
    values: Mapping[str, Any] | None = None,
    surface: bool = False,
    exclude: Sequence[str] = (),
) -> tuple[dict[str, Any], Errors]:
    """One optimizer's hyperparameters (:func:`param_controls`, keys ``f"{key}_{name}_{param}"``),
    starting at ``values``, else the registry defaults (the Surface lab's with ``surface``);
    ``exclude``: hyperparameters the caller sets itself (no control, not returned)."""
    params = registry.get(name).hyperparams.without(*exclude)
    return param_controls(params, key=f"{key}_{name}", values=_start(name, values, surface))


def changed_hparams(name: str, chosen: Mapping[str, Any], *, surface: bool = False) -> dict[str, Any]:
    """Only the values that differ from the defaults (what a URL or config needs to keep)."""
    base = _start(name, None, surface)
    return {k: v for k, v in chosen.items() if base.get(k) != v}


def optimizer_controls(
    names: Sequence[str],
    *,
    key: str,
    values: Mapping[str, Mapping[str, Any]] | None = None,
    surface: bool = False,
    exclude: Sequence[str] = (),
    summary: bool = False,
) -> tuple[dict[str, dict[str, Any]], Errors]:
    """An expander "<optimizer> hyperparameters" per optimizer (:func:`hyperparam_controls`).

    Returns the changed hyperparameters (:func:`changed_hparams`) of each valid optimizer, and
    per invalid one its errors joined by "; ". ``summary``: each expander starts with the
    optimizer's one-line summary.
    """
    chosen: dict[str, dict[str, Any]] = {}
    errors: Errors = {}
    for name in names:
        with st.expander(f"{optimizer_label(name)} hyperparameters"):
            if summary:
                st.caption(registry.get(name).summary)
            entered, bad = hyperparam_controls(
                name, key=key, values=(values or {}).get(name), surface=surface, exclude=exclude
            )
        if bad:
            errors[name] = "; ".join(bad.values())
        else:
            chosen[name] = changed_hparams(name, entered, surface=surface)
    return chosen, errors


# ---------------------------------------------------------------------------------------------
# Schedules and tasks
# ---------------------------------------------------------------------------------------------


def schedule_param_controls(
    info: ScheduleInfo, *, key: str, values: Mapping[str, Any] | None = None, hidden: Sequence[str] = ()
) -> tuple[dict[str, Any], Errors]:
    """A schedule's parameters (:func:`param_controls`, keys ``f"{key}_{info.name}_{param}"``; step
    lists such as ``multistep``'s milestones are comma-separated text). Cross-parameter rules
    (``min_lr <= base_lr``) are the caller's: ``ScheduleSpec(info.name, chosen)`` raises them."""
    return param_controls(info.hyperparams, key=f"{key}_{info.name}", values=values, hidden=hidden)


def task_picker(key: str) -> str:
    """A selectbox over the tasks (their labels shown)."""
    return st.selectbox("Task", task_names(), format_func=lambda n: get_task_info(n).label, key=key)


def task_controls(
    *, key: str, size_key: str, hidden: Sequence[str] = ()
) -> tuple[str, dict[str, Any], str, bool]:
    """Task, its parameters (in an expander; keys ``f"{key}_{task}_{param}"``) and model size
    (``size_key``); and whether every value is valid (the task's cross-parameter rule included)."""
    task = task_picker(key)
    info = get_task_info(task)
    st.caption(info.summary)
    with st.expander("Task parameters"):
        params, errors = param_controls(info.params.without(*hidden), key=f"{key}_{task}")
        valid = not errors
        if valid:
            try:
                info.resolve(params)
            except ValueError as exc:
                st.error(plain(exc))
                valid = False
    size = st.selectbox("Model size", SIZES, index=SIZES.index("small"), key=size_key)
    preset = resolve_model_params(task, {"size": size})
    st.caption(f"{info.model.upper()}: " + ", ".join(f"{k} {v}" for k, v in preset.items()))
    return task, params, size, valid


# ---------------------------------------------------------------------------------------------
# Presenter mode
# ---------------------------------------------------------------------------------------------

PRESENT = "present"  # the URL flag (?present=1) and the session-state key of the toggle
PRESENT_ON = ("1", "true", "on", "yes")

# Hides the sidebar, Streamlit's header and toolbar; larger text; every figure's text at least
# PROJECTOR_FONT px. The figure rule also covers plotly's hidden text tester (it measures labels
# to lay out margins and ticks), so a figure drawn with small fonts is laid out for the large
# ones; figures the page draws itself also get projector_fonts() for legends and spacing.
_PRESENTER_CSS = f"""
<style>
[data-testid="stSidebar"], [data-testid="stSidebarCollapsedControl"], [data-testid="stHeader"],
[data-testid="stToolbar"], [data-testid="stDecoration"], [data-testid="stSidebarNav"] {{
  display: none !important;
}}
[data-testid="stMainBlockContainer"] {{ padding: 1rem 2rem 2rem 2rem; max-width: 100%; }}
[data-testid="stMain"] {{ font-size: 1.25rem; }}
[data-testid="stMarkdownContainer"] p, [data-testid="stMarkdownContainer"] li,
[data-testid="stCaptionContainer"], [data-testid="stWidgetLabel"] p {{ font-size: 1.25rem !important; }}
.js-plotly-plot .main-svg text, #js-plotly-tester text {{ font-size: {PROJECTOR_FONT}px !important; }}
</style>
"""


def presenting() -> bool:
    """Whether this session is in presenter mode."""
    return bool(st.session_state.get(PRESENT, False))


def _leave_presenter_mode() -> None:
    st.session_state[PRESENT] = False


def presenter_query() -> dict[str, str]:
    """The URL flag of presenter mode, for pages that rewrite the whole query string."""
    return {PRESENT: "1"} if presenting() else {}


def presenter_mode() -> bool:
    """Presenter mode for every page (called once, in app.py, before the page runs).

    On a session's first run it starts from the URL flag ``?present=1``; afterwards the
    sidebar's toggle rules it (and an "Exit presenter mode" button, since presenter mode hides
    the sidebar). The flag is kept in the URL, so a copied link opens in presenter mode.
    Returns whether it is on.
    """
    if PRESENT not in st.session_state:
        st.session_state[PRESENT] = str(st.query_params.get(PRESENT, "")).lower() in PRESENT_ON
    with st.sidebar:
        st.toggle(
            "Presenter mode",
            key=PRESENT,
            help="for a projector: hides the sidebar, the toolbar and the controls a lesson step "
            "does not need; larger text and figure fonts. Also ?present=1 in a link.",
        )
    on = presenting()
    if on:
        st.html(_PRESENTER_CSS)
        st.button("Exit presenter mode", key="present_exit", on_click=_leave_presenter_mode, type="tertiary")
        st.query_params[PRESENT] = "1"
    elif PRESENT in st.query_params:
        del st.query_params[PRESENT]
    return on
