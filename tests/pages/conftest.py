"""AppTest helpers: the whole app (app.py with its navigation), switched to one page."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from dgs_core.workers import MODE_ENV

APP = str(Path(__file__).resolve().parents[2] / "app.py")


def app_at(page: str | None = None, *, timeout: float = 120) -> AppTest:
    """An AppTest of app.py, switched to ``page`` (e.g. "app_pages/surface_lab.py"), not yet run."""
    at = AppTest.from_file(APP, default_timeout=timeout)
    if page is not None:
        at.switch_page(page)
    return at


def shown(text: str) -> str:
    """What a reader sees of a Markdown element's text: the pages escape untrusted text
    (``app_pages.ui.plain``), and Markdown shows ``\\[`` as ``[``."""
    return re.sub(r"\\(.)", r"\1", text)


@pytest.fixture(autouse=True)
def _train_in_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """AppTest runs the pages in this process: their training jobs train in the job's thread
    (the same numbers; tests/test_workers.py covers the worker processes, the e2e tests both)."""
    monkeypatch.setenv(MODE_ENV, "0")
