"""The Claims lab's core: each paper's headline claim, re-run at small scale, with its verdict.

Seven claims, each a frozen :class:`~dgs_core.claims.base.Claim` (the claim quoted from its
paper, the experiment as configurations in the labs' schemas, the verdict rule in words, and
the functions from numbers to verdict), listed in :data:`CLAIMS`:

    1 adan_half_steps      Adan reaches AdamW's loss in half the steps        adan_steps.py
    2 dgs_efficiency       DGS trains faster and ends better                   dgs_efficiency.py
    3 extrap_large_batch   extrapolation closes the large-batch gap            large_batch.py
    4 lars_stability       LARS trains where SGD diverges                      large_batch.py
    5 adaptive_batches     adaptive batches keep small-batch accuracy          adaptive_batches.py
    6 annealing_hq         annealing on high-quality data helps                annealing_hq.py
    7 adan_overshoot       Adan and overshoot, tuned                           overshoot.py

:class:`~dgs_core.claims.execution.ClaimRun` runs one at a budget ("smoke": seconds, for tests;
"full": the shipped result) on the Studies engine; :mod:`dgs_core.claims.store` writes and reads
``assets/claims/<claim>/``; ``python -m dgs_core claims`` does both. Verdict rules and the
conventions they share: docs/algorithms.md#claims.

>>> [claim.number for claim in CLAIMS]
[1, 2, 3, 4, 5, 6, 7]
>>> get_claim("adan_half_steps").plan_for("smoke").total > 0
True
"""

from __future__ import annotations

from dgs_core.claims import adan_steps, adaptive_batches, annealing_hq, dgs_efficiency, large_batch, overshoot
from dgs_core.claims.base import BUDGETS, Claim, Plan
from dgs_core.claims.execution import ClaimResult, ClaimRun
from dgs_core.claims.store import CLAIMS_DIR, StoredResult, load_result, save_result
from dgs_core.claims.verdicts import OUTCOMES, Verdict
from dgs_core.params import invalid

CLAIMS: tuple[Claim, ...] = (
    adan_steps.CLAIM,
    dgs_efficiency.CLAIM,
    large_batch.EXTRAP_CLAIM,
    large_batch.LARS_CLAIM,
    adaptive_batches.CLAIM,
    annealing_hq.CLAIM,
    overshoot.CLAIM,
)
_BY_NAME = {claim.name: claim for claim in CLAIMS}


def claim_names() -> list[str]:
    """The claims' names, in card order."""
    return [claim.name for claim in CLAIMS]


def get_claim(name: str) -> Claim:
    """The claim ``name``; a ``ParamError`` naming it when unknown."""
    try:
        return _BY_NAME[name]
    except (KeyError, TypeError):
        raise invalid("claim", name, f"one of {', '.join(_BY_NAME)}") from None


__all__ = [
    "BUDGETS",
    "CLAIMS",
    "CLAIMS_DIR",
    "OUTCOMES",
    "Claim",
    "ClaimResult",
    "ClaimRun",
    "Plan",
    "StoredResult",
    "Verdict",
    "claim_names",
    "get_claim",
    "load_result",
    "save_result",
]
