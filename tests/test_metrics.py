"""SPEC §3 metrics on hand-made sequences and paths whose answers are known."""

from __future__ import annotations

import numpy as np
import pytest

from dgs_core import metrics


def test_spike_rule_and_runs_count_once() -> None:
    # W = 3: step 2 (2.0 > 1.5·median(1, 0.9)=1.425·…) and step 3 form one run; step 6 is another.
    losses = [1.0, 0.9, 2.0, 2.1, 0.8, 0.7, 3.0, 0.6]
    mask = metrics.spike_mask(losses, window=3)
    assert mask.tolist() == [False, False, True, True, False, False, True, False]
    assert metrics.count_spikes(losses, window=3) == 2


def test_spike_threshold_is_one_plus_tau_times_window_median() -> None:
    base = [1.0] * 25
    at_threshold = [*base, 1.5]  # equal to (1 + τ)·median: not a spike (strictly greater)
    above = [*base, 1.5001]
    assert metrics.count_spikes(at_threshold) == 0
    assert metrics.count_spikes(above) == 1
    # the median uses the last W = 20 values only: old large values do not hide a spike
    history = [100.0] * 15 + [1.0] * 15  # last 20: median 1; last 30: median 50.5
    assert metrics.spike_mask([*history, 1.6])[-1]
    assert metrics.count_spikes([*history, 1.6], window=30) == 0


def test_spikes_on_a_batch_equal_per_column() -> None:
    rng = np.random.default_rng(0)
    losses = np.exp(rng.normal(size=(200, 5)))
    batched = metrics.count_spikes(losses)
    assert batched.shape == (5,)
    assert batched.tolist() == [metrics.count_spikes(losses[:, j]) for j in range(5)]
    assert batched.sum() > 0


def test_non_finite_losses_are_not_spikes_and_leave_the_median() -> None:
    losses = [1.0, 1.0, np.nan, np.inf, 1.0, 2.0]
    mask = metrics.spike_mask(losses, window=3)
    assert mask.tolist() == [False, False, False, False, False, True]


@pytest.mark.parametrize("window", [1, 2, 3, 20, 21])
def test_spike_medians_equal_numpys(window: int) -> None:
    # the finite path's sort-based median must give np.median's value bit for bit
    rng = np.random.default_rng(window)
    losses = np.exp(rng.normal(size=(120, 3)) * 3)
    windows = np.lib.stride_tricks.sliding_window_view(losses[:-1], window, axis=0)
    medians = np.median(windows, axis=-1)
    expected = losses[window:] > 1.5 * medians
    assert (metrics.spike_mask(losses, window=window)[window:] == expected).all()
    for t in range(1, window):
        assert (
            metrics.spike_mask(losses[: t + 1], window=window)[t]
            == (losses[t] > 1.5 * np.median(losses[:t], axis=0))
        ).all()


@pytest.mark.parametrize("since", [0, 1, 3, 19, 20, 21, 57, 199, 200, 250])
def test_spike_mask_since_judges_only_the_later_steps(since: int) -> None:
    rng = np.random.default_rng(1)
    losses = np.exp(rng.normal(size=200))
    losses[[30, 31, 120]] *= 10.0  # sure spikes
    full = metrics.spike_mask(losses)
    part = metrics.spike_mask(losses, since=since)
    assert part.tolist() == [False] * min(since, 200) + full[since:].tolist()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"window": 0}, "window"), ({"tau": -1.0}, "tau"), ({"since": -1}, "since"), ({"since": 1.5}, "since")],
)
def test_spike_arguments_are_validated(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=f"Invalid {match}"):
        metrics.spike_mask([1.0, 2.0], **kwargs)


def test_count_runs() -> None:
    assert metrics.count_runs([False, True, True, False, True]) == 2
    assert metrics.count_runs([]) == 0
    assert metrics.count_runs(np.array([[1, 0], [1, 1], [0, 1], [1, 0]], dtype=bool)).tolist() == [2, 1]


def _bowl_grad(points: np.ndarray) -> np.ndarray:
    return 2 * np.asarray(points, dtype=float)  # f = x² + y²


def test_overshoot_on_hand_paths() -> None:
    crossing = np.array([[2.0, 0.0], [-1.0, 0.0], [0.5, 0.0], [0.25, 0.0]])
    # step 1 jumps over the floor (∇f(x1)=(-2,0), Δ=(-3,0): +6), step 2 too (+3),
    # step 3 stays on the near side (∇f=(0.5,0), Δ=(-0.25,0): −)
    mask = metrics.overshoot_mask(crossing, _bowl_grad(crossing))
    assert mask.tolist() == [True, True, False]
    assert metrics.event_fraction(mask) == pytest.approx(2 / 3)
    # grads may be given at points[1:] only
    assert metrics.overshoot_mask(crossing, _bowl_grad(crossing[1:])).tolist() == [True, True, False]
    descending = np.array([[2.0, 1.0], [1.0, 0.5], [0.5, 0.25]])
    assert not metrics.overshoot_mask(descending, _bowl_grad(descending)).any()


def test_overshoot_shape_mismatch_is_refused() -> None:
    with pytest.raises(ValueError, match="Invalid grads"):
        metrics.overshoot_mask(np.zeros((4, 2)), np.zeros((2, 2)))


def test_oscillation_on_a_zigzag() -> None:
    zigzag = np.array([[0, 0], [1, 1], [2, 0], [3, 1], [4, 1], [5, 1]], dtype=float)
    # Δ: (1,1), (1,−1), (1,1), (1,0), (1,0): cosines 0, 0, + , + → no reversal yet
    assert not metrics.oscillation_mask(zigzag).any()
    back_and_forth = np.array([[0, 0], [1, 0], [0.2, 0], [0.8, 0], [0.9, 0]], dtype=float)
    assert metrics.oscillation_mask(back_and_forth).tolist() == [False, True, True, False]
    # a zero-length step has no direction and never counts
    still = np.array([[0, 0], [1, 0], [1, 0], [0, 0]], dtype=float)
    assert not metrics.oscillation_mask(still).any()


def test_batched_paths() -> None:
    path = np.array([[2.0, 0.0], [-1.0, 0.0], [0.5, 0.0]])
    batch = np.stack([path, path * 0.5 + 0.5], axis=1)  # (T+1, N=2, 2)
    mask = metrics.overshoot_mask(batch, _bowl_grad(batch))
    assert mask.shape == (2, 2)
    assert mask[:, 0].tolist() == metrics.overshoot_mask(path, _bowl_grad(path)).tolist()
    assert metrics.oscillation_mask(batch).shape == (2, 2)


def test_steps_to_target() -> None:
    assert metrics.steps_to_target([5.0, 2.0, 0.5, 0.1], 1.0) == 2
    assert metrics.steps_to_target([5.0, 2.0], 1.0) == metrics.NOT_REACHED
    assert metrics.steps_to_target([5.0, np.nan, 0.5], 1.0) == 2
    batch = np.array([[3.0, 3.0], [0.5, 2.0], [0.1, 2.0]])
    assert metrics.steps_to_target(batch, 1.0).tolist() == [1, -1]


def test_divergence() -> None:
    assert metrics.first_nonfinite([1.0, 2.0, np.inf, np.nan]) == 2
    assert metrics.first_nonfinite([1.0, 2.0]) == -1
    points = np.zeros((5, 2, 2))
    points[3, 1, 0] = np.nan
    assert metrics.first_nonfinite(points).tolist() == [-1, 3]
    assert metrics.divergence_message(7) == "diverged at step 7"
    assert metrics.divergence_message(-1) == ""


def test_event_fraction_with_per_run_steps() -> None:
    mask = np.array([[True, False], [True, False], [False, False]])
    assert metrics.event_fraction(mask, np.array([2, 0])).tolist()[0] == 1.0
    assert np.isnan(metrics.event_fraction(mask, np.array([2, 0]))[1])


def test_scalar_input_is_refused() -> None:
    with pytest.raises(ValueError, match="Invalid losses"):
        metrics.spike_mask(3.0)
