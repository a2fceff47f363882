"""Draw docs/img/landscape.png, the README's loss-landscape figure.

Three optimizers (SGD, Adam, DGS) trained on moons from one initialisation, as the Training lab
does with its defaults (300 steps); the exact plane through the initial weights and SGD's and
Adam's final weights; the validation loss on a 41 × 41 grid with every optimizer's path.
Needs kaleido and a Chromium (as the bundles' PNG export).

Run:  .venv/bin/python docs/img/make_landscape.py
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # run as a script from anywhere

from dgs_core.landscape import GridSpec, Landscape, PlaneSpec, build_plane, evaluate_grid  # noqa: E402
from dgs_core.runs.archive import png_images  # noqa: E402
from dgs_core.training import TrainConfig, Trainer  # noqa: E402
from dgs_core.viz.landscape import landscape_contour_figure  # noqa: E402


def main() -> None:
    trainer = Trainer(TrainConfig(task="moons", optimizers=["sgd", "adam", "dgs"], steps=300, eval_every=5,
                                  device="cpu"))  # fmt: skip
    list(trainer.run())
    landscape = Landscape.from_trainer(trainer)
    plane = build_plane(landscape, PlaneSpec.exact("sgd", "adam"))
    grid = evaluate_grid(landscape, plane, GridSpec(resolution=41))
    fig = landscape_contour_figure(grid, split="val", height=620)
    fig.update_layout(width=900)
    out = ROOT / "docs" / "img" / "landscape.png"
    out.write_bytes(png_images({"landscape": fig})["landscape"])
    print(f"wrote {out.relative_to(ROOT)} ({grid.seconds:.1f} s for the grid)")


if __name__ == "__main__":
    main()
