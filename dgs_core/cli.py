"""Command line: prepare runs without a browser, and look inside bundles.

    python -m dgs_core run CONFIG.json --out run.zip [--name NAME] [--png] [--quiet]
    python -m dgs_core show run.zip [--json]
    python -m dgs_core study STUDY.json --out study.zip [--address HOST:PORT] [--quiet]
    python -m dgs_core export run.zip [--tensorboard DIR] [--mlflow [URI]]
    python -m dgs_core lessons [--rebuild] [--check]
    python -m dgs_core claims [NAME ... | --all] [--budget smoke|full] [--address HOST:PORT] [--out DIR]

``run`` trains (or, for a surface config, simulates) headless and writes the same bundle
the labs' download buttons give for that config. CONFIG.json is a training config
(:meth:`dgs_core.training.TrainConfig.to_dict`, e.g. a bundle's ``config.json``) or a surface
config (:meth:`dgs_core.surfaces.config.SurfaceConfig.to_dict`, recognised by its ``"surface"``
key). The bundle holds the labs' standard figures (:mod:`dgs_core.viz.runs`).
Progress goes to stderr. ``SOURCE_DATE_EPOCH`` fixes the bundle's time (reproducible bytes).

``show`` checks a bundle like the Runs page's import does and prints its summary (``--json``:
one JSON object with the manifest, the config and the summary rows, for scripts).

``study`` runs a fair comparison (:class:`dgs_core.studies.sweep.StudySpec` as JSON) on Ray Tune:
an embedded local Ray by default, the cluster at ``--address`` (or ``$RAY_ADDRESS``) when given.
A progress bar with the ETA goes to stderr; the best configuration per optimizer is printed as a
table; the bundle holds the trials, the seed curves and the figures.

``export`` writes a bundle's curves as TensorBoard event files (``--tensorboard DIR``, one run
folder per optimizer) and/or logs it to an MLflow tracking store (``--mlflow [URI]``, default
``sqlite:///mlflow.db``; MLflow is optional and the message says how to install it).

``lessons`` lists the lessons of ``assets/lessons/`` (and any file that does not load, with the
reason); ``--rebuild`` re-makes the prepared runs their steps ship; ``--check`` runs every step
and reports each claim its prose makes that the numbers contradict.

``claims`` re-runs the Claims lab's claims (:mod:`dgs_core.claims`): the named ones, or all with
``--all``, at the ``full`` budget (the shipped results, written to ``assets/claims/``) or the
``smoke`` budget (seconds; written only where ``--out`` says). A progress bar goes to stderr and
the verdicts are printed as a table. Without a name it prints the stored verdicts.

Exit status (one line "error: …" on stderr for every failure):
    0    done
    1    an unexpected failure (a bug: the traceback is printed)
    2    a bad argument, config, spec or bundle, an unreachable cluster, a missing optional
         package, or a file that cannot be read or written
    141  standard output was closed early (``show run.zip | head``): stops quietly, like other
         Unix tools stopped by SIGPIPE
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

import pandas as pd

from dgs_core.limits import check_study
from dgs_core.runs.bundle import Bundle
from dgs_core.runs.export import DEFAULT_MLFLOW_URI
from dgs_core.runs.read import read_bundle
from dgs_core.runs.surface import export_surface
from dgs_core.runs.training import export_training
from dgs_core.surfaces.config import SurfaceConfig
from dgs_core.training.config import TrainConfig
from dgs_core.training.trainer import Trainer
from dgs_core.viz.runs import surface_figures, training_figures

MAX_CONFIG_BYTES = 1 << 20


def _read_config(path: Path) -> dict[str, Any]:
    try:
        if path.stat().st_size > MAX_CONFIG_BYTES:
            raise ValueError(f"{path} is larger than {MAX_CONFIG_BYTES >> 20} MB; is it a config?")
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path} is not a JSON file ({exc})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a JSON object (a training or surface config)")
    return data


def _progress(event: Any, out: TextIO) -> None:
    lanes = "  ".join(
        f"{label}: loss {lane.loss:.4g}"
        + ("" if math.isnan(lane.val_metric) else f", val acc {lane.val_metric:.3f}")
        for label, lane in event.lanes.items()
    )
    print(f"step {event.step}/{event.total_steps}  {lanes}", file=out, flush=True)


def run(config_path: Path, out: Path, *, name: str | None, png: bool, quiet: bool) -> bytes:
    """Train or simulate ``config_path`` and write its bundle to ``out``; returns the bytes."""
    raw = _read_config(config_path)
    log = io.StringIO() if quiet else sys.stderr
    if "surface" in raw:
        config = SurfaceConfig.from_dict(raw)
        config.check_work()  # the same work limit as the Surface lab ($DGS_LAB_MAX_SURFACE_WORK)
        print(f"simulating {config.surface}: {len(config.optimizers)} optimizers", file=log)
        runs = config.simulate()
        data = export_surface(runs, config, figures=surface_figures(runs), name=name, png=png)
    else:
        trainer = Trainer(TrainConfig.from_dict(raw))
        print(f"training {trainer.config.task} on {trainer.device}: {', '.join(trainer.results)}", file=log)
        for event in trainer.run():
            _progress(event, log)
        figures = training_figures(trainer.results, trainer.task)
        data = export_training(trainer, figures=figures, name=name, png=png)
    _write_atomically(out, data)
    return data


def show_json(path: Path, out: TextIO) -> Bundle:
    """Check a bundle and print it as one JSON object: manifest, config, summary rows."""
    bundle = read_bundle(path)
    summary = bundle.summary()
    payload = {
        "manifest": dict(bundle.manifest),
        "config": dict(bundle.config),
        "notes": list(bundle.notes),
        "summary": json.loads(summary.to_json(orient="records")),
    }
    json.dump(payload, out, indent=1, sort_keys=True)
    print(file=out)
    return bundle


def export(path: Path, *, tensorboard: Path | None, mlflow: str | None, out: TextIO) -> None:
    """Write a bundle's curves to TensorBoard event files and/or an MLflow tracking store."""
    from dgs_core.runs.export import to_mlflow, to_tensorboard

    if tensorboard is None and mlflow is None:
        raise ValueError("Invalid export: nothing to do (give --tensorboard DIR and/or --mlflow [URI])")
    bundle = read_bundle(path)
    if tensorboard is not None:
        folders = to_tensorboard(bundle, tensorboard)
        print(
            f"tensorboard: {len(folders)} runs under {tensorboard} (tensorboard --logdir {tensorboard})",
            file=out,
        )
    if mlflow is not None:
        try:
            run_id = to_mlflow(bundle, mlflow)
        except RuntimeError as exc:  # MLflow missing: a setup problem, not a bug
            raise ValueError(str(exc)) from None
        print(f"mlflow: run {run_id} in {mlflow}", file=out)


def show(path: Path, out: TextIO) -> Bundle:
    """Check a bundle and print its summary."""
    bundle = read_bundle(path)
    m, c = bundle.manifest, bundle.config
    print(f"{bundle.name}", file=out)
    print(
        f"  {bundle.kind} run · created {m['created']} · DGS Lab {m['dgs_lab_version']} · "
        f"torch {m['torch_version']} · {m['device']} · seed {m['seed']}",
        file=out,
    )
    if bundle.kind == "training":
        where = f"task {c['task']} {c.get('task_params') or ''}".rstrip()
        plan = (
            "annealing plan" if c.get("annealing") else (c.get("schedule") or {}).get("name", "constant lr")
        )
        print(
            f"  {where} · model {c.get('model')} · {bundle.steps}/{c['steps']} steps · "
            f"batch {c['batch_size']} ({c['batch_policy']}) · {plan}",
            file=out,
        )
        for entry in c["optimizers"]:
            print(
                f"  {entry.get('label') or entry['name']}: {entry['name']} {entry.get('hparams') or {}}",
                file=out,
            )
    elif bundle.kind == "study":
        problem = f"task {c['task']}" if c["kind"] == "training" else f"surface {c['surface']}"
        print(
            f"  study on {problem} · {c['trials']} trials per optimizer ({c['search']}) × "
            f"{c['seeds']} seeds · metric {c['metric']} · {c['steps']} steps per trial",
            file=out,
        )
    else:
        print(
            f"  surface {c['surface']} · {c['steps']} steps · noise σ={c['noise_std']} · start {c['start']}",
            file=out,
        )
        for name in c["optimizers"]:
            print(f"  {name}: {c['hparams'].get(name) or {}}", file=out)
    for note in bundle.notes:
        print(f"  note: {note}", file=out)
    figures = ", ".join(f["title"] for f in m["figures"])
    print(f"  figures: {figures or 'none'}" + (f" (PNG: {len(m['png'])})" if m["png"] else ""), file=out)
    with pd.option_context("display.width", 200, "display.max_columns", 20, "display.precision", 4):
        print(bundle.summary().to_string(index=False), file=out)
    return bundle


def study(spec_path: Path, out: Path, *, address: str | None, quiet: bool, stdout: TextIO) -> bytes:
    """Run the study of ``spec_path``; write its bundle to ``out``; print the winners."""
    from tqdm import tqdm

    from dgs_core.runs.study import export_study
    from dgs_core.studies.sweep import StudySpec
    from dgs_core.studies.tuner import SweepStudy
    from dgs_core.viz.studies import best_table, study_figures

    spec = StudySpec.from_dict(_read_config(spec_path))
    check_study(spec)  # the server's limits ($DGS_LAB_MAX_TRIALS, $DGS_LAB_MAX_STEPS), before Ray starts
    sweep = SweepStudy(spec, address=address)
    with tqdm(total=spec.trials_total, unit="trial", disable=quiet, file=sys.stderr, desc="study") as bar:
        for event in sweep.run():
            bar.update(event.done - bar.n)
            bar.set_postfix_str(f"{event.phase} {event.row['optimizer']}: {event.row['status']}")
    result = sweep.result
    data = export_study(result, figures=study_figures(result))
    _write_atomically(out, data)
    with pd.option_context("display.width", 200, "display.max_columns", 20, "display.precision", 4):
        print(best_table(result).to_string(index=False), file=stdout)
    return data


def _write_atomically(out: Path, data: bytes) -> None:
    partial = out.with_name(f".{out.name}.partial")
    partial.write_bytes(data)
    partial.replace(out)  # never a half-written bundle under the final name


def lessons(*, rebuild: bool, check: bool, out: TextIO) -> int:
    """List (and rebuild or check) the lessons; the number of problems found."""
    from dgs_core import lessons as lessons_module

    found, errors = lessons_module.load_lessons()
    for lesson in found:
        print(f"{lesson.id}: {lesson.title} ({len(lesson.steps)} steps)", file=out)
    for error in errors:
        print(f"error: {error}", file=out)
    if rebuild:
        for path in lessons_module.rebuild():
            print(f"wrote {path.relative_to(lessons_module.LESSONS_DIR.parents[1])}", file=out)
    problems = len(errors)
    if check:
        for lesson in found:
            for step in lesson.steps:
                for failure in lessons_module.check_step(step):
                    print(f"claim not held: {lesson.id}, step {step.index + 1}: {failure}", file=out)
                    problems += 1
    return problems


def claims(
    names: Sequence[str],
    *,
    run_all: bool,
    budget: str,
    address: str | None,
    out: Path | None,
    quiet: bool,
    stdout: TextIO,
) -> list[dict[str, Any]]:
    """Run the claims ``names`` (or all) at ``budget``; write each result under ``out``; print
    the verdicts. With no name and not ``run_all``: print the stored verdicts of ``out``."""
    from tqdm import tqdm

    from dgs_core import claims as claims_module
    from dgs_core.claims.base import BUDGET
    from dgs_core.viz.claims import verdict_table

    budget = BUDGET.validate(budget)
    selected = claims_module.CLAIMS if run_all else [claims_module.get_claim(name) for name in names]
    if out is None and budget == "full":
        out = claims_module.CLAIMS_DIR
    records = []
    if not selected:  # list what is stored
        for claim in claims_module.CLAIMS:
            stored = claims_module.load_result(claim.name, out or claims_module.CLAIMS_DIR)
            if stored is not None:
                records.append(stored.record)
    else:
        runs = [claims_module.ClaimRun(claim, budget, address=address) for claim in selected]
        total = sum(run.plan.total for run in runs)
        with tqdm(total=total, unit="run", disable=quiet, file=sys.stderr, desc="claims") as bar:
            for run in runs:
                for event in run.run():
                    bar.update(1)
                    bar.set_postfix_str(f"{run.claim.name}: {event.event} {event.run}")
                result = run.result
                if out is not None:
                    folder = claims_module.save_result(result, out)
                    print(f"wrote {folder}", file=sys.stderr)
                records.append(result.record)
    with pd.option_context("display.width", 200, "display.max_columns", 20, "display.max_colwidth", 40):
        table = verdict_table(records)
        print(table.to_string(index=False) if len(table) else "no stored results", file=stdout)
    return records


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dgs_core", description="DGS Lab runs without a browser.")
    commands = parser.add_subparsers(dest="command", required=True)
    run_parser = commands.add_parser("run", help="train or simulate a config and write its bundle")
    run_parser.add_argument("config", type=Path, help="a training or surface config (JSON)")
    run_parser.add_argument("--out", type=Path, required=True, help="the bundle to write (.zip)")
    run_parser.add_argument("--name", help="the run's display name")
    run_parser.add_argument("--png", action="store_true", help="also store PNG figures (needs a Chromium)")
    run_parser.add_argument("--quiet", action="store_true", help="no progress output")
    show_parser = commands.add_parser("show", help="check a bundle and print its summary")
    show_parser.add_argument("bundle", type=Path)
    show_parser.add_argument("--json", action="store_true", help="one JSON object, for scripts")
    lessons_parser = commands.add_parser("lessons", help="list, rebuild or check the lessons")
    lessons_parser.add_argument("--rebuild", action="store_true", help="re-make the prepared runs")
    lessons_parser.add_argument("--check", action="store_true", help="check every step's claims")
    export_parser = commands.add_parser("export", help="write a bundle to TensorBoard and/or MLflow")
    export_parser.add_argument("bundle", type=Path)
    export_parser.add_argument("--tensorboard", type=Path, metavar="DIR", help="write event files here")
    export_parser.add_argument(
        "--mlflow",
        nargs="?",
        const=DEFAULT_MLFLOW_URI,
        metavar="URI",
        help=f"log to this MLflow tracking store (default {DEFAULT_MLFLOW_URI})",
    )
    study_parser = commands.add_parser("study", help="run a fair comparison on Ray Tune and write its bundle")
    study_parser.add_argument("spec", type=Path, help="a study spec (JSON)")
    study_parser.add_argument("--out", type=Path, required=True, help="the bundle to write (.zip)")
    study_parser.add_argument(
        "--address", help="a Ray cluster (host:port); default: $RAY_ADDRESS or embedded"
    )
    study_parser.add_argument("--quiet", action="store_true", help="no progress bar")
    claims_parser = commands.add_parser(
        "claims", help="re-run the Claims lab's claims and print the verdicts"
    )
    claims_parser.add_argument(
        "names", nargs="*", metavar="NAME", help="claims to run (none: show the stored ones)"
    )
    claims_parser.add_argument("--all", action="store_true", help="run every claim")
    claims_parser.add_argument(
        "--budget", default="full", help="smoke (seconds) or full (the shipped result)"
    )
    claims_parser.add_argument(
        "--address", help="a Ray cluster (host:port); default: $RAY_ADDRESS or embedded"
    )
    claims_parser.add_argument(
        "--out",
        type=Path,
        help="where results go (default: assets/claims/ for the full budget, nowhere for smoke)",
    )
    claims_parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    try:
        if args.command == "run":
            data = run(args.config, args.out, name=args.name, png=args.png, quiet=args.quiet)
            print(f"wrote {args.out} ({len(data) / 2**20:.1f} MB)", file=sys.stderr)
        elif args.command == "study":
            data = study(args.spec, args.out, address=args.address, quiet=args.quiet, stdout=sys.stdout)
            print(f"wrote {args.out} ({len(data) / 2**20:.1f} MB)", file=sys.stderr)
        elif args.command == "claims":
            if args.all and args.names:
                raise ValueError(f"Invalid claims: {args.names} (give names or --all, not both)")
            claims(
                args.names,
                run_all=args.all,
                budget=args.budget,
                address=args.address,
                out=args.out,
                quiet=args.quiet,
                stdout=sys.stdout,
            )
        elif args.command == "lessons":
            if lessons(rebuild=args.rebuild, check=args.check, out=sys.stdout):
                return 2
        elif args.command == "export":
            export(args.bundle, tensorboard=args.tensorboard, mlflow=args.mlflow, out=sys.stdout)
        elif args.json:
            show_json(args.bundle, sys.stdout)
        else:
            show(args.bundle, sys.stdout)
        sys.stdout.flush()  # a closed pipe shows here, inside the handler below
    except BrokenPipeError:
        # the reader went away (``| head``): no traceback; later writes go nowhere
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except ValueError as exc:  # SnapshotError and ParamError included
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except MemoryError:
        print(
            "error: not enough memory for this run; make it smaller (steps, optimizers, grid)",
            file=sys.stderr,
        )
        return 2
    except OSError as exc:
        print(f"error: cannot use {exc.filename or 'a file'}: {exc.strerror}", file=sys.stderr)
        return 2
    return 0
