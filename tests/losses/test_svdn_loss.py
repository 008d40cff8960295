"""SVDNLoss: the weighted sum of eq. 7, its explicit opt-outs, and training an SVDN with it."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfdeblur.models
from tests.losses import reference_losses as ref
from tfdeblur.losses import SVDNLoss
from tfdeblur.models.svdn import with_positions

TINY_SVDN = dict(width=2, dilation_rates=(1, 2), kernel_size=3, offset_hidden=2, head_width=2)


def _batch(rng, n=2, h=9, w=10, taps=25):
    sharp = rng.uniform(0, 1, (n, h, w, 3)).astype("float32")
    image = rng.uniform(0, 1, (n, h, w, 3)).astype("float32")
    flow = rng.normal(0, 3, (n, h, w, 4)).astype("float32")
    hf, wf = -(-h // 2), -(-w // 2)
    grid = np.stack(np.meshgrid(np.arange(hf), np.arange(wf), indexing="ij"), -1)
    positions = (grid[None, :, :, None, :] + rng.normal(0, 2, (n, hf, wf, taps, 2)))
    return sharp, image, flow, positions.astype("float32")


def test_svdn_loss_is_the_weighted_sum_of_the_references(vgg16_file, rng):
    path, weights = vgg16_file
    sharp, image, flow, positions = _batch(rng)
    loss = SVDNLoss(path, margin=0.5, reduction=None)
    got = loss((sharp, flow), (image, positions))
    # The perceptual features at torchvision's scale (/ 57.63), for which the paper set 0.01.
    scale = ref.torchvision_feature_scale()
    want = (ref.pixel_loss(sharp, image, 0.5)
            + 0.01 * ref.perceptual_loss(sharp, image, weights, "block3_conv3",
                                         feature_scale=scale)
            + 1e-4 * ref.position_loss(positions, flow, 0.5))
    np.testing.assert_allclose(got, want, rtol=2e-4)
    assert loss.perceptual.feature_scale == pytest.approx(scale, rel=1e-12)
    # perceptual_feature_scale=1.0: the Caffe-scale features (3,321 x the perceptual term).
    caffe = SVDNLoss(path, margin=0.5, perceptual_feature_scale=1.0, reduction=None)
    want = (ref.pixel_loss(sharp, image, 0.5)
            + 0.01 * ref.perceptual_loss(sharp, image, weights, "block3_conv3")
            + 1e-4 * ref.position_loss(positions, flow, 0.5))
    np.testing.assert_allclose(caffe((sharp, flow), (image, positions)), want, rtol=2e-4)
    with pytest.raises(ValueError, match="perceptual_feature_scale must be a finite number > 0"):
        SVDNLoss(path, perceptual_feature_scale=0)
    # Other weights and layer.
    loss = SVDNLoss(path, perceptual_weight=0.5, position_weight=0.25, margin=0.0,
                    perceptual_layer="block2_conv1", pixel_weight=2.0)
    want = (2.0 * ref.pixel_loss(sharp, image, 0.5)
            + 0.5 * ref.perceptual_loss(sharp, image, weights, "block2_conv1",
                                        feature_scale=scale)
            + 0.25 * ref.position_loss(positions, flow, 0.0)).mean()
    np.testing.assert_allclose(float(loss([sharp, flow], [image, positions])), want, rtol=2e-4)


def test_svdn_loss_needs_vgg16_or_an_explicit_zero_weight(tmp_path, rng):
    with pytest.raises(ValueError, match="no vgg16_weights file.*perceptual_weight=0"):
        SVDNLoss()
    with pytest.raises(FileNotFoundError, match="vgg16_weights"):
        SVDNLoss(str(tmp_path / "vgg16.h5"))
    sharp, image, flow, positions = _batch(rng)
    loss = SVDNLoss(perceptual_weight=0, margin=1.0, reduction=None, dtype="float64")
    want = ref.pixel_loss(sharp, image, 0.5) + 1e-4 * ref.position_loss(positions, flow, 1.0)
    np.testing.assert_allclose(loss((sharp, flow), (image, positions)), want, rtol=1e-6)


def test_svdn_loss_without_flow_guidance_takes_images(rng):
    sharp, image, flow, positions = _batch(rng)
    loss = SVDNLoss(perceptual_weight=0, position_weight=0, dtype="float64")
    want = ref.pixel_loss(sharp, image, 0.5).mean()
    np.testing.assert_allclose(float(loss(sharp, image)), want, rtol=1e-6)
    np.testing.assert_allclose(float(loss((sharp, flow), (image, positions))), want, rtol=1e-6)
    with pytest.raises(ValueError, match=r"must be a pair \(sharp, flow\) when position_weight"):
        SVDNLoss(perceptual_weight=0)(sharp, image)
    with pytest.raises(ValueError, match="must be a pair, got 3 values"):
        loss((sharp, flow, flow), (image, positions))


def test_svdn_loss_bad_inputs(rng):
    sharp, image, flow, positions = _batch(rng)
    loss = SVDNLoss(perceptual_weight=0)
    with pytest.raises(ValueError, match="same shape"):
        loss((sharp, flow), (image[:, :8], positions))
    with pytest.raises(ValueError, match=r"y_true \(flow\) of shape"):
        loss((sharp, flow[:, :6]), (image, positions))
    with pytest.raises(ValueError, match=r"y_true \(sharp, flow\) must be floating point"):
        loss(((255 * sharp).astype("uint8"), flow), (image, positions))
    flow[0, 0, 0, 0] = np.nan
    with pytest.raises(tf.errors.InvalidArgumentError, match="NaN or Inf"):
        loss((sharp, flow), (image, positions))
    for kw in ({"perceptual_weight": -1.0}, {"position_weight": float("nan")},
               {"pixel_weight": "1"}):
        with pytest.raises(ValueError, match="must be a finite number >= 0"):
            SVDNLoss(**{"perceptual_weight": 0, **kw})


def test_svdn_loss_serialises(vgg16_file):
    path, _ = vgg16_file
    loss = SVDNLoss(path, perceptual_weight=0.02, position_weight=1e-3, margin=0.5,
                    perceptual_feature_scale=0.1)
    back = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss))
    assert isinstance(back, SVDNLoss) and back.get_config() == loss.get_config()
    assert back.perceptual is not None and back.vgg16_weights == path
    assert back.perceptual.feature_scale == 0.1
    no_vgg = SVDNLoss(perceptual_weight=0)
    back = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(no_vgg))
    assert back.perceptual is None and back.get_config() == no_vgg.get_config()


def test_svdn_loss_compile_arguments_train_an_svdn(vgg16_file, rng, tmp_path):
    path, _ = vgg16_file
    keras.utils.set_random_seed(0)
    model = with_positions(tfdeblur.models.build("svdn", implementation="portable", **TINY_SVDN))
    loss = SVDNLoss(path, perceptual_weight=0.01, position_weight=0.5)
    args = loss.compile_arguments()
    assert args["loss_weights"] == [1.0, 0.5]
    assert args["loss"][0].perceptual is loss.perceptual          # VGG16 loaded once
    model.compile(optimizer=keras.optimizers.Adam(1e-3), **args)
    sharp, blurry, flow, _ = _batch(rng, n=4, h=9, w=10)
    ds = (tf.data.Dataset.from_tensor_slices((blurry, sharp, flow)).batch(2)
          .map(lambda b, s, f: (b, (s, f))))
    # Keras's total (one loss per output, weighted) equals the loss called directly.
    got = model.evaluate(ds, verbose=0, return_dict=True)
    image, positions = model(blurry)
    want = float(loss((sharp, flow), (image, positions)))
    assert got["loss"] == pytest.approx(want, rel=1e-4)
    before = [np.array(w) for w in model.get_weights()]
    history = model.fit(ds, epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    assert any(not np.array_equal(a, np.asarray(b)) for a, b in zip(before, model.get_weights(),
                                                                    strict=True))
    # The position term reaches the offset branch (DCN1's offsets come from ow1_conv).
    with tf.GradientTape() as tape:
        _, positions = model(blurry)
        value = loss.position(flow, positions)
    ow1 = model.get_layer("neck").ow1_conv.kernel
    assert np.abs(tape.gradient(value, ow1)).max() > 0
    # A saved compiled model comes back with its losses (VGG16 re-read from the path).
    model.save(tmp_path / "svdn.keras")
    back = keras.models.load_model(tmp_path / "svdn.keras")
    assert back.evaluate(ds, verbose=0) == pytest.approx(model.evaluate(ds, verbose=0), rel=1e-5)


def test_svdn_loss_compile_arguments_without_positions(vgg16_file):
    path, _ = vgg16_file
    loss = SVDNLoss(path, position_weight=0)
    args = loss.compile_arguments()
    assert set(args) == {"loss"} and isinstance(args["loss"], SVDNLoss)
    assert args["loss"].position_weight == 0 and args["loss"].perceptual_weight == 0.01
    scaled = SVDNLoss(path, position_weight=0, perceptual_feature_scale=0.5).compile_arguments()
    assert scaled["loss"].get_config()["perceptual_feature_scale"] == 0.5
    assert scaled["loss"].perceptual.feature_scale == 0.5
