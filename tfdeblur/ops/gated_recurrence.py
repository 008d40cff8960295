"""Gated spatial recurrence: the spatially variant RNN of Zhang et al. CVPR 2018.

Along one scan direction, independently for every row (or column), batch item
and channel::

    h[t] = (1 - g[t]) * x[t] + g[t] * h[t-1],      h[-1] = 0

(``docs/ops.md`` section 1; the first step is h[0] = (1 - g[0]) x[0],
and NaN / inf follow ``docs/ops_nonfinite.md``). ``gated_recurrence`` runs one
direction, ``spatial_rnn`` runs all four on the same ``x`` (one fused pass in
the compiled op) and concatenates them in the order ``left_to_right,
right_to_left, top_to_bottom, bottom_to_top``.

Two implementations compute exactly this: the compiled op
``TfDeblur>GatedRecurrence`` (CPU and CUDA kernels, gradient op registered
below) and a portable one made only of stock TensorFlow ops, which is what
SavedModel and TFLite exports contain.
"""

from __future__ import annotations

import tensorflow as tf

from tfdeblur import _validation as checks
from tfdeblur.ops._loader import load_library, resolve_implementation

DIRECTIONS = ("left_to_right", "right_to_left", "top_to_bottom", "bottom_to_top")

# Scan axis of x ([N, H, W, C]) and whether t runs backwards, per direction.
_AXIS_REVERSE = {
    "left_to_right": (2, False),
    "right_to_left": (2, True),
    "top_to_bottom": (1, False),
    "bottom_to_top": (1, True),
}


def _validate(x, gate, slots: int, gate_name: str) -> tuple[tf.Tensor, tf.Tensor]:
    x = checks.as_float_tensor(x, "x")
    gate = checks.as_float_tensor(gate, gate_name, dtype=x.dtype)
    checks.check_rank(x, 4, "x")
    checks.check_rank(gate, 4, gate_name)
    if x.shape.rank == 4 and gate.shape.rank == 4:
        for axis, what in ((0, "batch size"), (1, "height"), (2, "width")):
            checks.check_dim(gate, axis, x.shape[axis], gate_name, f"the {what} of x,")
        if x.shape[3] is not None:
            checks.check_dim(gate, 3, slots * x.shape[3], gate_name,
                             f"{slots} x (channels of x) =" if slots > 1 else "the channels of x,")
    return x, gate


def _runtime_checks(x: tf.Tensor, gate: tf.Tensor, slots: int, gate_name: str) -> list:
    """Assertions for the portable path when shapes are only known at run time.

    (The compiled kernel validates in C++.) Without them a gate of height 1
    would broadcast silently instead of failing.
    """
    if x.shape.is_fully_defined() and gate.shape.is_fully_defined():
        return []
    xs, gs = tf.shape(x), tf.shape(gate)
    expected = tf.concat([xs[:3], xs[3:] * slots], axis=0)
    message = f"{gate_name} must have shape [N, H, W, {slots} * C] for x [N, H, W, C]"
    return [tf.debugging.assert_equal(gs, expected, message=message)]


# Block length of the portable scan: steps run one by one inside a block (all
# blocks at once), the blocks being linked by a log-depth scan over their ends.
_BLOCK = 16


def _along(t: tf.Tensor, axis: int, start=None, stop=None) -> tf.Tensor:
    """``t[start:stop]`` along ``axis`` (ints or scalar tensors)."""
    index = [slice(None)] * t.shape.rank
    index[axis] = slice(start, stop)
    return t[tuple(index)]


# Smallest normal number of each float type (subnormals may be flushed to 0).
_TINY = {tf.float16: 2.0**-14, tf.bfloat16: 2.0**-126, tf.float32: 2.0**-126,
         tf.float64: 2.0**-1022}


def _times(a: tf.Tensor, sign: tf.Tensor, c: tf.Tensor) -> tf.Tensor:
    """``a * c`` for ``a`` a product of gates, ``sign`` its exact sign (0, 1 or -1).

    Step by step, an infinite h stays infinite through any nonzero gate, but a
    product of gates can underflow to 0 and 0 * inf is NaN. Where the product
    is 0 the smallest normal number of the right sign stands in for it (still
    0 after an exactly-zero gate): a finite ``c`` then moves by at most
    ``tiny * |c|``, an infinite one keeps its sign. Added rather than
    selected, so the gradient is that of ``a * c`` throughout.
    """
    tiny = tf.constant(_TINY[a.dtype], a.dtype)
    return (a + tf.where(tf.equal(a, 0), sign * tiny, tf.zeros_like(a))) * c


def _link_blocks(a, sign, b, axis: int, reverse: bool) -> tf.Tensor:
    """Inclusive scan of the block maps h_end = a h_start + b along ``axis``.

    Hillis-Steele (log-depth): after round s every block has composed itself
    with the s blocks before it in scan order. Unrolled when the number of
    blocks is static (what TFLite sees), a while loop otherwise. Blocks with no
    predecessor are sliced off, never multiplied by a fill value.
    """
    def round_(s, length, a, sign, b, last):
        # "later" blocks have a predecessor s blocks before them in scan order.
        later = slice(None, length - s) if reverse else slice(s, None)
        earlier = slice(s, None) if reverse else slice(None, length - s)
        kept = slice(length - s, None) if reverse else slice(None, s)
        a_l = _along(a, axis, later.start, later.stop)
        s_l = _along(sign, axis, later.start, later.stop)
        b_e = _along(b, axis, earlier.start, earlier.stop)
        b_new = _along(b, axis, later.start, later.stop) + _times(a_l, s_l, b_e)

        def join(new, t):
            old = _along(t, axis, kept.start, kept.stop)
            return tf.concat([new, old] if reverse else [old, new], axis)

        b = join(b_new, b)
        if not last:
            a = join(a_l * _along(a, axis, earlier.start, earlier.stop), a)
            sign = join(s_l * _along(sign, axis, earlier.start, earlier.stop), sign)
        return a, sign, b

    length = a.shape[axis]
    if length is not None:
        s = 1
        while s < length:
            a, sign, b = round_(s, length, a, sign, b, last=2 * s >= length)
            s *= 2
        return b
    length = tf.shape(a)[axis]

    def body(s, a, sign, b):
        a, sign, b = round_(s, length, a, sign, b, last=False)
        return s * 2, a, sign, b

    _, _, _, b = tf.while_loop(lambda s, *_: s < length, body,
                               (tf.constant(1), a, sign, b))
    return b


def _steps(a_steps, b_steps, order, h) -> list:
    """h[t] = a[t] h[t-1] + b[t] over ``order``; ``h`` is h at order[0]."""
    out = [None] * len(a_steps)
    out[order[0]] = h
    for i in order[1:]:
        h = a_steps[i] * h + b_steps[i]
        out[i] = h
    return out


def _scan(a: tf.Tensor, b: tf.Tensor, axis: int, reverse: bool) -> tf.Tensor:
    """h[t] = a[t] h[t-1] + b[t] along ``axis`` (backwards when ``reverse``), h[0] = b[0].

    A blocked scan: the axis is cut into blocks of ``_BLOCK`` steps (padded at
    the end in scan order, so padding never precedes a real step); (1) inside
    every block at once, a short unrolled loop gives the block's map h_end =
    A h_start + B (A the product of its a); (2) a log-depth scan over these
    maps gives every block's end; (3) every block runs its steps again from the
    end of the block before it. Each value thus comes from the true h[t-1]
    exactly as in the compiled kernels, so NaN and infinities propagate as
    there (docs/ops_nonfinite.md); only the block ends of (2) are reassociated.
    """
    static_len = a.shape[axis]
    if static_len is not None and static_len <= _BLOCK:
        if static_len == 0:
            return b
        order = list(range(static_len - 1, -1, -1) if reverse else range(static_len))
        a_steps = tf.unstack(a, num=static_len, axis=axis)
        b_steps = tf.unstack(b, num=static_len, axis=axis)
        return tf.stack(_steps(a_steps, b_steps, order, b_steps[order[0]]), axis=axis)
    shape = tf.shape(a)
    length = shape[axis]
    block = _BLOCK
    nblocks = (length + block - 1) // block
    extra = nblocks * block - length
    pad = [[0, 0]] * 4
    pad[axis] = [extra, 0] if reverse else [0, extra]
    # [..., nblocks, block, ...] with the block steps on axis + 1.
    blocked = tf.concat([shape[:axis], [nblocks, block], shape[axis + 1:]], axis=0)
    a = tf.reshape(tf.pad(a, pad), blocked)
    b = tf.reshape(tf.pad(b, pad), blocked)
    order = list(range(block - 1, -1, -1) if reverse else range(block))
    a_steps = tf.unstack(a, num=block, axis=axis + 1)
    b_steps = tf.unstack(b, num=block, axis=axis + 1)
    # (1) Each block's map from h = 0 before it: B its last h, A the product.
    first = order[0]
    h, p = b_steps[first], a_steps[first]
    for i in order[1:]:
        h = a_steps[i] * h + b_steps[i]
        p = a_steps[i] * p
    sign = tf.reduce_prod(tf.sign(a), axis=axis + 1)
    # (2) Block ends.
    ends = _link_blocks(p, sign, h, axis, reverse)
    # (3) The first step of every block but the first in scan order takes
    # a h_prev from the end of the block before it; then all steps again.
    a0, b0 = a_steps[first], b_steps[first]
    if reverse:
        linked = _along(a0, axis, None, -1) * _along(ends, axis, 1) + _along(b0, axis, None, -1)
        h = tf.concat([linked, _along(b0, axis, -1)], axis)
    else:
        linked = _along(a0, axis, 1) * _along(ends, axis, None, -1) + _along(b0, axis, 1)
        h = tf.concat([_along(b0, axis, None, 1), linked], axis)
    h = tf.stack(_steps(a_steps, b_steps, order, h), axis=axis + 1)
    h = tf.reshape(h, tf.concat([shape[:axis], [nblocks * block], shape[axis + 1:]], axis=0))
    begin = [0, 0, 0, 0]
    if reverse:  # the padding came first along the axis
        begin[axis] = extra
    return tf.slice(h, begin, shape)


def _step_before(t: tf.Tensor, axis: int, reverse: bool) -> tf.Tensor:
    """``out[t] = t[t - 1]`` in scan order along ``axis``, 0 at the first step."""
    pad = [[0, 0]] * 4
    pad[axis] = [0, 1] if reverse else [1, 0]
    padded = tf.pad(t, pad)
    return _along(padded, axis, 1) if reverse else _along(padded, axis, None, -1)


def _portable_scan(x: tf.Tensor, gate: tf.Tensor, direction: str) -> tf.Tensor:
    """The recurrence in stock TensorFlow ops (see ``_scan``), with the compiled op's backward.

    The gradient is docs/ops.md's backward, itself a scan in the other direction:
    dh[t] = dy[t] + g[t+1] dh[t+1], dx = (1 - g) dh, dg = dh (h[t-1] - x) --
    the same arithmetic as the compiled kernels (so the same non-finite
    values), and about half the work of differentiating the scan's graph.
    """
    axis, reverse = _AXIS_REVERSE[direction]

    @tf.custom_gradient
    def recurrence(x, gate):
        y = _scan(gate, (1 - gate) * x, axis, reverse)

        def grad(dy):
            # g[t+1] in scan order is the step before t scanning backwards.
            g_next = _step_before(gate, axis, not reverse)
            dh = _scan(g_next, dy, axis, not reverse)
            return (1 - gate) * dh, dh * (_step_before(y, axis, reverse) - x)

        return y, grad

    return recurrence(x, gate)


def gated_recurrence(x, gate, direction: str, implementation: str = "auto", name=None):
    """Gated linear recurrence along one image direction.

    Args:
        x: ``[N, H, W, C]`` float tensor (the features to filter).
        gate: ``[N, H, W, C]`` gates g, same dtype; used as given (SVRNN puts
            a tanh in front, so g lies in (-1, 1)).
        direction: ``"left_to_right"``, ``"right_to_left"``, ``"top_to_bottom"``
            or ``"bottom_to_top"``.
        implementation: ``"auto"`` (compiled when the library is loaded),
            ``"compiled"`` or ``"portable"`` (stock TensorFlow ops only).
        name: optional op name scope.

    Returns:
        ``[N, H, W, C]`` tensor h with ``h[t] = (1 - g[t]) x[t] + g[t] h[t-1]``
        and ``h[0] = (1 - g[0]) x[0]``.

    Non-finite values follow IEEE arithmetic of that formula, step by step, in
    both implementations: NaN in x or g is NaN from that step on along the
    line, ±inf in x stays ±inf (NaN once multiplied by 0), and gates are not
    clipped, so ``|g| > 1`` can overflow to ±inf (g = 1e30 twice: -inf). See
    ``docs/ops_nonfinite.md`` for the full rules and the gradients.

    Raises:
        ValueError: bad ``direction``, ``implementation``, rank, dtype or a
            statically known shape mismatch (the message names the argument).
        tf.errors.InvalidArgumentError: a shape mismatch found at run time.

    Example:
        >>> y = gated_recurrence(tf.ones([1, 4, 5, 2]), tf.fill([1, 4, 5, 2], 0.5),
        ...                      "left_to_right")
    """
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
    with tf.name_scope(name or "gated_recurrence"):
        x, gate = _validate(x, gate, 1, "gate")
        if resolve_implementation(implementation) == "compiled":
            return load_library().tf_deblur_gated_recurrence(x=x, gate=gate, direction=direction)
        with tf.control_dependencies(_runtime_checks(x, gate, 1, "gate")):
            return _portable_scan(x, gate, direction)


def spatial_rnn(x, gates, implementation: str = "auto", name=None):
    """Four-direction spatially variant RNN (one SVRNN "RNN" block, before fusion).

    Args:
        x: ``[N, H, W, C]`` float tensor.
        gates: ``[N, H, W, 4C]`` gates, direction k in channels ``[kC, (k+1)C)``
            in the order ``left_to_right, right_to_left, top_to_bottom,
            bottom_to_top``.
        implementation: ``"auto"``, ``"compiled"`` or ``"portable"``.
        name: optional op name scope.

    Returns:
        ``[N, H, W, 4C]``: the four directions' outputs, in the gates' order.
        The compiled op reads ``x`` once for all four scans. NaN, ±inf and
        overflow as in :func:`gated_recurrence` (``docs/ops_nonfinite.md``).

    Raises:
        ValueError / tf.errors.InvalidArgumentError as ``gated_recurrence``.
    """
    with tf.name_scope(name or "spatial_rnn"):
        x, gates = _validate(x, gates, 4, "gates")
        if resolve_implementation(implementation) == "compiled":
            return load_library().tf_deblur_gated_recurrence(x=x, gate=gates, direction="all")
        with tf.control_dependencies(_runtime_checks(x, gates, 4, "gates")):
            parts = tf.split(gates, 4, axis=3)
            return tf.concat(
                [_portable_scan(x, g, d) for g, d in zip(parts, DIRECTIONS, strict=True)], axis=3)


# The gradient op has no gradient of its own: a second derivative through the
# compiled op gets TensorFlow's answer for a non-differentiable op (None).
tf.no_gradient("TfDeblur>GatedRecurrenceGrad")


@tf.RegisterGradient("TfDeblur>GatedRecurrence")
def _gated_recurrence_grad(op, dy):
    direction = op.get_attr("direction")
    if isinstance(direction, bytes):
        direction = direction.decode()
    dx, dgate = load_library().tf_deblur_gated_recurrence_grad(
        x=op.inputs[0], gate=op.inputs[1], y=op.outputs[0], dy=dy, direction=direction)
    return dx, dgate
