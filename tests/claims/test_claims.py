"""The Claims lab's core: every verdict rule gives every outcome on synthetic numbers, every claim
runs at the smoke budget on one embedded Ray (the same tables as in this process), the shipped
full-budget results were made by the current configurations and say what their numbers say,
and bad input is named."""

from __future__ import annotations

import dataclasses
import io
import json
import math
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pandas as pd
import plotly.graph_objects as go
import pytest

from dgs_core.claims import (
    CLAIMS,
    OUTCOMES,
    ClaimRun,
    claim_names,
    get_claim,
    load_result,
    save_result,
)
from dgs_core.claims.store import CLAIMS_DIR
from dgs_core.claims.verdicts import (
    DOES_NOT_HOLD,
    HOLDS,
    INCONCLUSIVE,
    PARTLY,
    Interval,
    above,
    at_least,
    below,
    between,
    combine,
    interval,
    under,
)
from dgs_core.cli import main
from dgs_core.optim import registry
from dgs_core.params import ParamError, ParamSet
from dgs_core.studies import Study, engine
from dgs_core.viz.claims import claim_figure, verdict_table

# -- the rules, on intervals ------------------------------------------------------------------


def I(mean: float, low: float, high: float, n: int = 5) -> Interval:  # noqa: N802, E743 (reads like math)
    return Interval(mean, low, high, n)


def test_the_interval_is_students_t_and_needs_two_values() -> None:
    found = interval([1.0, 2.0, 3.0, 4.0, 5.0])
    # mean 3, s = √2.5, t₀.₉₇₅(4) = 2.776
    assert found.mean == 3.0 and found.high - 3.0 == pytest.approx(2.7764451 * math.sqrt(2.5) / math.sqrt(5))
    assert interval([7.0]).low == -math.inf and interval([7.0]).high == math.inf
    assert Interval.from_dict(json.loads(json.dumps(interval([7.0]).to_dict()))) == interval([7.0])
    with pytest.raises(ValueError, match="finite"):
        interval([1.0, math.inf])


@pytest.mark.parametrize(
    ("rule", "value", "expected"),
    [
        (below, I(-0.2, -0.3, -0.1), HOLDS),
        (below, I(0.2, 0.1, 0.3), DOES_NOT_HOLD),
        (below, I(0.0, -0.1, 0.1), INCONCLUSIVE),
        (above, I(0.2, 0.1, 0.3), HOLDS),
        (above, I(-0.2, -0.3, -0.1), DOES_NOT_HOLD),
        (above, I(0.0, -0.1, 0.1), INCONCLUSIVE),
        (lambda v: at_least(v, 0.01), I(0.0, -0.005, 0.005), HOLDS),
        (lambda v: at_least(v, 0.01), I(-0.1, -0.2, -0.02), DOES_NOT_HOLD),
        (lambda v: at_least(v, 0.01), I(-0.01, -0.03, 0.01), INCONCLUSIVE),
        (lambda v: under(v, 1.0), I(0.6, 0.5, 0.7), HOLDS),
        (lambda v: under(v, 1.0), I(1.0, 1.0, 1.0), DOES_NOT_HOLD),
        (lambda v: under(v, 1.0), I(0.9, 0.8, 1.05), INCONCLUSIVE),
        (lambda v: between(v, holds_at_most=0.5, fails_at_least=1.0), I(0.3, 0.2, 0.5), HOLDS),
        (lambda v: between(v, holds_at_most=0.5, fails_at_least=1.0), I(0.7, 0.6, 0.8), PARTLY),
        (lambda v: between(v, holds_at_most=0.5, fails_at_least=1.0), I(1.1, 1.0, 1.2), DOES_NOT_HOLD),
        (lambda v: between(v, holds_at_most=0.5, fails_at_least=1.0), I(0.6, 0.4, 0.8), INCONCLUSIVE),
        (lambda v: between(v, holds_at_most=0.5, fails_at_least=1.0), I(0.9, 0.8, 1.1), INCONCLUSIVE),
    ],
)
def test_a_rule_reads_the_interval(rule: Any, value: Interval, expected: str) -> None:
    assert rule(value) == expected


@pytest.mark.parametrize(
    ("found", "expected"),
    [
        ([HOLDS, HOLDS], HOLDS),
        ([DOES_NOT_HOLD, DOES_NOT_HOLD], DOES_NOT_HOLD),
        ([INCONCLUSIVE, INCONCLUSIVE], INCONCLUSIVE),
        ([PARTLY, PARTLY], PARTLY),
        ([HOLDS, DOES_NOT_HOLD], PARTLY),
        ([HOLDS, INCONCLUSIVE], PARTLY),
        ([DOES_NOT_HOLD, INCONCLUSIVE], DOES_NOT_HOLD),
        ([], INCONCLUSIVE),
    ],
)
def test_findings_combine(found: list[str], expected: str) -> None:
    assert combine(found) == expected


# -- every claim's verdict on synthetic numbers ------------------------------------------------

YES, NO, UNSURE = I(0.3, 0.2, 0.4), I(-0.3, -0.4, -0.2), I(0.0, -0.1, 0.1)  # for above()
# per claim and outcome: the numbers its verdict function reads (as JSON: intervals are dicts)


def _synthetic(name: str, outcome: str) -> dict[str, Any]:
    def d(value: Interval) -> dict[str, Any]:
        return value.to_dict()

    pick = {HOLDS: 0, PARTLY: 1, DOES_NOT_HOLD: 2, INCONCLUSIVE: 3}[outcome]
    if name == "adan_half_steps":
        fraction = [I(0.3, 0.2, 0.4), I(0.7, 0.6, 0.8), I(1.2, 1.05, 1.3), I(0.5, 0.3, 0.7)][pick]
        return {"tasks": {t: {"steps": 300, "fraction_vs_adamw": d(fraction)} for t in ("digits", "modular")}}
    if name == "dgs_efficiency":
        accuracy = [YES, YES, NO, UNSURE][pick]
        fraction = [I(0.6, 0.5, 0.7), I(0.9, 0.7, 1.1), I(1.1, 1.0, 1.2), I(0.9, 0.7, 1.1)][pick]
        task = {
            "steps": 100,
            "baseline_by_accuracy": "adam",
            "accuracy_difference": d(accuracy),
            "baseline_by_loss": "momentum",
            "fraction_to_baseline_loss": d(fraction),
        }
        return {"tasks": {"spirals": task, "modular": task}}
    if name == "extrap_large_batch":
        reach = [I(0.0, -0.005, 0.005), I(0.0, -0.005, 0.005), I(-0.1, -0.15, -0.05), I(-0.01, -0.03, 0.01)][
            pick
        ]
        versus = [YES, NO, NO, UNSURE][pick]
        return {
            "extrasgd_minus_small_batch": d(reach),
            "extrasgd_minus_sgd_large": d(versus),
            "extrasgd_minus_lars": d(versus),
            "batches": [16, 256],
        }
    if name == "lars_stability":
        lars = [0, 1, 3, 0][pick]
        sgd = [5, 5, 5, 2][pick]
        scalings = {
            s: {"factor": f, "unstable": {"momentum": 0, "lars": 0}}
            for s, f in (("none", 1.0), ("square root", 4.0))
        }
        scalings["linear"] = {"factor": 16.0, "unstable": {"momentum": sgd, "lars": lars}}
        return {"seeds": 5, "scalings": scalings}
    if name == "adaptive_batches":
        kept = [I(0.0, -0.005, 0.005), I(-0.1, -0.15, -0.05), I(-0.1, -0.15, -0.05), I(-0.01, -0.03, 0.01)][
            pick
        ]
        steps = [I(100, 90, 110), I(100, 90, 110), I(3375, 3375, 3375), I(3000, 2000, 4000)][pick]
        found = {"minus_small_batch": d(kept), "steps": d(steps), "largest_batch": 256}
        return {
            "batches": [8, 256],
            "small_batch_steps": 3375.0,
            "adaptive": {"adadagrad_norm": found, "adadagrad": found},
        }
    if name == "annealing_hq":
        first, second = [(NO, NO), (NO, UNSURE), (YES, YES), (UNSURE, UNSURE)][pick]
        return {"hq_minus_constant": d(first), "hq_minus_same_data": d(second)}
    if name == "adan_overshoot":
        surface_diff, spikes_diff = [(NO, NO), (NO, YES), (YES, YES), (UNSURE, UNSURE)][pick]
        rivals = ("momentum", "nesterov", "adam", "adamw")
        return {
            "surfaces": {
                s: {"adan_minus": {r: d(surface_diff) for r in rivals}} for s in ("quadratic", "rosenbrock")
            },
            "spikes_adan_minus": {r: d(spikes_diff) for r in rivals},
        }
    raise AssertionError(name)


@pytest.mark.parametrize("outcome", OUTCOMES)
@pytest.mark.parametrize("name", claim_names())
def test_every_verdict_rule_gives_every_outcome(name: str, outcome: str) -> None:
    verdict = get_claim(name).verdict(json.loads(json.dumps(_synthetic(name, outcome))))
    assert verdict.outcome == outcome, verdict.findings
    assert verdict.findings and all(f.outcome in OUTCOMES for f in verdict.findings)


# -- the claims as records and plans ----------------------------------------------------------


def test_seven_claims_each_quoted_with_a_source_and_a_rule() -> None:
    assert [c.number for c in CLAIMS] == list(range(1, 8)) and len(set(claim_names())) == 7
    for claim in CLAIMS:
        assert claim.quote and claim.source.url and claim.experiment and claim.rule
        assert "holds" in claim.rule and "does not hold" in claim.rule
    assert "interpretation" in get_claim("dgs_efficiency").note.lower()


@pytest.mark.parametrize("name", claim_names())
def test_a_full_plan_is_fair(name: str) -> None:
    plan = get_claim(name).plan_for("full")
    assert len(plan.seeds) >= 5 and 0 not in plan.seeds  # N ≥ 5, the tuning seed held out
    for tuning in plan.tunings:
        counts = {len(tuning.trials(n)) for n in tuning.spec.optimizers}
        assert counts == {tuning.spec.trials}, (tuning.key, counts)  # the same budget for all
    # arms compared on one task differ in their optimizer and batch settings only
    for group in {arm.group for arm in plan.arms}:
        arms = [a for a in plan.arms if a.group == group]
        shared = ("task", "task_params", "model")
        keys = {json.dumps({k: a.config.to_dict()[k] for k in shared}, sort_keys=True) for a in arms}
        assert len(keys) == 1, (group, keys)


def test_a_changed_optimizer_default_changes_the_config_hash(monkeypatch: pytest.MonkeyPatch) -> None:
    claim = get_claim("adan_half_steps")
    before = claim.plan_for("full").config_hash
    assert claim.plan_for("full").config_hash == before  # deterministic
    info = registry.get("adan")
    params = ParamSet(
        [dataclasses.replace(p, default=0.97) if p.name == "beta1" else p for p in info.hyperparams]
    )
    changed = dataclasses.replace(info, hyperparams=params)
    monkeypatch.setattr(registry, "_REGISTRY", MappingProxyType({**registry._REGISTRY, "adan": changed}))
    assert claim.plan_for("full").config_hash != before


def test_bad_input_is_named() -> None:
    with pytest.raises(ParamError) as raised:
        get_claim("nope")
    assert raised.value.field == "claim" and "adan_half_steps" in str(raised.value)
    with pytest.raises(ParamError) as raised:
        get_claim("annealing_hq").plan_for("medium")
    assert raised.value.field == "budget" and "'smoke'" in str(raised.value)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["claims", "nope", "--budget", "smoke"], "error: Invalid claim: 'nope'"),
        (["claims", "annealing_hq", "--budget", "huge"], "error: Invalid budget: 'huge'"),
        (["claims", "annealing_hq", "--all"], "error: Invalid claims"),
    ],
)
def test_the_cli_names_bad_input(argv: list[str], message: str) -> None:
    err = io.StringIO()
    with redirect_stderr(err), redirect_stdout(io.StringIO()):
        assert main(argv) == 2
    assert err.getvalue().startswith(message) and err.getvalue().count("\n") == 1


# -- every claim at the smoke budget, on one embedded Ray ---------------------------------------


@pytest.fixture(scope="module")
def smoke() -> dict[str, Any]:
    results = {}
    for claim in CLAIMS:
        run = ClaimRun(claim, "smoke")
        events = list(run.run())
        assert [e.done for e in events] == list(range(1, run.plan.total + 1))
        results[claim.name] = run.result
    yield results
    engine.shutdown()


@pytest.mark.slow
@pytest.mark.parametrize("name", claim_names())
def test_every_claim_runs_at_the_smoke_budget(smoke: dict[str, Any], name: str, tmp_path: Path) -> None:
    result = smoke[name]
    claim, plan = result.claim, get_claim(name).plan_for("smoke")
    record = result.record
    assert record["verdict"]["outcome"] in OUTCOMES and record["engine"] == "local"
    assert record["budget"] == "smoke" and record["config_hash"] == plan.config_hash
    assert record["code_version"]["dgs_core"] and record["seeds"] == list(plan.seeds)
    assert len(result.tables["runs"]) == len(plan.arms) * len(plan.seeds)
    assert len(result.tables["tuning"]) == sum(t.count for t in plan.tunings)
    assert {e["lab"] for e in record["experiments"]} <= {"training", "annealing", "surface"}
    # the numbers come from the tables and the verdict from the numbers, and so they do again
    # from what is stored
    assert claim.verdict(result.numbers) == result.verdict
    save_result(result, tmp_path)
    stored = load_result(name, tmp_path)
    again = claim.numbers(stored.tables, plan.extra)
    assert json.dumps(again, sort_keys=True) == json.dumps(
        json.loads(json.dumps(result.numbers)), sort_keys=True
    ) or (_close(again, stored.numbers))
    assert claim.verdict(again).outcome == stored.verdict.outcome
    assert (
        isinstance(claim_figure(claim, stored.tables), go.Figure) and claim_figure(claim, stored.tables).data
    )


def _close(a: Any, b: Any) -> bool:
    """Equal up to the CSV files' eight significant digits (an interval end near 0, a mean
    minus a half-width, keeps them only in absolute terms)."""
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and b is not None:
        return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-6) or (math.isnan(a) and math.isnan(b))
    return a == b


@pytest.mark.slow
def test_a_claim_gives_the_same_tables_in_process(smoke: dict[str, Any]) -> None:
    run = ClaimRun(get_claim("annealing_hq"), "smoke", in_process=True)
    list(run.run())
    assert run.result.record["engine"] == "in process"
    for name, table in smoke["annealing_hq"].tables.items():
        pd.testing.assert_frame_equal(table, run.result.tables[name])


@pytest.mark.slow
def test_the_cli_writes_a_smoke_result_only_where_asked(smoke: dict[str, Any], tmp_path: Path) -> None:
    out = io.StringIO()
    with redirect_stdout(out), redirect_stderr(io.StringIO()):
        assert main(["claims", "annealing_hq", "--budget", "smoke", "--out", str(tmp_path), "--quiet"]) == 0
    assert (tmp_path / "annealing_hq" / "record.json").is_file()
    assert "annealing_hq" in out.getvalue() and smoke["annealing_hq"].verdict.outcome in out.getvalue()
    listed = io.StringIO()
    with redirect_stdout(listed):
        assert main(["claims", "--out", str(tmp_path)]) == 0
    assert listed.getvalue() == out.getvalue()


# -- the shipped results ------------------------------------------------------------------------


@pytest.mark.parametrize("name", claim_names())
def test_the_shipped_result_was_made_by_the_current_configs(name: str) -> None:
    claim = get_claim(name)
    stored = load_result(name)
    assert stored is not None, f"assets/claims/{name} is missing: python -m dgs_core claims {name}"
    plan = claim.plan_for("full")
    record = stored.record
    assert record["budget"] == "full" and len(record["seeds"]) >= 5
    assert record["config_hash"] == plan.config_hash, (
        f"{name}: its configuration changed since the shipped result was made "
        f"(an optimizer's default?); re-run python -m dgs_core claims {name}"
    )
    again = claim.numbers(stored.tables, plan.extra)
    assert _close(again, stored.numbers)
    assert claim.verdict(stored.numbers).to_dict() == record["verdict"]
    for path in (CLAIMS_DIR / name).iterdir():
        # small files: the largest is the overshoot claim's per-start table (8,640 rows, 0.56 MB)
        assert path.stat().st_size < 1_000_000, path


def test_the_shipped_verdicts_table_lists_every_claim() -> None:
    records = [load_result(name).record for name in claim_names()]
    table = verdict_table(records)
    assert list(table["claim"]) == claim_names() and set(table["verdict"]) <= set(OUTCOMES)


def test_a_stopped_claim_keeps_what_finished_and_continues() -> None:
    claim = get_claim("extrap_large_batch")  # the quickest at the smoke budget
    whole = ClaimRun(claim, "smoke", in_process=True)
    list(whole.run())
    part = ClaimRun(claim, "smoke", in_process=True)
    assert isinstance(part, Study)
    seen = []
    for event in part.run(stop=lambda: len(seen) >= 3):
        seen.append(event)
    total = part.plan.total
    assert part.result is None and part.progress() == (3, total) and len(seen) == 3
    rest = list(part.run())
    assert [e.done for e in rest] == list(range(4, total + 1)) and part.progress() == (total, total)
    for name, table in whole.result.tables.items():
        pd.testing.assert_frame_equal(table, part.result.tables[name])
    assert part.result.verdict == whole.result.verdict


def test_the_annealing_figure_draws_the_four_variants_in_one_panel() -> None:
    claim = get_claim("annealing_hq")
    stored = load_result(claim.name)
    assert stored is not None
    fig = claim_figure(claim, stored.tables)
    lines = [t for t in fig.data if t.mode == "lines"]
    assert len(lines) == 4 and len({t.line.color for t in lines}) == 4
    assert {t.xaxis for t in fig.data} == {"x"}  # one panel
    # its means are the seeds' means of the stored curves
    curves = stored.tables["curves"]
    first = curves[curves["arm"] == "constant lr"].groupby("step")["val_loss"].mean()
    assert list(lines[0].y) == pytest.approx(first.to_list())


def test_the_readme_lists_the_shipped_verdicts() -> None:
    readme = (CLAIMS_DIR.parents[1] / "README.md").read_text(encoding="utf-8")
    for claim in CLAIMS:
        stored = load_result(claim.name)
        assert stored is not None
        assert f"| {claim.number} | {claim.title} | {stored.verdict.outcome} |" in readme, claim.name
