"""Claims page (AppTest): seven cards from the shipped results, and a Re-run at the smoke budget
that replaces the card's result with this session's while the shipped one stays on disk."""

from __future__ import annotations

from urllib.parse import unquote

import pytest
from streamlit.testing.v1 import AppTest

from dgs_core import jobs
from dgs_core.claims import CLAIMS, load_result
from dgs_core.training.config import TrainConfig
from tests.pages.conftest import app_at

PAGE = "app_pages/claims.py"


@pytest.fixture
def at() -> AppTest:
    app = app_at()
    app.run()  # the navigation registers on the first run; only then can the test switch page
    app.switch_page(PAGE).run()
    assert not app.exception, app.exception
    return app


def test_every_claim_has_a_card_with_its_verdict(at: AppTest) -> None:
    headers = [h.value for h in at.subheader]
    assert len(headers) == len(CLAIMS) == 7
    for claim, header in zip(CLAIMS, headers, strict=True):
        assert header.startswith(f"{claim.number}. {claim.title}")
        stored = load_result(claim.name)
        if stored is not None:
            assert stored.verdict.outcome in header
    assert any("Interpretation and departures" in i.value and "interpretation" in i.value for i in at.info)


def test_a_smoke_rerun_shows_its_own_result(at: AppTest) -> None:
    name = "extrap_large_batch"
    at.selectbox(key=f"claims_{name}_budget").set_value("smoke")
    at.selectbox(key=f"claims_{name}_where").set_value("this process")
    at.button(key=f"claims_{name}_rerun").click().run()
    job = jobs.JOBS.get(at.session_state[f"claims_{name}_job"])
    assert job is not None
    assert job.join(240.0) and job.state == jobs.DONE, job.error
    at.run()
    assert not at.exception, at.exception
    captions = " ".join(c.value for c in at.caption)
    assert "this session's re-run (not saved)" in captions and "smoke budget" in captions
    outcome = job.payload.result.verdict.outcome
    header = next(h.value for h in at.subheader if h.value.startswith("3."))
    assert outcome in header


def test_a_cards_training_runs_open_in_the_training_lab_with_their_exact_configuration(at: AppTest) -> None:
    links = [
        m.value
        for m in at.markdown
        if "](/training?cfg=" in m.value and "opens in the Training lab" in m.value
    ]
    stored = [e for c in CLAIMS if (r := load_result(c.name)) for e in r.record["experiments"]]
    training = [e for e in stored if e["lab"] == "training"]
    assert training and len(links) == len(training)
    for text, experiment in zip(links, training, strict=True):
        cfg = unquote(text.split("cfg=", 1)[1].split(")", 1)[0])
        assert TrainConfig.from_link(cfg) == TrainConfig.from_dict(experiment["config"])


def test_the_annealing_claim_opens_in_the_annealing_lab_with_its_exact_settings(at: AppTest) -> None:
    from dgs_core.studies.annealing import TwoPhaseSettings
    from dgs_core.studies.annealing_lab import AnnealingLabConfig

    links = [m.value for m in at.markdown if "](/annealing?anneal=" in m.value]
    stored = [e for c in CLAIMS if (r := load_result(c.name)) for e in r.record["experiments"]]
    annealing = [e for e in stored if e["lab"] == "annealing"]
    assert annealing and len(links) == len(annealing)
    for text, experiment in zip(links, annealing, strict=True):
        opened = AnnealingLabConfig.from_link(unquote(text.split("anneal=", 1)[1].split(")", 1)[0]))
        assert opened.tab == "two_phase"
        assert opened.two_phase == TwoPhaseSettings.from_dict(experiment["config"])
