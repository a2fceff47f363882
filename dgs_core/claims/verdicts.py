"""Verdicts from numbers: 95 % intervals over seeds, the rules that read them, and how they combine.

Every claim states its rule in words before it runs (``Claim.rule``) and computes its verdict
with the functions here, so a rule is a few lines a reader can check against its sentence
(docs/algorithms.md#claims). The four outcomes:

* ``holds`` — the numbers support the claim at this scale;
* ``partly`` — some of what the claim says holds, some does not (or cannot be told);
* ``does not hold at this scale`` — the numbers contradict it here (small tasks, small budgets);
* ``inconclusive`` — the compared quantities cannot be told apart (their intervals overlap).

>>> interval([1.0, 2.0, 3.0]).mean
2.0
>>> below(interval([-0.3, -0.2, -0.25, -0.22, -0.28]))
'holds'
>>> combine(["holds", "inconclusive"])
'partly'
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

HOLDS = "holds"
PARTLY = "partly"
DOES_NOT_HOLD = "does not hold at this scale"
INCONCLUSIVE = "inconclusive"
OUTCOMES = (HOLDS, PARTLY, DOES_NOT_HOLD, INCONCLUSIVE)
CONFIDENCE = 0.95


@dataclass(frozen=True)
class Interval:
    """The mean of ``n`` values and its 95 % t-interval [low, high] (±inf when n < 2)."""

    mean: float
    low: float
    high: float
    n: int

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON: non-finite ends become None (JSON has no infinity)."""
        return {k: _finite_or_none(getattr(self, k)) for k in ("mean", "low", "high")} | {"n": self.n}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Interval:
        mean = data["mean"]
        return cls(
            mean=math.nan if mean is None else float(mean),
            low=-math.inf if data["low"] is None else float(data["low"]),
            high=math.inf if data["high"] is None else float(data["high"]),
            n=int(data["n"]),
        )

    def describe(self, digits: int = 3) -> str:
        """``0.412 [0.305, 0.519], n = 5``."""

        def fmt(x: float) -> str:
            return f"{x:.{digits}g}" if math.isfinite(x) else ("−∞" if x < 0 else "∞")

        return f"{fmt(self.mean)} [{fmt(self.low)}, {fmt(self.high)}], n = {self.n}"


def _finite_or_none(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def interval(values: Iterable[float]) -> Interval:
    """Mean and 95 % interval of the mean, ``mean ± t₀.₉₇₅(n − 1)·s/√n`` (Student's t).

    Non-finite values are a bug upstream (a claim turns "never reached" into a number first),
    so they raise. Fewer than two values give an interval of (−∞, ∞): nothing can be told.
    """
    array = np.asarray(list(values), dtype=float)
    if not np.isfinite(array).all():
        raise ValueError(f"Invalid values: {array.tolist()} (must be finite)")
    n = len(array)
    if n == 0:
        return Interval(math.nan, -math.inf, math.inf, 0)
    mean = float(array.mean())
    if n < 2:
        return Interval(mean, -math.inf, math.inf, n)
    half = float(stats.t.ppf(0.5 + CONFIDENCE / 2, n - 1) * array.std(ddof=1) / math.sqrt(n))
    return Interval(mean, mean - half, mean + half, n)


def paired(first: Sequence[float], second: Sequence[float]) -> Interval:
    """The interval of ``first − second``, seed by seed (the same seed: the same data split,
    initialisation and batch order for both)."""
    if len(first) != len(second):
        raise ValueError(f"Invalid pairs: {len(first)} and {len(second)} values (must be equal)")
    return interval(np.asarray(first, dtype=float) - np.asarray(second, dtype=float))


# ---------------------------------------------------------------------------------------------
# Rules: an interval in, one outcome out
# ---------------------------------------------------------------------------------------------


def below(difference: Interval, threshold: float = 0.0) -> str:
    """The claim says the quantity is below ``threshold`` (a paired difference below 0: the
    claimed method is lower). Holds if the whole interval is below it, does not hold if the
    whole interval is above it, inconclusive if the interval contains it."""
    if difference.high < threshold:
        return HOLDS
    if difference.low > threshold:
        return DOES_NOT_HOLD
    return INCONCLUSIVE


def under(value: Interval, limit: float) -> str:
    """The claim says the quantity is less than ``limit`` (DGS needs fewer than all T steps):
    holds if the interval's upper end is < limit, does not hold if its lower end is ≥ limit
    (the whole interval at the limit or beyond), inconclusive otherwise."""
    if value.high < limit:
        return HOLDS
    if value.low >= limit:
        return DOES_NOT_HOLD
    return INCONCLUSIVE


def above(difference: Interval, threshold: float = 0.0) -> str:
    """The mirror of :func:`below`: the claim says the quantity is above ``threshold``."""
    if difference.low > threshold:
        return HOLDS
    if difference.high < threshold:
        return DOES_NOT_HOLD
    return INCONCLUSIVE


def at_least(difference: Interval, margin: float) -> str:
    """Non-inferiority: the claim says the quantity is not worse than −``margin`` (a method keeps
    another's accuracy within ``margin``). Holds if the interval's lower end is ≥ −margin, does
    not hold if its upper end is < −margin, inconclusive otherwise."""
    if difference.low >= -margin:
        return HOLDS
    if difference.high < -margin:
        return DOES_NOT_HOLD
    return INCONCLUSIVE


def between(value: Interval, *, holds_at_most: float, fails_at_least: float) -> str:
    """A quantity the claim puts at or below ``holds_at_most`` (Adan's step fraction ≤ 0.5).

    Holds if the interval's upper end is ≤ ``holds_at_most``; does not hold if its lower end is
    ≥ ``fails_at_least``; partly if the whole interval lies strictly between the two; and
    inconclusive if it straddles either bound.
    """
    if not holds_at_most < fails_at_least:
        raise ValueError(f"Invalid bounds: {holds_at_most} and {fails_at_least} (must increase)")
    if value.high <= holds_at_most:
        return HOLDS
    if value.low >= fails_at_least:
        return DOES_NOT_HOLD
    if value.low > holds_at_most and value.high < fails_at_least:
        return PARTLY
    return INCONCLUSIVE


def combine(outcomes: Iterable[str]) -> str:
    """One verdict from several findings (criteria, tasks, surfaces):

    all the same → that outcome; else any ``holds`` or ``partly`` → ``partly``; else any
    ``does not hold`` → ``does not hold at this scale`` (the rest could not be told);
    nothing at all → ``inconclusive``.
    """
    found = list(outcomes)
    for outcome in found:
        if outcome not in OUTCOMES:
            raise ValueError(f"Invalid outcome: {outcome!r} (must be one of {', '.join(OUTCOMES)})")
    if not found:
        return INCONCLUSIVE
    if len(set(found)) == 1:
        return found[0]
    if HOLDS in found or PARTLY in found:
        return PARTLY
    if DOES_NOT_HOLD in found:
        return DOES_NOT_HOLD
    return INCONCLUSIVE


@dataclass(frozen=True)
class Finding:
    """One criterion's outcome: what was compared, the outcome, and the numbers behind it."""

    criterion: str
    outcome: str
    detail: str

    def to_dict(self) -> dict[str, str]:
        return {"criterion": self.criterion, "outcome": self.outcome, "detail": self.detail}


@dataclass(frozen=True)
class Verdict:
    """A claim's verdict: the combined outcome and the findings it combines."""

    outcome: str
    findings: tuple[Finding, ...]

    @classmethod
    def of(cls, findings: Sequence[Finding]) -> Verdict:
        return cls(combine(f.outcome for f in findings), tuple(findings))

    def to_dict(self) -> dict[str, Any]:
        return {"outcome": self.outcome, "findings": [f.to_dict() for f in self.findings]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Verdict:
        return cls(data["outcome"], tuple(Finding(**f) for f in data["findings"]))
