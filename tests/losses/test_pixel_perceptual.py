"""PixelLoss and PerceptualLoss against float64 NumPy references."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.losses import reference_losses as ref
from tfdeblur.losses import PerceptualLoss, PixelLoss


def _images(rng, shape, dtype="float64"):
    return rng.uniform(0, 1, shape).astype(dtype), rng.uniform(0, 1, shape).astype(dtype)


# ------------------------------------------------------------------------ pixel loss

@pytest.mark.parametrize("normalization, scale", [("mse", 1.0), ("half_mse", 0.5)])
@pytest.mark.parametrize("shape", [(3, 5, 7, 3), (1, 1, 1, 3), (2, 1, 9, 1), (1, 4, 1, 2)])
def test_pixel_loss_matches_reference(rng, normalization, scale, shape):
    s, pred = _images(rng, shape)
    loss = PixelLoss(normalization, dtype="float64")
    per_image = PixelLoss(normalization, reduction=None, dtype="float64")(s, pred)
    want = ref.pixel_loss(s, pred, scale)
    np.testing.assert_allclose(per_image, want, rtol=1e-12)
    # The batch's loss is the normalised sum over all its elements.
    total = scale * ((pred - s) ** 2).sum() / pred.size
    np.testing.assert_allclose(float(loss(s, pred)), total, rtol=1e-12)


def test_pixel_loss_known_value():
    s = np.zeros((2, 4, 6, 3), "float32")
    assert float(PixelLoss()(s, s + 0.1)) == pytest.approx(0.01, rel=1e-6)
    assert float(PixelLoss("half_mse")(s, s + 0.1)) == pytest.approx(0.005, rel=1e-6)
    assert float(PixelLoss()(s, s)) == 0.0


def test_pixel_loss_sample_weight_and_sum(rng):
    s, pred = _images(rng, (3, 4, 5, 3))
    per = ref.pixel_loss(s, pred, 1.0)
    w = np.array([1.0, 0.0, 2.0])
    got = PixelLoss(dtype="float64")(s, pred, sample_weight=w)
    np.testing.assert_allclose(float(got), (per * w).sum() / 3, rtol=1e-12)
    got = PixelLoss(reduction="sum", dtype="float64")(s, pred)
    np.testing.assert_allclose(float(got), per.sum(), rtol=1e-12)


def test_pixel_loss_empty_batch_is_zero(rng):
    s, pred = _images(rng, (0, 4, 5, 3), "float32")
    value = PixelLoss()(s, pred)
    assert value.shape == () and float(value) == 0.0

    @tf.function(input_signature=[tf.TensorSpec([None, 4, 5, 3])] * 2)
    def traced(a, b):
        return PixelLoss()(a, b)

    assert float(traced(s, pred)) == 0.0


def test_pixel_loss_gradient(rng):
    s, pred = _images(rng, (2, 3, 5, 3))
    loss = PixelLoss("half_mse", dtype="float64")
    theo, num = tf.test.compute_gradient(lambda p: loss(tf.constant(s), p), [tf.constant(pred)])
    np.testing.assert_allclose(theo[0], num[0], atol=1e-8)
    # d/dL ||L - S||^2 / (2 Np) = (L - S) / Np
    np.testing.assert_allclose(theo[0].reshape(pred.shape), (pred - s) / pred.size, atol=1e-12)


def test_pixel_loss_float16_input_computes_in_float32(rng):
    s, pred = _images(rng, (1, 4, 4, 3), "float16")
    value = PixelLoss()(s, pred)
    assert value.dtype == tf.float32
    np.testing.assert_allclose(float(value), ref.pixel_loss(s, pred, 1.0)[0], rtol=1e-6)


def test_pixel_loss_bad_inputs(rng):
    s, pred = _images(rng, (2, 4, 5, 3), "float32")
    loss = PixelLoss()
    with pytest.raises(ValueError, match="y_true and y_pred must have the same shape"):
        loss(s, pred[:, :3])
    with pytest.raises(ValueError, match="y_pred must be a rank-4"):
        loss(s, pred[0])
    with pytest.raises(ValueError, match="y_true must be floating point.*uint8"):
        loss((255 * s).astype("uint8"), pred)
    bad = pred.copy()
    bad[1, 2, 3, 0] = np.nan
    with pytest.raises(tf.errors.InvalidArgumentError, match="y_pred has NaN or Inf"):
        loss(s, bad)
    with pytest.raises(tf.errors.InvalidArgumentError, match="y_true has NaN or Inf"):
        loss(np.where(np.isnan(bad), np.inf, s).astype("float32"), pred)
    with pytest.raises(ValueError, match="normalization must be one of"):
        PixelLoss("l1")

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3])] * 2)
    def traced(a, b):
        return loss(a, b)

    with pytest.raises(tf.errors.InvalidArgumentError, match="must have the same shape"):
        traced(s, pred[:, :3])


def test_pixel_loss_serialises():
    loss = PixelLoss("half_mse", name="pix", reduction="sum")
    config = keras.saving.serialize_keras_object(loss)
    back = keras.saving.deserialize_keras_object(config)
    assert isinstance(back, PixelLoss)
    assert (back.normalization, back.name, back.reduction) == ("half_mse", "pix", "sum")
    assert back.get_config() == loss.get_config()


def test_pixel_loss_in_fit():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((6, 5, 3)), keras.layers.Conv2D(3, 3, padding="same")])
    model.compile(optimizer="sgd", loss=PixelLoss("half_mse"))
    x = np.random.default_rng(0).uniform(0, 1, (4, 6, 5, 3)).astype("float32")
    got = model.evaluate(x, x, verbose=0)
    want = ref.pixel_loss(x, model.predict(x, verbose=0), 0.5).mean()
    assert got == pytest.approx(want, rel=1e-5)


# ------------------------------------------------------------------- perceptual loss

@pytest.mark.parametrize("layer", ["block3_conv3", "block2_conv2", "block1_conv1"])
def test_perceptual_loss_matches_reference(vgg16_file, rng, layer):
    path, weights = vgg16_file
    s, pred = _images(rng, (2, 12, 10, 3), "float32")
    loss = PerceptualLoss(path, layer, reduction=None)
    got = loss(s, pred)
    want = ref.perceptual_loss(s, pred, weights, layer, 0.5)
    np.testing.assert_allclose(got, want, rtol=2e-4)
    mse = PerceptualLoss(path, layer, normalization="mse")(s, pred)
    np.testing.assert_allclose(float(mse), 2 * want.mean(), rtol=2e-4)


def test_perceptual_loss_features_are_vgg16_of_bgr_0_255(vgg16_file, rng):
    path, weights = vgg16_file
    image = rng.uniform(0, 1, (1, 8, 9, 3)).astype("float32")
    feats = PerceptualLoss(path).features(image)
    vgg = keras.applications.VGG16(weights=path, include_top=False)
    want = keras.Model(vgg.input, vgg.get_layer("block3_conv3").output)(
        keras.applications.vgg16.preprocess_input(255.0 * image))
    np.testing.assert_allclose(feats, want, rtol=1e-5, atol=1e-4)


def test_perceptual_loss_zero_for_identical_and_smallest_size(vgg16_file, rng):
    path, weights = vgg16_file
    loss = PerceptualLoss(path)
    assert loss.min_size == 4                        # two poolings before block3
    s = rng.uniform(0, 1, (1, 4, 5, 3)).astype("float32")
    assert float(loss(s, s)) == 0.0
    pred = rng.uniform(0, 1, s.shape).astype("float32")
    np.testing.assert_allclose(float(loss(s, pred)),
                               ref.perceptual_loss(s, pred, weights, "block3_conv3")[0],
                               rtol=2e-4)
    assert float(loss(s[:0], pred[:0])) == 0.0
    assert PerceptualLoss(path, "block1_conv2").min_size == 1
    one = rng.uniform(0, 1, (1, 1, 1, 3)).astype("float32")
    np.testing.assert_allclose(
        float(PerceptualLoss(path, "block1_conv2")(one, s[:, :1, :1])),
        ref.perceptual_loss(one, s[:, :1, :1], weights, "block1_conv2")[0], rtol=2e-4)


def test_perceptual_loss_gradient(vgg16_file, rng):
    path, _ = vgg16_file
    s, pred = _images(rng, (1, 4, 6, 3), "float32")
    loss = PerceptualLoss(path, "block2_conv2")
    target = tf.constant(s)
    theo, num = tf.test.compute_gradient(lambda p: loss(target, p), [tf.constant(pred)],
                                         delta=1e-3)
    scale = np.abs(theo[0]).max()
    assert scale > 0
    np.testing.assert_allclose(theo[0], num[0], atol=2e-2 * scale)
    # The target's features are constants: no gradient flows into y_true.
    with tf.GradientTape() as tape:
        tape.watch(target)
        value = loss(target, tf.constant(pred))
    grad = tape.gradient(value, target)
    assert grad is None or not np.any(grad)


def test_perceptual_loss_file_errors(tmp_path, vgg16_file):
    with pytest.raises(FileNotFoundError, match="vgg16_weights: no file"):
        PerceptualLoss(str(tmp_path / "missing.h5"))
    junk = tmp_path / "junk.weights.h5"
    junk.write_bytes(b"not an h5 file")
    with pytest.raises(ValueError, match="vgg16_weights: could not load"):
        PerceptualLoss(str(junk))
    with pytest.raises(ValueError, match="vgg16_weights must be the path"):
        PerceptualLoss(None)
    with pytest.raises(TypeError, match="vgg16_weights must be a file path"):
        PerceptualLoss(3)
    path, _ = vgg16_file
    with pytest.raises(ValueError, match="layer must be one of"):
        PerceptualLoss(path, "block6_conv1")


def test_perceptual_loss_bad_inputs(vgg16_file, rng):
    path, _ = vgg16_file
    loss = PerceptualLoss(path)
    s, pred = _images(rng, (1, 3, 8, 3), "float32")
    with pytest.raises(ValueError, match="height of at least 4"):
        loss(s, pred)
    s, pred = _images(rng, (1, 8, 8, 1), "float32")
    with pytest.raises(ValueError, match=r"y_pred must be an RGB image batch"):
        loss(s, pred)
    s, pred = _images(rng, (1, 8, 8, 3), "float32")
    with pytest.raises(ValueError, match="same shape"):
        loss(s, pred[:, :, :6])
    pred[0, 0, 0, 0] = np.inf
    with pytest.raises(tf.errors.InvalidArgumentError, match="y_pred has NaN or Inf"):
        loss(s, pred)

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3])] * 2)
    def traced(a, b):
        return loss(a, b)

    with pytest.raises(tf.errors.InvalidArgumentError, match="at least 4 pixels"):
        traced(s[:, :2], s[:, :2])


def test_perceptual_loss_serialises(vgg16_file, rng):
    path, _ = vgg16_file
    loss = PerceptualLoss(path, "block2_conv2", normalization="mse")
    back = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss))
    assert back.get_config() == loss.get_config()
    assert back.vgg16_weights == os.fspath(path) and back.layer == "block2_conv2"
    s, pred = _images(rng, (1, 8, 8, 3), "float32")
    assert float(back(s, pred)) == pytest.approx(float(loss(s, pred)), rel=1e-6)
