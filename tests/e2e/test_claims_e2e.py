"""Claims page in a real browser: every card is there, a smoke-budget Re-run of one claim shows
its progress and then the card's refreshed result, and nothing on the page raised."""

from __future__ import annotations

import pytest

from dgs_core.claims import CLAIMS
from tests.e2e.conftest import wait_for_app

pytestmark = pytest.mark.e2e

NAME = "extrap_large_batch"  # the quickest claim at the smoke budget


def _element(key: str) -> str:
    """The keyed element's container (Streamlit adds the class st-key-<key>), skipping the stale
    copy Streamlit may keep for a moment after a rerun."""
    return f".st-key-{key}:not([data-stale='true'])"


def test_claims_page_reruns_one_claim(server, page) -> None:
    # a fresh server's first session runs the main page first (see test_deeplinks)
    page.goto(server.url)
    wait_for_app(page)
    page.goto(f"{server.url}/claims")
    wait_for_app(page)
    page.get_by_role("heading", name="Claims").first.wait_for()
    for claim in CLAIMS:
        card = page.locator(_element(f"claims_card_{claim.name}"))
        card.wait_for()
        assert f"{claim.number}. {claim.title}" in card.locator("h3").first.inner_text()
    assert page.locator("[data-testid='stException']").count() == 0

    card = page.locator(_element(f"claims_card_{NAME}"))
    card.locator(_element(f"claims_{NAME}_rerun")).get_by_role("button").click()
    # the progress bar with its status line, then the refreshed card
    card.locator("[data-testid='stProgress']").first.wait_for(timeout=120_000)
    card.get_by_text("this session's re-run (not saved)").first.wait_for(timeout=240_000)
    wait_for_app(page)
    text = card.inner_text()
    assert "finished:" in text and "smoke budget" in text
    assert "The shipped result stays on disk" in text or "no result yet" not in text
    card.locator(".js-plotly-plot").first.wait_for(timeout=120_000)
    assert page.locator("[data-testid='stException']").count() == 0
    assert "failed" not in card.locator("[data-testid='stProgress']").first.inner_text()
