"""Image quality metrics: PSNR and SSIM, as functions and as Keras metrics.

Conventions (stated because published numbers differ by them):

- Images are ``[H, W, C]`` or ``[N, H, W, C]`` with C = 1 or 3 (RGB); a
  batch gives one value per image, and the Keras metrics average those
  per-image values (the mean PSNR over a test set, as the papers report),
  not the PSNR of the mean error.
- ``data_range`` is the span of valid values: 1.0 for float images in
  [0, 1] (the package's convention), 255 for uint8. Integer images are
  accepted only with ``data_range`` equal to their type's maximum, and a
  float image is never rescaled: no guessing from the values.
- ``crop_border`` pixels are removed from each side before anything else
  (super-resolution style evaluation; 0 for the deblurring benchmarks).
- ``y_channel=True`` compares the luma of RGB images, ITU-R BT.601 as
  MATLAB's ``rgb2ycbcr``: ``Y = 16 + (65.481 R + 128.553 G + 24.966 B)``
  on the [0, 1] scale divided by 255 (Y in [16/255, 235/255] of the range),
  without rounding.
- PSNR = ``10 log10(data_range^2 / MSE)`` over all pixels and channels of
  an image; identical images give ``inf``.
- SSIM as Wang, Bovik, Sheikh, Simoncelli (IEEE TIP 2004) and their
  ``ssim_index.m``: 11x11 Gaussian window with sigma 1.5 (normalised to sum
  1), K1 = 0.01, K2 = 0.03, ``C1 = (K1 L)^2``, ``C2 = (K2 L)^2`` with L =
  ``data_range``, local statistics over the valid positions only (no
  padding), the SSIM map averaged over positions and then over channels;
  no automatic downsampling (the 2009 ``ssim.m`` downsamples large images,
  this does not). Images need at least 11x11 pixels after the crop.
- Computation in float64 for float64 or integer inputs, otherwise in
  float32; the result has that dtype.

NaN/Inf values raise ``InvalidArgumentError`` naming the argument; shape,
rank, dtype and argument errors raise ``ValueError`` (or
``InvalidArgumentError`` for shapes only known at run time).
"""

from __future__ import annotations

import math
import numbers

import keras
import numpy as np
import tensorflow as tf

from tfdeblur import _validation as checks

__all__ = ["PSNR", "SSIM", "gaussian_window", "psnr", "rgb_to_y", "ssim"]

#: BT.601 luma weights on the [0, 1] scale, and the offset (MATLAB ``rgb2ycbcr``).
Y_WEIGHTS = (65.481 / 255.0, 128.553 / 255.0, 24.966 / 255.0)
Y_OFFSET = 16.0 / 255.0
#: SSIM window and constants (Wang et al. 2004).
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03


def gaussian_window(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> np.ndarray:
    """The 1-D Gaussian of the SSIM window (the 2-D window is its outer product), float64.

    Same as MATLAB's ``fspecial('gaussian', size, sigma)`` (which is separable).
    """
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    g = np.exp(-(x * x) / (2.0 * sigma * sigma))
    return g / g.sum()


def _check_options(data_range, crop_border, y_channel, owner: str):
    if (isinstance(data_range, bool) or not isinstance(data_range, numbers.Real)
            or not math.isfinite(data_range) or data_range <= 0):
        raise ValueError(f"{owner}: data_range must be a finite number > 0, got {data_range!r}")
    return (float(data_range), checks.check_int(crop_border, "crop_border", minimum=0, owner=owner),
            checks.check_bool(y_channel, "y_channel", owner=owner))


def _to_tensor(value, name: str, data_range: float, owner: str) -> tf.Tensor:
    if isinstance(value, (tf.Tensor, tf.Variable)):
        t = tf.convert_to_tensor(value)
    else:
        try:
            t = tf.convert_to_tensor(np.asarray(value))
        except (TypeError, ValueError) as e:
            raise ValueError(f"{owner}: {name} must be an image array or tensor: {e}") from None
    if t.dtype.is_integer:
        maximum = np.iinfo(t.dtype.as_numpy_dtype).max
        if data_range != maximum:
            raise ValueError(f"{owner}: {name} is {t.dtype.name}, so data_range must be its "
                             f"maximum {maximum}, got {data_range:g} (for images in [0, 1], "
                             f"convert them to float first)")
    elif not t.dtype.is_floating:
        raise ValueError(f"{owner}: {name} must be a float or integer image, got {t.dtype.name}")
    return t


def _prepare(a, b, data_range, crop_border, y_channel, owner: str, min_size: int = 1):
    """Checked float ``[N, H, W, C]`` pair (cropped, Y if asked), and whether it was batched."""
    data_range, crop_border, y_channel = _check_options(data_range, crop_border, y_channel,
                                                        owner)
    a = _to_tensor(a, "a", data_range, owner)
    b = _to_tensor(b, "b", data_range, owner)
    if a.dtype.is_integer != b.dtype.is_integer:
        raise ValueError(f"{owner}: a and b must both be float or both be integer images, got "
                         f"{a.dtype.name} and {b.dtype.name}")
    for t, name in ((a, "a"), (b, "b")):
        if t.shape.rank is not None and t.shape.rank not in (3, 4):
            raise ValueError(f"{owner}: {name} must be an image [H, W, C] or a batch "
                             f"[N, H, W, C], got shape {t.shape}")
    deps = checks.same_shape(a, b, "a", "b", owner)
    batched = a.shape.rank == 4
    wide = tf.float64 in (a.dtype, b.dtype) or a.dtype.is_integer
    dtype = tf.float64 if wide else tf.float32
    a, b = tf.cast(a, dtype), tf.cast(b, dtype)
    if not batched:
        a, b = a[None], b[None]
    channels = a.shape[-1]
    if channels is not None and channels not in (1, 3):
        raise ValueError(f"{owner}: images must have 1 or 3 channels (last axis), got shape "
                         f"{a.shape[1:]}")
    if y_channel and channels != 3:
        raise ValueError(f"{owner}: y_channel=True needs RGB images (3 channels, known "
                         f"statically), got shape {a.shape[1:]}")
    need = 2 * crop_border + min_size
    what = (f"at least {need} pixels per side ({min_size} after crop_border={crop_border} on "
            "each side)")
    for axis, side in ((1, "height"), (2, "width")):
        size = a.shape[axis]
        if size is not None and size < need:
            raise ValueError(f"{owner}: images need {what}, got {side} {size} (shape "
                             f"{a.shape[1:]})")
    if not a.shape[1:3].is_fully_defined():
        deps.append(tf.debugging.assert_greater_equal(
            tf.reduce_min(tf.shape(a)[1:3]), need, message=f"{owner}: images need {what}"))
    with tf.control_dependencies(deps):
        a = checks.assert_finite(a, "a", owner)
        b = checks.assert_finite(b, "b", owner)
    if crop_border:
        a = a[:, crop_border:-crop_border, crop_border:-crop_border]
        b = b[:, crop_border:-crop_border, crop_border:-crop_border]
    if y_channel:
        a, b = rgb_to_y(a, data_range), rgb_to_y(b, data_range)
    return a, b, batched, data_range


def rgb_to_y(images, data_range: float = 1.0) -> tf.Tensor:
    """BT.601 luma of RGB images (MATLAB ``rgb2ycbcr``'s Y), on the same scale.

    Args:
        images: float ``[..., 3]`` RGB in ``[0, data_range]``.
        data_range: the images' range (1.0 or 255).

    Returns:
        ``[..., 1]``: ``data_range * (16 + 65.481 r + 128.553 g + 24.966 b) / 255``
        with ``r, g, b = RGB / data_range``, not rounded.
    """
    images = tf.convert_to_tensor(images)
    w = tf.constant(Y_WEIGHTS, images.dtype)
    return tf.reduce_sum(images * w, axis=-1, keepdims=True) + Y_OFFSET * data_range


def psnr(a, b, data_range: float = 1.0, crop_border: int = 0,
         y_channel: bool = False) -> tf.Tensor:
    """Peak signal-to-noise ratio in dB, ``10 log10(data_range^2 / MSE)``.

    Conventions: module docstring (per image over all pixels and channels;
    identical images give ``inf``).

    Args:
        a, b: images ``[H, W, C]`` or batches ``[N, H, W, C]`` of one shape
            (order does not matter), float (any range; see ``data_range``) or
            integer with ``data_range`` its maximum.
        data_range: span of the valid values (1.0 for [0, 1], 255 for uint8).
        crop_border: pixels removed from each side first.
        y_channel: compare BT.601 luma (RGB input).

    Returns:
        A scalar for one image, ``[N]`` for a batch (float64 for float64 or
        integer input, else float32).

    Example:
        >>> psnr(sharp, np.clip(sharp + 0.1, -1, 2))      # a 0.1 offset: 20 dB
    """
    a, b, batched, data_range = _prepare(a, b, data_range, crop_border, y_channel, "psnr")
    mse = tf.reduce_mean(tf.square(a - b), axis=[1, 2, 3])
    peak = tf.constant(data_range * data_range, mse.dtype)
    # log10 of the ratio (not of each part) keeps data_range^2 / 0 = inf exact.
    value = 10.0 * tf.math.log(peak / mse) / tf.constant(math.log(10.0), mse.dtype)
    return value if batched else value[0]


def _filter_valid(x: tf.Tensor, window: tf.Tensor) -> tf.Tensor:
    """Separable Gaussian filtering of ``[M, H, W, 1]`` maps, valid positions only."""
    k = window.shape[0]
    x = tf.nn.conv2d(x, tf.reshape(window, [k, 1, 1, 1]), 1, "VALID")
    return tf.nn.conv2d(x, tf.reshape(window, [1, k, 1, 1]), 1, "VALID")


def ssim(a, b, data_range: float = 1.0, crop_border: int = 0,
         y_channel: bool = False) -> tf.Tensor:
    """Structural similarity (Wang et al. 2004), Gaussian 11x11 window, sigma 1.5.

    Conventions: module docstring (valid positions only, mean over the map
    and then the channels, no downsampling; identical images give 1).

    Args:
        a, b: images ``[H, W, C]`` or batches ``[N, H, W, C]`` of one shape,
            at least 11x11 after ``crop_border``.
        data_range: span of the valid values; sets C1 and C2.
        crop_border: pixels removed from each side first.
        y_channel: compare BT.601 luma (RGB input).

    Returns:
        A scalar for one image, ``[N]`` for a batch.

    Example:
        >>> ssim(sharp, deblurred, y_channel=True)
    """
    a, b, batched, data_range = _prepare(a, b, data_range, crop_border, y_channel, "ssim",
                                         min_size=SSIM_WINDOW)
    dtype = a.dtype
    window = tf.constant(gaussian_window(), dtype)
    s = tf.shape(a)
    n, c = s[0], s[3]
    # Channels to the batch axis: one single-channel filter serves every map.
    def maps(x):
        return tf.reshape(tf.transpose(x, [0, 3, 1, 2]), tf.stack([n * c, s[1], s[2], 1]))

    x, y = maps(a), maps(b)
    stats = _filter_valid(tf.concat([x, y, x * x, y * y, x * y], axis=0), window)
    mx, my, xx, yy, xy = tf.split(stats, 5, axis=0)
    c1 = tf.constant((SSIM_K1 * data_range) ** 2, dtype)
    c2 = tf.constant((SSIM_K2 * data_range) ** 2, dtype)
    vx, vy, cov = xx - mx * mx, yy - my * my, xy - mx * my
    ssim_map = ((2.0 * mx * my + c1) * (2.0 * cov + c2)) / (
        (mx * mx + my * my + c1) * (vx + vy + c2))
    per_map = tf.reduce_mean(ssim_map, axis=[1, 2, 3])
    value = tf.reduce_mean(tf.reshape(per_map, tf.stack([n, c])), axis=1)
    return value if batched else value[0]


class _ImageMetric(keras.metrics.Metric):
    """Mean of a per-image metric over every image seen, optionally weighted."""

    _fn = None

    def __init__(self, data_range: float = 1.0, crop_border: int = 0, y_channel: bool = False,
                 name: str | None = None, dtype=None):
        super().__init__(name=name, dtype=dtype)
        owner = type(self).__name__
        self.data_range, self.crop_border, self.y_channel = _check_options(
            data_range, crop_border, y_channel, owner)
        self.total = self.add_variable(shape=(), initializer="zeros", name="total",
                                       dtype=self.dtype)
        self.count = self.add_variable(shape=(), initializer="zeros", name="count",
                                       dtype=self.dtype)

    def update_state(self, y_true, y_pred, sample_weight=None):
        values = type(self)._fn(y_true, y_pred, self.data_range, self.crop_border,
                                self.y_channel)
        values = tf.reshape(tf.cast(values, self.dtype), [-1])
        if sample_weight is None:
            weights = tf.ones_like(values)
        else:
            weights = tf.cast(tf.convert_to_tensor(sample_weight), self.dtype)
            checks.check_rank(weights, 1, "sample_weight", "[N]", type(self).__name__)
            weights = tf.broadcast_to(weights, tf.shape(values))
        self.total.assign_add(tf.reduce_sum(values * weights))
        self.count.assign_add(tf.reduce_sum(weights))

    def result(self):
        return tf.math.divide_no_nan(self.total, self.count)

    def get_config(self) -> dict:
        return {**super().get_config(), "data_range": self.data_range,
                "crop_border": self.crop_border, "y_channel": self.y_channel}


@keras.saving.register_keras_serializable(package="tfdeblur")
class PSNR(_ImageMetric):
    """Mean per-image PSNR (dB) over everything seen, for ``model.compile(metrics=...)``.

    Each image's value is :func:`psnr` (its conventions in the module
    docstring); the result is their mean, weighted by ``sample_weight`` when
    given. An image identical to its target has PSNR ``inf``, which makes the
    mean ``inf``, as it should.

    Args:
        data_range, crop_border, y_channel: as for :func:`psnr`.
        name, dtype: as for ``keras.metrics.Metric``.

    Input: ``y_true``, ``y_pred``: ``[N, H, W, C]`` of one shape.
    Output: scalar.

    Example:
        >>> model.compile(optimizer="adam", loss="mse", metrics=[PSNR(), SSIM()])
    """

    _fn = staticmethod(psnr)

    def __init__(self, data_range: float = 1.0, crop_border: int = 0, y_channel: bool = False,
                 name: str = "psnr", dtype=None):
        super().__init__(data_range, crop_border, y_channel, name=name, dtype=dtype)


@keras.saving.register_keras_serializable(package="tfdeblur")
class SSIM(_ImageMetric):
    """Mean per-image SSIM over everything seen, for ``model.compile(metrics=...)``.

    Each image's value is :func:`ssim` (Gaussian 11x11, sigma 1.5, Wang et
    al. 2004; conventions in the module docstring); the result is their mean,
    weighted by ``sample_weight`` when given.

    Args:
        data_range, crop_border, y_channel: as for :func:`ssim`.
        name, dtype: as for ``keras.metrics.Metric``.

    Input: ``y_true``, ``y_pred``: ``[N, H, W, C]`` of one shape, at least
    11x11 after the crop.
    Output: scalar.

    Example:
        >>> model.compile(optimizer="adam", loss="mse", metrics=[SSIM(y_channel=True)])
    """

    _fn = staticmethod(ssim)

    def __init__(self, data_range: float = 1.0, crop_border: int = 0, y_channel: bool = False,
                 name: str = "ssim", dtype=None):
        super().__init__(data_range, crop_border, y_channel, name=name, dtype=dtype)
