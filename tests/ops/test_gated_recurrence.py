"""Gated spatial recurrence: compiled and portable against a float64 NumPy reference."""

import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import implementations
from tests.ops.reference_gated_recurrence import ref_backward, ref_forward, ref_spatial_rnn
from tfdeblur import ops
from tfdeblur.ops import DIRECTIONS, gated_recurrence, spatial_rnn

IMPLS = implementations()
# (1, 4, 6, 20) and (2, 3, 5, 37): several channel groups, the last one partial, which
# the CPU kernel's channel-group schedule splits into separate tasks.
SHAPES = [(1, 1, 1, 1), (1, 1, 7, 2), (1, 6, 1, 3), (3, 5, 7, 2), (0, 4, 5, 2), (2, 9, 4, 1),
          (1, 4, 6, 20), (2, 3, 5, 37)]


def _inputs(rng, shape, slots=1, dtype=np.float32):
    x = rng.standard_normal(shape).astype(dtype)
    g = np.tanh(rng.standard_normal(shape[:3] + (slots * shape[3],))).astype(dtype)
    return x, g


# --- forward ---------------------------------------------------------------------------------

@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize("shape", SHAPES)
def test_single_direction_matches_reference(rng, impl, direction, shape):
    x, g = _inputs(rng, shape)
    y = gated_recurrence(x, g, direction, implementation=impl)
    assert y.shape == shape and y.dtype == tf.float32
    np.testing.assert_allclose(y.numpy(), ref_forward(x, g, direction), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("shape", SHAPES)
def test_fused_matches_reference(rng, impl, shape):
    x, g = _inputs(rng, shape, slots=4)
    y = spatial_rnn(x, g, implementation=impl)
    assert y.shape == shape[:3] + (4 * shape[3],)
    np.testing.assert_allclose(y.numpy(), ref_spatial_rnn(x, g), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("impl", IMPLS)
def test_float64_exact_to_reference(rng, impl):
    x, g = _inputs(rng, (2, 6, 11, 3), slots=4, dtype=np.float64)
    y = spatial_rnn(x, g, implementation=impl)
    assert y.dtype == tf.float64
    np.testing.assert_allclose(y.numpy(), ref_spatial_rnn(x, g), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("impl", IMPLS)
def test_gates_used_as_given(rng, impl):
    # Gates outside (-1, 1) are not clipped or rescaled by the op.
    x = rng.standard_normal((1, 3, 6, 2)).astype(np.float64)
    g = rng.uniform(-1.5, 1.5, (1, 3, 6, 2))
    y = gated_recurrence(x, g, "right_to_left", implementation=impl)
    np.testing.assert_allclose(y.numpy(), ref_forward(x, g, "right_to_left"), rtol=1e-12)


@pytest.mark.skipif("compiled" not in IMPLS, reason="compiled op library not loaded")
def test_compiled_and_portable_agree(rng):
    x, g = _inputs(rng, (3, 17, 23, 8), slots=4)
    a = spatial_rnn(x, g, implementation="compiled").numpy()
    b = spatial_rnn(x, g, implementation="portable").numpy()
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


# --- gradients -------------------------------------------------------------------------------

@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("direction", DIRECTIONS)
def test_gradient_numerical(rng, impl, direction):
    x, g = _inputs(rng, (2, 3, 4, 2), dtype=np.float64)
    theo, num = tf.test.compute_gradient(
        lambda a, b: gated_recurrence(a, b, direction, implementation=impl),
        [tf.constant(x), tf.constant(g)])
    for t, n in zip(theo, num, strict=True):
        np.testing.assert_allclose(t, n, rtol=1e-7, atol=1e-8)


@pytest.mark.parametrize("impl", IMPLS)
def test_fused_gradient_numerical(rng, impl):
    x, g = _inputs(rng, (1, 3, 5, 2), slots=4, dtype=np.float64)
    theo, num = tf.test.compute_gradient(
        lambda a, b: spatial_rnn(a, b, implementation=impl), [tf.constant(x), tf.constant(g)])
    for t, n in zip(theo, num, strict=True):
        np.testing.assert_allclose(t, n, rtol=1e-7, atol=1e-8)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (2, 7, 5, 3), (0, 3, 3, 2), (1, 1, 9, 4),
                                   (2, 4, 3, 19), (1, 5, 4, 33)])
def test_gradient_matches_reference_backward(rng, impl, shape):
    x, g = _inputs(rng, shape, slots=4, dtype=np.float64)
    dy = rng.standard_normal(g.shape)
    xt, gt = tf.constant(x), tf.constant(g)
    with tf.GradientTape() as tape:
        tape.watch([xt, gt])
        y = spatial_rnn(xt, gt, implementation=impl)
    dx, dg = tape.gradient(y, [xt, gt], output_gradients=tf.constant(dy))
    c = shape[3]
    want_dx = np.zeros_like(x)
    want_dg = np.zeros_like(g)
    for k, d in enumerate(DIRECTIONS):
        sl = slice(k * c, (k + 1) * c)
        a, b = ref_backward(x, g[..., sl], dy[..., sl], d)
        want_dx += a
        want_dg[..., sl] = b
    np.testing.assert_allclose(dx.numpy(), want_dx, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(dg.numpy(), want_dg, rtol=1e-10, atol=1e-12)


# --- graph mode, determinism -----------------------------------------------------------------

@pytest.mark.parametrize("impl", IMPLS)
def test_unknown_height_width_in_tf_function(rng, impl):
    f = tf.function(lambda a, b: spatial_rnn(a, b, implementation=impl), input_signature=[
        tf.TensorSpec([None, None, None, 2], tf.float32),
        tf.TensorSpec([None, None, None, 8], tf.float32)])
    for shape in [(1, 5, 3, 2), (2, 1, 8, 2), (1, 12, 12, 2)]:
        x, g = _inputs(rng, shape, slots=4)
        np.testing.assert_allclose(f(x, g).numpy(), ref_spatial_rnn(x, g), rtol=1e-5, atol=1e-6)

    fg = tf.function(lambda a, b: tf.gradients(spatial_rnn(a, b, implementation=impl), [a, b]),
                     input_signature=f.input_signature)
    x, g = _inputs(rng, (1, 4, 6, 2), slots=4)
    dx, dg = fg(x, g)
    assert dx.shape == x.shape and dg.shape == g.shape


@pytest.mark.skipif("compiled" not in IMPLS, reason="compiled op library not loaded")
def test_deterministic(rng):
    x, g = _inputs(rng, (2, 33, 47, 16), slots=4)
    xt, gt = tf.constant(x), tf.constant(g)

    def run():
        with tf.GradientTape() as tape:
            tape.watch([xt, gt])
            y = spatial_rnn(xt, gt, implementation="compiled")
            loss = tf.reduce_sum(y * y)
        return [y.numpy(), *[t.numpy() for t in tape.gradient(loss, [xt, gt])]]

    first = run()
    for _ in range(3):
        for a, b in zip(first, run(), strict=True):
            assert np.array_equal(a, b)


# --- bad inputs ------------------------------------------------------------------------------

@pytest.mark.parametrize("impl", IMPLS)
def test_bad_inputs_name_the_argument(impl):
    x = tf.zeros([1, 4, 5, 2])
    with pytest.raises(ValueError, match="x must be a rank-4"):
        gated_recurrence(tf.zeros([4, 5, 2]), tf.zeros([4, 5, 2]), "left_to_right",
                         implementation=impl)
    with pytest.raises(ValueError, match="gate must be a rank-4"):
        gated_recurrence(x, tf.zeros([4, 5, 2]), "left_to_right", implementation=impl)
    with pytest.raises(ValueError, match="gate must have the height of x"):
        gated_recurrence(x, tf.zeros([1, 3, 5, 2]), "left_to_right", implementation=impl)
    with pytest.raises(ValueError, match="gate must have the channels of x"):
        gated_recurrence(x, tf.zeros([1, 4, 5, 3]), "left_to_right", implementation=impl)
    with pytest.raises(ValueError, match=r"gates must have 4 x \(channels of x\) = 8"):
        spatial_rnn(x, tf.zeros([1, 4, 5, 2]), implementation=impl)
    with pytest.raises(ValueError, match="direction must be one of"):
        gated_recurrence(x, x, "diagonal", implementation=impl)
    with pytest.raises(ValueError, match="x must be float16, bfloat16, float32 or float64"):
        gated_recurrence(tf.zeros([1, 4, 5, 2], tf.int32), x, "left_to_right",
                         implementation=impl)
    with pytest.raises(ValueError, match="gate must have the same dtype as x"):
        gated_recurrence(x, tf.zeros([1, 4, 5, 2], tf.float64), "left_to_right",
                         implementation=impl)
    with pytest.raises(ValueError, match="implementation must be one of"):
        gated_recurrence(x, x, "left_to_right", implementation="fast")


@pytest.mark.parametrize("impl", IMPLS)
def test_runtime_shape_mismatch_is_invalid_argument(impl):
    # Shapes unknown at trace time: the mismatch is caught when the op runs
    # (a height-1 gate must not broadcast silently).
    f = tf.function(lambda a, b: spatial_rnn(a, b, implementation=impl), input_signature=[
        tf.TensorSpec([None, None, None, 2], tf.float32),
        tf.TensorSpec([None, None, None, None], tf.float32)])
    with pytest.raises(tf.errors.InvalidArgumentError, match="gate"):
        f(tf.zeros([1, 4, 5, 2]), tf.zeros([1, 1, 5, 8]))
    with pytest.raises(tf.errors.InvalidArgumentError, match="gate"):
        f(tf.zeros([1, 4, 5, 2]), tf.zeros([1, 4, 5, 2]))


@pytest.mark.skipif("compiled" not in IMPLS, reason="compiled op library not loaded")
def test_compiled_kernel_validates_directly():
    # The raw op, bypassing the Python checks, still rejects bad shapes.
    lib = ops._loader.load_library()
    with pytest.raises((tf.errors.InvalidArgumentError, ValueError), match="gate"):
        lib.tf_deblur_gated_recurrence(x=tf.zeros([1, 4, 5, 2]), gate=tf.zeros([1, 4, 5, 3]),
                                       direction="all")
    with pytest.raises((tf.errors.InvalidArgumentError, ValueError), match="x must be a rank-4"):
        lib.tf_deblur_gated_recurrence(x=tf.zeros([4, 5, 2]), gate=tf.zeros([4, 5, 2]),
                                       direction="left_to_right")


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("dtype", [tf.float16, tf.bfloat16])
def test_16_bit_dtypes(rng, impl, dtype):
    x, g = _inputs(rng, (1, 5, 9, 4), slots=4)
    y = spatial_rnn(tf.cast(x, dtype), tf.cast(g, dtype), implementation=impl)
    assert y.dtype == dtype
    tol = 2e-2 if dtype == tf.float16 else 8e-2
    np.testing.assert_allclose(tf.cast(y, tf.float32).numpy(), ref_spatial_rnn(x, g),
                               rtol=tol, atol=tol)
