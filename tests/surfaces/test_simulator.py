"""SPEC §5 surfaces and the batched simulator.

Closed-form gradients against autograd and finite differences, f at the listed minima, the
simulator against a plain step-by-step loop with the registry's optimizer, batched rows
against unbatched runs (starts and learning rates, with and without noise), divergence that
stops only its own row, and the instant views (basin map, lr sweep).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dgs_core import metrics
from dgs_core.optim import registry
from dgs_core.surfaces.functions import SURFACES, check_starts, get_surface, surface_names
from dgs_core.surfaces.simulator import compare, simulate
from dgs_core.surfaces.studies import BASIN_DIVERGED, basin_map, lr_grid, lr_sweep

NAMES = registry.names()
ADAPTIVE_BATCH = [n for n in NAMES if registry.get(n).batch_test is not None]


def _random_points(surface, n: int = 64, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    (x0, x1), (y0, y1) = surface.domain
    return np.stack([rng.uniform(x0, x1, n), rng.uniform(y0, y1, n)], axis=-1)


# ---------------------------------------------------------------------------------------------
# surfaces
# ---------------------------------------------------------------------------------------------


def test_the_spec_table_is_complete() -> None:
    assert surface_names() == [
        "rosenbrock",
        "banana",
        "rastrigin",
        "beale",
        "himmelblau",
        "ackley",
        "booth",
        "quadratic",
        "saddle",
        "wells",
        "styblinski-tang",
    ]
    for surface in SURFACES.values():
        assert surface.formula and surface.description and surface.label
        assert surface.contains(surface.default_start)
        assert all(surface.contains(m) for m in surface.all_minima), surface.name


@pytest.mark.parametrize("name", list(SURFACES))
def test_closed_form_gradient_equals_autograd(name: str) -> None:
    surface = get_surface(name)
    points = torch.tensor(_random_points(surface), dtype=torch.float64, requires_grad=True)
    surface.value(points).sum().backward()
    closed_torch = surface.grad(points.detach())
    closed_numpy = surface.grad(points.detach().numpy())
    torch.testing.assert_close(closed_torch, points.grad, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(closed_numpy, points.grad.numpy(), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", list(SURFACES))
def test_closed_form_gradient_equals_finite_differences(name: str) -> None:
    surface = get_surface(name)
    points = _random_points(surface, 32, seed=1)
    h = 1e-6
    for axis in range(2):
        step = np.zeros(2)
        step[axis] = h
        central = (surface.value(points + step) - surface.value(points - step)) / (2 * h)
        scale = np.maximum(1.0, np.abs(central))
        np.testing.assert_allclose(surface.grad(points)[:, axis] / scale, central / scale, atol=1e-5)


@pytest.mark.parametrize("name", list(SURFACES))
def test_f_at_the_minima_is_f_star_and_the_gradient_vanishes(name: str) -> None:
    surface = get_surface(name)
    for point in surface.minima:
        assert surface.value(point) == pytest.approx(surface.f_min, abs=1e-12)
    for point in surface.all_minima:
        np.testing.assert_allclose(surface.grad(point), 0.0, atol=1e-9)
    # no sampled point beats f*
    if surface.f_min is not None:
        z = surface.grid(301)[2]
        assert z.min() >= surface.f_min - 1e-12


def test_spec_minima_to_six_digits() -> None:
    # SPEC §5 lists these rounded; f there is within rounding of f*.
    himmelblau = get_surface("himmelblau")
    for point in [(3, 2), (-2.805118, 3.131312), (-3.779310, -3.283186), (3.584428, -1.848126)]:
        assert himmelblau.value(point) < 1e-9
    st = get_surface("styblinski-tang")
    assert st.value((-2.903534, -2.903534)) == pytest.approx(-78.33233, abs=1e-5)
    assert get_surface("banana").value((1.0, 1.0 / 3.0)) == 0.0
    wells = get_surface("wells")
    assert wells.minima[0] == pytest.approx((-0.936, 0.0), abs=1e-3)  # "near (−1, 0)"
    assert wells.value(wells.local_minima[0]) > wells.f_min


def test_quadratic_is_rotated_45_degrees_with_condition_number_kappa() -> None:
    for kappa in (100.0, 10.0):
        surface = get_surface("quadratic", kappa=kappa)
        hessian = torch.autograd.functional.hessian(surface.value, torch.zeros(2, dtype=torch.float64))
        values, vectors = torch.linalg.eigh(hessian)
        torch.testing.assert_close(values, torch.tensor([1.0, kappa], dtype=torch.float64))
        # eigenvectors along the diagonals (±45°)
        assert abs(abs(vectors[0, 0].item()) - math.sqrt(0.5)) < 1e-12
    assert get_surface("quadratic").params["kappa"] == 100.0


def test_saddle_has_no_minimum() -> None:
    saddle = get_surface("saddle")
    assert saddle.minima == () and saddle.f_min is None
    assert saddle.gap([1.0, 2.0]) == saddle.value([1.0, 2.0]) == -3.0


def test_bad_surface_names_and_parameters() -> None:
    with pytest.raises(ValueError, match="Invalid surface: 'nope'"):
        get_surface("nope")
    with pytest.raises(ValueError, match="Invalid surface parameter for rosenbrock: 'kappa'"):
        get_surface("rosenbrock", kappa=3.0)
    with pytest.raises(ValueError, match="Invalid kappa: -1"):
        get_surface("quadratic", kappa=-1.0)


def test_start_outside_the_domain_is_clamped_with_a_note_or_refused() -> None:
    rosen = get_surface("rosenbrock")
    starts, notes = check_starts(rosen, [5.0, 0.0])
    assert starts.tolist() == [[2.0, 0.0]]
    assert "outside" in notes[0] and "clamped to (2, 0)" in notes[0]
    with pytest.raises(ValueError, match=r"Invalid start: \(5, 0\) is outside the domain x ∈ \[−?-?2, 2\]"):
        check_starts(rosen, [5.0, 0.0], outside="raise")
    with pytest.raises(ValueError, match="Invalid start"):
        check_starts(rosen, [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="Invalid start"):
        check_starts(rosen, [np.nan, 0.0])
    run = simulate(rosen, "sgd", start=[5.0, 0.0], steps=3)
    assert run.points[0, 0].tolist() == [2.0, 0.0] and run.notes


# ---------------------------------------------------------------------------------------------
# the simulator against a plain loop
# ---------------------------------------------------------------------------------------------


def _plain_loop(surface_name: str, name: str, start, steps: int, **hparams) -> np.ndarray:
    """What a user would write: one (1, 2) tensor, autograd gradients, the registry optimizer."""
    surface = get_surface(surface_name)
    point = torch.tensor([start], dtype=torch.float64, requires_grad=True)
    info = registry.get(name)
    if "extrapolation_lr" in info.defaults and "extrapolation_lr" not in hparams:
        hparams["extrapolation_lr"] = info.resolve(hparams, surface=True)["lr"]  # SPEC: γ̂ = η
    opt = registry.create(name, [point], surface=True, independent_rows=True, **hparams)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = surface.value(point).sum()
        loss.backward()
        return loss

    evaluates_elsewhere = hasattr(opt, "eval") and hasattr(opt, "train")  # Schedule-Free AdamW

    def evaluation_point() -> torch.Tensor:
        if not evaluates_elsewhere:
            return point.detach().clone()
        opt.eval()  # as its authors do: evaluate at x, then train at y again
        evaluated = point.detach().clone()
        opt.train()
        return evaluated

    path = [point.detach().clone()]
    for _ in range(steps):
        if info.needs_closure:
            opt.step(closure)
        else:
            closure()
            opt.step()
        path.append(evaluation_point())
    return torch.cat(path).numpy()


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("surface_name", ["quadratic", "rosenbrock"])
def test_simulate_equals_a_plain_loop(name: str, surface_name: str) -> None:
    start = (-1.5, 1.2)
    expected = _plain_loop(surface_name, name, start, 40)
    run = simulate(surface_name, name, start=start, steps=40)
    # closed-form vs autograd gradients differ in the last bits only
    np.testing.assert_allclose(run.points[:, 0], expected, rtol=1e-9, atol=1e-12)
    assert run.optimizer == name and run.diverged_at.tolist() == [-1]


@pytest.mark.parametrize("name", NAMES)
def test_many_starts_in_one_batch_equal_separate_runs(name: str) -> None:
    starts = _random_points(get_surface("himmelblau"), 5, seed=3)
    batched = simulate("himmelblau", name, start=starts, steps=60)
    assert batched.points.shape == (61, 5, 2)
    for r, start in enumerate(starts):
        alone = simulate("himmelblau", name, start=start, steps=60)
        np.testing.assert_allclose(batched.points[:, r], alone.points[:, 0], rtol=1e-12, atol=1e-14)
        np.testing.assert_array_equal(batched.diverged_at[r], alone.diverged_at[0])


@pytest.mark.parametrize("name", NAMES)
def test_many_lrs_in_one_batch_equal_separate_runs(name: str) -> None:
    default = registry.get(name).resolve(surface=True)["lr"]
    lrs = [default / 4, default, default * 2]
    sweep = simulate("banana", name, lrs=lrs, steps=60)
    assert sweep.lrs.tolist() == lrs
    for r, lr in enumerate(lrs):
        alone = simulate("banana", name, {"lr": lr}, steps=60)
        np.testing.assert_allclose(sweep.points[:, r], alone.points[:, 0], rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(sweep.lr[:, r], lr)


def test_lrs_times_starts_are_lr_major() -> None:
    run = simulate("booth", "sgd", start=[[0.0, 0.0], [1.0, 1.0]], lrs=[0.01, 0.02], steps=3)
    assert run.lrs.tolist() == [0.01, 0.01, 0.02, 0.02]
    assert run.starts.tolist() == [[0.0, 0.0], [1.0, 1.0], [0.0, 0.0], [1.0, 1.0]]


@pytest.mark.parametrize("name", ["sgd", "adam", "dgs", "extrasgd"])
def test_noise_is_common_to_all_rows(name: str) -> None:
    kwargs = {"steps": 40, "noise_std": 2.0, "seed": 7}
    batched = simulate("rosenbrock", name, start=[[-1.0, 1.0], [0.5, 0.5]], lrs=[1e-4, 3e-4], **kwargs)
    for r in range(4):
        alone = simulate("rosenbrock", name, {"lr": batched.lrs[r]}, start=batched.starts[r], **kwargs)
        np.testing.assert_allclose(batched.points[:, r], alone.points[:, 0], rtol=1e-12, atol=1e-14)


def test_noise_is_seeded_and_scales_with_one_over_root_batch() -> None:
    def first_step_noise(**kwargs) -> np.ndarray:
        run = simulate("booth", "sgd", {"lr": 0.01}, steps=1, **kwargs)
        applied = (run.points[0, 0] - run.points[1, 0]) / 0.01
        return applied - get_surface("booth").grad(run.points[0, 0])

    one = first_step_noise(noise_std=1.0, seed=3)
    np.testing.assert_allclose(one, first_step_noise(noise_std=1.0, seed=3))
    assert not np.allclose(one, first_step_noise(noise_std=1.0, seed=4))
    np.testing.assert_allclose(first_step_noise(noise_std=1.0, seed=3, batch_size=4), one / 2, rtol=1e-9)
    np.testing.assert_allclose(first_step_noise(noise_std=0.0), 0.0, atol=1e-9)


def test_recorded_gradient_lr_and_scaling_factor() -> None:
    run = simulate("rosenbrock", "sgd", steps=30)
    np.testing.assert_allclose(run.grad, run.surface.grad(run.points[:-1]))
    np.testing.assert_allclose(run.lr, run.hparams["lr"])
    # plain SGD steps exactly η·|g|: its scaling factor is 1
    np.testing.assert_allclose(run.scaling, 1.0, rtol=1e-6)
    adam = simulate("rosenbrock", "adam", steps=30)
    assert not np.allclose(adam.scaling, 1.0, rtol=1e-2)
    expected = np.abs(np.diff(adam.points, axis=0)) / (np.abs(adam.grad) + 1e-12) / adam.lr[..., None]
    np.testing.assert_allclose(adam.scaling, expected)


def test_dgs_records_its_own_scaling_factor() -> None:
    run = simulate("quadratic", "dgs", steps=20)
    assert run.scale is not None and run.scale.shape == (20, 1, 2)
    info = registry.get("dgs")
    params = info.resolve(surface=True)
    assert np.all(run.scale >= params["s_min"] - 1e-12) and np.all(run.scale <= params["s_max"] + 1e-12)
    assert simulate("quadratic", "adam", steps=5).scale is None


def test_extrasgd_records_its_extrapolated_points() -> None:
    run = simulate("booth", "extrasgd", steps=10)
    assert run.extrapolated is not None and run.extrapolated.shape == (10, 1, 2)
    lr = run.hparams["lr"]
    x0 = run.points[0, 0]
    # variant "extragradient": x_0 + δ = x_0 − γ̂ ∇f(x_0), with γ̂ = η
    np.testing.assert_allclose(run.extrapolated[0, 0], x0 - lr * run.surface.grad(x0))
    # the recorded gradient is the one the update applied: at the extrapolated point
    np.testing.assert_allclose(run.grad[:, 0], run.surface.grad(run.extrapolated[:, 0]))


def test_schedule_free_draws_its_average_not_its_training_point() -> None:
    # The points are x_t = Σ w_s z_s / Σ w_s (w_s = s² at the 2-D default r = 2), the point
    # Schedule-Free AdamW is evaluated at; its gradients are taken at y = (1 − β₁) z + β₁ x.
    run = simulate("quadratic", "schedule_free", steps=12)
    surface = get_surface("quadratic")
    point = torch.tensor([surface.default_start], dtype=torch.float64, requires_grad=True)
    opt = registry.create("schedule_free", [point], surface=True, independent_rows=True)
    weighted, total = torch.zeros(1, 2, dtype=torch.float64), 0.0
    for t in range(1, 13):
        point.grad = torch.as_tensor(surface.grad(point.detach().numpy()))
        np.testing.assert_allclose(run.grad[t - 1], point.grad.numpy(), rtol=1e-12)  # taken at y
        opt.step()
        weighted, total = weighted + t**2 * opt.state[point]["z"], total + t**2
        np.testing.assert_allclose(run.points[t], (weighted / total).numpy(), rtol=1e-12, atol=1e-14)
    assert not np.allclose(run.points[-1], point.detach().numpy())  # y is elsewhere


def test_adascale_gains_from_gradient_noise_only() -> None:
    # Without noise the S groups agree: r = 1, plain SGD. With noise each row measures its own
    # gain: near the minimum (noise dominates) it steps further than SGD, r > 1, far from it r ≈ 1.
    quiet = simulate("booth", "adascale", steps=30)
    sgd = simulate("booth", "sgd", {"lr": quiet.hparams["lr"]}, steps=30)
    np.testing.assert_array_equal(quiet.points, sgd.points)
    assert np.all(quiet.batch_size == 4)  # S·B
    starts = [[-8.0, -8.0], [1.01, 3.01]]
    noisy = simulate("booth", "adascale", start=starts, steps=60, noise_std=5.0, seed=1, batch_size=2)
    assert np.all(noisy.batch_size == 8)
    gain = np.nanmedian(noisy.scaling[20:], axis=(0, 2))  # |Δx|/(η|g|) = r with μ = 0
    assert gain[0] < 1.5 < gain[1] <= 4.0 + 1e-9
    for r in range(2):  # rows are independent problems
        alone = simulate("booth", "adascale", start=starts[r], steps=60, noise_std=5.0, seed=1, batch_size=2)
        np.testing.assert_allclose(alone.points[:, 0], noisy.points[:, r], rtol=1e-12, atol=1e-14)


def test_gradient_clipping_only_when_asked() -> None:
    clipped = simulate("rosenbrock", "sgd", steps=20, clip_norm=5.0)
    assert np.all(np.linalg.norm(clipped.grad, axis=-1) <= 5.0 + 1e-9)
    free = simulate("rosenbrock", "sgd", steps=20)
    assert np.linalg.norm(free.grad, axis=-1).max() > 5.0


@pytest.mark.parametrize("name", ADAPTIVE_BATCH)
def test_adaptive_batch_grows_per_row_under_noise_only(name: str) -> None:
    quiet = simulate("booth", name, steps=40)
    initial = quiet.hparams["initial_batch_size"]
    assert np.all(quiet.batch_size == initial)
    noisy = simulate("booth", name, start=[[-8.0, -8.0], [1.01, 3.01]], steps=80, noise_std=5.0, seed=1)
    sizes = noisy.batch_size
    assert np.all(np.diff(sizes, axis=0) >= 0), "the batch never shrinks"
    assert np.all(sizes <= noisy.hparams["max_batch_size"])
    assert sizes[-1].max() > initial
    # near the minimum the noise dominates first: that row's batch grows earlier
    assert sizes[20, 1] >= sizes[20, 0]
    for r in range(2):  # rows are independent problems
        alone = simulate("booth", name, start=noisy.starts[r], steps=80, noise_std=5.0, seed=1)
        np.testing.assert_array_equal(alone.batch_size[:, 0], sizes[:, r])
        np.testing.assert_allclose(alone.points[:, 0], noisy.points[:, r], rtol=1e-12)


# ---------------------------------------------------------------------------------------------
# divergence
# ---------------------------------------------------------------------------------------------


def test_divergence_stops_only_its_own_row() -> None:
    run = simulate("rosenbrock", "sgd", lrs=[1e-3, 0.05], steps=200)
    good, bad = run.diverged_at.tolist()
    assert good == -1 and bad > 0
    alone = simulate("rosenbrock", "sgd", {"lr": 1e-3}, steps=200)
    np.testing.assert_array_equal(run.points[:, 0], alone.points[:, 0])
    # the diverged row is frozen at its last finite point
    assert np.all(np.isfinite(run.points)) and np.all(np.isfinite(run.loss))
    np.testing.assert_array_equal(
        run.points[bad:, 1], np.broadcast_to(run.points[bad - 1, 1], (201 - bad, 2))
    )
    assert np.all(np.isnan(run.scaling[bad - 1 :, 1]))
    assert run.length.tolist() == [201, bad]
    values = run.metrics()
    assert values["diverged_at"].tolist() == [-1, bad]
    assert values["final_gap"][1] == np.inf
    assert metrics.divergence_message(bad) == f"diverged at step {bad}"


def test_every_row_diverging_ends_the_run_early() -> None:
    run = simulate("rosenbrock", "sgd", lrs=[0.1, 1.0], steps=5000)
    assert np.all(run.diverged_at > 0)
    assert run.seconds < 5.0
    assert np.all(np.isfinite(run.points))


# ---------------------------------------------------------------------------------------------
# metrics of a run, validation
# ---------------------------------------------------------------------------------------------


def test_run_metrics_on_the_ill_conditioned_quadratic() -> None:
    # lr just under 2/κ: SGD bounces across the valley every step
    run = simulate("quadratic", "sgd", {"lr": 0.0195}, steps=300)
    values = run.metrics(tolerance=1e-3)
    assert values["oscillation_fraction"][0] > 0.5
    assert values["overshoots"][0] > 100
    reached = values["steps_to_tolerance"][0]
    assert reached > 0
    assert run.gap[reached, 0] < 1e-3 <= run.gap[reached - 1, 0]
    assert set(values) == {
        "final_gap",
        "steps_to_tolerance",
        "overshoots",
        "overshoot_fraction",
        "oscillations",
        "oscillation_fraction",
        "spikes",
        "diverged_at",
    }


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"steps": 0}, "steps"),
        ({"noise_std": -1.0}, "noise_std"),
        ({"batch_size": 0}, "batch_size"),
        ({"clip_norm": 0.0}, "clip_norm"),
        ({"lrs": [0.1, -1.0]}, "lr"),
        ({"lrs": []}, "lrs"),
        ({"outside": "wrap"}, "outside"),
    ],
)
def test_bad_simulation_arguments_name_themselves(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=f"Invalid {match}"):
        simulate("booth", "sgd", **kwargs)


def test_unknown_optimizer_and_hyperparameter() -> None:
    with pytest.raises(ValueError, match="Invalid optimizer"):
        simulate("booth", "nope")
    with pytest.raises(ValueError, match="Invalid hyperparameter"):
        simulate("booth", "sgd", {"betas": 1})


# ---------------------------------------------------------------------------------------------
# surface defaults: every optimizer gets somewhere on the default surfaces
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_surface_defaults_converge_on_the_smooth_surfaces(name: str) -> None:
    # One lr per optimizer for every surface (registry surface_defaults): from each default
    # start, 1000 steps cut f − f* a thousandfold on the bowls and tenfold in the valleys.
    for surface_name, factor in [
        ("booth", 1e-3),
        ("quadratic", 1e-3),
        ("himmelblau", 1e-3),
        ("beale", 0.1),
        ("banana", 0.1),
        ("rosenbrock", 0.1),
    ]:
        run = simulate(surface_name, name, steps=1000)
        assert run.diverged_at[0] == -1, f"{name} diverged on {surface_name}"
        ratio = run.final_gap[0] / run.gap[0, 0]
        assert ratio < factor, f"{name} on {surface_name}: f − f* fell by {ratio:.3g} only"


# ---------------------------------------------------------------------------------------------
# instant views
# ---------------------------------------------------------------------------------------------


def test_basin_map_pixels_equal_single_runs() -> None:
    basin = basin_map("himmelblau", "sgd", {"lr": 0.01}, resolution=(7, 5), steps=150)
    assert basin.final_point.shape == (5, 7, 2) and basin.basin.shape == (5, 7)
    for j, i in [(0, 0), (2, 3), (4, 6)]:
        run = simulate("himmelblau", "sgd", {"lr": 0.01}, start=(basin.xs[i], basin.ys[j]), steps=150)
        np.testing.assert_allclose(basin.final_point[j, i], run.points[-1, 0], rtol=1e-12, atol=1e-14)
        assert basin.steps_to_tolerance[j, i] == run.metrics()["steps_to_tolerance"][0]
    # gradient descent on Himmelblau finds all four minima from a grid of starts
    assert set(np.unique(basin.basin)) == {0, 1, 2, 3}


def test_basin_map_marks_divergence() -> None:
    basin = basin_map("rosenbrock", "sgd", {"lr": 2e-3}, resolution=9, steps=100)
    assert (basin.basin == BASIN_DIVERGED).any() and (basin.basin != BASIN_DIVERGED).any()
    assert np.all(np.isinf(basin.final_gap[basin.basin == BASIN_DIVERGED]))
    assert np.all(np.isfinite(basin.final_point))


def test_lr_sweep_tunes_on_the_same_budget() -> None:
    sweep = lr_sweep("booth", "sgd", steps=100)
    assert len(sweep.lrs) == len(lr_grid(sweep.default_lr)) == 15
    assert sweep.lrs[sweep.default_index] == sweep.default_lr
    best = sweep.best_index()
    reached = sweep.steps_to_tolerance
    assert reached[best] >= 0 and reached[best] == reached[reached >= 0].min()
    assert sweep.best_run().lrs[0] == sweep.best_lr()
    assert sweep.best_index("final_gap") == int(np.argmin(sweep.final_gap))
    diverging = lr_sweep("rosenbrock", "sgd", lrs=[0.5, 1.0], steps=50)
    assert diverging.best_index() is None and diverging.default_index is None


def test_compare_runs_every_optimizer_on_the_same_problem() -> None:
    runs = compare("booth", ["sgd", "adam"], start=(0.0, 0.0), steps=10, noise_std=0.5)
    assert list(runs) == ["sgd", "adam"]
    assert all(r.starts.tolist() == [[0.0, 0.0]] for r in runs.values())
    tuned = compare("booth", {"sgd": {"lr": 0.02}}, steps=5)
    assert tuned["sgd"].lrs.tolist() == [0.02]


def test_lr_grid() -> None:
    grid = lr_grid(0.1, decades_below=1, decades_above=1, per_decade=2)
    np.testing.assert_allclose(grid, [0.01, 0.1 / math.sqrt(10), 0.1, 0.1 * math.sqrt(10), 1.0])
    with pytest.raises(ValueError, match="Invalid center"):
        lr_grid(0.0)


def test_simulation_leaves_torch_threading_as_it_was() -> None:
    # the simulator runs single-threaded (tiny tensors) and must restore the process setting
    before = torch.get_num_threads()
    simulate("booth", "sgd", steps=3)
    basin_map("booth", "sgd", resolution=3, steps=3)
    assert torch.get_num_threads() == before
