"""DilatedBackbone, FeatureDeconvolution and ReconstructionHead against float64 NumPy references."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.layers import nets_reference as ref
from tfdeblur.layers.svdn_blocks import DilatedBackbone, FeatureDeconvolution, ReconstructionHead
from tfdeblur.ops._loader import load_library


def dcn_implementations():
    """Portable always; compiled when the loaded library has the deformable op."""
    lib = load_library()
    impls = ["portable"]
    if lib is not None and hasattr(lib, "tf_deblur_modulated_deform_conv2d"):
        impls.append("compiled")
    return impls


def sublayer_weights(layer):
    return {sub.name: tuple(np.asarray(w) for w in sub.get_weights())
            for sub in layer._flatten_layers(include_self=False, recursive=False)}


def randomize(layer, rng, scale=0.3):
    for v in layer.weights:
        v.assign(rng.normal(0.0, scale, v.shape).astype(v.dtype))


# ------------------------------------------------------------------------ backbone

@pytest.mark.parametrize("shape,rates,per_rate", [
    ((2, 10, 12), (1, 2, 4), 1), ((1, 7, 9), (1, 2, 4), 2), ((1, 1, 1), (1, 2), 1),
    ((1, 2, 5), (3,), 1), ((3, 5, 3), (1, 2, 4), 1)])
def test_backbone_matches_reference(rng, shape, rates, per_rate):
    layer = DilatedBackbone(width=3, dilation_rates=rates, convs_per_rate=per_rate,
                            dtype="float64")
    layer.build((None, None, None, 3))
    randomize(layer, rng)
    image = tf.constant(rng.uniform(0, 1, (*shape, 3)))
    blur, content = (np.asarray(t) for t in layer(image))
    want_blur, want_content = ref.dilated_backbone(np.asarray(image), sublayer_weights(layer), 3,
                                                   rates, per_rate)
    n, h, w = shape
    assert blur.shape == content.shape == (n, -(-h // 2), -(-w // 2), 3)
    np.testing.assert_allclose(blur, want_blur, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(content, want_content, rtol=1e-10, atol=1e-12)


def test_backbone_structure():
    layer = DilatedBackbone(width=64)
    layer.build((None, None, None, 3))
    assert [c.dilation_rate for c in layer.stage_convs] == [(1, 1), (2, 2), (4, 4)]
    assert layer.conv_down.strides == (2, 2)
    assert layer.fusion.kernel.shape == (3, 3, 4 * 64, 128)
    assert all(c.kernel.shape[:2] == (3, 3) for c in [layer.conv_in, layer.conv_down,
                                                      *layer.stage_convs, layer.fusion])


def test_backbone_batch_zero_and_gradient(rng):
    layer = DilatedBackbone(width=2, dilation_rates=(1, 2), dtype="float64")
    blur, content = layer(tf.zeros([0, 6, 5, 3], tf.float64))
    assert tuple(blur.shape) == tuple(content.shape) == (0, 3, 3, 2)
    randomize(layer, rng, 0.5)
    image = tf.constant(rng.uniform(0, 1, (1, 4, 3, 3)))
    theo, num = tf.test.compute_gradient(lambda t: tf.concat(layer(t), -1), [image], delta=1e-6)
    np.testing.assert_allclose(theo[0], num[0], rtol=1e-5, atol=1e-7)


def test_backbone_config_and_errors():
    layer = DilatedBackbone(width=5, dilation_rates=(1, 3), convs_per_rate=2, name="bb")
    clone = DilatedBackbone.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    with pytest.raises(ValueError, match="dilation_rates"):
        DilatedBackbone(dilation_rates=())
    with pytest.raises(ValueError, match=r"\[N, H, W, C\]"):
        DilatedBackbone(width=2)(tf.zeros([4, 4, 3]))


# ------------------------------------------------------------------------ neck

@pytest.mark.parametrize("impl", dcn_implementations())
@pytest.mark.parametrize("shape,ksize,hidden", [
    ((1, 4, 5), 5, None), ((2, 3, 3), 3, 4), ((1, 1, 1), 3, 2), ((1, 1, 6), 5, 3)])
def test_neck_matches_reference(rng, impl, shape, ksize, hidden):
    layer = FeatureDeconvolution(filters=3, kernel_size=ksize, offset_hidden=hidden,
                                 return_positions=True, implementation=impl, dtype="float64")
    layer.build([(None, None, None, 2), (None, None, None, 4)])
    randomize(layer, rng, 0.4)
    blur = tf.constant(rng.normal(size=(*shape, 2)))
    content = tf.constant(rng.normal(size=(*shape, 4)))
    y, pos = (np.asarray(t) for t in layer([blur, content]))
    want_y, want_pos = ref.feature_deconvolution(np.asarray(blur), np.asarray(content),
                                                 sublayer_weights(layer), ksize * ksize)
    assert y.shape == (*shape, 3) and pos.shape == (*shape, ksize * ksize, 2)
    # Offsets of a few pixels move samples across pixel borders: tolerance covers
    # the portable op's float64 rounding only.
    np.testing.assert_allclose(pos, want_pos, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(y, want_y, rtol=1e-9, atol=1e-11)


def test_neck_zero_offsets_sample_the_regular_grid(rng):
    layer = FeatureDeconvolution(filters=2, kernel_size=5, return_positions=True,
                                 implementation="portable", dtype="float64")
    layer.build([(None, None, None, 2), (None, None, None, 2)])
    randomize(layer, rng)
    layer.ow1_conv.set_weights([np.zeros_like(w) for w in layer.ow1_conv.get_weights()])
    _, pos = layer([tf.constant(rng.normal(size=(1, 4, 6, 2))),
                    tf.constant(rng.normal(size=(1, 4, 6, 2)))])
    pos = np.asarray(pos)
    for i, j, k in [(0, 0, 0), (2, 3, 12), (3, 5, 24), (1, 4, 7)]:
        ky, kx = divmod(k, 5)
        np.testing.assert_array_equal(pos[0, i, j, k], [i - 2 + ky, j - 2 + kx])


def test_neck_without_positions_gives_same_features(rng):
    both = FeatureDeconvolution(filters=2, kernel_size=3, offset_hidden=3,
                                return_positions=True, implementation="portable")
    plain = FeatureDeconvolution.from_config({**both.get_config(), "return_positions": False})
    shapes = [(None, None, None, 3), (None, None, None, 2)]
    both.build(shapes)
    plain.build(shapes)
    randomize(both, rng)
    plain.set_weights(both.get_weights())
    inputs = [rng.normal(size=(2, 5, 4, 3)).astype("float32"),
              rng.normal(size=(2, 5, 4, 2)).astype("float32")]
    np.testing.assert_array_equal(np.asarray(plain(inputs)), np.asarray(both(inputs)[0]))


def test_neck_gradient(rng):
    layer = FeatureDeconvolution(filters=2, kernel_size=3, offset_hidden=2,
                                 implementation="portable", dtype="float64")
    layer.build([(None, None, None, 2), (None, None, None, 2)])
    randomize(layer, rng, 0.3)
    blur = tf.constant(rng.normal(size=(1, 2, 3, 2)))
    content = tf.constant(rng.normal(size=(1, 2, 3, 2)))
    theo, num = tf.test.compute_gradient(lambda b, c: layer([b, c]), [blur, content],
                                         delta=1e-6)
    for t, nm in zip(theo, num, strict=True):
        np.testing.assert_allclose(t, nm, rtol=1e-4, atol=1e-6)


def test_neck_batch_zero():
    layer = FeatureDeconvolution(filters=2, kernel_size=3, return_positions=True,
                                 implementation="portable")
    y, pos = layer([tf.zeros([0, 4, 3, 2]), tf.zeros([0, 4, 3, 5])])
    assert tuple(y.shape) == (0, 4, 3, 2) and tuple(pos.shape) == (0, 4, 3, 9, 2)


def test_neck_config_and_errors():
    layer = FeatureDeconvolution(filters=7, kernel_size=3, offset_hidden=11,
                                 return_positions=True, implementation="portable", name="n")
    clone = FeatureDeconvolution.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    with pytest.raises(ValueError, match="list"):
        FeatureDeconvolution(filters=2)(tf.zeros([1, 4, 4, 2]))
    with pytest.raises(ValueError, match="implementation"):
        FeatureDeconvolution(implementation="gpu")
    with pytest.raises(ValueError, match="offset_hidden"):
        FeatureDeconvolution(offset_hidden=0)


# ------------------------------------------------------------------------ head

@pytest.mark.parametrize("shape", [(2, 3, 4), (1, 1, 1), (1, 5, 2)])
def test_head_matches_reference(rng, shape):
    layer = ReconstructionHead(filters=3, dtype="float64")
    layer.build((None, None, None, 4))
    randomize(layer, rng)
    x = tf.constant(rng.normal(size=(*shape, 4)))
    got = np.asarray(layer(x))
    n, h, w = shape
    assert got.shape == (n, 2 * h, 2 * w, 3)
    np.testing.assert_allclose(got, ref.reconstruction_head(np.asarray(x), sublayer_weights(layer)),
                               rtol=1e-10, atol=1e-12)


def test_head_batch_zero_gradient_config(rng):
    layer = ReconstructionHead(filters=2, out_channels=3, dtype="float64")
    assert tuple(layer(tf.zeros([0, 3, 2, 4], tf.float64)).shape) == (0, 6, 4, 3)
    randomize(layer, rng, 0.5)
    x = tf.constant(rng.normal(size=(1, 2, 3, 4)))
    theo, num = tf.test.compute_gradient(lambda t: layer(t), [x], delta=1e-6)
    np.testing.assert_allclose(theo[0], num[0], rtol=1e-5, atol=1e-7)
    clone = ReconstructionHead.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert isinstance(again, ReconstructionHead)
