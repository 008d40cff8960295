"""Gated spatial recurrence: the spatially variant RNN of Zhang et al. CVPR 2018.

Along one scan direction, independently for every row (or column), batch item
and channel::

    h[t] = (1 - g[t]) * x[t] + g[t] * h[t-1],      h[-1] = 0

(``shared/design/OPS.md`` section 1). ``gated_recurrence`` runs one direction,
``spatial_rnn`` runs all four on the same ``x`` (one fused pass in the compiled
op) and concatenates them in the order ``left_to_right, right_to_left,
top_to_bottom, bottom_to_top``.

Two implementations compute exactly this: the compiled op
``TfDeblur>GatedRecurrence`` (CPU and CUDA kernels, gradient op registered
below) and a portable one made only of stock TensorFlow ops, which is what
SavedModel and TFLite exports contain.
"""

from __future__ import annotations

import tensorflow as tf

from tfdeblur.ops import _checks
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
    x = _checks.as_float_tensor(x, "x")
    gate = _checks.as_float_tensor(gate, gate_name, dtype=x.dtype)
    _checks.check_rank(x, 4, "x")
    _checks.check_rank(gate, 4, gate_name)
    if x.shape.rank == 4 and gate.shape.rank == 4:
        for axis, what in ((0, "batch size"), (1, "height"), (2, "width")):
            _checks.check_dim(gate, axis, x.shape[axis], gate_name, f"the {what} of x,")
        if x.shape[3] is not None:
            _checks.check_dim(gate, 3, slots * x.shape[3], gate_name,
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


# Block length of the portable scan: steps scanned one by one inside a block
# (all blocks at once), before the blocks are linked by a log-depth scan.
_BLOCK = 16


def _shift(t: tf.Tensor, s, axis: int, reverse: bool, fill: float) -> tf.Tensor:
    """``out[i] = t[i - s]`` (``t[i + s]`` when reverse) along axis, ``fill`` outside."""
    rank = t.shape.rank
    size = tf.shape(t)[axis]
    begin = [0] * rank
    length = [-1] * rank
    length[axis] = size - s
    if reverse:
        begin[axis] = s
    kept = tf.slice(t, begin, length)
    pad = [[0, 0]] * rank
    pad[axis] = [0, s] if reverse else [s, 0]
    return tf.pad(kept, pad, constant_values=fill)


def _doubling_scan(a: tf.Tensor, b: tf.Tensor, axis: int, reverse: bool) -> tf.Tensor:
    """Hillis-Steele scan of h = a h_prev + b along ``axis`` (log-depth).

    Two affine steps compose into one, so after ceil(log2 T) rounds every
    position holds its whole prefix. Unrolled when T is static (what TFLite
    sees), a while loop otherwise.
    """
    length = a.shape[axis]
    if length is not None:
        s = 1
        while s < length:
            b = b + a * _shift(b, s, axis, reverse, 0.0)
            if 2 * s < length:  # the last round does not need the products
                a = a * _shift(a, s, axis, reverse, 1.0)
            s *= 2
        return b
    length = tf.shape(a)[axis]

    def body(s, a, b):
        b = b + a * _shift(b, s, axis, reverse, 0.0)
        a = a * _shift(a, s, axis, reverse, 1.0)
        return s * 2, a, b

    _, _, b = tf.while_loop(lambda s, a, b: s < length, body, (tf.constant(1), a, b))
    return b


def _portable_scan(x: tf.Tensor, gate: tf.Tensor, direction: str) -> tf.Tensor:
    """The recurrence in stock TensorFlow ops, as a blocked scan.

    With a = g and b = (1 - g) x, h[t] = a[t] h[t-1] + b[t]. The scan axis is
    cut into blocks of ``_BLOCK`` steps: (1) inside every block at once, a
    short unrolled loop gives the local scan and the running product of a;
    (2) a log-depth scan over the block ends links the blocks; (3) one
    elementwise pass adds each block's carry-in. About ten passes over the
    data in all, against T tiny sequential steps for tf.scan or ~5 log2(T)
    passes for a plain doubling scan. Padding at the end of the axis has
    b = 0, so it never changes a real position in either direction.
    """
    axis, reverse = _AXIS_REVERSE[direction]
    a = gate
    b = (1 - gate) * x
    shape = tf.shape(x)
    length = shape[axis]
    static_len = x.shape[axis]
    block = _BLOCK if static_len is None else max(1, min(_BLOCK, static_len))
    nblocks = (length + block - 1) // block
    pad = [[0, 0]] * 4
    pad[axis] = [0, nblocks * block - length]
    a = tf.pad(a, pad)
    b = tf.pad(b, pad)
    # [..., nblocks, block, ...] with the block steps on axis + 1.
    blocked = tf.concat([shape[:axis], [nblocks, block], shape[axis + 1:]], axis=0)
    a = tf.reshape(a, blocked)
    b = tf.reshape(b, blocked)
    steps = range(block - 1, -1, -1) if reverse else range(block)
    a_steps = tf.unstack(a, num=block, axis=axis + 1)  # gradient: one stack
    b_steps = tf.unstack(b, num=block, axis=axis + 1)
    h_local, a_local = [None] * block, [None] * block
    h = p = None
    for i in steps:
        ai, bi = a_steps[i], b_steps[i]
        h = bi if h is None else ai * h + bi
        p = ai if p is None else ai * p
        h_local[i], a_local[i] = h, p
    # Block ends (last step in scan order) linked across blocks.
    ends = _doubling_scan(p, h, axis, reverse)
    carry = _shift(ends, 1, axis, reverse, 0.0)
    h = tf.stack(h_local, axis=axis + 1) + tf.stack(a_local, axis=axis + 1) * tf.expand_dims(
        carry, axis + 1)
    h = tf.reshape(h, tf.concat([shape[:axis], [nblocks * block], shape[axis + 1:]], axis=0))
    begin = [0, 0, 0, 0]
    return tf.slice(h, begin, shape)


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
        ``[N, H, W, C]`` tensor h with ``h[t] = (1 - g[t]) x[t] + g[t] h[t-1]``.

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
        The compiled op reads ``x`` once for all four scans.

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


@tf.RegisterGradient("TfDeblur>GatedRecurrence")
def _gated_recurrence_grad(op, dy):
    direction = op.get_attr("direction")
    if isinstance(direction, bytes):
        direction = direction.decode()
    dx, dgate = load_library().tf_deblur_gated_recurrence_grad(
        x=op.inputs[0], gate=op.inputs[1], y=op.outputs[0], dy=dy, direction=direction)
    return dx, dgate
