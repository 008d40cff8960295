"""Scoring a model on a paired dataset: mean PSNR / SSIM of its output and of the blurry input.

``tfdeblur evaluate -m MODEL DATA`` and :func:`evaluate` deblur every pair of
any dataset :func:`~tfdeblur.data.paired_dataset` reads (GoPro, flat folders,
a pair list, prepared TFRecords) as whole images, or as tiles with ``tile``
(the tiling of :func:`~tfdeblur.inference.deblur_image`), and average the
per-image values of :func:`tfdeblur.metrics.psnr` / :func:`~tfdeblur.metrics.ssim`
with their conventions (data range 1, RGB, no border crop unless asked; the
output clipped to [0, 1] as inference returns it), in float64.
"""

from __future__ import annotations

import csv as csv_lib
import dataclasses
import io
import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import keras

CSV_COLUMNS = ("image", "psnr", "ssim", "blurry_psnr", "blurry_ssim")


@dataclasses.dataclass
class EvaluationResult:
    """What :func:`evaluate` measured.

    Attributes:
        model: which model (a bundled name, a file, or the given ``keras.Model``).
        data: the dataset root.
        images: number of pairs scored.
        psnr, ssim: means over the images of the model's output (dB, SSIM).
        blurry_psnr, blurry_ssim: the same of the blurry input itself.
        rows: one dict per image, keys :data:`CSV_COLUMNS`.
    """

    model: str
    data: str
    images: int
    psnr: float
    ssim: float
    blurry_psnr: float
    blurry_ssim: float
    rows: list[dict]

    def summary(self) -> str:
        """The table ``tfdeblur evaluate`` prints."""
        lines = [f"{self.images} images of {self.data}",
                 f"{'':8s} {'PSNR dB':>9s} {'SSIM':>8s}",
                 f"{'model':8s} {self.psnr:9.3f} {self.ssim:8.4f}",
                 f"{'blurry':8s} {self.blurry_psnr:9.3f} {self.blurry_ssim:8.4f}",
                 f"{'gain':8s} {self.psnr - self.blurry_psnr:+9.3f} "
                 f"{self.ssim - self.blurry_ssim:+8.4f}"]
        return "\n".join(lines)


def pair_names(root: str | os.PathLike, *, layout: str = "auto", split: str | None = None,
               blur_dir: str = "blur") -> list[str]:
    """The name of each pair, in the order ``paired_dataset`` yields them unshuffled: the
    blurry image's path relative to the dataset root (to the list file's folder)."""
    from tfdeblur.data.io import _fspath
    from tfdeblur.data.paired import detect_layout, find_pairs
    from tfdeblur.data.tfrecord import read_manifest

    root = _fspath(root)
    if layout == "auto" and os.path.isdir(root):
        layout = detect_layout(root, blur_dir)
    if layout == "tfrecord":
        return list(read_manifest(root)["names"])
    base = root if os.path.isdir(root) else os.path.dirname(os.path.abspath(root))
    return [os.path.relpath(p.blurry, base)
            for p in find_pairs(root, layout=layout, split=split, blur_dir=blur_dir)]


def _mean(values: list[float]) -> float:
    return float(sum(values) / len(values)) if values else float("nan")


def _write_csv(path: str, rows: list[dict]) -> None:
    from tfdeblur.data.io import atomic_write_bytes

    buf = io.StringIO()
    writer = csv_lib.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (row[k] if k == "image" else f"{row[k]:.6f}") for k in CSV_COLUMNS})
    atomic_write_bytes(path, buf.getvalue().encode())


def evaluate(model: str | os.PathLike | keras.Model, data: str | os.PathLike, *,
             layout: str = "auto", split: str | None = None, blur_dir: str = "blur",
             tile: int | None = None, overlap: int | None = None, batch_size: int = 4,
             self_ensemble: bool = False, limit: int | None = None, crop_border: int = 0,
             y_channel: bool = False,
             csv: str | os.PathLike | None = None, progress: bool = True) -> EvaluationResult:
    """Mean PSNR / SSIM of ``model`` on the pairs of ``data``, and of the blurry inputs.

    Args:
        model: a bundled model name (``tfdeblur models``), a ``.keras`` file,
            or a ``keras.Model``.
        data: a dataset :func:`~tfdeblur.data.paired_dataset` reads (folder,
            pair list, or prepared TFRecord folder).
        layout, split, blur_dir: as for ``paired_dataset``.
        tile, overlap, batch_size: deblur as overlapping tiles (see
            :func:`~tfdeblur.inference.deblur_image`); None: whole images.
        self_ensemble: score the mean over each image's 8 orientations (8x the
            time; see :func:`~tfdeblur.inference.deblur_image`).
        limit: score the first ``limit`` pairs only.
        crop_border, y_channel: metric conventions (see :mod:`tfdeblur.metrics`).
        csv: also write one row per image (columns :data:`CSV_COLUMNS`),
            atomically.
        progress: a progress bar on stderr.

    Returns:
        An :class:`EvaluationResult`.

    Raises:
        ValueError / FileNotFoundError: a bad dataset, model or argument, named.

    Example:
        >>> r = tfdeblur.evaluate("lmfn_bundled", "GOPRO_Large/test", csv="scores.csv")
        >>> r.psnr, r.blurry_psnr
    """
    import numpy as np

    from tfdeblur import _validation as checks
    from tfdeblur import metrics
    from tfdeblur._api import resolve_model
    from tfdeblur.data.io import _fspath
    from tfdeblur.data.paired import paired_dataset
    from tfdeblur.data.progress import ProgressBar
    from tfdeblur.inference import deblur_image

    limit = checks.check_int(limit, "limit", allow_none=True)
    self_ensemble = checks.check_bool(self_ensemble, "self_ensemble")
    data = _fspath(data)
    names = pair_names(data, layout=layout, split=split, blur_dir=blur_dir)
    ds = paired_dataset(data, layout=layout, split=split, blur_dir=blur_dir, progress=False)
    if limit is not None:
        names = names[:limit]
        ds = ds.take(limit)
    net, description = resolve_model(model)
    options = {"crop_border": crop_border, "y_channel": y_channel}
    rows: list[dict] = []
    with ProgressBar(len(names), "evaluate", enabled=progress) as bar:
        for name, (blurry, sharp) in zip(names, ds.as_numpy_iterator(), strict=True):
            out = deblur_image(net, blurry, tile=tile, overlap=overlap, batch_size=batch_size,
                               self_ensemble=self_ensemble)
            s, b, o = (x.astype(np.float64) for x in (sharp, blurry, out))
            rows.append({"image": name,
                         "psnr": float(metrics.psnr(s, o, **options)),
                         "ssim": float(metrics.ssim(s, o, **options)),
                         "blurry_psnr": float(metrics.psnr(s, b, **options)),
                         "blurry_ssim": float(metrics.ssim(s, b, **options))})
            bar.update()
    if csv is not None:
        _write_csv(_fspath(csv), rows)
    means = {k: _mean([r[k] for r in rows]) for k in CSV_COLUMNS[1:]}
    return EvaluationResult(model=description, data=data, images=len(rows), rows=rows,
                            **means)


__all__ = ["CSV_COLUMNS", "EvaluationResult", "evaluate", "pair_names"]
