"""Reading images and labels, writing label masks: every file complete or absent.

Readers turn any unreadable file into an `InputError` sentence. Writers write beside the
target under a hidden temporary name and rename it into place, so a full disk, a signal or
a crash never leaves a file that looks valid; `check_writable` and `check_output_folder`
find a bad output path before long work starts instead of after it.
"""
from __future__ import annotations

import errno
import logging
import os
import secrets
import tempfile
import weakref
from pathlib import Path

import numpy as np
import tifffile

from .classmap import check_label_values
from .errors import InputError, WriteError

__all__ = ["STREAM_PIXELS", "StreamedLabels", "check_output_folder", "check_writable", "labels_dtype",
           "open_image_lazily", "read_image", "read_labels", "write_labels_tiff"]

log = logging.getLogger(__name__)

#: Images with more pixels than this are best predicted tile by tile from their source into a
#: memory-mapped TIFF (`StreamedLabels`) rather than into memory: the CLI and the plugin do so.
STREAM_PIXELS = 64 * 2**20

#: Sizes above this need a BigTIFF (classic TIFF offsets are 32-bit; leave room for the header).
_BIGTIFF_BYTES = 2**32 - 2**25

#: File systems that hold no files of their own: writing there fails or means something else.
_PSEUDO_ROOTS = (Path("/proc"), Path("/sys"))

_TIFF_SUFFIXES = (".tif", ".tiff")
_JPEG_SUFFIXES = (".jpg", ".jpeg")


# -- reading ------------------------------------------------------------------------------

def _reason(exc: BaseException) -> str:
    """The first line of an exception's message (or its type), short enough for a sentence."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:120]


def _unreadable(path: Path, exc: BaseException) -> InputError:
    return InputError(f"Cannot read {path} as an image ({_reason(exc)}); use a TIFF, PNG or JPEG file.")


def _check_tiff(path: Path) -> bool:
    """Check that a TIFF holds image data that lies inside the file; True when it is memory-mappable.

    A file cut short (an interrupted copy) or holding only a header raises `InputError` here,
    before any decoder or memory map meets it.
    """
    size = path.stat().st_size
    with tifffile.TiffFile(path) as tif:
        if not tif.pages or not tif.series:
            raise InputError(f"{path} holds no image (only a TIFF header); the file is damaged or still being copied.")
        series = tif.series[0]
        if int(np.prod(series.shape, dtype=np.int64)) == 0:
            raise InputError(f"{path} holds an empty image of shape {tuple(series.shape)}; choose another file.")
        end = 0
        for page in series.pages:
            if page is None:
                continue
            for offset, count in zip(page.dataoffsets, page.databytecounts):
                end = max(end, int(offset) + int(count))
        if end > size:
            raise InputError(f"{path} is cut short: its image data need {end} bytes but the file has {size}; "
                             "the file is damaged or still being copied.")
        return series.dataoffset is not None


def read_image(path) -> np.ndarray:
    """Read an image or labels file (TIFF via tifffile, other formats via scikit-image).

    Raises `InputError` with a sentence when the file is missing, empty, cut short or unreadable.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"File not found: {path}. Check the path and spelling.")
    try:
        if path.suffix.lower() in _TIFF_SUFFIXES:
            _check_tiff(path)
            return tifffile.imread(path)
        # scikit-image is slow to import and only needed for formats other than TIFF
        from skimage import io as skio
        image = np.asarray(skio.imread(path))
    except InputError:
        raise
    except Exception as exc:  # decoders raise every type there is (IndexError, struct.error, codec errors)
        raise _unreadable(path, exc) from None
    if image.size == 0 or image.dtype == object:
        raise InputError(f"Cannot read {path} as an image (no pixel data); use a TIFF, PNG or JPEG file.")
    return image


def open_image_lazily(path):
    """Open an image without reading it all: for images too large for memory.

    Uncompressed TIFFs come back as a read-only `tifffile.memmap`; other TIFFs (compressed,
    tiled, OME pyramids: level 0) as a `zarr` array that decodes chunks on demand; ``.zarr``
    folders via `zarr.open`; anything else (PNG, JPEG) is read whole with `read_image`.
    Every result has ``shape``, ``dtype`` and NumPy slicing, so `UNetModel.predict` takes it.
    A file that is empty or cut short raises `InputError` now rather than at the first tile.
    """
    path = Path(path)
    try:
        if path.suffix.lower() == ".zarr" and path.is_dir():
            import zarr  # optional reader, only for zarr input
            z = zarr.open(str(path), mode="r")
            if not hasattr(z, "shape"):
                raise InputError(f"{path} is a zarr group, not an image array; give the path of its array.")
            return z
        if not path.is_file():
            raise InputError(f"File not found: {path}. Check the path and spelling.")
        if path.suffix.lower() not in _TIFF_SUFFIXES:
            return read_image(path)
        if _check_tiff(path):
            return tifffile.memmap(path, mode="r")
        import zarr  # compressed, tiled or otherwise not contiguous: decode chunk by chunk
        z = zarr.open(tifffile.imread(path, aszarr=True), mode="r")
        return z if hasattr(z, "shape") else z["0"]  # multiscale group: the full resolution
    except InputError:
        raise
    except Exception as exc:
        raise _unreadable(path, exc) from None


def read_labels(path) -> np.ndarray:
    """Read a labels (mask) file: like `read_image`, but only files that hold label ids.

    Refuses, each with a sentence: lossy files (JPEG, or a TIFF compressed as JPEG or
    WebP), whose compression invents new values at every edge; colour files (an RGB PNG);
    and values that are not ids (see `check_label_values`).
    """
    path = Path(path)
    if path.suffix.lower() in _JPEG_SUFFIXES:
        raise InputError(f"{path} is a JPEG: its compression invents new label values; save labels as PNG or TIFF.")
    if path.suffix.lower() in _TIFF_SUFFIXES and path.is_file():
        compression = _tiff_compression(path)
        if compression is not None and ("JPEG" in compression or "WEBP" in compression):
            raise InputError(f"{path} is a TIFF compressed as {compression}: its lossy compression invents new label "
                             "values; save labels as PNG or TIFF without lossy compression.")
    labels = read_image(path)
    if labels.ndim >= 3 and labels.shape[-1] in (3, 4) and min(labels.shape[-3:-1]) > 4:
        raise InputError(f"{path} holds colours (shape {labels.shape}), not label ids; save labels as a "
                         "single-channel PNG or TIFF with one whole number per pixel.")
    return check_label_values(labels, what=f"The labels in {path}")


def _tiff_compression(path: Path) -> str | None:
    """Name of the first page's compression, or None when the file cannot say (`read_image` then explains)."""
    try:
        with tifffile.TiffFile(path) as tif:
            return tifffile.COMPRESSION(tif.pages[0].compression).name if tif.pages else None
    except Exception:  # unreadable: read_image raises the sentence for it
        return None


# -- checking output paths ----------------------------------------------------------------

def _write_error(path: Path, exc: OSError) -> WriteError:
    """One sentence for an `OSError` met while writing ``path``, with what to do about it."""
    reason = exc.strerror or _reason(exc)
    if exc.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
        advice = "free some space or choose another folder"
    elif exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        advice = "choose a folder you may write to"
    else:
        advice = "choose another folder"
    return WriteError(f"Could not write {path}: {reason}; {advice}.", path=path)


def _create_temp(folder: Path, name: str) -> tuple[int, Path]:
    """Create a new hidden file in ``folder`` (permissions as for any new file) and return ``(fd, path)``."""
    while True:
        tmp = folder / f".{name}.{secrets.token_hex(4)}.tmp"
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), tmp
        except FileExistsError:
            continue


def _sync(path) -> None:
    """Make a written file's bytes durable before a rename makes it the real one."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove_quietly(path) -> None:
    try:
        os.remove(path)
    except OSError:
        pass


def _check_folder_usable(folder: Path, target: Path) -> None:
    """Make ``folder`` exist and prove a file can be created in it, or raise `WriteError` about ``target``."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise WriteError(f"Cannot write {target}: {existing} is a file, not a folder; choose another folder.",
                         path=target)
    real = existing.resolve()
    if any(real == root or root in real.parents for root in _PSEUDO_ROOTS):
        raise WriteError(f"Cannot write {target}: {real} is a system folder that holds no files; "
                         "choose another folder.", path=target)
    if hasattr(os, "statvfs") and os.statvfs(real).f_flag & getattr(os, "ST_RDONLY", 1):
        raise WriteError(f"Cannot write {target}: the file system of {real} is read-only; choose another folder.",
                         path=target)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):  # unnamed where the OS can (O_TMPFILE): nothing to leave behind
            pass
    except OSError as exc:
        raise _write_error(target, exc) from None


def _refuse_existing(path: Path, overwrite: bool) -> None:
    if path.is_dir():
        raise WriteError(f"{path} is a folder; give the name of a file to write.", path=path)
    if path.exists() and not overwrite:
        raise InputError(f"{path} already exists; choose another name or folder, or allow overwriting.",
                         setting="overwrite")


def check_writable(path, *, overwrite: bool = False) -> Path:
    """Check, before long work, that a file can be written at ``path``; returns it as a `Path`.

    Raises `InputError` (``setting="overwrite"``) when the file exists and ``overwrite`` is
    False, and `WriteError` when ``path`` is a folder, lies under a file, a system folder or a
    read-only file system, or its folder refuses a new file (tried for real, with a hidden file
    removed at once). Missing folders above ``path`` are created.
    """
    path = Path(path)
    _refuse_existing(path, overwrite)
    _check_folder_usable(path.parent, path)
    return path


def check_output_folder(folder) -> Path:
    """Check, before long work, that files can be written into ``folder``, creating it if missing.

    Raises `WriteError` with a sentence when ``folder`` is a file, lies under a file, a system
    folder or a read-only file system, or refuses a new file. Returns it as a `Path`.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise WriteError(f"{folder} is a file, not a folder; choose another output folder.", path=folder)
    _check_folder_usable(folder, folder)
    return folder


# -- writing ------------------------------------------------------------------------------

def labels_dtype(labels) -> np.dtype:
    """uint8 when every id fits, else uint16, else uint32."""
    top = int(np.max(labels)) if np.size(labels) else 0
    if top <= 255:
        return np.dtype(np.uint8)
    if top <= 65535:
        return np.dtype(np.uint16)
    return np.dtype(np.uint32)


def write_labels_tiff(path, labels, *, overwrite: bool = False, metadata: dict | None = None,
                      min_dtype=np.uint8) -> Path:
    """Write a labels array as a zlib-compressed TIFF in the smallest unsigned dtype (at least ``min_dtype``).

    The file is written under a hidden name beside ``path`` and renamed into place, so it is
    complete or absent: any failure (a full disk, Ctrl+C) removes the partial file and
    re-raises, an `OSError` as `WriteError`. Raises `InputError` when the file exists and
    ``overwrite`` is False.
    """
    path = Path(path)
    _refuse_existing(path, overwrite)
    labels = np.asarray(labels)
    if labels.dtype.kind not in "biuf":
        raise InputError(f"Labels to write must be whole numbers, not values of type {labels.dtype}.")
    if labels.dtype.kind == "f" and labels.size and not (np.isfinite(labels).all() and (labels % 1 == 0).all()):
        raise InputError("Labels to write must be whole numbers; these hold fractions, NaN or infinity.")
    if labels.min(initial=0) < 0:
        raise InputError("Labels to write must not be negative.")
    dtype = np.promote_types(labels_dtype(labels), min_dtype)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = _create_temp(path.parent, path.name)
        os.close(fd)
        tifffile.imwrite(tmp, labels.astype(dtype, copy=False), compression="zlib", photometric="minisblack",
                         metadata=metadata or {})
        _sync(tmp)
        os.replace(tmp, path)
        tmp = None
    except OSError as exc:
        raise _write_error(path, exc) from None
    finally:  # every exception, KeyboardInterrupt included
        if tmp is not None:
            _remove_quietly(tmp)
    return path


def _preallocate(fd: int, size: int) -> None:
    """Reserve ``size`` bytes on disk now, so a full disk is an `OSError` here, not a SIGBUS mid-prediction."""
    if not hasattr(os, "posix_fallocate"):
        return
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as exc:
        if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
            raise
        log.debug("Cannot preallocate %d bytes here (%s); writing without.", size, exc)


class StagedWrite:
    """A write that lands whole or not at all: ``commit`` moves it into place, ``discard`` (or an
    exception in a ``with`` block) deletes what was staged. Subclasses set ``_state`` and a
    ``_finalizer`` that removes the staged data, and define ``commit``."""

    _state: str
    _finalizer: weakref.finalize

    def discard(self) -> None:
        """Delete what was staged; the target is left as it was."""
        if self._state == "committed":
            return
        self._state = "discarded"
        self._finalizer()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is None:
            self.commit()
        else:
            self.discard()
        return False


class StreamedLabels(StagedWrite):
    """An uncompressed label TIFF filled in place through a memory map, complete or absent.

    For outputs too large for memory: `UNetModel.predict(..., out=streamed.array)` fills it
    band by band. The file is made under a hidden temporary name beside ``path`` with every
    byte reserved on disk up front (a full disk fails here with `WriteError`, not later with a
    crash), and only `commit` renames it to ``path``. Used as a context manager it commits on
    a normal exit and discards on any exception, Ctrl+C included; an object dropped without
    either removes its temporary file.

    Parameters
    ----------
    path : path-like
        The final file.
    shape : tuple of int
        Shape of the labels, e.g. ``(H, W)`` or ``(Z, H, W)``.
    dtype : dtype
        Unsigned integer type of the labels (`ClassMap.dtype`).
    overwrite : bool
        Replace an existing ``path`` (on commit); otherwise `InputError` now.
    metadata : dict, optional
        Stored in the TIFF (tifffile's ImageDescription JSON).

    Attributes
    ----------
    array : numpy.memmap
        The writable labels; it stays usable after `commit`.
    path : pathlib.Path
        The final file.
    """

    def __init__(self, path, shape, dtype=np.uint8, *, overwrite: bool = False, metadata: dict | None = None):
        self.path = check_writable(path, overwrite=overwrite)
        shape = tuple(int(s) for s in shape)
        dtype = np.dtype(dtype)
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        fd, tmp = _create_temp(self.path.parent, self.path.name)
        os.close(fd)
        self._tmp = tmp
        self._finalizer = weakref.finalize(self, _remove_quietly, str(tmp))
        self._state = "open"
        try:
            tifffile.imwrite(tmp, shape=shape, dtype=dtype, bigtiff=nbytes > _BIGTIFF_BYTES,
                             photometric="minisblack", metadata=metadata or {})
            fd = os.open(tmp, os.O_RDWR)
            try:
                _preallocate(fd, os.fstat(fd).st_size)
            finally:
                os.close(fd)
            self.array = tifffile.memmap(tmp, mode="r+")
        except BaseException as exc:
            self.discard()
            if isinstance(exc, OSError):
                raise _write_error(self.path, exc) from None
            raise

    def commit(self) -> np.memmap:
        """Flush the labels and rename the file into place; returns `array`, which stays usable."""
        if self._state == "committed":
            return self.array
        if self._state == "discarded":
            raise RuntimeError(f"The streamed labels for {self.path} were discarded; nothing to commit.")
        try:
            self.array.flush()
            os.replace(self._tmp, self.path)
        except BaseException as exc:
            self.discard()
            if isinstance(exc, OSError):
                raise _write_error(self.path, exc) from None
            raise
        self._state = "committed"
        self._finalizer.detach()
        return self.array

    def __repr__(self) -> str:
        return f"StreamedLabels({str(self.path)!r}, shape={getattr(self, 'array', np.empty(0)).shape}, {self._state})"
