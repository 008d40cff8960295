"""WeightGenerationNetwork and RNNDeconvolution against float64 NumPy references."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import implementations
from tests.layers import nets_reference as ref
from tfdeblur.layers.svrnn_blocks import (
    BilinearUpsampling2x,
    RNNDeconvolution,
    WeightGenerationNetwork,
)

CONV_NAMES = [f"conv{i}" for i in range(3, 17)]


def _randomize(layer, rng, scale=0.3):
    for v in layer.weights:
        v.assign(rng.normal(0.0, scale, v.shape).astype(v.dtype))


def _wg_weights(layer):
    return {n: tuple(np.asarray(w) for w in getattr(layer, n).get_weights()) for n in CONV_NAMES}


# ----------------------------------------------------------------- weight generation

@pytest.mark.parametrize("shape", [(2, 16, 24), (1, 9, 7), (1, 1, 1), (2, 5, 3), (1, 3, 10)])
def test_weight_generation_matches_reference(rng, shape):
    n, h, w = shape
    layer = WeightGenerationNetwork(width=2, gate_channels=12, dtype="float64")
    layer.build((None, None, None, 3))
    _randomize(layer, rng, 0.2)
    image = rng.uniform(0, 1, (n, h, w, 3))
    got = np.asarray(layer(image))
    want = ref.weight_generation(image, _wg_weights(layer))
    assert got.shape == (n, -(-h // 2), -(-w // 2), 12)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
    assert np.all(np.abs(got) <= 1)


def test_weight_generation_channels_and_sublayers():
    layer = WeightGenerationNetwork(width=64, gate_channels=512)
    layer.build((None, None, None, 3))
    widths = [getattr(layer, n).kernel.shape[-1] for n in CONV_NAMES]
    assert widths == [64, 64, 128, 128, 256, 256, 256, 512, 512, 256, 128, 128, 256, 512]
    assert layer.conv13.kernel.shape[2] == 256 + 256  # [conv8, up(conv12)]
    assert layer.conv15.kernel.shape[2] == 128 + 128  # [conv6, up(conv14)]
    cins = [3, 64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 128, 256, 256]
    assert [getattr(layer, n).kernel.shape[2] for n in CONV_NAMES] == cins
    pairs = zip(cins, widths, strict=True)
    assert layer.count_params() == sum(9 * ci * co + co for ci, co in pairs)


def test_weight_generation_batch_zero():
    layer = WeightGenerationNetwork(width=2, gate_channels=8)
    assert tuple(layer(tf.zeros([0, 8, 6, 3])).shape) == (0, 4, 3, 8)


def test_weight_generation_gradient():
    layer = WeightGenerationNetwork(width=1, gate_channels=4, dtype="float64")
    layer.build((None, None, None, 3))
    _randomize(layer, np.random.default_rng(0), 0.5)
    image = tf.constant(np.random.default_rng(1).uniform(0, 1, (1, 2, 3, 3)))
    theo, num = tf.test.compute_gradient(lambda t: layer(t), [image], delta=1e-6)
    np.testing.assert_allclose(theo[0], num[0], rtol=1e-5, atol=1e-7)


def test_weight_generation_config_roundtrip():
    layer = WeightGenerationNetwork(width=3, gate_channels=20,
                                    kernel_initializer="he_normal", name="wg")
    clone = WeightGenerationNetwork.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert isinstance(again, WeightGenerationNetwork) and again.width == 3


def test_weight_generation_bad_arguments():
    with pytest.raises(ValueError, match="width"):
        WeightGenerationNetwork(width=0)
    with pytest.raises(ValueError, match="rank-4"):
        WeightGenerationNetwork(width=2)(tf.zeros([4, 4, 3]))


# ----------------------------------------------------------------- RNN deconvolution

def _fusion_weights(layer):
    return [tuple(np.asarray(w) for w in conv.get_weights()) for conv in layer.fusions]


@pytest.mark.parametrize("impl", implementations())
@pytest.mark.parametrize("shape,cin,filters,num_rnns", [
    ((2, 6, 7), 3, 3, 4), ((1, 1, 5), 2, 3, 2), ((1, 4, 1), 2, 2, 1), ((1, 1, 1), 1, 2, 3),
    ((3, 9, 4), 4, 2, 2)])
def test_rnn_deconvolution_matches_reference(rng, impl, shape, cin, filters, num_rnns):
    n, h, w = shape
    layer = RNNDeconvolution(filters, num_rnns, implementation=impl, dtype="float64")
    gc = layer.gate_channels(cin)
    assert gc == 4 * (cin + (num_rnns - 1) * filters)
    layer.build([(None, None, None, cin), (None, None, None, gc)])
    _randomize(layer, rng, 0.4)
    x = rng.normal(size=(n, h, w, cin))
    gates = np.tanh(rng.normal(size=(n, h, w, gc)))
    got = np.asarray(layer([x, gates]))
    want = ref.rnn_deconvolution(x, gates, _fusion_weights(layer))
    assert got.shape == (n, h, w, filters)
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-11)


def test_rnn_deconvolution_compiled_equals_portable(rng):
    if "compiled" not in implementations():
        pytest.skip("compiled op library not loaded")
    x = rng.normal(size=(2, 11, 13, 4)).astype("float32")
    gates = np.tanh(rng.normal(size=(2, 11, 13, 32))).astype("float32")
    layers = [RNNDeconvolution(4, 2, implementation=impl) for impl in ("compiled", "portable")]
    for layer in layers:
        layer.build([(None, None, None, 4), (None, None, None, 32)])
    _randomize(layers[0], rng)
    layers[1].set_weights(layers[0].get_weights())
    compiled, portable = (np.asarray(layer([x, gates])) for layer in layers)
    np.testing.assert_allclose(compiled, portable, rtol=1e-5, atol=1e-5)


def test_rnn_deconvolution_direction_layout(rng):
    """A gate of 1 in one direction block only carries that block's scan: checks the
    authors' (l->r, t->b, r->l, b->t) slice order reaches the right scans."""
    layer = RNNDeconvolution(1, 1, negative_slope=1.0, dtype="float64")
    layer.build([(None, None, None, 1), (None, None, None, 4)])
    x = np.zeros((1, 3, 3, 1))
    x[0, 1, 1, 0] = 1.0
    for block, want_rows, want_cols in ((0, [1], [1, 2]), (1, [1, 2], [1]),
                                        (2, [1], [0, 1]), (3, [0, 1], [1])):
        gates = np.zeros((1, 3, 3, 4))
        gates[..., block] = 0.5
        kernel = np.zeros((3, 3, 4, 1))
        # Identity fusion reading only scan output `channel` (SpatialRNN's order).
        channel = {0: 0, 1: 2, 2: 1, 3: 3}[block]
        kernel[1, 1, channel, 0] = 1.0
        layer.fusions[0].set_weights([kernel, np.zeros(1)])
        out = np.asarray(layer([x, gates]))[0, :, :, 0]
        rows, cols = np.nonzero(out)
        assert sorted(set(rows)) == want_rows and sorted(set(cols)) == want_cols, block


def test_rnn_deconvolution_gradient(rng):
    layer = RNNDeconvolution(2, 2, dtype="float64")
    layer.build([(None, None, None, 2), (None, None, None, 16)])
    _randomize(layer, rng, 0.5)
    x = tf.constant(rng.normal(size=(1, 2, 2, 2)))
    gates = tf.constant(np.tanh(rng.normal(size=(1, 2, 2, 16))))
    theo, num = tf.test.compute_gradient(lambda a, b: layer([a, b]), [x, gates], delta=1e-6)
    for t, nm in zip(theo, num, strict=True):
        np.testing.assert_allclose(t, nm, rtol=1e-5, atol=1e-7)


def test_rnn_deconvolution_batch_zero():
    layer = RNNDeconvolution(2, 2)
    out = layer([tf.zeros([0, 5, 4, 2]), tf.zeros([0, 5, 4, 16])])
    assert tuple(out.shape) == (0, 5, 4, 2)


def test_rnn_deconvolution_errors():
    with pytest.raises(ValueError, match="gates must have 4 x"):
        RNNDeconvolution(4, 2)([tf.zeros([1, 4, 4, 4]), tf.zeros([1, 4, 4, 16])])
    with pytest.raises(ValueError, match="list"):
        RNNDeconvolution(4, 2)(tf.zeros([1, 4, 4, 4]))
    with pytest.raises(ValueError, match="implementation"):
        RNNDeconvolution(4, 2, implementation="fast")
    with pytest.raises(ValueError, match="num_rnns"):
        RNNDeconvolution(4, 0)


def test_rnn_deconvolution_config_roundtrip():
    layer = RNNDeconvolution(5, 3, negative_slope=0.2, implementation="portable", name="r")
    clone = RNNDeconvolution.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()


# ----------------------------------------------------------------- bilinear x2

@pytest.mark.parametrize("shape", [(2, 3, 5, 4), (1, 1, 1, 2), (0, 2, 3, 1), (1, 4, 1, 3)])
def test_bilinear_upsampling_matches_reference(rng, shape):
    x = rng.normal(size=shape)
    got = np.asarray(BilinearUpsampling2x(dtype="float64")(tf.constant(x)))
    want = ref.resize_bilinear(x, 2 * shape[1], 2 * shape[2])
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    if shape[0]:
        keras_up = keras.layers.UpSampling2D(2, interpolation="bilinear")(x.astype("float32"))
        np.testing.assert_allclose(got, np.asarray(keras_up), rtol=1e-5, atol=1e-5)


def test_bilinear_upsampling_unknown_shape_in_graph():
    layer = BilinearUpsampling2x()
    fn = tf.function(layer, input_signature=[tf.TensorSpec([None, None, None, 2])])
    assert tuple(fn(tf.ones([1, 3, 4, 2])).shape) == (1, 6, 8, 2)
