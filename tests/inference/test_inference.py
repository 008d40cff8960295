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
    with pytest.raises(ValueError, match=r"image must be an RGB array \[H, W, 3\]"):
        deblur_image(model, np.zeros((8, 8, 4), np.float32))
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
    with pytest.raises(ValueError, match="could not be loaded"):
        load_model(p)


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
