"""PixelLoss and PerceptualLoss against float64 NumPy references."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.losses import reference_losses as ref
from tfdeblur.losses import TORCHVISION_FEATURE_SCALE, PerceptualLoss, PixelLoss


def _images(rng, shape, dtype="float64"):
    return rng.uniform(0, 1, shape).astype(dtype), rng.uniform(0, 1, shape).astype(dtype)


# ------------------------------------------------------------------------ pixel loss

@pytest.mark.parametrize("normalization, scale, reduce",
                         [("mse", 1.0, "mean"), ("half_mse", 0.5, "mean"),
                          ("half_sum", 0.5, "sum")])
@pytest.mark.parametrize("shape", [(3, 5, 7, 3), (1, 1, 1, 3), (2, 1, 9, 1), (1, 4, 1, 2)])
def test_pixel_loss_matches_reference(rng, normalization, scale, reduce, shape):
    s, pred = _images(rng, shape)
    loss = PixelLoss(normalization, dtype="float64")
    per_image = PixelLoss(normalization, reduction=None, dtype="float64")(s, pred)
    want = ref.pixel_loss(s, pred, scale, reduce)
    np.testing.assert_allclose(per_image, want, rtol=1e-12)
    # The batch's loss: the normalised sum over all its elements (mean), or over the
    # elements of each image, averaged over the batch (sum).
    per = pred[0].size if reduce == "mean" else 1
    total = scale * ((pred - s) ** 2).sum() / (per * len(pred))
    np.testing.assert_allclose(float(loss(s, pred)), total, rtol=1e-12)


def test_half_sum_is_the_svrnn_authors_loss_and_24576_times_mse(rng):
    """The authors' L2Loss.m: sum of squared errors / 2 / batch size; Np / 2 = 24,576 x mse."""
    s, pred = _images(rng, (4, 128, 128, 3), "float32")
    diff = pred.astype(np.float64) - s.astype(np.float64)
    authors = (diff ** 2).sum() / 2 / 4
    half_sum = float(PixelLoss("half_sum")(s, pred))
    mse = (diff ** 2).mean()
    np.testing.assert_allclose(half_sum, authors, rtol=1e-5)
    assert 128 * 128 * 3 / 2 == 24_576
    np.testing.assert_allclose(half_sum / mse, 24_576, rtol=1e-5)
    np.testing.assert_allclose(half_sum / float(PixelLoss("mse")(s, pred)), 24_576, rtol=1e-5)


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
    with pytest.raises(ValueError, match="normalization must be one of"):
        PixelLoss("sum")

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3])] * 2)
    def traced(a, b):
        return loss(a, b)

    with pytest.raises(tf.errors.InvalidArgumentError, match="must have the same shape"):
        traced(s, pred[:, :3])


@pytest.mark.parametrize("normalization", ["half_mse", "half_sum"])
def test_pixel_loss_serialises(normalization):
    loss = PixelLoss(normalization, name="pix", reduction="sum")
    config = keras.saving.serialize_keras_object(loss)
    back = keras.saving.deserialize_keras_object(config)
    assert isinstance(back, PixelLoss)
    assert (back.normalization, back.name, back.reduction) == (normalization, "pix", "sum")
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
    want = ref.perceptual_loss(s, pred, weights, layer, 0.5, ref.torchvision_feature_scale())
    np.testing.assert_allclose(got, want, rtol=2e-4)
    mse = PerceptualLoss(path, layer, normalization="mse")(s, pred)
    np.testing.assert_allclose(float(mse), 2 * want.mean(), rtol=2e-4)
    caffe = PerceptualLoss(path, layer, feature_scale=1.0, reduction=None)(s, pred)
    np.testing.assert_allclose(caffe, ref.perceptual_loss(s, pred, weights, layer, 0.5),
                               rtol=2e-4)


def test_perceptual_loss_features_at_torchvision_scale(vgg16_file, rng):
    """Default: Caffe-scale features / (255 x mean ImageNet std) = / 57.63; loss / 3,321.2."""
    path, _ = vgg16_file
    assert 255 * np.mean([0.229, 0.224, 0.225]) == pytest.approx(57.63, rel=1e-12)
    assert TORCHVISION_FEATURE_SCALE == pytest.approx(1 / 57.63, rel=1e-12)
    factor = 3321.2169                                   # 57.63 ** 2
    assert TORCHVISION_FEATURE_SCALE ** -2 == pytest.approx(factor, rel=1e-12)
    s, pred = _images(rng, (2, 12, 10, 3), "float32")
    default = PerceptualLoss(path, reduction=None)
    assert default.feature_scale == TORCHVISION_FEATURE_SCALE
    caffe = PerceptualLoss(path, feature_scale=1.0, reduction=None)
    got, old = np.asarray(default(s, pred)), np.asarray(caffe(s, pred))
    assert old.min() > 0
    np.testing.assert_allclose(got, old / factor, rtol=1e-5)
    half = PerceptualLoss(path, feature_scale=0.5, reduction=None)(s, pred)
    np.testing.assert_allclose(half, old / 4, rtol=1e-5)
    for bad in (0, 0.0, -1.0, float("nan"), float("inf"), True, "1", None):
        with pytest.raises(ValueError, match="feature_scale must be a finite number > 0"):
            PerceptualLoss(path, feature_scale=bad)


def test_vgg16_is_positively_homogeneous_without_biases(vgg16_file, rng):
    """Why a factor on the features stands for one on the input: ReLU, conv, max-pool."""
    path, _ = vgg16_file
    vgg = keras.applications.VGG16(weights=path, include_top=False)
    features = keras.Model(vgg.input, vgg.get_layer("block3_conv3").output)
    for layer in vgg.layers:
        if isinstance(layer, keras.layers.Conv2D):
            layer.bias.assign(np.zeros(layer.bias.shape, "float32"))
    caffe = rng.uniform(-120, 150, (1, 12, 10, 3)).astype("float32")
    torch_scale = caffe * TORCHVISION_FEATURE_SCALE
    np.testing.assert_allclose(np.asarray(features(torch_scale)),
                               TORCHVISION_FEATURE_SCALE * np.asarray(features(caffe)),
                               rtol=1e-4, atol=1e-6 * np.abs(features(torch_scale)).max())


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
    # Not exactly 0: the prediction and the target go through VGG16 as one batch, and
    # oneDNN's convolution is not bit-identical across batch positions (1.8e-16 seen).
    assert abs(float(loss(s, s))) < 1e-10
    pred = rng.uniform(0, 1, s.shape).astype("float32")
    scale = ref.torchvision_feature_scale()
    np.testing.assert_allclose(float(loss(s, pred)),
                               ref.perceptual_loss(s, pred, weights, "block3_conv3",
                                                   feature_scale=scale)[0],
                               rtol=2e-4)
    assert float(loss(s[:0], pred[:0])) == 0.0
    assert PerceptualLoss(path, "block1_conv2").min_size == 1
    one = rng.uniform(0, 1, (1, 1, 1, 3)).astype("float32")
    np.testing.assert_allclose(
        float(PerceptualLoss(path, "block1_conv2")(one, s[:, :1, :1])),
        ref.perceptual_loss(one, s[:, :1, :1], weights, "block1_conv2",
                            feature_scale=scale)[0], rtol=2e-4)


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
    loss = PerceptualLoss(path, "block2_conv2", normalization="mse", feature_scale=0.25)
    back = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss))
    assert back.get_config() == loss.get_config()
    assert back.vgg16_weights == os.fspath(path) and back.layer == "block2_conv2"
    assert back.feature_scale == 0.25
    default = PerceptualLoss(path)
    assert PerceptualLoss.from_config(default.get_config()).feature_scale == \
        TORCHVISION_FEATURE_SCALE
    s, pred = _images(rng, (1, 8, 8, 3), "float32")
    assert float(back(s, pred)) == pytest.approx(float(loss(s, pred)), rel=1e-6)


def test_charbonnier_matches_float64_reference():
    from tfdeblur.losses import CharbonnierLoss

    rng = np.random.default_rng(0)
    a, b = rng.random((3, 9, 13, 3)), rng.random((3, 9, 13, 3))
    ref = np.mean(np.sqrt((b - a) ** 2 + 1e-6), axis=(1, 2, 3))
    loss = CharbonnierLoss(reduction=None)
    np.testing.assert_allclose(loss(a.astype("float32"), b.astype("float32")).numpy(), ref,
                               rtol=1e-5)
    # epsilon -> 0: the mean absolute error.
    tiny = CharbonnierLoss(epsilon=1e-9)(a.astype("float32"), b.astype("float32"))
    np.testing.assert_allclose(tiny.numpy(), np.mean(np.abs(b - a)), rtol=1e-5)
    assert CharbonnierLoss.from_config(loss.get_config()).epsilon == 1e-3
    for bad in (0.0, -1.0, float("nan"), True):
        with pytest.raises(ValueError, match="epsilon"):
            CharbonnierLoss(epsilon=bad)
