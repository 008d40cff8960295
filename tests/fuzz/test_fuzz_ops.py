"""Fuzzing both ops: compiled = portable = the NumPy reference, or the same error.

Random geometry (batch 0 to 2, 1-pixel sides, odd sizes, non-square kernels,
strides, dilations, paddings, weight and offset groups), dtypes (float32,
float64; float16 on the portable path with a loose tolerance), extreme and
non-finite offsets, NaN / inf in the data (docs/ops_nonfinite.md). Where the
arguments are invalid, every implementation must raise the same error class.
"""

import functools
import math

import numpy as np
import pytest
import tensorflow as tf

pytest.importorskip("hypothesis", reason="hypothesis is a dev dependency (pip install -e .[dev])")
from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from tests.conftest import implementations
from tests.ops.reference_deform_conv import axis_geometry, ref_deform_conv, ref_deform_conv_backward
from tests.ops.reference_gated_recurrence import DIRECTIONS, ref_backward, ref_forward
from tests.ops.test_nonfinite import assert_same, assert_same_finite
from tfdeblur.ops import gated_recurrence, modulated_deform_conv2d, spatial_rnn

pytestmark = pytest.mark.fuzz
IMPLS = implementations()
NAMES = ("x", "offset", "mask", "kernel", "bias")
TOL = {np.float64: 1e-9, np.float32: 2e-4}


def _outcome(fn):
    """(result, None) or (None, the exception's class)."""
    try:
        return fn(), None
    except (ValueError, tf.errors.InvalidArgumentError) as e:
        return None, type(e)


# ----------------------------------------------------------------------------
# Modulated deformable convolution
# ----------------------------------------------------------------------------

@st.composite
def dcn_cases(draw):
    groups = draw(st.sampled_from([1, 2, 3]))
    dgroups = draw(st.sampled_from([1, 2, 3]))
    cin = groups * dgroups // math.gcd(groups, dgroups) * draw(st.integers(1, 2))
    cout = groups * draw(st.integers(1, 2))
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    strides = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    dilation = (draw(st.integers(1, 3)), draw(st.integers(1, 2)))
    padding = draw(st.one_of(
        st.sampled_from(["same", "valid"]),
        st.tuples(st.tuples(st.integers(0, 3), st.integers(0, 3)),
                  st.tuples(st.integers(0, 3), st.integers(0, 3)))))
    n, h, w = draw(st.integers(0, 2)), draw(st.integers(1, 7)), draw(st.integers(1, 7))
    dtype = draw(st.sampled_from([np.float64, np.float32]))
    seed = draw(st.integers(0, 2**32 - 1))
    extreme = draw(st.sampled_from([None, np.nan, np.inf, -np.inf, 1e30, -1e30, 3e9, 1e7]))
    nonfinite_data = draw(st.booleans())
    return dict(groups=groups, dgroups=dgroups, cin=cin, cout=cout, ksize=(kh, kw),
                strides=strides, dilation=dilation, padding=padding, n=n, h=h, w=w,
                dtype=dtype, seed=seed, extreme=extreme, nonfinite_data=nonfinite_data)


def _dcn_inputs(c):
    """Inputs for the drawn geometry, or None when its output would be empty."""
    rng = np.random.default_rng(c["seed"])
    pads = (c["padding"],) * 2 if isinstance(c["padding"], str) else c["padding"]
    ho, _ = axis_geometry(c["h"], c["ksize"][0], c["strides"][0], c["dilation"][0], pads[0])
    wo, _ = axis_geometry(c["w"], c["ksize"][1], c["strides"][1], c["dilation"][1], pads[1])
    taps = c["dgroups"] * c["ksize"][0] * c["ksize"][1]
    shape_o = (c["n"], max(ho, 1), max(wo, 1))
    spread = 1.5 * max(c["h"], c["w"])
    case = dict(
        x=rng.normal(size=(c["n"], c["h"], c["w"], c["cin"])),
        offset=rng.uniform(-spread, spread, shape_o + (2 * taps,)),
        mask=rng.uniform(0, 1, shape_o + (taps,)),
        kernel=rng.normal(size=c["ksize"] + (c["cin"] // c["groups"], c["cout"])),
        bias=rng.normal(size=(c["cout"],)),
    )
    if c["extreme"] is not None:
        spots = rng.random(case["offset"].shape) < 0.2
        case["offset"][spots] = c["extreme"]
    if c["nonfinite_data"]:
        for name in ("x", "mask"):
            spots = rng.random(case[name].shape) < 0.05
            case[name][spots] = rng.choice([np.nan, np.inf, -np.inf], size=spots.sum())
    case = {k: v.astype(c["dtype"]) for k, v in case.items()}
    return case, ho >= 1 and wo >= 1


def _dcn_op_padding(padding):
    return padding if isinstance(padding, str) else tuple(tuple(p) for p in padding)


def _dcn_forward_backward(case, c, impl, dy):
    inputs = [tf.constant(case[k]) for k in NAMES]
    with tf.GradientTape() as tape:
        tape.watch(inputs)
        y = modulated_deform_conv2d(
            *inputs, strides=c["strides"], padding=_dcn_op_padding(c["padding"]),
            dilation_rate=c["dilation"], groups=c["groups"], deformable_groups=c["dgroups"],
            implementation=impl)
    grads = tape.gradient(y, inputs, output_gradients=tf.constant(dy, y.dtype))
    return y.numpy(), [g.numpy() for g in grads]


@given(dcn_cases())
def test_deform_conv_matches_reference(c):
    case, valid = _dcn_inputs(c)
    ref_args = (c["strides"], c["padding"], c["dilation"], c["groups"], c["dgroups"])
    if not valid:  # output would be empty: every path refuses, with the same error class
        outcomes = {impl: _outcome(lambda impl=impl: _dcn_forward_backward(case, c, impl, 0.0))
                    for impl in IMPLS}
        errors = {impl: err for impl, (_, err) in outcomes.items()}
        assert set(errors.values()) == {ValueError}, errors
        return
    with np.errstate(all="ignore"):
        want = ref_deform_conv(case["x"], case["offset"], case["mask"], case["kernel"],
                               case["bias"], *ref_args)
        dy = np.random.default_rng(c["seed"] + 1).normal(size=want.shape)
        want_grads = ref_deform_conv_backward(case["x"], case["offset"], case["mask"],
                                              case["kernel"], dy, True, *ref_args)
    tol = TOL[c["dtype"]]
    scale = max(1.0, float(np.abs(want[np.isfinite(want)]).max(initial=0.0)))
    results = {impl: _dcn_forward_backward(case, c, impl, dy) for impl in IMPLS}
    for impl, (y, grads) in results.items():
        assert y.shape == want.shape and y.dtype == c["dtype"], impl
        assert_same(y, want, rtol=tol, atol=tol * scale, err_msg=f"{impl} y")
        for name, a, b in zip(NAMES, grads, want_grads, strict=True):
            gscale = max(1.0, float(np.abs(b[np.isfinite(b)]).max(initial=0.0)))
            if c["dtype"] == np.float32 and name == "offset":
                # A float32 position rounded across a bilinear cell edge flips a one-sided
                # offset derivative by O(1): the offsets' gradients in float64 only.
                continue
            assert_same_finite(a, b, rtol=tol, atol=tol * 10 * gscale, err_msg=f"{impl} d{name}")
    if len(results) == 2:
        a, b = results["compiled"][0], results["portable"][0]
        assert_same(a, b, rtol=tol, atol=tol * scale, err_msg="compiled vs portable")


@given(st.integers(0, 2**32 - 1), st.integers(1, 6), st.integers(1, 6),
       st.sampled_from([(1, 1), (3, 3), (2, 3)]))
def test_deform_conv_float16_portable(seed, h, w, ksize):
    """float16 (no CPU kernel: the portable path) against the float64 reference."""
    rng = np.random.default_rng(seed)
    taps = ksize[0] * ksize[1]
    case = dict(x=rng.normal(size=(1, h, w, 4)), offset=rng.uniform(-3, 3, (1, h, w, 2 * taps)),
                mask=rng.uniform(0, 1, (1, h, w, taps)), kernel=rng.normal(size=ksize + (4, 3)),
                bias=rng.normal(size=3))
    case = {k: v.astype(np.float16).astype(np.float64) for k, v in case.items()}
    y = modulated_deform_conv2d(*(case[k].astype(np.float16) for k in NAMES),
                                implementation="portable")
    assert y.dtype == tf.float16
    want = ref_deform_conv(*(case[k] for k in NAMES))
    scale = max(1.0, float(np.abs(want).max()))
    np.testing.assert_allclose(y.numpy().astype(np.float64), want, rtol=2e-2, atol=2e-2 * scale)


@st.composite
def bad_dcn_arguments(draw):
    """One argument wrong at a time, on an otherwise valid call."""
    what = draw(st.sampled_from(["offset_channels", "mask_channels", "offset_size", "batch",
                                 "groups", "deformable_groups", "kernel_channels", "rank",
                                 "dtype", "stride", "dilation", "padding", "bias"]))
    return what, draw(st.integers(1, 3))


@given(bad_dcn_arguments())
def test_deform_conv_bad_arguments_same_error(bad):
    what, k = bad
    x = np.zeros((1, 5, 6, 4), np.float32)
    args = dict(x=x, offset=np.zeros((1, 5, 6, 18), np.float32),
                mask=np.zeros((1, 5, 6, 9), np.float32),
                kernel=np.zeros((3, 3, 4, 4), np.float32), kwargs={})
    if what == "offset_channels":
        args["offset"] = np.zeros((1, 5, 6, 18 + k), np.float32)
    elif what == "mask_channels":
        args["mask"] = np.zeros((1, 5, 6, 9 + k), np.float32)
    elif what == "offset_size":
        args["offset"] = np.zeros((1, 5 + k, 6, 18), np.float32)
    elif what == "batch":
        args["offset"] = np.zeros((1 + k, 5, 6, 18), np.float32)
    elif what == "groups":
        args["kwargs"] = dict(groups=3 * k)
    elif what == "deformable_groups":
        args["kwargs"] = dict(deformable_groups=3 * k)
    elif what == "kernel_channels":
        args["kernel"] = np.zeros((3, 3, 4 + k, 4), np.float32)
    elif what == "rank":
        args["x"] = np.zeros((5, 6, 4)[:k], np.float32)
    elif what == "dtype":
        args["mask"] = args["mask"].astype(np.float64)
    elif what == "stride":
        args["kwargs"] = dict(strides=(1, 1 - k))
    elif what == "dilation":
        args["kwargs"] = dict(dilation_rate=-k)
    elif what == "padding":
        args["kwargs"] = dict(padding=(-k, 0))
    else:
        args["kwargs"] = dict(bias=np.zeros(4 + k, np.float32))
    errors = {impl: _outcome(lambda impl=impl: modulated_deform_conv2d(
        args["x"], args["offset"], args["mask"], args["kernel"], implementation=impl,
        **args["kwargs"]))[1] for impl in IMPLS}
    assert set(errors.values()) == {ValueError}, (what, errors)


# ----------------------------------------------------------------------------
# Gated recurrence
# ----------------------------------------------------------------------------

@st.composite
def gr_cases(draw):
    n = draw(st.integers(0, 2))
    h = draw(st.one_of(st.integers(1, 4), st.integers(15, 40)))
    w = draw(st.one_of(st.integers(1, 4), st.integers(15, 40)))
    c = draw(st.integers(1, 3))
    dtype = draw(st.sampled_from([np.float64, np.float32, np.float16]))
    direction = draw(st.sampled_from(DIRECTIONS + ("all",)))
    # float16 overflows at 65504: no gates beyond (-1, 1) there. "huge" (+-1e30, +-inf
    # among tanh gates) only on lines of one 16-step block, where even overflow follows
    # the kernels step for step, and one direction at a time: the fused op's dx adds
    # four directions' overflowing values in an unspecified order (docs/ops_nonfinite.md).
    kinds = ["tanh", "exact", "small"]
    scan_lengths = {"left_to_right": [w], "right_to_left": [w], "top_to_bottom": [h],
                    "bottom_to_top": [h], "all": [h, w]}[direction]
    if dtype != np.float16:
        kinds.append("wide")
        if max(scan_lengths) <= 16 and direction != "all":
            kinds.append("huge")
    gates = draw(st.sampled_from(kinds))
    nonfinite = dtype != np.float16 and draw(st.sampled_from([True, True, False]))
    seed = draw(st.integers(0, 2**32 - 1))
    return dict(shape=(n, h, w, c), dtype=dtype, direction=direction, gates=gates,
                nonfinite=nonfinite, seed=seed)


def _gr_inputs(c):
    rng = np.random.default_rng(c["seed"])
    slots = 4 if c["direction"] == "all" else 1
    shape = c["shape"]
    gshape = shape[:3] + (slots * shape[3],)
    x = rng.normal(size=shape)
    if c["gates"] == "tanh":
        g = np.tanh(rng.normal(size=gshape))
    elif c["gates"] == "wide":  # beyond (-1, 1): used as given, growth stays in range
        g = rng.uniform(-1.3, 1.3, gshape)
    elif c["gates"] == "exact":
        g = rng.choice([0.0, 1.0, -1.0, 0.5], size=gshape)
    elif c["gates"] == "small":
        g = rng.uniform(-1, 1, gshape) * 10.0 ** rng.uniform(-9, 0, gshape)
    else:
        g = np.tanh(rng.normal(size=gshape))
        spots = rng.random(gshape) < 0.1
        g[spots] = rng.choice([1e30, -1e30, np.inf, -np.inf], size=spots.sum())
    if c["nonfinite"]:
        spots = rng.random(shape) < 0.03
        x[spots] = rng.choice([np.nan, np.inf, -np.inf], size=spots.sum())
        g[rng.random(gshape) < 0.01] = np.nan
    return x.astype(c["dtype"]), g.astype(c["dtype"]), rng.normal(size=gshape).astype(c["dtype"])


def _gr_reference(x, g, dy, direction, dtype):
    if direction != "all":
        return ref_forward(x, g, direction, dtype), ref_backward(x, g, dy, direction, dtype)
    ch = x.shape[3]
    ys, dgs, dx = [], [], np.zeros_like(x)
    for k, d in enumerate(DIRECTIONS):
        sl = slice(k * ch, (k + 1) * ch)
        ys.append(ref_forward(x, g[..., sl], d, dtype))
        a, b = ref_backward(x, g[..., sl], dy[..., sl], d, dtype)
        with np.errstate(all="ignore"):
            dx = dx + a
        dgs.append(b)
    return np.concatenate(ys, -1), (dx, np.concatenate(dgs, -1))


def _gr_run(x, g, dy, direction, impl):
    xt, gt = tf.constant(x), tf.constant(g)
    with tf.GradientTape() as tape:
        tape.watch([xt, gt])
        y = (spatial_rnn(xt, gt, implementation=impl) if direction == "all" else
             gated_recurrence(xt, gt, direction, implementation=impl))
    dx, dg = tape.gradient(y, [xt, gt], output_gradients=tf.constant(dy))
    return y.numpy(), dx.numpy(), dg.numpy()


@given(gr_cases())
def test_gated_recurrence_matches_reference(c):
    x, g, dy = _gr_inputs(c)
    half = c["dtype"] == np.float16
    # The reference runs in the op's dtype (float32 for half: the kernels accumulate there).
    ref_dtype = np.float32 if half else c["dtype"]
    want_y, (want_dx, want_dg) = _gr_reference(x, g, dy, c["direction"], ref_dtype)
    rtol = {np.float64: 1e-10, np.float32: 1e-4, np.float16: 3e-2}[c["dtype"]]
    finite = np.isfinite(want_y)
    scale = max(1.0, float(np.abs(want_y[finite]).max(initial=0.0)))
    results = {impl: _gr_run(x, g, dy, c["direction"], impl) for impl in IMPLS}
    for impl, (y, dx, dg) in results.items():
        assert y.shape == want_y.shape and y.dtype == c["dtype"], impl
        assert_same(y, want_y, rtol=rtol, atol=rtol * scale, err_msg=f"{impl} y")
        gscale = max(1.0, float(np.abs(want_dg[np.isfinite(want_dg)]).max(initial=0.0)))
        dxscale = max(1.0, float(np.abs(want_dx[np.isfinite(want_dx)]).max(initial=0.0)))
        assert_same(dx, want_dx, rtol=rtol, atol=rtol * dxscale, err_msg=f"{impl} dx")
        assert_same_finite(dg, want_dg, rtol=rtol, atol=rtol * gscale, err_msg=f"{impl} dg")
    if len(results) == 2 and not half:
        for name, a, b in zip(("y", "dx", "dg"), results["compiled"], results["portable"],
                              strict=True):
            assert_same(a, b, rtol=rtol, atol=rtol * scale * 10, err_msg=f"compiled vs {name}")


@given(st.sampled_from(["x_rank", "gate_rank", "height", "channels", "fused_channels",
                        "dtype", "direction", "int_dtype"]), st.integers(1, 3))
def test_gated_recurrence_bad_arguments_same_error(what, k):
    x = np.zeros((1, 4, 5, 2), np.float32)
    g = np.zeros((1, 4, 5, 2), np.float32)
    direction, fused = "left_to_right", False
    if what == "x_rank":
        x = np.zeros((4, 5, 2)[:k], np.float32)
    elif what == "gate_rank":
        g = np.zeros((4, 5, 2)[:k], np.float32)
    elif what == "height":
        g = np.zeros((1, 4 + k, 5, 2), np.float32)
    elif what == "channels":
        g = np.zeros((1, 4, 5, 2 + k), np.float32)
    elif what == "fused_channels":
        fused, g = True, np.zeros((1, 4, 5, 8 + k), np.float32)
    elif what == "dtype":
        g = g.astype(np.float64)
    elif what == "direction":
        direction = ["diagonal", "", "LEFT_TO_RIGHT"][k - 1]
    else:
        x = x.astype(np.int32)

    def call(impl):
        if fused:
            return spatial_rnn(x, g, implementation=impl)
        return gated_recurrence(x, g, direction, implementation=impl)

    errors = {impl: _outcome(lambda impl=impl: call(impl))[1] for impl in IMPLS}
    assert set(errors.values()) == {ValueError}, (what, errors)


@given(st.integers(0, 2**32 - 1), st.integers(1, 40), st.integers(1, 40),
       st.sampled_from(DIRECTIONS))
def test_gated_recurrence_unknown_sizes(seed, h, w, direction):
    """Sizes unknown at trace time (the while-loop path) give the same results."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(1, h, w, 2)).astype(np.float32)
    x[rng.random(x.shape) < 0.02] = np.inf
    g = np.tanh(rng.normal(size=x.shape)).astype(np.float32)
    for impl in IMPLS:
        assert_same(_unknown_size_fn(impl, direction)(x, g).numpy(),
                    ref_forward(x, g, direction, np.float32), rtol=1e-4, atol=1e-4,
                    err_msg=impl)


@functools.cache
def _unknown_size_fn(impl, direction):
    """Traced once per implementation and direction (sizes are not part of the trace)."""
    spec = tf.TensorSpec([None, None, None, 2], tf.float32)
    return tf.function(lambda a, b: gated_recurrence(a, b, direction, implementation=impl),
                       input_signature=[spec, spec])
