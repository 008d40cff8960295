"""``tfdeblur demo``: the bundled real blurry photo, deblurred by a bundled model.

:func:`run` deblurs the photo (or another image) and writes ``deblurred.png``
and ``side_by_side.png`` (:func:`side_by_side`: blurry | deblurred, and the
same zoomed crop of both underneath, labelled).
"""

from __future__ import annotations

import dataclasses
import os
import time

import cv2
import numpy as np

from tfdeblur import _validation as checks
from tfdeblur import pretrained

_YELLOW = (255, 215, 0)


@dataclasses.dataclass(frozen=True)
class DemoResult:
    """What :func:`run` did: the model used, the files written, the times in seconds."""

    model: str
    input: str
    deblurred: str
    side_by_side: str
    load_seconds: float
    inference_seconds: float
    size: tuple[int, int]


def detail_crop(image: np.ndarray, size: tuple[int, int]) -> tuple[int, int]:
    """Top-left corner ``(y, x)`` of the ``size`` window with the most gradient energy.

    The window is chosen on the blurry input, so every model is shown on the same crop.
    """
    grey = np.asarray(image, np.float64).mean(axis=2)
    energy = np.zeros_like(grey)
    energy[:, 1:] += np.abs(np.diff(grey, axis=1))
    energy[1:, :] += np.abs(np.diff(grey, axis=0))
    integral = np.pad(energy.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    ch, cw = size
    sums = (integral[ch:, cw:] - integral[:-ch, cw:] - integral[ch:, :-cw]
            + integral[:-ch, :-cw])
    y, x = np.unravel_index(int(np.argmax(sums)), sums.shape)
    return int(y), int(x)


def _label(band: np.ndarray, text: str) -> None:
    height = band.shape[0]
    scale = 0.55 * height / 22.0  # Hershey simplex capitals are ~22 px tall at scale 1
    thickness = max(1, round(scale * 1.5))
    cv2.putText(band, text, (max(2, height // 4), round(height * 0.75)),
                cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), thickness, cv2.LINE_AA)


def side_by_side(blurry: np.ndarray, deblurred: np.ndarray, *,
                 labels: tuple[str, str] = ("blurry", "deblurred"), zoom: int = 3) -> np.ndarray:
    """Blurry | deblurred, with the same zoomed crop of both underneath, each panel labelled.

    Layout: two rows of two ``H x W`` panels, each under a black label band of
    ``max(16, W // 40)`` pixels, the columns parted by a white divider of
    ``max(2, W // 320)`` pixels: ``[2 * (band + H), 2 * W + divider, 3]``. The
    bottom row is the ``H // zoom x W // zoom`` window of most detail
    (:func:`detail_crop`) enlarged to ``H x W`` without smoothing (nearest
    neighbour, so pixels are shown as they are); the window is outlined in the top row.

    Args:
        blurry, deblurred: ``[H, W, 3]`` float in [0, 1] (or uint8), the same shape.
        labels: the top panels' captions.
        zoom: the enlargement of the crop, >= 1.

    Returns:
        uint8 ``[2 * (band + H), 2 * W + divider, 3]``, RGB.
    """
    a, b = (_to_uint8(x, n) for x, n in ((blurry, "blurry"), (deblurred, "deblurred")))
    if a.shape != b.shape:
        raise ValueError(f"blurry and deblurred must have the same shape, got {a.shape} and "
                         f"{b.shape}")
    checks.check_int(zoom, "zoom")
    h, w, _ = a.shape
    band, divider = max(16, w // 40), max(2, w // 320)
    ch, cw = max(1, h // zoom), max(1, w // zoom)
    y, x = detail_crop(a, (ch, cw))
    canvas = np.zeros((2 * (band + h), 2 * w + divider, 3), np.uint8)
    canvas[:, w:w + divider] = 255
    captions = (*labels, f"{labels[0]}, crop x{zoom}", f"{labels[1]}, crop x{zoom}")
    for col, img in enumerate((a, b)):
        left = col * (w + divider)
        top = img.copy()
        cv2.rectangle(top, (x, y), (x + cw - 1, y + ch - 1), _YELLOW, max(1, w // 640))
        crop = cv2.resize(img[y:y + ch, x:x + cw], (w, h), interpolation=cv2.INTER_NEAREST)
        for row, panel in enumerate((top, crop)):
            y0 = row * (band + h)
            label_band = canvas[y0:y0 + band, left:left + w]
            _label(label_band, captions[2 * row + col])
            canvas[y0 + band:y0 + band + h, left:left + w] = panel
    return canvas


def _to_uint8(image: np.ndarray, name: str) -> np.ndarray:
    img = np.asarray(image)
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"{name} must be an RGB array [H, W, 3], got shape {img.shape}")
    if img.dtype == np.uint8:
        return img
    return np.rint(np.clip(img.astype(np.float32), 0.0, 1.0) * 255.0).astype(np.uint8)


def run(model=None, output_dir: str | os.PathLike = "demo_output", *,
        input_path: str | os.PathLike | None = None, tile: int | None = None,
        directory: str | os.PathLike | None = None) -> DemoResult:
    """Deblurs the bundled photo (or ``input_path``) and writes the two demo images.

    Args:
        model: None (the best bundled model), a bundled name, a ``.keras`` path.
        output_dir: created if needed; receives ``deblurred.png`` and ``side_by_side.png``.
        input_path: another image instead of the bundled photo.
        tile: process as overlapping tiles of this size (bounded memory).
        directory: the bundled-model folder (default: ``$TFDEBLUR_PRETRAINED_DIR``, else
            the package's).

    Raises:
        tfdeblur.pretrained.PretrainedError: no model is bundled (and ``model`` is None), or
            an unknown name; FileNotFoundError / ValueError for bad files.
    """
    if model is None:
        model = pretrained.best(directory)  # before TensorFlow is imported: fails fast

    from tfdeblur._api import resolve_model
    from tfdeblur.data.io import read_image, write_image
    from tfdeblur.inference import deblur_image

    source = os.fspath(input_path) if input_path is not None else pretrained.demo_image_path()
    blurry = read_image(source)
    start = time.perf_counter()
    net, description = resolve_model(model, directory=directory)
    loaded = time.perf_counter()
    sharp = deblur_image(net, blurry, tile=tile)
    done = time.perf_counter()

    os.makedirs(output_dir, exist_ok=True)
    deblurred_path = os.path.join(output_dir, "deblurred.png")
    panel_path = os.path.join(output_dir, "side_by_side.png")
    write_image(deblurred_path, sharp)
    short = os.path.splitext(os.path.basename(os.fspath(model)))[0]
    write_image(panel_path, side_by_side(blurry, sharp, labels=("blurry (input)",
                                                                 f"deblurred: {short}")))
    return DemoResult(model=description, input=source, deblurred=deblurred_path,
                      side_by_side=panel_path, load_seconds=loaded - start,
                      inference_seconds=done - loaded, size=blurry.shape[:2])
