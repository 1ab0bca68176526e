"""Shared pieces of the stroke benchmarks: data location, methods, timing, the result table.

A *method* is a callable
``method(train_images, train_strokes, budget, device, *, channel_axis=None, steps=None)``
returning a predict function ``predict(image) -> class-id labels``; ``budget`` is the training time
in seconds (``None``: no time limit) and ``steps`` an optional step limit. Add a U-Net training
variant by adding an entry to :data:`METHODS`, e.g.::

    METHODS["unet-dice"] = functools.partial(unet, dice_weight=0.5)

(keyword arguments of :func:`unet` other than its own go to ``TrainConfig``), or for one run from
the command line: ``--variant unet-dice '{"dice_weight": 0.5}'``. A predict function may carry a
``device`` attribute (shown in the table) and an ``info`` string (printed below it).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

__all__ = [
    "METHODS",
    "REPO_ROOT",
    "Predictor",
    "Row",
    "add_common_arguments",
    "add_data_argument",
    "budget_label",
    "format_table",
    "markdown_table",
    "mean_sd",
    "print_report",
    "random_forest",
    "require_data",
    "resolve_methods",
    "run_method",
    "train_engine",
    "unet",
]

REPO_ROOT = Path(__file__).resolve().parents[1]
#: ``../shared/data`` beside the checkout; ``--data DIR`` names another folder (a machine where the
#: data travel with the working tree, as for ``bench/gpu_rows.sh``).
DATA_ROOT = REPO_ROOT.parent / "shared" / "data"

TIMING_NOTE = (
    "Timings are wall-clock on a shared machine (other jobs may run concurrently); "
    "treat them as rough."
)


def add_data_argument(parser) -> None:
    """``--data DIR``: the folder holding isbi2012/, camvid/ and dsb2018/."""
    parser.add_argument("--data", type=Path, default=DATA_ROOT, metavar="DIR",
                        help="folder of the real data sets (default: ../shared/data beside the repository)")


def require_data(name: str, root: Path = DATA_ROOT) -> Path:
    """Folder ``<root>/<name>``; exit cleanly (status 0) if absent."""
    path = Path(root) / name
    if not path.is_dir():
        print(f"skipped: data folder {path} not found (expected ../shared/data/{name} beside the "
              "repository, or --data naming the data folder); nothing to benchmark.")
        sys.exit(0)
    return path


@dataclasses.dataclass
class Predictor:
    """A predict function with the device it runs on and a free-text note for the report."""

    fn: Callable[[np.ndarray], np.ndarray]
    device: str = "cpu"
    info: str = ""

    def __call__(self, image: np.ndarray) -> np.ndarray:
        return self.fn(image)


# --------------------------------------------------------------------------- methods


def _rf_features(image: np.ndarray, channel_axis: int | None) -> np.ndarray:
    from skimage.feature import multiscale_basic_features

    return multiscale_basic_features(
        image, intensity=True, edges=True, texture=True, sigma_min=1, sigma_max=16,
        channel_axis=channel_axis,
    )


def random_forest(train_images, train_strokes, budget, device, *, channel_axis=None, steps=None,
                  seed=0, max_pixels=None):
    """Anchor: scikit-learn random forest on scikit-image multiscale features (ilastik-like).

    50 trees, depth 10, all cores; trained on the painted pixels only (with ``max_pixels``, on
    that many of them drawn at random, seeded: full labels of many images would take minutes).
    ``budget``, ``steps`` and ``device`` are ignored (it trains to completion on the CPU).
    """
    from sklearn.ensemble import RandomForestClassifier

    xs, ys = [], []
    for image, strokes in zip(train_images, train_strokes):
        feats = _rf_features(image, channel_axis)
        painted = strokes > 0
        xs.append(feats[painted])
        ys.append(strokes[painted])
    x, y = np.concatenate(xs), np.concatenate(ys)
    if max_pixels is not None and len(y) > max_pixels:
        keep = np.sort(np.random.default_rng(seed).choice(len(y), max_pixels, replace=False))
        x, y = x[keep], y[keep]
    clf = RandomForestClassifier(n_estimators=50, max_depth=10, n_jobs=-1, random_state=seed)
    clf.fit(x, y)

    def predict(image):
        feats = _rf_features(image, channel_axis)
        return clf.predict(feats.reshape(-1, feats.shape[-1])).reshape(feats.shape[:-1])

    return Predictor(predict, "cpu", f"{sum(len(y) for y in ys)} painted px, trained on {len(y)}")


def unet(train_images, train_strokes, budget, device, *, channel_axis=None, steps=None, seed=0,
         tile=None, **train_options):
    """The engine: ``src_models.fit`` for ``budget`` seconds (or ``steps``), then ``UNetModel.predict``.

    Extra keyword arguments become ``TrainConfig`` fields (variants); ``tile`` is a ``TileConfig``.
    """
    from src_models import TrainConfig, fit

    config = TrainConfig(time_budget=budget, steps=steps, device=device, seed=seed, **train_options)
    result = fit(list(train_images), list(train_strokes), config=config, channel_axis=channel_axis)
    model = result.model
    last = np.mean(result.losses[-20:]) if result.losses else float("nan")
    info = f"{result.steps} steps in {result.elapsed:.0f} s, final loss {last:.3f}"

    def predict(image):
        return model.predict(image, channel_axis=channel_axis, tile=tile)

    return Predictor(predict, str(model.device), info)


#: Method name -> callable(train_images, train_strokes, budget, device, *, channel_axis, steps)
#: -> predict function.
METHODS: dict[str, Callable] = {
    "random-forest": random_forest,
    "unet": unet,
}


def add_common_arguments(parser, default_train: list[int], train_flag: str, train_help: str):
    """The flags both benchmarks share (budget, device, methods, variants, quick, ...)."""
    add_data_argument(parser)
    parser.add_argument("--budget", type=float, default=None,
                        help="U-Net training seconds (default 120; 20 with --quick)")
    parser.add_argument("--steps", type=int, default=None,
                        help="train the U-Net for this many steps instead of a time budget "
                             "(comparable when the machine is shared)")
    parser.add_argument("--device", default="auto", help="engine device: auto, cpu, cuda, mps")
    parser.add_argument(train_flag, type=int, nargs="+", default=default_train, help=train_help)
    parser.add_argument("--eval", type=int, default=None, help="number of held-out images")
    parser.add_argument("--methods", nargs="+", default=None,
                        help=f"methods to run (default: all of {', '.join(METHODS)} and --variant)")
    parser.add_argument("--variant", nargs=2, action="append", default=[], metavar=("NAME", "JSON"),
                        help="extra U-Net method with these TrainConfig fields, e.g. "
                             "--variant unet-dice '{\"dice_weight\": 0.5}' (repeatable)")
    parser.add_argument("--fraction", type=float, default=0.015, help="painted share of each training image")
    parser.add_argument("--seed", type=int, default=0, help="seed of the simulated strokes")
    parser.add_argument("--quick", action="store_true", help="smoke run: 20 s budget, few eval images")
    parser.add_argument("--json", default=None, help="also write the rows to this JSON file")
    parser.add_argument("--save-predictions", default=None, metavar="DIR",
                        help="save each method's held-out predictions as DIR/<config>_<method>.npz")


def resolve_methods(args) -> dict[str, Callable]:
    """Methods chosen on the command line: registered ones plus ``--variant`` entries."""
    methods = dict(METHODS)
    for name, options in args.variant:
        try:
            methods[name] = functools.partial(unet, **json.loads(options))
        except (json.JSONDecodeError, TypeError) as err:
            raise SystemExit(f"--variant {name}: options must be a JSON object ({err}).")
    names = args.methods or list(methods)
    unknown = [n for n in names if n not in methods]
    if unknown:
        raise SystemExit(f"Unknown method(s) {unknown}; choose from {list(methods)}.")
    return {n: methods[n] for n in names}


def budget_label(name: str, budget: float | None, steps: int | None) -> str:
    """Table cell for the training budget of a method (``-`` for the random forest)."""
    if name == "random-forest":
        return "-"
    parts = ([f"{steps} steps"] if steps else []) + ([f"{budget:g} s"] if budget else [])
    return " / ".join(parts) or "-"


# --------------------------------------------------------------------------- running and reporting


@dataclasses.dataclass
class Row:
    """One line of the result table (scores averaged over the held-out images)."""

    method: str
    data: str
    strokes: str
    budget: str
    device: str
    f1: float = math.nan
    iou: float = math.nan
    rand_error: float = math.nan
    pixel_error: float = math.nan
    miou: float = math.nan
    train_s: float = math.nan
    predict_s: float = math.nan
    info: str = ""


def run_method(name, method, train_images, train_strokes, eval_images, *, budget, device,
               channel_axis=None, steps=None, save_dir=None, tag=""):
    """Train one method, predict every held-out image; return (predictions, train s, s/img, predictor).

    With ``save_dir``, the predictions are also saved as ``save_dir/<tag>_<name>.npz``.
    """
    t0 = time.perf_counter()
    predictor = method(train_images, train_strokes, budget, device, channel_axis=channel_axis,
                       steps=steps)
    train_s = time.perf_counter() - t0
    preds = []
    t0 = time.perf_counter()
    for image in eval_images:
        preds.append(np.asarray(predictor(image)))
    predict_s = (time.perf_counter() - t0) / max(len(eval_images), 1)
    if save_dir:
        Path(save_dir).mkdir(parents=True, exist_ok=True)
        np.savez_compressed(Path(save_dir) / f"{tag}_{name}.npz", predictions=np.stack(preds))
    print(f"  {name}: trained in {train_s:.1f} s, {predict_s:.2f} s/img "
          f"{getattr(predictor, 'info', '')}", flush=True)
    return preds, train_s, predict_s, predictor


COLUMNS = [
    ("method", "method", "{}"),
    ("data", "data", "{}"),
    ("strokes", "strokes", "{}"),
    ("budget", "budget", "{}"),
    ("device", "device", "{}"),
    ("F1", "f1", "{:.3f}"),
    ("IoU", "iou", "{:.3f}"),
    ("Rand error", "rand_error", "{:.3f}"),
    ("pixel error", "pixel_error", "{:.3f}"),
    ("mIoU", "miou", "{:.3f}"),
    ("train s", "train_s", "{:.1f}"),
    ("predict s/img", "predict_s", "{:.2f}"),
]


def _cell(value, fmt):
    if isinstance(value, float) and math.isnan(value):
        return "-"
    return fmt.format(value)


def format_table(rows: Sequence[Row]) -> str:
    """Markdown table of the rows, ``-`` for scores a data set does not have."""
    header = [title for title, _, _ in COLUMNS]
    body = [[_cell(getattr(r, key), fmt) for _, key, fmt in COLUMNS] for r in rows]
    widths = [max(len(x) for x in col) for col in zip(header, *body)]
    line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(header), sep] + [line(b) for b in body])


def print_report(rows: Sequence[Row], notes: Sequence[str] = (), json_path: str | None = None):
    """Print the table, then the notes and each row's info; optionally save the rows as JSON."""
    print()
    print(format_table(rows))
    print()
    for note in list(notes) + [TIMING_NOTE]:
        print(note)
    for r in rows:
        if r.info:
            print(f"  {r.method} / {r.strokes}: {r.info}")
    if json_path:
        Path(json_path).write_text(json.dumps([dataclasses.asdict(r) for r in rows], indent=2))
        print(f"rows written to {json_path}")


# --------------------------------------------------------------------------- protocol helpers


def train_engine(images, labels, *, mode="classes", budget=None, steps=None, device="auto", seed=0,
                 channel_axis=None, model=None, **train_options):
    """Train through the engine's front door (`make_trainer`, then `Trainer.run`); return its result.

    ``model`` goes on training that model (the plugin's *Train* after corrections); extra keyword
    arguments are ``TrainConfig`` fields. Predict with ``result.model.segment(image).labels``.
    """
    from src_models import Task, TrainConfig, make_trainer

    config = TrainConfig(time_budget=budget, steps=steps, device=device, seed=seed, **train_options)
    trainer = make_trainer(list(images), list(labels), task=Task(mode), config=config, model=model,
                           channel_axis=channel_axis)
    for _ in trainer.run():
        pass
    return trainer.result


def mean_sd(values, fmt: str = "{:.3f}") -> str:
    """``mean ± sd`` of the finite values (sample sd; ``-`` when there are none)."""
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=float)
    if v.size == 0:
        return "-"
    sd = float(v.std(ddof=1)) if v.size > 1 else 0.0
    return f"{fmt.format(float(v.mean()))} ± {fmt.format(sd)}"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table of string cells, columns padded to their widest cell."""
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    line = lambda cells: "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(header), sep] + [line(r) for r in rows])
