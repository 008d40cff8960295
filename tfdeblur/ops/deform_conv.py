"""Modulated deformable convolution (DCNv2, Zhu et al. CVPR 2019) in NHWC.

``docs/ops.md`` section 2 fixes the meaning; it is torchvision's
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
(tile by tile of output rows: one bilinear sample per pixel and tap with
``tf.image.crop_and_resize`` in float32, or four weighted gathers, then one
matmul with the kernel; see ``docs/ops_implementation.md``), which is what
SavedModel, TFLite and ONNX exports contain.
"""

from __future__ import annotations

import contextlib
import contextvars
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
    if not all(checks.is_int(v) and v >= 0 for v in flat):
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
    """Regular sampling grid of every tap: rows ``[Ho, K]`` and columns ``[Wo, K]``."""
    ky = tf.repeat(tf.range(geo.kh) * geo.dh, geo.kw)          # tap k -> ky * dh
    kx = tf.tile(tf.range(geo.kw) * geo.dw, [geo.kh])           # tap k -> kx * dw
    rows = tf.range(ho)[:, None] * geo.sh - pad_top + ky[None, :]
    cols = tf.range(wo)[:, None] * geo.sw - pad_left + kx[None, :]
    return tf.cast(rows, dtype), tf.cast(cols, dtype)


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
    return (rows[:, None, None, :][None] + tf.reshape(off[..., 0::2], shape),
            cols[None, :, None, :][None] + tf.reshape(off[..., 1::2], shape))


def _dim(t: tf.Tensor, axis: int):
    """``t``'s size along ``axis``: a Python int when static, else a scalar tensor."""
    size = t.shape[axis]
    return size if size is not None else tf.shape(t)[axis]


# Bytes of sampled values per tile of the portable convolution:
# small enough that a tile's temporaries stay in the CPU's cache (and below
# the allocator's mmap threshold, so no page faults per tile), large enough
# that the per-tile op overhead is small. Up to this many tiles are unrolled
# in the graph when the output size is static (builtin TFLite ops only);
# more, or a size known only at run time, run in a while loop.
_TILE_BYTES = 32 << 20
_MAX_UNROLLED_TILES = 32

# Whether the portable convolution may sample with tf.image.crop_and_resize,
# a stock TensorFlow op that is no TFLite builtin (and that tf2onnx turns into
# a loop over the boxes): off while the TFLite and ONNX exporters trace.
_crop_and_resize_allowed = contextvars.ContextVar("tfdeblur_dcn_crop_and_resize", default=True)


@contextlib.contextmanager
def builtin_sampling():
    """Traces the portable deformable convolution with gathers only.

    Inside this context the portable twin samples with four weighted
    ``tf.gather`` per tap (TFLite builtins, and ONNX ``Gather``) instead of
    ``tf.image.crop_and_resize``, which SavedModels for TF Serving use (about
    half the time, ``docs/ops_implementation.md``). The TFLite and ONNX
    exporters trace inside it; the outputs agree within float32 round-off.
    """
    token = _crop_and_resize_allowed.set(False)
    try:
        yield
    finally:
        _crop_and_resize_allowed.reset(token)


def _portable(x, offset, mask, kernel, bias, geo: _Geometry):
    """The convolution in stock TensorFlow ops; ``docs/ops_implementation.md``.

    float32 outside :func:`builtin_sampling` samples with
    ``tf.image.crop_and_resize`` (one bilinear 1x1 crop per pixel and tap),
    with the gradient of the gather formulation (crop_and_resize's own
    gradient for the position is 0 at whole-pixel positions, where offsets
    start). Non-finite ``x`` or ``mask`` values take the gathers in the
    forward pass too: crop_and_resize's interpolation ``a + (b - a) * t`` is
    not the contract's ``(mask * weight) * x`` sum when they meet infinities.
    Other dtypes, TFLite/ONNX exports and XLA (no CropAndResize kernel)
    sample with the gathers.
    """
    if x.dtype != tf.float32 or not _crop_and_resize_allowed.get() or _in_xla_context():
        return _portable_tiles(x, offset, mask, kernel, bias, geo, "gather")
    inputs = (x, offset, mask, kernel) + (() if bias is None else (bias,))

    def tiles(sampling, *args):
        return _portable_tiles(*args[:4], args[4] if len(args) > 4 else None, geo, sampling)

    @tf.custom_gradient
    def conv(*args):
        finite = tf.reduce_all(tf.math.is_finite(args[0])) & tf.reduce_all(
            tf.math.is_finite(args[2]))
        y = tf.cond(finite, lambda: tiles("crop_and_resize", *args),
                    lambda: tiles("gather", *args))

        def grad(dy):
            with tf.GradientTape() as tape:
                tape.watch(args)
                again = tiles("gather", *args)
            return tape.gradient(again, args, output_gradients=dy)

        return y, grad

    return conv(*inputs)


def _in_xla_context() -> bool:
    """Whether the op is being traced for XLA (``tf.function(jit_compile=True)``,
    Keras's ``jit_compile``): XLA has no CropAndResize kernel."""
    try:
        from tensorflow.python.ops import control_flow_util
    except ImportError:  # a TensorFlow without it: sample with the gathers
        return True
    return bool(control_flow_util.GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph()))


def _pow2_at_least(v):
    """The least power of two >= ``v`` (int32 ``v`` >= 1, static or a tensor)."""
    if isinstance(v, int):
        return 1 << (v - 1).bit_length()
    p = tf.constant(1)
    for _ in range(31):   # doubling while below v, unrolled
        p = tf.where(p < v, p * 2, p)
    return p


def _portable_tiles(x, offset, mask, kernel, bias, geo: _Geometry, sampler: str):
    """The portable convolution tile by tile of output rows.

    Per tile: the sampling positions, then the column buffer
    ``[pixels, G * K * Cin / G]`` in (offset group, tap, channel) order, times
    the kernel as one matmul (one batched matmul over weight groups when
    ``groups > 1``). The column buffer comes from ``sampler``:

    * ``"gather"``: for each of the four bilinear corners, its row indices
      into x padded with zeros (one gather for all taps, channels and batch
      items), times its bilinear weight with the mask folded in (selected
      per corner, so a corner outside the image never meets a NaN or
      infinite mask), summed. Four weighted gathers measured faster than one
      gather of all corners and a batched ``[1, 4] x [4, C]`` matmul (0.66x
      the time at [1, 360, 640, 32] 3x3, 0.94x at [1, 180, 320, 64] 5x5).
    * ``"crop_and_resize"`` (float32): one 1x1 ``crop_and_resize`` box per
      pixel and tap in x padded to ``2^a + 1`` rows and ``2^b + 1`` columns,
      so that the normalised box corner ``q / 2^a`` maps back to exactly
      ``q`` (``y * (height - 1)``); times the mask.
    """
    dtype = x.dtype
    pdtype = _position_dtype(dtype)
    dg, taps, cout = geo.dg, geo.taps, geo.cout
    cin = geo.cg * geo.groups
    cdg = cin // dg
    n, h, w = _dim(x, 0), _dim(x, 1), _dim(x, 2)
    ho, pad_top = geo.rows(h)
    wo, pad_left = geo.cols(w)
    # The kernel's rows in the column buffer's (offset group, tap, channel) order.
    if geo.groups == 1:
        kmat = tf.reshape(tf.transpose(tf.reshape(kernel, [taps, dg, cdg, cout]), [1, 0, 2, 3]),
                          [dg * taps * cdg, cout])
    else:
        cog = cout // geo.groups
        kmat = tf.reshape(tf.transpose(tf.reshape(kernel, [taps, geo.cg, geo.groups, cog]),
                                       [2, 0, 1, 3]), [geo.groups, taps * geo.cg, cog])
    hf, wf = tf.cast(h, pdtype), tf.cast(w, pdtype)

    def by_offset_group(image, rows, cols):
        """``image`` ``[N, rows, cols, Cin]`` as ``[G * N, rows, cols, Cin / G]``."""
        if dg == 1:
            return image
        return tf.reshape(tf.transpose(tf.reshape(image, [n, rows, cols, dg, cdg]),
                                       [3, 0, 1, 2, 4]), [dg * n, rows, cols, cdg])

    # Image index (offset group g, batch item i -> g * N + i) of every sample.
    image_of = tf.range(n)[:, None, None, None]
    if dg > 1:
        image_of = image_of + tf.repeat(tf.range(dg) * n, taps)

    if sampler == "gather":
        # x padded with one zero pixel on every side, as rows [G * N * Hp * Wp, Cin / G]:
        # a corner outside the image is clamped onto that border and reads 0.
        hp, wp = h + 2, w + 2
        table = tf.reshape(by_offset_group(tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]]), hp, wp),
                           [-1, cdg])
        base = image_of * (hp * wp)     # row of every image's first pixel in the table
        outside_at = tf.constant(-2.0, pdtype)
        shift = 0
    else:
        # Positions q = p + 1 in x padded with one zero row/column before and
        # zeros after, to 2^a + 1 rows and 2^b + 1 columns; the shift is in the
        # grid, so q = (grid + 1) + offset is rounded once, as p is.
        qh, qw = _pow2_at_least(h + 1), _pow2_at_least(w + 1)
        image = by_offset_group(tf.pad(x, [[0, 0], [1, qh - h], [1, qw - w], [0, 0]]),
                                qh + 1, qw + 1)
        to_box = (1.0 / tf.cast(qh, tf.float32), 1.0 / tf.cast(qw, tf.float32))
        shift = 1

    def tile(rows_grid, cols_grid, off, m):
        """Output rows of ``off`` / ``m`` ``[N, rows, Wo, .]``; grids ``[rows | Wo, G * K]``."""
        off = tf.cast(off, pdtype)
        py = rows_grid[None, :, None, :] + off[..., 0::2]             # [N, rows, Wo, G * K]
        px = cols_grid[None, None, :, :] + off[..., 1::2]
        # A sample at py <= -1 (or px <= -1, py >= H, px >= W) is outside by
        # the contract, and so is a NaN or infinite position (no pixel to read;
        # docs/ops_nonfinite.md): it contributes nothing whatever its mask, with
        # zero gradients.
        inside = ((py > shift - 1) & (py < hf + shift) & (px > shift - 1)
                  & (px < wf + shift))
        if sampler == "crop_and_resize":
            # Outside samples move to q = -1, where crop_and_resize reads its
            # extrapolation value 0.
            qy = tf.where(inside, py, -1.0) * to_box[0]
            qx = tf.where(inside, px, -1.0) * to_box[1]
            boxes = tf.reshape(tf.stack([qy, qx, qy, qx], axis=-1), [-1, 4])
            which = tf.reshape(tf.broadcast_to(image_of, tf.shape(qy)), [-1])
            col = (tf.reshape(tf.image.crop_and_resize(image, boxes, which, [1, 1]), [-1, cdg])
                   * tf.reshape(m, [-1, 1]))
            return matmul(col, m)
        # Outside positions move to -2, where every corner is on the zero
        # border, so floor() stays in int32 and the weights stay finite.
        py = tf.where(inside, py, outside_at)
        px = tf.where(inside, px, outside_at)
        y0f, x0f = tf.floor(py), tf.floor(px)
        ly, lx = py - y0f, px - x0f
        y0, x0 = tf.cast(y0f, tf.int32), tf.cast(x0f, tf.int32)

        def row_index(yy, xx):
            return base + (tf.clip_by_value(yy, -1, h) + 1) * wp + tf.clip_by_value(xx, -1, w) + 1

        # Only corners inside the image take part, as in the compiled kernels:
        # the mask is selected per corner before it multiplies, so a NaN or
        # infinite mask never meets the zero border (inf * 0) or an outside
        # sample, in the forward pass or in the gradient.
        zeros = tf.zeros_like(m)
        rows_in = ((y0 >= 0) & inside, (y0 + 1 < h) & inside)
        cols_in = (x0 >= 0, x0 + 1 < w)
        wy, wx = (1 - ly, ly), (1 - lx, lx)
        col = None
        for a, c in [(a, c) for a in (0, 1) for c in (0, 1)]:
            wgt = tf.cast(wy[a] * wx[c], dtype) * tf.where(rows_in[a] & cols_in[c], m, zeros)
            term = (tf.gather(table, tf.reshape(row_index(y0 + a, x0 + c), [-1]))
                    * tf.reshape(wgt, [-1, 1]))                       # [pixels * G * K, Cdg]
            col = term if col is None else col + term
        return matmul(col, m)

    def matmul(col, m):
        """The column buffer ``[pixels * G * K, Cdg]`` times the kernel: ``[N, rows, Wo, Cout]``."""
        if geo.groups == 1:
            out = tf.matmul(tf.reshape(col, [-1, dg * taps * cdg]), kmat)
        else:
            col = tf.reshape(col, [-1, dg, taps, cdg])
            if dg > 1:
                col = tf.transpose(col, [0, 2, 1, 3])                  # (tap, channel) order
            col = tf.transpose(tf.reshape(col, [-1, taps, geo.groups, geo.cg]), [2, 0, 1, 3])
            out = tf.matmul(tf.reshape(col, [geo.groups, -1, taps * geo.cg]), kmat)
            out = tf.reshape(tf.transpose(out, [1, 0, 2]), [-1, cout])
        return tf.reshape(out, [n, _dim(m, 1), wo, cout])  # not -1: N may be 0

    tile_pixels = max(1, _TILE_BYTES // (dg * taps * 4 * cdg * dtype.size))
    static = isinstance(ho, int) and isinstance(wo, int)
    band = max(1, tile_pixels // max(wo, 1)) if static else tf.maximum(
        1, tile_pixels // tf.maximum(wo, 1))
    tiles = -(-ho // band) if static else (ho + band - 1) // band
    if static and tiles <= _MAX_UNROLLED_TILES:
        rows_grid, cols_grid = _grid(geo, ho, wo, pad_top - shift, pad_left - shift, pdtype)
        rows_grid, cols_grid = tf.tile(rows_grid, [1, dg]), tf.tile(cols_grid, [1, dg])
        parts = [tile(rows_grid[r:r + band], cols_grid, offset[:, r:r + band], mask[:, r:r + band])
                 for r in range(0, ho, band)]
        y = parts[0] if len(parts) == 1 else tf.concat(parts, axis=1)
    else:
        # Rows padded to whole tiles (their outputs are cut off at the end).
        extra = tiles * band - ho
        rows_grid, cols_grid = _grid(geo, ho + extra, wo, pad_top - shift, pad_left - shift,
                                     pdtype)
        rows_grid, cols_grid = tf.tile(rows_grid, [1, dg]), tf.tile(cols_grid, [1, dg])
        pad = [[0, 0], [0, extra], [0, 0], [0, 0]]
        offset, mask = tf.pad(offset, pad), tf.pad(mask, pad)

        def body(i, out):
            r = i * band
            part = tile(rows_grid[r:r + band], cols_grid, offset[:, r:r + band],
                        mask[:, r:r + band])
            return i + 1, out.write(i, tf.transpose(part, [1, 0, 2, 3]))   # rows first

        # Tiles of equal shape stacked, not concatenated: a stack is an ONNX
        # Loop's scan output, TensorListConcatV2 has no tf2onnx converter.
        out = tf.TensorArray(dtype, size=tiles, element_shape=[None, None, None, cout])
        _, out = tf.while_loop(lambda i, _: i < tiles, body, (tf.constant(0), out),
                               parallel_iterations=2)
        y = tf.reshape(out.stack(), tf.stack([tiles * band, n, wo, cout]))
        y = tf.transpose(y, [1, 0, 2, 3])[:, :ho]
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
        if impl == "compiled":
            dtype = x.dtype
            # Half-precision kernels exist on GPU only: on CPU (mixed-precision training,
            # say) the compiled op runs in float32 and the result is cast back, rather
            # than falling back to the slower portable path.
            upcast = (dtype in (tf.float16, tf.bfloat16)
                      and not tf.config.list_physical_devices("GPU"))
            if upcast:
                x, offset, mask, kernel = (tf.cast(t, tf.float32)
                                           for t in (x, offset, mask, kernel))
                bias = None if bias is None else tf.cast(bias, tf.float32)
            y = load_library().tf_deblur_modulated_deform_conv2d(
                x=x, offset=offset, mask=mask, kernel=kernel,
                bias=bias if bias is not None else tf.zeros([0], x.dtype),
                strides=[geo.sh, geo.sw], dilations=[geo.dh, geo.dw], padding=geo.mode,
                explicit_paddings=geo.explicit, groups=geo.groups,
                deformable_groups=geo.dg)
            return tf.cast(y, dtype) if upcast else y
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


# The gradient op has no gradient of its own: a second derivative through the
# compiled op gets TensorFlow's answer for a non-differentiable op (None).
tf.no_gradient("TfDeblur>ModulatedDeformConv2DGrad")


@tf.RegisterGradient("TfDeblur>ModulatedDeformConv2D")
def _modulated_deform_conv2d_grad(op, dy):
    dx, doffset, dmask, dkernel, dbias = load_library().tf_deblur_modulated_deform_conv2d_grad(
        x=op.inputs[0], offset=op.inputs[1], mask=op.inputs[2], kernel=op.inputs[3],
        bias=op.inputs[4], dy=dy, strides=op.get_attr("strides"),
        dilations=op.get_attr("dilations"), padding=_attr_str(op, "padding"),
        explicit_paddings=op.get_attr("explicit_paddings"), groups=op.get_attr("groups"),
        deformable_groups=op.get_attr("deformable_groups"))
    return dx, doffset, dmask, dkernel, dbias
