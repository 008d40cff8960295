"""Geometric self-ensemble (``self_ensemble=True``): the mean over the 8 orientations,
checked against a float64 NumPy convolution run on each orientation."""

import os

import keras
import numpy as np
import pytest

import tfdeblur
from tfdeblur.cli import main
from tfdeblur.data.io import read_image, write_image
from tfdeblur.evaluation import evaluate
from tfdeblur.inference import deblur_files, deblur_image


def _asymmetric_model(seed=0):
    """A 3x3 convolution with random (so not rotation-symmetric) weights, then a sigmoid."""
    x = keras.Input((None, None, 3))
    conv = keras.layers.Conv2D(3, 3, padding="same")
    model = keras.Model(x, keras.layers.Activation("sigmoid")(conv(x)))
    rng = np.random.default_rng(seed)
    conv.kernel.assign(rng.normal(0, 0.6, (3, 3, 3, 3)).astype(np.float32))
    conv.bias.assign(rng.normal(0, 0.1, 3).astype(np.float32))
    return model, conv


def _conv64(img, kernel, bias):
    """The model in float64 NumPy: zero-padded 3x3 cross-correlation, bias, sigmoid."""
    h, w, _ = img.shape
    p = np.pad(img.astype(np.float64), ((1, 1), (1, 1), (0, 0)))
    out = np.zeros((h, w, kernel.shape[3])) + bias
    for dy in range(3):
        for dx in range(3):
            out += p[dy:dy + h, dx:dx + w] @ kernel[dy, dx].astype(np.float64)
    return 1.0 / (1.0 + np.exp(-out))


def _orientations():
    """The 8 dihedral transforms as (forward, inverse): flips, with and without a transpose."""
    pairs = []
    for fy in (1, -1):
        for fx in (1, -1):
            pairs.append((lambda a, fy=fy, fx=fx: a[::fy, ::fx],
                          lambda a, fy=fy, fx=fx: a[::fy, ::fx]))
            pairs.append((lambda a, fy=fy, fx=fx: a[::fy, ::fx].transpose(1, 0, 2),
                          lambda a, fy=fy, fx=fx: a.transpose(1, 0, 2)[::fy, ::fx]))
    return pairs


def _reference(img, conv):
    k, b = np.asarray(conv.kernel), np.asarray(conv.bias)
    outs = [inv(_conv64(fwd(img), k, b)) for fwd, inv in _orientations()]
    return np.clip(np.mean(outs, axis=0), 0, 1)


@pytest.mark.parametrize("shape", [(9, 13), (1, 6), (16, 16)])
def test_mean_of_the_8_orientations_matches_float64(rng, shape):
    model, conv = _asymmetric_model()
    img = rng.uniform(0, 1, (*shape, 3)).astype(np.float32)
    got = deblur_image(model, img, self_ensemble=True)
    assert got.shape == img.shape and got.dtype == np.float32
    np.testing.assert_allclose(got, _reference(img, conv), atol=2e-6)
    # Not the single pass: the convolution is not rotation invariant.
    single = deblur_image(model, img)
    assert np.abs(got - single).max() > 1e-2


def test_tiled_self_ensemble_matches_the_whole_image_for_a_pointwise_model(rng):
    x = keras.Input((None, None, 3))
    y = keras.layers.Conv2D(3, 1, kernel_initializer="orthogonal")(x)
    model = keras.Model(x, keras.layers.Activation("sigmoid")(y))
    img = rng.uniform(0, 1, (37, 53, 3)).astype(np.float32)
    whole = deblur_image(model, img)
    # A pointwise model commutes with every orientation: the mean is the single pass.
    np.testing.assert_allclose(deblur_image(model, img, self_ensemble=True), whole, atol=1e-6)
    np.testing.assert_allclose(deblur_image(model, img, tile=16, overlap=4, self_ensemble=True),
                               whole, atol=1e-6)


def test_grey_and_rgba_keep_their_layout(rng):
    model, conv = _asymmetric_model(1)
    rgb = rng.uniform(0, 1, (10, 7, 3)).astype(np.float32)
    rgba = np.concatenate([rgb, rng.uniform(0, 1, (10, 7, 1)).astype(np.float32)], axis=2)
    out = deblur_image(model, rgba, self_ensemble=True)
    np.testing.assert_array_equal(out[..., 3], rgba[..., 3])
    np.testing.assert_allclose(out[..., :3], _reference(rgb, conv), atol=2e-6)
    grey = rgb[..., 0]
    g = deblur_image(model, grey, self_ensemble=True)
    assert g.shape == grey.shape
    np.testing.assert_allclose(g, _reference(np.repeat(grey[..., None], 3, 2), conv).mean(2),
                               atol=2e-6)


def test_a_bad_value_names_the_argument_before_any_work(rng, tmp_path):
    model, _ = _asymmetric_model()
    img = rng.uniform(0, 1, (8, 8, 3)).astype(np.float32)
    for bad in ("yes", 1, None):
        with pytest.raises(ValueError, match="self_ensemble must be True or False"):
            deblur_image(model, img, self_ensemble=bad)
    write_image(tmp_path / "a.png", img)
    with pytest.raises(ValueError, match="self_ensemble must be True or False"):
        deblur_files(model, [tmp_path / "a.png"], tmp_path / "out", self_ensemble="yes",
                     progress=False)
    assert not os.path.exists(tmp_path / "out")


def test_python_api_cli_and_evaluate(rng, tmp_path):
    model, conv = _asymmetric_model(2)
    path = tmp_path / "m.keras"
    model.save(path)
    img = rng.uniform(0, 1, (12, 20, 3)).astype(np.float32)
    write_image(tmp_path / "a.png", img)
    stored = read_image(tmp_path / "a.png")
    expected = _reference(stored, conv)
    np.testing.assert_allclose(tfdeblur.deblur(stored, model=model, self_ensemble=True),
                               expected, atol=2e-6)
    assert main(["deblur", "-m", str(path), str(tmp_path / "a.png"), "-o",
                 str(tmp_path / "out.png"), "--self-ensemble", "-q"]) == 0
    np.testing.assert_allclose(read_image(tmp_path / "out.png"), expected, atol=0.5 / 255 + 1e-6)

    root = tmp_path / "pairs"
    for d in ("blur", "sharp"):
        os.makedirs(root / d)
    write_image(root / "blur" / "p.png", stored)
    write_image(root / "sharp" / "p.png", img[::-1])
    sharp = read_image(root / "sharp" / "p.png").astype(np.float64)
    result = evaluate(str(path), str(root), self_ensemble=True, progress=False)
    want = 10 * np.log10(1 / np.mean((sharp - expected) ** 2))
    assert result.psnr == pytest.approx(want, abs=1e-3)
    single = evaluate(str(path), str(root), progress=False)
    assert abs(single.psnr - result.psnr) > 1e-3
