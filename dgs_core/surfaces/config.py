"""The Surface lab's whole configuration as a URL query string, and back.

A copied link reproduces the same picture: surface (and its parameters), optimizers and
their changed hyperparameters, start, steps, seed, gradient noise, batch size, clipping,
the view and the timeline step. Parsing never raises: every setting that cannot be used
falls back to its default and adds one notice saying what was ignored and why.

    >>> config = SurfaceConfig(surface="quadratic", surface_params={"kappa": 10.0},
    ...                        optimizers=("sgd", "adam"), hparams={"adam": {"lr": 0.05}})
    >>> query = config.to_query()
    >>> query["opt"], query["adam.lr"], query["kappa"]
    ('sgd,adam', '0.05', '10.0')
    >>> parse_query(query) == (config, [])
    True
    >>> config, notices = parse_query({"surface": "nope", "steps": "-5"})
    >>> config == SurfaceConfig(), len(notices)
    (True, 2)

Query keys (anything at its default is left out, except ``surface`` and ``start``)::

    surface=rosenbrock          kappa=100 (the surface's own parameters, by name)
    opt=sgd,adam,dgs            adam.lr=0.05 (one key per changed hyperparameter)
    start=-2.0,2.0              steps=500  seed=0  noise=0.0  batch=1  clip=10.0 (absent: off)
    view=panels                 t=120 (timeline step; absent: the end of the run)
    basin=adam  bkind=basin  bres=60      lrmetric=final_gap  tune=steps_to_tolerance

Floats are written with ``repr`` (the shortest text that reads back to the same number), so a
round trip is exact. No streamlit here: the page passes ``st.query_params`` in and out.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from types import MappingProxyType
from typing import Any

from dgs_core.limits import ServerLimits, check_surface_work
from dgs_core.optim import registry
from dgs_core.params import Param, ParamSet, Value, check_keys, invalid
from dgs_core.surfaces import simulator
from dgs_core.surfaces.functions import SURFACES, Surface, check_starts, get_surface
from dgs_core.surfaces.simulator import Run
from dgs_core.surfaces.studies import lr_grid

DEFAULT_SURFACE = "rosenbrock"
# The default set, in the registry's display order (the order every picker shows).
DEFAULT_OPTIMIZERS = ("sgd", "momentum", "adam", "dgs", "adan", "lars", "extrasgd", "adagrad_norm")
VIEWS = ("panels", "overlay", "3d", "basin", "sensitivity", "tuning")
BASIN_KINDS = ("basin", "steps", "gap")
BASIN_RESOLUTIONS = (40, 60, 100)
LR_METRICS = ("final_gap", "steps_to_tolerance")
TUNING_CRITERIA = ("steps_to_tolerance", "final_gap")

START_DIGITS = 4  # a clicked start is rounded to this many decimals: short, exact links


def _frozen(mapping: Mapping[str, Any] | None = None) -> Mapping[str, Any]:
    return MappingProxyType(dict(mapping or {}))


# The plain-valued fields, as Param specs: the simulator's own (dgs_core.surfaces.simulator),
# steps narrowed to what a page computes quickly (8 optimizers × 5000 steps ≈ 10 s) and the seed
# to what a number widget holds.
FIELDS = ParamSet(
    (
        replace(simulator.STEPS, low=10, high=5000),
        replace(simulator.SEED, high=2**32 - 1),
        simulator.NOISE_STD,
        simulator.BATCH_SIZE,
        replace(simulator.CLIP_NORM, low=1e-6, low_open=False),
        Param("view", VIEWS[0], choices=VIEWS, help="what the lab shows"),
        Param("step", None, low=0, integer=True, optional=True, help="the timeline's step (None: the end)"),
        Param("basin_kind", BASIN_KINDS[0], choices=BASIN_KINDS, help="what the basin map colours"),
        Param("basin_resolution", 60, choices=BASIN_RESOLUTIONS, help="basin-map grid per axis"),
        Param("lr_metric", LR_METRICS[0], choices=LR_METRICS, help="the sensitivity view's y axis"),
        Param(
            "tuning", TUNING_CRITERIA[0], choices=TUNING_CRITERIA, help="how the fair comparison ranks lrs"
        ),
    )
)


def _check_optimizer(name: Any) -> str:
    if not isinstance(name, str):
        raise invalid("optimizer", name, "a registry name")
    return registry.get(name).name


# ---------------------------------------------------------------------------------------------
# The configuration
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SurfaceConfig:
    """Everything the Surface lab's picture depends on; validated on construction.

    Attributes:
        surface: docs/algorithms.md#surfaces name.
        surface_params: the surface's parameters (``kappa``); only those that differ from
            the surface's defaults are kept.
        optimizers: registry names, kept in the registry's display order (may be empty: the
            page then asks for one).
        hparams: ``{optimizer: {name: value}}``, only the changed hyperparameters (on top of
            the registry's surface defaults); only for chosen optimizers.
        start: ``(x, y)`` inside the surface's domain (``None`` given: the surface's default).
        steps, seed, noise_std, batch_size: simulation length, noise seed, σ and B of ∇f + σξ/√B.
        clip_norm: gradient-norm clipping, ``None`` = off (the default: only when turned on).
        view: one of :data:`VIEWS`.
        step: the timeline's step, ``None`` = the end of the run.
        basin_optimizer: the basin map's optimizer, ``None`` = the first chosen.
        basin_kind, basin_resolution: what the basin map colours, and its grid per axis.
        lr_metric: the lr-sensitivity view's y axis; ``tuning``: how "fair comparison" ranks lrs.
    """

    surface: str = DEFAULT_SURFACE
    surface_params: Mapping[str, float] = field(default_factory=_frozen)
    optimizers: tuple[str, ...] = DEFAULT_OPTIMIZERS
    hparams: Mapping[str, Mapping[str, Value]] = field(default_factory=_frozen)
    start: tuple[float, float] | None = None  # always a point after __post_init__
    steps: int = 500
    seed: int = 0
    noise_std: float = 0.0
    batch_size: int = 1
    clip_norm: float | None = None
    view: str = VIEWS[0]
    step: int | None = None
    basin_optimizer: str | None = None
    basin_kind: str = BASIN_KINDS[0]
    basin_resolution: int = 60
    lr_metric: str = LR_METRICS[0]
    tuning: str = TUNING_CRITERIA[0]

    def __post_init__(self) -> None:
        surface = get_surface(self.surface, **dict(self.surface_params))
        defaults = SURFACES[surface.name].params
        changed = {k: float(v) for k, v in surface.params.items() if v != defaults[k]}
        object.__setattr__(self, "surface_params", _frozen(changed))
        chosen = [_check_optimizer(n) for n in self.optimizers]
        if len(set(chosen)) != len(chosen):
            raise ValueError(f"Invalid optimizers: {list(self.optimizers)} (each may appear once)")
        optimizers = tuple(n for n in registry.names() if n in chosen)  # display order, as the picker
        object.__setattr__(self, "optimizers", optimizers)
        hparams = {}
        for name, values in self.hparams.items():
            if name not in optimizers:
                raise ValueError(f"Invalid hparams: {name!r} is not among the chosen optimizers")
            info = registry.get(name)
            info.resolve(values, surface=True)  # names and ranges, as the optimizer checks them
            if values:
                hparams[name] = _frozen(values)
        object.__setattr__(self, "hparams", _frozen(hparams))
        start = _start_pair(surface.default_start if self.start is None else self.start)
        if not bool(surface.contains(start)):
            raise ValueError(f"Invalid start: {start} (outside the domain of {surface.name})")
        object.__setattr__(self, "start", start)
        for param in FIELDS:
            object.__setattr__(self, param.name, param.validate(getattr(self, param.name)))
        if self.step is not None and self.step > self.steps:
            raise FIELDS["step"].error(self.step, f"an integer in [0, {self.steps}]")
        if self.basin_optimizer is not None and self.basin_optimizer not in optimizers:
            raise invalid("basin_optimizer", self.basin_optimizer, "one of the chosen optimizers")

    # -- derived values -------------------------------------------------------------------------
    def get_surface(self) -> Surface:
        """The surface with its parameters."""
        return get_surface(self.surface, **dict(self.surface_params))

    @property
    def timeline_step(self) -> int:
        """The timeline's step, the last one when none was chosen."""
        return self.steps if self.step is None else self.step

    @property
    def basin(self) -> str | None:
        """The basin map's optimizer: the chosen one, else the first optimizer (None if none)."""
        return self.basin_optimizer or (self.optimizers[0] if self.optimizers else None)

    def hparams_for(self, name: str) -> dict[str, Value]:
        """The changed hyperparameters of ``name`` (empty: all at their surface defaults)."""
        return dict(self.hparams.get(name, {}))

    def simulation_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of :func:`dgs_core.surfaces.simulator` (and ``compare``,
        ``lr_sweep``) that this configuration sets."""
        return {
            "start": self.start,
            "steps": self.steps,
            "seed": self.seed,
            "noise_std": self.noise_std,
            "batch_size": self.batch_size,
            "clip_norm": self.clip_norm,
        }

    def rows_per_step(self, name: str) -> float:
        """What one of ``name``'s rows costs per step, in 2-D point-steps: 1, and under noise
        also the adaptive-batch family's per-sample test (up to ``max_batch_size`` samples every
        ``test_interval`` steps) or AdaScale's S group gradients (``scale`` every step)."""
        info = registry.get(name)
        if self.noise_std == 0 or (info.batch_test is None and not info.group_gradients):
            return 1.0
        if info.group_gradients:
            return 1.0 + float(info.resolve(self.hparams_for(name), surface=True)["scale"])
        resolved = info.resolve(self.hparams_for(name), surface=True)
        return 1.0 + float(resolved["max_batch_size"]) / float(resolved["test_interval"])

    def check_work(self, limits: ServerLimits | None = None) -> None:
        """This configuration's view within the server's Surface work limit, before any work.

        Counts every path (one row per optimizer), plus the basin map's grid of starts or the
        lr views' sweeps; over the limit, a ``ParamError`` names the field that sets the most
        work (``basin_resolution`` on the basin view, ``steps`` otherwise) and the limit.
        """
        rows = sum(self.rows_per_step(name) for name in self.optimizers)
        field = "steps"
        if self.view == "basin" and self.basin is not None:
            rows += self.basin_resolution**2 * self.rows_per_step(self.basin)
            field = "basin_resolution"
        elif self.view in ("sensitivity", "tuning"):
            rows += len(lr_grid(1.0)) * sum(self.rows_per_step(name) for name in self.optimizers)
        check_surface_work(points=math.ceil(rows), steps=self.steps, field=field, limits=limits)

    def simulate(self) -> dict[str, Run]:
        """Every chosen optimizer's run from the start: ``{name: Run}``, in display order."""
        surface = self.get_surface()
        return {
            name: simulator.simulate(surface, name, self.hparams_for(name), **self.simulation_kwargs())
            for name in self.optimizers
        }

    # -- plain JSON (a bundle's config.json, the CLI's input) -------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON, every field; :meth:`from_dict` reads it back."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["surface_params"] = dict(self.surface_params)
        out["optimizers"] = list(self.optimizers)
        out["hparams"] = {name: dict(values) for name, values in self.hparams.items()}
        out["start"] = list(self.start)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SurfaceConfig:
        """A validated config from :meth:`to_dict`'s form (unknown keys refused)."""
        if not isinstance(data, Mapping):
            raise invalid("config", data, "a mapping")
        check_keys(data, [f.name for f in fields(cls)], "surface config")
        values = dict(data)
        if "optimizers" in values:
            if isinstance(values["optimizers"], str) or not isinstance(values["optimizers"], list | tuple):
                raise invalid("optimizers", values["optimizers"], "a list of optimizer names")
            values["optimizers"] = tuple(values["optimizers"])
        if values.get("start") is not None:
            values["start"] = _start_pair(values["start"])
        if not isinstance(values.get("hparams", {}), Mapping) or not all(
            isinstance(h, Mapping) for h in values.get("hparams", {}).values()
        ):
            raise invalid("hparams", values.get("hparams"), "a mapping of optimizer → {name: value}")
        return cls(**values)

    # -- the query string -----------------------------------------------------------------------
    def to_query(self) -> dict[str, str]:
        """The query-string form: ``surface`` and ``start`` always, the rest only when changed."""
        default = SurfaceConfig()
        x, y = self.start
        query = {"surface": self.surface}
        query.update({key: _format(value) for key, value in self.surface_params.items()})
        if self.optimizers != default.optimizers:
            query["opt"] = ",".join(self.optimizers)
        for name in self.optimizers:
            for key, value in self.hparams.get(name, {}).items():
                query[f"{name}.{key}"] = _format(value)
        query["start"] = f"{_format(x)},{_format(y)}"
        for attr, key in _SCALAR_KEYS.items():
            value = getattr(self, attr)
            if value != getattr(default, attr):
                query[key] = _format(value)
        return query


def _start_pair(start: Any) -> tuple[float, float]:
    try:
        x, y = (float(v) for v in start)
    except (TypeError, ValueError):
        raise invalid("start", start, "a point (x, y)") from None
    if not (math.isfinite(x) and math.isfinite(y)):
        raise invalid("start", start, "finite")
    return (x, y)


def clean_start(
    surface: Surface, point: Any, *, digits: int | None = START_DIGITS
) -> tuple[tuple[float, float], list[str]]:
    """A start the page can use: clamped into the domain (with a note saying so) and rounded to
    ``digits`` decimals (``None``: kept exact). Raises ``ValueError`` for a point that is not
    two finite numbers."""
    x, y = _start_pair(point)
    starts, notes = check_starts(surface, (x, y), outside="clamp")
    cx, cy = (float(v) if digits is None else round(float(v), digits) for v in starts[0])
    return (cx + 0.0, cy + 0.0), notes  # + 0.0: no "-0.0" in links


def _format(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


# Scalar settings: attribute → query key (written only when they differ from the default).
_SCALAR_KEYS = {
    "steps": "steps",
    "seed": "seed",
    "noise_std": "noise",
    "batch_size": "batch",
    "clip_norm": "clip",
    "view": "view",
    "step": "t",
    "basin_optimizer": "basin",
    "basin_kind": "bkind",
    "basin_resolution": "bres",
    "lr_metric": "lrmetric",
    "tuning": "tune",
}


# ---------------------------------------------------------------------------------------------
# Parsing: never raises; every unusable setting → its default and a notice
# ---------------------------------------------------------------------------------------------


def _parse_int(text: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise invalid("number", text, "an integer") from None


def _parse_float(text: str) -> float:
    try:
        value = float(text.strip())
    except ValueError:
        raise ValueError(f"Invalid number: {text!r}") from None
    if not math.isfinite(value):
        raise invalid("number", text, "finite")
    return value


def _parse_start(text: str) -> tuple[float, float]:
    parts = text.split(",")
    if len(parts) != 2:
        raise invalid("start", text, "two numbers, 'x,y'")
    return (_parse_float(parts[0]), _parse_float(parts[1]))


def parse_hparam(spec: Param, text: str) -> Value:
    """One hyperparameter's query text → its validated value (``ValueError`` naming it)."""
    kind = spec.kind
    if kind == "bool":
        lowered = text.strip().lower()
        if lowered not in ("true", "false", "1", "0"):
            raise ValueError(f"Invalid {spec.name}: {text!r} (must be true or false)")
        return spec.validate(lowered in ("true", "1"))
    if kind == "choice":
        by_text = {str(c): c for c in spec.choices or ()}
        return spec.validate(by_text.get(text.strip(), text))
    try:
        number: Any = _parse_int(text) if kind == "int" else _parse_float(text)
    except ValueError:
        raise ValueError(f"Invalid {spec.name}: {text!r} (must be {spec.describe_range()})") from None
    return spec.validate(number)


_SCALAR_PARSERS: dict[str, Callable[[str], Any]] = {
    "steps": _parse_int,
    "seed": _parse_int,
    "noise_std": _parse_float,
    "batch_size": _parse_int,
    "clip_norm": _parse_float,
    "view": str.strip,
    "step": _parse_int,
    "basin_optimizer": str.strip,
    "basin_kind": str.strip,
    "basin_resolution": _parse_int,
    "lr_metric": str.strip,
    "tuning": str.strip,
}


def _last(value: Any) -> str:
    """A repeated key arrives as a list (``st.query_params.get_all``): the last one counts, and
    :func:`parse_query` says so."""
    if isinstance(value, list | tuple):
        return str(value[-1]) if value else ""
    return str(value)


def parse_query(params: Mapping[str, Any]) -> tuple[SurfaceConfig, list[str]]:
    """``st.query_params`` (or any ``{key: text}``) → ``(config, notices)``.

    Never raises. A setting that is unknown, malformed or out of range is ignored (its default
    applies) with one notice naming the key, the value and the reason; a start outside the
    domain is clamped into it, with a notice.
    """
    query = {str(k): _last(v) for k, v in params.items()}
    notices: list[str] = [
        f"{key} was given {len(values)} times; using the last, {key}={_last(values)!r}"
        for key, values in params.items()
        if isinstance(values, list | tuple) and len(values) > 1
    ]
    used: set[str] = set()

    def ignored(key: str, exc: Exception, default: str = "the default") -> None:
        notices.append(f"Ignored {key}={query[key]!r}: {exc}; using {default}")

    def attempt(key: str, make: Callable[[str], Any]) -> Any:
        used.add(key)
        try:
            return make(query[key])
        except ValueError as exc:
            ignored(key, exc)
            return None

    kwargs: dict[str, Any] = {}
    surface = SURFACES[DEFAULT_SURFACE]
    if "surface" in query:
        found = attempt("surface", lambda text: get_surface(text.strip()))
        surface = found or surface
    kwargs["surface"] = surface.name

    params_all = {name for s in SURFACES.values() for name in s.params}
    surface_params: dict[str, float] = {}
    for name in sorted(params_all & set(query)):
        if name not in surface.params:
            used.add(name)
            notices.append(f"Ignored {name}={query[name]!r}: {surface.name} has no parameter {name!r}")
            continue
        value = attempt(name, lambda text, n=name: surface.with_params(**{n: _parse_float(text)}).params[n])
        if value is not None:
            surface_params[name] = value
    kwargs["surface_params"] = surface_params
    surface = surface.with_params(**surface_params) if surface_params else surface

    optimizers = list(DEFAULT_OPTIMIZERS)
    if "opt" in query:
        used.add("opt")
        optimizers = []
        for raw in query["opt"].split(","):
            name = raw.strip()
            if not name:
                continue
            try:
                name = _check_optimizer(name)
            except ValueError as exc:
                notices.append(f"Ignored optimizer {name!r} in opt: {exc}")
                continue
            if name not in optimizers:
                optimizers.append(name)
        if not optimizers and query["opt"].strip():
            notices.append(f"Ignored opt={query['opt']!r}: no known optimizer; using the default set")
            optimizers = list(DEFAULT_OPTIMIZERS)
    kwargs["optimizers"] = tuple(optimizers)

    hparams: dict[str, dict[str, Value]] = {}
    for key in sorted(k for k in query if "." in k):
        used.add(key)
        name, _, hp = key.partition(".")
        if name not in optimizers:
            notices.append(f"Ignored {key}={query[key]!r}: {name!r} is not among the chosen optimizers")
            continue
        info = registry.get(name)
        try:
            spec = info.hyperparam(hp)
        except KeyError:
            allowed = ", ".join(s.name for s in info.hyperparams)
            notices.append(
                f"Ignored {key}={query[key]!r}: {info.label} has no hyperparameter {hp!r} (it has {allowed})"
            )
            continue
        value = attempt(key, lambda text, s=spec: parse_hparam(s, text))
        if value is not None:
            hparams.setdefault(name, {})[hp] = value
    for name, values in list(hparams.items()):
        try:  # cross-parameter rules the optimizer checks on construction (e.g. s_min <= s_max)
            registry.get(name).resolve(values, surface=True)
        except ValueError as exc:
            notices.append(f"Ignored the hyperparameters of {name}: {exc}; using its defaults")
            del hparams[name]
    kwargs["hparams"] = hparams

    if "start" in query:
        point = attempt("start", _parse_start)
        if point is not None:
            start, notes = clean_start(surface, point, digits=None)  # a link's start is kept exact
            notices += [f"Link's {note}" for note in notes]
            kwargs["start"] = start

    config = SurfaceConfig(**kwargs)
    for attr, key in _SCALAR_KEYS.items():
        if key not in query:
            continue
        value = attempt(key, _SCALAR_PARSERS[attr])
        if value is None:
            continue
        try:
            config = replace(config, **{attr: value})
        except ValueError as exc:
            ignored(key, exc)
    for key in sorted(set(query) - used):
        notices.append(f"Ignored unknown setting {key}={query[key]!r}")
    return config, notices
