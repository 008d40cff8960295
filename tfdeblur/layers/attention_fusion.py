"""LMFN's two attention fusion modules: across RFDB layers (ALFM) and across channels (ACFM)."""

from __future__ import annotations

import keras
from keras import ops

from tfdeblur import _validation as v


@keras.saving.register_keras_serializable(package="tfdeblur")
class AttentionLayerFusion(keras.layers.Layer):
    """Attention layer fusion module (ALFM): channel self-attention across blocks.

    Zhang et al., "Image deblurring based on lightweight multi-information
    fusion network", sec. 3.3.2, Fig. 2, eqs. (1)-(2). The ``N`` inputs (the
    outputs of LMFN's ``N`` distillation blocks, ``C`` channels each) are
    stacked into a matrix ``F`` of ``N*C`` rows (one per channel of every
    block, block-major) and ``H*W`` columns, and::

        A = softmax(F F^T)          # [N*C, N*C], softmax over each row
        out = theta * (A F) + F

    with a learned scalar ``theta`` initialised to 0, so the module starts as
    the identity. Every channel of every block attends to every other one, not
    block to block as in HAN's layer attention. As in the paper, ``F F^T`` is
    not scaled: on large images its entries are large and the softmax is
    nearly one-hot.

    Args:
        **kwargs: standard ``keras.layers.Layer`` arguments.

    Input:
        A list of ``N >= 1`` tensors ``[B, H, W, C]`` of the same shape, any
        H, W >= 1.

    Output:
        ``[B, H, W, N*C]``: block ``n``'s fused channels at ``[n*C, (n+1)*C)``.

    Example:
        >>> feats = [keras.Input((None, None, 64)) for _ in range(4)]
        >>> AttentionLayerFusion()(feats).shape
        (None, None, None, 256)
    """

    def build(self, input_shape):
        if (not isinstance(input_shape, (list, tuple)) or not input_shape
                or not all(isinstance(s, (list, tuple)) for s in input_shape)):
            raise ValueError("AttentionLayerFusion expects a non-empty list of [B, H, W, C] "
                             f"tensors, got input shape {input_shape}")
        first = input_shape[0]
        v.check_image_input(first, "AttentionLayerFusion", name="input 0")
        for i, shape in enumerate(input_shape[1:], start=1):
            v.check_image_input(shape, "AttentionLayerFusion", name=f"input {i}")
            for axis in (1, 2, 3):
                if None not in (shape[axis], first[axis]) and shape[axis] != first[axis]:
                    raise ValueError(f"AttentionLayerFusion: all inputs must have the same "
                                     f"shape; input {i} has shape {shape}, input 0 {first}")
        self.theta = self.add_weight(name="theta", shape=(), initializer="zeros")
        super().build(input_shape)

    def call(self, inputs):
        stacked = ops.concatenate(list(inputs), axis=-1)
        b, h, w, nc = ops.shape(stacked)
        # Rows of x are pixels, so x is F^T and F F^T = x^T x.
        # Explicit sizes, not -1: reshape cannot infer a size for an empty batch.
        x = ops.reshape(stacked, (b, h * w, nc))
        x_t = ops.transpose(x, (0, 2, 1))
        attention = ops.softmax(ops.matmul(x_t, x), axis=-1)
        fused = ops.matmul(x, ops.transpose(attention, (0, 2, 1)))  # (A F)^T
        out = ops.cast(self.theta, x.dtype) * fused + x
        return ops.reshape(out, (b, h, w, nc))

    def compute_output_shape(self, input_shape):
        first = input_shape[0]
        return (*first[:3], sum(s[-1] for s in input_shape))


@keras.saving.register_keras_serializable(package="tfdeblur")
class AttentionChannelFusion(keras.layers.Layer):
    """Attention channel fusion module (ACFM): pseudo-3D attention over (channel, H, W).

    Zhang et al., LMFN sec. 3.3.2, Fig. 3, eq. (3). The input is treated as a
    one-channel volume of depth ``C`` (HAN's channel-spatial attention), and::

        out = x + alpha * sigmoid(conv_3x1x1(conv_1x3x3(x))) * x

    ``conv_1x3x3`` is one 3x3 spatial kernel shared by all channels and
    ``conv_3x1x1`` mixes each channel with its two neighbours (zero beyond the
    first and last channel); both have a bias and no activation in between,
    following eq. (3). Pseudo-3D (Qiu et al. 2017) replaces HAN's 3x3x3 kernel.
    ``alpha`` is a learned scalar; the paper does not give its start, so it is
    initialised to 0 like ALFM's ``theta`` and the module starts as the
    identity. Weights are stored in Conv3D layout ``(depth, height, width, 1,
    1)`` with depth running over channels.

    Args:
        **kwargs: standard ``keras.layers.Layer`` arguments.

    Input:
        ``[B, H, W, C]``, any H, W >= 1.

    Output:
        ``[B, H, W, C]``.

    Example:
        >>> x = keras.Input((None, None, 64))
        >>> AttentionChannelFusion()(x).shape
        (None, None, None, 64)
    """

    def build(self, input_shape):
        v.check_image_input(input_shape, "AttentionChannelFusion")
        self.spatial_kernel = self.add_weight(name="spatial_kernel", shape=(1, 3, 3, 1, 1),
                                              initializer="glorot_uniform")
        self.spatial_bias = self.add_weight(name="spatial_bias", shape=(), initializer="zeros")
        self.channel_kernel = self.add_weight(name="channel_kernel", shape=(3, 1, 1, 1, 1),
                                              initializer="glorot_uniform")
        self.channel_bias = self.add_weight(name="channel_bias", shape=(), initializer="zeros")
        self.alpha = self.add_weight(name="alpha", shape=(), initializer="zeros")
        super().build(input_shape)

    def call(self, inputs):
        dtype = inputs.dtype
        channels = inputs.shape[-1]
        # A kernel shared by all channels is a depthwise conv with the kernel tiled.
        k = ops.cast(ops.reshape(self.spatial_kernel, (3, 3, 1, 1)), dtype)
        y = ops.depthwise_conv(inputs, ops.tile(k, (1, 1, channels, 1)), strides=1,
                               padding="same", data_format="channels_last")
        y = y + ops.cast(self.spatial_bias, dtype)
        # Cross-correlation along channels: out[c] = sum_d w[d] * y[c + d - 1].
        w = ops.cast(ops.reshape(self.channel_kernel, (3,)), dtype)
        padded = ops.pad(y, ((0, 0), (0, 0), (0, 0), (1, 1)))
        z = (w[0] * padded[..., :channels] + w[1] * y + w[2] * padded[..., 2:]
             + ops.cast(self.channel_bias, dtype))
        return inputs + ops.cast(self.alpha, dtype) * ops.sigmoid(z) * inputs

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)
