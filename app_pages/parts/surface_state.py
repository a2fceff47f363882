"""The Surface lab's state: cached simulations, and session state ↔ configuration ↔ URL.

The configuration (:class:`~dgs_core.surfaces.config.SurfaceConfig`) is kept in session state
and mirrored in the URL's query string; the widgets start from it once, then rule themselves.
The callbacks here move the start and reset everything; the cached timeline payload is here too.
"""

from __future__ import annotations

from typing import Any

import streamlit as st

from app_pages.ui import PRESENT, optimizer_label, presenter_query
from dgs_core import surfaces
from dgs_core.surfaces.config import FIELDS, SurfaceConfig, clean_start, parse_query
from dgs_core.viz import surface as viz

GRID_SIZE = len(surfaces.lr_grid(1.0))  # learning rates per optimizer in the lr views
OPENING_STEPS = 25  # the first steps the timeline replays slowly (overshoot happens early)

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


@st.cache_resource(max_entries=16, show_spinner=False)
def timeline_data(
    config: Items, names: tuple[str, ...], step: int, *, _surface: Any, _runs: dict[str, surfaces.Run]
) -> dict[str, Any]:
    """The timeline's payload (:func:`dgs_core.viz.surface.timeline_data`), cached on the
    configuration's query (``config``: every simulated setting and the view), the optimizers that
    ran and the opening step; ``_surface`` and ``_runs`` follow from those. Never mutated."""
    view = dict(config).get("view", "panels")
    return viz.timeline_data(_surface, _runs, view=view, step=step, opening=OPENING_STEPS)


def field_range(field: str) -> tuple[Any, Any]:
    """A number widget's bounds: the config field's Param spec."""
    spec = FIELDS[field]
    cast = int if spec.integer else float
    return cast(spec.low), cast(spec.high)


def items(mapping: Any) -> Items:
    return tuple(sorted(dict(mapping).items()))


def surface_args(config: SurfaceConfig) -> tuple[str, Items]:
    return config.surface, items(config.surface_params)


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
                    *surface_args(config),
                    name,
                    items(config.hparams_for(name)),
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
            sweeps[name] = sweep(*surface_args(config), name, items(hparams), **kwargs)
    return sweeps


# ---------------------------------------------------------------------------------------------
# Session state ↔ configuration ↔ URL
# ---------------------------------------------------------------------------------------------


def session_config() -> SurfaceConfig:
    """The configuration of the last run; on a session's first run, the URL's (with notices)."""
    if "surface_config" not in st.session_state:
        link = {k: v for k, v in st.query_params.to_dict().items() if k != PRESENT}
        config, notices = parse_query(link)
        st.session_state.surface_config = config
        st.session_state.surface_link = (config, notices)
    return st.session_state.surface_config


def seed_widget(key: str, value: Any) -> None:
    """Give a widget its start value once; afterwards the widget's own state rules."""
    if key not in st.session_state:
        st.session_state[key] = value


def seed_widgets(config: SurfaceConfig) -> None:
    seed_widget("surface_surface", config.surface)
    seed_widget("surface_x", config.start[0])
    seed_widget("surface_y", config.start[1])
    seed_widget("surface_steps", config.steps)
    seed_widget("surface_seed", config.seed)
    seed_widget("surface_noise", config.noise_std)
    seed_widget("surface_batch", config.batch_size)
    seed_widget("surface_clip_on", config.clip_norm is not None)
    seed_widget("surface_clip", config.clip_norm if config.clip_norm is not None else 10.0)
    seed_widget("surface_view", config.view)
    seed_widget("surface_step", config.timeline_step)
    seed_widget("surface_basin_kind", config.basin_kind)
    seed_widget("surface_basin_res", config.basin_resolution)
    seed_widget("surface_lr_metric", config.lr_metric)
    seed_widget("surface_tuning", config.tuning)


def on_surface_change() -> None:
    """A new surface: its own default start, and the timeline at the end of the run."""
    surf = surfaces.get_surface(st.session_state.surface_surface)
    st.session_state.surface_x, st.session_state.surface_y = (float(v) for v in surf.default_start)
    st.session_state.surface_step = st.session_state.surface_steps


def on_steps_change() -> None:
    st.session_state.surface_step = st.session_state.surface_steps


def on_pick(key: str) -> None:
    """A click on a clickable chart (the basin map and its path): its point becomes every
    optimizer's start."""
    point = viz.start_from_selection(st.session_state.get(key))
    if point is None:
        return
    surf = surfaces.get_surface(st.session_state.surface_surface)
    (x, y), _ = clean_start(surf, point)
    st.session_state.surface_x, st.session_state.surface_y = x, y


def on_start(x: float, y: float) -> None:
    """A click on the timeline's map: ``(x, y)`` becomes every optimizer's start."""
    surf = surfaces.get_surface(st.session_state.surface_surface)
    (st.session_state.surface_x, st.session_state.surface_y), _ = clean_start(surf, (x, y))


def reset() -> None:
    for key in [k for k in st.session_state if str(k).startswith("surface_")]:
        del st.session_state[key]
    st.query_params.clear()


def follow_browser_step(config: SurfaceConfig) -> None:
    """The step the timeline stands at in the browser, when it moved there.

    The timeline plays in the browser; paused, it writes its step into the address bar (``t=``,
    none at the end of the run). A rerun brings the address bar here: when its ``t`` is not the
    one this page last wrote, the browser moved, and the session's step follows it, so the link
    the page writes back keeps it."""
    if "surface_published_t" not in st.session_state:
        return  # the session's first run: the link's own t is the configuration's
    linked = st.query_params.get("t")
    if linked == st.session_state.surface_published_t:
        return
    try:
        step = config.steps if linked is None else int(linked)
    except ValueError:
        return  # not a step: the page writes its own back
    st.session_state.surface_step = min(max(step, 0), config.steps)


def publish(config: SurfaceConfig) -> None:
    """Remember the configuration and write it into the URL."""
    st.session_state.surface_config = config
    query = {**config.to_query(), **presenter_query()}
    st.session_state.surface_published_t = query.get("t")
    if st.query_params.to_dict() != query:
        st.query_params.from_dict(query)
