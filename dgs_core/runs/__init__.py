"""Run bundles: one versioned ``.zip`` that brings a training or surface run back exactly.

    codec.py     tagged JSON and the bytes of each member type
    archive.py   the zip: caps (LIMITS), deterministic writing, hardened reading, figure rendering
    bundle.py    the manifest, config and figures every bundle has; the Bundle record
    training.py  export_training, its reader, resume_trainer
    landscape.py a training bundle's optional loss grids (planes, grids, projected paths)
    surface.py   export_surface (a SurfaceConfig and its runs), its reader
    read.py      read_bundle: the common checks, then the kind's reader
    store.py     RunStore: runs kept on the server's disk, private to a session until saved

Making a bundle (pages put it behind a download button; pass a callable so the bundle is only
built when the user clicks). The figures are the caller's (:mod:`dgs_core.viz.runs` builds the
labs' standard ones); ``png=True`` adds PNG copies when kaleido finds a Chromium::

    from dgs_core.runs import export_training, export_surface
    from dgs_core.viz.runs import training_figures, surface_figures

    data = export_training(trainer, figures=training_figures(trainer.results, trainer.task))
    runs = config.simulate()                      # config: a SurfaceConfig
    data = export_surface(runs, config, figures=surface_figures(runs))

Reading one back — every file is untrusted; any problem raises :class:`SnapshotError`
(a ``ValueError``) with one message naming the member and what is wrong::

    bundle = read_bundle("run.zip")               # a path or the bytes of an upload
    bundle.results, bundle.task                    # training: {label: RunResult} as recorded
    bundle.landscapes                              # training: the loss grids stored with it
    bundle.runs                                    # surface: {name: Run}
    trainer = resume_trainer(bundle, extra_steps=200)

Format (``FORMAT_VERSION`` 3; version 2 differs only in a training bundle having no
``trajectory/`` members, version 1 also in a surface bundle's config.json). A bundle is a zip
(stored or deflated members only) holding exactly these members, ``<key>`` being each
optimizer's file key from the manifest::

    manifest.json        format "dgs-lab-run", format_version, kind ("training" | "surface"),
                         name, created (UTC, ISO 8601), dgs_lab_version, torch_version,
                         python_version, device, seed, runs [{label, key}],
                         figures [{title, key}], png [keys], png_note
    config.json          training: TrainConfig.to_dict() (task, model, optimizers and their
                         hyperparameters, schedule or annealing plan, batch policy, …);
                         surface: SurfaceConfig.to_dict() (surface, optimizers, hyperparameters,
                         start, steps, noise, the lab's view). Either one is a valid input of
                         ``python -m dgs_core run``.
    figures/index.html   every figure, self-contained (one embedded copy of plotly.js)
    figures/<fig>.png    when rendered (``manifest.png`` lists them)
  training:
    trainer.json         step, and per optimizer its status, reason, examples seen, data order
                         (batch cursors), annealing-controller state and any other state of
                         Trainer.state_dict() (tagged JSON)
    trainer.safetensors  tensors of that other state (usually empty)
    metrics/<key>.csv, metrics/<key>.parquet     RunResult.metrics, one row per step
    diagnostics/<key>.parquet                    the diagnostic records, long format
    diagnostics/<key>.json                       per record: step, tensors (name, shape, numel,
                                                 tracked) and its per-element copies
    diagnostics/<key>.safetensors                those copies, keyed "<step>:<tensor>/<quantity>"
    weights/<key>.safetensors                    the model's final state_dict
    optimizer/<key>.safetensors, optimizer/<key>.json    optimizer.state_dict(): tensors, and the
                                                 rest (param_groups, step counters, generator
                                                 states by reference) as tagged JSON
    checkpoints/<key>.safetensors                the weights at evaluation steps, keyed
                                                 "<step>/<tensor>" (2-D tasks: the decision
                                                 boundary at any step is drawn from them)
    trajectory/<key>.safetensors                 the weights the optimizer went through, for the
                                                 landscape: one flat float32 vector of all
                                                 parameters per kept step (step 0 and thinned
                                                 evaluations), keyed "<step>" (format 3 on)
    landscape/index.json, landscape/<key>.json, .safetensors, .parquet
                         optional (format 3 on): loss grids of the run, each its plane (JSON +
                         safetensors) and its grid (Parquet); see :mod:`dgs_core.runs.landscape`
  surface:
    simulation.json      per optimizer: resolved hyperparameters, notes, noise settings
    trajectories/<key>.safetensors   points, loss, grad, lr, scaling, batch_size, diverged_at,
                                     starts, lrs (and DGS's scale, ExtraSGD's extrapolated)
    metrics/<key>.csv, metrics/<key>.parquet     step, row, x, y, loss, gap

Reading checks, in order: the file size; that it is a zip; every member's path, compression
method and size; the manifest; that the members are exactly those of the format; the config
(validated like a new run); then every tensor's name, shape and dtype against the model,
optimizer and task built from that config, the tables' schemas and row counts (read from
Parquet metadata before any data), and that the CSV and Parquet copies agree. Only then is the
run rebuilt. The caps are :data:`~dgs_core.runs.archive.LIMITS`.

Deterministic output: the same run gives the same bytes (zip timestamps are the manifest's
``created``, which honours ``SOURCE_DATE_EPOCH``), so a bundle from the CLI equals the one
from the page for the same config and time.
"""

from dgs_core.runs.archive import FORMAT_VERSION, LIMITS, Limits, SnapshotError
from dgs_core.runs.bundle import Bundle
from dgs_core.runs.read import read_bundle
from dgs_core.runs.surface import export_surface
from dgs_core.runs.training import export_training, resume_trainer

__all__ = [
    "FORMAT_VERSION",
    "LIMITS",
    "Bundle",
    "Limits",
    "SnapshotError",
    "export_surface",
    "export_training",
    "read_bundle",
    "resume_trainer",
]
