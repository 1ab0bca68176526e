"""``napari-unet`` command line: train from painted labels, predict masks tile by tile.

    napari-unet train --images IMG... --labels LAB... --out MODEL [--time-budget S] [--steps N] ...
    napari-unet train --project DIR [...]         (the project's images, labels, classes, model, settings)
    torchrun --nproc_per_node N -m napari_unet.cli train --distributed ...   (N processes, DDP)
    napari-unet predict --model MODEL --images IMG... --out-dir DIR [--tta] [--overwrite] ...
    napari-unet predict --project DIR --out-dir DIR [...]
    napari-unet predict --model MODEL --images IMG.ome.zarr --zarr-labels [--label-name NAME] [--level N]
    napari-unet view [IMG...]      (napari with the plugin docked, the sample image by default)
    napari-unet export-bioimageio MODEL --out DIR_OR_ZIP [--image IMG] [--author NAME] [--overwrite]

Every mistake and file-system fault ends with one sentence on stderr and exit status 2, never
a traceback; Ctrl-C or SIGTERM during ``train`` stops after the current step and saves the
model (exit 130). The engine (``src_models``) makes every decision; this module turns flags
into its arguments and adds the flag names to its sentences. Only ``view`` imports napari.
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

from src_models import (
    DEFAULT_TIME_BUDGET,
    DEVICE_CHOICES,
    MIN_TILE_SIZE,
    PRECISION_CHOICES,
    PRESET_CHOICES,
    STROKE_STEPS,
    Cancelled,
    InputError,
    Task,
    TrainConfig,
    UNetModel,
    WriteError,
    guess_channel_axis,
    make_trainer,
    read_image,
    read_labels,
    segment_file,
)
from src_models.distributed import DEFAULT_BLOCK as DIST_DEFAULT_BLOCK
from src_models.distributed import MIN_BLOCK as DIST_MIN_BLOCK
from src_models.distributed import parse_cluster
from src_models.distributed_training import ProcessGroup
from src_models.batch import classes_path, is_zarr_target, mask_paths, open_for_segmentation, output_target
from src_models.io import check_output_folder, check_writable, open_image_lazily
from src_models.omezarr import DEFAULT_LABEL_NAME
from src_models.project import open_project, save_project

__all__ = ["main", "build_parser", "FLAGS"]

log = logging.getLogger("napari_unet.cli")

#: The flag that changes each engine setting named by `InputError.setting`.
FLAGS = {
    "overwrite": "--overwrite", "device": "--device", "precision": "--precision", "time_budget": "--time-budget",
    "steps": "--steps", "tile_size": "--tile-size", "batch_size": "--batch-size", "patch_size": "--patch-size",
    "seed": "--seed", "preset": "--preset", "model": "--from", "mode": "--objects", "dims": "--3d",
    "z_ratio": "--z-ratio", "patch_depth": "--patch-depth", "project": "--project", "out_dir": "--out-dir",
    "image": "--image", "level": "--level", "label_name": "--label-name", "zarr_labels": "--zarr-labels",
    "semantic": "--semantic", "micro_batches": "--micro-batches", "cluster": "--cluster", "block_size": "--block-size",
}
_DEFAULTS = TrainConfig()


def _number(kind, low, high):
    """An argparse type: a finite number of ``kind`` from ``low`` to ``high``, else a sentence."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or value != value or not low <= value <= high:  # value != value: NaN
            noun = "a whole number" if kind is int else "a number"
            raise argparse.ArgumentTypeError(f"must be {noun} from {low:g} to {high:g}, got {text!r}")
        return value
    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="napari-unet",
                                     description="Train a U-Net from painted labels and segment images with it.")
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train a model from images and painted labels")
    train.add_argument("--project", metavar="DIR",
                       help="train on a project saved by the plugin (its images, labels, classes and settings; "
                            "it goes on from the project's model) and save the model back into it")
    train.add_argument("--images", nargs="+", metavar="IMG", help="image files")
    train.add_argument("--labels", nargs="+", metavar="LAB",
                       help="labels files, paired with --images in order (0 = not painted)")
    train.add_argument("--out", metavar="MODEL_FILE",
                       help="model file to write (.safetensors); optional with --project")
    train.add_argument("--time-budget", type=_number(float, 1e-3, 1e7), default=None, metavar="SECONDS",
                       help="stop after this many seconds (default: none when a step limit ends training, "
                            f"else {DEFAULT_TIME_BUDGET:g})")
    train.add_argument("--steps", type=_number(int, 1, 10**9), default=None, metavar="N",
                       help=f"stop after N steps (default: {STROKE_STEPS} when learning from strokes in 2D, "
                            "since longer training memorises them; no limit for full masks)")
    train.add_argument("--from", dest="from_model", default=None, metavar="MODEL_FILE",
                       help="continue training (fine-tune) this model; it must be of the same mode and dimensions")
    train.add_argument("--dense", action="store_true", help="label 0 is background (fully painted masks)")
    train.add_argument("--objects", action="store_true",
                       help="objects (instance) mode: label 1 = background, every other id one object "
                            "(with --dense: 0 = background, every id > 0 one object)")
    train.add_argument("--preset", default=None, choices=PRESET_CHOICES,
                       help="network size (default auto: small when learning from strokes; for full masks large "
                            "on CUDA, small otherwise)")
    train.add_argument("--3d", dest="volume", action="store_true",
                       help="train a 3D U-Net on blocks of each stack (Z, Y, X) instead of a 2D one on its slices")
    train.add_argument("--z-ratio", type=_number(float, 0.01, 1000), default=None, metavar="R",
                       help="with --3d: Z voxel size / XY voxel size (Z is pooled only where it is not much coarser; "
                            f"default {_DEFAULTS.z_ratio:g})")
    train.add_argument("--patch-depth", type=_number(int, 1, 1024), default=_DEFAULTS.patch_depth, metavar="N",
                       help="with --3d: planes per block")
    train.add_argument("--batch-size", type=_number(int, 1, 1024), default=_DEFAULTS.batch_size, metavar="N",
                       help="patches per pass (with --distributed: per process)")
    train.add_argument("--micro-batches", type=_number(int, 1, 1024), default=None, metavar="N",
                       help="passes of --batch-size patches per step, gradients summed: N times the batch in the "
                            "memory of one (repeats an N-process --distributed training on one device; default "
                            f"{_DEFAULTS.micro_batches})")
    train.add_argument("--distributed", action="store_true",
                       help="one of the processes of a torchrun launch (torchrun --nproc_per_node N -m "
                            "napari_unet.cli train --distributed ...): DistributedDataParallel, NCCL on GPUs, gloo "
                            "on CPUs; each process trains on --batch-size patches of its own, and only the first "
                            "writes files and shows progress")
    train.add_argument("--patch-size", type=_number(int, 16, 4096), default=_DEFAULTS.patch_size, metavar="PIXELS")
    train.add_argument("--seed", type=_number(int, 0, 2**32 - 1), default=_DEFAULTS.seed)
    train.add_argument("--overwrite", action="store_true", help="replace MODEL_FILE if it exists")

    predict = sub.add_parser("predict", help="segment images with a trained model")
    predict.add_argument("--model", metavar="MODEL_FILE", help="model file (not with --project: its model is used)")
    predict.add_argument("--images", nargs="+", metavar="IMG")
    predict.add_argument("--project", metavar="DIR", help="segment every image of a project with its model")
    predict.add_argument("--out-dir", metavar="DIR",
                         help="writes DIR/<image stem>_mask.tif (for OME-Zarr images a new store "
                              "DIR/<image stem>_mask.ome.zarr)")
    predict.add_argument("--zarr-labels", action="store_true",
                         help="instead of --out-dir: write each mask into its OME-Zarr image's own labels group "
                              "(IMG.ome.zarr/labels/NAME)")
    predict.add_argument("--label-name", default=DEFAULT_LABEL_NAME, metavar="NAME",
                         help="with --zarr-labels: the label group's name")
    predict.add_argument("--level", type=_number(int, 0, 64), default=0, metavar="N",
                         help="resolution level of OME-Zarr images (0 = full resolution; the mask has this level's "
                              "size)")
    predict.add_argument("--tta", action="store_true", help="average the 8 flips/rotations (slower, smoother)")
    predict.add_argument("--tile-size", type=_number(int, MIN_TILE_SIZE, 8192), default=None, metavar="PIXELS",
                         help="tile side in pixels (default: by device)")
    predict.add_argument("--argmax", action="store_true",
                         help="most likely class per pixel, even for a model that draws thin separators "
                              "between regions (two classes trained with border weights)")
    predict.add_argument("--overwrite", action="store_true", help="replace existing mask files")
    predict.add_argument("--objects", action="store_true",
                         help="check that the model gives one id per object (models trained with --objects do)")
    predict.add_argument("--semantic", action="store_true",
                         help="with objects: also write DIR/<image stem>_classes.tif (background/interior/boundary)")
    predict.add_argument("--cluster", default=None, metavar="local:N|tcp://HOST:PORT",
                         help="predict on dask.distributed: local:N starts N single-threaded worker processes here, "
                              "tcp://HOST:PORT uses a running scheduler; each image is cut into blocks that the "
                              "workers write into DIR/<image stem>_mask.ome.zarr (OME-Zarr for TIFF images too: "
                              "the blocks are never gathered into one file); a re-run finishes an interrupted one "
                              "(needs napari-unet-strokes[cluster])")
    predict.add_argument("--block-size", type=_number(int, DIST_MIN_BLOCK, 65536), default=DIST_DEFAULT_BLOCK,
                         metavar="PIXELS", help="with --cluster: block side, one task each")

    view = sub.add_parser("view", help="open napari with the U-Net panel and an image (the sample by default)")
    view.add_argument("images", nargs="*", metavar="IMG", help="images to open (default: the sample image)")

    export = sub.add_parser("export-bioimageio", help="write a model as a bioimage.io model package")
    export.add_argument("model", metavar="MODEL_FILE")
    export.add_argument("--out", required=True, metavar="DIR_OR_ZIP",
                        help="a .zip file name writes a zip package, any other name a folder")
    export.add_argument("--image", default=None, metavar="IMG",
                        help="an image like the training images, for the test tensors and the cover "
                             "(default: the synthetic nuclei sample, for grey 2D models)")
    export.add_argument("--author", action="append", default=None, metavar="NAME",
                        help="an author of the model (repeat for several)")
    export.add_argument("--overwrite", action="store_true", help="replace DIR_OR_ZIP if it exists")

    for p in (train, predict):
        p.add_argument("--device", default=None, choices=DEVICE_CHOICES, help="default auto: CUDA, then MPS, then CPU")
        p.add_argument("--precision", default=None, choices=PRECISION_CHOICES,
                       help="bf16 autocast or fp32 (default auto: bf16 on CUDA and on CPUs with hardware bf16)")
        p.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def _progress_bar(total, desc, quiet, unit):
    from tqdm import tqdm
    return tqdm(total=total, desc=desc, unit=unit, disable=quiet, file=sys.stderr, dynamic_ncols=True)


@contextlib.contextmanager
def _stop_on_signals(cancel: threading.Event, say: bool = True):
    """While training: the first Ctrl-C or SIGTERM sets ``cancel`` (the trainer ends the step and
    the model is saved); a second Ctrl-C quits at once without saving. ``say``: print that."""
    def stop(signum, frame):
        if cancel.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        cancel.set()
        if say:
            print("\nnapari-unet: stopping after this step; the model will be saved (Ctrl-C again quits "
                  "without it).", file=sys.stderr)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _open_project(folder, device):
    """The project in ``folder``, its problems printed (what could not be opened is left out)."""
    project = open_project(folder, device=device or _DEFAULTS.device)
    for problem in project.problems + project.model_problems:
        print(f"napari-unet: warning: {problem}", file=sys.stderr)
    return project


def _train(args) -> int:
    if args.project:
        if args.images or args.labels:
            raise InputError("Give either --project or --images with --labels, not both.")
    elif not (args.images and args.labels and args.out):
        raise InputError("Give --images, --labels and --out (or --project DIR).")
    if not args.distributed:
        return _train_project(args, None) if args.project else _train_files(args, None)
    with ProcessGroup.start(args.device or _DEFAULTS.device) as group:
        args.quiet = args.quiet or not group.is_main  # one progress bar, the first process's
        return _train_project(args, group) if args.project else _train_files(args, group)


def _train_files(args, group: ProcessGroup | None) -> int:
    """Train on ``--images`` and ``--labels``; with a process ``group``, only its first process
    checks and writes the model file."""
    main = group is None or group.is_main
    out = check_writable(args.out, overwrite=args.overwrite) if main else Path(args.out)
    if len(args.images) != len(args.labels):
        raise InputError(f"{len(args.images)} image(s) but {len(args.labels)} labels file(s): "
                         "give one labels file per image, in the same order.")
    images = [read_image(p) for p in args.images]
    labels = [read_labels(p) for p in args.labels]
    axes = set()
    for path, img, lab in zip(args.images, images, labels):
        try:
            axes.add(guess_channel_axis(img.shape, lab.shape))
        except InputError as exc:
            raise InputError(f"{path}: {exc}") from None
    if len(axes) > 1:
        raise InputError("Mixed grey and colour images; train on images of one kind.")
    channel_axis = axes.pop()
    config = TrainConfig(**_config_flags(args, with_defaults=True))
    task = Task("objects" if args.objects else "classes", 3 if args.volume else 2)
    device = group.device if group is not None else config.device
    start_model = UNetModel.load(args.from_model, device=device) if args.from_model else None
    trainer = make_trainer(images, labels, task=task, config=config, model=start_model, channel_axis=channel_axis,
                           process_group=group)
    result, elapsed = _run_training(trainer, args.quiet)
    if not main:
        return 130 if result.stopped and not result.message else 0
    where = _save_model(result.model, out)
    _report(result, elapsed, f"model written to {where}")
    if where != out:
        return 2
    return 130 if result.stopped and not result.message else 0


def _config_flags(args, *, with_defaults: bool) -> dict:
    """TrainConfig fields from the flags; flags left out are None (the project's settings
    apply) or, ``with_defaults``, TrainConfig's defaults."""
    flags = {"time_budget": args.time_budget, "steps": args.steps, "device": args.device, "preset": args.preset,
             "seed": args.seed, "batch_size": args.batch_size, "patch_size": args.patch_size,
             "z_ratio": args.z_ratio, "patch_depth": args.patch_depth, "precision": args.precision,
             "dense": args.dense or None, "micro_batches": args.micro_batches}
    if with_defaults:
        flags = {k: (v if v is not None else getattr(_DEFAULTS, k)) for k, v in flags.items()}
        flags["time_budget"], flags["steps"] = args.time_budget, args.steps
        flags["micro_batches"] = args.micro_batches or _DEFAULTS.micro_batches
    return flags


def _train_project(args, group: ProcessGroup | None) -> int:
    """Train on a project's painted images (from its model) and save the model back into it
    (with a process ``group``, only its first process saves)."""
    main = group is None or group.is_main
    out = check_writable(args.out, overwrite=args.overwrite) if args.out and main else None
    project = _open_project(args.project, args.device)
    images, labels, channel_axis = project.training_pairs()
    task = Task("objects" if args.objects else project.task.mode, 3 if args.volume else project.task.dims)
    config = project.train_config(**_config_flags(args, with_defaults=False))
    device = group.device if group is not None else config.device
    start_model = UNetModel.load(args.from_model, device=device) if args.from_model else project.model
    if start_model is not None and start_model.task.mismatch(task):
        raise InputError(start_model.task.mismatch(task), setting="mode")
    trainer = make_trainer(images, labels, task=task, config=config, model=start_model, channel_axis=channel_axis,
                           class_names=project.classes or None, process_group=group)
    result, elapsed = _run_training(trainer, args.quiet)
    if not main:
        return 130 if result.stopped and not result.message else 0
    project.model, project.task = result.model, task
    project.loss_history = [*project.loss_history, *result.losses]
    try:
        save_project(args.project, project)
        where = f"project {args.project} saved"
    except WriteError as exc:
        print(f"napari-unet: error: {exc} The project was not changed.", file=sys.stderr)
        out = out or Path(args.project) / "unsaved.safetensors"
        where = "project not saved"
    if out is not None:
        written = _save_model(result.model, out)
        where += f"; model written to {written}"
        if written != out:
            return 2
    _report(result, elapsed, where)
    if where.startswith("project not saved"):
        return 2
    return 130 if result.stopped and not result.message else 0


def _run_training(trainer, quiet: bool):
    """Run ``trainer`` with a progress bar; Ctrl-C or SIGTERM stops it after the step. Returns
    ``(TrainResult, seconds)``."""
    log.info("Training on %s, classes %s", trainer.device, trainer.class_map.ids)
    cancel = threading.Event()
    bar = None
    t0 = time.perf_counter()
    with _stop_on_signals(cancel, say=not quiet):
        try:
            for p in trainer.run(cancel):
                if bar is None:  # the engine says what ends this training: steps, or the clock
                    by_steps = p.time_budget is None
                    bar = _progress_bar(p.step_limit if by_steps else round(p.time_budget),
                                        f"train ({trainer.device.type})", quiet, "step" if by_steps else "s")
                bar.n = p.step if by_steps else min(bar.total, int(p.elapsed))
                bar.set_postfix(step=p.step, loss=f"{p.loss:.3f}", refresh=False)
                bar.refresh()
        finally:
            if bar is not None:
                bar.close()
    return trainer.result, time.perf_counter() - t0


def _report(result, elapsed: float, where: str) -> None:
    verb = "stopped early" if result.stopped else "trained"
    length = " (the default length for strokes; --steps N trains longer)" if result.default_length else ""
    last = f", final loss {result.losses[-1]:.3f}" if result.losses else ""
    if result.message:
        print(f"napari-unet: {result.message}", file=sys.stderr)
    print(f"{verb}: {result.steps} steps{length} in {elapsed:.1f} s{last}; "
          f"classes {list(result.model.class_map.ids)}; {where}")


def _save_model(model, out: Path) -> Path:
    """Save to ``out``; when that fails (a full disk, say), to a file in the temporary folder
    whose path is printed, so the training is not lost."""
    try:
        model.save(out)
        return out
    except WriteError as exc:
        rescue = Path(tempfile.gettempdir()) / f"napari-unet-{out.stem}-{os.getpid()}.safetensors"
        print(f"napari-unet: error: {exc} The model is kept in {rescue} instead.", file=sys.stderr)
        model.save(rescue)
        return rescue


def _predict(args) -> int:
    import numpy as np

    images, stems = args.images, None
    if args.cluster:
        parse_cluster(args.cluster)  # a bad address: one sentence before anything is loaded
    if args.project:
        if args.model or args.images:
            raise InputError("Give either --project or --model with --images, not both.")
        model, images, stems = _project_inputs(args)
    elif not (args.model and args.images):
        raise InputError("Give --model and --images (or --project DIR).")
    else:
        model = UNetModel.load(args.model, device=args.device or _DEFAULTS.device)
    args.images = images
    model.precision = args.precision or _DEFAULTS.precision
    objects = model.task.objects
    if args.objects and not objects:
        raise InputError(f"{args.model} was not trained in objects mode (its classes are "
                         f"{list(model.class_map.ids)}); train it with --objects.")
    if args.semantic and not objects:
        raise InputError("--semantic goes with objects mode (a model trained with --objects).")
    if args.cluster:
        return _predict_on_cluster(args, model, stems)
    targets = _predict_targets(args, model, stems)
    tile = model.default_tile(tta=args.tta, **({"tile_size": args.tile_size} if args.tile_size else {}))
    for path, target in zip(args.images, targets):
        bar, progress = _counting_bar(Path(path).name, args.quiet, "tile")
        try:
            result = segment_file(model, path, target, level=args.level, label_name=args.label_name, tile=tile,
                                  overwrite=args.overwrite, argmax=args.argmax, semantic=args.semantic,
                                  progress=progress)
        finally:
            bar.close()
        labels = result.labels
        if result.streamed_to is not None and result.streamed_to.suffix.lower() in (".tif", ".tiff"):
            print(f"{path} -> {target} (uncompressed, streamed)")
        elif result.streamed_to is not None:
            print(f"{path} -> {result.streamed_to} {tuple(labels.shape)} (OME-Zarr labels, streamed)")
        elif objects:
            where = target if target is not None else Path(path) / "labels" / args.label_name
            print(f"{path} -> {where} {labels.shape} {int(labels.max())} objects")
        else:
            print(f"{path} -> {target} {labels.shape} classes {sorted(int(v) for v in np.unique(labels))}")
    return 0


def _counting_bar(desc: str, quiet: bool, unit: str):
    """A progress bar and the ``progress(done, total)`` callback that moves it."""
    bar = _progress_bar(None, desc, quiet, unit)

    def progress(done, total):
        bar.total = total
        bar.n = done
        bar.refresh()

    return bar, progress


def _predict_on_cluster(args, model, stems) -> int:
    """``predict --cluster``: every image in blocks on dask.distributed, into OME-Zarr stores."""
    from src_models.distributed import connect, mask_store, predict_on_cluster

    if args.zarr_labels or not args.out_dir:
        raise InputError("With --cluster give --out-dir DIR; the masks go to DIR/<image stem>_mask.ome.zarr.")
    if args.semantic:
        raise InputError("--semantic writes TIFF files; it cannot go with --cluster.")
    if args.project or not args.model:
        raise InputError("With --cluster give --model MODEL_FILE (a file every worker can read), not --project.")
    out_dir = check_output_folder(args.out_dir)
    names = stems or [None] * len(args.images)
    targets = [mask_store(out_dir, name or path) for path, name in zip(args.images, names)]
    if len(set(targets)) != len(targets):
        raise InputError("Two images have the same file name; their masks would overwrite each other.")
    tile = model.default_tile(tta=args.tta, **({"tile_size": args.tile_size} if args.tile_size else {}))
    with connect(args.cluster) as client:
        for path, target in zip(args.images, targets):
            bar, progress = _counting_bar(Path(path).name, args.quiet, "block")
            try:
                report = predict_on_cluster(client, args.model, path, target, level=args.level,
                                            block_size=args.block_size, tile=tile, argmax=args.argmax,
                                            overwrite=args.overwrite, device=args.device or "cpu",
                                            precision=model.precision, progress=progress)
            finally:
                bar.close()
            what = f"{report.objects} objects" if report.objects is not None else "classes"
            print(f"{path} -> {report.path} {report.shape} (OME-Zarr labels, {report.blocks} blocks, "
                  f"{report.skipped} done before) {what}")
    return 0


def _predict_targets(args, model, stems) -> list:
    """The mask of each image (a path, or None for its OME-Zarr labels group), every one checked
    (level, name, existing files, writable folders) before the first image is segmented."""
    if args.zarr_labels and args.out_dir:
        raise InputError("Give either --zarr-labels (masks into each OME-Zarr image) or --out-dir, not both.")
    if not (args.zarr_labels or args.out_dir):
        raise InputError("Give --out-dir DIR for the masks (or --zarr-labels to write them into OME-Zarr images).")
    targets = [None] * len(args.images) if args.zarr_labels else \
        mask_paths(args.images, check_output_folder(args.out_dir), stems)
    for path, target in zip(args.images, targets):
        _, _, zimage = open_for_segmentation(model, path, args.level)
        if args.zarr_labels and (zimage is None or not zimage.is_ome):
            raise InputError(f"{path} is not an OME-Zarr image, so it has no labels group; give --out-dir "
                             "instead of --zarr-labels.")
        sink = output_target(target, zimage, args.label_name)
        if target is None or is_zarr_target(target):
            if args.semantic and model.task.objects:
                raise InputError("--semantic writes TIFF files; it cannot go with OME-Zarr images' masks.")
            sink.check(overwrite=args.overwrite)
            continue
        check_writable(target, overwrite=args.overwrite)
        if args.semantic:
            check_writable(classes_path(target), overwrite=args.overwrite)
    return targets


def _project_inputs(args):
    """``(model, image paths, mask names)`` of a project's images that its model can segment;
    the others are named on stderr and skipped."""
    project = _open_project(args.project, args.device)
    if project.model is None:
        raise InputError(f"The project {args.project} has no model yet; train it first "
                         f"(napari-unet train --project {args.project}).")
    usable = [im for im in project.images if im.n_channels == project.model.image_channels]
    if not usable:
        raise InputError(f"No image of the project has the {project.model.image_channels} channel(s) its model "
                         "takes; add such images to the project.")
    return project.model, [str(im.path) for im in usable], [_safe_stem(im.name) for im in usable]


def _safe_stem(name: str) -> str:
    import re

    return re.sub(r"[^\w.-]+", "_", name).strip("_.") or "image"


def _export_bioimageio(args) -> int:
    from src_models.bioimageio_export import export_bioimageio

    model = UNetModel.load(args.model, device="cpu")
    if args.image is not None:
        image = read_image(args.image)
        try:
            axis = guess_channel_axis(image.shape, n_channels=model.image_channels)
        except InputError as exc:
            raise InputError(f"{args.image}: {exc}") from None
    elif model.image_channels == 1 and model.config.dims == 2:
        from ._sample_data import synthetic_nuclei

        image, axis = synthetic_nuclei()[0], None
    else:
        raise InputError(f"The sample image is grey and 2D but this model takes {model.image_channels}-channel "
                         f"{model.config.dims}D images; give one like its training images.", setting="image")
    authors = {"authors": args.author} if args.author else {}
    out = export_bioimageio(model, args.out, image, channel_axis=axis, overwrite=args.overwrite, **authors)
    print(f"{args.model} -> {out} (bioimage.io model package)")
    return 0


def _view(args) -> int:
    for path in args.images:  # a missing or foreign file: one sentence before napari starts
        open_image_lazily(path)
    import napari

    viewer = napari.Viewer()
    if args.images:
        for path in args.images:
            viewer.open(path, plugin=None)
    else:
        viewer.open_sample("napari-unet-strokes", "nuclei")
    viewer.window.add_plugin_dock_widget("napari-unet-strokes", "U-Net segmentation")
    napari.run()
    return 0


def _sentence(exc: InputError) -> str:
    """The engine's sentence, with the flag that changes the setting it names."""
    flag = FLAGS.get(exc.setting or "")
    return f"{exc} (see {flag})" if flag and flag not in str(exc) else str(exc)


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """SIGTERM ends the command like Ctrl-C does, so half-written files are removed on the way out."""
    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv=None) -> int:
    """Entry point of ``napari-unet``; returns the exit status."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    try:
        with _sigterm_as_interrupt():
            return {"train": _train, "predict": _predict, "view": _view,
                    "export-bioimageio": _export_bioimageio}[args.command](args)
    except InputError as exc:  # also ModelFileError and WriteError
        print(f"napari-unet: error: {_sentence(exc)}", file=sys.stderr)
        return 2
    except (Cancelled, KeyboardInterrupt):
        print("napari-unet: cancelled; no partial file was left.", file=sys.stderr)
        return 130
    except MemoryError:
        hint = "use a smaller --patch-size or --batch-size" if args.command == "train" else "use a smaller --tile-size"
        print(f"napari-unet: error: out of memory; close other programs or {hint}.", file=sys.stderr)
        return 2
    except OSError as exc:
        where = f" ({exc.filename})" if exc.filename else ""
        print(f"napari-unet: error: {exc.strerror or exc}{where}.", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
