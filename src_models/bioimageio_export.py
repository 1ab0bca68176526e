"""Export a `UNetModel` as a bioimage.io model package (format 0.5), a zip file or a folder.

The package holds the network twice: PyTorch state-dict weights whose architecture is
`UNetProbabilities` from this module (so loading them needs napari-unet installed), and a
TorchScript copy that needs only PyTorch. Both give softmax class probabilities, re-weighted
by the model's class frequencies as `UNetModel.predict` does. The model's percentile
normalisation becomes the spec's ``scale_range`` preprocessing; test tensors and a cover are
made from a real image. ``bioimageio.spec`` is imported only when exporting (the
``napari-unet-strokes[bioimageio]`` extra).
"""
from __future__ import annotations

import logging
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .config import UNetConfig
from .errors import InputError, WriteError
from .images import ImageView
from .io import check_writable
from .model import UNet

__all__ = ["UNetProbabilities", "export_bioimageio", "INPUT_ID", "OUTPUT_ID"]

log = logging.getLogger(__name__)

#: Names of the package's input and output tensors.
INPUT_ID, OUTPUT_ID = "raw", "probabilities"
#: Largest side (Y, X) of the test tensors; larger images are cropped around their centre.
_TEST_SIDE = 256
#: Largest depth (Z) of a 3D model's test tensors.
_TEST_DEPTH = 32
_UNET_DOI = "10.1007/978-3-319-24574-4_28"
_UNET_3D_DOI = "10.1007/978-3-319-46723-8_49"
_PALETTE = np.array([[0, 0, 0], [230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48],
                     [145, 30, 180], [70, 240, 240], [240, 50, 230], [210, 245, 60]], np.uint8)


class UNetProbabilities(nn.Module):
    """The exported network: `UNet` class probabilities ``(B, C, [Z,] H, W) -> (B, K, [Z,] H, W)``.

    ``softmax(logits + log(class_prior))``, which equals re-weighting the softmax by the
    class frequencies (`calibration.apply_class_prior`). Keyword arguments are the fields of a
    `UNetConfig`, so a bioimage.io description can build it from plain YAML values; the
    state dict is the U-Net's under ``net.``.
    """

    def __init__(self, class_prior: list[float] | None = None, **config):
        super().__init__()
        self.net = UNet(UNetConfig.from_dict(config))
        k, dims = self.net.config.n_classes, self.net.config.dims
        prior = torch.ones(k) if class_prior is None else torch.tensor(class_prior, dtype=torch.float32)
        if prior.shape != (k,):
            raise ValueError(f"class_prior needs {k} values, got {tuple(prior.shape)}.")
        self.register_buffer("log_prior", prior.clamp_min(1e-12).log().reshape(1, k, *[1] * dims), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.net(x).float() + self.log_prior).softmax(1)


def _import_spec():
    try:
        import bioimageio.spec  # noqa: F401  (lazy: an optional extra)
        from bioimageio.spec.model import v0_5
    except ImportError:
        raise InputError("Exporting to bioimage.io needs the bioimageio extra; install `napari-unet-strokes[bioimageio]`.",
                         setting="bioimageio") from None
    return v0_5


def _channel_names(names, prefix: str) -> list[str]:
    """Python identifiers (as the spec wants) from free-form names, unique and in order."""
    out = []
    for i, name in enumerate(names):
        ident = "".join(ch if ch.isalnum() else "_" for ch in str(name).strip().lower()).strip("_") or f"{prefix}{i}"
        if not ident[0].isalpha():
            ident = f"{prefix}_{ident}"
        while ident in out:
            ident += f"_{i}"
        out.append(ident)
    return out


def _test_block(model, image, channel_axis) -> np.ndarray:
    """Raw test input ``(1, C, [Z,] h, w)`` float32: a central crop of ``image`` whose sides fit the network."""
    view = ImageView(image, channel_axis)
    config = model.config
    if view.n_channels != model.image_channels:
        raise InputError(f"The model takes {model.image_channels}-channel images but the test image has "
                         f"{view.n_channels}; give an image like those the model was trained on.", setting="image")
    m = config.size_multiple
    h, w = (min(_TEST_SIDE, s) // m * m for s in (view.height, view.width))
    if min(h, w) < m:
        raise InputError(f"The test image ({view.height} x {view.width}) is smaller than the network's "
                         f"{m} x {m} pixels; give a larger image.", setting="image")
    y0, x0 = (view.height - h) // 2, (view.width - w) // 2
    ys, xs = slice(y0, y0 + h), slice(x0, x0 + w)
    if config.dims == 2:
        plane = view.n_slices // 2  # a stack gives its middle plane
        return view.read(plane, ys, xs)[None]
    if len(view.stack_shape) != 1:
        raise InputError(f"A 3D model needs a volume (Z, Y, X) as test image, got shape {tuple(view.shape)}.",
                         setting="image")
    zm = config.z_multiple
    depth = min(_TEST_DEPTH, view.n_slices) // zm * zm
    if depth < zm:
        raise InputError(f"The test volume has {view.n_slices} planes but the network needs at least {zm}; "
                         "give a deeper volume.", setting="image")
    z0 = (view.n_slices - depth) // 2
    return np.stack([view.read(z, ys, xs) for z in range(z0, z0 + depth)], axis=1)[None]


def _normalize(raw: np.ndarray, low: float, high: float) -> np.ndarray:
    """The engine's percentile scaling (`Normalization`) of the whole block, per channel, as the
    spec's per-sample ``scale_range`` computes it."""
    out = np.empty_like(raw)
    for c in range(raw.shape[1]):
        values = raw[:, c]
        finite = values[np.isfinite(values)]
        lo, hi = np.percentile(finite, [low, high]) if finite.size else (0.0, 1.0)
        scale = hi - lo if hi - lo > 1e-6 else 1.0
        out[:, c] = (values - lo) / scale
    return np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0).astype(np.float32)


def _exported_network(model) -> UNetProbabilities:
    prior = None if model.class_prior is None else [float(p) for p in model.class_prior]
    net = UNetProbabilities(class_prior=prior, **model.config.to_dict())
    state = {k: v.detach().cpu() for k, v in model.net.state_dict().items()}
    net.net.load_state_dict(state)
    return net.eval().requires_grad_(False)


def _cover(raw: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """An RGB cover ``(s, 2s, 3)``: the test image beside the predicted classes over it."""
    image = raw[0] if raw.ndim == 4 else raw[0][:, raw.shape[2] // 2]  # (C, h, w), a 3D block's middle plane
    labels = probs[0].argmax(0) if probs.ndim == 4 else probs[0][:, probs.shape[2] // 2].argmax(0)
    lo, hi = np.percentile(image, [1, 99.8])
    scaled = np.clip((image - lo) / max(hi - lo, 1e-6) * 255, 0, 255).astype(np.uint8)
    rgb = (scaled[:3] if scaled.shape[0] in (3, 4) else np.repeat(scaled[:1], 3, 0)).transpose(1, 2, 0)
    colours = _PALETTE[labels % len(_PALETTE)]
    overlay = (0.5 * rgb + 0.5 * colours).astype(np.uint8)
    side = min(rgb.shape[:2])
    return np.concatenate([rgb[:side, :side], overlay[:side, :side]], axis=1)


def _readme(model, name: str, description: str, low: float, high: float, class_names: list[str]) -> str:
    config, task = model.config, model.task
    z = "z, " if config.dims == 3 else ""
    m, zm = config.size_multiple, config.z_multiple
    lines = [
        f"# {name}", "", description, "",
        "## Model", "",
        f"A {config.dims}D U-Net (Ronneberger et al. 2015{', Çiçek et al. 2016' if config.dims == 3 else ''}) "
        f"trained with napari-unet from painted labels: depth {config.depth}, "
        f"base width {config.base_width}, {config.norm} normalisation, {config.up} up-sampling, "
        f"{int(model.info.get('steps', 0))} training steps.", "",
        "## Input", "",
        f"`{INPUT_ID}`: axes (batch, channel, {z}y, x), float32, {model.image_channels} channel(s). "
        f"Y and X must be multiples of {m} (2 ** depth, so every pooling step is exact)"
        + (f"; Z a multiple of {zm}." if config.dims == 3 else "."), "",
        "Preprocessing (`scale_range`, per sample and channel): "
        f"`(x - p{low:g}) / (p{high:g} - p{low:g})` with the image's own percentiles, as napari-unet does.",
        "Where it is not exact: napari-unet takes the percentiles of the whole image (of a strided sample of "
        "at most 2 million pixels for large ones) while a tiling consumer may take them per tile, so give "
        "whole images where you can; napari-unet also replaces NaN and infinite pixels by 0 after scaling, "
        "which the spec cannot say.", "",
        "## Output", "",
        f"`{OUTPUT_ID}`: softmax probabilities per class, axes (batch, channel, {z}y, x), channels "
        f"{', '.join(f'`{c}`' for c in class_names)} (class ids {list(model.class_map.ids)}).",
        "They are re-weighted by the class frequencies estimated on the training images, as napari-unet's "
        "prediction does." if model.class_prior is not None else "",
    ]
    if task.objects:
        lines += ["", "Objects mode: the output is the three probability maps (background, object interior, "
                  "object boundary). napari-unet turns them into one id per object with a seeded watershed; "
                  "that step is not part of this package."]
    if model.separates_regions:
        lines += ["", "napari-unet draws thin separators between regions of the second class from these "
                  "probabilities; that step is not part of this package (take the argmax, or use napari-unet)."]
    lines += [
        "", "## Weights", "",
        "`pytorch_state_dict`: architecture `src_models.bioimageio_export.UNetProbabilities` (needs napari-unet "
        "installed). `torchscript`: a traced copy that needs only PyTorch; traced at the test tensor's size, it "
        "works for any size that meets the constraints above.", "",
        "## Validation", "",
        "The test tensors are a central crop of a real image and the prediction napari-unet makes of it. "
        "The model learnt from a few painted strokes on the user's own images; check its predictions on your "
        "data before trusting it.", "",
        "## Licence and citation", "",
        "BSD-3-Clause. Ronneberger, Fischer, Brox (2015), U-Net: Convolutional Networks for Biomedical Image "
        f"Segmentation, MICCAI, doi:{_UNET_DOI}.", "",
    ]
    return "\n".join(lines)


def _check_target(out: Path, overwrite: bool) -> bool:
    """Refuse an unusable target before any work; returns whether it is a zip file."""
    is_zip = out.suffix.lower() == ".zip"
    if out.exists() and not overwrite:
        raise InputError(f"{out} already exists; choose another name, or allow overwriting.", setting="overwrite")
    if is_zip:
        check_writable(out, overwrite=overwrite)
    elif out.exists() and not out.is_dir():
        raise WriteError(f"{out} is a file, not a folder; give a folder name or a .zip file name.", path=out)
    elif out.is_dir() and any(out.iterdir()) and not (out / "rdf.yaml").is_file():
        raise WriteError(f"{out} is a folder that holds other files, not a bioimage.io package; "
                         "give a new folder name.", path=out)
    else:
        check_writable(out.parent / f"{out.name}.check", overwrite=True)  # its folder takes new files
    return is_zip


def export_bioimageio(model, out, image, *, channel_axis: int | None = None, overwrite: bool = False,
                      name: str | None = None, description: str | None = None,
                      authors: list[str] | tuple[str, ...] = ("napari-unet user",)) -> Path:
    """Write ``model`` as a bioimage.io model package (format 0.5) and return its path.

    Parameters
    ----------
    model : UNetModel
        A trained model (classes or objects, 2D or 3D), without filter features.
    out : path
        A ``.zip`` file name writes a zip package, any other name a folder. Written beside
        the target and renamed, so it is complete or absent.
    image : array-like
        An image like those the model was trained on (a volume ``(Z, Y, X)`` for a 3D model);
        a central crop of it becomes the test input, and the model's prediction of it the test
        output and the cover.
    channel_axis : int, optional
        Channel axis of ``image``; None for grey.
    overwrite : bool
        Replace an existing ``out``.
    name, description, authors
        What the package says about itself (defaults describe the model).
    """
    v5 = _import_spec()
    out = Path(out)
    if model.normalization.features is not None:
        raise InputError("This model takes filter features, which a bioimage.io package cannot compute; "
                         "export a model trained without filter features.", setting="filter_features")
    low, high = model.normalization.low, model.normalization.high
    if high <= 1.0:
        raise InputError(f"bioimage.io needs an upper percentile above 1, this model uses {high:g}.")
    is_zip = _check_target(out, overwrite)
    config, task = model.config, model.task
    raw = _test_block(model, image, channel_axis)
    net = _exported_network(model)
    example = torch.from_numpy(_normalize(raw, low, high))
    with torch.no_grad():
        probs = net(example).numpy()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer warnings on the up path's size checks
            traced = torch.jit.trace(net, example, check_trace=False)

    class_names = list(model.class_map.names)
    channels = _channel_names(class_names, "class")
    kind = "objects (instance)" if task.objects else "semantic"
    name = name or f"napari-unet {config.dims}D {'objects' if task.objects else 'classes'} U-Net"
    description = description or (
        f"A {config.dims}D U-Net for {kind} segmentation trained with napari-unet from painted labels; "
        f"it outputs softmax probabilities of {len(class_names)} classes ({', '.join(class_names)})"
        + ("; the objects come from a watershed on them in napari-unet, not in this package." if task.objects
           else "."))

    spatial = ["z", "y", "x"] if config.dims == 3 else ["y", "x"]
    steps = {"z": config.z_multiple, "y": config.size_multiple, "x": config.size_multiple}
    parent = out.parent
    parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=parent))
    try:
        files = work / "files"
        files.mkdir()
        np.save(files / "test_input.npy", raw)
        np.save(files / "test_output.npy", probs)
        import tifffile  # sample tensors, the spec's illustration for viewers (FAIR)
        tifffile.imwrite(files / "sample_input.tif", raw)
        tifffile.imwrite(files / "sample_output.tif", probs)
        torch.save(net.state_dict(), files / "weights.pt")
        traced.save(str(files / "weights_torchscript.pt"))
        import imageio.v3 as iio  # scikit-image's image writer
        iio.imwrite(files / "cover.png", _cover(raw, probs))
        (files / "README.md").write_text(_readme(model, name, description, low, high, channels), encoding="utf-8")

        def source(f):
            return v5.FileDescr(source=files / f)

        input_axes = [v5.BatchAxis(), v5.ChannelAxis(channel_names=[
            v5.Identifier(c) for c in _channel_names([f"channel{i}" for i in range(raw.shape[1])], "channel")])]
        input_axes += [v5.SpaceInputAxis(id=v5.AxisId(a), size=v5.ParameterizedSize(min=steps[a], step=steps[a]))
                       for a in spatial]
        output_axes = [v5.BatchAxis(), v5.ChannelAxis(channel_names=[v5.Identifier(c) for c in channels])]
        output_axes += [v5.SpaceOutputAxis(id=v5.AxisId(a), size=v5.SizeReference(
            tensor_id=v5.TensorId(INPUT_ID), axis_id=v5.AxisId(a))) for a in spatial]
        preprocessing = [v5.ScaleRangeDescr(kwargs=v5.ScaleRangeKwargs(
            axes=tuple(v5.AxisId(a) for a in spatial), min_percentile=low, max_percentile=high))]
        pytorch_version = v5.Version(torch.__version__.split("+")[0])
        cite = [v5.CiteEntry(text="Ronneberger, Fischer, Brox. U-Net: Convolutional Networks for Biomedical Image "
                             "Segmentation. MICCAI 2015.", doi=v5.Doi(_UNET_DOI))]
        if config.dims == 3:
            cite.append(v5.CiteEntry(text="Çiçek et al. 3D U-Net: Learning Dense Volumetric Segmentation from "
                                     "Sparse Annotation. MICCAI 2016.", doi=v5.Doi(_UNET_3D_DOI)))
        kwargs = {**config.to_dict(), "class_prior": None if model.class_prior is None
                  else [float(p) for p in model.class_prior]}
        kwargs = {k: list(v) if isinstance(v, tuple) else v for k, v in kwargs.items()}
        descr = v5.ModelDescr(
            name=name,
            description=description,
            authors=[v5.Author(name=a) for a in authors],
            cite=cite,
            license=v5.LicenseId("BSD-3-Clause"),
            documentation=source("README.md"),
            covers=[source("cover.png")],
            tags=["unet", "segmentation", f"{config.dims}d", "pytorch", "napari-unet",
                  "instance-segmentation" if task.objects else "semantic-segmentation"],
            inputs=[v5.InputTensorDescr(
                id=v5.TensorId(INPUT_ID), axes=input_axes, test_tensor=source("test_input.npy"),
                sample_tensor=source("sample_input.tif"),
                data=v5.IntervalOrRatioDataDescr(type="float32"), preprocessing=preprocessing)],
            outputs=[v5.OutputTensorDescr(
                id=v5.TensorId(OUTPUT_ID), axes=output_axes, test_tensor=source("test_output.npy"),
                sample_tensor=source("sample_output.tif"),
                data=v5.IntervalOrRatioDataDescr(type="float32", range=(0.0, 1.0)))],
            weights=v5.WeightsDescr(
                pytorch_state_dict=v5.PytorchStateDictWeightsDescr(
                    source=files / "weights.pt", pytorch_version=pytorch_version,
                    architecture=v5.ArchitectureFromLibraryDescr(
                        import_from=UNetProbabilities.__module__, callable=v5.Identifier("UNetProbabilities"),
                        kwargs=kwargs)),
                torchscript=v5.TorchscriptWeightsDescr(
                    source=files / "weights_torchscript.pt", pytorch_version=pytorch_version,
                    parent="pytorch_state_dict")),
        )
        return _write_package(descr, out, work, is_zip)
    except OSError as exc:
        raise WriteError(f"Could not write {out}: {exc.strerror or exc}; choose another folder.", path=out) from None
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _write_package(descr, out: Path, work: Path, is_zip: bool) -> Path:
    """Save ``descr`` into ``work`` and rename it onto ``out`` (replacing an older package)."""
    from bioimageio.spec import save_bioimageio_package, save_bioimageio_package_as_folder

    if is_zip:
        tmp = work / "package.zip"
        save_bioimageio_package(descr, output_path=tmp)
        os.replace(tmp, out)
    else:
        tmp = work / "package"
        save_bioimageio_package_as_folder(descr, output_path=tmp)
        if out.exists():  # overwrite: the old folder moves aside and is removed with `work`
            os.replace(out, work / "old")
        os.replace(tmp, out)
    log.info("Wrote the bioimage.io package %s.", out)
    return out
