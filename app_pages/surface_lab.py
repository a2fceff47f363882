"""Surface lab: every chosen optimizer from the same start on a 2-D test function (SPEC §5).

Widgets in → a :class:`~dgs_core.surface_query.SurfaceConfig`, mirrored in the URL's query
string → cached simulations (:mod:`dgs_core.surfaces`) → figures (:mod:`dgs_core.viz.surface`).
The timeline (slider and play) lives in a fragment: moving it redraws the figures from the
cached runs and never simulates again. A click on a contour moves the start of every optimizer.
"""

from __future__ import annotations

from dataclasses import replace
from functools import partial
from typing import Any

import streamlit as st

from app_pages.ui import optimizer_controls, optimizer_label, optimizer_picker
from dgs_core import metrics, surfaces
from dgs_core.optim import registry
from dgs_core.runs.surface import export_surface
from dgs_core.surfaces.config import (
    BASIN_KINDS,
    BASIN_RESOLUTIONS,
    FIELDS,
    LR_METRICS,
    TUNING_CRITERIA,
    VIEWS,
    SurfaceConfig,
    clean_start,
    parse_query,
)
from dgs_core.viz import surface as viz
from dgs_core.viz.runs import surface_figures

TICK_SECONDS = 0.8  # one timeline frame per tick while playing (a redraw takes ~0.5 s)
PLAY_FRAMES = 40  # frames of one play-through, evenly spaced over the run
GRID_SIZE = len(surfaces.lr_grid(1.0))  # learning rates per optimizer in the lr views
PANEL_RESOLUTION = 80  # contour grid per axis of each small-multiples panel
TIMELINE_VIEWS = ("panels", "overlay", "3d")
VIEW_LABELS = {
    "panels": "Small multiples",
    "overlay": "Overlay",
    "3d": "3-D surface",
    "basin": "Basin map",
    "sensitivity": "lr sensitivity",
    "tuning": "Fair comparison",
}
BASIN_KIND_LABELS = {"basin": "which minimum", "steps": "steps to ε", "gap": "final gap"}
LR_METRIC_LABELS = {"final_gap": "final gap", "steps_to_tolerance": "steps to ε"}
TUNING_LABELS = {"steps_to_tolerance": "fewest steps to ε", "final_gap": "smallest final gap"}


# ---------------------------------------------------------------------------------------------
# Cached compute (plain inputs only)
# ---------------------------------------------------------------------------------------------
# st.cache_resource, not st.cache_data: Run, BasinMap and LrSweep hold MappingProxyType
# fields, which pickle (and so cache_data's copies) cannot handle. They are frozen, and
# nothing on this page writes into their arrays.

Items = tuple[tuple[str, Any], ...]


@st.cache_resource(max_entries=128, show_spinner=False)
def simulate_run(
    surface: str, surface_params: Items, optimizer: str, hparams: Items, **kwargs: Any
) -> surfaces.Run:
    """One optimizer from the configured start: :func:`dgs_core.surfaces.simulate`."""
    surf = surfaces.get_surface(surface, **dict(surface_params))
    return surfaces.simulate(surf, optimizer, dict(hparams), outside="raise", **kwargs)


@st.cache_resource(max_entries=24, show_spinner=False)
def basin(
    surface: str, surface_params: Items, optimizer: str, hparams: Items, resolution: int, **kwargs: Any
) -> surfaces.BasinMap:
    """Where ``optimizer`` ends from every start of a grid: :func:`dgs_core.surfaces.basin_map`."""
    surf = surfaces.get_surface(surface, **dict(surface_params))
    return surfaces.basin_map(surf, optimizer, dict(hparams), resolution=resolution, **kwargs)


@st.cache_resource(max_entries=64, show_spinner=False)
def sweep(
    surface: str, surface_params: Items, optimizer: str, hparams: Items, **kwargs: Any
) -> surfaces.LrSweep:
    """The same learning-rate grid around each optimizer's default: :func:`dgs_core.surfaces.lr_sweep`."""
    surf = surfaces.get_surface(surface, **dict(surface_params))
    return surfaces.lr_sweep(surf, optimizer, dict(hparams), **kwargs)


def _range(field: str) -> tuple[Any, Any]:
    """A number widget's bounds: the config field's Param spec."""
    spec = FIELDS[field]
    cast = int if spec.integer else float
    return cast(spec.low), cast(spec.high)


def _items(mapping: Any) -> Items:
    return tuple(sorted(dict(mapping).items()))


def _surface_args(config: SurfaceConfig) -> tuple[str, Items]:
    return config.surface, _items(config.surface_params)


def compute_runs(
    config: SurfaceConfig, skip: dict[str, str]
) -> tuple[dict[str, surfaces.Run], dict[str, str]]:
    """``{name: Run}`` for every chosen optimizer not in ``skip``; errors by optimizer."""
    runs: dict[str, surfaces.Run] = {}
    errors = dict(skip)
    for name in config.optimizers:
        if name in errors:
            continue
        try:
            with st.spinner(f"Simulating {optimizer_label(name)}…"):
                runs[name] = simulate_run(
                    *_surface_args(config),
                    name,
                    _items(config.hparams_for(name)),
                    **config.simulation_kwargs(),
                )
        except ValueError as exc:  # e.g. a cross-parameter rule of the optimizer's constructor
            errors[name] = str(exc)
    return runs, errors


def compute_sweeps(config: SurfaceConfig, names: list[str]) -> dict[str, surfaces.LrSweep]:
    """Each optimizer's lr sweep around its registry default lr (its other settings kept)."""
    sweeps = {}
    kwargs = config.simulation_kwargs()
    for name in names:
        hparams = {k: v for k, v in config.hparams_for(name).items() if k != "lr"}
        with st.spinner(f"Tuning {optimizer_label(name)}: {GRID_SIZE} learning rates…"):
            sweeps[name] = sweep(*_surface_args(config), name, _items(hparams), **kwargs)
    return sweeps


# ---------------------------------------------------------------------------------------------
# Session state ↔ configuration ↔ URL
# ---------------------------------------------------------------------------------------------


def session_config() -> SurfaceConfig:
    """The configuration of the last run; on a session's first run, the URL's (with notices)."""
    if "surface_config" not in st.session_state:
        config, notices = parse_query(st.query_params.to_dict())
        st.session_state.surface_config = config
        st.session_state.surface_link = (config, notices)
    return st.session_state.surface_config


def _seed(key: str, value: Any) -> None:
    """Give a widget its start value once; afterwards the widget's own state rules."""
    if key not in st.session_state:
        st.session_state[key] = value


def seed_widgets(config: SurfaceConfig) -> None:
    _seed("surface_surface", config.surface)
    _seed("surface_x", config.start[0])
    _seed("surface_y", config.start[1])
    _seed("surface_steps", config.steps)
    _seed("surface_seed", config.seed)
    _seed("surface_noise", config.noise_std)
    _seed("surface_batch", config.batch_size)
    _seed("surface_clip_on", config.clip_norm is not None)
    _seed("surface_clip", config.clip_norm if config.clip_norm is not None else 10.0)
    _seed("surface_view", config.view)
    _seed("surface_step", config.timeline_step)
    _seed("surface_basin_kind", config.basin_kind)
    _seed("surface_basin_res", config.basin_resolution)
    _seed("surface_lr_metric", config.lr_metric)
    _seed("surface_tuning", config.tuning)


def _on_surface_change() -> None:
    """A new surface: its own default start, and the timeline at the end of the run."""
    surf = surfaces.get_surface(st.session_state.surface_surface)
    st.session_state.surface_x, st.session_state.surface_y = (float(v) for v in surf.default_start)
    st.session_state.surface_step = st.session_state.surface_steps


def _on_steps_change() -> None:
    st.session_state.surface_step = st.session_state.surface_steps


def _on_pick(key: str) -> None:
    """A click on a clickable chart: its point becomes every optimizer's start."""
    point = viz.start_from_selection(st.session_state.get(key))
    if point is None:
        return
    surf = surfaces.get_surface(st.session_state.surface_surface)
    (x, y), _ = clean_start(surf, point)
    st.session_state.surface_x, st.session_state.surface_y = x, y
    st.session_state.surface_rerun_app = True  # a click inside the timeline fragment: rerun all


def _play() -> None:
    """Play from the slider's step (from 0 at the end of the run).

    Play and Pause are two buttons, each doing only what it says: a click delivered twice (a
    click racing a timer tick can be) repeats the same action instead of undoing it.
    """
    if not st.session_state.get("surface_playing"):
        step = st.session_state.get("surface_step", 0)
        st.session_state.surface_play_step = 0 if step >= st.session_state.surface_steps else step
        st.session_state.surface_playing = True
    st.session_state.surface_rerun_app = True  # the fragment's timer is set by a full run


def _pause() -> None:
    """Pause where play is (see :func:`_play`)."""
    if st.session_state.get("surface_playing"):
        st.session_state.surface_playing = False
        # the play position, not whatever value the browser's slider sent with this click
        st.session_state.surface_step = st.session_state.get("surface_play_step", 0)
    st.session_state.surface_rerun_app = True  # the fragment's timer is set by a full run


def _reset() -> None:
    for key in [k for k in st.session_state if str(k).startswith("surface_")]:
        del st.session_state[key]
    st.query_params.clear()


def publish(config: SurfaceConfig) -> None:
    """Remember the configuration and write it into the URL."""
    st.session_state.surface_config = config
    query = config.to_query()
    if st.query_params.to_dict() != query:
        st.query_params.from_dict(query)


# ---------------------------------------------------------------------------------------------
# Controls (sidebar)
# ---------------------------------------------------------------------------------------------


def surface_controls(config: SurfaceConfig) -> tuple[SurfaceConfig, list[str], dict[str, str]]:
    """The sidebar: returns the configuration, notes about the start, and errors by optimizer."""
    notes: list[str] = []
    with st.sidebar:
        st.header("Surface")
        name = st.selectbox(
            "Surface",
            surfaces.surface_names(),
            format_func=lambda n: surfaces.SURFACES[n].label,
            key="surface_surface",
            on_change=_on_surface_change,
        )
        params = {}
        for param, default in surfaces.SURFACES[name].params.items():
            # seeded here, for the surface just chosen (it may differ from the last run's)
            _seed(f"surface_param_{param}", float(config.surface_params.get(param, default)))
            value = st.number_input(
                "κ (condition number)" if param == "kappa" else param,
                key=f"surface_param_{param}",
                format="%.4g",
                help="a surface parameter — valid: a finite number > 0",
            )
            try:
                surfaces.get_surface(name, **{param: value})
                params[param] = value
            except ValueError as exc:
                st.error(str(exc))
        surf = surfaces.get_surface(name, **params)
        st.markdown("**Start** — or click a contour")
        left, right = st.columns(2)
        x = left.number_input("x₀", key="surface_x", step=0.1, format="%.4f")
        y = right.number_input("y₀", key="surface_y", step=0.1, format="%.4f")
        start, notes = clean_start(surf, (x, y), digits=None)  # typed or linked: kept exact
        for note in notes:
            st.warning(f"The {note}.")

        st.header("Optimizers")
        names = optimizer_picker(key="surface_optimizers", default=config.optimizers)
        values = {opt: config.hparams_for(opt) for opt in names}
        hparams, hparam_errors = optimizer_controls(names, key="surface_hp", values=values, surface=True)

        st.header("Simulation")
        steps = st.number_input(
            "Steps", *_range("steps"), step=50, key="surface_steps", on_change=_on_steps_change
        )
        noise = st.number_input(
            "Gradient noise σ", *_range("noise_std"), step=0.5, key="surface_noise",
            help="the optimizers see ∇f + σ·ξ/√B, ξ ~ N(0, I), the same draws for every optimizer",
        )  # fmt: skip
        batch = st.number_input("Batch size B", *_range("batch_size"), step=1, key="surface_batch")
        seed = st.number_input("Seed", *_range("seed"), step=1, key="surface_seed")
        clip = None
        if st.toggle("Clip gradients", key="surface_clip_on", help="off unless you turn it on"):
            clip = st.number_input(
                "Max gradient norm", *_range("clip_norm"), key="surface_clip", format="%.4g"
            )
        st.button("Reset all settings", key="surface_reset", on_click=_reset)
    new = replace(
        config,
        surface=name,
        surface_params=params,
        optimizers=tuple(names),
        hparams={k: v for k, v in hparams.items() if v},
        start=start,
        steps=int(steps),
        seed=int(seed),
        noise_std=float(noise),
        batch_size=int(batch),
        clip_norm=None if clip is None else float(clip),
        step=None,
        basin_optimizer=config.basin_optimizer if config.basin_optimizer in names else None,
    )
    return new, notes, hparam_errors


# ---------------------------------------------------------------------------------------------
# Views
# ---------------------------------------------------------------------------------------------


def header(config: SurfaceConfig) -> None:
    surf = config.get_surface()
    st.title("Surface lab")
    left, right = st.columns([3, 2])
    with left:
        st.latex(f"f(x, y) = {surf.formula}")
        extra = ", ".join(f"{k} = {v:g}" for k, v in surf.params.items())
        st.markdown(f"**{surf.label}**{f' ({extra})' if extra else ''} — {surf.description}")
    with right:
        (x0, x1), (y0, y1) = surf.domain
        minima = ", ".join(f"({mx:.3g}, {my:.3g})" for mx, my in surf.minima) or "none"
        f_min = "unbounded below" if surf.f_min is None else f"f* = {surf.f_min:.6g}"
        st.markdown(
            f"Domain x ∈ [{x0:g}, {x1:g}], y ∈ [{y0:g}, {y1:g}] · global minima {minima} · {f_min}  \n"
            f"Every optimizer starts at **({config.start[0]:g}, {config.start[1]:g})**: click a "
            "contour to move it. ▲ overshoot, ◇ direction reversed, ✕ diverged."
        )


def _clickable_chart(figure: Any, key: str) -> None:
    st.plotly_chart(
        figure, key=key, on_select=partial(_on_pick, key), selection_mode="points",
        config={"displaylogo": False},
    )  # fmt: skip


def _panel_labels(runs: dict[str, surfaces.Run]) -> dict[str, surfaces.Run]:
    """Runs keyed by their display name, with "diverged at step t" in the name of those that did:
    their ✕ can lie far outside the plotted domain, the panel's title cannot."""
    labelled = {}
    for name, run in runs.items():
        diverged = int(run.diverged_at[0])
        suffix = f" · {metrics.divergence_message(diverged)}" if diverged >= 0 else ""
        labelled[f"{registry.get(name).label}{suffix}"] = run
    return labelled


def timeline_section(config: SurfaceConfig, runs: dict[str, surfaces.Run]) -> None:
    """Slider + play, the main figure and the curves beside it, all at one step."""
    playing = bool(st.session_state.get("surface_playing")) and bool(runs)
    batch_sizes = any(registry.get(name).batch_test for name in runs)  # the AdAdaGrad family
    runs = _panel_labels(runs)

    @st.fragment(run_every=TICK_SECONDS if playing else None)
    def timeline() -> None:
        if st.session_state.pop("surface_rerun_app", False):
            st.rerun(scope="app")
        steps = config.steps
        playing_now = bool(st.session_state.get("surface_playing"))
        if playing_now:
            # While playing, the play position is the truth: a tick can overtake the browser's
            # copy of the slider, which may still send the previous frame.
            current = st.session_state.get("surface_play_step", 0)
            step = next((k for k in viz.timeline_steps(steps, PLAY_FRAMES) if k > current), steps)
            st.session_state.surface_play_step = step
            if step >= steps:
                st.session_state.surface_playing = playing_now = False
                st.session_state.surface_rerun_app = True  # turn the timer off
        else:
            step = min(max(int(st.session_state.get("surface_step", steps)), 0), steps)
        st.session_state.surface_step = step
        play, slider = st.columns([1, 9], vertical_alignment="bottom")
        if playing_now:
            play.button("❚❚ Pause", key="surface_pause", on_click=_pause, width="stretch")
        else:
            play.button("▶ Play", key="surface_play", on_click=_play, width="stretch")
        step = slider.slider(
            "Timeline: step t (moves every panel and curve)",
            0,
            steps,
            key="surface_step",
            disabled=playing_now,
            help="pause to move it by hand" if playing_now else None,
        )
        surf = config.get_surface()
        if config.view == "panels":  # full width: panels wide enough to read on a projector
            figure = viz.small_multiples_figure(
                surf, runs, step=step, clickable=True, resolution=PANEL_RESOLUTION, cols=min(len(runs), 4)
            )
            _clickable_chart(figure, "surface_main")
            curves = st.columns(3 if batch_sizes else 2)
        else:
            main, side = st.columns([3, 2])
            with main:
                if config.view == "overlay":
                    _clickable_chart(viz.contour_figure(surf, runs, step=step, height=760), "surface_main")
                else:
                    st.plotly_chart(
                        viz.surface_3d_figure(surf, runs, step=step, height=760), key="surface_3d"
                    )
                    st.caption("Drag to rotate. Set the start by clicking a contour in the other views.")
            curves = [side] * 3
        with curves[0]:
            st.plotly_chart(viz.loss_figure(runs, step=step, height=360), key="surface_loss")
        with curves[1]:
            st.plotly_chart(viz.scaling_figure(runs, step=step, height=420), key="surface_scaling")
        if batch_sizes:
            with curves[2]:
                st.plotly_chart(viz.batch_size_figure(runs, step=step, height=300), key="surface_batch_fig")
        at_step = None if step >= steps else step
        st.session_state.surface_config = replace(st.session_state.surface_config, step=at_step)
        if at_step is None:
            st.query_params.pop("t", None)
        else:
            st.query_params["t"] = str(at_step)
        if st.session_state.pop("surface_rerun_app", False):
            st.rerun(scope="app")

    timeline()


def metrics_section(runs: dict[str, surfaces.Run]) -> None:
    st.subheader("Metrics")
    st.caption(
        "SPEC §3: final gap f − f*, first step with f − f* < ε, overshoots ⟨∇f(x⁺), Δ⟩ > 0, "
        f"oscillations cos(Δₜ, Δₜ₋₁) < 0 and loss spikes K (runs of steps above "
        f"{1 + metrics.SPIKE_TAU:g} × the median of the previous {metrics.SPIKE_WINDOW}), over the whole run."
    )
    st.dataframe(
        viz.metrics_table(runs),
        hide_index=True,
        width="stretch",
        column_config={
            "lr": st.column_config.NumberColumn(format="%.3g"),
            "final gap": st.column_config.NumberColumn(format="%.3e"),
            "overshoot %": st.column_config.NumberColumn(format="%.1f"),
            "oscillation %": st.column_config.NumberColumn(format="%.1f"),
        },
    )


def basin_section(config: SurfaceConfig, runs: dict[str, surfaces.Run]) -> SurfaceConfig:
    """The basin map of one optimizer beside its path from the current start."""
    if st.session_state.get("surface_basin_opt") not in runs:
        st.session_state.surface_basin_opt = config.basin if config.basin in runs else next(iter(runs))
    c1, c2, c3 = st.columns([2, 3, 2])
    name = c1.selectbox("Optimizer", list(runs), format_func=optimizer_label, key="surface_basin_opt")
    kind = c2.radio(
        "Colour each start by", BASIN_KINDS, format_func=BASIN_KIND_LABELS.get, horizontal=True,
        key="surface_basin_kind",
    )  # fmt: skip
    resolution = c3.selectbox(
        "Grid of starts", BASIN_RESOLUTIONS, format_func=lambda r: f"{r} × {r}", key="surface_basin_res"
    )
    kwargs = {k: v for k, v in config.simulation_kwargs().items() if k != "start"}
    with st.spinner(f"Running {optimizer_label(name)} from {resolution * resolution} starts…"):
        result = basin(*_surface_args(config), name, _items(config.hparams_for(name)), resolution, **kwargs)
    left, right = st.columns(2)
    with left:
        _clickable_chart(viz.basin_map_figure(result, kind=kind, height=620), "surface_basin")
        st.caption(f"{resolution * resolution} runs of {config.steps} steps in {result.seconds:.2f} s. "
                   "Click a start to follow its path on the right.")  # fmt: skip
    with right:
        title = f"{optimizer_label(name)} from ({config.start[0]:g}, {config.start[1]:g})"
        figure = viz.contour_figure(config.get_surface(), {name: runs[name]}, title=title, height=620)
        _clickable_chart(figure, "surface_basin_path")
    return replace(config, basin_optimizer=name, basin_kind=kind, basin_resolution=resolution)


def sensitivity_section(config: SurfaceConfig, runs: dict[str, surfaces.Run]) -> SurfaceConfig:
    metric = st.radio(
        "y axis", LR_METRICS, format_func=LR_METRIC_LABELS.get, horizontal=True, key="surface_lr_metric"
    )
    sweeps = compute_sweeps(config, list(runs))
    labelled = {optimizer_label(name): s for name, s in sweeps.items()}
    st.plotly_chart(
        viz.lr_sensitivity_figure(labelled, metric=metric, criterion=config.tuning, height=560),
        key="surface_sensitivity",
    )
    st.caption(
        f"Each optimizer ran from the same start at {GRID_SIZE} learning rates, log-spaced from "
        "10⁻² × to 10^1.5 × its registry default (○), its other hyperparameters as set in the sidebar; "
        "★ marks the tuned lr, ✕ the learning rates that diverged."
    )
    return replace(config, lr_metric=metric)


def tuning_section(config: SurfaceConfig, runs: dict[str, surfaces.Run]) -> SurfaceConfig:
    criterion = st.radio(
        "Tune for", TUNING_CRITERIA, format_func=TUNING_LABELS.get, horizontal=True, key="surface_tuning"
    )
    sweeps = compute_sweeps(config, list(runs))
    st.caption(
        "Fair comparison: every optimizer gets the same budget — the same number of learning rates, "
        "log-spaced around its registry default, each run for the same steps from the same start — "
        "and keeps the best. Its other hyperparameters are as set in the sidebar."
    )
    table = viz.tuning_table({optimizer_label(n): s for n, s in sweeps.items()}, criterion=criterion)
    st.dataframe(
        table,
        hide_index=True,
        width="stretch",
        column_config={
            c: st.column_config.NumberColumn(format="%.3e" if "gap" in c else "%.3g")
            for c in table.columns
            if c.endswith(("lr", "gap"))
        },
    )
    default = {n: s.run.row(s.default_index) for n, s in sweeps.items() if s.default_index is not None}
    tuned = {n: run for n, s in sweeps.items() if (run := s.best_run(criterion)) is not None}
    never = [optimizer_label(n) for n in sweeps if n not in tuned]
    if never:
        st.warning(f"Every learning rate diverged for {', '.join(never)}.")
    surf = config.get_surface()
    left, right = st.columns(2)
    for column, chosen, title, key in (
        (left, default, "Default learning rates", "surface_default"),
        (right, tuned, "Tuned learning rates", "surface_tuned"),
    ):
        with column:
            if chosen:
                st.plotly_chart(viz.contour_figure(surf, chosen, title=title, height=560), key=key)
                st.plotly_chart(viz.loss_figure(chosen, height=320), key=f"{key}_loss")
    return replace(config, tuning=criterion)


def optimizers_section(names: list[str]) -> None:
    st.subheader("The optimizers")
    st.caption("*Interpretation*: the paper gives no equations; DGS Lab supplies its own (SPEC §1).")
    columns = st.columns(2)
    for i, name in enumerate(names):
        info = registry.get(name)
        tag = " *(interpretation)*" if info.interpretation else ""
        columns[i % 2].markdown(f"**{info.label}**{tag} — {info.description} [paper]({info.paper})")


def export_section(config: SurfaceConfig, runs: dict[str, surfaces.Run]) -> None:
    def data() -> bytes:
        exported = config
        if tuple(runs) != config.optimizers:  # only the optimizers that ran
            hparams = {name: values for name, values in config.hparams.items() if name in runs}
            exported = replace(config, optimizers=tuple(runs), hparams=hparams, basin_optimizer=None)
        return export_surface(runs, exported, figures=surface_figures(runs))

    st.download_button(
        "Export snapshot (.zip)", data, file_name=f"surface-{config.surface}.zip", mime="application/zip",
        on_click="ignore", key="surface_export",
        help="the runs, their settings (re-runnable with python -m dgs_core run), metrics and figures",
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------

st.session_state.pop("surface_rerun_app", None)  # a full run is under way already
previous = session_config()
seed_widgets(previous)
config, start_notes, hparam_errors = surface_controls(previous)
header(config)

parsed, link_notices = st.session_state.get("surface_link", (None, []))
if link_notices and replace(config, step=None, view=parsed.view) == replace(parsed, step=None):
    st.warning(
        "Some settings in this link could not be used; their defaults apply:\n\n"
        + "\n".join(f"- {notice}" for notice in link_notices)
    )

view = st.radio(
    "View",
    VIEWS,
    format_func=VIEW_LABELS.get,
    horizontal=True,
    key="surface_view",
    label_visibility="collapsed",
)
config = replace(config, view=view)
runs, run_errors = compute_runs(config, hparam_errors)
for name, message in run_errors.items():
    st.error(f"{optimizer_label(name)} is left out: {message}")
for name, run in runs.items():
    if run.diverged_at[0] >= 0:
        st.warning(
            f"{optimizer_label(name)} (lr {run.lrs[0]:.3g}) "
            f"{metrics.divergence_message(int(run.diverged_at[0]))}: its path stops at the last "
            "finite point (✕); the others go on."
        )

if not runs:
    st.info("Pick at least one optimizer in the sidebar.")
elif view in TIMELINE_VIEWS:
    timeline_section(config, runs)
    metrics_section(runs)
elif view == "basin":
    config = basin_section(config, runs)
elif view == "sensitivity":
    config = sensitivity_section(config, runs)
else:
    config = tuning_section(config, runs)

if runs:
    export_section(config, runs)
    optimizers_section(list(runs))
step = st.session_state.get("surface_step", config.steps)
publish(replace(config, step=step if view in TIMELINE_VIEWS and step < config.steps else None))
