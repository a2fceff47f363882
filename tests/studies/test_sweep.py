"""Studies on Ray Tune: the spec refuses bad input by name, trials are deterministic, a study
gives every optimizer the same budget and re-runs the winners over seeds, Stop keeps what
finished, a study bundle round-trips, and the same study runs on a real multi-process cluster
(``ray start --head`` on 127.0.0.1 in a temporary directory, stopped at the end)."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from dgs_core.cli import main
from dgs_core.params import ParamError
from dgs_core.runs.read import read_bundle
from dgs_core.runs.study import export_study
from dgs_core.studies import engine
from dgs_core.studies.sweep import SEEDS, TUNE, Range, StudySpec, run_trial
from dgs_core.studies.tuner import StudyResult, SweepStudy, grid_points
from dgs_core.viz.studies import best_table, study_figures

pytestmark = pytest.mark.slow

# Rosenbrock with SGD: lr above ~2e-3 diverges, so the default range (its surface lr × 10^±2)
# holds diverging and converging trials alike.
SURFACE = {
    "kind": "surface",
    "surface": "rosenbrock",
    "optimizers": ["sgd", "adam"],
    "trials": 4,
    "seeds": 2,
    "steps": 150,
    "noise_std": 0.5,
    "search": "random",
}


# -- the spec, without Ray ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"optimizers": ["sgd", "nope"]}, "optimizer"),
        ({"optimizers": []}, "optimizers"),
        ({"trials": 0}, "trials"),
        ({"seeds": 0}, "seeds"),
        ({"space": {"sgd": {"lr": {"low": -1.0, "high": 1.0, "log": True}}}}, "space.sgd.lr"),
        ({"space": {"sgd": {"lr": {"low": 1e-3, "high": 1e4}}}}, "space.sgd.lr"),
        ({"space": {"sgd": {"lr": {"choices": []}}}}, "space.sgd.lr"),
        ({"space": {"sgd": {"momentum": {"low": 0.1, "high": 0.5}}}}, "space"),
        ({"space": {"adan": {"lr": {"low": 1e-3, "high": 1e-1}}}}, "space"),
        ({"metric": "best_val_loss"}, "metric"),
        ({"search": "bayes"}, "search"),
        ({"surprise": 1}, "surprise"),
    ],
)
def test_a_bad_spec_names_the_field(changes: dict, field: str) -> None:
    with pytest.raises(ParamError) as raised:
        StudySpec.from_dict({**SURFACE, **changes})
    assert raised.value.field == field, str(raised.value)


def test_the_default_space_is_each_learning_rate_log_uniform_inside_its_bounds() -> None:
    spec = StudySpec.from_dict(SURFACE)
    sgd = spec.space["sgd"]["lr"]
    assert sgd.log and sgd.low == pytest.approx(1.4e-5) and sgd.high == pytest.approx(0.14)
    assert StudySpec.from_dict(spec.to_dict()) == spec
    extra = StudySpec.from_dict({**SURFACE, "space": {"adam": {"beta1": {"low": 0.8, "high": 0.99}}}})
    assert set(extra.space["adam"]) == {"lr", "beta1"}


def test_a_grid_spends_exactly_the_budget() -> None:
    one = grid_points({"lr": Range(low=1e-3, high=1e-1, log=True)}, 5)
    assert [round(p["lr"], 6) for p in one] == [0.001, 0.003162, 0.01, 0.031623, 0.1]
    two = grid_points({"lr": Range(low=1e-3, high=1e-1, log=True), "beta1": Range(low=0.8, high=0.9)}, 5)
    assert len(two) == 5 and len({tuple(p.values()) for p in two}) == 5


def test_a_trial_is_deterministic_and_a_divergence_is_recorded() -> None:
    spec = StudySpec.from_dict(SURFACE)
    first = run_trial(spec, "sgd", {"lr": 1e-3}, seed=3)
    assert first == run_trial(spec, "sgd", {"lr": 1e-3}, seed=3)
    assert first["diverged_at"] == -1 and math.isfinite(first["score"])
    diverged = run_trial(spec, "sgd", {"lr": 0.1}, seed=3)
    assert diverged["diverged_at"] > 0 and diverged["score"] == math.inf
    training = StudySpec(
        task="moons", task_params={"n_samples": 200}, optimizers=("adam",), steps=40, eval_every=20
    )
    reports: list[dict] = []
    out = run_trial(training, "adam", {"lr": 0.01}, seed=0, report=reports.append)
    assert [r["step"] for r in reports] == [20, 40] and out["score"] == min(r["val_loss"] for r in reports)


def test_an_unreachable_cluster_is_named_and_nothing_is_left_running() -> None:
    import ray

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    started = time.monotonic()
    with pytest.raises(ParamError) as raised:
        engine.connect(f"127.0.0.1:{port}")
    assert raised.value.field == "address" and time.monotonic() - started < 10
    assert not ray.is_initialized()


# -- on Ray -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def embedded() -> StudyResult:
    study = SweepStudy(StudySpec.from_dict(SURFACE))
    events = list(study.run())
    assert [e.done for e in events] == list(range(1, 13)) and events[-1].total == 12
    yield study.result
    engine.shutdown()


def test_every_optimizer_gets_the_same_budget_and_its_winner_runs_over_the_seeds(
    embedded: StudyResult,
) -> None:
    trials, spec = embedded.trials, embedded.spec
    tuned = trials[trials["phase"] == TUNE]
    assert tuned.groupby("optimizer").size().to_dict() == {"sgd": 4, "adam": 4}
    assert (tuned["seed"] == spec.seed).all()
    seeds = trials[trials["phase"] == SEEDS]
    assert sorted(seeds["seed"]) == [0, 0, 1, 1]
    for name in spec.optimizers:
        assert set(seeds[seeds["optimizer"] == name]["hparams"]) == {
            json.dumps(embedded.best_hparams(name), sort_keys=True)
        }
    assert set(embedded.curves["optimizer"]) == {"sgd", "adam"}


def test_a_trial_on_ray_gives_the_numbers_of_the_same_trial_here(embedded: StudyResult) -> None:
    spec = embedded.spec
    for row in embedded.trials.itertuples(index=False):
        here = run_trial(spec, row.optimizer, json.loads(row.hparams), seed=row.seed)
        assert here["score"] == row.score and here["diverged_at"] == row.diverged_at, row


def test_each_event_carries_the_count_of_its_own_trial_when_the_reader_is_slow(embedded: StudyResult) -> None:
    # the reader dozes on the first event while the trials go on: each later event must still
    # say how many had finished with it, not how many have by the time it is read
    study = SweepStudy(StudySpec.from_dict(SURFACE))
    done = []
    for event in study.run():
        done.append(event.done)
        if len(done) == 1:
            time.sleep(3)
    assert done == list(range(1, 13))


def test_diverged_trials_are_recorded_and_the_study_went_on(embedded: StudyResult) -> None:
    sgd = embedded.trials[(embedded.trials["phase"] == TUNE) & (embedded.trials["optimizer"] == "sgd")]
    diverged = sgd[sgd["diverged_at"] >= 0]
    assert len(diverged) >= 1 and (diverged["score"] == math.inf).all()
    assert all(s.startswith("diverged at step") for s in diverged["status"])
    assert math.isfinite(embedded.best.set_index("optimizer").loc["sgd", "tuned_score"])


# moons, few steps: training trials on Ray, reporting once (first in, first out) or every
# evaluation (ASHA reads them)
TRAINING = {
    "task": "moons",
    "optimizers": ["sgd", "adam"],
    "trials": 4,
    "seeds": 1,
    "steps": 60,
    "eval_every": 10,
    "max_concurrent": 1,
}


def test_training_trials_on_ray_give_the_numbers_of_the_same_trials_here() -> None:
    spec = StudySpec.from_dict({**TRAINING, "search": "random"})
    study = SweepStudy(spec)  # the embedded Ray's warm runners
    list(study.run())
    trials = study.result.trials
    assert len(trials) == 10 and (trials["status"] == "done").all() and (trials["step"] == 60).all()
    for row in trials.itertuples(index=False):
        here = run_trial(study.spec, row.optimizer, json.loads(row.hparams), seed=row.seed)
        assert here["score"] == row.score, row
    curves = study.result.curves
    assert curves.groupby("optimizer").size().to_dict() == {"sgd": 6, "adam": 6}  # steps 10, 20, …, 60

    # the reference path, Ray Tune's own trial processes, gives the same study
    on_tune = SweepStudy(spec, warm_runners=False)
    list(on_tune.run())
    same = ["phase", "optimizer", "trial", "seed", "hparams", "score", "status", "diverged_at", "step"]
    assert on_tune.result.trials[same].equals(trials[same])
    assert on_tune.result.curves.equals(curves)


def test_asha_stops_poor_tuning_trials_early_and_tpe_searches() -> None:
    spec = StudySpec.from_dict({**TRAINING, "search": "tpe", "early_stopping": "asha"})
    study = SweepStudy(spec)
    list(study.run())
    trials = study.result.trials
    tuned, seeds = trials[trials["phase"] == TUNE], trials[trials["phase"] == SEEDS]
    stopped = tuned[tuned["status"] == "stopped early (ASHA)"]
    assert len(stopped) >= 1 and (stopped["step"] < spec.steps).all()  # ASHA read the evaluations
    assert (seeds["status"] == "done").all() and (seeds["step"] == spec.steps).all()
    assert tuned.groupby("optimizer")["hparams"].nunique().to_dict() == {"sgd": 4, "adam": 4}


def test_stop_keeps_the_finished_trials() -> None:
    study = SweepStudy(StudySpec.from_dict({**SURFACE, "trials": 20, "max_concurrent": 1}))
    seen = []
    for event in study.run(stop=lambda: len(seen) >= 3):
        seen.append(event)
    assert 3 <= len(study.result.trials) < study.spec.trials_total
    assert (study.result.trials["phase"] == TUNE).all()
    # the stopped trial's runner was replaced: the next study runs on a full pool
    pool = engine.runner_pool()
    assert pool is not None and pool._free.qsize() == pool.count
    after = SweepStudy(StudySpec.from_dict({**SURFACE, "trials": 1, "seeds": 1}))
    list(after.run())
    assert len(after.result.trials) == after.spec.trials_total


def test_a_study_bundle_round_trips_and_the_cli_runs_a_spec(
    embedded: StudyResult, tmp_path: Path, capsys
) -> None:
    bundle = read_bundle(export_study(embedded, figures=study_figures(embedded)))
    assert bundle.kind == "study" and bundle.labels == ("sgd", "adam")
    assert bundle.study.trials.drop(columns=["seconds"]).equals(embedded.trials.drop(columns=["seconds"]))
    assert np.array_equal(bundle.study.curves["value"], embedded.curves["value"])
    assert bundle.summary()["optimizer"].tolist() == ["sgd", "adam"]
    assert list(best_table(embedded)["optimizer"]) == ["SGD", "Adam"]

    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({**SURFACE, "trials": 2, "seeds": 1}))
    out = tmp_path / "study.zip"
    assert main(["study", str(spec), "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "SGD" in printed and "Adam" in printed and "tuned hyperparameters" in printed
    assert read_bundle(out).study.trials["phase"].tolist().count(TUNE) == 4


def test_bad_specs_end_the_cli_with_one_error_line(tmp_path: Path, capsys) -> None:
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({**SURFACE, "trials": 0}))
    assert main(["study", str(spec), "--out", str(tmp_path / "x.zip")]) == 2
    assert capsys.readouterr().err.startswith("error: Invalid trials: 0")


# -- a real multi-process cluster ---------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def cluster():
    """``ray start --head`` on 127.0.0.1 in a temporary directory; stopped (its process group)
    at the end. The address is yielded."""
    port = _free_port()
    temp = tempfile.mkdtemp(prefix="/tmp/dgsray-")  # short: Ray's unix sockets live under it
    ray_cli = Path(sys.executable).with_name("ray")
    env = {
        **os.environ,
        "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    head = subprocess.Popen(
        [
            str(ray_cli),
            "start",
            "--head",
            "--block",
            f"--port={port}",
            "--node-ip-address=127.0.0.1",
            f"--temp-dir={temp}",
            "--num-cpus=2",
            "--include-dashboard=false",
            "--disable-usage-stats",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
        start_new_session=True,
    )
    address = f"127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.5)
        yield address
    finally:
        engine.shutdown()
        os.killpg(head.pid, signal.SIGTERM)
        try:
            # `ray start --block` has not ended on SIGTERM within 30 s here (CI logs): its whole
            # process group is killed after a short grace instead
            head.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait(timeout=10)
        shutil.rmtree(temp, ignore_errors=True)


def test_the_same_study_runs_on_a_local_cluster(cluster: str) -> None:
    spec = StudySpec.from_dict({**SURFACE, "trials": 2, "seeds": 1})
    study = SweepStudy(spec, address=cluster)
    list(study.run())
    assert study.result.address == cluster
    assert len(study.result.trials) == spec.trials_total
    for row in study.result.trials.itertuples(index=False):
        assert run_trial(spec, row.optimizer, json.loads(row.hparams), seed=row.seed)["score"] == row.score


def test_a_study_over_the_servers_trial_limit_is_refused_before_ray_starts(
    tmp_path: Path, capsys, monkeypatch
) -> None:
    from dgs_core.studies import engine

    monkeypatch.setenv("DGS_LAB_MAX_TRIALS", "3")
    monkeypatch.setattr(engine, "connect", lambda *a, **k: pytest.fail("Ray was started"))
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(SURFACE))
    assert main(["study", str(spec), "--out", str(tmp_path / "x.zip")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: Invalid trials:") and "$DGS_LAB_MAX_TRIALS" in err
