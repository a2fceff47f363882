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


def test_home_shows_where_each_optimizer_departs_from_its_official_code() -> None:
    at = app_at()
    at.run()
    frame = at.dataframe[0]
    assert "departs from the official code" in frame.proto.column_order  # shown, not only sent
    table = frame.value.set_index("key")
    for info in registry.infos():
        assert table.loc[info.name, "departs from the official code"] == "; ".join(info.departures)
    assert len(table) == 20
    assert table.loc["muon", "departs from the official code"].startswith("Newton–Schulz")


def test_home_states_only_what_its_race_shows_and_starts_lesson_one() -> None:
    from dgs_core.lessons import load_lessons
    from dgs_core.surfaces.config import SurfaceConfig
    from dgs_core.viz.lessons import race_caption

    at = app_at()
    at.run()
    assert not at.exception
    captions = [c.value for c in at.caption]
    race = SurfaceConfig(surface="rosenbrock", optimizers=("sgd", "momentum", "adam", "adan", "dgs"))
    assert race_caption(race.simulate()) in captions  # the race of app_pages/home.py, run here
    assert not any("overshoot less" in m.value for m in at.markdown)
    first = load_lessons()[0][0]
    assert any(first.title in m.value for m in at.markdown)
    assert len(at.get("plotly_chart")) == 1
