"""Running a trained deblurring model on images: whole, tiled, or over many files.

The networks pad to their own multiple and crop back, so any image size works
whole. Large images can be processed as overlapping tiles (bounded memory):
each tile's output is blended with weights that fall off linearly across the
overlap, so no seam shows; a pointwise network gives exactly the whole-image
result, and a network with a receptive field of radius r differs from it only
within r pixels of the tile borders inside the overlaps.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence

import keras
import numpy as np

from tfdeblur.data.io import is_image_file, read_image, write_image
from tfdeblur.data.progress import ProgressBar


def load_model(path: str | os.PathLike) -> keras.Model:
    """Loads a ``.keras`` deblurring model saved by this package (or a compatible one).

    Raises:
        FileNotFoundError: naming ``path`` when it does not exist.
        ValueError: naming ``path`` when it is not a loadable Keras model.
    """
    import tfdeblur.layers  # noqa: F401 - registers the package's layers
    import tfdeblur.models

    tfdeblur.models.available()  # imports every network module: registers their layers

    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"model file {path} does not exist")
    try:
        return keras.models.load_model(path, compile=False)
    except Exception as e:  # noqa: BLE001 - Keras raises many types for bad files
        raise ValueError(f"model file {path} could not be loaded: {e}") from e


def _check_image(image: np.ndarray, name: str = "image") -> np.ndarray:
    img = np.asarray(image)
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"{name} must be an RGB array [H, W, 3], got shape {img.shape}")
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


def _first_output(y):
    # SVDN built with return_positions=True returns (image, positions).
    return y[0] if isinstance(y, (list, tuple)) else y


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
                 overlap: int = 32, batch_size: int = 4) -> np.ndarray:
    """Deblurs one RGB image.

    Args:
        model: a deblurring ``keras.Model`` taking ``[N, H, W, 3]`` in [0, 1].
        image: ``[H, W, 3]`` uint8, uint16 or float in [0, 1].
        tile: process as overlapping ``tile x tile`` tiles (None: whole image).
        overlap: pixels shared by neighbouring tiles (blended linearly).
        batch_size: tiles per model call.

    Returns:
        float32 ``[H, W, 3]`` in [0, 1] (clipped).

    Raises:
        ValueError: a bad ``image`` (shape, dtype, NaN, range) or tile settings.
    """
    img = _check_image(image)
    h, w, _ = img.shape
    if tile is None or (h <= tile and w <= tile):
        out = _first_output(model(img[None], training=False))
        return np.clip(np.asarray(out)[0], 0.0, 1.0)
    if tile < 1 or overlap < 0 or 2 * overlap >= tile:
        raise ValueError(f"tile must be > 2 * overlap >= 0, got tile={tile}, overlap={overlap}")
    th, tw = min(tile, h), min(tile, w)
    boxes = [(y, x) for y in _tile_starts(h, th, th - overlap)
             for x in _tile_starts(w, tw, tw - overlap)]
    acc = np.zeros((h, w, 3), np.float32)
    weight = np.zeros((h, w, 1), np.float32)
    for i in range(0, len(boxes), batch_size):
        chunk = boxes[i:i + batch_size]
        batch = np.stack([img[y:y + th, x:x + tw] for y, x in chunk])
        out = np.asarray(_first_output(model(batch, training=False)))
        for (y, x), o in zip(chunk, out, strict=True):
            wy = _ramp(th, y, y + th, h, overlap)
            wx = _ramp(tw, x, x + tw, w, overlap)
            wt = (wy[:, None] * wx[None, :])[..., None]
            acc[y:y + th, x:x + tw] += o * wt
            weight[y:y + th, x:x + tw] += wt
    return np.clip(acc / weight, 0.0, 1.0)


def list_images(inputs: Sequence[str | os.PathLike]) -> list[str]:
    """Expands files and folders (their image files, sorted) into a list of paths.

    Raises:
        FileNotFoundError: naming an input that does not exist.
        ValueError: when a folder holds no image or a file is not an image type.
    """
    paths: list[str] = []
    for item in inputs:
        item = os.fspath(item)
        if os.path.isdir(item):
            found = sorted(os.path.join(item, f) for f in os.listdir(item)
                           if is_image_file(f) and os.path.isfile(os.path.join(item, f)))
            if not found:
                raise ValueError(f"input folder {item} contains no image files")
            paths.extend(found)
        elif os.path.isfile(item):
            if not is_image_file(item):
                raise ValueError(f"input {item} is not an image file (by its extension)")
            paths.append(item)
        else:
            raise FileNotFoundError(f"input {item} does not exist")
    return paths


def deblur_files(model: keras.Model, inputs: Iterable[str], output: str, *,
                 tile: int | None = None, overlap: int = 32, batch_size: int = 4,
                 suffix: str = "", progress: bool = True) -> list[str]:
    """Deblurs image files into a folder (or one file), with a progress bar.

    Args:
        model: the deblurring model.
        inputs: image files or folders of images.
        output: an output folder (created), or a file path when there is one input.
        tile, overlap, batch_size: as :func:`deblur_image`.
        suffix: added before the extension of each output name.
        progress: show a progress bar on stderr.

    Returns:
        The paths written (each written atomically).
    """
    paths = list_images(list(inputs))
    single_file = (len(paths) == 1 and os.path.splitext(output)[1] != ""
                   and not os.path.isdir(output))
    if not single_file:
        os.makedirs(output, exist_ok=True)
    written = []
    with ProgressBar(len(paths), "deblur", enabled=progress) as bar:
        for path in paths:
            result = deblur_image(model, read_image(path), tile=tile, overlap=overlap,
                                  batch_size=batch_size)
            if single_file:
                target = output
            else:
                stem, ext = os.path.splitext(os.path.basename(path))
                target = os.path.join(output, f"{stem}{suffix}{ext if ext else '.png'}")
            write_image(target, result)
            written.append(target)
            bar.update()
    return written
