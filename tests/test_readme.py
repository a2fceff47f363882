"""The README stays true: its optimizer table is the registry's, its commands are CI's."""

from __future__ import annotations

import re
from pathlib import Path

from dgs_core.viz.tables import optimizer_markdown

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _between(marker: str) -> str:
    match = re.search(rf"<!-- {marker}:start -->\n(.*?)\n?<!-- {marker}:end -->", README, re.S)
    assert match, f"README lacks the {marker} markers"
    return match.group(1).strip()


def test_optimizer_table_matches_registry() -> None:
    # Regenerate with:
    # .venv/bin/python -c "from dgs_core.viz.tables import optimizer_markdown as m; print(m())"
    assert _between("optimizer-table") == optimizer_markdown()


def test_ci_runs_the_readme_test_command() -> None:
    assert "    bash tests/run.sh\n" in README
    ci = (ROOT / ".ci" / "run").read_text()
    commands = [ln for ln in ci.splitlines() if ln.strip() and not ln.startswith(("#", "set ", "cd "))]
    assert commands == ["exec bash tests/run.sh"]


def test_requirements_pin_torch() -> None:
    reqs = (ROOT / "requirements.txt").read_text().splitlines()
    assert "torch==2.13.0" in reqs
    assert not any(r.startswith("torchvision") for r in reqs)
