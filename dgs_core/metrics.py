"""Run metrics of docs/algorithms.md#metrics: loss spikes, overshoot, oscillation, steps to ε, divergence.

Pure numpy. Every function takes time along axis 0 and works on a single sequence or on a
batch of independent runs along the trailing axes:

* losses: ``(T,)`` for one run or ``(T, N)`` for N runs (the training lab passes plain 1-D
  loss lists; the surface lab passes its ``(T + 1, N)`` loss array);
* points: ``(T + 1, d)`` or ``(T + 1, N, d)``, a path of T steps in d dimensions.

>>> import numpy as np
>>> from dgs_core import metrics
>>> losses = np.array([1.0, 0.9, 2.0, 2.1, 0.8, 0.7, 3.0])
>>> metrics.count_spikes(losses, window=3)      # steps 2-3 are one run, step 6 another
2
>>> metrics.steps_to_target(losses, 0.85)
4
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from dgs_core.params import invalid

Array = np.ndarray

SPIKE_WINDOW = 20  # W, docs/algorithms.md#metrics
SPIKE_TAU = 0.5  # τ, docs/algorithms.md#metrics
NOT_REACHED = -1  # steps_to_target / first_nonfinite when the event never happens


def _time_major(values: Any, name: str) -> Array:
    array = np.asarray(values, dtype=float)
    if array.ndim == 0:
        raise ValueError(f"Invalid {name}: a scalar (must be a sequence over steps)")
    return array


def spike_mask(losses: Any, *, window: int = SPIKE_WINDOW, tau: float = SPIKE_TAU, since: int = 0) -> Array:
    """Which steps are loss spikes: ``L_t > (1 + τ)·median(L_{t−W} … L_{t−1})``.

    The first ``W`` steps use the history they have (at least one previous loss), so a short
    run can still show a spike. Non-finite losses are never spikes (divergence is reported on
    its own); a non-finite loss in the window is left out of the median. The rule assumes
    losses ≥ 0: on a 2-D surface pass the gap f − f*.

    Args:
        losses: ``(T,)`` or ``(T, N)``.
        window: W ≥ 1, the number of previous losses in the median (default 20).
        tau: τ ≥ 0, the relative jump that counts as a spike (default 0.5).
        since: judge only the steps from ``since`` on (the earlier ones are False): for a
            caller that already has the earlier flags and passes a window of history.

    Returns:
        A boolean array shaped like ``losses``; step 0 is never a spike.
    """
    if int(window) != window or window < 1:
        raise invalid("window", window, "an integer >= 1")
    if not (np.isfinite(tau) and tau >= 0):
        raise invalid("tau", tau, ">= 0")
    if int(since) != since or since < 0:
        raise invalid("since", since, "an integer >= 0")
    window, since = int(window), int(since)
    values = _time_major(losses, "losses")
    finite = np.isfinite(values)
    history = np.where(finite, values, np.nan)
    medians = np.full(values.shape, np.nan)
    steps = values.shape[0]
    # A sort is several times faster than np.nanmedian (and than np.median, for small windows);
    # use it when nothing is missing.
    median = _median if finite.all() else np.nanmedian
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN window: no median, no spike
        # Short histories first (t < W, at most W small medians), then every full window at once.
        for t in range(max(1, since), min(window, steps)):
            medians[t] = median(history[:t], axis=0)
        first = max(window, since)  # the first full window judged
        if steps > first:
            windows = np.lib.stride_tricks.sliding_window_view(history[first - window : -1], window, axis=0)
            medians[first:] = median(windows, axis=-1)
        return finite & (values > (1.0 + tau) * medians)


def _median(values: Array, axis: int) -> Array:
    """``np.median`` of finite values, bit for bit: the middle order statistic, or the mean of
    the two middle ones (their sum halved, as ``np.median`` takes it)."""
    ordered = np.sort(values, axis=axis)
    n = ordered.shape[axis]
    upper = np.take(ordered, n // 2, axis=axis)
    if n % 2:
        return upper
    return (np.take(ordered, n // 2 - 1, axis=axis) + upper) / 2.0


def count_runs(mask: Any) -> Any:
    """Number of runs of consecutive ``True`` along axis 0 (each run counts once).

    ``(T,)`` → int; ``(T, N)`` → ``(N,)`` ints.
    """
    flags = np.asarray(mask, dtype=bool)
    starts = flags.copy()
    starts[1:] &= ~flags[:-1]
    counts = starts.sum(axis=0)
    return int(counts) if np.ndim(counts) == 0 else counts


def count_spikes(losses: Any, *, window: int = SPIKE_WINDOW, tau: float = SPIKE_TAU) -> Any:
    """Loss spikes K (docs/algorithms.md#metrics): spike steps, a run of consecutive ones counting once."""
    return count_runs(spike_mask(losses, window=window, tau=tau))


def overshoot_mask(points: Any, grads: Any) -> Array:
    """Overshoot events: the step passed the valley floor along its own direction.

    ``⟨∇f(x_{t+1}), x_{t+1} − x_t⟩ > 0`` for t = 0 … T−1.

    Args:
        points: the path, ``(T + 1, …, d)``.
        grads: ∇f at every point of the path, same shape (``grads[0]`` is not used), or at
            ``points[1:]`` only, shape ``(T, …, d)``.

    Returns:
        ``(T, …)`` booleans; entry t−1 describes the step x_{t−1} → x_t.
    """
    path = _time_major(points, "points")
    gradients = _time_major(grads, "grads")
    if gradients.shape[0] == path.shape[0]:
        gradients = gradients[1:]
    if gradients.shape != path[1:].shape:
        raise ValueError(f"Invalid grads: shape {gradients.shape} (must match points {path.shape})")
    with np.errstate(all="ignore"):
        return np.sum(gradients * np.diff(path, axis=0), axis=-1) > 0


def oscillation_mask(points: Any) -> Array:
    """Oscillation: consecutive steps point in opposite directions, ``cos(Δ_t, Δ_{t−1}) < 0``.

    ``points`` ``(T + 1, …, d)`` → ``(T, …)`` booleans; entry t−1 describes step t, the first
    step is never an oscillation, and a zero-length step has no direction (never counts).
    """
    path = _time_major(points, "points")
    deltas = np.diff(path, axis=0)
    out = np.zeros(deltas.shape[:-1], dtype=bool)
    with np.errstate(all="ignore"):
        # cos < 0 ⇔ the dot product < 0 (norms are positive when the dot product is non-zero)
        out[1:] = np.sum(deltas[1:] * deltas[:-1], axis=-1) < 0
    return out


def event_fraction(mask: Any, steps: Any = None) -> Any:
    """Fraction of steps with an event; ``steps`` (per run) overrides the mask's length.

    Returns NaN where a run has no step.
    """
    flags = np.asarray(mask, dtype=bool)
    total = flags.shape[0] if steps is None else np.asarray(steps)
    with np.errstate(all="ignore"):
        fraction = flags.sum(axis=0) / np.where(np.asarray(total) > 0, total, np.nan)
    return float(fraction) if np.ndim(fraction) == 0 else fraction


def steps_to_target(values: Any, target: float) -> Any:
    """First step t with ``values[t] < target``; :data:`NOT_REACHED` (−1) if never.

    On a 2-D surface pass the gap f − f* and ε ("steps to ε"); on a model run, the loss and
    the target loss. ``(T,)`` → int, ``(T, N)`` → ``(N,)`` ints.
    """
    array = _time_major(values, "values")
    with np.errstate(invalid="ignore"):
        below = array < target
    return _first_true(below)


def first_nonfinite(values: Any) -> Any:
    """Divergence: first step whose value (any trailing coordinate) is NaN or ±inf, else −1.

    ``(T,)`` → int; ``(T, N)`` → ``(N,)``; ``(T, N, d)`` (points) → ``(N,)``.
    """
    array = _time_major(values, "values")
    bad = ~np.isfinite(array)
    while bad.ndim > 2:
        bad = bad.any(axis=-1)
    return _first_true(bad)


def divergence_message(step: int) -> str:
    """``"diverged at step t"``, or ``""`` for a run that did not diverge (step < 0)."""
    return f"diverged at step {int(step)}" if step is not None and step >= 0 else ""


def _first_true(flags: Array) -> Any:
    hit = flags.any(axis=0)
    first = np.where(hit, np.argmax(flags, axis=0), NOT_REACHED)
    return int(first) if np.ndim(first) == 0 else first.astype(np.int64)
