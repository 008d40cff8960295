"""SVDN's dilated backbone, feature deconvolution module (neck) and head.

Yuan, Su, Ma, "Efficient Dynamic Scene Deblurring Using Spatially Variant
Deconvolution Network with Optical Flow Guided Training", CVPR 2020
(``shared/papers/svdn_cvpr2020.md``), sec. 3.1-3.2. The paper's Figure 3
(the backbone's exact modules) is not in the text; the choices below follow
what the text states (one stride-2 downsampling, 3x3 convs with dilation
rates 1, 2, 4 at constant width, a fusion module over concatenated stage
outputs, the output split into a blur and a content feature, PReLU
activations) and land on the reported 0.8 M parameters with the defaults.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from tfdeblur import _validation as v
from tfdeblur.layers._common import fresh_initializer, halved
from tfdeblur.layers._empty_batch import pad_empty_batch, take_batch
from tfdeblur.layers.deform_conv import ModulatedDeformConv2D
from tfdeblur.ops._loader import resolve_implementation


def _prelu(name: str, dtype_policy) -> keras.layers.PReLU:
    # One slope per channel (any image size), initialised to He et al.'s 0.25.
    return keras.layers.PReLU(alpha_initializer=keras.initializers.Constant(0.25),
                              shared_axes=[1, 2], name=name, dtype=dtype_policy)


@keras.saving.register_keras_serializable(package="tfdeblur")
class DilatedBackbone(keras.layers.Layer):
    """SVDN's dilated backbone with its fusion module (Yuan et al. 2020, sec. 3.1).

    ``conv_in`` (3x3, ``width``) -> ``conv_down`` (3x3, stride 2) -> for each
    dilation rate ``d`` in ``dilation_rates``, ``convs_per_rate`` 3x3 convs
    with dilation ``d`` (one "stage" per rate), every conv followed by a
    PReLU. Fusion module: the downsampled feature and every stage's output
    are concatenated (the skip connections) and fused by a 3x3 conv +
    PReLU into ``2 * width`` channels, whose first half is the *blur
    feature* (it drives the neck's offsets and masks) and second half the
    *content feature* (what the neck deconvolves). All kernels are 3x3, as
    the paper's Figure 3 states; biases are used throughout.

    Args:
        width: channels of every conv (64 gives SVDN's 0.8 M parameters).
        dilation_rates: one stage per rate (the paper: 1, 2, 4).
        convs_per_rate: 3x3 convs per stage.
        kernel_initializer: initializer of every conv kernel (the paper uses
            Xavier, ``"glorot_uniform"``); biases start at zero.
        **kwargs: standard ``keras.layers.Layer`` arguments.

    Input:
        ``[N, H, W, C]`` image (SVDN: RGB in [0, 1]), any H, W >= 1.

    Output:
        A list ``[blur_feature, content_feature]``, each
        ``[N, ceil(H/2), ceil(W/2), width]``.

    Example:
        >>> blur, content = DilatedBackbone(width=16)(tf.zeros([1, 32, 48, 3]))
        >>> content.shape
        TensorShape([1, 16, 24, 16])
    """

    def __init__(self, width: int = 64, dilation_rates=(1, 2, 4), convs_per_rate: int = 1,
                 kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        owner = "DilatedBackbone"
        v.check_tensorflow_backend(owner)
        self.width = v.check_int(width, "width", owner=owner)
        self.dilation_rates = v.check_int_sequence(dilation_rates, "dilation_rates", owner=owner)
        self.convs_per_rate = v.check_int(convs_per_rate, "convs_per_rate", owner=owner)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    def _conv(self, name, filters, strides=1, dilation=1):
        return keras.layers.Conv2D(filters, 3, strides=strides, dilation_rate=dilation,
                                   padding="same", name=name,
                                   kernel_initializer=fresh_initializer(self.kernel_initializer),
                                   dtype=self.dtype_policy)

    def build(self, input_shape):
        v.check_image_input(input_shape, "DilatedBackbone")
        w = self.width
        self.conv_in = self._conv("conv_in", w)
        self.conv_in.build((None, None, None, input_shape[-1]))
        self.conv_down = self._conv("conv_down", w, strides=2)
        self.conv_down.build((None, None, None, w))
        self.prelu_in = _prelu("prelu_in", self.dtype_policy)
        self.prelu_down = _prelu("prelu_down", self.dtype_policy)
        for p in (self.prelu_in, self.prelu_down):
            p.build((None, None, None, w))
        self.stage_convs, self.stage_prelus = [], []
        for d in self.dilation_rates:
            for j in range(self.convs_per_rate):
                conv = self._conv(f"conv_d{d}_{j + 1}", w, dilation=d)
                conv.build((None, None, None, w))
                prelu = _prelu(f"prelu_d{d}_{j + 1}", self.dtype_policy)
                prelu.build((None, None, None, w))
                self.stage_convs.append(conv)
                self.stage_prelus.append(prelu)
        self.fusion = self._conv("fusion", 2 * w)
        self.fusion.build((None, None, None, (1 + len(self.dilation_rates)) * w))
        self.prelu_fusion = _prelu("prelu_fusion", self.dtype_policy)
        self.prelu_fusion.build((None, None, None, 2 * w))
        super().build(input_shape)

    def call(self, image):
        n = tf.shape(image)[0]
        x = self.prelu_in(self.conv_in(pad_empty_batch(image)))
        x = self.prelu_down(self.conv_down(x))
        stage_outputs = [x]
        for i, (conv, prelu) in enumerate(zip(self.stage_convs, self.stage_prelus, strict=True)):
            x = prelu(conv(x))
            if (i + 1) % self.convs_per_rate == 0:
                stage_outputs.append(x)
        fused = self.prelu_fusion(self.fusion(tf.concat(stage_outputs, axis=-1)))
        fused = take_batch(fused, n)
        return [fused[..., : self.width], fused[..., self.width:]]

    def compute_output_shape(self, input_shape):
        shape = (input_shape[0], halved(input_shape[1]), halved(input_shape[2]), self.width)
        return [shape, shape]

    def get_config(self):
        return {**super().get_config(), "width": self.width,
                "dilation_rates": list(self.dilation_rates),
                "convs_per_rate": self.convs_per_rate,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer)}


@keras.saving.register_keras_serializable(package="tfdeblur")
class FeatureDeconvolution(keras.layers.Layer):
    """SVDN's feature deconvolution module, the neck (Yuan et al. 2020, sec. 3.2).

    Two modulated deformable convolutions (DCNv2, ``kernel_size`` x
    ``kernel_size`` = 25 sampling points in the paper) whose offsets and
    masks come from the blur feature ``x`` (eqs. 4-5)::

        ow1 = Conv(x)                                  # DCN1's offsets + masks
        ow2 = Conv(PReLU(Conv(PReLU(ow1))))            # DCN2's, derived from ow1
        y   = PReLU(DCN2(PReLU(DCN1(content; ow1)); ow2))

    Each ``ow`` has ``3 K`` channels for ``K = kernel_size**2`` taps: the
    first ``2 K`` are the offsets in the deformable op's layout (``dy, dx``
    per tap, taps row-major) and the last ``K`` the mask logits, which go
    through a sigmoid (DCNv2). The offset convs are 3x3 and, as everything in
    the paper, Xavier-initialised (not zero-initialised as in DCNv2's own
    layer). PReLU after each DCN is a choice the paper leaves open.

    With ``return_positions=True`` the layer also returns DCN1's sampling
    positions from the same forward pass, for the optical-flow position loss
    (sec. 3.3): ``[N, h, w, K, 2]``, ``(py, px)`` = regular 5x5 grid around
    the output pixel + learned offset, in pixels of the feature map.

    Args:
        filters: output channels of both DCNs (the content feature's width
            in SVDN).
        kernel_size: DCN kernel size (5: 25 sampling points).
        offset_hidden: channels of the hidden conv of the ``ow2`` branch;
            None means ``3 K`` (the width of ``ow1``).
        return_positions: also return DCN1's sampling positions.
        implementation: deformable-convolution implementation, ``"auto"``,
            ``"compiled"`` or ``"portable"``.
        kernel_initializer: initializer of every kernel.
        **kwargs: standard ``keras.layers.Layer`` arguments.

    Input:
        A list ``[blur_feature, content_feature]``: ``[N, h, w, Cb]`` and
        ``[N, h, w, Cc]``, any h, w >= 1.

    Output:
        ``[N, h, w, filters]``, or a tuple ``(features, positions)`` with
        positions ``[N, h, w, K, 2]``.

    Example:
        >>> neck = FeatureDeconvolution(filters=16, return_positions=True)
        >>> y, pos = neck([tf.zeros([1, 8, 8, 16]), tf.zeros([1, 8, 8, 16])])
        >>> pos.shape
        TensorShape([1, 8, 8, 25, 2])
    """

    def __init__(self, filters: int = 64, kernel_size: int = 5, offset_hidden: int | None = None,
                 return_positions: bool = False, implementation: str = "auto",
                 kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        owner = "FeatureDeconvolution"
        v.check_tensorflow_backend(owner)
        self.filters = v.check_int(filters, "filters", owner=owner)
        self.kernel_size = v.check_int(kernel_size, "kernel_size", owner=owner)
        self.offset_hidden = v.check_int(offset_hidden, "offset_hidden", owner=owner,
                                         allow_none=True)
        self.return_positions = v.check_bool(return_positions, "return_positions", owner=owner)
        self.implementation = v.check_implementation(implementation, owner=owner)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        # XLA cannot compile the compiled op, and Keras's jit_compile="auto" picks
        # XLA on GPUs for models whose layers all allow it.
        self.supports_jit = (implementation != "compiled"
                             and resolve_implementation(implementation) == "portable")

    @property
    def taps(self) -> int:
        """Sampling points per DCN (``kernel_size ** 2``)."""
        return self.kernel_size ** 2

    def _conv(self, name, filters):
        return keras.layers.Conv2D(filters, 3, padding="same", name=name,
                                   kernel_initializer=fresh_initializer(self.kernel_initializer),
                                   dtype=self.dtype_policy)

    def _dcn(self, name, return_positions):
        return ModulatedDeformConv2D(
            self.filters, self.kernel_size, padding="same", offset_mode="external",
            return_positions=return_positions, implementation=self.implementation,
            kernel_initializer=fresh_initializer(self.kernel_initializer), name=name,
            dtype=self.dtype_policy)

    def build(self, input_shape):
        if not isinstance(input_shape, (list, tuple)) or len(input_shape) != 2 or \
                not isinstance(input_shape[0], (list, tuple)):
            raise ValueError("FeatureDeconvolution expects a list [blur_feature, "
                             f"content_feature], got input shape {input_shape}")
        blur, content = (tuple(s) for s in input_shape)
        v.check_image_input(blur, "FeatureDeconvolution", name="blur_feature")
        v.check_image_input(content, "FeatureDeconvolution", name="content_feature")
        ow = 3 * self.taps
        hidden = self.offset_hidden or ow
        k2 = self.taps
        self.ow1_conv = self._conv("ow1_conv", ow)
        self.ow1_conv.build((None, None, None, blur[-1]))
        self.ow1_prelu = _prelu("ow1_prelu", self.dtype_policy)
        self.ow1_prelu.build((None, None, None, ow))
        self.ow2_hidden = self._conv("ow2_hidden", hidden)
        self.ow2_hidden.build((None, None, None, ow))
        self.ow2_prelu = _prelu("ow2_prelu", self.dtype_policy)
        self.ow2_prelu.build((None, None, None, hidden))
        self.ow2_conv = self._conv("ow2_conv", ow)
        self.ow2_conv.build((None, None, None, hidden))
        feat = (None, None, None)
        self.dcn1 = self._dcn("dcn1", self.return_positions)
        self.dcn1.build([(*feat, content[-1]), (*feat, 2 * k2), (*feat, k2)])
        self.dcn2 = self._dcn("dcn2", False)
        self.dcn2.build([(*feat, self.filters), (*feat, 2 * k2), (*feat, k2)])
        self.dcn1_prelu = _prelu("dcn1_prelu", self.dtype_policy)
        self.dcn2_prelu = _prelu("dcn2_prelu", self.dtype_policy)
        for p in (self.dcn1_prelu, self.dcn2_prelu):
            p.build((None, None, None, self.filters))
        super().build(input_shape)

    def _split(self, ow: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        return ow[..., : 2 * self.taps], tf.sigmoid(ow[..., 2 * self.taps:])

    def call(self, inputs):
        blur, content = inputs
        n = tf.shape(content)[0]
        blur, content = pad_empty_batch(blur), pad_empty_batch(content)
        ow1 = self.ow1_conv(blur)
        ow2 = self.ow2_conv(self.ow2_prelu(self.ow2_hidden(self.ow1_prelu(ow1))))
        offset1, mask1 = self._split(ow1)
        offset2, mask2 = self._split(ow2)
        y = self.dcn1([content, offset1, mask1])
        if self.return_positions:
            y, positions = y
        y = self.dcn1_prelu(y)
        y = self.dcn2_prelu(self.dcn2([y, offset2, mask2]))
        if self.return_positions:
            return take_batch(y, n), take_batch(positions, n)
        return take_batch(y, n)

    def compute_output_shape(self, input_shape):
        content = input_shape[1]
        y = (*content[:3], self.filters)
        if self.return_positions:
            return y, (*content[:3], self.taps, 2)
        return y

    def get_config(self):
        return {**super().get_config(), "filters": self.filters,
                "kernel_size": self.kernel_size, "offset_hidden": self.offset_hidden,
                "return_positions": self.return_positions,
                "implementation": self.implementation,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer)}


@keras.saving.register_keras_serializable(package="tfdeblur")
class ReconstructionHead(keras.layers.Layer):
    """SVDN's head: transposed-conv x2 upsampling, RGB reconstruction (Yuan et al. 2020, sec. 3.1).

    ``Conv2DTranspose(filters, 4, strides=2, "same")`` + PReLU, then a 3x3
    conv to ``out_channels``, no activation. The output is the residual
    that SVDN's global skip adds to the input image. The 4x4 kernel (an
    even multiple of the stride, so every output pixel gets the same number
    of taps, avoiding checkerboard artefacts) is a choice the paper leaves
    open.

    Args:
        filters: channels of the upsampled feature.
        out_channels: output channels (3 for RGB).
        kernel_initializer: initializer of both kernels.
        zero_init: initialise the reconstruction conv's kernel and bias to
            zero (instead of ``kernel_initializer``), so that the head outputs
            0 until trained: SVDN's ``identity_init``.
        **kwargs: standard ``keras.layers.Layer`` arguments.

    Input:
        ``[N, h, w, C]``, any h, w >= 1.

    Output:
        ``[N, 2h, 2w, out_channels]``.

    Example:
        >>> ReconstructionHead(filters=8)(tf.zeros([1, 5, 7, 16])).shape
        TensorShape([1, 10, 14, 3])
    """

    def __init__(self, filters: int = 32, out_channels: int = 3,
                 kernel_initializer="glorot_uniform", zero_init: bool = False, **kwargs):
        super().__init__(**kwargs)
        owner = "ReconstructionHead"
        v.check_tensorflow_backend(owner)
        self.filters = v.check_int(filters, "filters", owner=owner)
        self.out_channels = v.check_int(out_channels, "out_channels", owner=owner)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.zero_init = v.check_bool(zero_init, "zero_init", owner=owner)

    def build(self, input_shape):
        v.check_image_input(input_shape, "ReconstructionHead")
        self.upsample = keras.layers.Conv2DTranspose(
            self.filters, 4, strides=2, padding="same", name="upsample",
            kernel_initializer=fresh_initializer(self.kernel_initializer), dtype=self.dtype_policy)
        self.upsample.build((None, None, None, input_shape[-1]))
        self.prelu = _prelu("prelu", self.dtype_policy)
        self.prelu.build((None, None, None, self.filters))
        self.reconstruct = keras.layers.Conv2D(
            self.out_channels, 3, padding="same", name="reconstruct",
            kernel_initializer=("zeros" if self.zero_init
                                else fresh_initializer(self.kernel_initializer)),
            bias_initializer="zeros", dtype=self.dtype_policy)
        self.reconstruct.build((None, None, None, self.filters))
        super().build(input_shape)

    def call(self, x):
        n = tf.shape(x)[0]
        y = self.reconstruct(self.prelu(self.upsample(pad_empty_batch(x))))
        return take_batch(y, n)

    def compute_output_shape(self, input_shape):
        def up(n):
            return None if n is None else 2 * n
        return (input_shape[0], up(input_shape[1]), up(input_shape[2]), self.out_channels)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters,
                "out_channels": self.out_channels,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "zero_init": self.zero_init}
