"""``napari-unet`` command line: train from painted labels, predict masks tile by tile.

    napari-unet train --images IMG... --labels LAB... --out MODEL [--time-budget S] [--steps N]
                      [--device auto|cpu|cuda|mps] [--precision auto|bf16|fp32] [--from MODEL] [--dense]
                      [--preset small|large|auto] [--objects] [--3d [--z-ratio R] [--patch-depth N]]
    napari-unet predict --model MODEL --images IMG... --out-dir DIR [--device ...] [--tta] [--overwrite]
                        [--objects] [--semantic]
    napari-unet view [IMG...]      (napari with the plugin docked, the sample image by default)

Every user mistake ends with one sentence on stderr and exit status 2, never a traceback.
This module calls the engine (``src_models``); only ``view`` imports napari, and only when run.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
import time
from pathlib import Path

__all__ = ["main", "build_parser"]

log = logging.getLogger("napari_unet.cli")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="napari-unet",
                                     description="Train a U-Net from painted labels and segment images with it.")
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train a model from images and painted labels")
    train.add_argument("--images", nargs="+", required=True, metavar="IMG", help="image files")
    train.add_argument("--labels", nargs="+", required=True, metavar="LAB",
                       help="labels files, paired with --images in order (0 = not painted)")
    train.add_argument("--out", required=True, metavar="MODEL_FILE", help="model file to write (.safetensors)")
    train.add_argument("--time-budget", type=float, default=None, metavar="SECONDS",
                       help="stop after this many seconds (default 120 unless --steps is given)")
    train.add_argument("--steps", type=int, default=None, metavar="N",
                       help="stop after N steps (default: 1500 when learning from strokes in 2D, "
                            "since longer training memorises them; no limit for full masks)")
    train.add_argument("--from", dest="from_model", default=None, metavar="MODEL_FILE",
                       help="continue training (fine-tune) this model")
    train.add_argument("--dense", action="store_true", help="label 0 is background (fully painted masks)")
    train.add_argument("--objects", action="store_true",
                       help="objects (instance) mode: label 1 = background, every other id one object "
                            "(with --dense: 0 = background, every id > 0 one object)")
    train.add_argument("--preset", default="auto", choices=["auto", "small", "large"],
                       help="network size (auto: small when learning from strokes; for full masks large on "
                            "CUDA, small otherwise)")
    train.add_argument("--3d", dest="volume", action="store_true",
                       help="train a 3D U-Net on blocks of each stack (Z, Y, X) instead of a 2D one on its slices")
    train.add_argument("--z-ratio", type=float, default=1.0, metavar="R",
                       help="with --3d: Z voxel size / XY voxel size (Z is pooled only where it is not much coarser)")
    train.add_argument("--patch-depth", type=int, default=None, metavar="N", help="with --3d: planes per block")
    train.add_argument("--batch-size", type=int, default=None)
    train.add_argument("--patch-size", type=int, default=None)
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--overwrite", action="store_true", help="replace MODEL_FILE if it exists")

    predict = sub.add_parser("predict", help="segment images with a trained model")
    predict.add_argument("--model", required=True, metavar="MODEL_FILE")
    predict.add_argument("--images", nargs="+", required=True, metavar="IMG")
    predict.add_argument("--out-dir", required=True, metavar="DIR", help="writes DIR/<image stem>_mask.tif")
    predict.add_argument("--tta", action="store_true", help="average the 8 flips/rotations (slower, smoother)")
    predict.add_argument("--tile-size", type=int, default=None, help="tile side in pixels")
    predict.add_argument("--argmax", action="store_true",
                         help="most likely class per pixel, even for a model that draws thin separators "
                              "between regions (two classes trained with border weights)")
    predict.add_argument("--overwrite", action="store_true", help="replace existing mask files")
    predict.add_argument("--objects", action="store_true",
                         help="write one id per object (automatic for models trained with --objects)")
    predict.add_argument("--semantic", action="store_true",
                         help="with objects: also write DIR/<image stem>_classes.tif (background/interior/boundary)")

    view = sub.add_parser("view", help="open napari with the U-Net panel and an image (the sample by default)")
    view.add_argument("images", nargs="*", metavar="IMG", help="images to open (default: the sample image)")

    for p in (train, predict):
        p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
        p.add_argument("--precision", default=None, choices=["auto", "bf16", "fp32"],
                       help="bf16 autocast or fp32 (auto: bf16 on CUDA and on CPUs with hardware bf16)")
        p.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def _progress_bar(total, desc, quiet, unit):
    from tqdm import tqdm
    return tqdm(total=total, desc=desc, unit=unit, disable=quiet, file=sys.stderr, dynamic_ncols=True)


def _train(args) -> int:
    import numpy as np

    from src_models import InputError, TrainConfig, Trainer, UNetModel, read_image
    from src_models.images import guess_channel_axis
    from src_models.objects import objects_trainer

    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise InputError(f"{out} already exists; choose another --out or add --overwrite.")
    if len(args.images) != len(args.labels):
        raise InputError(f"{len(args.images)} image(s) but {len(args.labels)} labels file(s): "
                         "give one labels file per image, in the same order.")
    images = [read_image(p) for p in args.images]
    labels = [read_image(p) for p in args.labels]
    axes = set()
    for path, img, lab in zip(args.images, images, labels):
        try:
            axes.add(guess_channel_axis(img.shape, lab.shape))
        except InputError as exc:
            raise InputError(f"{path}: {exc}") from None
    if len(axes) > 1:
        raise InputError("Mixed grey and colour images; train on images of one kind.")
    channel_axis = axes.pop()
    if channel_axis is not None:  # one layout for all: channels last
        images = [np.moveaxis(img, channel_axis, -1) for img in images]
        channel_axis = -1
    budget = args.time_budget if (args.time_budget is not None or args.steps is not None) else 120.0
    fields = {"time_budget": budget, "steps": args.steps, "device": args.device, "dense": args.dense,
              "preset": args.preset, "seed": args.seed}
    if args.batch_size:
        fields["batch_size"] = args.batch_size
    if args.patch_size:
        fields["patch_size"] = args.patch_size
    if args.volume:
        if args.objects:
            raise InputError("--3d and --objects do not go together yet; train objects with a 2D model.")
        fields.update(dims=3, z_ratio=args.z_ratio)
        if args.patch_depth:
            fields["patch_depth"] = args.patch_depth
    try:
        config = TrainConfig(**fields)
    except ValueError as exc:
        raise InputError(str(exc)) from None
    start_model = UNetModel.load(args.from_model, device=args.device) if args.from_model else None
    if args.objects:
        try:
            trainer = objects_trainer(images, labels, dense=args.dense, config=config, model=start_model,
                                      channel_axis=channel_axis)
        except ValueError as exc:
            raise InputError(str(exc)) from None
    else:
        trainer = Trainer(images, labels, config=config, model=start_model, channel_axis=channel_axis)
    log.info("Training on %s, classes %s", trainer.device, trainer.class_map.ids)
    by_steps = budget is None
    total = trainer.steps if by_steps else int(round(budget))
    cancel = threading.Event()
    bar = _progress_bar(total, f"train ({trainer.device.type})", args.quiet, "step" if by_steps else "s")
    gen = trainer.run(cancel)
    t0 = time.perf_counter()
    try:
        while True:
            try:
                p = next(gen)
            except StopIteration as done:
                result = done.value
                break
            except KeyboardInterrupt:
                cancel.set()
                continue
            bar.n = p.step if by_steps else min(total, int(p.elapsed))
            bar.set_postfix(step=p.step, loss=f"{p.loss:.3f}", refresh=False)
            bar.refresh()
    finally:
        bar.close()
    result.model.save(out)
    verb = "stopped early" if result.stopped else "trained"
    length = " (the default length for strokes; --steps N trains longer)" \
        if args.steps is None and not result.stopped and result.steps == trainer.steps else ""
    print(f"{verb}: {result.steps} steps{length} in {time.perf_counter() - t0:.1f} s, final loss "
          f"{(result.losses or [float('nan')])[-1]:.3f}; classes {list(result.model.class_map.ids)}; "
          f"model written to {out}")
    return 130 if result.stopped else 0


def _predict(args) -> int:
    import numpy as np

    from src_models import (
        InputError,
        UNetModel,
        read_image,
        write_labels_tiff,
    )
    from src_models.images import guess_channel_axis
    from src_models import io as image_io
    from src_models.io import create_labels_tiff, open_image_lazily
    from src_models.objects import predict_objects

    model = UNetModel.load(args.model, device=args.device)
    if args.argmax:
        model.separates_regions = False
    objects = args.objects or model.info.get("mode") == "objects"
    if objects and not {1, 2} <= set(model.class_map.ids):
        raise InputError(f"{args.model} was not trained in objects mode (its classes are "
                         f"{list(model.class_map.ids)}); train it with --objects.")
    if args.semantic and not objects:
        raise InputError("--semantic goes with objects mode (--objects or a model trained with --objects).")
    out_dir = Path(args.out_dir)
    targets = [out_dir / f"{Path(p).stem}_mask.tif" for p in args.images]
    if len(set(targets)) != len(targets):
        raise InputError("Two images have the same file name; their masks would overwrite each other.")
    existing = [t for t in targets if t.exists()]
    if existing and not args.overwrite:
        raise InputError(f"{existing[0]} already exists; choose another --out-dir or add --overwrite.")
    tile = model.default_tile(tta=args.tta, **({"tile_size": args.tile_size} if args.tile_size else {}))
    for path, target in zip(args.images, targets):
        suffix = Path(path).suffix.lower()
        lazy = open_image_lazily(path) if suffix in (".tif", ".tiff", ".zarr") else None
        big = lazy is not None and not objects and np.prod(lazy.shape, dtype=np.int64) > image_io.STREAM_PIXELS
        image = lazy if big else np.asarray(lazy) if suffix == ".zarr" else read_image(path)
        try:
            axis = guess_channel_axis(image.shape, n_channels=model.config.in_channels)
        except InputError as exc:
            raise InputError(f"{path}: {exc}") from None
        bar = _progress_bar(None, Path(path).name, args.quiet, "tile")

        def progress(done, total, bar=bar):
            bar.total = total
            bar.n = done
            bar.refresh()

        classes_meta = {"class_ids": list(model.class_map.ids), "class_names": list(model.class_map.names)}
        if big:  # stream: tiles are read from the file and label bands written to an uncompressed TIFF
            from src_models.images import ImageView

            out = create_labels_tiff(target, ImageView(image, axis).shape, model.class_map.dtype,
                                     overwrite=args.overwrite, metadata=classes_meta)
            try:
                model.predict(image, channel_axis=axis, tile=tile, progress=progress, out=out)
                out.flush()
            finally:
                bar.close()
                del out
            print(f"{path} -> {target} (uncompressed, streamed)")
            continue
        try:
            if objects:
                labels, classes = predict_objects(model, image, channel_axis=axis, tile=tile, progress=progress,
                                                  semantic=True)
            else:
                labels = model.predict(image, channel_axis=axis, tile=tile, progress=progress)
        finally:
            bar.close()
        if objects:
            write_labels_tiff(target, labels, overwrite=args.overwrite, metadata={"mode": "objects"},
                              min_dtype=np.uint16)
            if args.semantic:
                write_labels_tiff(out_dir / f"{Path(path).stem}_classes.tif", classes, overwrite=args.overwrite,
                                  metadata=classes_meta)
            print(f"{path} -> {target} {labels.shape} {int(labels.max())} objects")
            continue
        write_labels_tiff(target, labels, overwrite=args.overwrite, metadata=classes_meta)
        print(f"{path} -> {target} {labels.shape} classes {sorted(int(v) for v in set(labels.ravel().tolist()))}")
    return 0


def _view(args) -> int:
    import napari

    viewer = napari.Viewer()
    if args.images:
        for path in args.images:
            viewer.open(path, plugin=None)
    else:
        viewer.open_sample("napari-unet", "nuclei")
    viewer.window.add_plugin_dock_widget("napari-unet", "U-Net segmentation")
    napari.run()
    return 0


def main(argv=None) -> int:
    """Entry point of ``napari-unet``; returns the exit status."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    from src_models import Cancelled, InputError, ModelFileError

    if getattr(args, "precision", None):
        os.environ["NAPARI_UNET_PRECISION"] = args.precision  # read by src_models.device.uses_bf16
    try:
        return {"train": _train, "predict": _predict, "view": _view}[args.command](args)
    except (InputError, ModelFileError) as exc:
        print(f"napari-unet: error: {exc}", file=sys.stderr)
        return 2
    except (Cancelled, KeyboardInterrupt):
        print("napari-unet: cancelled.", file=sys.stderr)
        return 130
    except MemoryError:
        print("napari-unet: error: out of memory; use a smaller --tile-size or --batch-size.", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
