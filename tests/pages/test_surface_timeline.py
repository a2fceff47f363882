"""The Surface lab's timeline component: what the browser's click may move (it is untrusted)."""

from __future__ import annotations

import math

import pytest

from app_pages.parts.surface_timeline import start_from_event


@pytest.mark.parametrize(
    "value",
    [None, "1,2", [1.0], [1.0, 2.0, 3.0], [math.nan, 1.0], [1.0, math.inf], ["1", 2], [True, 1.0], {"x": 1}],
)
def test_anything_but_two_finite_numbers_moves_nothing(value) -> None:
    assert start_from_event(value) is None


def test_two_numbers_are_the_start() -> None:
    assert start_from_event([-0.8, 2]) == (-0.8, 2.0)
    assert start_from_event((1, 1.5)) == (1.0, 1.5)
