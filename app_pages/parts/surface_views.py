"""The Surface lab's views besides the timeline: the header, the metrics table, the basin map,
the lr sensitivity, the fair comparison, the optimizers' notes and the export."""

from __future__ import annotations

from dataclasses import replace
from functools import partial
from typing import Any

import streamlit as st

from app_pages.parts import run_list
from app_pages.parts.surface_state import GRID_SIZE, basin, compute_sweeps, items, on_pick, surface_args
from app_pages.ui import optimizer_label, plain
from dgs_core import metrics, surfaces
from dgs_core.optim import registry
from dgs_core.params import ParamError
from dgs_core.runs.surface import export_surface
from dgs_core.surfaces.config import (
    BASIN_KINDS,
    BASIN_RESOLUTIONS,
    LR_METRICS,
    TUNING_CRITERIA,
    SurfaceConfig,
)
from dgs_core.viz import surface as viz
from dgs_core.viz.runs import surface_figures

BASIN_KIND_LABELS = {"basin": "which minimum", "steps": "steps to ε", "gap": "final gap"}
LR_METRIC_LABELS = {"final_gap": "final gap", "steps_to_tolerance": "steps to ε"}
TUNING_LABELS = {"steps_to_tolerance": "fewest steps to ε", "final_gap": "smallest final gap"}


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


def clickable_chart(figure: Any, key: str) -> None:
    """A chart whose click sets the start."""
    st.plotly_chart(
        figure,
        key=key,
        on_select=partial(on_pick, key),
        selection_mode="points",
        config={"displaylogo": False},
    )


def panel_labels(runs: dict[str, surfaces.Run]) -> dict[str, surfaces.Run]:
    """Runs keyed by their display name, with "diverged at step t" in the name of those that did:
    their ✕ can lie far outside the plotted domain, the panel's title cannot."""
    labelled = {}
    for name, run in runs.items():
        diverged = int(run.diverged_at[0])
        suffix = f" · {metrics.divergence_message(diverged)}" if diverged >= 0 else ""
        labelled[f"{registry.get(name).label}{suffix}"] = run
    return labelled


def metrics_section(runs: dict[str, surfaces.Run]) -> None:
    st.subheader("Metrics")
    st.caption(
        "Metrics (docs/algorithms.md): final gap f − f*, first step with f − f* < ε, "
        "overshoots ⟨∇f(x⁺), Δ⟩ > 0, "
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
        "Colour each start by",
        BASIN_KINDS,
        format_func=BASIN_KIND_LABELS.get,
        horizontal=True,
        key="surface_basin_kind",
    )
    resolution = c3.selectbox(
        "Grid of starts", BASIN_RESOLUTIONS, format_func=lambda r: f"{r} × {r}", key="surface_basin_res"
    )
    chosen = replace(config, basin_optimizer=name, basin_kind=kind, basin_resolution=resolution)
    try:  # the server's work budget, before the grid of starts runs
        chosen.check_work()
    except ParamError as exc:
        c3.error(plain(exc))  # under the grid's widget
        return config
    kwargs = {k: v for k, v in config.simulation_kwargs().items() if k != "start"}
    with st.spinner(f"Running {optimizer_label(name)} from {resolution * resolution} starts…"):
        result = basin(*surface_args(config), name, items(config.hparams_for(name)), resolution, **kwargs)
    left, right = st.columns(2)
    with left:
        clickable_chart(viz.basin_map_figure(result, kind=kind, height=620), "surface_basin")
        st.caption(
            f"{resolution * resolution} runs of {config.steps} steps in {result.seconds:.2f} s. "
            "Click a start to follow its path on the right."
        )
    with right:
        title = f"{optimizer_label(name)} from ({config.start[0]:g}, {config.start[1]:g})"
        figure = viz.contour_figure(config.get_surface(), {name: runs[name]}, title=title, height=620)
        clickable_chart(figure, "surface_basin_path")
    return chosen


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
    st.caption(
        "*Interpretation*: the paper gives no equations; DGS Lab supplies its own (docs/algorithms.md)."
    )
    columns = st.columns(2)
    for i, name in enumerate(names):
        info = registry.get(name)
        tag = " *(interpretation)*" if info.interpretation else ""
        columns[i % 2].markdown(f"**{info.label}**{tag} — {info.description} [paper]({info.paper})")


def export_section(config: SurfaceConfig, runs: dict[str, surfaces.Run]) -> None:
    exported = config
    if tuple(runs) != config.optimizers:  # only the optimizers that ran
        hparams = {name: values for name, values in config.hparams.items() if name in runs}
        exported = replace(config, optimizers=tuple(runs), hparams=hparams, basin_optimizer=None)

    def data() -> bytes:
        return export_surface(runs, exported, figures=surface_figures(runs))

    # the current comparison is in the Runs page's list (unsaved; new settings replace it)
    run_list.offer(run_list.surface_key(exported), data, slot="surface")

    st.download_button(
        "Export snapshot (.zip)",
        data,
        file_name=f"surface-{config.surface}.zip",
        mime="application/zip",
        on_click="ignore",
        key="surface_export",
        help="the runs, their settings (re-runnable with python -m dgs_core run), metrics and figures",
    )
