"""Claims: each paper's headline claim beside the experiment that tests it, and its verdict.

The claims and their rules are :mod:`dgs_core.claims`; each card is
:func:`app_pages.parts.claim_card.claim_card` (the shipped result from ``assets/claims/``, a
Re-run as a background job through :mod:`app_pages.live`); figures come from
:mod:`dgs_core.viz.claims`. Verdict rules: docs/algorithms.md#claims.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from app_pages import live
from app_pages.parts.claim_card import BADGES, claim_card, shipped
from dgs_core.claims import CLAIMS, OUTCOMES

live.preload()
st.title("Claims")
st.caption(
    "Each paper's headline claim, re-run at small scale: the same start, data, seeds and tuning "
    "budget for every optimizer; the verdict rule stated before the result; the verdict computed "
    "from the numbers, whichever way they go."
)
st.markdown(
    "Verdicts: " + " · ".join(BADGES[o] for o in OUTCOMES) + ". *Inconclusive*: the compared "
    "intervals overlap (95 % Student-t intervals over seeds). *Does not hold at this scale*: small "
    "models, small data and short budgets are not the papers' settings; each card says what "
    "differs."
)

summary = []
for claim in CLAIMS:
    stored = shipped(claim.name)
    record = stored[0] if stored else None
    summary.append(
        {
            "#": claim.number,
            "claim": claim.title,
            "shipped verdict": record["verdict"]["outcome"] if record else "no result",
            "made": record["created"][:10] if record else "",
            "took": f"{record['seconds']:.0f} s" if record else "",
        }
    )
st.dataframe(
    pd.DataFrame(summary),
    hide_index=True,
    width="stretch",
    key="claims_summary",
    column_config={"shipped verdict": st.column_config.TextColumn(width="medium")},
)

for claim in CLAIMS:
    claim_card(claim)
