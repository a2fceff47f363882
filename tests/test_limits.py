"""The server's limits: read from the environment, checked before work starts, named in errors;
an imported bundle is checked against them before any model is built, and a resumed run obeys
the server's cap whatever its bundle says."""

from __future__ import annotations

import json

import pytest

from dgs_core import limits
from dgs_core.limits import ServerLimits, check_study, check_surface_work, check_training
from dgs_core.params import ParamError
from dgs_core.runs.archive import SnapshotError
from dgs_core.runs.read import read_bundle
from dgs_core.runs.training import resume_trainer
from dgs_core.studies.sweep import StudySpec
from dgs_core.surfaces.config import SurfaceConfig, parse_query
from dgs_core.training.config import TrainConfig
from tests.runs.test_bundles import member, rewrite, small_training_bundle


def test_the_environment_overrides_the_defaults_and_a_bad_value_is_named() -> None:
    assert ServerLimits.from_env({}) == ServerLimits()
    assert ServerLimits.from_env({"DGS_LAB_MAX_STEPS": "500"}).max_steps == 500
    for text in ("lots", "0", "-3", "1.5"):
        with pytest.raises(ParamError) as raised:
            ServerLimits.from_env({"DGS_LAB_MAX_OPTIMIZERS": text})
        assert raised.value.field == "DGS_LAB_MAX_OPTIMIZERS"


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"steps": 20_001, "max_steps": 10**9}, "steps"),
        ({"optimizers": ["sgd"] * 9}, "optimizers"),
        ({"steps": 10_000, "diag_every": 5}, "diag_every"),
    ],
)
def test_a_training_run_over_a_limit_is_refused_by_name(changes: dict, field: str) -> None:
    with pytest.raises(ParamError) as raised:
        check_training(TrainConfig(**changes))
    assert raised.value.field == field and "this server's limit" in str(raised.value)


def test_within_the_limits_nothing_is_said() -> None:
    check_training(TrainConfig(steps=20_000, diag_every=20, optimizers=["sgd"] * 8))
    check_surface_work(points=60 * 60, steps=5000, field="basin_resolution")


def test_a_surface_view_over_the_work_limit_is_refused() -> None:
    with pytest.raises(ParamError) as raised:
        check_surface_work(points=100 * 100, steps=5000, field="basin_resolution")
    assert raised.value.field == "basin_resolution" and "50000000 point-steps" in str(raised.value)


def test_a_study_over_the_trial_limit_is_refused() -> None:
    spec = StudySpec(kind="surface", optimizers=("sgd", "adam"), trials=300, seeds=10)
    with pytest.raises(ParamError) as raised:
        check_study(spec)
    assert raised.value.field == "trials"


def test_an_import_is_checked_before_any_model_is_built(monkeypatch: pytest.MonkeyPatch) -> None:
    _, data = small_training_bundle(steps=10)
    config = json.loads(member(data, "config.json"))
    hostile = rewrite(
        data, {"config.json": json.dumps({**config, "steps": 10**9, "max_steps": 10**9}).encode()}
    )

    def never(*args, **kwargs):
        raise AssertionError("a model was built for a refused bundle")

    monkeypatch.setattr("dgs_core.runs.training.Trainer", never)
    with pytest.raises(SnapshotError, match=r"config\.json: Invalid steps: 1000000000 .*DGS_LAB_MAX_STEPS"):
        read_bundle(hostile)


def test_resume_obeys_the_servers_cap_not_the_bundles(monkeypatch: pytest.MonkeyPatch) -> None:
    _, data = small_training_bundle(steps=10)
    bundle = read_bundle(data)
    monkeypatch.setattr(limits, "server_limits", lambda: ServerLimits(max_steps=15))
    monkeypatch.setattr("dgs_core.runs.training.server_limits", lambda: ServerLimits(max_steps=15))
    resumed = resume_trainer(bundle, extra_steps=5)
    assert resumed.config.steps == 15 and resumed.config.max_steps == 15
    with pytest.raises(SnapshotError, match="exceeds max_steps=15"):
        resume_trainer(bundle, extra_steps=6)


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"view": "basin", "bres": "100", "steps": "5000"}, "basin_resolution"),  # ~1.2 GB before
        ({"opt": "adadagrad", "noise": "5", "steps": "5000", "adadagrad.max_batch_size": "100000"}, "steps"),
    ],
)
def test_a_surface_link_over_the_work_budget_is_refused_before_any_work(query: dict, field: str) -> None:
    config, _ = parse_query(query)
    with pytest.raises(ParamError) as raised:
        config.check_work()
    assert raised.value.field == field and "$DGS_LAB_MAX_SURFACE_WORK" in str(raised.value)


def test_the_surface_budget_counts_the_view() -> None:
    config, _ = parse_query({"view": "panels", "bres": "100", "steps": "5000"})
    config.check_work()  # the paths alone are cheap; the basin grid is what costs
    tight = ServerLimits(max_surface_work=8 * 500)
    parse_query({"steps": "500"})[0].check_work(tight)  # eight paths of 500 steps: exactly the limit
    with pytest.raises(ParamError):
        parse_query({"steps": "500", "view": "sensitivity"})[0].check_work(tight)


def test_adascale_under_noise_counts_its_group_gradients() -> None:
    # each step of a row computes S group gradients (scale), as the per-sample tests count theirs
    quiet = SurfaceConfig(surface="booth", optimizers=("adascale",))
    assert quiet.rows_per_step("adascale") == 1.0  # no noise: the groups are not drawn
    noisy = SurfaceConfig(surface="booth", optimizers=("adascale",), noise_std=1.0)
    assert noisy.rows_per_step("adascale") == 1.0 + 4  # S = 4 by default
    wide = SurfaceConfig(
        surface="booth", optimizers=("adascale",), noise_std=1.0, hparams={"adascale": {"scale": 4096}}
    )
    assert wide.rows_per_step("adascale") == 1.0 + 4096 and noisy.rows_per_step("sgd") == 1.0
    budget = ServerLimits(max_surface_work=4097 * 1000)  # 1000 steps of one such row
    for steps, refused in ((1000, False), (1001, True)):
        config = SurfaceConfig(
            surface="booth",
            optimizers=("adascale",),
            noise_std=1.0,
            steps=steps,
            hparams={"adascale": {"scale": 4096}},
        )
        if not refused:
            config.check_work(budget)
            continue
        with pytest.raises(ParamError) as raised:
            config.check_work(budget)
        assert raised.value.field == "steps"


def test_a_runs_diagnostics_have_a_memory_budget(monkeypatch) -> None:
    """Measured on the first record (its size depends on the model), before the second step."""
    import pickle
    import re

    from dgs_core.training.config import TrainConfig
    from dgs_core.training.trainer import Trainer

    monkeypatch.setenv("DGS_LAB_MAX_DIAGNOSTICS_MB", "1")
    config = TrainConfig(
        task="moons", task_params={"n_samples": 200}, optimizers=["sgd", "dgs"], steps=200, diag_every=1
    )
    trainer = Trainer(config)
    with pytest.raises(
        ParamError, match=r"Invalid diag_every: 1 \(the diagnostics would hold about"
    ) as raised:
        list(trainer.run())
    assert raised.value.field == "diag_every" and "$DGS_LAB_MAX_DIAGNOSTICS_MB" in str(raised.value)
    assert trainer.step == 0  # refused during the first step
    least = int(re.search(r"diag_every >= (\d+)", str(raised.value)).group(1))
    fits = Trainer(TrainConfig.from_dict({**config.to_dict(), "diag_every": least, "steps": 2 * least}))
    list(fits.run())
    record = fits.results["dgs"].records[-1]
    # a record pickles (to a worker's pipe, into a copy) at about its size, not once per element view
    assert record.nbytes / 2 < len(pickle.dumps(record)) < 2 * record.nbytes
