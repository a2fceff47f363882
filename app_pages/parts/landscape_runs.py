"""Which runs the Landscape page draws, and the links to it from the Training lab and the Runs page.

Three kinds of run, each with its optimizers' recorded weights:

* ``training``: this session's Training-lab run (its job, found as the Training lab finds it:
  :func:`app_pages.live.current` of the ``train`` slot; the link carries ``train_job`` in the
  URL, so a reloaded tab finds it again), once it has finished or been stopped;
* ``large_batch``: the Training lab's large-batch study (slot ``train_lb``): each optimizer at
  the small and the large batch, from one initialisation, so the interpolation can run from a
  small-batch solution to a large-batch one;
* ``bundle``: a training bundle opened on the Runs page (the link carries the run's id only; it
  is read in this browser's own run-store session, and checked as the Runs page checks it).
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlencode

import streamlit as st
from streamlit.errors import StreamlitPageNotFoundError

from app_pages import live
from app_pages.parts import run_list
from app_pages.parts.large_batch import STUDY
from app_pages.parts.training_panels import RUN
from app_pages.ui import plain
from dgs_core import jobs
from dgs_core.landscape import Landscape, LossGrid
from dgs_core.runs.archive import SnapshotError
from dgs_core.runs.bundle import Bundle
from dgs_core.runs.read import read_bundle
from dgs_core.runs.store import RunStore
from dgs_core.studies.large_batch import LargeBatchStudy
from dgs_core.training.trainer import Trainer

PAGE = "app_pages/landscape.py"
FROM = "landscape_from"  # the links' query parameter: "training", "large_batch" or "bundle"
KINDS = ("training", "large_batch", "bundle")
BUNDLE_RUN = "landscape_run"  # the Runs page's run id
URL_PATH = "landscape"  # as app.py registers the page
LINK_LABEL = "Open the loss landscape"
ICON = "🏔️"


@dataclass(frozen=True, eq=False)
class LandscapeRun:
    """One run the page can draw.

    Attributes:
        kind: one of :data:`KINDS`.
        key: what identifies it in this session (job id and step; bundle path and size).
        title: how the page names it.
        trainer: the run (its config, results and task); a large-batch study's small-batch run.
        stored: loss grids the bundle came with.
        notes: what the bundle had to make do with (older formats).
        study: the large-batch study (kind ``large_batch``), whose two runs the landscape holds.
    """

    kind: str
    key: str
    title: str
    trainer: Trainer
    stored: tuple[LossGrid, ...] = ()
    notes: tuple[str, ...] = ()
    study: LargeBatchStudy | None = None


# ---------------------------------------------------------------------------------------------
# Links (one small call in each page that has a run)
# ---------------------------------------------------------------------------------------------


def _link(query: dict[str, str], help: str) -> None:
    try:
        st.page_link(PAGE, label=LINK_LABEL, icon=ICON, query_params=query, help=help)
    except StreamlitPageNotFoundError:  # a page script run on its own, without app.py's navigation
        st.markdown(f"[{ICON} {LINK_LABEL}](/{URL_PATH}?{urlencode(query)})", help=help)


def training_link(job: jobs.Job) -> None:
    """The link from a finished or stopped Training-lab run to its landscape."""
    _link(
        {FROM: "training", RUN.key: job.id},
        "the loss surface around these runs: planes, paths, interpolation, sharpness",
    )


def large_batch_link(job: jobs.Job) -> None:
    """The link from a finished or stopped large-batch study to its landscape."""
    _link(
        {FROM: "large_batch", STUDY.key: job.id},
        "both batch sizes' solutions on one landscape: the interpolation from a small-batch to a "
        "large-batch solution, their sharpness",
    )


def bundle_link(run_id: str) -> None:
    """The link from a training bundle on the Runs page to its landscape (the run's id only: the
    session that may read an unsaved run is this browser's, never one named in a link)."""
    _link(
        {FROM: "bundle", BUNDLE_RUN: run_id},
        "the loss surface around this run's optimizers: planes, paths, interpolation, sharpness",
    )


# ---------------------------------------------------------------------------------------------
# Finding the runs
# ---------------------------------------------------------------------------------------------


def training_run() -> tuple[LandscapeRun | None, str | None]:
    """The session's Training-lab run, or None and why not (None: there is none)."""
    job = live.current(RUN)
    if job is None:
        return None, None
    trainer = job.payload
    if not isinstance(trainer, Trainer) or job.running:
        return (
            None,
            "The Training lab's run is still running: its landscape opens once it finishes or you stop it.",
        )
    if job.state == jobs.FAILED or trainer.step == 0:
        return None, "The Training lab's run has no trained weights (it failed or never took a step)."
    config = trainer.config
    title = f"Training lab: {config.task} · {', '.join(config.labels)} · {trainer.step} steps ({job.state})"
    return LandscapeRun("training", f"train:{job.id}:{trainer.step}", title, trainer), None


def large_batch_run() -> tuple[LandscapeRun | None, str | None]:
    """The session's large-batch study, or None and why not (None: there is none)."""
    job = live.current(STUDY)
    if job is None or not isinstance(job.payload, LargeBatchStudy):
        return None, None
    study = job.payload
    if job.running:
        return None, (
            "The large-batch study is still running: its landscape opens once it finishes or you stop it."
        )
    if job.state == jobs.FAILED or not study.trainers or min(t.step for t in study.trainers.values()) == 0:
        return None, "The large-batch study has no trained weights (it failed or never took a step)."
    small, large = min(study.trainers), max(study.trainers)
    config = study.trainers[small].config
    labels = ", ".join(config.labels)
    title = f"Large-batch study: {config.task} · {labels} · batch {small} and {large} ({job.state})"
    key = f"lb:{job.id}:{tuple((b, t.step) for b, t in sorted(study.trainers.items()))}"
    return LandscapeRun("large_batch", key, title, study.trainers[small], study=study), None


@st.cache_resource(max_entries=8, show_spinner="Reading the run…")
def _bundle(path: str, size: int) -> Bundle:
    """A stored bundle, read and checked (read-only; shared by the sessions that may see it)."""
    return read_bundle(path)


def bundle_run() -> tuple[LandscapeRun | None, str | None]:
    """The training bundle the Runs page linked to (kept in this session once opened), or None
    and why not."""
    params = st.query_params
    if params.get(FROM) == "bundle" and BUNDLE_RUN in params:
        st.session_state["landscape_bundle"] = params[BUNDLE_RUN]
    if "landscape_bundle" not in st.session_state:
        return None, None
    run_id, session = st.session_state["landscape_bundle"], run_list.session_id()
    store = RunStore()
    try:
        info = store.get(run_id, session)
        bundle = _bundle(str(store.bundle_path(info.id, session)), info.size)
    except (ValueError, OSError) as exc:  # StoreError and SnapshotError are ValueErrors
        st.session_state.pop("landscape_bundle", None)
        return None, f"The run opened from the Runs page cannot be read: {plain(exc)}"
    if bundle.kind != "training" or bundle.trainer is None:
        return None, f"“{info.name}” is a {bundle.kind} bundle: only training runs have a loss landscape."
    title = f"Runs page: {info.name}"
    key = f"bundle:{info.id}:{info.size}"
    return LandscapeRun("bundle", key, title, bundle.trainer, tuple(bundle.landscapes), bundle.notes), None


@st.cache_resource(max_entries=8, show_spinner="Collecting the weight paths…")
def _landscape(key: str, _run: LandscapeRun) -> Landscape:
    if _run.study is not None:
        return Landscape.from_large_batch(_run.study)
    return Landscape.from_trainer(_run.trainer)


def landscape_of(run: LandscapeRun) -> Landscape:
    """The run's :class:`Landscape` (built once per run; raises ``ParamError`` naming ``runs``)."""
    return _landscape(run.key, run)


__all__ = [
    "LINK_LABEL",
    "PAGE",
    "LandscapeRun",
    "SnapshotError",
    "bundle_link",
    "bundle_run",
    "landscape_of",
    "large_batch_link",
    "large_batch_run",
    "training_link",
    "training_run",
]
