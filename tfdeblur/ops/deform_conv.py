"""Modulated deformable convolution (DCNv2, Zhu et al. CVPR 2019) in NHWC.

``shared/design/OPS.md`` section 2 fixes the meaning; it is torchvision's
``deform_conv2d`` with a mask, in Keras's layouts::

    y[n, i, j, o] = b[o] + sum_{g, ky, kx, c in group g}
        w[ky, kx, c, o] * m[n, i, j, g, k] * bilinear(x[n, :, :, c], py, px)
    k  = ky * KW + kx
    py = i * stride_h - pad_top  + ky * dilation_h + offset[n, i, j, 2 * (g * KH * KW + k)]
    px = j * stride_w - pad_left + kx * dilation_w + offset[n, i, j, 2 * (g * KH * KW + k) + 1]

Samples outside the image read zeros (each of the four bilinear corners
contributes only if it lies inside); a NaN or infinite position is outside.
Two implementations compute exactly this:
the compiled op ``TfDeblur>ModulatedDeformConv2D`` (CPU and CUDA kernels, its
gradient op registered below) and a portable one made of stock TensorFlow ops
(one gather of the four bilinear corners, then a matmul), which is what
SavedModel and TFLite exports contain.
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf

from tfdeblur import _validation as checks
from tfdeblur.ops._loader import load_library, resolve_implementation

PaddingArg = str | int | Sequence[int] | Sequence[Sequence[int]]


def normalize_padding(padding: PaddingArg) -> tuple[str, list[int]]:
    """Returns the op's ``(padding, explicit_paddings)`` attributes.

    ``"same"`` (TensorFlow's rule: output ``ceil(H / stride)``, the odd pixel
    of padding at the bottom/right) and ``"valid"`` pass through; an int ``p``,
    a pair ``(pad_top, pad_left)`` (mirrored at the bottom/right, as in
    torchvision) or ``((top, bottom), (left, right))`` become ``"EXPLICIT"``
    with ``[top, bottom, left, right]``.
    """
    if isinstance(padding, str):
        if padding.lower() in ("same", "valid"):
            return padding.upper(), []
        raise ValueError(f"padding must be 'same', 'valid', an int, (pad_top, pad_left) or "
                         f"((top, bottom), (left, right)), got {padding!r}")
    if isinstance(padding, (tuple, list)) and len(padding) == 2 and all(
            isinstance(p, (tuple, list)) for p in padding):
        flat = [v for p in padding for v in (p if len(p) == 2 else [None])]
        if len(flat) != 4:
            raise ValueError(f"padding ((top, bottom), (left, right)) needs two pairs, "
                             f"got {padding!r}")
    else:
        try:
            top, left = checks.standardize_tuple(padding, 2, "padding", minimum=0)
        except ValueError:
            raise ValueError(f"padding must be 'same', 'valid', an int, (pad_top, pad_left) or "
                             f"((top, bottom), (left, right)), got {padding!r}") from None
        flat = [top, top, left, left]
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in flat):
        raise ValueError(f"padding values must be non-negative ints, got {padding!r}")
    return "EXPLICIT", [int(v) for v in flat]


def _output_size_and_pad(size, k: int, stride: int, dilation: int, mode: str,
                         before: int = 0, after: int = 0):
    """Output length and padding before (top/left) along one axis.

    Works on Python ints and on scalar int tensors (unknown sizes).
    """
    eff = (k - 1) * dilation + 1
    if mode == "SAME":
        out = (size + stride - 1) // stride
        total = (out - 1) * stride + eff - size
        total = max(total, 0) if isinstance(total, int) else tf.maximum(total, 0)
        return out, total // 2
    if mode == "VALID":
        return (size - eff) // stride + 1, 0
    return (size + before + after - eff) // stride + 1, before


class _Geometry:
    """Static attributes of one call, resolved and checked once."""

    def __init__(self, kernel_shape, strides, padding, dilation_rate, groups,
                 deformable_groups):
        self.kh, self.kw, self.cg, self.cout = kernel_shape
        self.sh, self.sw = checks.standardize_tuple(strides, 2, "strides")
        self.dh, self.dw = checks.standardize_tuple(dilation_rate, 2, "dilation_rate")
        self.mode, self.explicit = normalize_padding(padding)
        self.groups = checks.check_int(groups, "groups")
        self.dg = checks.check_int(deformable_groups, "deformable_groups")
        self.taps = self.kh * self.kw

    def rows(self, h):
        before, after = (self.explicit[0], self.explicit[1]) if self.explicit else (0, 0)
        return _output_size_and_pad(h, self.kh, self.sh, self.dh, self.mode, before, after)

    def cols(self, w):
        before, after = (self.explicit[2], self.explicit[3]) if self.explicit else (0, 0)
        return _output_size_and_pad(w, self.kw, self.sw, self.dw, self.mode, before, after)


def _static_checks(x, offset, mask, kernel, bias, geo: _Geometry) -> None:
    """Shape checks that can be made at trace time (ValueError naming the argument)."""
    cin = x.shape[3]
    if cin is not None:
        if cin % geo.groups:
            raise ValueError(f"groups ({geo.groups}) must divide the input channels of x ({cin})")
        if cin % geo.dg:
            raise ValueError(f"deformable_groups ({geo.dg}) must divide the input channels of x "
                             f"({cin})")
        if cin // geo.groups != geo.cg:
            raise ValueError(f"kernel must have shape [KH, KW, Cin / groups, Cout] = "
                             f"[{geo.kh}, {geo.kw}, {cin // geo.groups}, Cout] for x with {cin} "
                             f"channels and groups={geo.groups}, got {kernel.shape}")
    if geo.cout % geo.groups:
        raise ValueError(f"groups ({geo.groups}) must divide the output channels of kernel "
                         f"({geo.cout})")
    if bias is not None:
        checks.check_rank(bias, 1, "bias", "[Cout]")
        checks.check_dim(bias, 0, geo.cout, "bias", "length Cout =")
    checks.check_dim(offset, 3, 2 * geo.dg * geo.taps, "offset",
                     f"2 x deformable_groups x KH x KW = 2 x {geo.dg} x {geo.kh} x {geo.kw} "
                     "channels,")
    checks.check_dim(mask, 3, geo.dg * geo.taps, "mask",
                     f"deformable_groups x KH x KW = {geo.dg} x {geo.kh} x {geo.kw} channels,")
    for t, name in ((offset, "offset"), (mask, "mask")):
        checks.check_dim(t, 0, x.shape[0], name, "the batch size of x,")
    h, w = x.shape[1], x.shape[2]
    for size, axis, side in ((h, 1, "height"), (w, 2, "width")):
        if size is None:
            continue
        if size == 0:
            raise ValueError(f"x must have a non-empty {side}, got shape {x.shape}")
        out, _ = geo.rows(size) if axis == 1 else geo.cols(size)
        if out < 1:
            raise ValueError(f"x's {side} ({size}) is too small for the kernel with this "
                             f"padding and dilation: the output {side} would be {out}")
        for t, name in ((offset, "offset"), (mask, "mask")):
            checks.check_dim(t, axis, out, name, f"the output {side}")


def _runtime_checks(x, offset, mask, geo: _Geometry) -> list:
    """Assertions for the portable path when shapes are only known at run time."""
    if x.shape.is_fully_defined() and offset.shape.is_fully_defined() and \
            mask.shape.is_fully_defined():
        return []
    xs = tf.shape(x)
    ho, _ = geo.rows(xs[1])
    wo, _ = geo.cols(xs[2])
    taps = geo.dg * geo.taps
    return [
        tf.debugging.assert_equal(xs[3], geo.cg * geo.groups, message=(
            "x must have Cin = kernel's Cin/groups x groups channels")),
        tf.debugging.assert_positive(tf.minimum(ho, wo), message=(
            "x is too small for the kernel: empty output")),
        tf.debugging.assert_equal(tf.shape(offset), tf.stack([xs[0], ho, wo, 2 * taps]), message=(
            f"offset must have shape [N, Ho, Wo, {2 * taps}] (output size of x)")),
        tf.debugging.assert_equal(tf.shape(mask), tf.stack([xs[0], ho, wo, taps]), message=(
            f"mask must have shape [N, Ho, Wo, {taps}] (output size of x)")),
    ]


def _grid(geo: _Geometry, ho, wo, pad_top, pad_left, dtype):
    """Regular sampling grid: ``[Ho, 1, 1, K]`` rows and ``[1, Wo, 1, K]`` columns."""
    ky = tf.repeat(tf.range(geo.kh) * geo.dh, geo.kw)          # tap k -> ky * dh
    kx = tf.tile(tf.range(geo.kw) * geo.dw, [geo.kh])           # tap k -> kx * dw
    rows = tf.range(ho)[:, None] * geo.sh - pad_top + ky[None, :]
    cols = tf.range(wo)[:, None] * geo.sw - pad_left + kx[None, :]
    return (tf.cast(rows, dtype)[:, None, None, :], tf.cast(cols, dtype)[None, :, None, :])


def _position_dtype(dtype: tf.DType) -> tf.DType:
    # Half precision cannot even hold pixel coordinates of a 640-pixel-wide
    # image to a quarter pixel, so positions are computed in float32.
    return tf.float32 if dtype in (tf.float16, tf.bfloat16) else dtype


def _positions(offset, geo: _Geometry, h, w):
    """Absolute sampling positions ``(py, px)``, each ``[N, Ho, Wo, G, K]``."""
    dtype = _position_dtype(offset.dtype)
    ho, pad_top = geo.rows(h)
    wo, pad_left = geo.cols(w)
    off = tf.cast(offset, dtype)
    os_ = tf.shape(off)
    # (dy, dx) interleaved per tap: strided channel slices of the 4-D tensor,
    # as TFLite's STRIDED_SLICE runs on at most 5-D tensors.
    shape = tf.stack([os_[0], os_[1], os_[2], geo.dg, geo.taps])
    rows, cols = _grid(geo, ho, wo, pad_top, pad_left, dtype)
    return (rows[None] + tf.reshape(off[..., 0::2], shape),
            cols[None] + tf.reshape(off[..., 1::2], shape))


def _portable(x, offset, mask, kernel, bias, geo: _Geometry):
    xs = tf.shape(x)
    n, h, w, cin = xs[0], xs[1], xs[2], xs[3]
    ho, wo = tf.shape(offset)[1], tf.shape(offset)[2]
    dg, taps = geo.dg, geo.taps
    cdg = cin // dg
    py, px = _positions(offset, geo, h, w)                        # [N, Ho, Wo, G, K]
    pdtype = py.dtype
    hf, wf = tf.cast(h, pdtype), tf.cast(w, pdtype)
    # A sample at py <= -1 (or px <= -1, py >= H, px >= W) is outside by the
    # contract, and so is a NaN or infinite position (no pixel to read;
    # docs/ops_nonfinite.md): it contributes nothing whatever its mask, with
    # zero gradients. Its position moves to -2, where every corner is on the
    # zero border, so floor() stays in int32 and the weights stay finite.
    inside = (py > -1) & (py < hf) & (px > -1) & (px < wf)
    outside_at = tf.constant(-2.0, pdtype)
    py = tf.where(inside, py, outside_at)
    px = tf.where(inside, px, outside_at)
    y0f, x0f = tf.floor(py), tf.floor(px)
    ly, lx = py - y0f, px - x0f
    y0, x0 = tf.cast(y0f, tf.int32), tf.cast(x0f, tf.int32)
    # x padded with one zero row/column on each side: a corner outside the image
    # is clamped onto that border and reads 0 (zero padding without masks).
    wp = w + 2

    def flat_index(yy, xx):
        return (tf.clip_by_value(yy, -1, h) + 1) * wp + tf.clip_by_value(xx, -1, w) + 1

    corners = tf.stack([flat_index(y0, x0), flat_index(y0, x0 + 1),
                        flat_index(y0 + 1, x0), flat_index(y0 + 1, x0 + 1)], axis=-1)
    # Only corners inside the image take part, as in the compiled kernels: the
    # mask is selected per corner before it multiplies, so a NaN or infinite
    # mask never meets the zero border (inf * 0) or an outside sample, in the
    # forward pass or in the gradient. (Selects on 5-D tensors: TFLite's
    # broadcasting kernels stop at 5-D.)
    mask5 = tf.reshape(mask, tf.stack([n, ho, wo, dg, taps]))
    zeros = tf.zeros_like(mask5)
    rows = ((y0 >= 0) & inside, (y0 + 1 < h) & inside)
    cols = (x0 >= 0, x0 + 1 < w)
    wy, wx = (1 - ly, ly), (1 - lx, lx)
    weights = tf.stack([
        tf.cast(wy[a] * wx[c], x.dtype) * tf.where(rows[a] & cols[c], mask5, zeros)
        for a in (0, 1) for c in (0, 1)], axis=-1)
    # [N, Ho, Wo, G, K, 4] -> [N, G, Ho*Wo*K*4] so one batched gather per group.
    m = ho * wo * taps * 4
    corners = tf.reshape(tf.transpose(corners, [0, 3, 1, 2, 4, 5]), tf.stack([n, dg, m]))
    weights = tf.reshape(tf.transpose(weights, [0, 3, 1, 2, 4, 5]), tf.stack([n, dg, m, 1]))
    xp = tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]])
    xp = tf.transpose(tf.reshape(xp, tf.stack([n, (h + 2) * wp, dg, cdg])), [0, 2, 1, 3])
    vals = tf.gather(xp, corners, batch_dims=2) * weights           # [N, G, M, Cdg]
    vals = tf.reduce_sum(tf.reshape(vals, tf.stack([n, dg, ho * wo * taps, 4, cdg])), axis=3)
    # Columns in (tap, channel) order, matching kernel[KH, KW, Cin/groups, Cout].
    vals = tf.reshape(vals, tf.stack([n, dg, ho * wo, taps, cdg]))
    cols = tf.reshape(tf.transpose(vals, [0, 2, 3, 1, 4]), tf.stack([n * ho * wo, taps, cin]))
    cog = geo.cout // geo.groups
    outs = []
    for gi in range(geo.groups):
        col = tf.reshape(cols[:, :, gi * geo.cg:(gi + 1) * geo.cg],
                         tf.stack([n * ho * wo, taps * geo.cg]))
        wgt = tf.reshape(kernel[:, :, :, gi * cog:(gi + 1) * cog], [taps * geo.cg, cog])
        outs.append(tf.matmul(col, wgt))
    y = outs[0] if geo.groups == 1 else tf.concat(outs, axis=1)
    y = tf.reshape(y, tf.stack([n, ho, wo, geo.cout]))
    return y if bias is None else tf.nn.bias_add(y, bias)


def _as_float(value, name: str, dtype: tf.DType | None = None) -> tf.Tensor:
    # Arrays keep their own dtype: a float32 dtype_hint would silently turn a
    # float64 NumPy array into float32.
    if hasattr(value, "dtype") and not isinstance(value, tf.Tensor):
        try:
            value = tf.convert_to_tensor(value)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{name} must be a float tensor: {e}") from None
    return checks.as_float_tensor(value, name, dtype=dtype)


def _prepare(x, offset, mask, kernel, bias, strides, padding, dilation_rate, groups,
             deformable_groups):
    x = _as_float(x, "x")
    offset = _as_float(offset, "offset", dtype=x.dtype)
    kernel = _as_float(kernel, "kernel", dtype=x.dtype)
    checks.check_rank(x, 4, "x")
    checks.check_rank(offset, 4, "offset", "[N, Ho, Wo, 2 * deformable_groups * KH * KW]")
    checks.check_rank(kernel, 4, "kernel", "[KH, KW, Cin / groups, Cout]")
    if not kernel.shape.is_fully_defined():
        raise ValueError(f"kernel must have a fully known static shape [KH, KW, Cin / groups, "
                         f"Cout], got {kernel.shape}")
    if kernel.shape.num_elements() == 0:
        raise ValueError(f"kernel must not be empty, got shape {kernel.shape}")
    geo = _Geometry(tuple(kernel.shape), strides, padding, dilation_rate, groups,
                    deformable_groups)
    if mask is None:
        mask = tf.ones(tf.concat([tf.shape(offset)[:3], [geo.dg * geo.taps]], 0), x.dtype)
    mask = _as_float(mask, "mask", dtype=x.dtype)
    checks.check_rank(mask, 4, "mask", "[N, Ho, Wo, deformable_groups * KH * KW]")
    if bias is not None:
        bias = _as_float(bias, "bias", dtype=x.dtype)
    _static_checks(x, offset, mask, kernel, bias, geo)
    return x, offset, mask, kernel, bias, geo


def modulated_deform_conv2d(x, offset, mask, kernel, bias=None, strides=1,
                            padding: PaddingArg = "same", dilation_rate=1, groups: int = 1,
                            deformable_groups: int = 1, implementation: str = "auto",
                            name: str | None = None) -> tf.Tensor:
    """Modulated deformable 2-D convolution (DCNv2), NHWC.

    Args:
        x: ``[N, H, W, Cin]`` float tensor.
        offset: ``[N, Ho, Wo, 2 * deformable_groups * KH * KW]``; channel
            ``2 * (g * KH * KW + k)`` is the row offset dy of tap ``k = ky * KW
            + kx`` of deformable group ``g`` and the next channel is dx.
        mask: ``[N, Ho, Wo, deformable_groups * KH * KW]`` modulation, used as
            given (apply a sigmoid before, as DCNv2 does), or None for ones.
        kernel: ``[KH, KW, Cin / groups, Cout]`` (Keras layout); its shape
            must be static.
        bias: optional ``[Cout]``.
        strides: int or ``(stride_h, stride_w)``.
        padding: ``"same"`` (TensorFlow's rule), ``"valid"``, an int,
            ``(pad_top, pad_left)`` (mirrored at the bottom/right) or
            ``((top, bottom), (left, right))``.
        dilation_rate: int or ``(dilation_h, dilation_w)``.
        groups: weight groups, as in a grouped convolution.
        deformable_groups: offset groups; input channels are split into this
            many contiguous blocks, block ``g`` sampled with offsets/masks of
            group ``g``.
        implementation: ``"auto"`` (compiled when the library is loaded),
            ``"compiled"`` or ``"portable"`` (stock TensorFlow ops only).
        name: optional name scope.

    Returns:
        ``[N, Ho, Wo, Cout]``, same dtype as ``x``.

    Gradients are registered for all five inputs. On CPU every result is
    bitwise deterministic; on GPU the gradient for ``x`` accumulates with
    float atomics, so it can differ in the last bits from run to run.

    Non-finite values (``docs/ops_nonfinite.md``), the same in both
    implementations: a sampling position that is NaN, ±inf or beyond the image
    is outside, contributes 0 whatever its mask and has zero gradients; NaN
    and ±inf in ``x``, ``mask``, ``kernel`` or ``bias`` propagate as IEEE
    arithmetic of the formula does, each corner inside the image adding
    ``(mask * weight) * x`` even at weight 0.

    Raises:
        ValueError: a bad argument or a statically known shape mismatch (the
            message names the argument).
        tf.errors.InvalidArgumentError: a shape mismatch found at run time.

    Example:
        >>> x = tf.random.normal([1, 8, 8, 4])
        >>> off = tf.zeros([1, 8, 8, 18])
        >>> y = modulated_deform_conv2d(x, off, tf.ones([1, 8, 8, 9]),
        ...                             tf.random.normal([3, 3, 4, 6]))  # [1, 8, 8, 6]
    """
    with tf.name_scope(name or "modulated_deform_conv2d"):
        x, offset, mask, kernel, bias, geo = _prepare(
            x, offset, mask, kernel, bias, strides, padding, dilation_rate, groups,
            deformable_groups)
        impl = resolve_implementation(implementation)
        if (impl == "compiled" and implementation == "auto"
                and x.dtype in (tf.float16, tf.bfloat16)
                and not tf.config.list_physical_devices("GPU")):
            impl = "portable"  # half-precision kernels exist on GPU only
        if impl == "compiled":
            lib = load_library()
            return lib.tf_deblur_modulated_deform_conv2d(
                x=x, offset=offset, mask=mask, kernel=kernel,
                bias=bias if bias is not None else tf.zeros([0], x.dtype),
                strides=[geo.sh, geo.sw], dilations=[geo.dh, geo.dw], padding=geo.mode,
                explicit_paddings=geo.explicit, groups=geo.groups,
                deformable_groups=geo.dg)
        with tf.control_dependencies(_runtime_checks(x, offset, mask, geo)):
            return _portable(x, offset, mask, kernel, bias, geo)


def deform_conv_sampling_positions(offset, input_size, kernel_size, strides=1,
                                   padding: PaddingArg = "same", dilation_rate=1,
                                   deformable_groups: int = 1) -> tf.Tensor:
    """Absolute sampling positions of a deformable convolution, in input pixels.

    Args:
        offset: ``[N, Ho, Wo, 2 * deformable_groups * KH * KW]`` offsets, as
            given to :func:`modulated_deform_conv2d`.
        input_size: ``(H, W)`` of the convolution's input (ints or scalar
            tensors); "same" padding depends on it.
        kernel_size, strides, padding, dilation_rate, deformable_groups: the
            convolution's geometry.

    Returns:
        ``[N, Ho, Wo, deformable_groups * KH * KW, 2]``: ``(py, px)`` = regular
        grid + offset for every tap, in the offset's channel order (float32 for
        half-precision offsets).
    """
    kh, kw = checks.standardize_tuple(kernel_size, 2, "kernel_size")
    geo = _Geometry((kh, kw, 1, 1), strides, padding, dilation_rate, 1, deformable_groups)
    offset = _as_float(offset, "offset")
    checks.check_rank(offset, 4, "offset", "[N, Ho, Wo, 2 * deformable_groups * KH * KW]")
    checks.check_dim(offset, 3, 2 * geo.dg * geo.taps, "offset",
                     f"2 x deformable_groups x KH x KW = 2 x {geo.dg} x {kh} x {kw} channels,")
    py, px = _positions(offset, geo, input_size[0], input_size[1])
    s = tf.shape(offset)
    return tf.reshape(tf.stack([py, px], axis=-1), tf.stack([s[0], s[1], s[2], geo.dg * geo.taps,
                                                            2]))


def _attr_str(op, name: str) -> str:
    value = op.get_attr(name)
    return value.decode() if isinstance(value, bytes) else value


@tf.RegisterGradient("TfDeblur>ModulatedDeformConv2D")
def _modulated_deform_conv2d_grad(op, dy):
    dx, doffset, dmask, dkernel, dbias = load_library().tf_deblur_modulated_deform_conv2d_grad(
        x=op.inputs[0], offset=op.inputs[1], mask=op.inputs[2], kernel=op.inputs[3],
        bias=op.inputs[4], dy=dy, strides=op.get_attr("strides"),
        dilations=op.get_attr("dilations"), padding=_attr_str(op, "padding"),
        explicit_paddings=op.get_attr("explicit_paddings"), groups=op.get_attr("groups"),
        deformable_groups=op.get_attr("deformable_groups"))
    return dx, doffset, dmask, dkernel, dbias
