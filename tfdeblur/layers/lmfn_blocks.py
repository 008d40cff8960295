"""Building blocks of LMFN's encoder and reconstruction: down-block, residual block, pixel shuffle.

The attention and distillation parts of LMFN live in ``rfdb.py`` and
``attention_fusion.py``; the network itself in ``tfdeblur/models/lmfn.py``.
"""

from __future__ import annotations

import keras
from keras import ops

from tfdeblur import _validation as v
from tfdeblur.layers._common import halved


def resize_bilinear(x, size):
    """``x`` ``[N, h, w, C]`` resized to ``size = (H, W)``, bilinear with half-pixel centres.

    PyTorch's ``align_corners=False``. ``keras.ops.image.resize`` on every
    backend; sizes known only at run time (a TensorFlow graph for any image
    size, which no other backend has) go to ``tf.image.resize``, the op
    Keras's TensorFlow backend calls, because Keras checks the size in Python.
    """
    h, w = size
    if v.is_int(h) and v.is_int(w):
        return ops.image.resize(x, (h, w), interpolation="bilinear", data_format="channels_last")
    import tensorflow as tf

    return tf.image.resize(x, [h, w], method="bilinear")


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
        self.filters = v.check_int(filters, "filters", owner="DownBlock")
        self.negative_slope = v.check_number(negative_slope, "negative_slope", owner="DownBlock")

    def build(self, input_shape):
        v.check_image_input(input_shape, "DownBlock")
        self.conv_down = keras.layers.Conv2D(self.filters, 3, strides=2, padding="same",
                                             dtype=self.dtype_policy, name="conv_down")
        self.conv_down.build(input_shape)
        self.conv = keras.layers.Conv2D(self.filters, 3, padding="same",
                                        dtype=self.dtype_policy, name="conv")
        self.conv.build(self.conv_down.compute_output_shape(input_shape))
        super().build(input_shape)

    def call(self, inputs):
        x = ops.leaky_relu(self.conv_down(inputs), negative_slope=self.negative_slope)
        return ops.leaky_relu(self.conv(x), negative_slope=self.negative_slope)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], halved(input_shape[1]), halved(input_shape[2]), self.filters)

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
        self.kernel_size = v.standardize_tuple(kernel_size, 2, "kernel_size",
                                               owner="ResidualBlock")

    def build(self, input_shape):
        channels = v.check_image_input(input_shape, "ResidualBlock")
        self.conv1 = keras.layers.Conv2D(channels, self.kernel_size, padding="same",
                                         dtype=self.dtype_policy, name="conv1")
        self.conv1.build(input_shape)
        self.conv2 = keras.layers.Conv2D(channels, self.kernel_size, padding="same",
                                         dtype=self.dtype_policy, name="conv2")
        self.conv2.build(input_shape)
        super().build(input_shape)

    def call(self, inputs):
        return inputs + self.conv2(ops.relu(self.conv1(inputs)))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        return {**super().get_config(), "kernel_size": self.kernel_size}


@keras.saving.register_keras_serializable(package="tfdeblur")
class PixelShuffle(keras.layers.Layer):
    """Sub-pixel up-sampling: moves ``scale**2`` channel groups into space.

    ``keras.ops.depth_to_space`` as a layer (Shi et al., CVPR 2016), used by LMFN's
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
        self.scale = v.check_int(scale, "scale", owner="PixelShuffle")

    def build(self, input_shape):
        channels = v.check_image_input(input_shape, "PixelShuffle")
        if channels % (self.scale ** 2):
            raise ValueError(f"PixelShuffle: input channels must be divisible by scale**2 = "
                             f"{self.scale ** 2}, got {channels}")
        super().build(input_shape)

    def call(self, inputs):
        return ops.depth_to_space(inputs, self.scale)

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
        cs = v.check_image_input(small, "UpsampleAdd", name="small")
        cl = v.check_image_input(large, "UpsampleAdd", name="large")
        if cs != cl:
            raise ValueError(f"UpsampleAdd: both inputs must have the same channels, got {cs} "
                             f"(small) and {cl} (large)")
        super().build(input_shape)

    def call(self, inputs):
        small, large = inputs
        _, h, w, _ = ops.shape(large)
        return large + ops.cast(resize_bilinear(small, (h, w)), large.dtype)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[1])
