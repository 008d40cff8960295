"""SVRNN's weight-generation network and RNN-deconvolution stage.

Zhang et al., "Dynamic Scene Deblurring Using Spatially Variant Recurrent
Neural Networks", CVPR 2018 (``shared/papers/svrnn_cvpr2018.md``), Table 1.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from tfdeblur import _validation as v
from tfdeblur.layers._common import fresh_initializer, halved
from tfdeblur.layers._empty_batch import pad_empty_batch, take_batch
from tfdeblur.layers.spatial_rnn import SpatialRNN
from tfdeblur.ops._loader import resolve_implementation

# conv3-conv11 of the weight-generation network are VGG16's first nine convs:
# (name, width multiplier of ``width``, max-pool before it).
_ENCODER = (
    ("conv3", 1, False), ("conv4", 1, False),
    ("conv5", 2, True), ("conv6", 2, False),
    ("conv7", 4, True), ("conv8", 4, False), ("conv9", 4, False),
    ("conv10", 8, True), ("conv11", 8, False),
)
VGG16_ENCODER_LAYERS = ("block1_conv1", "block1_conv2", "block2_conv1", "block2_conv2",
                        "block3_conv1", "block3_conv2", "block3_conv3",
                        "block4_conv1", "block4_conv2")

# The authors' Caffe net slices each RNN's 4C gate channels as (left->right,
# top->bottom, right->left, bottom->top); SpatialRNN takes (left->right,
# right->left, top->bottom, bottom->top). Keeping the authors' layout lets
# their conv16 weights be used channel for channel.
_CAFFE_TO_SPATIAL_RNN = (0, 2, 1, 3)


def _upsample2x(x: tf.Tensor, axis: int) -> tf.Tensor:
    """Bilinear x2 upsampling along ``axis`` (half-pixel centres, edge clamped).

    Equal to ``tf.image.resize`` to twice the size, written out because that
    op computes in float32 whatever the input dtype.
    """
    n = tf.shape(x)[axis]
    prev = tf.concat([tf.gather(x, [0], axis=axis), tf.gather(x, tf.range(n - 1), axis=axis)],
                     axis=axis)
    nxt = tf.concat([tf.gather(x, tf.range(1, n), axis=axis), tf.gather(x, [n - 1], axis=axis)],
                    axis=axis)
    y = tf.stack([0.75 * x + 0.25 * prev, 0.75 * x + 0.25 * nxt], axis=axis + 1)
    shape = tf.shape(x)
    new_shape = tf.tensor_scatter_nd_update(shape, [[axis]], [2 * n])
    return tf.reshape(y, new_shape)


def _upsample_to(x: tf.Tensor, reference: tf.Tensor) -> tf.Tensor:
    """Bilinear x2 upsampling of ``x``, cropped to ``reference``'s height and width.

    Max pooling pads odd sides at the bottom/right, so cropping the extra
    row/column keeps the upsampled grid aligned with the skip's pixels.
    """
    y = _upsample2x(_upsample2x(x, 1), 2)
    shape = tf.shape(reference)
    return y[:, : shape[1], : shape[2], :]


@keras.saving.register_keras_serializable(package="tfdeblur")
class BilinearUpsampling2x(keras.layers.Layer):
    """Bilinear x2 upsampling (half-pixel centres), the "resize" of Zhang et al. 2018, Table 1.

    Same values as ``keras.layers.UpSampling2D(2, interpolation="bilinear")``
    but written with shape-agnostic ops: that layer cannot run in a graph
    whose height and width are unknown (a SavedModel for any image size),
    and ``tf.image.resize`` computes in float32 whatever the input dtype.

    Input: ``[N, H, W, C]``, any size (H, W >= 1). Output: ``[N, 2H, 2W, C]``.

    Example:
        >>> BilinearUpsampling2x()(tf.zeros([1, 3, 5, 8])).shape
        TensorShape([1, 6, 10, 8])
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        v.check_tensorflow_backend("BilinearUpsampling2x")

    def call(self, x):
        return _upsample2x(_upsample2x(x, 1), 2)

    def compute_output_shape(self, input_shape):
        def up(n):
            return None if n is None else 2 * n
        return (input_shape[0], up(input_shape[1]), up(input_shape[2]), input_shape[3])


@keras.saving.register_keras_serializable(package="tfdeblur")
class WeightGenerationNetwork(keras.layers.Layer):
    """SVRNN's RNN weight-generation network, conv3-conv16 (Zhang et al. 2018, sec. 3.2).

    A VGG16-like encoder on the blurry image (conv3-conv11, three 2x2 max
    pools) and a decoder with two bilinear x2 upsamplings and skip
    concatenations (``[conv8, up(conv12)]``, ``[conv6, up(conv14)]``, the
    skip first as in the authors' net). 3x3 convs, ReLU after each except
    conv16, which is followed by tanh: its channels are the spatially
    variant RNN gates, at half the input resolution.

    Channels with ``width=w``: conv3-4 w, conv5-6 2w, conv7-9 4w, conv10-11
    8w, conv12 4w, conv13-14 2w, conv15 4w, conv16 ``gate_channels``; the
    paper has w = 64 (VGG16's widths, required for VGG16 initialisation,
    see :func:`tfdeblur.models.vgg16_init.init_from_vgg16`) and 512 gate
    channels (4 RNNs x 4 directions x 32). The sub-layers are attributes
    ``conv3`` ... ``conv16``. Max pooling uses "same" padding and the x2
    upsamplings are cropped to the skip's size, so odd sides work (the
    output then has ``ceil(H / 2)`` x ``ceil(W / 2)`` pixels).

    Args:
        width: channels of conv3 (``w`` above).
        gate_channels: channels of conv16 (the gates).
        kernel_initializer: initializer of every conv kernel (the paper
            uses Xavier, i.e. ``"glorot_uniform"``); biases start at zero.
        **kwargs: standard ``keras.layers.Layer`` arguments.

    Input:
        ``[N, H, W, 3]`` (or any channel count) blurry image, any H, W >= 1
        (SVRNN pads to a multiple of 8 first, so the poolings are exact).

    Output:
        ``[N, ceil(H/2), ceil(W/2), gate_channels]`` gates in (-1, 1).

    Example:
        >>> net = WeightGenerationNetwork(width=8, gate_channels=64)
        >>> net(tf.zeros([1, 16, 24, 3])).shape
        TensorShape([1, 8, 12, 64])
    """

    def __init__(self, width: int = 64, gate_channels: int = 512,
                 kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        owner = "WeightGenerationNetwork"
        v.check_tensorflow_backend(owner)
        self.width = v.check_int(width, "width", owner=owner)
        self.gate_channels = v.check_int(gate_channels, "gate_channels", owner=owner)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    def _conv(self, name: str, filters: int, activation: str) -> keras.layers.Conv2D:
        return keras.layers.Conv2D(
            filters, 3, padding="same", activation=activation, name=name,
            kernel_initializer=fresh_initializer(self.kernel_initializer),
            dtype=self.dtype_policy)

    def build(self, input_shape):
        v.check_image_input(input_shape, "WeightGenerationNetwork", known_channels=False)
        w = self.width
        shape = (None, None, None, input_shape[-1])
        for name, mult, _ in _ENCODER:
            conv = self._conv(name, mult * w, "relu")
            conv.build(shape)
            setattr(self, name, conv)
            shape = (None, None, None, mult * w)
        self.pool = keras.layers.MaxPooling2D(2, padding="same", dtype=self.dtype_policy)
        decoder = (("conv12", 8 * w, 4 * w, "relu"),
                   ("conv13", 4 * w + 4 * w, 2 * w, "relu"),   # [conv8, up(conv12)]
                   ("conv14", 2 * w, 2 * w, "relu"),
                   ("conv15", 2 * w + 2 * w, 4 * w, "relu"),   # [conv6, up(conv14)]
                   ("conv16", 4 * w, self.gate_channels, "tanh"))
        for name, cin, cout, act in decoder:
            conv = self._conv(name, cout, act)
            conv.build((None, None, None, cin))
            setattr(self, name, conv)
        super().build(input_shape)

    def call(self, image):
        x = pad_empty_batch(image)
        skips = {}
        for name, _, pool in _ENCODER:
            if pool:
                x = self.pool(x)
            x = getattr(self, name)(x)
            skips[name] = x
        x = self.conv12(x)
        x = self.conv13(tf.concat([skips["conv8"], _upsample_to(x, skips["conv8"])], axis=-1))
        x = self.conv14(x)
        x = self.conv15(tf.concat([skips["conv6"], _upsample_to(x, skips["conv6"])], axis=-1))
        return take_batch(self.conv16(x), tf.shape(image)[0])

    def compute_output_shape(self, input_shape):
        return (input_shape[0], halved(input_shape[1]), halved(input_shape[2]), self.gate_channels)

    def get_config(self):
        return {**super().get_config(), "width": self.width,
                "gate_channels": self.gate_channels,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer)}


@keras.saving.register_keras_serializable(package="tfdeblur")
class RNNDeconvolution(keras.layers.Layer):
    """SVRNN's RNN-deconvolution stage, RNNs + fusion convs (Zhang et al. 2018, sec. 3.2).

    ``num_rnns`` times: a four-direction spatially variant RNN
    (:class:`~tfdeblur.layers.SpatialRNN`) on the current features with its
    own slice of the gates, concatenation of the four directions, and a 3x3
    convolution with ``filters`` outputs + LeakyReLU(0.1) that fuses them
    (the paper's rnn1/conv17 ... rnn4/conv20).

    Gate layout: RNN ``i`` (from 0) reads the 4C gate channels starting at
    ``4 * (C_in + i' * filters)`` where the first RNN filters the ``C_in``
    input channels and the others ``filters`` channels; within an RNN's
    block the directions come in the authors' order (left->right,
    top->bottom, right->left, bottom->top), each C channels. With the paper's
    configuration (C_in = filters = 32, 4 RNNs) that is conv16's 512 channels
    as 4 blocks of 128.

    Args:
        filters: output channels of each fusion convolution (32 in the paper).
        num_rnns: number of RNN + fusion-conv pairs (4 in the paper).
        negative_slope: LeakyReLU slope after each fusion conv.
        implementation: ``"auto"``, ``"compiled"`` or ``"portable"``, passed
            to the spatial RNNs.
        kernel_initializer: initializer of the fusion conv kernels.
        **kwargs: standard ``keras.layers.Layer`` arguments.

    Input:
        A list ``[features, gates]``: features ``[N, H, W, C_in]``, gates
        ``[N, H, W, 4 * (C_in + (num_rnns - 1) * filters)]``; any H, W >= 1.

    Output:
        ``[N, H, W, filters]``.

    Example:
        >>> stage = RNNDeconvolution(filters=8, num_rnns=2)
        >>> feats, gates = tf.zeros([1, 10, 12, 8]), tf.zeros([1, 10, 12, 64])
        >>> stage([feats, gates]).shape
        TensorShape([1, 10, 12, 8])
    """

    def __init__(self, filters: int = 32, num_rnns: int = 4, negative_slope: float = 0.1,
                 implementation: str = "auto", kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        owner = "RNNDeconvolution"
        v.check_tensorflow_backend(owner)
        self.filters = v.check_int(filters, "filters", owner=owner)
        self.num_rnns = v.check_int(num_rnns, "num_rnns", owner=owner)
        self.negative_slope = v.check_number(negative_slope, "negative_slope", owner=owner)
        self.implementation = v.check_implementation(implementation, owner=owner)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        # XLA cannot compile the compiled op, and Keras's jit_compile="auto" picks
        # XLA on GPUs for models whose layers all allow it.
        self.supports_jit = (implementation != "compiled"
                             and resolve_implementation(implementation) == "portable")

    def gate_channels(self, input_channels: int) -> int:
        """Gate channels needed for ``input_channels`` input features."""
        return 4 * (input_channels + (self.num_rnns - 1) * self.filters)

    def build(self, input_shape):
        if not isinstance(input_shape, (list, tuple)) or len(input_shape) != 2:
            raise ValueError("RNNDeconvolution expects a list [features, gates], "
                             f"got input shape {input_shape}")
        feat, gates = (tuple(s) for s in input_shape)
        v.check_image_input(feat, "RNNDeconvolution", name="features")
        v.check_image_input(gates, "RNNDeconvolution", name="gates", known_channels=False)
        expected = self.gate_channels(feat[-1])
        if gates[-1] is not None and gates[-1] != expected:
            raise ValueError(
                f"RNNDeconvolution: gates must have 4 x ({feat[-1]} + {self.num_rnns - 1} x "
                f"{self.filters}) = {expected} channels for {feat[-1]}-channel features and "
                f"{self.num_rnns} RNNs, got {gates[-1]}")
        self.input_channels = feat[-1]
        self.rnns = []
        self.fusions = []
        cin = feat[-1]
        for i in range(self.num_rnns):
            rnn = SpatialRNN(implementation=self.implementation, name=f"rnn{i + 1}",
                             dtype=self.dtype_policy)
            conv = keras.layers.Conv2D(
                self.filters, 3, padding="same", name=f"fusion{i + 1}",
                kernel_initializer=fresh_initializer(self.kernel_initializer),
                dtype=self.dtype_policy)
            conv.build((None, None, None, 4 * cin))
            self.rnns.append(rnn)
            self.fusions.append(conv)
            cin = self.filters
        super().build(input_shape)

    def _gate_slices(self, gates: tf.Tensor) -> list[tf.Tensor]:
        out = []
        start = 0
        cin = self.input_channels
        for _ in range(self.num_rnns):
            blocks = [gates[..., start + k * cin: start + (k + 1) * cin] for k in range(4)]
            out.append(tf.concat([blocks[k] for k in _CAFFE_TO_SPATIAL_RNN], axis=-1))
            start += 4 * cin
            cin = self.filters
        return out

    def call(self, inputs):
        features, gates = inputs
        x, gates = pad_empty_batch(features), pad_empty_batch(gates)
        for rnn, fusion, g in zip(self.rnns, self.fusions, self._gate_slices(gates),
                                  strict=True):
            x = fusion(rnn([x, g]))
            # Not tf.nn.leaky_relu: its alpha is a float32 attribute.
            x = tf.where(x >= 0, x, self.negative_slope * x)
        return take_batch(x, tf.shape(features)[0])

    def compute_output_shape(self, input_shape):
        feat = input_shape[0]
        return (*feat[:-1], self.filters)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "num_rnns": self.num_rnns,
                "negative_slope": self.negative_slope, "implementation": self.implementation,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer)}
