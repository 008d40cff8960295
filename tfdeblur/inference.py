"""Running a trained deblurring model on images: whole, tiled, or over many files.

The networks pad to their own multiple and crop back, so any image size works
whole. Large images can be processed as overlapping tiles (bounded memory):
each tile's output is blended with weights that fall off linearly across the
overlap, so no seam shows; a pointwise network gives exactly the whole-image
result, and a network with a receptive field of radius r differs from it only
within r pixels of the tile borders inside the overlaps. LMFN and SVRNN are
not local (attention and recurrences over the whole image): their tiled
output approaches the whole-image one only with large tiles, so each
architecture has a default overlap and a minimum tile
(:func:`tiling_defaults`); a smaller tile warns (:class:`TilingWarning`).
"""

from __future__ import annotations

import os
import tempfile
import warnings
import zipfile
from collections.abc import Iterable, Sequence

import keras
import numpy as np
import tensorflow as tf

from tfdeblur import _validation as checks
from tfdeblur._messages import user_message
from tfdeblur._tiling import FALLBACK_OVERLAP, TILING_DEFAULTS, TilingDefaults
from tfdeblur.data.io import is_image_file, read_image, write_image
from tfdeblur.data.progress import ProgressBar


def load_model(path: str | os.PathLike) -> keras.Model:
    """Loads a ``.keras`` deblurring model saved by this package (or a compatible one).

    Registers the package's layers first, then checks that the file is a
    complete archive and that the model is image-to-image
    (:func:`check_image_to_image`).

    Raises:
        FileNotFoundError: naming ``path`` when it does not exist.
        ValueError: naming ``path`` when it is truncated or corrupt, not a
            loadable Keras model, or not a model from ``[N, H, W, C]`` images to
            images of the same shape.
    """
    import tfdeblur.layers  # noqa: F401 - registers the package's layers
    import tfdeblur.models

    tfdeblur.models.available()  # imports every network module: registers their layers

    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"model file {path} does not exist")
    if os.path.isdir(path):
        raise ValueError(f"model file {path} is a folder, not a .keras file")
    _check_archive(path)
    try:
        model = keras.models.load_model(path, compile=False)
    except Exception as e:  # noqa: BLE001 - Keras raises many types for bad files
        raise ValueError(f"model file {path} could not be loaded: {user_message(e)}") from None
    check_image_to_image(model, f"model file {path}")
    return model


def _check_archive(path: str) -> None:
    """A ``.keras`` file is a zip archive: a truncated or damaged one is named as such.

    (Keras itself reports a truncated archive as "File not found".)
    """
    with open(path, "rb") as f:
        head = f.read(4)
    if not path.lower().endswith(".keras") and not head.startswith(b"PK"):
        return  # a legacy HDF5 file: Keras checks it
    size = os.path.getsize(path)
    if not head.startswith(b"PK"):
        raise ValueError(f"model file {path} could not be loaded: it is not a .keras (zip) "
                         f"archive ({size:,} bytes, no zip header)")
    try:
        with zipfile.ZipFile(path) as archive:
            damaged = archive.testzip()
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as e:
        raise ValueError(f"model file {path} could not be loaded: it is truncated or corrupt "
                         f"({size:,} bytes; {user_message(e)})") from None
    if damaged is not None:
        raise ValueError(f"model file {path} could not be loaded: it is corrupt ({damaged} "
                         f"fails its checksum)")


def _layers(model) -> Iterable:
    for layer in getattr(model, "layers", []):
        yield layer
        yield from _layers(layer)


def min_image_size(model: keras.Model) -> int:
    """The smallest height / width ``model`` accepts (its padding layer's), else 1."""
    from tfdeblur.models._padding import PadToMultiple

    sizes = [layer.min_size for layer in _layers(model) if isinstance(layer, PadToMultiple)]
    return max(sizes, default=1)


class TilingWarning(UserWarning):
    """A tile below the model's minimum: the tiled result measurably differs from the whole."""


def tiling_defaults(model: keras.Model) -> TilingDefaults:
    """The default overlap and minimum tile of ``model``'s architecture.

    The architecture is the one its padding layer names (every tfdeblur
    network starts with one, saved with it); any other model gets an overlap
    of 32 and no minimum.

    Example:
        >>> tiling_defaults(tfdeblur.models.build("lmfn", width=32))
        TilingDefaults(architecture='lmfn', overlap=32, min_tile=192, non_local='ALFM ...')
    """
    from tfdeblur.models._padding import PadToMultiple

    names = {layer.model_name for layer in _layers(model) if isinstance(layer, PadToMultiple)}
    known = [TILING_DEFAULTS[n] for n in sorted(names) if n in TILING_DEFAULTS]
    if len(known) == 1:
        return known[0]
    return TilingDefaults(architecture=None, overlap=FALLBACK_OVERLAP)


def small_tile_message(model: keras.Model, tile: int | None) -> str | None:
    """Why ``tile`` is too small for ``model`` (below its architecture's minimum), else None."""
    d = tiling_defaults(model)
    if tile is None or d.min_tile is None or tile >= d.min_tile:
        return None
    return (f"tile {tile} is below the minimum of {d.min_tile} for {d.architecture.upper()}, "
            f"which is not local ({d.non_local}): smaller tiles can move the PSNR by 0.05 dB "
            f"or more (docs/tiling.md); use tiles of at least {d.min_tile} or none")


def model_channels(model: keras.Model) -> int:
    """The channel count of the images ``model`` takes (3 when the model does not say)."""
    try:
        c = model.inputs[0].shape[-1]
    except (AttributeError, IndexError, TypeError, ValueError):
        return 3
    return int(c) if c else 3


def check_image_to_image(model: keras.Model, name: str = "model") -> None:
    """Raises ValueError unless ``model`` maps ``[N, H, W, C]`` images to the same shape.

    Checked on a symbolic odd-sized image (no computation), or by running the
    model once on a small zero image when the symbolic shapes are not known.
    A model with several outputs is refused: every tfdeblur network has one
    (SVDN's training model, with its sampling positions, is not deployed).

    Args:
        model: a loaded ``keras.Model``.
        name: how messages name it, e.g. ``"model file runs/a/best.keras"``.
    """
    try:
        inputs = model.inputs
    except (AttributeError, ValueError):
        inputs = None
    if not inputs or len(inputs) != 1:
        raise ValueError(f"{name} is not a deblurring model: it needs one image input, "
                         f"has {len(inputs) if inputs else 'no'} inputs")
    outputs = getattr(model, "outputs", None) or []
    if len(outputs) > 1:
        raise ValueError(f"{name} is not a deblurring model: it has {len(outputs)} outputs, "
                         "an image-to-image model has one (for SVDN, use the model of "
                         "tfdeblur.models.build('svdn'), not its training model "
                         "with_positions(model))")
    shape = tuple(inputs[0].shape)
    if len(shape) != 4 or shape[-1] is None:
        raise ValueError(f"{name} is not a deblurring model: it takes input of shape {shape}, "
                         f"not images [N, H, W, C]")
    m = min_image_size(model)
    probe = (1, shape[1] or max(67, m), shape[2] or max(45, m), shape[3])
    out = None
    try:
        spec = model.compute_output_spec(keras.KerasTensor(probe, dtype="float32"))
        out = tuple(keras.tree.flatten(spec)[0].shape)
    except Exception:  # noqa: BLE001 - fall back to running it
        out = None
    if out is None or None in out:
        try:
            y = model(np.zeros(probe, np.float32), training=False)
        except Exception as e:  # noqa: BLE001 - any failure means it cannot deblur
            raise ValueError(f"{name} does not run on a {probe} image: "
                             f"{user_message(e)}") from None
        out = tuple(y.shape)
    if out != probe:
        raise ValueError(f"{name} is not an image-to-image deblurring model: it maps images "
                         f"[N, H, W, C] = {list(probe)} to {list(out)}, not to the same shape")


def _check_image(image: np.ndarray, name: str = "image") -> np.ndarray:
    img = np.asarray(image)
    if not (img.ndim == 2 or (img.ndim == 3 and img.shape[2] in (1, 3, 4))):
        raise ValueError(f"{name} must be an array [H, W, 3] (RGB), [H, W, 4] (RGBA), "
                         f"[H, W, 1] or [H, W] (grey), got shape {img.shape}")
    if img.shape[0] == 0 or img.shape[1] == 0:
        raise ValueError(f"{name} must not be empty, got shape {img.shape}")
    if img.dtype == np.uint8:
        img = img.astype(np.float32) / 255.0
    elif img.dtype == np.uint16:
        img = img.astype(np.float32) / 65535.0
    elif np.issubdtype(img.dtype, np.floating):
        img = img.astype(np.float32)
        if not np.isfinite(img).all():
            raise ValueError(f"{name} contains NaN or infinite values")
        if img.size and (img.min() < 0.0 or img.max() > 1.0):
            raise ValueError(f"{name} must be in [0, 1], got values in "
                             f"[{img.min():.3g}, {img.max():.3g}]")
    else:
        raise ValueError(f"{name} must be uint8, uint16 or float in [0, 1], got {img.dtype}")
    return img


def _tile_starts(size: int, tile: int, step: int) -> list[int]:
    if size <= tile:
        return [0]
    starts = list(range(0, size - tile, step))
    starts.append(size - tile)
    return starts


def _ramp(length: int, start: int, end: int, size: int, overlap: int) -> np.ndarray:
    """Blend weights along one axis: 1 inside, linear ramps over the overlap."""
    w = np.ones(length, np.float32)
    if overlap > 0:
        ramp = (np.arange(overlap, dtype=np.float32) + 0.5) / overlap
        if start > 0:
            w[:overlap] = np.minimum(w[:overlap], ramp)
        if end < size:
            w[-overlap:] = np.minimum(w[-overlap:], ramp[::-1])
    return w


def deblur_image(model: keras.Model, image: np.ndarray, *, tile: int | None = None,
                 overlap: int | None = None, batch_size: int = 4,
                 self_ensemble: bool = False) -> np.ndarray:
    """Deblurs one image: RGB, RGBA or grey.

    Colour is deblurred; an alpha channel is returned unchanged. A grey image
    goes through a 3-channel model as RGB (the grey repeated) and comes back
    grey (the mean of the three outputs), through a 1-channel model as it is.

    Args:
        model: a deblurring ``keras.Model`` taking ``[N, H, W, C]`` in [0, 1]
            (``C`` = 3, or 1 for grey models).
        image: ``[H, W, 3]`` RGB, ``[H, W, 4]`` RGBA, ``[H, W, 1]`` or ``[H, W]``
            grey; uint8, uint16 or float in [0, 1].
        tile: process as overlapping ``tile x tile`` tiles (None: whole image).
            Below the model's minimum (:func:`tiling_defaults`) a
            :class:`TilingWarning` is issued when the image is tiled.
        overlap: pixels shared by neighbouring tiles (blended linearly). None:
            the model's default (:func:`tiling_defaults`), reduced to
            ``(tile - 1) // 2`` for a tile too small for it.
        batch_size: tiles per model call.
        self_ensemble: deblur the image in all 8 orientations (4 rotations, each
            also mirrored), turn each result back and return their mean
            (:func:`dihedral_mean`): 8 times the time, for a slightly better
            result from a network that is not itself rotation invariant (the
            README's quality table has the bundled model's figures).

    Returns:
        float32 in [0, 1] (clipped), in the layout of ``image``: ``[H, W, 3]``,
        ``[H, W, 4]`` (alpha as given, scaled to [0, 1] like the colour),
        ``[H, W, 1]`` or ``[H, W]``.

    Raises:
        ValueError: a bad ``image`` (shape, dtype, NaN, range, smaller than the
            model accepts), bad tile settings, or a model whose output is not
            an image of the input's shape.
    """
    img = _check_image(image)
    channels = model_channels(model)
    grey = img.ndim == 2 or img.shape[2] == 1
    if grey:
        x = img.reshape(img.shape[0], img.shape[1], 1)
        if channels == 3:
            x = np.repeat(x, 3, axis=2)
    else:
        x = img[..., :3]
        if channels != 3:
            raise ValueError(f"the model takes {channels}-channel images; the image is colour "
                             f"(shape {img.shape})")
    if x.shape[2] != channels:
        raise ValueError(f"the model takes {channels}-channel images, got shape {img.shape}")
    self_ensemble = checks.check_bool(self_ensemble, "self_ensemble")
    if self_ensemble:
        y = dihedral_mean(lambda v: _deblur_array(model, v, tile=tile, overlap=overlap,
                                                  batch_size=batch_size), x)
    else:
        y = _deblur_array(model, x, tile=tile, overlap=overlap, batch_size=batch_size)
    if grey:
        g = y.mean(axis=2, keepdims=True) if channels == 3 else y
        return g.reshape(img.shape)
    if img.shape[2] == 4:
        return np.concatenate([y, img[..., 3:]], axis=2)
    return y


def dihedral_mean(fn, image: np.ndarray) -> np.ndarray:
    """The mean of ``fn`` over the 8 orientations of ``image``, each result turned back.

    ``fn`` maps an ``[H, W, C]`` array to one of the same shape; it is called
    with the image rotated by 0, 90, 180 and 270 degrees, each also mirrored
    left-right (so with ``[W, H, C]`` arrays too), and each result gets the
    inverse transform before the float32 mean (geometric self-ensemble).
    """
    total = None
    for k in range(4):
        for mirror in (False, True):
            v = np.rot90(image, k, axes=(0, 1))
            if mirror:
                v = v[:, ::-1]
            y = np.asarray(fn(np.ascontiguousarray(v)), np.float32)
            if mirror:
                y = y[:, ::-1]
            y = np.rot90(y, -k, axes=(0, 1))
            total = y.copy() if total is None else total + y
    return total / np.float32(8)


def _call(model: keras.Model, batch: np.ndarray) -> np.ndarray:
    try:
        out = np.asarray(model(batch, training=False))
    except ValueError as e:  # e.g. an image below the network's minimum size
        raise ValueError(user_message(e)) from None
    if out.shape != batch.shape:
        raise ValueError(f"the model is not an image-to-image deblurring model: it maps "
                         f"{list(batch.shape)} to {list(out.shape)}")
    return out


def _deblur_array(model: keras.Model, img: np.ndarray, *, tile: int | None,
                  overlap: int | None, batch_size: int) -> np.ndarray:
    from tfdeblur.models._padding import PadToMultiple

    tile = checks.check_int(tile, "tile", allow_none=True)
    overlap = checks.check_int(overlap, "overlap", minimum=0, allow_none=True)
    batch_size = checks.check_int(batch_size, "batch_size")
    h, w, c = img.shape
    if overlap is None:
        overlap = tiling_defaults(model).overlap
        if tile is not None and tile >= 1:
            overlap = min(overlap, (tile - 1) // 2)
    if tile is not None and 2 * overlap >= tile:
        raise ValueError(f"tile must be > 2 * overlap >= 0, got tile={tile}, overlap={overlap}")
    m = min_image_size(model)
    if min(h, w) < m:
        raise ValueError(f"image {w}x{h} is smaller than the model's minimum of {m}x{m} pixels")
    if tile is None or (h <= tile and w <= tile):
        return np.clip(_call(model, img[None])[0], 0.0, 1.0)
    if tile < m:
        raise ValueError(f"tile must be at least the model's minimum image size {m}, got {tile}")
    message = small_tile_message(model, tile)
    if message is not None:
        warnings.warn(message, TilingWarning, stacklevel=3)  # the caller of deblur_image
    pads = [layer for layer in _layers(model) if isinstance(layer, PadToMultiple)]
    if len(pads) == 1:
        # Tiled as the network sees the whole image (reflect-padded at the bottom and right
        # to its multiple): otherwise the tiles at those borders, unpadded, see another
        # border than the whole-image run and differ there by up to 1/3 of the range.
        img = np.asarray(pads[0](img[None]))[0]
    ph, pw = img.shape[:2]
    th, tw = min(tile, ph), min(tile, pw)
    boxes = [(y, x) for y in _tile_starts(ph, th, th - overlap)
             for x in _tile_starts(pw, tw, tw - overlap)]
    acc = np.zeros((ph, pw, c), np.float32)
    weight = np.zeros((ph, pw, 1), np.float32)
    for i in range(0, len(boxes), batch_size):
        chunk = boxes[i:i + batch_size]
        batch = np.stack([img[y:y + th, x:x + tw] for y, x in chunk])
        out = _call(model, batch)
        for (y, x), o in zip(chunk, out, strict=True):
            wy = _ramp(th, y, y + th, ph, overlap)
            wx = _ramp(tw, x, x + tw, pw, overlap)
            wt = (wy[:, None] * wx[None, :])[..., None]
            acc[y:y + th, x:x + tw] += o * wt
            weight[y:y + th, x:x + tw] += wt
    return np.clip(acc[:h, :w] / weight[:h, :w], 0.0, 1.0)


def _folder_images(folder: str, skip: str | None = None) -> list[tuple[str, str]]:
    """``(path, path relative to folder)`` of the image files under ``folder``, sorted.

    Subfolders are searched; hidden files and folders (a leading dot, such as
    the temporary files of atomic writes) and the folder ``skip`` (a real
    path: the output folder) are left out. Links to folders are not followed.
    """
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")
                   and os.path.realpath(os.path.join(root, d)) != skip]
        for f in files:
            path = os.path.join(root, f)
            if not f.startswith(".") and is_image_file(f) and os.path.isfile(path):
                found.append((path, os.path.relpath(path, folder)))
    return sorted(found, key=lambda item: item[1].split(os.sep))


def list_images(inputs: Sequence[str | os.PathLike]) -> list[str]:
    """Expands files and folders (their image files, subfolders included, sorted) into paths.

    Raises:
        FileNotFoundError: naming an input that does not exist.
        ValueError: when a folder holds no image or a file is not an image type.
    """
    return [src for src, _, _ in _expand_inputs([os.fspath(i) for i in inputs])]


def _expand_inputs(items: list[str], skip: str | None = None) -> list[tuple[str, int, str]]:
    """``(file, index of the input it came from, its name below that input)``, each file once."""
    entries: list[tuple[str, int, str]] = []
    seen: set[tuple[int, int]] = set()
    for i, item in enumerate(items):
        if os.path.isdir(item):
            found = _folder_images(item, skip)
            if not found:
                raise ValueError(f"input folder {item} contains no image files")
        elif os.path.isfile(item):
            if not is_image_file(item):
                raise ValueError(f"input {item} is not an image file (by its extension)")
            found = [(item, os.path.basename(item))]
        else:
            raise FileNotFoundError(f"input {item} does not exist")
        for src, rel in found:
            identity = _identity(src)
            if identity not in seen:  # named twice (or also through its folder): once
                seen.add(identity)
                entries.append((src, i, rel))
    return entries


def _identity(path: str) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_dev, st.st_ino


def _parts(path: str) -> list[str]:
    parts = []
    head, tail = os.path.split(path)
    while tail:
        parts.insert(0, tail)
        head, tail = os.path.split(head)
    return parts


def _folder_targets(entries: list[tuple[str, int, str]], items: list[str], output: str,
                    suffix: str) -> list[tuple[str, str]]:
    """Output paths under ``output``: each input's name, with enough of its path to be unique."""
    # Where a prefix comes from: a folder input's own path, a file input's folder.
    anchors = [_parts(os.path.abspath(item if os.path.isdir(item) else os.path.dirname(
        os.path.abspath(item)))) for item in items]
    depth = [0] * len(items)

    def name(i: int, rel: str) -> str:
        stem, ext = os.path.splitext(rel)
        prefix = anchors[i][len(anchors[i]) - depth[i]:] if depth[i] else []
        return os.path.join(*prefix, stem + suffix + ext)

    while True:
        by_name: dict[str, list[tuple[str, int, str]]] = {}
        for entry in entries:
            by_name.setdefault(os.path.normcase(name(entry[1], entry[2])), []).append(entry)
        clashes = [group for group in by_name.values() if len(group) > 1]
        if not clashes:
            return [(src, os.path.join(output, name(i, rel))) for src, i, rel in entries]
        grow = {i for group in clashes for _, i, _ in group if depth[i] < len(anchors[i])}
        if not grow:
            first = clashes[0]
            raise ValueError(f"inputs {first[0][0]} and {first[1][0]} would both be written to "
                             f"{os.path.join(output, name(first[0][1], first[0][2]))}; "
                             f"deblur them separately")
        for i in grow:
            depth[i] += 1


def plan_outputs(inputs: Iterable[str | os.PathLike], output: str | os.PathLike, *,
                 suffix: str = "", overwrite_inputs: bool = False) -> list[tuple[str, str]]:
    """``(input file, output file)`` for every image to deblur, checked before any work.

    When the inputs hold one image and ``output`` ends with an image extension
    (and is not a folder), that image is written to ``output``. Otherwise
    ``output`` is a folder: a file input goes to ``output/<its name>``, the
    images under a folder input (subfolders included) to ``output/<path below
    that folder>``, with ``suffix`` before the extension. Outputs that would
    share a name get as much of their input's path as makes them unique
    (``a/x.png b/x.png -o out``: ``out/a/x.png``, ``out/b/x.png``). A file
    named twice, or also through its folder, is deblurred once. An output
    folder inside an input folder is not searched for inputs.

    Args:
        inputs: image files and folders of images.
        output: an output file or folder.
        suffix: added before the extension of each output name (folder outputs).
        overwrite_inputs: allow outputs that replace input files.

    Returns:
        The pairs, in order: folder inputs sorted by path below the folder.

    Raises:
        FileNotFoundError: an input that does not exist.
        ValueError: a folder without images, a file that is not an image, an
            output that would replace an input (without ``overwrite_inputs``),
            outputs that cannot be told apart, or ``output`` naming one file for
            several images.
    """
    items = [os.fspath(i) for i in inputs]
    if not items:
        raise ValueError("no inputs given")
    output = os.fspath(output)
    entries = _expand_inputs(items, skip=os.path.realpath(output))
    names_a_file = is_image_file(output) and not os.path.isdir(output)
    if names_a_file and len(entries) == 1:
        pairs = [(entries[0][0], output)]
    elif names_a_file:
        raise ValueError(f"output {output} names one image file, but the inputs hold "
                         f"{len(entries)} images: give an output folder")
    else:
        pairs = _folder_targets(entries, items, output, suffix)
    if not overwrite_inputs:
        inputs_by_identity = {_identity(src): src for src, _, _ in entries}
        for _, target in pairs:
            if os.path.exists(target) and _identity(target) in inputs_by_identity:
                raise ValueError(
                    f"output {target} is the input {inputs_by_identity[_identity(target)]}: "
                    f"refusing to overwrite an input (choose another output or a suffix, or "
                    f"allow it with --overwrite-inputs)")
    return pairs


class DeblurFilesError(ValueError):
    """Some images could not be deblurred; every other one was written.

    Attributes:
        written: the paths written.
        failed: ``(input, message)`` for each image that failed, the message
            naming the file.
    """

    def __init__(self, written: list[str], failed: list[tuple[str, str]], total: int):
        self.written = list(written)
        self.failed = list(failed)
        super().__init__(f"{len(failed)} of {total} image(s) failed: "
                         + "; ".join(message for _, message in failed))


def _naming(path: str, message: str) -> str:
    return message if path in message else f"{path}: {message}"


def _check_writable_folder(folder: str) -> None:
    """Creates ``folder`` if needed and checks that a file can be created in it."""
    try:
        os.makedirs(folder, exist_ok=True)
    except FileExistsError:
        raise ValueError(f"output folder {folder} cannot be created: a file of that name "
                         f"already exists") from None
    except OSError as e:
        raise OSError(e.errno, f"output folder {folder} cannot be created: "
                               f"{(e.strerror or str(e)).lower()}") from None
    try:
        fd, probe = tempfile.mkstemp(prefix=".tfdeblur-write-check-", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise OSError(e.errno, f"cannot write to output folder {folder}: "
                               f"{(e.strerror or str(e)).lower()}") from None


def deblur_files(model: keras.Model, inputs: Iterable[str | os.PathLike],
                 output: str | os.PathLike, *, tile: int | None = None,
                 overlap: int | None = None,
                 batch_size: int = 4, self_ensemble: bool = False, suffix: str = "",
                 progress: bool = True, overwrite_inputs: bool = False) -> list[str]:
    """Deblurs image files into a folder (or one file), with a progress bar.

    Outputs are named as :func:`plan_outputs` says and keep what the input
    holds: bit depth (16-bit PNG / TIFF in, 16-bit out), alpha (unchanged)
    and grey (see :func:`deblur_image`). An image that cannot be read or
    deblurred does not stop the others: they are all tried, then
    :class:`DeblurFilesError` names each failure.

    Args:
        model: the deblurring model.
        inputs: image files or folders of images.
        output: an output folder (created), or a file path when there is one image.
        tile, overlap, batch_size, self_ensemble: as :func:`deblur_image`.
        suffix: added before the extension of each output name.
        progress: show a progress bar on stderr.
        overwrite_inputs: allow outputs that replace input files.

    Returns:
        The paths written (each written atomically).

    Raises:
        FileNotFoundError, ValueError: before any work, as :func:`plan_outputs`;
            an output folder that cannot be created or written to (OSError).
        DeblurFilesError: after the others were written, naming the images that
            failed; writing stops at the first output that cannot be written.
    """
    self_ensemble = checks.check_bool(self_ensemble, "self_ensemble")
    output = os.fspath(output)
    pairs = plan_outputs(inputs, output, suffix=suffix, overwrite_inputs=overwrite_inputs)
    single_file = len(pairs) == 1 and pairs[0][1] == output
    _check_writable_folder(os.path.dirname(os.path.abspath(output)) if single_file else output)
    written: list[str] = []
    failed: list[tuple[str, str]] = []
    with ProgressBar(len(pairs), "deblur", enabled=progress) as bar:
        for src, target in pairs:
            ext = os.path.splitext(target)[1].lower()
            try:
                stored = read_image(src, as_stored=True)
                if stored.ndim == 3 and stored.shape[2] == 4 and ext in (".jpg", ".jpeg"):
                    raise ValueError(f"it has an alpha channel, which the JPEG output {target} "
                                     f"cannot hold: name the output .png")
                result = deblur_image(model, stored, tile=tile, overlap=overlap,
                                      batch_size=batch_size, self_ensemble=self_ensemble)
            except (ValueError, OSError, tf.errors.OpError) as e:
                failed.append((src, _naming(src, user_message(e))))
                bar.update()
                continue
            depth = 16 if stored.dtype == np.uint16 and ext in (".png", ".tif", ".tiff") else 8
            try:
                os.makedirs(os.path.dirname(os.path.abspath(target)), exist_ok=True)
                write_image(target, result, bit_depth=depth)
            except (ValueError, OSError) as e:
                failed.append((src, _naming(target, user_message(e))))
                break
            written.append(target)
            bar.update()
    if failed:
        raise DeblurFilesError(written, failed, len(pairs))
    return written
