"""Make the bioimage.io example shown in README.md: a model trained on strokes of an ISBI 2012
slice, exported as a bioimage.io package; its README and cover are copied into ``docs/``.

    python scripts/bioimageio_example.py     # needs the [bioimageio] extra and ../shared/data

Trains the default small model for ``--steps`` steps on simulated strokes of ``--slice``,
exports it with `export_bioimageio` into a temporary folder, runs bioimage.io's own model
test on the package, and prints one JSON line: steps, test passed, files copied.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the evaluation package sits at the repository root

from evaluation.strokes import simulate_strokes  # noqa: E402
from src_models import TrainConfig, make_trainer, read_image  # noqa: E402
from src_models.bioimageio_export import export_bioimageio  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "isbi2012")
    parser.add_argument("--slice", default="slice_00.png")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--out", type=Path, default=REPO / "docs")
    args = parser.parse_args(argv)

    image = read_image(args.data / "images" / args.slice)
    truth = read_image(args.data / "labels" / args.slice)
    strokes = simulate_strokes(np.where(truth == 0, 1, 2).astype(np.uint8), (1, 2), fraction=0.02, rng=0)
    trainer = make_trainer([image], [strokes], config=TrainConfig(steps=args.steps),
                           class_names={1: "membrane", 2: "cell interior"})
    for _ in trainer.run():
        pass
    model = trainer.result.model
    from bioimageio.core import test_model

    with tempfile.TemporaryDirectory() as folder:
        package = export_bioimageio(model, Path(folder) / "isbi_membranes", image, name="ISBI 2012 membranes from strokes",
                                    authors=("napari-unet example",))
        summary = test_model(package / "rdf.yaml")
        args.out.mkdir(parents=True, exist_ok=True)
        shutil.copy(package / "cover.png", args.out / "bioimageio_cover.png")
        shutil.copy(package / "README.md", args.out / "bioimageio_README.md")
    print(json.dumps({"steps": trainer.result.steps, "bioimageio_test": summary.status,
                      "copied": ["docs/bioimageio_cover.png", "docs/bioimageio_README.md"]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
