"""PSNR and SSIM (functions and Keras metrics) against float64 NumPy references."""

import math
import os

import cv2
import keras
import numpy as np
import pytest
import tensorflow as tf

from tfdeblur.data import read_image
from tfdeblur.metrics import PSNR, SSIM, gaussian_window, psnr, rgb_to_y, ssim

# ----------------------------------------------------------------- references


def ref_y(rgb, data_range=1.0):
    """MATLAB rgb2ycbcr's Y: 16 + 65.481 R + 128.553 G + 24.966 B (R, G, B in [0, 1]), / 255."""
    x = np.asarray(rgb, np.float64) / data_range
    y = (16.0 + 65.481 * x[..., 0] + 128.553 * x[..., 1] + 24.966 * x[..., 2]) / 255.0
    return data_range * y[..., None]


def _prep(a, b, data_range, crop, y_channel):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if crop:
        a, b = a[..., crop:-crop, crop:-crop, :], b[..., crop:-crop, crop:-crop, :]
    if y_channel:
        a, b = ref_y(a, data_range), ref_y(b, data_range)
    return a, b


def ref_psnr(a, b, data_range=1.0, crop=0, y_channel=False):
    """One image [H, W, C]."""
    a, b = _prep(a, b, data_range, crop, y_channel)
    mse = np.mean((a - b) ** 2)
    return math.inf if mse == 0 else 10.0 * math.log10(data_range ** 2 / mse)


def ref_window():
    """fspecial('gaussian', 11, 1.5): exp(-(x^2 + y^2) / (2 sigma^2)), normalised."""
    y, x = np.mgrid[-5:6, -5:6].astype(np.float64)
    w = np.exp(-(x ** 2 + y ** 2) / (2 * 1.5 ** 2))
    return w / w.sum()


def ref_ssim(a, b, data_range=1.0, crop=0, y_channel=False):
    """One image [H, W, C]: Wang et al. 2004 over the valid 11x11 windows, channel mean."""
    a, b = _prep(a, b, data_range, crop, y_channel)
    w = ref_window()
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    values = []
    for ch in range(a.shape[-1]):
        pa = np.lib.stride_tricks.sliding_window_view(a[..., ch], (11, 11))
        pb = np.lib.stride_tricks.sliding_window_view(b[..., ch], (11, 11))

        def wmean(p):
            return np.einsum("ijyx,yx->ij", p, w)

        mu_a, mu_b = wmean(pa), wmean(pb)
        var_a = wmean((pa - mu_a[..., None, None]) ** 2)
        var_b = wmean((pb - mu_b[..., None, None]) ** 2)
        cov = wmean((pa - mu_a[..., None, None]) * (pb - mu_b[..., None, None]))
        smap = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / (
            (mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2))
        values.append(smap.mean())
    return float(np.mean(values))


def _pair(rng, shape, noise=0.1, dtype="float64"):
    a = rng.uniform(0, 1, shape)
    b = np.clip(a + rng.normal(0, noise, shape), 0, 1)
    return a.astype(dtype), b.astype(dtype)


# ----------------------------------------------------------------------- PSNR

def test_psnr_known_values(rng):
    a = rng.uniform(0, 0.9, (2, 8, 9, 3))
    np.testing.assert_allclose(psnr(a, a + 0.1), [20.0, 20.0], rtol=1e-12)
    assert float(psnr(a[0], a[0])) == math.inf
    np.testing.assert_array_equal(psnr(a, a), [math.inf, math.inf])
    # Data range 255: an error of 1 everywhere is 20 log10(255) dB.
    u = rng.integers(0, 255, (6, 7, 3)).astype("uint8")
    assert float(psnr(u, u + 1, data_range=255)) == pytest.approx(20 * math.log10(255), 1e-12)
    assert float(psnr(a[0].astype("float32"), (a[0] + 0.1).astype("float32"))) == \
        pytest.approx(20.0, abs=1e-4)


@pytest.mark.parametrize("shape", [(3, 13, 10, 3), (1, 1, 1, 3), (2, 1, 7, 1), (4, 5, 1, 3)])
def test_psnr_matches_reference(rng, shape):
    a, b = _pair(rng, shape)
    got = psnr(a, b)
    assert got.dtype == tf.float64 and got.shape == (shape[0],)
    want = [ref_psnr(x, y) for x, y in zip(a, b, strict=True)]
    np.testing.assert_allclose(got, want, rtol=1e-12)
    assert float(psnr(a[0], b[0])) == pytest.approx(want[0], rel=1e-12)
    np.testing.assert_allclose(psnr(a.astype("float32"), b.astype("float32")), want, rtol=1e-5)


def test_psnr_crop_border_and_y_channel(rng):
    a, b = _pair(rng, (2, 12, 15, 3))
    for crop in (0, 1, 5):
        for y in (False, True):
            want = [ref_psnr(x, z, 1.0, crop, y) for x, z in zip(a, b, strict=True)]
            np.testing.assert_allclose(psnr(a, b, crop_border=crop, y_channel=y), want,
                                       rtol=1e-12)
    u, v = (255 * a).round().astype("uint8"), (255 * b).round().astype("uint8")
    want = [ref_psnr(x, z, 255.0, 2, True) for x, z in zip(u, v, strict=True)]
    np.testing.assert_allclose(psnr(u, v, 255, 2, True), want, rtol=1e-12)


def test_rgb_to_y_is_bt601():
    rgb = np.array([[0, 0, 0], [1, 1, 1], [1, 0, 0], [0, 1, 0], [0, 0, 1.0]])
    np.testing.assert_allclose(rgb_to_y(rgb)[:, 0],
                               np.array([16, 235, 16 + 65.481, 16 + 128.553, 16 + 24.966]) / 255,
                               rtol=1e-6)
    np.testing.assert_allclose(rgb_to_y(255 * rgb, 255.0), 255 * np.asarray(rgb_to_y(rgb)),
                               rtol=1e-12)


def test_psnr_empty_batch_and_gradient(rng):
    a, b = _pair(rng, (0, 4, 4, 3))
    assert psnr(a, b).shape == (0,)
    a, b = _pair(rng, (1, 3, 4, 3))
    theo, num = tf.test.compute_gradient(lambda x: psnr(x, tf.constant(b)), [tf.constant(a)],
                                         delta=1e-6)
    np.testing.assert_allclose(theo[0], num[0], rtol=1e-6, atol=1e-6)


# ----------------------------------------------------------------------- SSIM

def test_gaussian_window_is_fspecial():
    g = gaussian_window()
    np.testing.assert_allclose(np.outer(g, g), ref_window(), rtol=1e-12)


def test_ssim_known_values(rng):
    a = rng.uniform(0, 1, (2, 16, 13, 3))
    np.testing.assert_allclose(ssim(a, a), [1.0, 1.0], rtol=1e-12)
    assert float(ssim(a[0], a[0])) == pytest.approx(1.0, rel=1e-12)
    # Constant images: only the luminance term, (2 m1 m2 + C1) / (m1^2 + m2^2 + C1).
    c = np.full((1, 11, 11, 1), 0.25)
    want = (2 * 0.25 * 0.75 + 1e-4) / (0.25 ** 2 + 0.75 ** 2 + 1e-4)
    assert float(ssim(c, c + 0.5)[0]) == pytest.approx(want, rel=1e-12)
    # A constant shift changes only the luminance term, uniformly so.
    assert 0.0 < float(ssim(a[0], np.clip(a[0] + 0.2, 0, 2))) < 1.0


@pytest.mark.parametrize("shape", [(2, 16, 13, 3), (1, 11, 11, 1), (3, 11, 20, 1)])
def test_ssim_matches_reference(rng, shape):
    a, b = _pair(rng, shape, noise=0.2)
    got = ssim(a, b)
    assert got.dtype == tf.float64 and got.shape == (shape[0],)
    want = [ref_ssim(x, y) for x, y in zip(a, b, strict=True)]
    np.testing.assert_allclose(got, want, rtol=1e-10)
    np.testing.assert_allclose(ssim(a.astype("float32"), b.astype("float32")), want, atol=2e-5)
    # TensorFlow's own implementation (same window, valid filtering) agrees.
    np.testing.assert_allclose(tf.image.ssim(a, b, max_val=1.0), want, atol=1e-6)


def test_ssim_crop_y_and_data_range(rng):
    a, b = _pair(rng, (2, 17, 19, 3), noise=0.15)
    for crop in (0, 3):
        for y in (False, True):
            want = [ref_ssim(x, z, 1.0, crop, y) for x, z in zip(a, b, strict=True)]
            np.testing.assert_allclose(ssim(a, b, crop_border=crop, y_channel=y), want,
                                       rtol=1e-10)
    u, v = (255 * a).round().astype("uint8"), (255 * b).round().astype("uint8")
    np.testing.assert_allclose(ssim(u, v, data_range=255, y_channel=True),
                               [ref_ssim(x, z, 255.0, 0, True) for x, z in zip(u, v, strict=True)],
                               rtol=1e-10)
    # uint8 with range 255 is the float image / 255 with range 1.
    np.testing.assert_allclose(ssim(u, v, data_range=255), ssim(u / 255.0, v / 255.0),
                               rtol=1e-10)


def test_ssim_empty_batch_and_gradient(rng):
    a, b = _pair(rng, (0, 11, 12, 3))
    assert ssim(a, b).shape == (0,)
    a, b = _pair(rng, (1, 11, 12, 1), noise=0.2)
    theo, num = tf.test.compute_gradient(lambda x: ssim(x, tf.constant(b)), [tf.constant(a)])
    assert np.abs(theo[0]).max() > 0
    np.testing.assert_allclose(theo[0], num[0], atol=1e-6)


# --------------------------------------------------------------------- errors

@pytest.mark.parametrize("fn", [psnr, ssim])
def test_metric_bad_inputs(rng, fn):
    a, b = _pair(rng, (2, 12, 12, 3))
    name = fn.__name__
    with pytest.raises(ValueError, match=f"{name}: a and b must have the same shape"):
        fn(a, b[:, :11])
    with pytest.raises(ValueError, match=r"b must be an image \[H, W, C\] or a batch"):
        fn(a, b[0, 0])
    with pytest.raises(ValueError, match=r"a must be an image \[H, W, C\] or a batch"):
        fn(a[None], b[None])
    with pytest.raises(ValueError, match="1 or 3 channels"):
        fn(a[..., :2], b[..., :2])
    with pytest.raises(ValueError, match="y_channel=True needs RGB"):
        fn(a[..., :1], b[..., :1], y_channel=True)
    bad = b.copy()
    bad[1, 3, 4, 2] = np.nan
    with pytest.raises(tf.errors.InvalidArgumentError, match=f"{name}: b has NaN or Inf"):
        fn(a, bad)
    with pytest.raises(tf.errors.InvalidArgumentError, match=f"{name}: a has NaN or Inf"):
        fn(np.where(np.isnan(bad), np.inf, a), b)
    with pytest.raises(ValueError, match="a is uint8, so data_range must be its maximum 255"):
        fn((255 * a).astype("uint8"), (255 * b).astype("uint8"))
    with pytest.raises(ValueError, match="both be float or both be integer"):
        fn((255 * a).astype("uint8"), b, data_range=255)
    with pytest.raises(ValueError, match="a must be a float or integer image, got bool"):
        fn(a > 0.5, b > 0.5)
    for bad_range in (0, -1.0, float("nan"), "1"):
        with pytest.raises(ValueError, match="data_range must be a finite number > 0"):
            fn(a, b, data_range=bad_range)
    for crop in (-1, 1.5):
        with pytest.raises(ValueError, match="crop_border must be an integer >= 0"):
            fn(a, b, crop_border=crop)
    with pytest.raises(ValueError, match="y_channel must be True or False"):
        fn(a, b, y_channel="yes")
    with pytest.raises(ValueError, match="images need at least"):
        fn(a, b, crop_border=6)

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float64)] * 2)
    def traced(x, y):
        return fn(x, y)

    np.testing.assert_allclose(traced(a, b), fn(a, b), rtol=1e-12)
    with pytest.raises(tf.errors.InvalidArgumentError, match="must have the same shape"):
        traced(a, b[:, :, :11])


def test_ssim_needs_11_pixels():
    a = np.zeros((1, 10, 30, 3))
    with pytest.raises(ValueError, match=r"ssim: images need at least 11 pixels per side .* "
                                         r"height 10"):
        ssim(a, a)
    with pytest.raises(ValueError, match="at least 15 pixels per side"):
        ssim(np.zeros((14, 30, 1)), np.zeros((14, 30, 1)), crop_border=2)

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 1])] * 2)
    def traced(x, y):
        return ssim(x, y)

    with pytest.raises(tf.errors.InvalidArgumentError, match="images need at least 11"):
        traced(np.zeros((1, 10, 12, 1), "float32"), np.zeros((1, 10, 12, 1), "float32"))


# --------------------------------------------------------------- Keras metrics

def test_keras_metrics_average_per_image_values(rng):
    a1, b1 = _pair(rng, (3, 12, 14, 3), dtype="float32")
    a2, b2 = _pair(rng, (2, 12, 14, 3), noise=0.3, dtype="float32")
    for cls, ref in ((PSNR, ref_psnr), (SSIM, ref_ssim)):
        m = cls(y_channel=True, crop_border=0)
        m.update_state(a1, b1)
        m.update_state(a2, b2)
        m.update_state(a2[:0], b2[:0])                     # an empty batch changes nothing
        values = [ref(x, y, 1.0, 0, True) for x, y in zip(np.concatenate([a1, a2]),
                                                          np.concatenate([b1, b2]), strict=True)]
        assert float(m.result()) == pytest.approx(np.mean(values), rel=1e-5)
        m.reset_state()
        assert float(m.result()) == 0.0
        w = np.array([0.0, 2.0, 1.0], "float32")
        m.update_state(a1, b1, sample_weight=w)
        assert float(m.result()) == pytest.approx(np.dot(values[:3], w) / w.sum(), rel=1e-5)


def test_keras_metrics_in_compile_and_serialisation(rng, tmp_path):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((14, 13, 3)),
                              keras.layers.Conv2D(3, 3, padding="same")])
    model.compile(optimizer="sgd", loss="mse",
                  metrics=[PSNR(), SSIM(data_range=1.0, crop_border=1, name="ssim_c1")])
    x, y = _pair(rng, (5, 14, 13, 3), dtype="float32")
    got = model.evaluate(x, y, batch_size=2, verbose=0, return_dict=True)
    pred = model.predict(x, verbose=0)
    assert got["psnr"] == pytest.approx(np.mean([ref_psnr(t, p) for t, p in zip(y, pred,
                                                                                strict=True)]),
                                        rel=1e-4)
    assert got["ssim_c1"] == pytest.approx(
        np.mean([ref_ssim(t, p, 1.0, 1) for t, p in zip(y, pred, strict=True)]), rel=1e-4)
    model.save(tmp_path / "m.keras")
    back = keras.models.load_model(tmp_path / "m.keras")
    again = back.evaluate(x, y, batch_size=2, verbose=0, return_dict=True)
    assert again["psnr"] == pytest.approx(got["psnr"], rel=1e-6)
    assert again["ssim_c1"] == pytest.approx(got["ssim_c1"], rel=1e-6)
    for m in (PSNR(255.0, 4, True, name="p"), SSIM(2.0, 0, False)):
        restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(m))
        assert type(restored) is type(m) and restored.get_config() == m.get_config()
    with pytest.raises(ValueError, match="PSNR: data_range must be"):
        PSNR(data_range=0)


# ------------------------------------------------------------------ real images

def test_metrics_on_real_gopro_pairs(shared_data):
    folder = os.path.join(shared_data, "gopro_patches")
    names = sorted(os.listdir(os.path.join(folder, "blur")))[:3]
    for name in names:
        blur = read_image(os.path.join(folder, "blur", name))
        sharp = read_image(os.path.join(folder, "sharp", name))
        p, s = float(psnr(sharp, blur)), float(ssim(sharp, blur))
        assert p == pytest.approx(ref_psnr(sharp, blur), rel=1e-5)
        assert s == pytest.approx(ref_ssim(sharp, blur), abs=1e-5)
        # Real camera shake: clearly below a perfect match, clearly above noise.
        assert 15.0 < p < 40.0 and 0.3 < s < 0.99
        # The 8-bit file read as uint8 with data_range 255 gives the same numbers.
        u_blur = cv2.imread(os.path.join(folder, "blur", name))[..., ::-1]
        u_sharp = cv2.imread(os.path.join(folder, "sharp", name))[..., ::-1]
        assert float(psnr(u_sharp, u_blur, 255)) == pytest.approx(ref_psnr(sharp, blur), 1e-5)
        assert float(ssim(u_sharp, u_blur, 255, y_channel=True)) == pytest.approx(
            ref_ssim(sharp, blur, y_channel=True), abs=1e-5)
