"""One card of the Claims page: the claim, its experiment, the rule, the figure, the verdict.

Widgets in → :class:`~dgs_core.claims.ClaimRun` as a background job (:mod:`app_pages.live`,
one slot per claim: ``claims_<name>``, its id in the URL) → :mod:`dgs_core.viz.claims`. The card
shows the shipped result (``assets/claims/<name>/``) until a re-run of this session finishes;
the re-run's result is shown, not written (``python -m dgs_core claims`` writes results).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import pandas as pd
import streamlit as st

from app_pages import live
from dgs_core import jobs
from dgs_core.claims import BUDGETS, Claim, ClaimRun, get_claim, load_result
from dgs_core.claims.verdicts import DOES_NOT_HOLD, HOLDS, INCONCLUSIVE, PARTLY
from dgs_core.studies import study_job
from dgs_core.studies.annealing_lab import LINK_PARAM, annealing_lab_config
from dgs_core.surfaces.config import SurfaceConfig
from dgs_core.training.config import TrainConfig
from dgs_core.viz.claims import claim_figure

PERIOD_SECONDS = 1.0  # progress redraws while a claim re-runs
BADGES = {
    HOLDS: ":green-badge[holds]",
    PARTLY: ":orange-badge[partly]",
    DOES_NOT_HOLD: ":red-badge[does not hold at this scale]",
    INCONCLUSIVE: ":gray-badge[inconclusive]",
}
WHERE = {"this process": "in one process, one run after another", "Ray": "on Ray (embedded, or the address)"}
LAB_PAGES = {"training": "training", "annealing": "annealing", "surface": "surface"}


def slot(claim: Claim) -> live.Slot:
    return live.Slot(
        f"claims_{claim.name}", building="the claim's plan", noun="re-run", start_label="Re-run", short=True
    )


@st.cache_data(max_entries=16, show_spinner=False)
def shipped(name: str) -> tuple[dict[str, Any], dict[str, pd.DataFrame]] | None:
    """The shipped result of claim ``name`` (record, tables), or None."""
    stored = load_result(name)
    return None if stored is None else (stored.record, stored.tables)


def _live_result(job: jobs.Job | None) -> tuple[dict[str, Any], dict[str, pd.DataFrame]] | None:
    run = job.payload if job is not None else None
    if isinstance(run, ClaimRun) and run.result is not None:
        return run.result.record, run.result.tables
    return None


def _made(record: dict[str, Any], current_hash: str) -> str:
    version = record["code_version"]
    commit = (version.get("git_commit") or "")[:8] or "unknown commit"
    dirty = " with uncommitted changes" if version.get("git_dirty") else ""
    text = (
        f"{record['budget']} budget · made {record['created'].replace('T', ' ')} by dgs_core "
        f"{version['dgs_core']} ({commit}{dirty}), torch {record['torch']} · {record['seconds']:.0f} s "
        f"{record['engine']} · seeds {', '.join(map(str, record['seeds']))} · config {record['config_hash']}"
    )
    if record["config_hash"] != current_hash:
        text += " ⚠ made by other settings than the current code's"
    return text


def _findings(record: dict[str, Any]) -> None:
    verdict = record["verdict"]
    lines = [f"**Verdict: {BADGES.get(verdict['outcome'], verdict['outcome'])}** — from these findings:"]
    for finding in verdict["findings"]:
        lines.append(
            f"- {BADGES.get(finding['outcome'], finding['outcome'])} {finding['criterion']}: "
            f"`{finding['detail']}`"
        )
    st.markdown("\n".join(lines))
    st.caption("Numbers: mean [95 % interval], n (seeds or starts).")


def _experiments(record: dict[str, Any]) -> None:
    with st.expander("The experiment's configurations (open them in the labs)"):
        for item in record.get("experiments", []):
            label, lab, config = item["label"], item["lab"], item["config"]
            if lab == "surface":
                query = SurfaceConfig.from_dict(config).to_query()
                st.markdown(f"- [{label}](/surface?{urlencode(query)}) — opens in the Surface lab")
            elif lab == "training":  # the Training lab trains a link's configuration (cfg=)
                link = urlencode({"cfg": TrainConfig.from_dict(config).to_link()})
                st.markdown(f"- [{label}](/training?{link}) — opens in the Training lab and trains it")
            else:  # annealing: the lab opens its two-phase tab with these settings
                link = urlencode({LINK_PARAM: annealing_lab_config("two_phase", config).to_link()})
                st.markdown(f"- [{label}](/annealing?{link}) — opens in the Annealing lab's two-phase tab")
        st.caption("Numbers behind the verdict (plain JSON, as stored):")
        st.json(record["numbers"], expanded=False)


def _rerun_controls(claim: Claim) -> None:
    key = f"claims_{claim.name}"
    cols = st.columns([1, 1, 2, 1], vertical_alignment="bottom")
    budget = cols[0].selectbox(
        "Budget",
        BUDGETS,
        key=f"{key}_budget",
        help="smoke: seconds, a small version of the experiment; full: the shipped experiment (minutes)",
    )
    where = cols[1].selectbox(
        "Where", list(WHERE), key=f"{key}_where", help="; ".join(f"{k}: {v}" for k, v in WHERE.items())
    )
    address = cols[2].text_input(
        "Ray address (optional)",
        key=f"{key}_address",
        placeholder="host:port; empty: embedded Ray",
        disabled=where != "Ray",
    )
    if cols[3].button("Re-run", key=f"{key}_rerun", type="primary"):
        in_process = where == "this process"
        address_or_none = (address or "").strip() or None

        def build() -> ClaimRun:  # in the job's thread
            return ClaimRun(claim, budget, address=address_or_none, in_process=in_process)

        job = study_job(build, name=f"claim-{claim.name}", idle_stop_s=live.IDLE_STOP_SECONDS)
        live.start(slot(claim), job)


def _draw_status(claim_slot: live.Slot, job: jobs.Job) -> None:
    live.status(claim_slot, job)
    if job.running:
        last = f" · last finished: {job.latest.event} · {job.latest.run}" if job.latest is not None else ""
        st.caption(f"Counted in pieces of work (tuning trials, measured runs, surfaces), not steps{last}")


@st.cache_data(max_entries=32, show_spinner=False)
def config_hash(name: str, budget: str) -> str:
    """The current code's config hash of claim ``name`` at ``budget``."""
    return get_claim(name).plan_for(budget).config_hash


def claim_card(claim: Claim) -> None:
    """The card: claim, source, experiment, rule, the result shown (live or shipped) and Re-run."""
    claim_slot = slot(claim)
    job = live.current(claim_slot)
    fresh = _live_result(job)
    stored = shipped(claim.name)
    shown = fresh or stored
    with st.container(border=True, key=f"claims_card_{claim.name}"):
        head = BADGES.get(shown[0]["verdict"]["outcome"], "") if shown else "no result yet"
        st.subheader(f"{claim.number}. {claim.title} — {head}", anchor=claim.name)
        source = claim.source
        cited = f"[{source.citation}]({source.url})" if source.url.startswith("http") else source.citation
        st.markdown(f"> {claim.quote}\n>\n> — {cited} ({source.where})")
        left, right = st.columns([2, 3])
        with left:
            st.markdown(f"**Experiment.** {claim.experiment}")
            st.markdown(f"**Verdict rule (stated before any result).** {claim.rule}")
            st.info(f"**Interpretation and departures.** {claim.note}")
        with right:
            if shown is None:
                st.warning(f"No shipped result: run `python -m dgs_core claims {claim.name}`.")
            else:
                record, tables = shown
                origin = "this session's re-run (not saved)" if fresh else "shipped result"
                st.caption(f"**{origin}** · {_made(record, config_hash(claim.name, record['budget']))}")
                if fresh and stored:
                    st.caption(
                        f"The shipped result stays on disk: {BADGES[stored[0]['verdict']['outcome']]}."
                    )
                version = (
                    claim.name,
                    record["created"],
                    record["config_hash"],
                    record["budget"],
                    bool(fresh),
                )
                live.chart(f"claims_{claim.name}_figure", version, lambda: claim_figure(claim, tables))
                _findings(record)
        if shown is not None:
            _experiments(shown[0])
        _rerun_controls(claim)
        live.watch(claim_slot, lambda job: _draw_status(claim_slot, job), period=PERIOD_SECONDS)
