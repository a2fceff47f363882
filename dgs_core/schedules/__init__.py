"""Learning-rate schedules, plateau annealing and annealing plans (docs/algorithms.md#schedules).

    functions.py  every schedule as a pure function ``f(step, *, base_lr, ...) -> float``
    registry.py   SCHEDULES: name -> ScheduleInfo (function, Param specs, formula)
    spec.py       make_schedule, chain, ScheduleSpec (plain JSON) and build, lambda_lr for torch
    plateau.py    PlateauAnnealer (ReduceLROnPlateau's semantics) and is_improvement
    annealing.py  AnnealingPlan: phases of schedules or plateau rules, each with its data source

>>> from dgs_core.schedules import make_schedule, chain, sample
>>> cosine = make_schedule("cosine", base_lr=0.1, total_steps=100, min_lr=0.001)
>>> round(cosine(50), 6)
0.0505
"""

from dgs_core.schedules.functions import (
    constant,
    cosine,
    cosine_restarts,
    exponential,
    linear,
    multistep,
    one_cycle,
    polynomial,
    step_decay,
    warmup,
    warmup_cosine,
    wsd,
)
from dgs_core.schedules.plateau import PLATEAU_HYPERPARAMS, PlateauAnnealer, ReductionEvent, is_improvement
from dgs_core.schedules.registry import SCHEDULES, ScheduleInfo, get, names
from dgs_core.schedules.spec import (
    CHAIN,
    ChainSchedule,
    Schedule,
    ScheduleSpec,
    build,
    chain,
    lambda_lr,
    make_schedule,
    sample,
)

__all__ = [
    "CHAIN",
    "PLATEAU_HYPERPARAMS",
    "SCHEDULES",
    "ChainSchedule",
    "PlateauAnnealer",
    "ReductionEvent",
    "Schedule",
    "ScheduleInfo",
    "ScheduleSpec",
    "build",
    "chain",
    "constant",
    "cosine",
    "cosine_restarts",
    "exponential",
    "get",
    "is_improvement",
    "lambda_lr",
    "linear",
    "make_schedule",
    "multistep",
    "names",
    "one_cycle",
    "polynomial",
    "sample",
    "step_decay",
    "warmup",
    "warmup_cosine",
    "wsd",
]
