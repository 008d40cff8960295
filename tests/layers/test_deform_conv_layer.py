"""ModulatedDeformConv2D layer: both offset modes, positions, serialisation, training."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import implementations
from tfdeblur.layers import ModulatedDeformConv2D
from tfdeblur.ops import modulated_deform_conv2d

IMPLS = implementations()


def _pads(x_shape, ksize, strides, padding, dilation):
    """(pad_top, pad_left) by the rule of docs/ops.md section 2."""
    out = []
    for size, k, s, d, axis in zip(x_shape[1:3], ksize, strides, dilation, (0, 1), strict=True):
        if padding == "same":
            total = max((-(-size // s) - 1) * s + (k - 1) * d + 1 - size, 0)
            out.append(total // 2)
        elif padding == "valid":
            out.append(0)
        else:
            out.append(padding[axis])
    return out


def _output_size(size, k, s, d, pad_before, padding):
    if padding == "same":
        return -(-size // s)
    return (size + 2 * pad_before - (k - 1) * d - 1) // s + 1


def _dense(x, kernel, strides, padding, dilation):
    """Plain convolution of any geometry: the op with zero offsets and unit masks."""
    x = tf.convert_to_tensor(x)
    ksize = kernel.shape[:2]
    pads = _pads(x.shape, ksize, strides, padding, dilation)
    n = x.shape[0]
    ho, wo = (_output_size(x.shape[1 + a], ksize[a], strides[a], dilation[a], pads[a], padding)
              for a in (0, 1))
    taps = ksize[0] * ksize[1]
    return modulated_deform_conv2d(x, tf.zeros([n, ho, wo, 2 * taps], x.dtype),
                                   tf.ones([n, ho, wo, taps], x.dtype), kernel, strides=strides,
                                   padding=padding, dilation_rate=dilation,
                                   implementation="portable")


@pytest.mark.parametrize("impl", IMPLS)
def test_internal_mode_starts_as_half_masked_convolution(impl):
    """Zero-initialised offset conv: offsets 0 and masks sigmoid(0) = 0.5 (DCNv2)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 9, 10, 4)).astype(np.float32)
    layer = ModulatedDeformConv2D(6, 3, bias_initializer="random_normal", implementation=impl)
    y = layer(x)
    expected = 0.5 * tf.nn.conv2d(x, layer.kernel, 1, "SAME") + layer.bias
    np.testing.assert_allclose(y.numpy(), expected.numpy(), rtol=1e-5, atol=1e-5)
    assert not np.any(layer.offset_kernel.numpy()) and not np.any(layer.offset_bias.numpy())
    assert layer.offset_kernel.shape == (3, 3, 4, 27)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("ksize,strides,padding,dilation", [
    ((3, 2), (2, 2), (1, 0), (2, 2)),   # stride and dilation > 1: tf.nn.conv2d alone rejects it
    ((3, 2), (2, 1), (1, 0), (1, 2)),
    ((3, 3), (2, 1), "same", (1, 1)),
    ((2, 3), (1, 1), (1, 0), (2, 1)),
    ((3, 2), (1, 2), "valid", (1, 1)),
])
def test_internal_offset_conv_has_the_main_geometry(impl, ksize, strides, padding, dilation):
    rng = np.random.default_rng(1)
    x = tf.constant(rng.normal(size=(2, 11, 9, 6)))
    layer = ModulatedDeformConv2D(4, ksize, strides=strides, padding=padding,
                                  dilation_rate=dilation, groups=2, deformable_groups=3,
                                  return_positions=True, implementation=impl, dtype="float64")
    layer.build(x.shape)
    off_k = rng.normal(size=layer.offset_kernel.shape) * 0.3
    off_b = rng.normal(size=layer.offset_bias.shape) * 0.3
    layer.offset_kernel.assign(off_k)
    layer.offset_bias.assign(off_b)
    y, pos = layer(x)
    raw = _dense(x, tf.constant(off_k), strides, padding, dilation) + off_b
    taps = 3 * ksize[0] * ksize[1]
    offset, mask = raw[..., :2 * taps], tf.sigmoid(raw[..., 2 * taps:])
    expected = modulated_deform_conv2d(x, offset, mask, layer.kernel, layer.bias, strides=strides,
                                       padding=padding, dilation_rate=dilation, groups=2,
                                       deformable_groups=3, implementation="portable")
    assert y.shape == expected.shape
    np.testing.assert_allclose(y.numpy(), expected.numpy(), rtol=1e-10, atol=1e-10)
    # positions = regular grid + predicted offsets
    _, ho, wo, _ = y.shape
    pad_top, pad_left = _pads(x.shape, ksize, strides, padding, dilation)
    for i, j, g, k in [(0, 0, 0, 0), (ho - 1, wo - 1, 2, ksize[0] * ksize[1] - 1), (1, 1, 1, 1)]:
        ky, kx = divmod(k, ksize[1])
        s = g * ksize[0] * ksize[1] + k
        want = (i * strides[0] - pad_top + ky * dilation[0] + offset[1, i, j, 2 * s],
                j * strides[1] - pad_left + kx * dilation[1] + offset[1, i, j, 2 * s + 1])
        np.testing.assert_allclose(pos.numpy()[1, i, j, s], want, rtol=1e-12)


@pytest.mark.parametrize("impl", IMPLS)
def test_external_mode_uses_offsets_and_masks_as_given(impl):
    rng = np.random.default_rng(2)
    x = rng.normal(size=(2, 7, 8, 4)).astype(np.float32)
    offset = rng.uniform(-2, 2, (2, 7, 8, 2 * 2 * 9)).astype(np.float32)
    mask = rng.uniform(0, 1, (2, 7, 8, 2 * 9)).astype(np.float32)
    layer = ModulatedDeformConv2D(5, 3, deformable_groups=2, offset_mode="external",
                                  return_positions=True, implementation=impl)
    y, pos = layer([x, offset, mask])
    expected = modulated_deform_conv2d(x, offset, mask, layer.kernel, layer.bias,
                                       deformable_groups=2, implementation="portable")
    np.testing.assert_allclose(y.numpy(), expected.numpy(), rtol=1e-5, atol=1e-5)
    assert pos.shape == (2, 7, 8, 18, 2)
    grid_y = np.arange(7)[None, :, None, None] - 1 + np.tile(np.repeat(np.arange(3), 3), 2)
    np.testing.assert_allclose(pos.numpy()[..., 0], grid_y + offset[..., 0::2], rtol=1e-6,
                               atol=1e-5)
    assert not layer.trainable_weights[2:]  # kernel and bias only: no offset conv


def test_symbolic_shapes_and_functional_model():
    x = keras.Input((None, None, 8))
    off = keras.Input((None, None, 50))
    m = keras.Input((None, None, 25))
    y, pos = ModulatedDeformConv2D(16, 5, offset_mode="external", return_positions=True)(
        [x, off, m])
    assert tuple(y.shape) == (None, None, None, 16)
    assert tuple(pos.shape) == (None, None, None, 25, 2)
    z = ModulatedDeformConv2D(4, 3, strides=2)(keras.Input((16, 15, 8)))
    assert tuple(z.shape) == (None, 8, 8, 4)


@pytest.mark.parametrize("mode", ["internal", "external"])
def test_keras_save_and_load_round_trip(mode, tmp_path):
    rng = np.random.default_rng(3)
    x_in = keras.Input((None, None, 6))
    kwargs = dict(kernel_size=(3, 2), strides=(2, 1), padding=(1, 0), dilation_rate=(2, 1),
                  groups=2, deformable_groups=3, return_positions=True, offset_mode=mode)
    if mode == "external":
        off_in = keras.Input((None, None, 36))
        m_in = keras.Input((None, None, 18))
        y, pos = ModulatedDeformConv2D(4, **kwargs)([x_in, off_in, m_in])
        model = keras.Model([x_in, off_in, m_in], [y, pos])
        data = [rng.normal(size=(2, 9, 7, 6)), rng.normal(size=(2, 4, 6, 36)),
                rng.uniform(size=(2, 4, 6, 18))]
    else:
        y, pos = ModulatedDeformConv2D(4, **kwargs)(x_in)
        model = keras.Model(x_in, [y, pos])
        data = [rng.normal(size=(2, 9, 7, 6))]
    data = [d.astype(np.float32) for d in data]
    data = data if mode == "external" else data[0]
    path = os.path.join(tmp_path, "m.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    for a, b in zip(model(data), loaded(data), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    layer = model.layers[-1]
    config = layer.get_config()
    for key in ("filters", "kernel_size", "strides", "padding", "dilation_rate", "groups",
                "deformable_groups", "use_bias", "offset_mode", "return_positions",
                "implementation"):
        assert key in config
    clone = ModulatedDeformConv2D.from_config(config)
    assert clone.get_config() == config


def test_training_step_updates_offsets_and_kernel():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(4, 8, 8, 3)).astype(np.float32)
    target = rng.normal(size=(4, 8, 8, 2)).astype(np.float32)
    layer = ModulatedDeformConv2D(2, 3)
    model = keras.Sequential([keras.Input((8, 8, 3)), layer])
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    before = [w.numpy().copy() for w in layer.weights]
    model.fit(x, target, epochs=1, batch_size=4, verbose=0)
    for w, b in zip(layer.weights, before, strict=True):
        assert not np.allclose(w.numpy(), b), w.name


def test_use_bias_false_has_no_bias():
    layer = ModulatedDeformConv2D(3, 3, use_bias=False)
    layer.build((None, 6, 6, 2))
    assert layer.bias is None
    assert [w.name for w in layer.weights] == ["kernel", "offset_kernel", "offset_bias"]


@pytest.mark.parametrize("kwargs,word", [
    (dict(filters=0, kernel_size=3), "filters"),
    (dict(filters=4, kernel_size=(3, 3, 3)), "kernel_size"),
    (dict(filters=4, kernel_size=3, groups=3), "groups"),
    (dict(filters=4, kernel_size=3, deformable_groups=0), "deformable_groups"),
    (dict(filters=4, kernel_size=3, padding="full"), "padding"),
    (dict(filters=4, kernel_size=3, offset_mode="predicted"), "offset_mode"),
    (dict(filters=4, kernel_size=3, implementation="fast"), "implementation"),
    (dict(filters=4, kernel_size=3, strides=0), "strides"),
])
def test_bad_configuration(kwargs, word):
    with pytest.raises(ValueError, match=word):
        ModulatedDeformConv2D(**kwargs)


def test_bad_inputs_name_the_problem():
    with pytest.raises(ValueError, match="deformable_groups"):
        ModulatedDeformConv2D(4, 3, deformable_groups=3)(np.zeros((1, 5, 5, 4), np.float32))
    with pytest.raises(ValueError, match="groups"):
        ModulatedDeformConv2D(4, 3, groups=2)(np.zeros((1, 5, 5, 3), np.float32))
    with pytest.raises(ValueError, match=r"\[x, offset, mask\]"):
        ModulatedDeformConv2D(4, 3, offset_mode="external")(np.zeros((1, 5, 5, 4), np.float32))
    with pytest.raises(ValueError, match="offset"):
        ModulatedDeformConv2D(4, 3, offset_mode="external")(
            [np.zeros((1, 5, 5, 4), np.float32), np.zeros((1, 5, 5, 17), np.float32),
             np.zeros((1, 5, 5, 9), np.float32)])
    with pytest.raises(ValueError, match="one input"):
        ModulatedDeformConv2D(4, 3)([np.zeros((1, 5, 5, 4), np.float32)] * 3)


def test_mixed_float16_policy():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(1, 6, 6, 4)).astype(np.float32)
    layer = ModulatedDeformConv2D(3, 3, return_positions=True, dtype="mixed_float16")
    y, pos = layer(x)
    assert y.dtype == tf.float16 and pos.dtype == tf.float32
    layer32 = ModulatedDeformConv2D(3, 3)
    layer32.build(x.shape)
    layer32.set_weights(layer.get_weights())
    np.testing.assert_allclose(np.asarray(y, np.float32), layer32(x).numpy(), rtol=0.02,
                               atol=0.02)


def test_xla_policy_follows_implementation():
    # Keras's jit_compile="auto" must not pick XLA for the compiled custom op.
    from tfdeblur.ops import compiled_available

    assert ModulatedDeformConv2D(4, 3, implementation="portable").supports_jit
    if compiled_available():
        assert not ModulatedDeformConv2D(4, 3).supports_jit
