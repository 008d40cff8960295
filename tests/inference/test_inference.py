"""Inference helpers and the command-line tool."""

import os

import keras
import numpy as np
import pytest

from tfdeblur.cli import main
from tfdeblur.data.io import read_image, write_image
from tfdeblur.inference import deblur_files, deblur_image, list_images, load_model


def _pointwise_model():
    # A 1x1 convolution: tiling must give exactly the whole-image result.
    x = keras.Input((None, None, 3))
    y = keras.layers.Conv2D(3, 1, kernel_initializer="orthogonal", bias_initializer="zeros")(x)
    y = keras.layers.Activation("sigmoid")(y)
    return keras.Model(x, y)


def _conv_model():
    x = keras.Input((None, None, 3))
    y = keras.layers.Conv2D(3, 3, padding="same")(x)
    return keras.Model(x, keras.layers.Activation("sigmoid")(y))


def test_tiles_match_whole_image_for_pointwise_model(rng):
    model = _pointwise_model()
    img = rng.uniform(0, 1, (37, 53, 3)).astype(np.float32)
    whole = deblur_image(model, img)
    tiled = deblur_image(model, img, tile=16, overlap=4, batch_size=3)
    np.testing.assert_allclose(tiled, whole, rtol=1e-6, atol=1e-6)


def test_tiles_with_3x3_receptive_field_differ_only_near_seams(rng):
    model = _conv_model()
    img = rng.uniform(0, 1, (40, 40, 3)).astype(np.float32)
    whole = deblur_image(model, img)
    tiled = deblur_image(model, img, tile=24, overlap=8)
    assert np.abs(tiled - whole).max() < 0.1
    np.testing.assert_allclose(tiled[:15, :15], whole[:15, :15], atol=1e-6)


def test_input_validation(rng):
    model = _pointwise_model()
    with pytest.raises(ValueError, match=r"image must be an array \[H, W, 3\] \(RGB\)"):
        deblur_image(model, np.zeros((8, 8, 2), np.float32))
    bad = np.zeros((8, 8, 3), np.float32)
    bad[2, 2, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        deblur_image(model, bad)
    with pytest.raises(ValueError, match=r"must be in \[0, 1\]"):
        deblur_image(model, np.full((8, 8, 3), 2.0, np.float32))
    with pytest.raises(ValueError, match="tile must be"):
        deblur_image(model, np.zeros((40, 40, 3), np.float32), tile=8, overlap=4)
    u8 = (rng.uniform(0, 1, (9, 7, 3)) * 255).astype(np.uint8)
    np.testing.assert_allclose(deblur_image(model, u8),
                               deblur_image(model, u8.astype(np.float32) / 255), atol=1e-6)


def test_files_and_cli(tmp_path, rng):
    model = _pointwise_model()
    model_path = tmp_path / "m.keras"
    model.save(model_path)
    src = tmp_path / "in"
    src.mkdir()
    for i in range(3):
        write_image(src / f"im{i}.png", rng.uniform(0, 1, (20 + i, 17, 3)))
    out = deblur_files(load_model(model_path), [src], str(tmp_path / "out"), progress=False)
    assert [os.path.basename(p) for p in out] == ["im0.png", "im1.png", "im2.png"]
    assert read_image(out[1]).shape == (21, 17, 3)

    assert main(["deblur", "-m", str(model_path), str(src / "im0.png"),
                 "-o", str(tmp_path / "one.png"), "-q"]) == 0
    np.testing.assert_allclose(read_image(tmp_path / "one.png"), read_image(out[0]), atol=1 / 255)
    assert main(["deblur", "-m", str(tmp_path / "missing.keras"), str(src), "-o",
                 str(tmp_path / "x"), "-q"]) == 2
    assert main(["deblur", "-m", str(model_path), str(tmp_path / "nope.png"), "-o",
                 str(tmp_path / "x"), "-q"]) == 2


def test_list_images_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="contains no image files"):
        list_images([tmp_path / "empty"])
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="not an image file"):
        list_images([tmp_path / "notes.txt"])
    with pytest.raises(FileNotFoundError, match="does not exist"):
        list_images([tmp_path / "gone.png"])


def test_bad_model_file(tmp_path):
    p = tmp_path / "junk.keras"
    p.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="could not be loaded: it is not a .keras"):
        load_model(p)


def test_truncated_or_damaged_model_file_says_so(tmp_path):
    good = tmp_path / "m.keras"
    _pointwise_model().save(good)
    data = good.read_bytes()
    cut = tmp_path / "cut.keras"
    cut.write_bytes(data[:len(data) // 2])
    with pytest.raises(ValueError, match=rf"model file {cut} could not be loaded: it is "
                                         r"truncated or corrupt") as info:
        load_model(cut)
    assert "not found" not in str(info.value).lower()
    # Flipped bytes inside a stored member: the archive's checksum names it.
    damaged = bytearray(data)
    start = data.index(b"model.weights.h5") + 200
    damaged[start:start + 64] = bytes(b ^ 0xFF for b in damaged[start:start + 64])
    bad = tmp_path / "bad.keras"
    bad.write_bytes(bytes(damaged))
    with pytest.raises(ValueError, match=rf"model file {bad} could not be loaded: it is "
                                         r"(truncated or )?corrupt"):
        load_model(bad)


def _strided_model():
    x = keras.Input((None, None, 3))
    return keras.Model(x, keras.layers.Conv2D(3, 3, strides=2, padding="same")(x))


def test_models_that_do_not_map_images_to_same_shape_are_refused(tmp_path):
    x = keras.Input((None, None, 3))
    valid = keras.Model(x, keras.layers.Conv2D(3, 3)(x))  # 2 pixels smaller
    one = keras.Model(x, keras.layers.Conv2D(1, 1)(x))  # 1 channel out of 3
    vector = keras.Model(x, keras.layers.GlobalAveragePooling2D()(x))
    for model in (_strided_model(), valid, one, vector):
        path = tmp_path / f"{model.name}.keras"
        model.save(path)
        with pytest.raises(ValueError, match=rf"model file {path} is not an image-to-image"):
            load_model(path)
    flat = keras.Sequential([keras.Input((12,)), keras.layers.Dense(12)])
    flat.save(tmp_path / "flat.keras")
    with pytest.raises(ValueError, match=r"takes input of shape \(None, 12\), not images"):
        load_model(tmp_path / "flat.keras")
    # A model used directly (not loaded) is checked on its first call.
    with pytest.raises(ValueError, match=r"maps \[1, 20, 22, 3\] to \[1, 10, 11, 3\]"):
        deblur_image(_strided_model(), np.zeros((20, 22, 3), np.float32))


def test_networks_pass_the_image_to_image_check():
    from tfdeblur import models
    from tfdeblur.inference import check_image_to_image

    for name, config in (("lmfn", {"width": 4, "num_blocks": 1}), ("svrnn", {}),
                         ("svdn", {})):
        check_image_to_image(models.build(name, **config), name)


def test_a_model_with_two_outputs_is_refused():
    from tfdeblur import models
    from tfdeblur.inference import check_image_to_image
    from tfdeblur.models.svdn import with_positions

    training = with_positions(models.build("svdn", width=2, dilation_rates=(1,), kernel_size=3,
                                           offset_hidden=2, head_width=2))
    with pytest.raises(ValueError, match="has 2 outputs.*with_positions"):
        check_image_to_image(training, "svdn")


def test_grey_and_rgba_arrays_keep_their_layout(rng):
    model = _pointwise_model()
    rgb = rng.uniform(0, 1, (9, 11, 3)).astype(np.float32)
    alpha = rng.uniform(0, 1, (9, 11, 1)).astype(np.float32)
    out = deblur_image(model, np.concatenate([rgb, alpha], axis=2))
    assert out.shape == (9, 11, 4)
    np.testing.assert_array_equal(out[..., 3:], alpha)
    np.testing.assert_allclose(out[..., :3], deblur_image(model, rgb), atol=1e-6)
    grey = rgb[..., 0]
    expected = deblur_image(model, np.repeat(grey[..., None], 3, axis=2)).mean(axis=2)
    np.testing.assert_allclose(deblur_image(model, grey), expected, atol=1e-6)
    assert deblur_image(model, grey[..., None]).shape == (9, 11, 1)
    u16 = (rgb * 65535).astype(np.uint16)
    rgba16 = np.concatenate([u16, (alpha * 65535).astype(np.uint16)], axis=2)
    np.testing.assert_allclose(deblur_image(model, rgba16)[..., 3] * 65535,
                               rgba16[..., 3], atol=1e-2)


def test_grey_model_takes_grey_images(rng):
    x = keras.Input((None, None, 1))
    model = keras.Model(x, keras.layers.Activation("sigmoid")(keras.layers.Conv2D(1, 1)(x)))
    grey = rng.uniform(0, 1, (7, 8)).astype(np.float32)
    out = deblur_image(model, grey)
    assert out.shape == (7, 8)
    np.testing.assert_allclose(out, np.asarray(model(grey[None, ..., None]))[0, ..., 0],
                               atol=1e-6)
    with pytest.raises(ValueError, match="takes 1-channel images; the image is colour"):
        deblur_image(model, np.zeros((7, 8, 3), np.float32))


def test_too_small_image_and_tile_say_the_minimum():
    from tfdeblur import models

    net = models.build("lmfn", width=4, num_blocks=1)  # minimum 17x17
    with pytest.raises(ValueError, match=r"image 12x5 is smaller than the model's minimum of "
                                         r"17x17 pixels") as info:
        deblur_image(net, np.zeros((5, 12, 3), np.float32))
    assert "\x1b" not in str(info.value) and "Exception encountered" not in str(info.value)
    with pytest.raises(ValueError, match="tile must be at least the model's minimum image "
                                         "size 17, got 10"):
        deblur_image(net, np.zeros((40, 40, 3), np.float32), tile=10, overlap=2)


def test_info_command(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "compiled ops:" in out and "lmfn" in out and "svrnn" in out and "svdn" in out


def test_load_model_in_a_fresh_process(tmp_path):
    # A fresh interpreter knows none of the package's layers until load_model
    # registers them (the networks' padding layers live in tfdeblur.models).
    import subprocess
    import sys

    from tests.conftest import ROOT
    from tfdeblur import models

    path = tmp_path / "lmfn.keras"
    models.build("lmfn", width=8, num_blocks=2).save(path)
    code = ("import numpy as np; from tfdeblur.inference import load_model, deblur_image; "
            f"m = load_model({str(path)!r}); "
            "print(deblur_image(m, np.full((20, 23, 3), 0.5, np.float32)).shape)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         timeout=300, env={**os.environ, "PYTHONPATH": ROOT})
    assert out.returncode == 0, out.stderr[-2000:]
    assert "(20, 23, 3)" in out.stdout


def test_train_subcommand_refuses_unknown_config(tmp_path, capsys):
    assert main(["train", "--config", "no_such_config", "--run-dir", str(tmp_path / "run")]) == 2
    assert "no_such_config" in capsys.readouterr().err
