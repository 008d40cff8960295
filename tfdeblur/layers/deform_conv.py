"""Keras layer for the modulated deformable convolution (DCNv2)."""

from __future__ import annotations

import keras
import tensorflow as tf

from tfdeblur import _validation as v
from tfdeblur.ops._loader import resolve_implementation
from tfdeblur.ops.deform_conv import (
    _Geometry,
    deform_conv_sampling_positions,
    modulated_deform_conv2d,
    normalize_padding,
)

OFFSET_MODES = ("internal", "external")


def _dense_conv(x: tf.Tensor, kernel: tf.Tensor, geo: _Geometry) -> tf.Tensor:
    """Ordinary convolution with exactly the deformable convolution's geometry.

    "same" follows the same rule in both ops. ``tf.nn.conv2d`` rejects
    strides > 1 together with dilations > 1; that case pads explicitly,
    convolves at stride 1 and takes every stride-th output.
    """
    strides, dilations = [1, geo.sh, geo.sw, 1], [1, geo.dh, geo.dw, 1]
    if geo.mode == "EXPLICIT":
        t, b, left, right = geo.explicit
        padding = [[0, 0], [t, b], [left, right], [0, 0]]
    else:
        padding = geo.mode
    if max(geo.sh, geo.sw) == 1 or max(geo.dh, geo.dw) == 1:
        return tf.nn.conv2d(x, kernel, strides=strides, padding=padding, dilations=dilations)
    xs = tf.shape(x)
    ho, top = geo.rows(xs[1])
    wo, left = geo.cols(xs[2])
    eff_h, eff_w = (geo.kh - 1) * geo.dh + 1, (geo.kw - 1) * geo.dw + 1
    # Only as much padding after as the last window needs.
    bottom = tf.maximum((ho - 1) * geo.sh + eff_h - xs[1] - top, 0)
    right = tf.maximum((wo - 1) * geo.sw + eff_w - xs[2] - left, 0)
    xp = tf.pad(x, [[0, 0], [top, bottom], [left, right], [0, 0]])
    y = tf.nn.conv2d(xp, kernel, strides=1, padding="VALID", dilations=dilations)
    return y[:, ::geo.sh, ::geo.sw, :][:, :ho, :wo, :]


@keras.saving.register_keras_serializable(package="tfdeblur")
class ModulatedDeformConv2D(keras.layers.Layer):
    """Modulated deformable convolution, DCNv2 (Yuan et al. CVPR 2020, sec. 3.2).

    Every output pixel samples its ``KH x KW`` taps at learned fractional
    offsets from the regular grid (bilinear interpolation, zeros outside the
    image) and scales each sample by a learned modulation mask before the
    weighted sum (Zhu et al. CVPR 2019). Same meaning as torchvision's
    ``deform_conv2d`` with a mask, in NHWC; see
    :func:`tfdeblur.ops.modulated_deform_conv2d`.

    Offsets and masks either come from an internal convolution of the input
    (``offset_mode="internal"``: same kernel size, strides, dilation and
    padding as the main convolution, zero-initialised, so training starts
    from offsets 0 and masks sigmoid(0) = 0.5, as in DCNv2; its first
    ``2 * deformable_groups * KH * KW`` output channels are the offsets, the
    rest the mask logits) or are given as inputs (``offset_mode="external"``,
    as in SVDN's neck, where one network predicts them for two layers; the
    mask is used as given).

    Args:
        filters: output channels.
        kernel_size: int or ``(KH, KW)``; even and non-square sizes work.
        strides: int or ``(sh, sw)``.
        padding: ``"same"``, ``"valid"``, an int, ``(pad_top, pad_left)``
            (mirrored at the bottom/right) or ``((top, bottom), (left, right))``.
        dilation_rate: int or ``(dh, dw)``.
        groups: weight groups (must divide input channels and ``filters``).
        deformable_groups: offset groups (must divide input channels).
        use_bias: add a bias to the output.
        offset_mode: ``"internal"`` or ``"external"`` (see above).
        return_positions: also return the absolute sampling positions
            (grid + offsets), for SVDN's position loss.
        implementation: ``"auto"``, ``"compiled"`` or ``"portable"``.
        kernel_initializer, bias_initializer, kernel_regularizer,
        bias_regularizer, kernel_constraint, bias_constraint: for the main
            convolution's weights, as in ``keras.layers.Conv2D``.
        **kwargs: standard ``keras.layers.Layer`` arguments.

    Input:
        ``internal``: ``x`` ``[N, H, W, Cin]``. ``external``: a list ``[x,
        offset, mask]`` with offset ``[N, Ho, Wo, 2 * deformable_groups * KH *
        KW]`` (channel ``2 * (g * KH * KW + k)`` = dy, ``+ 1`` = dx) and mask
        ``[N, Ho, Wo, deformable_groups * KH * KW]``.

    Output:
        ``[N, Ho, Wo, filters]``; with ``return_positions=True`` a tuple
        ``(y, positions)``, positions ``[N, Ho, Wo, deformable_groups * KH *
        KW, 2]`` holding ``(py, px)`` in input pixels (float32 under a
        half-precision policy).

    Example:
        >>> x = keras.Input((None, None, 32))
        >>> y = ModulatedDeformConv2D(32, 5)(x)                     # internal offsets
        >>> off = keras.Input((None, None, 50))
        >>> m = keras.Input((None, None, 25))
        >>> y, pos = ModulatedDeformConv2D(32, 5, offset_mode="external",
        ...                                return_positions=True)([x, off, m])
    """

    def __init__(self, filters: int, kernel_size, strides=1, padding="same", dilation_rate=1,
                 groups: int = 1, deformable_groups: int = 1, use_bias: bool = True,
                 offset_mode: str = "internal", return_positions: bool = False,
                 implementation: str = "auto", kernel_initializer="glorot_uniform",
                 bias_initializer="zeros", kernel_regularizer=None, bias_regularizer=None,
                 kernel_constraint=None, bias_constraint=None, **kwargs):
        super().__init__(**kwargs)
        owner = "ModulatedDeformConv2D"
        v.check_tensorflow_backend(owner)
        self.filters = v.check_int(filters, "filters", owner=owner)
        self.offset_mode = v.check_choice(offset_mode, OFFSET_MODES, "offset_mode", owner=owner)
        implementation = v.check_implementation(implementation, owner=owner)
        self.kernel_size = v.standardize_tuple(kernel_size, 2, "kernel_size", owner=owner)
        self.strides = v.standardize_tuple(strides, 2, "strides", owner=owner)
        self.dilation_rate = v.standardize_tuple(dilation_rate, 2, "dilation_rate", owner=owner)
        normalize_padding(padding)  # validates early, keeps the user's form for get_config
        self.padding = padding.lower() if isinstance(padding, str) else padding
        self.groups = v.check_int(groups, "groups", owner=owner)
        if self.filters % self.groups:
            raise ValueError(f"{owner}: groups must divide filters ({self.filters}), "
                             f"got {groups!r}")
        self.deformable_groups = v.check_int(deformable_groups, "deformable_groups", owner=owner)
        # XLA cannot compile the custom op; Keras's jit_compile="auto" (XLA on
        # GPUs) then falls back to graph mode for models containing this layer.
        self.supports_jit = resolve_implementation(implementation) == "portable"
        self.use_bias = v.check_bool(use_bias, "use_bias", owner=owner)
        self.return_positions = v.check_bool(return_positions, "return_positions", owner=owner)
        self.implementation = implementation
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.bias_regularizer = keras.regularizers.get(bias_regularizer)
        self.kernel_constraint = keras.constraints.get(kernel_constraint)
        self.bias_constraint = keras.constraints.get(bias_constraint)

    @property
    def _taps(self) -> int:
        return self.deformable_groups * self.kernel_size[0] * self.kernel_size[1]

    def _geometry(self, cin: int) -> _Geometry:
        kh, kw = self.kernel_size
        return _Geometry((kh, kw, cin, 3 * self._taps), self.strides, self.padding,
                         self.dilation_rate, 1, self.deformable_groups)

    def _x_shape(self, input_shape):
        if self.offset_mode == "external":
            if not isinstance(input_shape, (list, tuple)) or len(input_shape) != 3 or \
                    not isinstance(input_shape[0], (list, tuple)):
                raise ValueError("ModulatedDeformConv2D(offset_mode='external') expects a list "
                                 f"[x, offset, mask], got input shape {input_shape}")
            return tuple(input_shape[0])
        if isinstance(input_shape, (list, tuple)) and input_shape and \
                isinstance(input_shape[0], (list, tuple)):
            raise ValueError("ModulatedDeformConv2D(offset_mode='internal') takes one input x "
                             f"(offsets are predicted inside), got shapes {input_shape}")
        return tuple(input_shape)

    def build(self, input_shape):
        cin = v.check_image_input(self._x_shape(input_shape), "ModulatedDeformConv2D", name="x")
        if cin % self.groups:
            raise ValueError(f"groups ({self.groups}) must divide the input channels ({cin})")
        if cin % self.deformable_groups:
            raise ValueError(f"deformable_groups ({self.deformable_groups}) must divide the "
                             f"input channels ({cin})")
        if self.offset_mode == "external":
            for shape, name, want in ((input_shape[1], "offset", 2 * self._taps),
                                      (input_shape[2], "mask", self._taps)):
                if shape[-1] is not None and shape[-1] != want:
                    raise ValueError(
                        f"ModulatedDeformConv2D: {name} must have {want} channels "
                        f"(deformable_groups x KH x KW{' x 2' if name == 'offset' else ''}), "
                        f"got {shape[-1]}")
        kh, kw = self.kernel_size
        self.kernel = self.add_weight(
            name="kernel", shape=(kh, kw, cin // self.groups, self.filters),
            initializer=self.kernel_initializer, regularizer=self.kernel_regularizer,
            constraint=self.kernel_constraint)
        self.bias = self.add_weight(
            name="bias", shape=(self.filters,), initializer=self.bias_initializer,
            regularizer=self.bias_regularizer, constraint=self.bias_constraint,
        ) if self.use_bias else None
        if self.offset_mode == "internal":
            self.offset_kernel = self.add_weight(
                name="offset_kernel", shape=(kh, kw, cin, 3 * self._taps), initializer="zeros")
            self.offset_bias = self.add_weight(
                name="offset_bias", shape=(3 * self._taps,), initializer="zeros")
        self.built = True

    def call(self, inputs):
        if self.offset_mode == "external":
            x, offset, mask = inputs
        else:
            x = inputs
            geo = self._geometry(x.shape[-1])
            raw = _dense_conv(x, tf.cast(self.offset_kernel, x.dtype), geo)
            raw = tf.nn.bias_add(raw, tf.cast(self.offset_bias, x.dtype))
            offset = raw[..., :2 * self._taps]
            mask = tf.sigmoid(raw[..., 2 * self._taps:])
        y = modulated_deform_conv2d(
            x, tf.cast(offset, x.dtype), tf.cast(mask, x.dtype), tf.cast(self.kernel, x.dtype),
            bias=None if self.bias is None else tf.cast(self.bias, x.dtype),
            strides=self.strides, padding=self.padding, dilation_rate=self.dilation_rate,
            groups=self.groups, deformable_groups=self.deformable_groups,
            implementation=self.implementation)
        if not self.return_positions:
            return y
        xs = tf.shape(x)
        positions = deform_conv_sampling_positions(
            offset, (xs[1], xs[2]), self.kernel_size, strides=self.strides,
            padding=self.padding, dilation_rate=self.dilation_rate,
            deformable_groups=self.deformable_groups)
        return y, positions

    def compute_output_shape(self, input_shape):
        x_shape = self._x_shape(input_shape)
        n, h, w = x_shape[0], x_shape[1], x_shape[2]
        geo = self._geometry(1)
        ho = None if h is None else geo.rows(h)[0]
        wo = None if w is None else geo.cols(w)[0]
        y_shape = (n, ho, wo, self.filters)
        if not self.return_positions:
            return y_shape
        return y_shape, (n, ho, wo, self._taps, 2)

    def get_config(self):
        return {
            **super().get_config(),
            "filters": self.filters,
            "kernel_size": self.kernel_size,
            "strides": self.strides,
            "padding": self.padding,
            "dilation_rate": self.dilation_rate,
            "groups": self.groups,
            "deformable_groups": self.deformable_groups,
            "use_bias": self.use_bias,
            "offset_mode": self.offset_mode,
            "return_positions": self.return_positions,
            "implementation": self.implementation,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "bias_initializer": keras.initializers.serialize(self.bias_initializer),
            "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
            "bias_regularizer": keras.regularizers.serialize(self.bias_regularizer),
            "kernel_constraint": keras.constraints.serialize(self.kernel_constraint),
            "bias_constraint": keras.constraints.serialize(self.bias_constraint),
        }
