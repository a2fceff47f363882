"""Time one optimizer step at 5M parameters for every registered optimizer, beside its reference.

Model: 40 float32 tensors of 250×500 (5,000,000 parameters) on the CPU, one thread
(``torch.set_num_threads(1)``), fixed random gradients. Each optimizer and its reference are
built on identical copies and stepped alternately, so both see the same machine load; the
table shows median milliseconds per step, ours/reference on the medians ("ratio", which the
targets use) and on the fastest steps ("min ratio", less disturbed by other processes on a
shared machine). Gradients are restored from a
saved copy before every step, outside the timed region (pytorch-optimizer writes into
``p.grad``). Closure optimizers (ExtraSGD) get a closure that restores the gradients: its
copies (one per gradient evaluation) are inside their time.

Targets (default eager path): Adan ≤ 1.0× pytorch-optimizer's Adan, LARS/LARC ≤ 1.0×
pytorch-optimizer's LARS, LAMB, MARS, Lion, Muon and Schedule-Free AdamW ≤ 1.0× their
pytorch-optimizer twins (Lamb, MARS, Lion, Muon, ScheduleFreeAdamW, at their defaults), DGS ≤ 1.3×
torch Adam(foreach=True); ``fused=True`` for DGS, Adan and LARS ≤ 1.25× torch Adam(fused=True),
with the one-time compile cost printed separately.
Rows without a target are for information.

"floor" rows (with the fused rows): the memory traffic of each fused update with none of its
arithmetic. A compiled stand-in reads and writes the same float32 tensors as the optimizer
(Adam: θ, g, m, v read, θ, m, v written; Adan: θ, g, m, v, n, g_prev read, all but g written;
DGS: g, I read and I written with the mean of I, then I, g, buf, θ read and s, buf, θ
written; and DGS as if s_t were not kept in the state) with a multiply-add in place of each
formula. Against torch's Adam(fused=True), such a row is about the least ratio that an update
reading and writing those tensors reaches on this machine.

    .venv/bin/python bench/optim_step.py            # 21 timed steps per pair
    .venv/bin/python bench/optim_step.py --quick    # 5 timed steps per pair
    .venv/bin/python bench/optim_step.py --only dgs,adan --no-fused
    .venv/bin/python bench/optim_step.py --against db7e42f --only dgs,adan,lars --no-fused

``--against REV``: the reference of every row is the same optimizer, built the same way, from
the ``dgs_core`` of git revision REV (extracted into a temporary folder and imported as
``dgs_core_at_rev``): did a change make the step slower?
"""

from __future__ import annotations

import argparse
import functools
import importlib
import io
import re
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dgs_core.optim import registry
from dgs_core.optim._compile import compile_stats, compiled

SHAPE, COUNT = (250, 500), 40  # 5,000,000 parameters

Factory = Callable[[list[torch.Tensor]], torch.optim.Optimizer]


@dataclass(frozen=True)
class Case:
    label: str  # what the row times
    ours: Factory
    reference_label: str | None = None
    reference: Factory | None = None
    target: float | None = None  # ours/reference must stay at or below this
    needs_closure: bool = False


def _pytorch_optimizer(name: str, **group: Any) -> Factory | None:
    """pytorch-optimizer's ``name`` with its defaults (``group``: keys of its one parameter group)."""
    try:
        import pytorch_optimizer
    except ImportError:  # test-only dependency
        return None
    cls = getattr(pytorch_optimizer, name)
    return lambda ps: cls([{"params": ps, **group}] if group else ps)


def _registry(name: str, **switches) -> Factory:
    return lambda ps: registry.create(name, ps, **switches)


_ADAM_FOREACH = ("torch Adam(foreach=True)", lambda ps: torch.optim.Adam(ps, foreach=True))
_ADAM_FUSED = ("torch Adam(fused=True)", lambda ps: torch.optim.Adam(ps, fused=True))
# (reference label, factory, target) for the default path of each registered optimizer
_REFERENCES: dict[str, tuple[str, Factory | None, float | None]] = {
    "dgs": (*_ADAM_FOREACH, 1.3),
    "adan": ("pytorch-optimizer Adan", _pytorch_optimizer("Adan"), 1.0),
    "lars": ("pytorch-optimizer LARS", _pytorch_optimizer("LARS"), 1.0),
    "larc": ("pytorch-optimizer LARS", _pytorch_optimizer("LARS"), 1.0),
    "extrasgd": (
        "torch SGD(nesterov, foreach)",
        lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, nesterov=True, foreach=True),
        None,
    ),
    "adagrad_norm": ("torch SGD(foreach=True)", lambda ps: torch.optim.SGD(ps, lr=0.1, foreach=True), None),
    "adadagrad": ("torch Adagrad(foreach=True)", lambda ps: torch.optim.Adagrad(ps, foreach=True), None),
    "adadagrad_norm": ("torch SGD(foreach=True)", lambda ps: torch.optim.SGD(ps, lr=0.1, foreach=True), None),
    "lamb": ("pytorch-optimizer Lamb", _pytorch_optimizer("Lamb"), 1.0),
    # without a gain measurement (no group gradients here) AdaScale steps as SGD with r = 1
    "adascale": ("torch SGD(foreach=True)", lambda ps: torch.optim.SGD(ps, lr=0.01, foreach=True), None),
    "mars": ("pytorch-optimizer MARS", _pytorch_optimizer("MARS"), 1.0),
    "lion": ("pytorch-optimizer Lion", _pytorch_optimizer("Lion"), 1.0),
    # every tensor is a matrix: the reference's one use_muon group (its Newton–Schulz in bfloat16)
    "muon": ("pytorch-optimizer Muon", _pytorch_optimizer("Muon", use_muon=True), 1.0),
    "schedule_free": ("pytorch-optimizer ScheduleFreeAdamW", _pytorch_optimizer("ScheduleFreeAdamW"), 1.0),
}
_OURS = ("dgs", "adan", "lars")  # also timed with foreach=True and fused=True


class _Traffic(torch.optim.Optimizer):
    """A stand-in update with an optimizer's memory traffic and trivial arithmetic (see "floor")."""

    def __init__(self, params: list[torch.Tensor], kind: str) -> None:
        super().__init__(params, {})
        update, self.names = _TRAFFIC[kind]
        self.update = compiled(update)

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> None:
        params = self.param_groups[0]["params"]
        states = [self.state[p] for p in params]
        names = self.names
        for p, state in zip(params, states, strict=True):
            if not state:
                state.update({name: torch.zeros_like(p) for name in names})
        grads = [p.grad for p in params]
        self.update(params, grads, *([state[name] for state in states] for name in names))


def _adam_traffic(ps: list, gs: list, ms: list, vs: list) -> None:
    for p, g, m, v in zip(ps, gs, ms, vs, strict=True):
        m.mul_(0.9).add_(g)
        v.mul_(0.9).add_(g)
        p.add_(m + v, alpha=-1e-6)


def _adan_traffic(ps: list, gs: list, ms: list, vs: list, ns: list, prevs: list) -> None:
    for p, g, m, v, n, prev in zip(ps, gs, ms, vs, ns, prevs, strict=True):
        m.mul_(0.9).add_(g)
        v.mul_(0.9).add_(g - prev)
        n.mul_(0.9).add_(g + v)
        prev.copy_(g)
        p.add_(m + v + n, alpha=-1e-6)


def _dgs_traffic(ps: list, gs: list, imps: list, bufs: list, scales: list) -> None:
    for p, g, imp, buf, scale in zip(ps, gs, imps, bufs, scales, strict=True):
        imp.mul_(0.9).add_(g)  # pass 1, then the mean
        k = imp.mean()
        torch.mul(imp, k, out=scale)  # pass 2
        buf.mul_(0.9).addcmul_(scale, g)
        p.add_(buf, alpha=-1e-6)


def _dgs_unkept_traffic(ps: list, gs: list, imps: list, bufs: list) -> None:
    for p, g, imp, buf in zip(ps, gs, imps, bufs, strict=True):
        imp.mul_(0.9).add_(g)
        k = imp.mean()
        buf.mul_(0.9).addcmul_(imp * k, g)  # s_t not written
        p.add_(buf, alpha=-1e-6)


# kind → (stand-in update, its state tensors in the update's argument order)
_TRAFFIC = {
    "adam": (_adam_traffic, ("m", "v")),
    "adan": (_adan_traffic, ("m", "v", "n", "prev")),
    "dgs": (_dgs_traffic, ("imp", "buf", "scale")),
    "dgs, s_t not kept": (_dgs_unkept_traffic, ("imp", "buf")),
}


def cases(names: list[str], fused: bool) -> list[Case]:
    out = []
    for name in names:
        info = registry.get(name)
        label, reference, target = _REFERENCES.get(name, (None, None, None))
        if name in _OURS:
            out.append(Case(f"{name}", _registry(name), label, reference, target))
            out.append(Case(f"{name} foreach=True", _registry(name, foreach=True), label, reference))
        else:
            out.append(Case(name, _registry(name), label, reference, target, info.needs_closure))
    if fused:
        for name in names:
            if name in _OURS:
                out.append(Case(f"{name} fused=True", _registry(name, fused=True), *_ADAM_FUSED, 1.25))
        # LARS has none: Inductor's norms are slower than the ATen ones its fused path uses
        kinds = [kind for kind in _TRAFFIC if kind == "adam" or kind.split(",")[0] in names]
        for kind in kinds:
            out.append(Case(f"floor {kind}", functools.partial(_Traffic, kind=kind), *_ADAM_FUSED))
    return out


def against_revision(cases_now: list[Case], revision: str) -> list[Case]:
    """The same rows, each against the same optimizer from ``revision``'s dgs_core."""
    folder = Path(tempfile.mkdtemp(prefix="dgs_core_at_rev-"))
    root = Path(__file__).resolve().parents[1]
    archive = subprocess.run(
        ["git", "-C", str(root), "archive", "--format=tar", revision, "dgs_core"],
        check=True,
        capture_output=True,
    ).stdout
    tarfile.open(fileobj=io.BytesIO(archive)).extractall(folder, filter="data")
    package = folder / "dgs_core_at_rev"
    (folder / "dgs_core").rename(package)
    for source in package.rglob("*.py"):  # its own imports name its own package
        text = source.read_text()
        source.write_text(re.sub(r"\bdgs_core\b", "dgs_core_at_rev", text))
    sys.path.insert(0, str(folder))
    old_registry = importlib.import_module("dgs_core_at_rev.optim.registry")
    out = []
    for case in cases_now:
        name, _, switch = case.label.partition(" ")
        switches = {}
        if switch:
            key, value = switch.split("=")
            switches[key] = value == "True"
        if name not in old_registry.names():
            continue
        reference = functools.partial(_create_with, old_registry, name, switches)
        out.append(Case(case.label, case.ours, f"same at {revision}", reference, None, case.needs_closure))
    return out


def _create_with(old_registry: Any, name: str, switches: dict, params: list[torch.Tensor]):
    return old_registry.create(name, params, **switches)


def _model(seed: int = 0) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    params = [torch.randn(SHAPE, generator=g) * 0.05 for _ in range(COUNT)]
    grads = [torch.randn(SHAPE, generator=g) * 1e-3 for _ in range(COUNT)]
    return params, grads


class _Runner:
    """One optimizer on its own copy of the model, stepped with the saved gradients."""

    def __init__(
        self, factory: Factory, params: list[torch.Tensor], grads: list[torch.Tensor], closure: bool
    ):
        self.params = [p.clone().requires_grad_() for p in params]
        self.grads = grads
        self.restore()
        self.optimizer = factory(self.params)
        self.closure = self._closure if closure else None

    def restore(self) -> None:
        for p, g in zip(self.params, self.grads, strict=True):
            if p.grad is None:
                p.grad = g.clone()
            else:
                p.grad.copy_(g)

    def _closure(self) -> torch.Tensor:
        self.restore()
        return torch.zeros(())

    def timed_step(self) -> float:
        self.restore()
        start = time.perf_counter()
        self.optimizer.step(self.closure)
        return time.perf_counter() - start


def run_case(case: Case, repeats: int, warmup: int) -> dict:
    params, grads = _model()
    compiles_before = _total_compile_seconds()
    ours = _Runner(case.ours, params, grads, case.needs_closure)
    reference = _Runner(case.reference, params, grads, False) if case.reference else None
    first_step = ours.timed_step()  # includes any compile
    for _ in range(warmup):
        ours.timed_step()
        if reference:
            reference.timed_step()
    compile_seconds = _total_compile_seconds() - compiles_before
    times_ours, times_ref = [], []
    for _ in range(repeats):
        times_ours.append(ours.timed_step())
        if reference:
            times_ref.append(reference.timed_step())
    ours_ms, ref_ms = 1e3 * statistics.median(times_ours), None
    row = {"case": case, "ours_ms": ours_ms, "first_step_s": first_step, "compile_s": compile_seconds}
    if times_ref:
        ref_ms = 1e3 * statistics.median(times_ref)
        # the fastest steps show the cost without the other processes' interference
        row.update(ref_ms=ref_ms, ratio=ours_ms / ref_ms, min_ratio=min(times_ours) / min(times_ref))
    return row


def _total_compile_seconds() -> float:
    return sum(stats["seconds"] for stats in compile_stats().values())


def _print_row(row: dict) -> None:
    case = row["case"]
    ref_ms, ratio, min_ratio, verdict = "", "", "", ""
    if "ratio" in row:
        ref_ms = f"{row['ref_ms']:8.2f}"
        ratio, min_ratio = f"{row['ratio']:6.2f}×", f"{row['min_ratio']:6.2f}×"
        if case.target is not None:
            verdict = f"≤{case.target:.2f}× " + ("ok" if row["ratio"] <= case.target else "MISSED")
    print(
        f"{case.label:<24} {row['ours_ms']:8.2f}  {case.reference_label or '—':<30} {ref_ms:>8} "
        f"{ratio:>8} {min_ratio:>9}  {verdict}",
        flush=True,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="5 timed steps per pair instead of 21")
    parser.add_argument("--repeats", type=int, default=None, help="timed steps per pair")
    parser.add_argument("--only", default="", help="comma-separated registry names")
    parser.add_argument("--no-fused", action="store_true", help="skip the fused=True rows (no compiling)")
    parser.add_argument(
        "--against", default="", help="a git revision: time each optimizer against its own code there"
    )
    args = parser.parse_args(argv)

    torch.set_num_threads(1)
    repeats = args.repeats or (5 if args.quick else 21)
    warmup = 2 if args.quick else 3  # fused: steps 1–2 compile (floats specialise, then generalise)
    names = [n for n in args.only.split(",") if n] or registry.names()
    unknown = [n for n in names if n not in registry.names()]
    if unknown:
        parser.error(f"unknown optimizer(s): {', '.join(unknown)}")

    print(
        f"one step, {COUNT}×{SHAPE[0]}×{SHAPE[1]} = {COUNT * SHAPE[0] * SHAPE[1]:,} float32 parameters, CPU, "
        f"1 thread, torch {torch.__version__}; median of {repeats} steps (after {warmup + 1} warm-up)"
    )
    header = (
        f"{'optimizer':<24} {'ours ms':>8}  {'reference':<30} {'ref ms':>8} {'ratio':>8} {'min ratio':>9}"
    )
    print(header + "  target (on the median ratio)")
    rows = []
    todo = cases(names, fused=not args.no_fused)
    if args.against:
        todo = against_revision([c for c in todo if not c.label.startswith("floor")], args.against)
    for case in todo:
        row = run_case(case, repeats, warmup)
        rows.append(row)
        _print_row(row)
    compiled_rows = [r for r in rows if "fused" in r["case"].label]
    if compiled_rows:
        print(
            "\none-time compile cost of fused=True (torch.compile, counted by dgs_core.optim._compile;"
            " Inductor's on-disk cache shortens it on later runs):"
        )
        for row in compiled_rows:
            label, seconds, first = row["case"].label, row["compile_s"], row["first_step_s"]
            print(f"  {label:<22} {seconds:6.1f} s (first step {first:.1f} s)")
    missed = [r["case"].label for r in rows if r["case"].target and r.get("ratio", 0.0) > r["case"].target]
    print("\ntargets: " + ("all met" if not missed else "missed by " + ", ".join(missed)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
