"""This browser session's runs: the secret that keeps them private, the labs' runs handed to the
Runs page, and a run opened back in its lab.

Privacy: the session's unsaved runs live in the run store under a random session id
(:func:`dgs_core.runs.store.new_session_id`). The id is kept in Streamlit's session state
and in a first-party cookie (``SameSite=Strict``), never in a URL: a link to any page carries
no access to them, a refresh of the same browser finds them again, another browser (or a
private window) does not. A saved run is shared on purpose; its link is ``/runs?run=<id>``.

Labs hand their runs over with :func:`offer` (cheap: a function that builds the bundle, called
when the Runs page lists the session's runs), so every run a lab makes is in the list, unsaved.
A *slot* keeps one entry per thing that changes in place: the Surface lab's current
comparison, a training run made longer with Continue.
"""

from __future__ import annotations

import json
import uuid
import weakref
from collections.abc import Callable
from dataclasses import dataclass, replace

import streamlit as st

from app_pages import live
from app_pages.parts import training_state
from app_pages.parts.training_panels import RUN as TRAINING_RUN
from dgs_core import jobs
from dgs_core.runs.archive import SnapshotError
from dgs_core.runs.bundle import Bundle
from dgs_core.runs.store import RunInfo, RunStore, StoreError, is_session_id, new_session_id
from dgs_core.runs.training import export_training
from dgs_core.surfaces.config import SurfaceConfig
from dgs_core.training.trainer import Trainer
from dgs_core.viz.runs import training_figures

SESSION_KEY = "runs_session"
COOKIE = "dgs_lab_runs"
COOKIE_MAX_AGE_S = 30 * 24 * 3600  # as long as the store keeps an idle session's runs
TRAINING_PAGE = "app_pages/training_lab.py"
SURFACE_PAGE = "app_pages/surface_lab.py"
TIMELINE_VIEWS = ("panels", "overlay", "3d")
_PENDING, _MADE, _SLOTS = "runs_pending", "runs_made", "runs_slots"


# ---------------------------------------------------------------------------------------------
# The session's secret
# ---------------------------------------------------------------------------------------------


def session_id() -> str:
    """This browser's run-store session: from session state, else the cookie, else a new one
    (then written to the cookie)."""
    session = st.session_state.get(SESSION_KEY)
    if not is_session_id(session):
        session = st.context.cookies.get(COOKIE)
        if not is_session_id(session):
            session = new_session_id()
        st.session_state[SESSION_KEY] = session
    if st.context.cookies.get(COOKIE) != session and not st.session_state.get("runs_cookie_set"):
        st.session_state["runs_cookie_set"] = True
        # The app's own first-party cookie: sent with the next connection (a refresh), never
        # part of a link.
        st.html(
            f"<script>document.cookie = '{COOKIE}={session}; path=/; max-age={COOKIE_MAX_AGE_S}; "
            "SameSite=Strict';</script>",
            unsafe_allow_javascript=True,
        )
    return session


def run_link(run_id: str) -> str:
    """A saved run's own link: the Runs page's address with ``?run=<id>``."""
    return f"{(st.context.url or '/runs').split('?')[0]}?run={run_id}"


# ---------------------------------------------------------------------------------------------
# The labs' runs
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Offer:
    """A run a lab made: ``make()`` builds its bundle when ``ready()``; ``slot``: an earlier
    unsaved run of the same slot is replaced by this one."""

    make: Callable[[], bytes]
    ready: Callable[[], bool] = lambda: True
    slot: str | None = None


def offer(
    key: str, make: Callable[[], bytes], *, ready: Callable[[], bool] | None = None, slot: str | None = None
) -> None:
    """Put a lab's run in this session's list (``key``: the run's identity; offering it again
    changes nothing)."""
    if key in st.session_state.get(_MADE, {}):
        return
    st.session_state.setdefault(_PENDING, {})[key] = Offer(make, ready or (lambda: True), slot)


def offer_trainer(key: str, job: jobs.Job, trainer: Trainer, *, name: str | None = None) -> None:
    """A lab's training run (a job's trainer), once the job has ended; a run made longer with
    Continue (the same trainer) replaces the earlier entry."""
    offer(
        key,
        lambda: export_training(trainer, figures=training_figures(trainer.results, trainer.task), name=name),
        ready=lambda: job.finished,
        slot=_trainer_slot(trainer),
    )


def _trainer_slot(trainer: Trainer) -> str:
    """One slot per trainer object (Continue trains the same one on). Not ``id()``: a freed
    trainer's id is soon another's."""
    tokens = st.session_state.setdefault("runs_trainer_slots", weakref.WeakKeyDictionary())
    return "trainer:" + tokens.setdefault(trainer, uuid.uuid4().hex)


def surface_key(config: SurfaceConfig) -> str:
    """A Surface lab comparison's identity: its settings, not the view or the timeline's step."""
    plain = replace(config, step=None).to_dict()
    plain.pop("view")
    return "surface:" + json.dumps(plain, sort_keys=True)


def store_offers(store: RunStore, session: str) -> list[str]:
    """Store the labs' ready runs as unsaved runs of ``session`` (the newest is selected next);
    returns error messages."""
    pending: dict[str, Offer] = st.session_state.get(_PENDING, {})
    made: dict[str, str] = st.session_state.setdefault(_MADE, {})
    slots: dict[str, str] = st.session_state.setdefault(_SLOTS, {})
    errors = []
    for key, item in list(pending.items()):
        if key in made:  # stored already (or the run was opened from the list)
            del pending[key]
            continue
        if not item.ready():
            continue
        del pending[key]
        try:
            info = store.add(item.make(), session=session)
        except (StoreError, SnapshotError) as exc:
            errors.append(f"A lab's run could not be kept: {exc}")
            continue
        made[key] = info.id
        st.session_state["runs_select_next"] = info.id
        if item.slot is not None:
            previous = slots.get(item.slot)
            if previous is not None and _unsaved(store, previous, session):
                store.delete(previous, session=session)
            slots[item.slot] = info.id
    return errors


def _unsaved(store: RunStore, run_id: str, session: str) -> bool:
    try:
        return not store.get(run_id, session).saved
    except ValueError:
        return False


# ---------------------------------------------------------------------------------------------
# Back to the lab
# ---------------------------------------------------------------------------------------------


def lab_of(bundle: Bundle) -> str | None:
    """The page a run opens in: training runs (the Annealing lab's too) in the Training lab,
    surface runs in the Surface lab; None for a kind with no lab page."""
    return {"training": TRAINING_PAGE, "surface": SURFACE_PAGE}.get(bundle.kind)


def open_in_lab(store: RunStore, info: RunInfo, session: str) -> None:
    """Restore the run's lab with its configuration and results, then go there."""
    bundle = store.load(info.id, session)  # a fresh copy: the lab may train it on
    if bundle.kind == "training":
        _restore_training(bundle, info)
        st.switch_page(TRAINING_PAGE)
    elif bundle.kind == "surface":
        config = _restore_surface(bundle, info)
        st.switch_page(SURFACE_PAGE, query_params=config.to_query())


def _restore_training(bundle: Bundle, info: RunInfo) -> None:
    trainer = bundle.trainer
    job = jobs.Job(
        lambda: trainer,
        lambda payload, stop: iter(()),  # the run is already trained: the job ends at once
        poll=lambda payload: (payload.step, payload.config.steps),
        idle_stop_s=live.IDLE_STOP_SECONDS,
        name="train",
    )
    live.start(TRAINING_RUN, job)
    st.session_state.setdefault(_MADE, {})[f"train:{job.id}"] = info.id
    if not info.saved:  # Continue makes it longer: the longer run replaces this entry
        st.session_state.setdefault(_SLOTS, {})[_trainer_slot(trainer)] = info.id
    training_state.seed_controls(trainer.config)


def _restore_surface(bundle: Bundle, info: RunInfo) -> SurfaceConfig:
    config = SurfaceConfig.from_dict(bundle.config)
    if config.view not in TIMELINE_VIEWS:
        config = replace(config, view="panels")  # a view with the timeline
    for key in [k for k in st.session_state if str(k).startswith("surface_")]:
        del st.session_state[key]
    st.session_state["surface_config"] = config
    st.session_state["surface_link"] = (config, [])
    st.session_state.setdefault(_MADE, {})[surface_key(config)] = info.id
    return config
