"""The Surface lab's configuration in the query string: exact round trips, and every malformed
setting falling back to its default with a notice, never an exception."""

from __future__ import annotations

import json
import string
from dataclasses import replace

import numpy as np
import pytest

from dgs_core import surfaces
from dgs_core.optim import registry
from dgs_core.params import ParamError
from dgs_core.surfaces.config import DEFAULT_OPTIMIZERS, SurfaceConfig, clean_start, parse_hparam, parse_query

RICH = SurfaceConfig(
    surface="quadratic",
    surface_params={"kappa": 12.5},
    optimizers=("adam", "dgs", "adan", "sgd"),
    hparams={
        "adam": {"lr": 0.0123, "beta1": 0.8},
        "dgs": {"importance": "taylor", "reset": "every", "reset_every": 7},
        "adan": {"no_prox": True},
    },
    start=(0.30000000000000004, -1 / 3),
    steps=321,
    seed=42,
    noise_std=0.25,
    batch_size=8,
    clip_norm=2.5,
    view="overlay",
    step=17,
    basin_optimizer="dgs",
    basin_kind="gap",
    basin_resolution=100,
    lr_metric="steps_to_tolerance",
    tuning="final_gap",
)


def test_defaults_are_the_issues_set_and_make_a_short_link():
    config, notices = parse_query({})
    assert (config, notices) == (SurfaceConfig(), [])
    assert set(DEFAULT_OPTIMIZERS) == {
        "sgd",
        "momentum",
        "adam",
        "lars",
        "adan",
        "dgs",
        "extrasgd",
        "adagrad_norm",
    }
    assert list(DEFAULT_OPTIMIZERS) == [n for n in registry.names() if n in DEFAULT_OPTIMIZERS]
    assert config.start == (-2.0, 2.0)  # SPEC §5's Rosenbrock start
    assert config.to_query() == {"surface": "rosenbrock", "start": "-2.0,2.0"}
    assert config.timeline_step == 500 and config.clip_norm is None


def test_every_setting_round_trips_exactly():
    query = RICH.to_query()
    assert query == {
        "surface": "quadratic",
        "kappa": "12.5",
        "opt": "sgd,adam,dgs,adan",  # the registry's display order
        "adam.lr": "0.0123",
        "adam.beta1": "0.8",
        "dgs.importance": "taylor",
        "dgs.reset": "every",
        "dgs.reset_every": "7",
        "adan.no_prox": "true",
        "start": "0.30000000000000004,-0.3333333333333333",
        "steps": "321",
        "seed": "42",
        "noise": "0.25",
        "batch": "8",
        "clip": "2.5",
        "view": "overlay",
        "t": "17",
        "basin": "dgs",
        "bkind": "gap",
        "bres": "100",
        "lrmetric": "steps_to_tolerance",
        "tune": "final_gap",
    }
    config, notices = parse_query(query)
    assert notices == []
    assert config == RICH
    assert config.start == (0.30000000000000004, -1 / 3)  # bit-exact floats
    assert config.hparams_for("dgs") == {"importance": "taylor", "reset": "every", "reset_every": 7}


def test_repeated_keys_keep_the_last_value_said_and_defaults_are_not_written():
    config, notices = parse_query({"steps": ["100", "200"], "surface": "quadratic", "kappa": "100"})
    assert notices == ["steps was given 2 times; using the last, steps='200'"]
    assert config.steps == 200
    assert config.surface_params == {}  # κ = 100 is the quadratic's default
    assert "kappa" not in config.to_query()


@pytest.mark.parametrize(
    ("key", "text", "reason"),
    [
        ("surface", "nope", "Invalid surface: 'nope'"),
        ("steps", "-5", "Invalid steps: -5 (must be an integer in [10, 5000])"),
        ("steps", "abc", "Invalid number: 'abc' (must be an integer)"),
        ("steps", "2.5", "must be an integer"),
        ("seed", "-1", "Invalid seed: -1"),
        ("noise", "nan", "Invalid number: 'nan' (must be finite)"),
        ("noise", "-0.1", "Invalid noise_std: -0.1"),
        ("batch", "0", "Invalid batch_size: 0"),
        ("clip", "0", "Invalid clip_norm: 0.0"),
        ("clip", "inf", "must be finite"),
        (
            "view",
            "xyz",
            "Invalid view: 'xyz' (must be one of 'panels', 'overlay', '3d', 'basin', "
            "'sensitivity', 'tuning')",
        ),
        ("t", "zz", "Invalid number: 'zz'"),
        ("t", "501", "Invalid step: 501 (must be an integer in [0, 500])"),
        ("start", "abc", "Invalid start: 'abc' (must be two numbers, 'x,y')"),
        ("start", "1,2,3", "Invalid start: '1,2,3'"),
        ("start", "nan,1", "Invalid number: 'nan' (must be finite)"),
        ("bkind", "x", "Invalid basin_kind: 'x'"),
        ("bres", "7", "Invalid basin_resolution: 7"),
        ("lrmetric", "x", "Invalid lr_metric: 'x'"),
        ("tune", "x", "Invalid tuning: 'x'"),
        ("basin", "nesterov", "Invalid basin_optimizer: 'nesterov' (must be one of the chosen optimizers)"),
        ("kappa", "5", "rosenbrock has no parameter 'kappa'"),
        ("junk", "1", "unknown setting"),
    ],
)
def test_a_malformed_setting_falls_back_to_its_default_with_one_notice(key, text, reason):
    config, notices = parse_query({key: text})
    assert config == SurfaceConfig()
    assert len(notices) == 1, notices
    assert f"{key}={text!r}" in notices[0]
    assert reason in notices[0]


def test_the_good_settings_of_a_partly_malformed_link_are_kept():
    config, notices = parse_query(
        {
            "surface": "beale",
            "steps": "-5",
            "start": "2,1",
            "opt": "foo,adam,adam",
            "adam.lr": "-1",
            "seed": "3",
        }
    )
    assert (config.surface, config.start, config.optimizers, config.seed) == (
        "beale",
        (2.0, 1.0),
        ("adam",),
        3,
    )
    assert config.steps == 500 and config.hparams == {}
    assert len(notices) == 3
    assert any("Invalid lr: -1.0 (must be in [0, 1000])" in n for n in notices)
    assert any("'foo'" in n and "Invalid optimizer" in n for n in notices)


def test_optimizer_lists():
    assert parse_query({"opt": "nope"}) == (
        SurfaceConfig(),
        [
            "Ignored optimizer 'nope' in opt: Invalid optimizer: 'nope' (must be one of "
            + ", ".join(registry.names())
            + ")",
            "Ignored opt='nope': no known optimizer; using the default set",
        ],
    )
    config, notices = parse_query({"opt": ""})  # what the page writes when none is chosen
    assert config.optimizers == () and notices == []
    assert config.to_query()["opt"] == ""


@pytest.mark.parametrize(
    ("key", "text", "reason"),
    [
        ("adam.lr", "-1", "Invalid lr: -1.0 (must be in [0, 1000])"),
        ("adam.lr", "fast", "Invalid lr: 'fast'"),
        ("adam.foo", "1", "Adam has no hyperparameter 'foo'"),
        ("nesterov.lr", "0.1", "'nesterov' is not among the chosen optimizers"),
        ("dgs.importance", "bogus", "Invalid importance: 'bogus' (must be one of 'grad', 'taylor')"),
        ("dgs.reset_every", "2.5", "Invalid reset_every: '2.5'"),
        ("adan.no_prox", "maybe", "Invalid no_prox: 'maybe' (must be true or false)"),
    ],
)
def test_a_bad_hyperparameter_keeps_the_registry_default(key, text, reason):
    config, notices = parse_query({key: text})
    assert config == SurfaceConfig()
    assert len(notices) == 1 and reason in notices[0], notices


def test_hyperparameter_texts_parse_to_the_registry_types():
    dgs, adan = registry.get("dgs"), registry.get("adan")
    assert parse_hparam(dgs.hyperparam("reset_every"), " 12 ") == 12
    assert parse_hparam(dgs.hyperparam("lr"), "1e-3") == 1e-3
    assert parse_hparam(adan.hyperparam("no_prox"), "1") is True
    assert parse_hparam(adan.hyperparam("no_prox"), "FALSE") is False


def test_surface_parameters():
    config, notices = parse_query({"surface": "quadratic", "kappa": "10"})
    assert notices == [] and config.get_surface().params == {"kappa": 10.0}
    config, notices = parse_query({"surface": "quadratic", "kappa": "-1"})
    assert config.surface_params == {} and "Invalid kappa: -1.0" in notices[0]


def test_a_start_outside_the_domain_is_clamped_with_a_notice():
    config, notices = parse_query({"start": "5,-7"})
    assert config.start == (2.0, -1.0)  # Rosenbrock: x ∈ [−2, 2], y ∈ [−1, 3]
    assert notices == ["Link's start (5, -7) lies outside x ∈ [-2, 2], y ∈ [-1, 3]: clamped to (2, -1)"]


def test_clean_start_rounds_and_clamps():
    rosenbrock = surfaces.get_surface("rosenbrock")
    assert clean_start(rosenbrock, (-1.9000000000000001, 2.00000004)) == ((-1.9, 2.0), [])
    (x, y), notes = clean_start(rosenbrock, (-0.00001, 9))
    assert (x, y) == (0.0, 3.0) and str(x) == "0.0" and len(notes) == 1
    with pytest.raises(ValueError, match="Invalid start"):
        clean_start(rosenbrock, ("a", 1))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"steps": 0}, "Invalid steps: 0"),
        ({"start": (5.0, 5.0)}, "Invalid start: (5.0, 5.0) (outside the domain of rosenbrock)"),
        ({"optimizers": ("sgd",), "hparams": {"adam": {"lr": 0.1}}}, "'adam' is not among the chosen"),
        ({"hparams": {"adam": {"lr": -1.0}}}, "Invalid lr: -1.0"),
        ({"clip_norm": 0.0}, "Invalid clip_norm: 0.0"),
        ({"optimizers": ("sgd", "sgd")}, "each may appear once"),
        ({"surface": "quadratic", "surface_params": {"kappa": 0.0}}, "Invalid kappa: 0.0"),
    ],
)
def test_the_configuration_refuses_bad_values_by_name(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        SurfaceConfig(**kwargs)


def test_random_garbage_never_raises():
    rng = np.random.default_rng(0)
    keys = [
        "surface",
        "kappa",
        "opt",
        "adam.lr",
        "dgs.reset",
        "start",
        "steps",
        "seed",
        "noise",
        "batch",
        "clip",
        "view",
        "t",
        "basin",
        "bkind",
        "bres",
        "lrmetric",
        "tune",
        "x.y",
        "",
        ".",
    ]
    alphabet = string.printable + "éκ∞−"
    for _ in range(400):
        query = {}
        for key in rng.choice(keys, size=rng.integers(1, 6)):
            query[str(key)] = "".join(rng.choice(list(alphabet), size=rng.integers(0, 12)))
        config, _ = parse_query(query)
        assert isinstance(config, SurfaceConfig)
        assert parse_query(config.to_query()) == (config, [])  # what the page writes back is clean


def test_simulation_kwargs_drive_simulate_and_config_simulate():
    config = replace(RICH, steps=40)
    run = surfaces.simulate(
        config.get_surface(), "adam", config.hparams_for("adam"), **config.simulation_kwargs()
    )
    assert run.starts.tolist() == [list(config.start)] and run.steps == 40
    assert (run.noise_std, run.batch, run.clip_norm, run.seed) == (0.25, 8, 2.5, 42)
    again = config.simulate()
    assert list(again) == list(config.optimizers)
    np.testing.assert_array_equal(again["adam"].points, run.points)


def test_to_dict_round_trips_through_json():
    data = json.loads(json.dumps(RICH.to_dict()))
    assert SurfaceConfig.from_dict(data) == RICH
    assert SurfaceConfig.from_dict(SurfaceConfig().to_dict()) == SurfaceConfig()


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"noise": 0.1}, "noise"),
        ({"steps": 5000.5}, "steps"),
        ({"optimizers": "sgd"}, "optimizers"),
        ({"start": [1.0]}, "start"),
        ({"hparams": {"adam": 3}}, "hparams"),
        ({"clip_norm": float("inf")}, "clip_norm"),
    ],
)
def test_from_dict_names_the_bad_field(data, field):
    with pytest.raises(ParamError) as raised:
        SurfaceConfig.from_dict(data)
    assert raised.value.field == field


def test_a_huge_condition_number_is_refused_by_name_not_simulated() -> None:
    with pytest.raises(ParamError) as raised:
        SurfaceConfig(surface="quadratic", surface_params={"kappa": 1e308})
    assert raised.value.field == "kappa"
    config, notices = parse_query({"surface": "quadratic", "kappa": "1e308"})
    assert config.surface_params == {} and len(notices) == 1 and "Invalid kappa" in notices[0]
