"""Training losses of the three networks, as Keras 3 losses.

- :class:`PixelLoss`: the L2 pixel loss of all three papers (SVRNN sec. 3.3,
  SVDN eq. 8, LMFN eq. 4), with its normalisation stated.
- :class:`PerceptualLoss`: SVDN's VGG16 feature loss (eq. 9), weights read
  from a local Keras VGG16 file (never downloaded).
- :class:`PositionLoss`: SVDN's optical-flow guidance of DCN1's sampling
  points (sec. 3.3, eq. 10, Algorithm 1), with the helpers that bring the
  model's positions and the data pipeline's flows into one frame:
  :func:`relative_sampling_points`, :func:`flow_to_feature_resolution`,
  :func:`point_to_segment_distance`, :func:`flow_guidance_distance`.
- :class:`SVDNLoss`: ``L_pixel + 0.01 L_percep + 1e-4 L_position`` (eq. 7),
  the perceptual features brought to the scale the paper's 0.01 was set for.

Every loss computes one value per image (``[N]``), which Keras reduces over
the batch (``reduction="sum_over_batch_size"`` by default: the mean), so a
batch's loss is the papers' normalised sum over all its elements. An empty
batch gives a loss of 0. Integer or bool inputs, wrong ranks, mismatched
shapes (``ValueError``, or ``InvalidArgumentError`` for shapes only known at
run time) and NaN/Inf values (``InvalidArgumentError``) raise errors naming
the argument.
"""

from __future__ import annotations

import math
import numbers
import os

import keras
import tensorflow as tf

from tfdeblur import _validation as checks
from tfdeblur.layers._empty_batch import pad_empty_batch

__all__ = [
    "PerceptualLoss",
    "CharbonnierLoss",
    "PixelLoss",
    "PositionLoss",
    "SVDNLoss",
    "flow_guidance_distance",
    "flow_to_feature_resolution",
    "point_to_segment_distance",
    "relative_sampling_points",
]

#: Normalisations of a squared error, per image: name -> (reduction over H, W, C, factor).
#: ``"mse"``: mean; ``"half_mse"``: mean / 2; ``"half_sum"``: sum / 2.
NORMALIZATIONS = {"mse": ("mean", 1.0), "half_mse": ("mean", 0.5), "half_sum": ("sum", 0.5)}
#: ImageNet per-channel std (RGB) that torchvision's VGG16 inputs are divided by.
IMAGENET_RGB_STD = (0.229, 0.224, 0.225)
#: Default :class:`PerceptualLoss` ``feature_scale``: 1 / (255 x the mean ImageNet std) =
#: 1 / 57.63, the ratio of torchvision-scale to Caffe-scale VGG16 inputs.
TORCHVISION_FEATURE_SCALE = 1.0 / (255.0 * sum(IMAGENET_RGB_STD) / len(IMAGENET_RGB_STD))
#: Default margin of :class:`PositionLoss`, in feature pixels (the paper gives no value).
DEFAULT_MARGIN = 1.0
#: SVDN's feature resolution: one stride-2 downsampling before the DCNs.
SVDN_FEATURE_STRIDE = 2


def _check_normalization(normalization, owner: str) -> str:
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"{owner}: normalization must be one of {sorted(NORMALIZATIONS)}, "
                         f"got {normalization!r}")
    return normalization


def _squared_error(diff, normalization: str) -> tf.Tensor:
    """Per-image normalised ``||diff||^2`` of ``[N, H, W, C]`` (``[N]``)."""
    reduction, factor = NORMALIZATIONS[normalization]
    reduce = tf.reduce_mean if reduction == "mean" else tf.reduce_sum
    return factor * reduce(tf.square(diff), axis=[1, 2, 3])


def _check_number(value, name: str, owner: str, minimum: float = 0.0) -> float:
    if (isinstance(value, bool) or not isinstance(value, numbers.Real)
            or not math.isfinite(value) or value < minimum):
        raise ValueError(f"{owner}: {name} must be a finite number >= {minimum}, got {value!r}")
    return float(value)


def _check_feature_scale(value, owner: str, name: str = "feature_scale") -> float:
    if (isinstance(value, bool) or not isinstance(value, numbers.Real)
            or not math.isfinite(value) or value <= 0):
        raise ValueError(f"{owner}: {name} must be a finite number > 0, got {value!r}")
    return float(value)


def _check_stride(value, owner: str) -> int:
    return checks.check_int(value, "feature_stride", owner=owner)


class _Loss(keras.losses.Loss):
    """Keras loss with tfdeblur's input checks and a 0 loss for an empty batch."""

    #: Names of (y_true, y_pred) in error messages.
    _names = ("y_true", "y_pred")

    def __init__(self, name: str | None = None, reduction: str | None = "sum_over_batch_size",
                 dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self._dtype_arg = dtype

    def __call__(self, y_true, y_pred, sample_weight=None):
        # Keras converts to the loss dtype before call(); an integer image
        # would arrive as floats in [0, 255] and give a meaningless loss.
        for value, name in ((y_true, self._names[0]), (y_pred, self._names[1])):
            for leaf in keras.tree.flatten(value):
                if not checks.is_float(leaf):
                    raise ValueError(f"{self.name}: {name} must be floating point (images "
                                     f"in [0, 1]; scale 8-bit images by 1/255), got dtype "
                                     f"{checks.dtype_name(leaf)}")
        loss = super().__call__(y_true, y_pred, sample_weight)
        if self.reduction not in (None, "none") and loss.shape.rank:
            # Keras returns the unreduced (empty) values for a static batch of 0.
            loss = tf.zeros([], loss.dtype)
        return loss

    def get_config(self) -> dict:
        return {**super().get_config(), "dtype": self._dtype_arg}


def _image_pair(y_true, y_pred, owner: str, names=("y_true", "y_pred")):
    """Checked ``[N, H, W, C]`` pair of one shape, with NaN/Inf assertions."""
    y_true = tf.convert_to_tensor(y_true)
    y_pred = tf.convert_to_tensor(y_pred)
    layout = "[N, H, W, C] image batch"
    checks.check_rank(y_true, 4, names[0], layout, owner)
    checks.check_rank(y_pred, 4, names[1], layout, owner)
    deps = checks.same_shape(y_true, y_pred, names[0], names[1], owner)
    with tf.control_dependencies(deps):
        y_true = checks.assert_finite(y_true, names[0], owner)
        y_pred = checks.assert_finite(y_pred, names[1], owner)
    return y_true, y_pred


@keras.saving.register_keras_serializable(package="tfdeblur")
class PixelLoss(_Loss):
    """L2 pixel loss: mean squared error, half of it (SVDN), or half the sum (SVRNN).

    Per image, ``normalization="mse"`` gives ``||L - S||^2 / Np``,
    ``"half_mse"`` gives ``||L - S||^2 / (2 Np)`` (Yuan, Su, Ma, CVPR 2020,
    eq. 8) and ``"half_sum"`` gives ``||L - S||^2 / 2``, ``Np`` being the
    number of elements (H x W x C) of the image, ``L`` the prediction and
    ``S`` the sharp image. The batch's loss is the mean over images (with
    the default reduction). Which normalisation each paper uses:

    - SVDN: ``"half_mse"`` (eq. 8).
    - LMFN (eq. 4): ``"mse"``. The paper divides the sum over pixel
      positions by ``w h``; with colour images the channels are averaged too
      here, which only scales the loss by the constant C.
    - SVRNN (sec. 3.3, "the L2 loss"): ``"half_sum"``. The authors' loss
      (``L2Loss.m`` of their released code, like Caffe's EuclideanLoss) is
      ``sum / 2 / batch size``, which ``"half_sum"`` with the batch mean is
      exactly. With Adam the loss's scale mostly cancels (epsilon aside), but
      not beside a coupled L2 weight decay (``weight_decay * w`` added to the
      gradient, :class:`~tfdeblur.training.AdamL2`): the decay's strength
      relative to the data term is set against this scale. With ``"mse"``
      the paper's decay of 1e-6 would weigh ``Np / 2`` = 24,576 times more
      than the authors' at 128x128x3.

    Args:
        normalization: ``"mse"`` (default), ``"half_mse"`` or ``"half_sum"``.
        name, reduction, dtype: as for ``keras.losses.Loss``.

    Input: ``y_true``, ``y_pred``: float ``[N, H, W, C]`` of one shape.
    Output: scalar (per-image ``[N]`` with ``reduction=None``).

    Example:
        >>> model.compile(optimizer="adam", loss=PixelLoss())            # LMFN
        >>> model.compile(optimizer=AdamL2(l2=1e-6), loss=PixelLoss("half_sum"))  # SVRNN
        >>> PixelLoss("half_mse")(sharp, model(blurry))                  # SVDN's L_pixel
    """

    def __init__(self, normalization: str = "mse", name: str = "pixel_loss",
                 reduction: str | None = "sum_over_batch_size", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.normalization = _check_normalization(normalization, "PixelLoss")

    def call(self, y_true, y_pred):
        y_true, y_pred = _image_pair(y_true, y_pred, self.name)
        return _squared_error(y_pred - y_true, self.normalization)

    def get_config(self) -> dict:
        return {**super().get_config(), "normalization": self.normalization}


@keras.saving.register_keras_serializable(package="tfdeblur")
class CharbonnierLoss(_Loss):
    """Charbonnier (smooth L1) pixel loss: ``mean(sqrt((L - S)^2 + eps^2))`` per image.

    Not one of the three papers' losses (all use L2): later restoration work
    (LapSRN, MPRNet, and most deblurring networks since) trains with it
    because it does not let a few large errors dominate, which favours
    sharp edges over the smooth averages an L2 loss settles for. With
    ``epsilon`` -> 0 it is the mean absolute error (L1).

    Args:
        epsilon: smoothing in image units (default 1e-3, MPRNet's), > 0.
        name, reduction, dtype: as for ``keras.losses.Loss``.

    Input: ``y_true``, ``y_pred``: float ``[N, H, W, C]`` of one shape.
    Output: scalar (per-image ``[N]`` with ``reduction=None``).

    Example:
        >>> model.compile(optimizer="adam", loss=CharbonnierLoss())
    """

    def __init__(self, epsilon: float = 1e-3, name: str = "charbonnier_loss",
                 reduction: str | None = "sum_over_batch_size", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.epsilon = _check_number(epsilon, "epsilon", "CharbonnierLoss")
        if not self.epsilon > 0:
            raise ValueError(f"CharbonnierLoss: epsilon must be > 0, got {epsilon!r}")

    def call(self, y_true, y_pred):
        y_true, y_pred = _image_pair(y_true, y_pred, self.name)
        d = tf.cast(y_pred - y_true, tf.float32)
        value = tf.reduce_mean(tf.sqrt(tf.square(d) + self.epsilon ** 2), axis=[1, 2, 3])
        return tf.cast(value, self.dtype)

    def get_config(self) -> dict:
        return {**super().get_config(), "epsilon": self.epsilon}


def _pools_before(vgg: keras.Model, layer: str) -> int:
    count = 0
    for lay in vgg.layers:
        if lay.name == layer:
            return count
        if isinstance(lay, keras.layers.MaxPooling2D):
            count += 1
    raise AssertionError(layer)


@keras.saving.register_keras_serializable(package="tfdeblur")
class PerceptualLoss(_Loss):
    """Squared distance of VGG16 features of the prediction and the sharp image.

    ``||phi(L) - phi(S)||^2 / (2 Nc)`` per image (``"half_mse"``, Yuan, Su,
    Ma, CVPR 2020, eq. 9) or ``/ Nc`` (``"mse"``), ``phi`` the output of one
    VGG16 layer (after its ReLU: Keras's VGG16 convolutions include the
    activation) times ``feature_scale`` and ``Nc`` the number of its
    elements. VGG16 is frozen; the target's features carry no gradient.

    The weights come only from a local file: ``vgg16_weights`` is the path of
    a Keras VGG16 weights file without the dense top
    (``vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5`` as released with
    Keras, or a ``.weights.h5`` saved from
    ``keras.applications.VGG16(include_top=False)``); nothing is ever
    downloaded. Those weights (converted from the original Caffe model)
    expect BGR input in [0, 255] minus the ImageNet mean, which is done
    here: images are RGB in [0, 1] (not clipped: a prediction outside the
    range is passed on as it is).

    Which layer: the paper uses "the 12-th layer of VGG-16" in a PyTorch
    implementation, most likely the index into torchvision's
    ``vgg16().features`` (conv and ReLU counted separately): index 12 is
    conv3_2 (or ReLU3_1's output for the slice ``features[:12]``). The
    default here is ``"block3_conv3"``, conv3_3 after its ReLU, the layer of
    the widely used DeblurGAN perceptual loss that SVDN follows; any Keras
    VGG16 layer name works (``"block3_conv2"`` for the torchvision reading).
    Scale: the paper's weight 0.01 for this term was set with PyTorch's
    VGG16, fed ``(x - mean) / std`` (values within about +-2.5), while these
    weights are fed 0-255 Caffe-scale inputs, about 255 x std = 57.6 times
    larger. VGG16 is a stack of convolutions, ReLUs and max-poolings, which
    are positively homogeneous: scaling the input by ``a > 0`` scales every
    feature by ``a``, up to the biases (which do not scale). So the
    features are multiplied by ``feature_scale``, by default
    :data:`TORCHVISION_FEATURE_SCALE` = 1 / (255 x the mean ImageNet std
    0.226) = 1 / 57.63, to bring them to torchvision's scale before the
    squared distance, which is then 57.63^2 = 3,321 times smaller than
    with ``feature_scale=1.0`` (the unscaled Caffe-scale features, this
    loss's former behaviour): the paper's 0.01 keeps its meaning. (The
    Keras weights, converted from the original Caffe model, are not
    torchvision's retrained ones, so only the scale is matched.)

    Images must have 3 channels and sides of at least ``2**p`` pixels, ``p``
    the number of VGG16 poolings before the layer (4 for block3 layers).

    Args:
        vgg16_weights: path of the local Keras VGG16 notop weights file.
        layer: Keras VGG16 layer name whose output is compared.
        normalization: ``"half_mse"`` (default, eq. 9), ``"mse"`` or
            ``"half_sum"`` (see :class:`PixelLoss`).
        feature_scale: factor on the features before the squared distance,
            > 0 (default: torchvision's scale, above; ``1.0``: Caffe scale).
        name, reduction, dtype: as for ``keras.losses.Loss``.

    Input: ``y_true``, ``y_pred``: float ``[N, H, W, 3]`` RGB in [0, 1] of one shape.
    Output: scalar (per-image ``[N]`` with ``reduction=None``).

    Raises:
        FileNotFoundError, TypeError, ValueError: a missing or unreadable
            ``vgg16_weights`` file (the message names ``vgg16_weights``), an
            unknown ``layer``, or a ``feature_scale`` that is not > 0.

    Example:
        >>> loss = PerceptualLoss("vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5")
        >>> value = loss(sharp, model(blurry))
    """

    def __init__(self, vgg16_weights: str | os.PathLike, layer: str = "block3_conv3",
                 normalization: str = "half_mse",
                 feature_scale: float = TORCHVISION_FEATURE_SCALE,
                 name: str = "perceptual_loss",
                 reduction: str | None = "sum_over_batch_size", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        from tfdeblur.models.vgg16_init import VGG16_BGR_MEAN, load_vgg16

        self.normalization = _check_normalization(normalization, "PerceptualLoss")
        self.feature_scale = _check_feature_scale(feature_scale, "PerceptualLoss")
        if vgg16_weights is None:
            raise ValueError("PerceptualLoss: vgg16_weights must be the path of a local Keras "
                             "VGG16 notop weights file (weights are never downloaded), got None")
        vgg = load_vgg16(vgg16_weights)
        names = [lay.name for lay in vgg.layers[1:]]
        if layer not in names:
            raise ValueError(f"PerceptualLoss: layer must be one of VGG16's layers {names}, "
                             f"got {layer!r}")
        self.vgg16_weights = os.fspath(vgg16_weights)
        self.layer = layer
        self.min_size = 2 ** _pools_before(vgg, layer)
        self._features = keras.Model(vgg.input, vgg.get_layer(layer).output,
                                     name=f"vgg16_{layer}")
        self._features.trainable = False
        self._mean = tf.constant(VGG16_BGR_MEAN, tf.float32)

    def features(self, images) -> tf.Tensor:
        """Caffe-scale VGG16 features (no ``feature_scale``) of RGB images in [0, 1]."""
        x = tf.cast(images, tf.float32)
        x = 255.0 * x[..., ::-1] - self._mean
        return self._features(x, training=False)

    def _check_size(self, images, owner: str) -> list:
        for axis, side in ((1, "height"), (2, "width")):
            size = images.shape[axis]
            if size is not None and size < self.min_size:
                raise ValueError(f"{owner}: images need a {side} of at least {self.min_size} "
                                 f"pixels for VGG16's {self.layer}, got shape {images.shape}")
        if images.shape[1:3].is_fully_defined():
            return []
        return [tf.debugging.assert_greater_equal(
            tf.reduce_min(tf.shape(images)[1:3]), self.min_size,
            message=f"{owner}: images need a height and width of at least {self.min_size} "
                    f"pixels for VGG16's {self.layer}")]

    def call(self, y_true, y_pred):
        y_true, y_pred = _image_pair(y_true, y_pred, self.name)
        checks.check_last_dim(y_pred, 3, "y_pred", "an RGB image batch [N, H, W, 3]", self.name)
        checks.check_last_dim(y_true, 3, "y_true", "an RGB image batch [N, H, W, 3]", self.name)
        with tf.control_dependencies(self._check_size(y_pred, self.name)):
            n = tf.shape(y_pred)[0]
            # One zero item for an empty batch: oneDNN's conv mishandles batch 0.
            both = self.features(pad_empty_batch(tf.concat([y_pred, y_true], axis=0)))
        f_pred, f_true = both[:n], tf.stop_gradient(both[n:2 * n])
        value = _squared_error(self.feature_scale * (f_pred - f_true), self.normalization)
        return tf.cast(value, self.dtype)

    def get_config(self) -> dict:
        return {**super().get_config(), "vgg16_weights": self.vgg16_weights,
                "layer": self.layer, "normalization": self.normalization,
                "feature_scale": self.feature_scale}


# ------------------------------------------------------------- position loss helpers

def relative_sampling_points(positions) -> tf.Tensor:
    """Sampling points relative to their output pixel, in feature pixels.

    ``positions`` are absolute ``(py, px)`` sampling positions of a
    deformable convolution with stride 1 (``[N, h, w, K, 2]``, as returned
    by SVDN's training model ``tfdeblur.models.svdn.with_positions``: regular grid +
    learned offset).
    The output pixel ``(i, j)`` is subtracted from the positions of its K
    points, which gives grid tap + offset relative to the kernel centre for
    an odd "same" kernel such as SVDN's 5x5 (its grid centre is the output
    pixel itself). The flow vectors of pixel ``(i, j)`` start there too, so
    the points and the flow segments share one origin.

    Args:
        positions: float ``[N, h, w, K, 2]`` absolute ``(py, px)``.

    Returns:
        ``[N, h, w, K, 2]`` ``(dy, dx)`` relative to the output pixel.
    """
    positions = tf.convert_to_tensor(positions)
    checks.check_rank(positions, 5, "positions", "[N, h, w, K, 2]", "relative_sampling_points")
    checks.check_last_dim(positions, 2, "positions", "[N, h, w, K, 2] (py, px)",
                          "relative_sampling_points")
    s = tf.shape(positions)
    rows = tf.cast(tf.range(s[1]), positions.dtype)[None, :, None, None]
    cols = tf.cast(tf.range(s[2]), positions.dtype)[None, None, :, None]
    return tf.stack([positions[..., 0] - rows, positions[..., 1] - cols], axis=-1)


def flow_to_feature_resolution(flow, stride: int = SVDN_FEATURE_STRIDE) -> tf.Tensor:
    """Full-resolution flows brought to a feature map ``stride`` times smaller.

    Each feature pixel ``(i, j)`` stands for the image block of rows
    ``stride i .. stride i + stride - 1`` and the matching columns (SVDN's
    stride-2 backbone, the model padding odd sides at the bottom/right): its
    flow is the average of the block's flow vectors (a block cut by the
    bottom/right border averages the pixels it has), divided by ``stride``
    to convert image pixels to feature pixels. The output therefore has
    ``ceil(H / stride) x ceil(W / stride)`` pixels, the size of SVDN's
    positions for an ``H x W`` image.

    Args:
        flow: float ``[N, H, W, 2k]``, k ``(dx, dy)`` flows in image pixels
            (the data pipeline's bidirectional flows have k = 2: to the
            previous frame, then to the next; see :mod:`tfdeblur.data.flow`).
        stride: the downsampling factor (1 returns the flow unchanged).

    Returns:
        ``[N, ceil(H / stride), ceil(W / stride), 2k]``, same channel layout,
        in feature pixels.
    """
    owner = "flow_to_feature_resolution"
    stride = _check_stride(stride, owner)
    flow = tf.convert_to_tensor(flow)
    checks.check_rank(flow, 4, "flow", "[N, H, W, 2k]", owner)
    if flow.shape[-1] is not None and flow.shape[-1] % 2:
        raise ValueError(f"{owner}: flow must have an even number of channels ((dx, dy) "
                         f"pairs), got shape {flow.shape}")
    if stride == 1:
        return flow
    # Blocks start at the top-left corner (TensorFlow's SAME pooling would
    # pad the top for some sizes and strides): pad the bottom/right with
    # zeros and divide each block's sum by its count of real pixels.
    s = [d if d is not None else tf.shape(flow)[i] for i, d in enumerate(flow.shape)]
    pad = [[0, 0], [0, (-s[1]) % stride], [0, (-s[2]) % stride], [0, 0]]
    sums = tf.nn.avg_pool2d(tf.pad(flow, pad), stride, stride, "VALID")
    counts = tf.nn.avg_pool2d(tf.pad(tf.ones(tf.stack([1, s[1], s[2], 1]), flow.dtype), pad),
                              stride, stride, "VALID")
    return sums / (counts * tf.cast(stride, flow.dtype))


def point_to_segment_distance(points, segment_end) -> tf.Tensor:
    """Euclidean distance from points to the segments from the origin to ``segment_end``.

    The foot of the perpendicular is clamped to the segment: points beyond
    its end get their distance to the end, points behind the origin their
    distance to the origin, and a zero-length segment gives the distance to
    the origin. (SVDN's Algorithm 1 states this with its coordinates
    swapped: its foot abscissa ``(u v y + v^2 x) / (u^2 + v^2)`` and
    distance ``|u x - v y| / sqrt(u^2 + v^2)`` are the point-to-line
    formulas with x and y exchanged; the geometric definition is used here.)

    The gradient is 0 at a zero distance (where the distance has none).

    Args:
        points: float ``[..., 2]``.
        segment_end: float ``[..., 2]`` broadcastable with ``points``, in the
            same coordinate order (either ``(y, x)`` or ``(x, y)`` for both).

    Returns:
        ``[...]`` distances (the broadcast shape without the last axis).
    """
    p = tf.convert_to_tensor(points)
    v = tf.convert_to_tensor(segment_end, dtype_hint=p.dtype)
    vv = tf.reduce_sum(tf.square(v), axis=-1, keepdims=True)
    nonzero = vv > 0
    # where() on both sides keeps the gradient finite for a zero-length segment.
    t = tf.where(nonzero, tf.reduce_sum(p * v, axis=-1, keepdims=True)
                 / tf.where(nonzero, vv, tf.ones_like(vv)), tf.zeros_like(vv))
    t = tf.clip_by_value(t, 0.0, 1.0)
    sq = tf.reduce_sum(tf.square(p - t * v), axis=-1)
    positive = sq > 0
    return tf.where(positive, tf.sqrt(tf.where(positive, sq, tf.ones_like(sq))),
                    tf.zeros_like(sq))


def flow_guidance_distance(positions, flow,
                           feature_stride: int = SVDN_FEATURE_STRIDE) -> tf.Tensor:
    """Per sampling point, the distance to the nearer of the two flow segments.

    SVDN (sec. 3.3) approximates the blur kernel at each pixel by the two
    segments from the pixel to its optical flow to the previous and to the
    next sharp frame (Kim and Lee's bidirectional model), and pulls DCN1's
    25 sampling points towards them. ``d = min(d1, d2)`` with ``d_j`` the
    :func:`point_to_segment_distance` of the point (relative to its output
    pixel, :func:`relative_sampling_points`) to the segment from the origin
    to flow ``j`` (brought to the feature resolution by
    :func:`flow_to_feature_resolution`), all in feature pixels. The flows
    are used as given (from the current frame to its neighbours, as the
    paper states); for motion that is linear across the exposure they are
    opposite, so the two segments form one line through the pixel and the
    sign convention does not matter.

    Args:
        positions: float ``[N, h, w, K, 2]`` absolute ``(py, px)`` in feature
            pixels (SVDN's second output).
        flow: float ``[N, H, W, 4]`` bidirectional flow ``(dx, dy)`` to the
            previous frame, then to the next, in image pixels, with
            ``ceil(H / feature_stride) = h`` and ``ceil(W / feature_stride) = w``.
        feature_stride: image pixels per feature pixel (2 for SVDN; 1 when
            ``flow`` is already at the feature resolution and scale).

    Returns:
        ``[N, h, w, K]`` distances in feature pixels.
    """
    return _guidance_distance(positions, flow, feature_stride, "flow_guidance_distance",
                              ("positions", "flow"))


def _guidance_distance(positions, flow, feature_stride, owner, names):
    positions = tf.convert_to_tensor(positions)
    flow = tf.convert_to_tensor(flow)
    checks.check_rank(positions, 5, names[0], "[N, h, w, K, 2]", owner)
    checks.check_last_dim(positions, 2, names[0], "[N, h, w, K, 2] (py, px)", owner)
    checks.check_rank(flow, 4, names[1], "[N, H, W, 4] bidirectional flow", owner)
    checks.check_last_dim(flow, 4, names[1], "[N, H, W, 4] (dx, dy to previous, dx, dy to "
                          "next)", owner)
    feature_stride = _check_stride(feature_stride, owner)
    positions = checks.assert_finite(positions, names[0], owner)
    flow = checks.assert_finite(tf.cast(flow, positions.dtype), names[1], owner)
    small = flow_to_feature_resolution(flow, feature_stride)
    sizes = positions.shape[:3]
    want = small.shape[:3]
    if not sizes.is_compatible_with(want):
        raise ValueError(
            f"{owner}: {names[1]} of shape {flow.shape} gives a {want[1]}x{want[2]} flow at "
            f"feature_stride {feature_stride} (ceil(H / {feature_stride}) x ceil(W / "
            f"{feature_stride})) for a batch of {want[0]}, but {names[0]} has shape "
            f"{positions.shape} ([N, h, w, K, 2])")
    deps = []
    if not (sizes.is_fully_defined() and want.is_fully_defined()):
        deps.append(tf.debugging.assert_equal(
            tf.shape(positions)[:3], tf.shape(small)[:3],
            message=f"{owner}: {names[1]} at the feature resolution (ceil(H / "
                    f"{feature_stride}), ceil(W / {feature_stride})) and batch must match "
                    f"{names[0]}'s [N, h, w]"))
    with tf.control_dependencies(deps):
        points = relative_sampling_points(positions)                     # (dy, dx)
    # Flow channels are (dx, dy); the points are (dy, dx).
    to_prev = tf.stack([small[..., 1], small[..., 0]], axis=-1)[:, :, :, None, :]
    to_next = tf.stack([small[..., 3], small[..., 2]], axis=-1)[:, :, :, None, :]
    return tf.minimum(point_to_segment_distance(points, to_prev),
                      point_to_segment_distance(points, to_next))


@keras.saving.register_keras_serializable(package="tfdeblur")
class PositionLoss(_Loss):
    """SVDN's optical-flow guidance of DCN1's sampling points, with a margin.

    Per image, the mean over output pixels and their K sampling points of
    ``max(d - margin, 0)``, ``d`` the distance (in feature pixels) of the
    point to the nearer of the two segments from its pixel to the forward
    and backward optical flow (:func:`flow_guidance_distance`). Yuan, Su,
    Ma, CVPR 2020, sec. 3.3: eq. 10 prints ``max(min(d1, d2), M)``, which
    differs from the hinge only by the constant M where the point is within
    the margin (same gradients); the hinge makes the loss 0 when every point
    is within the margin. The paper gives no value for M: the default, 1
    feature pixel (2 image pixels), tolerates DIS's flow error and the
    small misalignment of the averaged flow (SVDN's stride-2 3x3 conv
    centres feature pixel i on image row 2i + 1, the 2x2 block it is given
    the flow of on 2i + 0.5).

    ``y_true`` is the data pipeline's full-resolution bidirectional flow
    (``tfdeblur.data.paired_dataset(..., with_flow=True)``, ``(dx, dy)`` to
    the previous then the next frame), ``y_pred`` the second output of SVDN's
    training model (``tfdeblur.models.svdn.with_positions``). The flow is
    averaged over 2x2 blocks and halved to match the half-resolution features
    (:func:`flow_to_feature_resolution`); the positions are taken relative
    to their output pixel (:func:`relative_sampling_points`).

    Args:
        margin: M >= 0, in feature pixels.
        feature_stride: image pixels per feature pixel (2 for SVDN, 1 for a
            flow already at the feature resolution and scale).
        name, reduction, dtype: as for ``keras.losses.Loss``.

    Input: ``y_true`` flow float ``[N, H, W, 4]``; ``y_pred`` positions float
    ``[N, ceil(H / feature_stride), ceil(W / feature_stride), K, 2]``.
    Output: scalar (per-image ``[N]`` with ``reduction=None``).

    Example:
        >>> train = with_positions(tfdeblur.models.build("svdn"))
        >>> sharp_pred, positions = train(blurry)
        >>> PositionLoss()(flow, positions)
    """

    _names = ("y_true (flow)", "y_pred (positions)")

    def __init__(self, margin: float = DEFAULT_MARGIN,
                 feature_stride: int = SVDN_FEATURE_STRIDE, name: str = "position_loss",
                 reduction: str | None = "sum_over_batch_size", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.margin = _check_number(margin, "margin", "PositionLoss")
        self.feature_stride = _check_stride(feature_stride, "PositionLoss")

    def call(self, y_true, y_pred):
        d = _guidance_distance(y_pred, y_true, self.feature_stride, self.name,
                               ("y_pred (positions)", "y_true (flow)"))
        return tf.reduce_mean(tf.nn.relu(d - tf.constant(self.margin, d.dtype)), axis=[1, 2, 3])

    def get_config(self) -> dict:
        return {**super().get_config(), "margin": self.margin,
                "feature_stride": self.feature_stride}


@keras.saving.register_keras_serializable(package="tfdeblur")
class SVDNLoss(_Loss):
    """SVDN's training loss ``L_pixel + 0.01 L_percep + 1e-4 L_position``.

    Yuan, Su, Ma, CVPR 2020, eq. 7: :class:`PixelLoss` (``"half_mse"``,
    eq. 8) + ``perceptual_weight`` x :class:`PerceptualLoss` (eq. 9, on
    features at torchvision's scale, for which the paper set its 0.01:
    ``perceptual_feature_scale``) + ``position_weight`` x
    :class:`PositionLoss` (eq. 10), per image, then reduced over the batch.

    The perceptual term needs a local VGG16 weights file. Without
    ``vgg16_weights`` the constructor raises unless ``perceptual_weight=0``
    is given explicitly: the paper's loss is never silently replaced by a
    different one. Likewise ``position_weight=0`` trains without flow
    guidance (the paper's "Ours(A)"), and then the loss takes plain image
    tensors.

    Inputs: with a position term, ``y_true = (sharp, flow)`` and
    ``y_pred = (image, positions)`` (the outputs of
    ``tfdeblur.models.svdn.with_positions(tfdeblur.models.build("svdn"))``); with
    ``position_weight=0``, either those pairs or just ``sharp`` and
    ``image``. Use it in a custom training step, or give
    :meth:`compile_arguments` to ``model.compile`` (Keras applies one loss
    per model output, so the sum is split into an image loss and the
    position loss with their weights).

    Args:
        vgg16_weights: path of a local Keras VGG16 notop weights file, or
            None with ``perceptual_weight=0``.
        perceptual_weight: lambda_1 (paper: 0.01).
        position_weight: lambda_2 (paper: 1e-4).
        margin: the position loss's margin M, feature pixels.
        perceptual_layer: VGG16 layer of the perceptual loss.
        perceptual_feature_scale: the perceptual loss's ``feature_scale``
            (default: torchvision's scale, for which the paper set lambda_1;
            see :class:`PerceptualLoss`; ``1.0``: Caffe-scale features).
        pixel_weight: weight of the pixel term (paper: 1).
        feature_stride: image pixels per feature pixel (SVDN: 2).
        name, reduction, dtype: as for ``keras.losses.Loss``.

    Output: scalar (per-image ``[N]`` with ``reduction=None``).

    Example:
        >>> model = with_positions(tfdeblur.models.build("svdn"))
        >>> loss = SVDNLoss("vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5")
        >>> model.compile(optimizer="adam", **loss.compile_arguments())
        >>> model.fit(ds.map(lambda blurry, sharp, flow: (blurry, (sharp, flow))))
    """

    _names = ("y_true (sharp, flow)", "y_pred (image, positions)")

    def __init__(self, vgg16_weights: str | os.PathLike | None = None,
                 perceptual_weight: float = 0.01, position_weight: float = 1e-4,
                 margin: float = DEFAULT_MARGIN, perceptual_layer: str = "block3_conv3",
                 pixel_weight: float = 1.0, feature_stride: int = SVDN_FEATURE_STRIDE,
                 perceptual_feature_scale: float = TORCHVISION_FEATURE_SCALE,
                 name: str = "svdn_loss", reduction: str | None = "sum_over_batch_size",
                 dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.pixel_weight = _check_number(pixel_weight, "pixel_weight", "SVDNLoss")
        self.perceptual_weight = _check_number(perceptual_weight, "perceptual_weight",
                                               "SVDNLoss")
        self.position_weight = _check_number(position_weight, "position_weight", "SVDNLoss")
        self.perceptual_feature_scale = _check_feature_scale(
            perceptual_feature_scale, "SVDNLoss", "perceptual_feature_scale")
        if vgg16_weights is None and self.perceptual_weight != 0:
            raise ValueError(
                f"SVDNLoss: perceptual_weight is {perceptual_weight} but no vgg16_weights file "
                "was given; give the path of a local Keras VGG16 notop weights file (never "
                "downloaded), or pass perceptual_weight=0 to train without the perceptual term")
        self.vgg16_weights = None if vgg16_weights is None else os.fspath(vgg16_weights)
        self.perceptual_layer = perceptual_layer
        self.pixel = PixelLoss("half_mse", reduction=None, dtype=dtype)
        self.perceptual = None
        if self.perceptual_weight != 0:
            self.perceptual = PerceptualLoss(vgg16_weights, perceptual_layer, "half_mse",
                                             self.perceptual_feature_scale, reduction=None,
                                             dtype=dtype)
        self.position = PositionLoss(margin, feature_stride, reduction=None, dtype=dtype)

    @property
    def margin(self) -> float:
        return self.position.margin

    def _split(self, value, name: str):
        if isinstance(value, (list, tuple)):
            if len(value) != 2:
                raise ValueError(f"{self.name}: {name} must be a pair, got {len(value)} values")
            return value[0], value[1]
        if self.position_weight != 0:
            raise ValueError(
                f"{self.name}: {name} must be a pair ({name.split('(')[1][:-1]}) when "
                f"position_weight is {self.position_weight}; pass position_weight=0 to "
                "train on images alone")
        return value, None

    def image_terms(self, sharp, image) -> tf.Tensor:
        """Per-image ``pixel_weight L_pixel + perceptual_weight L_percep`` (``[N]``)."""
        value = self.pixel_weight * self.pixel.call(sharp, image)
        if self.perceptual is not None:
            value += self.perceptual_weight * tf.cast(self.perceptual.call(sharp, image),
                                                      value.dtype)
        return value

    def call(self, y_true, y_pred):
        sharp, flow = self._split(y_true, self._names[0])
        image, positions = self._split(y_pred, self._names[1])
        value = self.image_terms(sharp, image)
        if self.position_weight != 0:
            value += self.position_weight * tf.cast(self.position.call(flow, positions),
                                                    value.dtype)
        return value

    def compile_arguments(self) -> dict:
        """``loss`` and ``loss_weights`` for ``model.compile`` of a two-output SVDN.

        Returns ``{"loss": [image_loss, position_loss], "loss_weights": [1.0,
        position_weight]}`` where ``image_loss`` is this loss with
        ``position_weight=0`` (pixel + weighted perceptual terms, sharing this
        loss's VGG16) and ``position_loss`` a :class:`PositionLoss` with this
        margin. The model's targets must then be ``(sharp, flow)``. With
        ``position_weight=0`` only ``{"loss": image_loss}`` is returned, for a
        model with the image output alone.
        """
        image_loss = SVDNLoss(None, 0.0, 0.0, self.margin, self.perceptual_layer,
                              self.pixel_weight, self.position.feature_stride,
                              self.perceptual_feature_scale, name="svdn_image_loss",
                              reduction=self.reduction, dtype=self._dtype_arg)
        # Shares the loaded VGG16 instead of reading the file again.
        image_loss.vgg16_weights = self.vgg16_weights
        image_loss.perceptual_weight = self.perceptual_weight
        image_loss.perceptual = self.perceptual
        if self.position_weight == 0:
            return {"loss": image_loss}
        position_loss = PositionLoss(self.margin, self.position.feature_stride,
                                     reduction=self.reduction, dtype=self._dtype_arg)
        return {"loss": [image_loss, position_loss], "loss_weights": [1.0, self.position_weight]}

    def get_config(self) -> dict:
        return {**super().get_config(), "vgg16_weights": self.vgg16_weights,
                "perceptual_weight": self.perceptual_weight,
                "position_weight": self.position_weight, "margin": self.margin,
                "perceptual_layer": self.perceptual_layer, "pixel_weight": self.pixel_weight,
                "feature_stride": self.position.feature_stride,
                "perceptual_feature_scale": self.perceptual_feature_scale}
