"""Building blocks of LMFN's encoder and reconstruction: down-block, residual block, pixel shuffle.

The attention and distillation parts of LMFN live in ``rfdb.py`` and
``attention_fusion.py``; the network itself in ``tfdeblur/models/lmfn.py``.
"""

from __future__ import annotations

import keras
import tensorflow as tf


def _positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def _kernel_size(value, name: str = "kernel_size") -> tuple[int, int]:
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value, value)
    if (not isinstance(value, (tuple, list)) or len(value) != 2
            or not all(isinstance(k, int) and not isinstance(k, bool) and k >= 1 for k in value)):
        raise ValueError(f"{name} must be a positive integer or a pair of them, got {value!r}")
    return int(value[0]), int(value[1])


def _check_image_shape(input_shape, layer: str) -> int:
    """Checks ``[N, H, W, C]`` with known C and returns C."""
    if len(input_shape) != 4:
        raise ValueError(f"{layer} expects a rank-4 [N, H, W, C] input, got shape {input_shape}")
    if input_shape[-1] is None:
        raise ValueError(f"{layer} needs the channel dimension of its input to be known, "
                         f"got shape {input_shape}")
    return int(input_shape[-1])


@keras.saving.register_keras_serializable(package="tfdeblur")
class DownBlock(keras.layers.Layer):
    """Halves the resolution: strided 3x3 conv, LeakyReLU, 3x3 conv, LeakyReLU.

    The down-block of LMFN's multi-scale hierarchical fusion encoder (Zhang et
    al., "Image deblurring based on lightweight multi-information fusion
    network", sec. 3.2), which takes it from EDVR's feature pyramid (Wang et
    al. 2019): a 3x3 convolution with stride 2 and a 3x3 convolution, each
    followed by LeakyReLU(0.1). Padding is Keras ``"same"``, so a side ``n``
    becomes ``ceil(n / 2)``.

    Args:
        filters: output channels.
        negative_slope: slope of the LeakyReLU for negative inputs.
        **kwargs: standard ``keras.layers.Layer`` arguments.

    Input:
        ``[N, H, W, C]``, any H, W >= 1.

    Output:
        ``[N, ceil(H / 2), ceil(W / 2), filters]``.

    Example:
        >>> x = keras.Input((None, None, 64))
        >>> DownBlock(64)(x).shape
        (None, None, None, 64)
    """

    def __init__(self, filters: int, negative_slope: float = 0.1, **kwargs):
        super().__init__(**kwargs)
        self.filters = _positive_int(filters, "filters")
        self.negative_slope = float(negative_slope)

    def build(self, input_shape):
        _check_image_shape(input_shape, "DownBlock")
        self.conv_down = keras.layers.Conv2D(self.filters, 3, strides=2, padding="same",
                                             dtype=self.dtype_policy, name="conv_down")
        self.conv_down.build(input_shape)
        self.conv = keras.layers.Conv2D(self.filters, 3, padding="same",
                                        dtype=self.dtype_policy, name="conv")
        self.conv.build(self.conv_down.compute_output_shape(input_shape))
        super().build(input_shape)

    def call(self, inputs):
        x = tf.nn.leaky_relu(self.conv_down(inputs), alpha=self.negative_slope)
        return tf.nn.leaky_relu(self.conv(x), alpha=self.negative_slope)

    def compute_output_shape(self, input_shape):
        def half(n):
            return None if n is None else -(-n // 2)
        return (input_shape[0], half(input_shape[1]), half(input_shape[2]), self.filters)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters,
                "negative_slope": self.negative_slope}


@keras.saving.register_keras_serializable(package="tfdeblur")
class ResidualBlock(keras.layers.Layer):
    """``x + conv(relu(conv(x)))``, without normalisation.

    The residual block that follows each down-block in LMFN's encoder (Zhang et
    al., LMFN sec. 3.2), taken from Nah et al.'s DeepDeblur (CVPR 2017), whose
    5x5 kernels LMFN uses (``resblock_kernel=5``: with them its Table 4
    parameter counts fit); the layer's default is 3x3. Both convolutions keep
    the input's channels.

    Args:
        kernel_size: kernel of both convolutions, an int or ``(kh, kw)``.
        **kwargs: standard ``keras.layers.Layer`` arguments.

    Input:
        ``[N, H, W, C]``, any H, W >= 1.

    Output:
        ``[N, H, W, C]``.

    Example:
        >>> x = keras.Input((None, None, 64))
        >>> ResidualBlock()(x).shape
        (None, None, None, 64)
    """

    def __init__(self, kernel_size: int | tuple[int, int] = 3, **kwargs):
        super().__init__(**kwargs)
        self.kernel_size = _kernel_size(kernel_size)

    def build(self, input_shape):
        channels = _check_image_shape(input_shape, "ResidualBlock")
        self.conv1 = keras.layers.Conv2D(channels, self.kernel_size, padding="same",
                                         dtype=self.dtype_policy, name="conv1")
        self.conv1.build(input_shape)
        self.conv2 = keras.layers.Conv2D(channels, self.kernel_size, padding="same",
                                         dtype=self.dtype_policy, name="conv2")
        self.conv2.build(input_shape)
        super().build(input_shape)

    def call(self, inputs):
        return inputs + self.conv2(tf.nn.relu(self.conv1(inputs)))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        return {**super().get_config(), "kernel_size": self.kernel_size}


@keras.saving.register_keras_serializable(package="tfdeblur")
class PixelShuffle(keras.layers.Layer):
    """Sub-pixel up-sampling: moves ``scale**2`` channel groups into space.

    ``tf.nn.depth_to_space`` as a layer (Shi et al., CVPR 2016), used by LMFN's
    reconstruction in the way of RFDN's up-sampler (Liu et al. 2020): a
    convolution to ``3 * scale**2`` channels, then this layer. The channel
    order is TensorFlow's: output pixel ``(scale*i + a, scale*j + b)``, channel
    ``c`` comes from input channel ``(a * scale + b) * C_out + c``.

    Args:
        scale: up-sampling factor.
        **kwargs: standard ``keras.layers.Layer`` arguments.

    Input:
        ``[N, H, W, C]`` with ``C`` divisible by ``scale**2``, any H, W >= 1.

    Output:
        ``[N, scale * H, scale * W, C / scale**2]``.

    Example:
        >>> x = keras.Input((None, None, 12))
        >>> PixelShuffle(2)(x).shape
        (None, None, None, 3)
    """

    def __init__(self, scale: int = 2, **kwargs):
        super().__init__(**kwargs)
        self.scale = _positive_int(scale, "scale")

    def build(self, input_shape):
        channels = _check_image_shape(input_shape, "PixelShuffle")
        if channels % (self.scale ** 2):
            raise ValueError(f"PixelShuffle: input channels must be divisible by scale**2 = "
                             f"{self.scale ** 2}, got {channels}")
        super().build(input_shape)

    def call(self, inputs):
        return tf.nn.depth_to_space(inputs, self.scale)

    def compute_output_shape(self, input_shape):
        n, h, w, c = input_shape
        s = self.scale
        return (n, None if h is None else h * s, None if w is None else w * s, c // (s * s))

    def get_config(self):
        return {**super().get_config(), "scale": self.scale}


@keras.saving.register_keras_serializable(package="tfdeblur")
class UpsampleAdd(keras.layers.Layer):
    """Bilinearly resizes a smaller-scale feature to its neighbour's size and adds it.

    The fusion step of LMFN's encoder (Zhang et al., LMFN sec. 3.2: "the
    small-scale features ... are up-sampled and then element-wise added with
    the features of adjacent layers"). Resizing to the neighbour's exact size
    (half-pixel centres, PyTorch's ``align_corners=False``) rather than by a
    fixed factor works for any pair of sizes, also when only known at run
    time, which Keras' ``UpSampling2D(interpolation="bilinear")`` is not.

    Args:
        **kwargs: standard ``keras.layers.Layer`` arguments.

    Input:
        A list ``[small, large]``: ``[N, h, w, C]`` and ``[N, H, W, C]``, any
        sizes >= 1.

    Output:
        ``[N, H, W, C]``: ``large + resize(small, (H, W))``.

    Example:
        >>> small = keras.Input((None, None, 64))
        >>> large = keras.Input((None, None, 64))
        >>> UpsampleAdd()([small, large]).shape
        (None, None, None, 64)
    """

    def build(self, input_shape):
        if not isinstance(input_shape, (list, tuple)) or len(input_shape) != 2:
            raise ValueError(f"UpsampleAdd expects a list [small, large], got {input_shape}")
        small, large = input_shape
        cs = _check_image_shape(small, "UpsampleAdd")
        cl = _check_image_shape(large, "UpsampleAdd")
        if cs != cl:
            raise ValueError(f"UpsampleAdd: both inputs must have the same channels, got {cs} "
                             f"(small) and {cl} (large)")
        super().build(input_shape)

    def call(self, inputs):
        small, large = inputs
        h, w = large.shape[1], large.shape[2]
        if h is None or w is None:
            shape = tf.shape(large)
            h = shape[1] if h is None else h
            w = shape[2] if w is None else w
        up = tf.image.resize(small, [h, w], method="bilinear")
        return large + tf.cast(up, large.dtype)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[1])
