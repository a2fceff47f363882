"""Runs: every run of this browser session and the saved ones — view, open in its lab, compare.

Every run a lab makes is in the list at once (:mod:`app_pages.parts.run_list`), and so is an
imported bundle or a resumed run; all are kept by :class:`dgs_core.runs.store.RunStore` on disk.
They are *unsaved*: only this browser sees them (a secret in session state and a cookie, never in
the URL) until **Save** makes them shared runs, each with its own link (``/runs?run=<id>``).
"""

from __future__ import annotations

import streamlit as st

from app_pages.parts import run_list
from app_pages.parts.landscape_runs import bundle_link
from app_pages.parts.run_compare import compare_section
from app_pages.parts.training_panels import run_panels
from app_pages.ui import plain
from dgs_core.runs.archive import LIMITS, MB, SnapshotError
from dgs_core.runs.bundle import Bundle
from dgs_core.runs.export import tensorboard_zip
from dgs_core.runs.read import read_bundle
from dgs_core.runs.store import RunInfo, RunStore, StoreError
from dgs_core.runs.training import export_training, resume_trainer
from dgs_core.viz import runs as viz

MAX_UPLOAD_MB = LIMITS.max_bytes // MB
MAX_RESUME_STEPS = 5000


# ---------------------------------------------------------------------------------------------
# Session, store and cached reads
# ---------------------------------------------------------------------------------------------


@st.cache_resource(show_spinner=False)
def _purged(root: str) -> bool:
    """Once per server process and runs directory, before this process writes there: what a
    killed server left half-written goes, then old scratch areas."""
    RunStore(root).recover()
    RunStore(root).purge()
    return True


@st.cache_resource(max_entries=16, show_spinner="Reading the run…")
def _bundle(path: str, size: int) -> Bundle:
    """A stored bundle, checked again (read-only; shared by sessions that may see it)."""
    return read_bundle(path)


@st.cache_resource(max_entries=16, show_spinner="Drawing the figures…")
def _figures(path: str, size: int) -> dict:
    return viz.run_figures(_bundle(path, size))


def _load(store: RunStore, info: RunInfo, session: str) -> Bundle:
    path = store.bundle_path(info.id, session)
    return _bundle(str(path), info.size)


def _labels(infos: list[RunInfo]) -> dict[str, str]:
    """A distinct display label per run id (runs may share a name: "name (2)")."""
    labels: dict[str, str] = {}
    for info in reversed(infos):  # oldest first keeps the plain name
        label, n = info.name, 2
        while label in labels.values():
            label, n = f"{info.name} ({n})", n + 1
        labels[info.id] = label
    return {i.id: labels[i.id] + ("" if i.saved else " · unsaved") for i in infos}


# ---------------------------------------------------------------------------------------------
# Sections
# ---------------------------------------------------------------------------------------------


def _import(store: RunStore, session: str) -> None:
    upload = st.file_uploader(
        "Import a run bundle (.zip)",
        type=["zip"],
        max_upload_size=MAX_UPLOAD_MB,
        key="runs_upload",
        help=f"A bundle from a lab's download button or `python -m dgs_core run` "
        f"(at most {MAX_UPLOAD_MB} MB).",
    )
    if upload is None or st.session_state.get("runs_last_upload") == upload.file_id:
        return
    st.session_state["runs_last_upload"] = upload.file_id  # one import per upload, not per rerun
    try:
        info = store.add(upload.getvalue(), session=session)
    except (SnapshotError, StoreError) as exc:
        st.session_state["runs_message"] = ("error", f"Could not import {upload.name}: {exc}")
        return
    st.session_state["runs_select_next"] = info.id
    st.session_state["runs_message"] = (
        "success",
        f"Imported “{info.name}” — unsaved: only this browser session sees it until you save it.",
    )


def _message() -> None:
    if (message := st.session_state.pop("runs_message", None)) is not None:
        (st.error if message[0] == "error" else st.success)(plain(message[1]))  # names are untrusted


def _run_table(infos: list[RunInfo]) -> None:
    st.dataframe(
        [
            {
                "name": i.name,
                "kind": i.kind,
                "runs": ", ".join(i.labels),
                "what": i.description,
                "saved": i.saved,
                "created": i.created,
                "MB": round(i.size / MB, 2),
            }
            for i in infos
        ],
        hide_index=True,
        width="stretch",
        column_config={"saved": st.column_config.CheckboxColumn("saved (shared)")},
        key="runs_table",
    )


def _actions(store: RunStore, info: RunInfo, bundle: Bundle, session: str) -> None:
    save, lab, download, tensorboard, delete = st.columns([1, 1, 1, 1, 1], vertical_alignment="bottom")
    if not info.saved and save.button(
        "Save (share)", key="runs_save", help="Every browser session will list it, and it gets a link"
    ):
        store.save(info.id, session=session)
        st.session_state["runs_message"] = ("success", f"Saved “{info.name}”: every session lists it now.")
        st.rerun()
    page = run_list.lab_of(bundle)
    if lab.button(
        "Open in its lab",
        key="runs_open_lab",
        disabled=page is None,
        help="its lab with the run's settings and results" if page else "no lab page shows this kind of run",
    ):
        run_list.open_in_lab(store, info, session)
    download.download_button(
        "Download bundle",
        data=store.data(info.id, session),
        mime="application/zip",
        on_click="ignore",
        file_name=f"{info.name[:60]}.zip".replace("/", "_"),
        key="runs_download",
    )
    tensorboard.download_button(
        "TensorBoard (.zip)",
        data=lambda: tensorboard_zip(bundle),
        mime="application/zip",
        file_name=f"{info.name[:60]}-tensorboard.zip".replace("/", "_"),
        key="runs_tensorboard",
        on_click="ignore",
        help="event files, one folder per optimizer: unzip, then `tensorboard --logdir .`",
    )
    confirm = delete.checkbox(
        "confirm", key=f"runs_delete_confirm_{info.id}", help="Deleting cannot be undone"
    )
    if delete.button("Delete", key="runs_delete", disabled=not confirm):
        store.delete(info.id, session=session)
        st.session_state["runs_message"] = ("success", f"Deleted “{info.name}”.")
        st.rerun()
    name, link = st.columns([1, 2], vertical_alignment="bottom")
    with name.form("runs_rename_form", border=False):
        new_name = st.text_input("Name", value=info.name, key=f"runs_name_{info.id}")
        if st.form_submit_button("Rename"):
            try:
                store.rename(info.id, new_name, session=session)
            except ValueError as exc:
                st.error(plain(exc))
            else:
                st.rerun()
    if info.saved:
        link.markdown("**Link to this run** (anyone with the link sees it)")
        link.code(run_list.run_link(info.id), language=None)
    else:
        link.caption("Unsaved: only this browser sees it. Save it to share it and get its link.")


def _resume(store: RunStore, bundle: Bundle, info: RunInfo, session: str) -> None:
    st.subheader("Resume training")
    st.caption(
        "Continues from the saved weights, optimizer state and data order; the result is a new "
        "unsaved run. On the CPU it equals a run trained for the longer length in one go."
    )
    config = bundle.trainer.config  # type: ignore[union-attr]  # training bundles have one
    room = max(0, min(MAX_RESUME_STEPS, config.max_steps - config.steps))
    left = config.steps - bundle.steps
    if room == 0 and left == 0:
        st.info(f"This run is at its max_steps cap ({config.max_steps}).")
        return
    more = st.number_input(
        "More steps",
        min_value=0 if left else 1,
        max_value=room,
        value=min(room, max(1, config.steps // 2)) if not left else 0,
        step=10,
        key="runs_resume_steps",
        help=f"Added to the configured {config.steps} steps"
        + (f"; {left} configured steps are still to go" if left else ""),
    )
    if not st.button("Resume", key="runs_resume"):
        return
    trainer = resume_trainer(bundle, extra_steps=int(more))
    bar = st.progress(0.0, text="training…")
    for event in trainer.run():
        bar.progress(event.step / event.total_steps, text=f"step {event.step}/{event.total_steps}")
    figures = viz.training_figures(trainer.results, trainer.task)
    data = export_training(trainer, figures=figures, name=f"{info.name} (to step {trainer.step})")
    try:
        resumed = store.add(data, session=session)
    except StoreError as exc:
        st.error(plain(exc))
        return
    st.session_state["runs_select_next"] = resumed.id  # the selectbox exists already: next run
    st.session_state["runs_message"] = (
        "success",
        f"Resumed to step {trainer.step}: “{resumed.name}” (unsaved).",
    )
    st.rerun()


def _step_slider(bundle: Bundle, info: RunInfo) -> int:
    """The step every figure of the run shows (the Training lab's scrubber)."""
    last = int(bundle.steps)
    if last < 2:
        return last
    key = f"runs_step_{info.id}"
    return int(
        st.slider(
            "Step — moves every panel", 1 if bundle.kind == "training" else 0, last, value=last, key=key
        )
    )


def _one_run(store: RunStore, infos: list[RunInfo], session: str) -> None:
    ids = [i.id for i in infos]
    linked = st.query_params.get("run")
    wanted = st.session_state.pop("runs_select_next", None) or linked or st.session_state.get("runs_selected")
    st.session_state["runs_selected"] = wanted if wanted in ids else ids[0]
    by_id, labels = {i.id: i for i in infos}, _labels(infos)
    chosen = st.selectbox("Run", ids, format_func=labels.get, key="runs_selected")
    info = by_id[chosen]
    if info.saved:  # the address bar holds the run's own link; never an unsaved run's
        st.query_params["run"] = info.id
    else:
        st.query_params.pop("run", None)
    try:
        bundle = _load(store, info, session)
    except SnapshotError as exc:  # the file on disk changed under us
        st.error(f"This stored run cannot be read: {plain(exc)}")
        return
    _actions(store, info, bundle, session)
    for note in bundle.notes:
        st.info(plain(note))
    st.dataframe(bundle.summary(), hide_index=True, width="stretch", key="runs_summary")
    if bundle.kind == "training":
        bundle_link(info.id)
        # a training bundle's trainer is set (kind checked above)
        run_panels(bundle.trainer, _step_slider(bundle, info), prefix="runs", version=info.id)  # type: ignore[arg-type]  # (reason above)
        _resume(store, bundle, info, session)
        return
    if bundle.kind == "surface":
        figures = viz.surface_figures(dict(bundle.runs or {}), step=_step_slider(bundle, info))
    else:
        figures = _figures(str(store.bundle_path(info.id, session)), info.size)
    for title, fig in figures.items():
        st.markdown(f"**{title}**")
        st.plotly_chart(fig, key=f"runs_fig_{title.lower().replace(' ', '_')}", config={"displaylogo": False})


# ---------------------------------------------------------------------------------------------
# The page
# ---------------------------------------------------------------------------------------------

st.title("Runs")
st.caption(
    "Every run you make in a lab is here at once, with imported bundles (from a lab's download or "
    "`python -m dgs_core run`) and resumed runs. They are unsaved: only this browser sees them "
    "until you save them; saved runs are shared with every session, each with its own link."
)
session = run_list.session_id()
store = RunStore()
_purged(str(store.root))
with st.spinner("Adding the labs' runs…"):
    for problem in run_list.store_offers(store, session):
        st.error(problem)
_import(store, session)
_message()
infos = store.list(session)
if not infos:
    st.info("No runs yet: run something in a lab, or import a bundle above.")
else:
    _run_table(infos)
    one, compare = st.tabs(["Run", "Compare"])
    with one:
        _one_run(store, infos, session)
    with compare:
        compare_section(infos, _labels(infos), lambda info: _load(store, info, session))
