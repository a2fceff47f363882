"""Validated schedules: a callable per spec, chains of segments, and the serialisable :class:`ScheduleSpec`.

>>> warm = chain([(10, make_schedule("warmup", base_lr=0.1, warmup_steps=10)),
...               (90, make_schedule("cosine", base_lr=0.1, total_steps=90))])
>>> [round(lr, 3) for lr in sample(warm, 3)]
[0.0, 0.01, 0.02]
"""

from __future__ import annotations

import bisect
import operator
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import torch

from dgs_core.params import check_keys, check_step, invalid
from dgs_core.schedules.registry import get

CHAIN = "chain"

# ---------------------------------------------------------------------------------------------
# Validated callables, composition, and the serialisable spec
# ---------------------------------------------------------------------------------------------


def _freeze(params: Mapping[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(dict(params))


@dataclass(frozen=True)
class ScheduleSpec:
    """A serialisable schedule: a registered ``name`` with ``params``, or a chain of specs.

    Construction validates (``ValueError`` naming the argument and value) and fills in the
    defaults, so a spec always describes exactly the schedule it builds.

    >>> spec = ScheduleSpec("cosine", {"base_lr": 0.1, "total_steps": 100})
    >>> spec.to_dict()
    {'name': 'cosine', 'params': {'base_lr': 0.1, 'total_steps': 100, 'min_lr': 0.0}}
    >>> two = ScheduleSpec.chain([(10, ScheduleSpec("warmup", {"warmup_steps": 10})), (100, spec)])
    >>> ScheduleSpec.from_dict(two.to_dict()) == two
    True

    Attributes:
        name: a key of :data:`SCHEDULES`, or ``"chain"``.
        params: the schedule's validated parameters (empty for a chain).
        segments: for a chain, ``((num_steps, spec), ...)``; see :func:`chain`.
    """

    name: str
    params: Mapping[str, Any] = field(default_factory=dict)
    segments: tuple[tuple[int, ScheduleSpec], ...] = ()

    def __post_init__(self) -> None:
        if self.name == CHAIN:
            if self.params:
                raise ValueError(f"Invalid params for chain: {dict(self.params)!r} (must be empty)")
            segments = tuple(self.segments) if isinstance(self.segments, Iterable) else None
            if not segments:
                raise invalid("segments", self.segments, "a non-empty list")
            checked = []
            for i, segment in enumerate(segments):
                if not (isinstance(segment, tuple | list) and len(segment) == 2):
                    raise ValueError(f"Invalid segment {i}: {segment!r} (must be (num_steps, ScheduleSpec))")
                steps, spec = segment
                steps = _check_segment_steps(steps, i)
                if not isinstance(spec, ScheduleSpec):
                    raise ValueError(f"Invalid schedule of segment {i}: {spec!r} (must be a ScheduleSpec)")
                checked.append((steps, spec))
            object.__setattr__(self, "segments", tuple(checked))
            object.__setattr__(self, "params", _freeze({}))
            return
        if self.segments:
            raise ValueError(f"Invalid segments for {self.name!r}: {self.segments!r} (only a chain has them)")
        if not isinstance(self.params, Mapping):
            raise ValueError(f"Invalid params for {self.name!r}: {self.params!r} (must be a mapping)")
        object.__setattr__(self, "params", _freeze(get(self.name).resolve(self.params)))

    def __hash__(self) -> int:
        return hash((self.name, tuple(self.params.items()), self.segments))

    def __reduce__(self) -> tuple[Any, ...]:
        # the read-only params view cannot be pickled; rebuild from a plain dict (and re-validate)
        return (type(self), (self.name, dict(self.params), self.segments))

    @classmethod
    def chain(cls, segments: Iterable[tuple[int, ScheduleSpec]]) -> ScheduleSpec:
        """The spec of ``chain(segments)``."""
        return cls(CHAIN, segments=tuple(segments))

    @property
    def total_steps(self) -> int | None:
        """For a chain, the summed segment lengths; else None."""
        return sum(n for n, _ in self.segments) if self.name == CHAIN else None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON: ``{"name", "params"}`` or ``{"name": "chain", "segments": [...]}``."""
        if self.name == CHAIN:
            return {
                "name": CHAIN,
                "segments": [{"steps": n, "schedule": spec.to_dict()} for n, spec in self.segments],
            }
        return {"name": self.name, "params": {k: _to_json(v) for k, v in self.params.items()}}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ScheduleSpec:
        """Rebuild (and validate) a spec from :meth:`to_dict`'s output."""
        if not isinstance(data, Mapping):
            raise ValueError(f"Invalid schedule spec: {data!r} (must be a mapping)")
        name = data.get("name")
        allowed = ("name", "segments") if name == CHAIN else ("name", "params")
        check_keys(data, allowed, "schedule spec")
        if name is None:
            raise ValueError(f"Invalid schedule spec: {dict(data)!r} (must have a 'name')")
        if name != CHAIN:
            params = data.get("params", {})
            if not isinstance(params, Mapping):
                raise ValueError(f"Invalid params for {name!r}: {params!r} (must be a mapping)")
            return cls(name, params)
        raw = data.get("segments")
        if not isinstance(raw, list | tuple) or not raw:
            raise invalid("segments", raw, "a non-empty list")
        segments = []
        for i, item in enumerate(raw):
            if not isinstance(item, Mapping) or set(item) != {"steps", "schedule"}:
                raise ValueError(f"Invalid segment {i}: {item!r} (must have exactly 'steps' and 'schedule')")
            segments.append((item["steps"], cls.from_dict(item["schedule"])))
        return cls.chain(segments)


def _to_json(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _check_segment_steps(steps: Any, index: int) -> int:
    if not isinstance(steps, bool):
        try:
            count = operator.index(steps)
        except TypeError:
            pass
        else:
            if count >= 1:
                return count
    raise ValueError(f"Invalid num_steps of segment {index}: {steps!r} (must be an integer >= 1)")


class Schedule:
    """A validated schedule: ``schedule(step) -> lr``. Build with :func:`make_schedule` or :func:`build`."""

    __slots__ = ("_fn", "_kwargs", "spec")

    def __init__(self, spec: ScheduleSpec) -> None:
        if spec.name == CHAIN:
            raise ValueError("Invalid spec: a chain (use build() or chain())")
        self.spec = spec
        self._fn = get(spec.name).fn
        self._kwargs = dict(spec.params)

    def __call__(self, step: int) -> float:
        return float(self._fn(check_step(step), **self._kwargs))

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self._kwargs.items())
        return f"Schedule({self.spec.name}: {args})"


class ChainSchedule:
    """Schedules concatenated in time; each piece sees its local step (see :func:`chain`)."""

    __slots__ = ("_pieces", "_starts", "segments")

    def __init__(self, segments: Iterable[tuple[int, Callable[[int], float]]]) -> None:
        segments = list(segments) if isinstance(segments, Iterable) else None
        if not segments:
            raise invalid("segments", segments, "a non-empty list")
        starts, pieces, lengths, start = [], [], [], 0
        for i, segment in enumerate(segments):
            if not (isinstance(segment, tuple | list) and len(segment) == 2):
                raise ValueError(f"Invalid segment {i}: {segment!r} (must be (num_steps, schedule))")
            steps, piece = segment
            steps = _check_segment_steps(steps, i)
            if not callable(piece):
                raise ValueError(f"Invalid schedule of segment {i}: {piece!r} (must be callable)")
            starts.append(start)
            pieces.append(piece)
            lengths.append(steps)
            start += steps
        self.segments: tuple[tuple[int, Callable[[int], float]], ...] = tuple(
            zip(lengths, pieces, strict=True)
        )
        self._starts = starts
        self._pieces = pieces

    @property
    def total_steps(self) -> int:
        return sum(n for n, _ in self.segments)

    @property
    def boundaries(self) -> tuple[int, ...]:
        """The first step of every segment after the first."""
        return tuple(self._starts[1:])

    def __call__(self, step: int) -> float:
        step = check_step(step)
        i = bisect.bisect_right(self._starts, step) - 1
        return float(self._pieces[i](step - self._starts[i]))

    @property
    def spec(self) -> ScheduleSpec:
        """The chain's :class:`ScheduleSpec`; ``ValueError`` if a piece is a plain function."""
        specs = []
        for i, (steps, piece) in enumerate(self.segments):
            spec = getattr(piece, "spec", None)
            if not isinstance(spec, ScheduleSpec):
                raise ValueError(
                    f"Invalid schedule of segment {i}: {piece!r} (has no ScheduleSpec; "
                    "build it with make_schedule to save it)"
                )
            specs.append((steps, spec))
        return ScheduleSpec.chain(specs)

    def __repr__(self) -> str:
        return f"ChainSchedule({list(self.segments)!r})"


def make_schedule(name: str, **params: Any) -> Schedule:
    """The validated schedule ``name``; unspecified parameters take the table's defaults.

    Raises ``ValueError`` naming the argument and value, for ranges and cross-parameter rules:
    ``Invalid min_lr: 0.5 (must be <= base_lr=0.1)``.
    """
    return Schedule(ScheduleSpec(name, params))


def chain(segments: Iterable[tuple[int, Callable[[int], float]]]) -> ChainSchedule:
    """Concatenate schedules: segment k runs for ``num_steps`` steps and sees its local step.

    ``chain([(100, warmup), (900, cosine)])(150) == cosine(50)``. Past the last boundary the last
    piece keeps going with its local step (a cosine piece holds its min_lr).
    """
    return ChainSchedule(segments)


def build(spec: ScheduleSpec) -> Schedule | ChainSchedule:
    """The callable a :class:`ScheduleSpec` describes."""
    if not isinstance(spec, ScheduleSpec):
        raise invalid("spec", spec, "a ScheduleSpec")
    if spec.name == CHAIN:
        return ChainSchedule([(n, build(s)) for n, s in spec.segments])
    return Schedule(spec)


def sample(schedule: Callable[[int], float], total_steps: int) -> list[float]:
    """``[schedule(0), ..., schedule(total_steps − 1)]`` for plotting."""
    total_steps = check_step(total_steps, "total_steps")
    return [float(schedule(step)) for step in range(total_steps)]


def lambda_lr(
    optimizer: torch.optim.Optimizer, schedule: Callable[[int], float]
) -> torch.optim.lr_scheduler.LambdaLR:
    """A ``LambdaLR`` that writes ``schedule(step)`` into every parameter group's lr.

    ``LambdaLR`` sets lr = initial_lr · factor(step). To make the group's lr exactly the
    schedule's value (no round-off from dividing and re-multiplying) and to work for groups
    created with lr = 0 (which a factor could never move), each group's ``initial_lr`` is set
    to 1.0 and the factor is the schedule's lr itself. The optimizer's own lrs are therefore
    replaced, as with any scheduler; step it after ``optimizer.step()`` as usual.

    >>> opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.0)
    >>> sched = lambda_lr(opt, make_schedule("exponential", base_lr=0.1, gamma=0.5))
    >>> opt.param_groups[0]["lr"]
    0.1
    """
    if not callable(schedule):
        raise invalid("schedule", schedule, "callable")
    for group in optimizer.param_groups:
        group["initial_lr"] = 1.0

    # A plain function (not the schedule object) so that LambdaLR.state_dict() stores nothing
    # for it: torch saves the __dict__ of callable objects, and a frozen spec is no state.
    def factor(step: int) -> float:
        return float(schedule(step))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
