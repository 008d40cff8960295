"""NaN, infinities and overflow: both implementations of both ops follow docs/ops_nonfinite.md.

Every check runs the portable twin, and the compiled op when the library is
loaded, against the NumPy references (the gated recurrence's run in the op's
own dtype, so that where float32 overflows the reference overflows too).
``assert_allclose`` compares NaN and +-inf positions exactly.
"""

import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import implementations
from tests.ops.reference_deform_conv import random_case, ref_deform_conv, ref_deform_conv_backward
from tests.ops.reference_gated_recurrence import DIRECTIONS, ref_backward, ref_forward
from tfdeblur.ops import gated_recurrence, modulated_deform_conv2d, spatial_rnn

IMPLS = implementations()
NAN, INF = np.nan, np.inf


def assert_same(actual, desired, rtol=1e-5, atol=1e-6, err_msg=""):
    """Same NaN / +inf / -inf positions, finite values within tolerance."""
    np.testing.assert_allclose(np.asarray(actual, np.float64), np.asarray(desired, np.float64),
                               rtol=rtol, atol=atol, equal_nan=True, err_msg=err_msg)


def assert_same_finite(actual, desired, rtol=1e-5, atol=1e-6, err_msg=""):
    """Finite at the same positions and close there; where both are not finite, NaN and
    +-inf may differ (the gradients' rule in docs/ops_nonfinite.md)."""
    a, d = np.asarray(actual, np.float64), np.asarray(desired, np.float64)
    np.testing.assert_array_equal(np.isfinite(a), np.isfinite(d), err_msg=f"{err_msg}: finite")
    fin = np.isfinite(d)
    np.testing.assert_allclose(a[fin], d[fin], rtol=rtol, atol=atol, err_msg=err_msg)


# ----------------------------------------------------------------------------
# Gated recurrence
# ----------------------------------------------------------------------------

def _line(values, dtype=np.float32):
    return np.asarray(values, dtype).reshape(1, 1, -1, 1)


def _gr_run(x, g, direction, impl):
    xt, gt = tf.constant(x), tf.constant(g)
    with tf.GradientTape() as tape:
        tape.watch([xt, gt])
        y = gated_recurrence(xt, gt, direction, implementation=impl)
    dx, dg = tape.gradient(y, [xt, gt])
    return y.numpy(), dx.numpy(), dg.numpy()


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("x,g,want", [
    # The case: the recurrence overflows to -inf, and stays there.
    ([1, 2, 3, 4], [0.5, 1e30, 1e30, 0.5], [0.5, -1.5e30, -INF, -INF]),
    ([1, 2, 3], [0.5, 1e30, 0.5], [0.5, -1.5e30, -7.5e29]),
    # No g[0] * h[-1] term: an infinite first gate gives -inf, not 0 * inf = NaN.
    ([1, 2, 3], [INF, 0.5, 0.5], [-INF, -INF, -INF]),
    ([1, 2, 3], [0.5, INF, 0.5], [0.5, NAN, NAN]),        # inf * 0.5 + (1 - inf) * 2
    ([1, 2, 3], [0.5, NAN, 0.5], [0.5, NAN, NAN]),
    ([1, NAN, 3], [0.5, 0.5, 0.0], [0.5, NAN, NAN]),       # 0 * NaN is NaN
    ([1, INF, 3], [0.5, 0.5, 0.5], [0.5, INF, INF]),
    ([1, -INF, 3], [0.5, 0.5, -0.5], [0.5, -INF, INF]),     # a negative gate flips the sign
    ([1, INF, 3], [0.5, 1.0, 0.5], [0.5, NAN, NAN]),       # (1 - 1) * inf
    ([1, INF, 3], [0.5, 0.5, 0.0], [0.5, INF, NAN]),       # 0 * inf
])
def test_gated_recurrence_short_lines(impl, x, g, want):
    for direction in ("left_to_right", "right_to_left"):
        xs, gs, ws = (np.asarray(v, np.float32) for v in (x, g, want))
        if direction == "right_to_left":
            xs, gs, ws = xs[::-1], gs[::-1], ws[::-1]
        y, dx, dg = _gr_run(_line(xs), _line(gs), direction, impl)
        assert_same(y.ravel(), ws, err_msg=direction)
        assert_same(y, ref_forward(_line(xs), _line(gs), direction, np.float32))
        rdx, rdg = ref_backward(_line(xs), _line(gs), np.ones_like(_line(xs)), direction,
                                np.float32)
        assert_same(dx, rdx, err_msg="dx")
        assert_same_finite(dg, rdg, err_msg="dg")


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("gate", [0.5, -0.7, 1e-3, 1e-30])
def test_infinity_survives_long_lines(impl, gate):
    """An infinity carried over hundreds of steps: the products of gates the portable
    scan forms underflow to 0 (0.5**300, 1e-3**16), and 0 * inf must not become NaN."""
    x = np.ones((1, 2, 300, 1), np.float32)
    x[0, 0, 3, 0] = INF
    x[0, 1, 3, 0] = NAN
    g = np.full_like(x, gate)
    g[0, 1, 200, 0] = 0.0  # NaN stays NaN through a zero gate
    for direction in ("left_to_right", "right_to_left"):
        y = gated_recurrence(x, g, direction, implementation=impl).numpy()
        want = ref_forward(x, g, direction, np.float32)
        assert_same(y, want, err_msg=direction)
        if direction == "left_to_right":
            assert np.isinf(y[0, 0, 3:]).all() and np.isnan(y[0, 1, 3:]).all()
            assert np.isfinite(y[0, :, :3]).all()
    # An exact zero gate after the infinity: 0 * inf = NaN from there on.
    g[0, 0, 150, 0] = 0.0
    y = gated_recurrence(x, g, "left_to_right", implementation=impl).numpy()
    assert np.isinf(y[0, 0, 3:150]).all() and np.isnan(y[0, 0, 150:]).all()


def _sprinkled(rng, shape, dtype, gates):
    x = rng.normal(size=shape)
    if gates == "tanh":
        g = np.tanh(rng.normal(size=shape))
    elif gates == "small":
        g = rng.uniform(-1, 1, shape) * 10.0 ** rng.uniform(-8, 0, shape)
    else:  # exact values the rules single out
        g = rng.choice([0.0, 1.0, -1.0, 0.5, -0.5, 1e-30], size=shape)
    spots = rng.random(shape) < 0.02
    x[spots] = rng.choice([NAN, INF, -INF], size=spots.sum())
    g[rng.random(shape) < 0.005] = NAN
    return x.astype(dtype), g.astype(dtype)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("gates", ["tanh", "small", "exact"])
def test_gated_recurrence_sprinkled_with_nan_and_inf(rng, impl, dtype, gates):
    """Lines of 1 to 70 steps (one block and several), every direction: values, NaN and
    +-inf as the step-by-step reference; gradients finite where the reference's are."""
    for shape in [(2, 5, 70, 2), (1, 37, 3, 3), (1, 16, 17, 1)]:
        x, g = _sprinkled(rng, shape, dtype, gates)
        dy = rng.normal(size=shape).astype(dtype)
        for direction in DIRECTIONS:
            xt, gt = tf.constant(x), tf.constant(g)
            with tf.GradientTape() as tape:
                tape.watch([xt, gt])
                y = gated_recurrence(xt, gt, direction, implementation=impl)
            dx, dg = tape.gradient(y, [xt, gt], output_gradients=tf.constant(dy))
            msg = f"{shape} {direction}"
            assert_same(y.numpy(), ref_forward(x, g, direction, dtype), rtol=1e-4, atol=1e-5,
                        err_msg=msg)
            rdx, rdg = ref_backward(x, g, dy, direction, dtype)
            assert_same(dx.numpy(), rdx, rtol=1e-4, atol=1e-5, err_msg=f"dx {msg}")
            assert_same_finite(dg.numpy(), rdg, rtol=1e-4, atol=1e-5, err_msg=f"dg {msg}")


@pytest.mark.skipif("compiled" not in IMPLS, reason="compiled op library not loaded")
def test_gated_recurrence_compiled_equals_portable_bit_for_class(rng):
    """Fused four directions: NaN / +-inf at exactly the same places in both paths,
    forward and both gradients."""
    x, g = _sprinkled(rng, (2, 40, 35, 3), np.float32, "tanh")
    g = np.concatenate([g, g[..., ::-1], -g, g * 0.1], axis=-1)
    dy = rng.normal(size=g.shape).astype(np.float32)
    out = {}
    for impl in ("compiled", "portable"):
        xt, gt = tf.constant(x), tf.constant(g)
        with tf.GradientTape() as tape:
            tape.watch([xt, gt])
            y = spatial_rnn(xt, gt, implementation=impl)
        out[impl] = [y, *tape.gradient(y, [xt, gt], output_gradients=tf.constant(dy))]
    for name, a, b in zip(("y", "dx", "dg"), out["compiled"], out["portable"], strict=True):
        assert_same(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-5, err_msg=name)


def test_portable_unknown_length_keeps_infinity():
    """Sizes unknown at trace time (a SavedModel's signature): the blocks are linked in a
    while loop, with the same rules."""
    f = tf.function(lambda a, b: gated_recurrence(a, b, "right_to_left",
                                                  implementation="portable"),
                    input_signature=[tf.TensorSpec([None, None, None, 1], tf.float32)] * 2)
    x = np.ones((1, 1, 260, 1), np.float32)
    x[0, 0, 250, 0] = -INF
    g = np.full_like(x, 0.5)
    assert_same(f(x, g).numpy(), ref_forward(x, g, "right_to_left", np.float32))
    assert np.isneginf(f(x, g).numpy()[0, 0, :251]).all()


# ----------------------------------------------------------------------------
# Modulated deformable convolution
# ----------------------------------------------------------------------------

NAMES = ("x", "offset", "mask", "kernel", "bias")


def _dcn_case(seed=0, n=1, h=5, w=6, cin=4, cout=3, dgroups=2):
    return random_case(np.random.default_rng(seed), n=n, h=h, w=w, cin=cin, cout=cout,
                       dgroups=dgroups, spread=2.0)


def _dcn_run(case, impl, dgroups=2, dtype=np.float64):
    inputs = [tf.constant(case[k].astype(dtype)) for k in NAMES]
    with tf.GradientTape() as tape:
        tape.watch(inputs)
        y = modulated_deform_conv2d(*inputs, deformable_groups=dgroups, implementation=impl)
        dy = tf.constant(np.random.default_rng(99).normal(size=y.shape), y.dtype)
        loss = tf.reduce_sum(y * dy)
    return y.numpy(), [t.numpy() for t in tape.gradient(loss, inputs)], dy.numpy()


def _dcn_ref(case, dy, dgroups=2):
    with np.errstate(all="ignore"):
        y = ref_deform_conv(case["x"], case["offset"], case["mask"], case["kernel"], case["bias"],
                            dgroups=dgroups)
        grads = ref_deform_conv_backward(case["x"], case["offset"], case["mask"], case["kernel"],
                                         dy, dgroups=dgroups)
    return y, grads


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("value", [NAN, INF, -INF, 1e30, -1e30, 3e9])
@pytest.mark.parametrize("which", [0, 1])
def test_non_finite_position_is_outside(impl, value, which):
    """A NaN, infinite or huge offset (dy when which=0, dx when 1) puts its sample outside
    the image: it contributes 0 whatever its mask, with zero offset and mask gradients,
    like a sample far outside."""
    case = _dcn_case()
    slot = 5  # group 0, tap 5 of pixel (2, 3)
    case["offset"][0, 2, 3, 2 * slot + which] = value
    case["mask"][0, 2, 3, slot] = NAN  # never used: the sample reads nothing
    far = {k: v.copy() for k, v in case.items()}
    far["offset"][0, 2, 3, 2 * slot + which] = 1e6
    y, grads, dy = _dcn_run(case, impl)
    y_far, grads_far, _ = _dcn_run(far, impl)
    assert np.isfinite(y).all()
    np.testing.assert_allclose(y, y_far, rtol=1e-12, atol=1e-12)
    for name, a, b in zip(NAMES, grads, grads_far, strict=True):
        assert np.isfinite(a).all(), name
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12, err_msg=name)
    assert grads[1][0, 2, 3, 2 * slot + which] == 0 and grads[2][0, 2, 3, slot] == 0
    want_y, want_grads = _dcn_ref(case, dy)
    np.testing.assert_allclose(y, want_y, rtol=1e-10, atol=1e-10)
    for name, a, b in zip(NAMES, grads, want_grads, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-9, err_msg=name)


@pytest.mark.parametrize("impl", IMPLS)
def test_all_positions_nan(impl):
    case = _dcn_case()
    case["offset"][:] = NAN
    y, grads, _ = _dcn_run(case, impl)
    np.testing.assert_allclose(y, np.broadcast_to(case["bias"], y.shape), rtol=0, atol=1e-12)
    for name, g in zip(NAMES, grads, strict=True):
        if name != "bias":
            assert not np.any(g), name


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("where,value", [
    ("x", NAN), ("x", INF), ("x", -INF), ("mask", NAN), ("mask", INF), ("mask", -INF),
    ("kernel", NAN), ("kernel", INF), ("bias", NAN), ("bias", -INF),
])
@pytest.mark.parametrize("integer_offsets", [False, True])
def test_non_finite_data_propagate_like_the_formula(impl, dtype, where, value, integer_offsets):
    """NaN / +-inf in x, mask, kernel or bias: the output's NaN and +-inf as the reference
    formula's; corners of weight 0 (integer offsets) still multiply; gradients finite
    where the reference's are."""
    case = _dcn_case(seed=3)
    if integer_offsets:
        case["offset"] = np.round(case["offset"])
    index = {"x": (0, 2, 2, 1), "mask": (0, 1, 4, 3), "kernel": (1, 0, 2, 1), "bias": (2,)}
    case[where][index[where]] = value
    if where == "mask":  # and on a sample outside, where it must not count
        case["offset"][0, 3, 3, 0] = 40.0
        case["mask"][0, 3, 3, 0] = value
    y, grads, dy = _dcn_run(case, impl, dtype=dtype)
    want_y, want_grads = _dcn_ref(case, dy)
    tol = 1e-4 if dtype == np.float32 else 1e-9
    assert_same(y, want_y, rtol=tol, atol=tol)
    assert not np.isfinite(y).all()
    for name, a, b in zip(NAMES, grads, want_grads, strict=True):
        assert_same_finite(a, b, rtol=tol, atol=tol, err_msg=name)


@pytest.mark.skipif("compiled" not in IMPLS, reason="compiled op library not loaded")
@pytest.mark.parametrize("seed", range(4))
def test_deform_conv_compiled_equals_portable_sprinkled(seed):
    """Random NaN / +-inf in every input, positions beyond the image and non-finite ones:
    identical NaN / +-inf in the output, gradients finite at the same places."""
    rng = np.random.default_rng(seed)
    case = random_case(rng, n=2, h=7, w=6, cin=4, cout=4, dgroups=2, groups=2, spread=4.0)
    for name, p in (("x", 0.01), ("offset", 0.03), ("mask", 0.02), ("kernel", 0.01)):
        spots = rng.random(case[name].shape) < p
        case[name][spots] = rng.choice([NAN, INF, -INF, 1e30], size=spots.sum())
    dy = tf.constant(rng.normal(size=(2, 7, 6, 4)), tf.float32)
    out = {}
    for impl in ("compiled", "portable"):
        inputs = [tf.constant(case[k].astype(np.float32)) for k in NAMES]
        with tf.GradientTape() as tape:
            tape.watch(inputs)
            y = modulated_deform_conv2d(*inputs, groups=2, deformable_groups=2,
                                        implementation=impl)
        out[impl] = [y.numpy()] + [g.numpy() for g in tape.gradient(y, inputs,
                                                                      output_gradients=dy)]
    assert not np.isfinite(out["compiled"][0]).all()
    assert_same(out["compiled"][0], out["portable"][0], rtol=1e-4, atol=1e-4)
    for name, a, b in zip(NAMES, out["compiled"][1:], out["portable"][1:], strict=True):
        assert_same_finite(a, b, rtol=1e-4, atol=1e-4, err_msg=name)
