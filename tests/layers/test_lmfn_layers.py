"""LMFN's layers against float64 NumPy references written from the papers' formulas."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfdeblur.layers import (
    AttentionChannelFusion,
    AttentionLayerFusion,
    DownBlock,
    EnhancedSpatialAttention,
    PixelShuffle,
    ResidualBlock,
    ResidualFeatureDistillationBlock,
    UpsampleAdd,
)

# ---------------------------------------------------------------- references


def conv_ref(x, kernel, bias, stride=1, padding="same"):
    """Cross-correlation with Keras' padding rules ("same": extra pad at the end)."""
    kh, kw = kernel.shape[:2]
    n, h, w, _ = x.shape
    if padding == "same":
        oh, ow = -(-h // stride), -(-w // stride)
        ph = max((oh - 1) * stride + kh - h, 0)
        pw = max((ow - 1) * stride + kw - w, 0)
        x = np.pad(x, [(0, 0), (ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2), (0, 0)])
    else:
        oh, ow = (h - kh) // stride + 1, (w - kw) // stride + 1
    out = np.zeros((n, oh, ow, kernel.shape[3]))
    for i in range(oh):
        for j in range(ow):
            patch = x[:, i * stride:i * stride + kh, j * stride:j * stride + kw, :]
            out[:, i, j, :] = np.einsum("nabc,abcd->nd", patch, kernel)
    return out + bias


def lrelu(x, slope):
    return np.where(x >= 0, x, slope * x)


# tf.nn.leaky_relu (used by DownBlock) stores alpha as a float32 attribute,
# even for float64 data.
ALPHA_0_1 = float(np.float32(0.1))


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def max_pool_ref(x, k, s):
    n, h, w, c = x.shape
    oh, ow = (h - k) // s + 1, (w - k) // s + 1
    out = np.empty((n, oh, ow, c))
    for i in range(oh):
        for j in range(ow):
            out[:, i, j] = x[:, i * s:i * s + k, j * s:j * s + k].max(axis=(1, 2))
    return out


def resize_bilinear_ref(x, oh, ow):
    """PyTorch's bilinear interpolation with align_corners=False."""
    def axis_weights(n_in, n_out):
        src = np.maximum((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0.0)
        i0 = np.minimum(np.floor(src).astype(int), n_in - 1)
        i1 = np.minimum(i0 + 1, n_in - 1)
        lam = src - i0
        m = np.zeros((n_out, n_in))
        m[np.arange(n_out), i0] += 1 - lam
        m[np.arange(n_out), i1] += lam
        return m
    ry, rx = axis_weights(x.shape[1], oh), axis_weights(x.shape[2], ow)
    return np.einsum("ih,nhwc,jw->nijc", ry, x, rx)


def weights_of(conv):
    return conv.kernel.numpy(), conv.bias.numpy()


def esa_ref(x, layer):
    c1_ = conv_ref(x, *weights_of(layer.conv1))
    c1 = conv_ref(c1_, *weights_of(layer.conv2), stride=2, padding="valid")
    v_max = max_pool_ref(c1, 7, 3)
    v_range = np.maximum(conv_ref(v_max, *weights_of(layer.conv_max)), 0)
    c3 = np.maximum(conv_ref(v_range, *weights_of(layer.conv3)), 0)
    c3 = conv_ref(c3, *weights_of(layer.conv3_))
    c3 = resize_bilinear_ref(c3, x.shape[1], x.shape[2])
    cf = conv_ref(c1_, *weights_of(layer.conv_f))
    return x * sigmoid(conv_ref(c3 + cf, *weights_of(layer.conv4)))


def rfdb_ref(x, layer, slope=0.05):
    d1 = lrelu(conv_ref(x, *weights_of(layer.c1_d)), slope)
    r1 = lrelu(conv_ref(x, *weights_of(layer.c1_r)) + x, slope)
    d2 = lrelu(conv_ref(r1, *weights_of(layer.c2_d)), slope)
    r2 = lrelu(conv_ref(r1, *weights_of(layer.c2_r)) + r1, slope)
    d3 = lrelu(conv_ref(r2, *weights_of(layer.c3_d)), slope)
    r3 = lrelu(conv_ref(r2, *weights_of(layer.c3_r)) + r2, slope)
    r4 = lrelu(conv_ref(r3, *weights_of(layer.c4)), slope)
    fused = conv_ref(np.concatenate([d1, d2, d3, r4], axis=-1), *weights_of(layer.c5))
    return esa_ref(fused, layer.esa)


def alfm_ref(inputs, theta):
    """Eqs. (1)-(2): one row per channel of every block, block-major."""
    n_blocks = len(inputs)
    b, h, w, c = inputs[0].shape
    out = np.empty((b, h, w, n_blocks * c))
    for k in range(b):
        rows = [inputs[n][k, :, :, ch].reshape(-1) for n in range(n_blocks) for ch in range(c)]
        f = np.stack(rows)  # [N*C, H*W]
        e = f @ f.T
        e = np.exp(e - e.max(axis=1, keepdims=True))
        a = e / e.sum(axis=1, keepdims=True)
        g = theta * (a @ f) + f
        for r in range(n_blocks * c):
            out[k, :, :, r] = g[r].reshape(h, w)
    return out


def acfm_ref(x, k1, b1, k2, b2, alpha):
    """Eq. (3) as a literal 3D convolution of the volume (channel, H, W), zero-padded."""
    b, h, w, c = x.shape
    vol = np.transpose(x, (0, 3, 1, 2))  # [B, C, H, W]
    padded = np.pad(vol, [(0, 0), (0, 0), (1, 1), (1, 1)])
    y = np.full_like(vol, b1)
    for i in range(3):
        for j in range(3):
            y += k1[0, i, j, 0, 0] * padded[:, :, i:i + h, j:j + w]
    padded = np.pad(y, [(0, 0), (1, 1), (0, 0), (0, 0)])
    z = np.full_like(vol, b2)
    for d in range(3):
        z += k2[d, 0, 0, 0, 0] * padded[:, d:d + c]
    out = vol + alpha * sigmoid(z) * vol
    return np.transpose(out, (0, 2, 3, 1))


def pixel_shuffle_ref(x, s):
    n, h, w, c = x.shape
    co = c // (s * s)
    out = np.empty((n, h * s, w * s, co))
    for a in range(s):
        for b in range(s):
            out[:, a::s, b::s, :] = x[..., (a * s + b) * co:(a * s + b + 1) * co]
    return out


# ------------------------------------------------------------------- helpers


def randomise(layer, rng, scale=0.3):
    for v in layer.weights:
        v.assign(rng.normal(0.0, scale, v.shape).astype(v.dtype))


def built(layer, shape, rng, scale=0.3):
    layer.build(shape)
    randomise(layer, rng, scale)
    return layer


def assert_gradient(fn, x, tol=1e-6, delta=1e-6):
    # A small step keeps the differences off the kinks of (leaky) ReLU and
    # max-pooling; float64 leaves them accurate. tf.function for speed.
    theoretical, numerical = tf.test.compute_gradient(tf.function(fn), [tf.constant(x)],
                                                      delta=delta)
    for t, n in zip(theoretical, numerical, strict=True):
        np.testing.assert_allclose(t, n, atol=tol, rtol=tol)


def assert_variable_gradients(layer, call, rng, eps=1e-6, tol=1e-6):
    """Tape gradients of a random projection of ``call()`` w.r.t. every weight,
    against central differences."""
    proj = tf.constant(rng.normal(size=call().shape))
    objective = lambda: float(tf.reduce_sum(proj * call()))
    for var in layer.weights:
        with tf.GradientTape() as tape:
            value = tf.reduce_sum(proj * call())
        analytic = tape.gradient(value, var).numpy().reshape(-1)
        original = var.numpy()
        numeric = []
        for i in range(original.size):
            step = np.zeros(original.size)
            step[i] = eps
            var.assign(original + step.reshape(original.shape))
            plus = objective()
            var.assign(original - step.reshape(original.shape))
            minus = objective()
            numeric.append((plus - minus) / (2 * eps))
        var.assign(original)
        np.testing.assert_allclose(analytic, numeric, rtol=tol, atol=tol, err_msg=var.path)


def assert_config_round_trip(layer):
    clone = type(layer).from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert type(restored) is type(layer)
    assert restored.get_config() == layer.get_config()


F64 = "float64"

# ------------------------------------------------------------------- DownBlock


@pytest.mark.parametrize("shape", [(2, 7, 5, 3), (1, 1, 6, 2), (1, 8, 1, 2), (0, 4, 4, 3)])
def test_down_block_matches_reference(shape, rng):
    layer = built(DownBlock(5, dtype=F64), shape, rng)
    x = rng.normal(size=shape)
    y = layer(x).numpy()
    ref = lrelu(conv_ref(x, *weights_of(layer.conv_down), stride=2), ALPHA_0_1)
    ref = lrelu(conv_ref(ref, *weights_of(layer.conv)), ALPHA_0_1)
    assert y.shape == (shape[0], -(-shape[1] // 2), -(-shape[2] // 2), 5)
    np.testing.assert_allclose(y, ref, rtol=1e-10, atol=1e-10)


def test_down_block_gradient(rng):
    layer = built(DownBlock(2, dtype=F64), (1, 5, 4, 2), rng)
    assert_gradient(layer, rng.normal(size=(1, 5, 4, 2)))


def test_down_block_config_and_errors():
    assert_config_round_trip(DownBlock(8, negative_slope=0.2, name="d"))
    with pytest.raises(ValueError, match="filters"):
        DownBlock(0)
    with pytest.raises(ValueError, match="rank-4"):
        DownBlock(4).build((None, 8, 3))


# --------------------------------------------------------------- ResidualBlock


@pytest.mark.parametrize("kernel_size,shape", [(3, (2, 6, 5, 3)), ((1, 3), (1, 4, 7, 2)),
                                               ((3, 1), (1, 1, 1, 3)), (3, (0, 3, 3, 2))])
def test_residual_block_matches_reference(kernel_size, shape, rng):
    layer = built(ResidualBlock(kernel_size, dtype=F64), shape, rng)
    x = rng.normal(size=shape)
    ref = x + conv_ref(np.maximum(conv_ref(x, *weights_of(layer.conv1)), 0),
                       *weights_of(layer.conv2))
    np.testing.assert_allclose(layer(x).numpy(), ref, rtol=1e-10, atol=1e-10)


def test_residual_block_gradient(rng):
    layer = built(ResidualBlock((3, 2), dtype=F64), (1, 4, 5, 2), rng)
    assert_gradient(layer, rng.normal(size=(1, 4, 5, 2)))


def test_residual_block_config_and_errors():
    layer = ResidualBlock((1, 3))
    assert_config_round_trip(layer)
    assert layer.get_config()["kernel_size"] == (1, 3)
    with pytest.raises(ValueError, match="kernel_size"):
        ResidualBlock((3,))
    with pytest.raises(ValueError, match="channel dimension"):
        ResidualBlock().build((None, 4, 4, None))


# ---------------------------------------------------------------- PixelShuffle


@pytest.mark.parametrize("scale,shape", [(2, (2, 3, 5, 12)), (3, (1, 1, 2, 18)),
                                         (2, (0, 2, 2, 4))])
def test_pixel_shuffle_matches_reference(scale, shape, rng):
    x = rng.normal(size=shape).astype("float32")
    np.testing.assert_array_equal(PixelShuffle(scale)(x).numpy(), pixel_shuffle_ref(x, scale))


def test_pixel_shuffle_errors():
    assert_config_round_trip(PixelShuffle(3))
    with pytest.raises(ValueError, match="divisible by scale"):
        PixelShuffle(2)(np.zeros((1, 2, 2, 6), "float32"))
    with pytest.raises(ValueError, match="scale"):
        PixelShuffle(0)


# ----------------------------------------------------------------- UpsampleAdd


@pytest.mark.parametrize("small,large", [
    ((2, 3, 4, 2), (2, 6, 8, 2)), ((1, 1, 1, 3), (1, 2, 5, 3)), ((1, 4, 3, 1), (1, 7, 5, 1)),
    ((0, 2, 2, 2), (0, 4, 4, 2))])
def test_upsample_add_matches_reference(small, large, rng):
    a, b = rng.normal(size=small), rng.normal(size=large)
    ref = b + resize_bilinear_ref(a, large[1], large[2])
    # Bilinear resizing runs in float32 inside TensorFlow.
    np.testing.assert_allclose(UpsampleAdd(dtype=F64)([a, b]).numpy(), ref, atol=1e-6)


def test_upsample_add_dynamic_shapes_and_gradient(rng):
    layer = UpsampleAdd()
    spec = tf.TensorSpec([None, None, None, 2])
    fn = tf.function(lambda a, b: layer([a, b]), input_signature=[spec, spec])
    a = rng.normal(size=(1, 3, 5, 2)).astype("float32")
    b = rng.normal(size=(1, 6, 9, 2)).astype("float32")
    np.testing.assert_allclose(fn(a, b).numpy(), b + resize_bilinear_ref(a, 6, 9), atol=1e-5)
    big = rng.normal(size=(1, 4, 6, 2))
    # Resizing rounds to float32 but is linear: a large step is exact and
    # keeps the rounding small against it.
    assert_gradient(lambda t: UpsampleAdd(dtype=F64)([t, tf.constant(big)]),
                    rng.normal(size=(1, 2, 3, 2)), tol=1e-5, delta=0.1)


def test_upsample_add_errors():
    with pytest.raises(ValueError, match="same channels"):
        UpsampleAdd()([np.zeros((1, 2, 2, 3), "float32"), np.zeros((1, 4, 4, 2), "float32")])
    with pytest.raises(ValueError, match=r"list \[small, large\]"):
        UpsampleAdd()(np.zeros((1, 2, 2, 3), "float32"))
    assert_config_round_trip(UpsampleAdd(name="fuse"))


# ---------------------------------------------------- EnhancedSpatialAttention


@pytest.mark.parametrize("shape", [(2, 15, 15, 4), (1, 23, 16, 6), (1, 40, 17, 4)])
def test_esa_matches_reference(shape, rng):
    layer = built(EnhancedSpatialAttention(2, dtype=F64), shape, rng)
    x = rng.normal(size=shape)
    # Bilinear resizing runs in float32 inside TensorFlow, hence the tolerance.
    np.testing.assert_allclose(layer(x).numpy(), esa_ref(x, layer), rtol=1e-5, atol=1e-6)


def test_esa_gradient(rng):
    # 21 x 18 pools to 2 x 2, so the bilinear up-sampling is not a broadcast.
    layer = built(EnhancedSpatialAttention(1, dtype=F64), (1, 21, 18, 2), rng)
    assert_gradient(layer, rng.normal(size=(1, 21, 18, 2)))


def test_esa_rejects_small_inputs(rng):
    layer = EnhancedSpatialAttention(1)
    with pytest.raises(ValueError, match="at least 15, got 14"):
        layer(np.zeros((1, 14, 20, 4), "float32"))
    fn = tf.function(layer, input_signature=[tf.TensorSpec([None, None, None, 4])])
    with pytest.raises(tf.errors.InvalidArgumentError, match="at least 15"):
        fn(np.zeros((1, 20, 14, 4), "float32"))
    with pytest.raises(ValueError, match="channels"):
        EnhancedSpatialAttention(0)


# ------------------------------------------------------------------------ RFDB


@pytest.mark.parametrize("shape", [(1, 15, 15, 4), (2, 16, 21, 8)])
def test_rfdb_matches_reference(shape, rng):
    layer = built(ResidualFeatureDistillationBlock(dtype=F64), shape, rng, scale=0.2)
    assert layer.c1_d.filters == shape[-1] // 2 and layer.esa.channels == shape[-1] // 4
    x = rng.normal(size=shape)
    np.testing.assert_allclose(layer(x).numpy(), rfdb_ref(x, layer), rtol=1e-5, atol=1e-6)


def test_rfdb_same_in_graphs_and_eagerly(rng):
    # Regression: TF's oneDNN remapper fuses conv + bias + add + LeakyRelu in
    # graphs and then ignores the slope; the block must not hit that fusion.
    layer = built(ResidualFeatureDistillationBlock(), (None, None, None, 8), rng)
    x = rng.normal(size=(2, 16, 17, 8)).astype("float32")
    eager = layer(x).numpy()
    graph = tf.function(layer, input_signature=[tf.TensorSpec([None, None, None, 8])])(x)
    np.testing.assert_allclose(graph.numpy(), eager, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(tf.function(layer)(x).numpy(), eager, rtol=1e-5, atol=1e-5)


def test_rfdb_explicit_widths_and_parameters():
    layer = ResidualFeatureDistillationBlock(distilled_channels=3, attention_channels=2)
    layer.build((None, None, None, 2))
    assert layer.c4.filters == 3 and layer.esa.channels == 2
    paper = ResidualFeatureDistillationBlock()
    paper.build((None, None, None, 64))
    # RFDN's block at 64 channels: 3 x (1x1 64->32 + 3x3 64->64) + 3x3 64->32 + 1x1 128->64
    # + ESA(16) = 155,424 parameters.
    assert paper.count_params() == 155_424


def test_rfdb_gradient(rng):
    layer = built(ResidualFeatureDistillationBlock(dtype=F64), (1, 15, 15, 4), rng, scale=0.2)
    assert_gradient(layer, rng.normal(size=(1, 15, 15, 4)))


def test_rfdb_config_and_errors():
    assert_config_round_trip(ResidualFeatureDistillationBlock(3, 2, negative_slope=0.1))
    with pytest.raises(ValueError, match="at least 4"):
        ResidualFeatureDistillationBlock().build((None, 16, 16, 2))
    with pytest.raises(ValueError, match="distilled_channels"):
        ResidualFeatureDistillationBlock(distilled_channels=-1)
    with pytest.raises(ValueError, match="negative_slope"):
        ResidualFeatureDistillationBlock(negative_slope=1.5)


# ------------------------------------------------------------------------ ALFM


@pytest.mark.parametrize("n_blocks,shape", [(4, (2, 3, 5, 2)), (1, (1, 1, 1, 3)),
                                            (3, (1, 4, 1, 1)), (2, (0, 2, 2, 2))])
def test_alfm_matches_reference(n_blocks, shape, rng):
    layer = AttentionLayerFusion(dtype=F64)
    inputs = [rng.normal(size=shape) for _ in range(n_blocks)]
    layer.build([shape] * n_blocks)
    layer.theta.assign(0.7)
    y = layer(inputs).numpy()
    assert y.shape == (*shape[:3], n_blocks * shape[3])
    np.testing.assert_allclose(y, alfm_ref(inputs, 0.7), rtol=1e-10, atol=1e-10)


def test_alfm_starts_as_identity(rng):
    inputs = [rng.normal(size=(1, 3, 4, 2)).astype("float32") for _ in range(3)]
    y = AttentionLayerFusion()(inputs).numpy()
    np.testing.assert_array_equal(y, np.concatenate(inputs, axis=-1))


def test_alfm_gradient(rng):
    layer = AttentionLayerFusion(dtype=F64)
    layer.build([(1, 3, 2, 2)] * 2)
    layer.theta.assign(0.6)
    x = rng.normal(scale=0.5, size=(2, 1, 3, 2, 2))
    assert_gradient(lambda t: layer([t[0], t[1]]), x)
    assert_variable_gradients(layer, lambda: layer([x[0], x[1]]), rng)


def test_alfm_errors():
    layer = AttentionLayerFusion()
    with pytest.raises(ValueError, match="same shape"):
        layer([np.zeros((1, 4, 4, 2), "float32"), np.zeros((1, 4, 4, 3), "float32")])
    with pytest.raises(ValueError, match="non-empty list"):
        AttentionLayerFusion()(np.zeros((1, 4, 4, 2), "float32"))
    assert_config_round_trip(AttentionLayerFusion(name="alfm"))


# ------------------------------------------------------------------------ ACFM


@pytest.mark.parametrize("shape", [(2, 5, 4, 3), (1, 1, 1, 1), (1, 3, 7, 2), (0, 2, 2, 4)])
def test_acfm_matches_reference(shape, rng):
    layer = built(AttentionChannelFusion(dtype=F64), shape, rng, scale=0.5)
    layer.alpha.assign(0.8)
    x = rng.normal(size=shape)
    ref = acfm_ref(x, layer.spatial_kernel.numpy(), layer.spatial_bias.numpy(),
                   layer.channel_kernel.numpy(), layer.channel_bias.numpy(), 0.8)
    np.testing.assert_allclose(layer(x).numpy(), ref, rtol=1e-10, atol=1e-10)


def test_acfm_is_asymmetric_along_channels(rng):
    # Guards the orientation of the channel kernel: a wrong flip would still
    # match a symmetric kernel.
    layer = built(AttentionChannelFusion(dtype=F64), (1, 3, 3, 5), rng)
    layer.channel_kernel.assign(np.array([1.0, 0.0, -2.0]).reshape(3, 1, 1, 1, 1))
    layer.alpha.assign(1.0)
    x = rng.normal(size=(1, 3, 3, 5))
    ref = acfm_ref(x, layer.spatial_kernel.numpy(), layer.spatial_bias.numpy(),
                   layer.channel_kernel.numpy(), layer.channel_bias.numpy(), 1.0)
    np.testing.assert_allclose(layer(x).numpy(), ref, rtol=1e-10, atol=1e-10)


def test_acfm_gradients(rng):
    layer = built(AttentionChannelFusion(dtype=F64), (1, 3, 4, 3), rng, scale=0.5)
    layer.alpha.assign(0.9)
    x = rng.normal(size=(1, 3, 4, 3))
    assert_gradient(layer, x)
    assert_variable_gradients(layer, lambda: layer(x), rng)


def test_acfm_starts_as_identity_and_errors(rng):
    x = rng.normal(size=(1, 4, 4, 3)).astype("float32")
    np.testing.assert_array_equal(AttentionChannelFusion()(x).numpy(), x)
    with pytest.raises(ValueError, match="rank-4"):
        AttentionChannelFusion()(np.zeros((4, 4, 3), "float32"))
    assert_config_round_trip(AttentionChannelFusion(name="acfm"))
