"""AppTest for the home page: it lists every registered optimizer, interpretations flagged."""

from __future__ import annotations

from dgs_core.optim import registry
from tests.pages.conftest import app_at


def test_home_lists_every_optimizer() -> None:
    at = app_at()
    at.run()
    assert not at.exception
    assert at.title[0].value == "DGS Lab"
    table = at.dataframe[0].value
    assert list(table["key"]) == registry.names()
    flagged = set(table.loc[table["interpretation"], "key"])
    assert flagged == {info.name for info in registry.infos() if info.interpretation}
    assert "dgs" in flagged
