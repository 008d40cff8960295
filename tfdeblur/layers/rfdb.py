"""Residual feature distillation block (RFDB) and its enhanced spatial attention (ESA)."""

from __future__ import annotations

import keras
from keras import ops

from tfdeblur import _validation as v
from tfdeblur.layers.lmfn_blocks import resize_bilinear

# ESA's pooling (Liu et al.'s RFDN): a valid 3x3 stride-2 conv, then a valid
# 7x7 stride-3 max-pool, which needs (H - 3) // 2 + 1 >= 7.
_ESA_POOL = 7
_ESA_POOL_STRIDE = 3
ESA_MIN_SIZE = 15


@keras.saving.register_keras_serializable(package="tfdeblur")
class EnhancedSpatialAttention(keras.layers.Layer):
    """Enhanced spatial attention (ESA): a large-receptive-field sigmoid mask.

    Introduced by Liu et al.'s residual feature aggregation network (CVPR
    2020) and used at the end of every residual feature distillation block
    (see :class:`ResidualFeatureDistillationBlock`). Computes::

        c1 = conv1x1(x)                                   # `channels` wide
        c  = conv3x3(conv3x3(relu(conv3x3(maxpool7/3(conv3x3/2(c1))))))
        mask = sigmoid(conv1x1(resize(c, H, W) + conv1x1(c1)))
        return x * mask

    where ``conv3x3/2`` is a valid stride-2 convolution, ``maxpool7/3`` a valid
    7x7 max-pool of stride 3 and ``resize`` bilinear with half-pixel centres
    (PyTorch's ``align_corners=False``).

    Args:
        channels: width of the attention branch (RFDN uses a quarter of the
            input channels).
        **kwargs: standard ``keras.layers.Layer`` arguments.

    Input:
        ``[N, H, W, C]`` with ``H, W >= 15`` (the pooling needs room; smaller
        inputs raise an error stating this minimum).

    Output:
        ``[N, H, W, C]``.

    Example:
        >>> x = keras.Input((None, None, 64))
        >>> EnhancedSpatialAttention(16)(x).shape
        (None, None, None, 64)
    """

    def __init__(self, channels: int, **kwargs):
        super().__init__(**kwargs)
        self.channels = v.check_int(channels, "channels", owner="EnhancedSpatialAttention")

    def build(self, input_shape):
        in_channels = v.check_image_input(input_shape, "EnhancedSpatialAttention")
        f = self.channels
        policy = self.dtype_policy
        conv = lambda filters, k, name, **kw: keras.layers.Conv2D(filters, k, dtype=policy,
                                                                  name=name, **kw)
        self.conv1 = conv(f, 1, "conv1")
        self.conv_f = conv(f, 1, "conv_f")
        self.conv2 = conv(f, 3, "conv2", strides=2, padding="valid")
        self.conv_max = conv(f, 3, "conv_max", padding="same")
        self.conv3 = conv(f, 3, "conv3", padding="same")
        self.conv3_ = conv(f, 3, "conv3_", padding="same")
        self.conv4 = conv(in_channels, 1, "conv4")
        n = input_shape[0]
        reduced = (n, None, None, f)
        self.conv1.build(input_shape)
        for layer in (self.conv_f, self.conv2, self.conv_max, self.conv3, self.conv3_,
                      self.conv4):
            layer.build(reduced)
        super().build(input_shape)

    def _check_size(self, x):
        """``x``, its height and width checked against ESA_MIN_SIZE (at run time if unknown)."""
        for axis, side in ((1, "height"), (2, "width")):
            n = x.shape[axis]
            if n is not None and n < ESA_MIN_SIZE:
                raise ValueError(f"EnhancedSpatialAttention: input {side} must be at least "
                                 f"{ESA_MIN_SIZE}, got {n} (input shape {tuple(x.shape)})")
        if x.shape[1] is not None and x.shape[2] is not None:
            return x
        # Unknown sizes exist only in TensorFlow graphs.
        import tensorflow as tf

        shape = tf.shape(x)
        return v.with_dependencies(x, [tf.debugging.assert_greater_equal(
            tf.minimum(shape[1], shape[2]), ESA_MIN_SIZE,
            message=f"EnhancedSpatialAttention: input height and width must be at least "
                    f"{ESA_MIN_SIZE}")])

    def call(self, inputs):
        c1_ = self.conv1(self._check_size(inputs))
        c1 = self.conv2(c1_)
        v_max = ops.max_pool(c1, _ESA_POOL, _ESA_POOL_STRIDE, "valid",
                             data_format="channels_last")
        v_range = ops.relu(self.conv_max(v_max))
        c3 = ops.relu(self.conv3(v_range))
        c3 = self.conv3_(c3)
        _, h, w, _ = ops.shape(inputs)
        c3 = ops.cast(resize_bilinear(c3, (h, w)), c1_.dtype)
        mask = ops.sigmoid(self.conv4(c3 + self.conv_f(c1_)))
        return inputs * mask

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        return {**super().get_config(), "channels": self.channels}


@keras.saving.register_keras_serializable(package="tfdeblur")
class ResidualFeatureDistillationBlock(keras.layers.Layer):
    """Residual feature distillation block (RFDB) with enhanced spatial attention.

    From Liu, Tang, Wu, "Residual Feature Distillation Network for
    Lightweight Image Super-Resolution" (ECCV 2020 workshops); LMFN stacks four
    of them as its decoder (Zhang et al., LMFN sec. 3.3.1). Three
    stages each split the features into a *distilled* part (1x1 conv) and a
    *refined* part (shallow residual block: ``act(conv3x3(x) + x)``); a last
    3x3 conv distils the refined features; the four distilled parts are
    concatenated, fused by a 1x1 conv back to ``C`` channels and passed
    through :class:`EnhancedSpatialAttention`. Activations are LeakyReLU with
    slope 0.05, as in RFDN. As in RFDN there is no residual around the whole
    block.

    Args:
        distilled_channels: width of each distilled part; default ``C // 2``
            (RFDN's choice).
        attention_channels: width of the ESA branch; default ``C // 4``.
        negative_slope: LeakyReLU slope for negative inputs, in [0, 1].
        **kwargs: standard ``keras.layers.Layer`` arguments.

    Input:
        ``[N, H, W, C]`` with ``H, W >= 15`` (for the ESA) and ``C >= 4``
        unless both widths are given.

    Output:
        ``[N, H, W, C]``.

    Example:
        >>> x = keras.Input((None, None, 64))
        >>> ResidualFeatureDistillationBlock()(x).shape
        (None, None, None, 64)
    """

    def __init__(self, distilled_channels: int | None = None,
                 attention_channels: int | None = None, negative_slope: float = 0.05,
                 **kwargs):
        super().__init__(**kwargs)
        owner = "ResidualFeatureDistillationBlock"
        self.distilled_channels = v.check_int(distilled_channels, "distilled_channels",
                                              owner=owner, allow_none=True)
        self.attention_channels = v.check_int(attention_channels, "attention_channels",
                                              owner=owner, allow_none=True)
        # max(t, a t) below is LeakyReLU only for 0 <= a <= 1.
        self.negative_slope = v.check_number(negative_slope, "negative_slope", minimum=0.0,
                                             maximum=1.0, owner=owner)

    def build(self, input_shape):
        c = v.check_image_input(input_shape, "ResidualFeatureDistillationBlock")
        dc = self.distilled_channels or c // 2
        f = self.attention_channels or c // 4
        if dc < 1 or f < 1:
            raise ValueError("ResidualFeatureDistillationBlock: input channels must be at least 4 "
                             "for the default distilled_channels (C // 2) and attention_channels "
                             f"(C // 4), got {c}; pass both explicitly for narrower inputs")
        policy = self.dtype_policy
        conv = lambda filters, k, name: keras.layers.Conv2D(filters, k, padding="same",
                                                            dtype=policy, name=name)
        self.c1_d, self.c1_r = conv(dc, 1, "c1_d"), conv(c, 3, "c1_r")
        self.c2_d, self.c2_r = conv(dc, 1, "c2_d"), conv(c, 3, "c2_r")
        self.c3_d, self.c3_r = conv(dc, 1, "c3_d"), conv(c, 3, "c3_r")
        self.c4 = conv(dc, 3, "c4")
        self.c5 = conv(c, 1, "c5")
        self.esa = EnhancedSpatialAttention(f, dtype=policy, name="esa")
        for layer in (self.c1_d, self.c1_r, self.c2_d, self.c2_r, self.c3_d, self.c3_r,
                      self.c4):
            layer.build(input_shape)
        self.c5.build((*input_shape[:3], 4 * dc))
        self.esa.build(input_shape)
        super().build(input_shape)

    def call(self, inputs):
        # Not ops.leaky_relu: in graphs, TensorFlow 2.21's oneDNN remapper fuses
        # conv + bias + add + LeakyRelu (the shallow residual blocks) into one op
        # that ignores alpha and uses 0.2, so tf.function and eager results
        # differ. max(t, a t) is the same function for 0 <= a <= 1 and is not fused.
        act = lambda t: ops.maximum(t, self.negative_slope * t)
        distilled = []
        r = inputs
        for conv_d, conv_r in ((self.c1_d, self.c1_r), (self.c2_d, self.c2_r),
                               (self.c3_d, self.c3_r)):
            distilled.append(act(conv_d(r)))
            r = act(conv_r(r) + r)
        distilled.append(act(self.c4(r)))
        return self.esa(self.c5(ops.concatenate(distilled, axis=-1)))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        return {**super().get_config(), "distilled_channels": self.distilled_channels,
                "attention_channels": self.attention_channels,
                "negative_slope": self.negative_slope}
