"""`tfdeblur deblur / models / info / demo` with bundled models, and the demo's side-by-side."""

import numpy as np
import pytest

from tfdeblur.cli import main
from tfdeblur.data.io import read_image, write_image
from tfdeblur.demo import detail_crop, side_by_side
from tfdeblur.inference import deblur_image


@pytest.fixture
def photo(tmp_path, rng):
    path = tmp_path / "blurry.png"
    write_image(path, rng.uniform(0, 1, (40, 48, 3)))
    return path


def test_deblur_without_model_uses_the_best_bundled(bundled, tiny_model_file, photo, tmp_path,
                                                    capsys):
    expected = deblur_image(tiny_model_file[1], read_image(photo))
    assert main(["deblur", str(photo), "-o", str(tmp_path / "a.png")]) == 0
    assert f"model: bundled model tiny_better (lmfn, {tiny_model_file[1].count_params():,} " \
           f"parameters" in capsys.readouterr().out
    np.testing.assert_allclose(read_image(tmp_path / "a.png"), expected, atol=1 / 255)


def test_deblur_with_a_bundled_name_or_a_file(bundled, tiny_model_file, photo, tmp_path, capsys):
    assert main(["deblur", "-m", "tiny", str(photo), "-o", str(tmp_path / "b.png")]) == 0
    assert "model: bundled model tiny (lmfn" in capsys.readouterr().out
    path = str(tiny_model_file[0])
    assert main(["deblur", "-m", path, str(photo), "-o", str(tmp_path / "c.png")]) == 0
    assert f"model: model file {path}" in capsys.readouterr().out
    np.testing.assert_array_equal(read_image(tmp_path / "b.png"), read_image(tmp_path / "c.png"))
    assert main(["deblur", "-q", "-m", "tiny", str(photo), "-o", str(tmp_path / "d.png")]) == 0
    assert capsys.readouterr().out == ""


def test_deblur_with_an_unknown_name_lists_the_bundled(bundled, photo, tmp_path, capsys):
    assert main(["deblur", "-m", "nope", str(photo), "-o", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    assert "no bundled model named 'nope'" in err and "bundled: tiny, tiny_better" in err
    assert not (tmp_path / "x.png").exists()


def test_deblur_without_model_and_none_bundled(none_bundled, photo, tmp_path, capsys):
    assert main(["deblur", str(photo), "-o", str(tmp_path / "x.png")]) == 2
    assert "no trained model is bundled yet" in capsys.readouterr().err


def test_models_lists_bundled_then_architectures(bundled, tiny_model_file, capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    n = tiny_model_file[1].count_params()
    size = tiny_model_file[0].stat().st_size / 1e6
    assert f"| tiny | lmfn | {n:,} | 20.50 (22.36) | 21.25 (23.24) | {size:.1f} |" in out
    assert f"| tiny_better (best) | lmfn | {n:,} | 25.00 (22.36) |" in out
    assert out.index("tiny_better") < out.index("| model | parameters | float32 MB |")
    assert "| svrnn | 9,227,027 |" in out


def test_models_and_info_without_bundled_models(none_bundled, capsys):
    assert main(["info"]) == 0
    assert "bundled trained models: none yet" in capsys.readouterr().out
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "Bundled trained models: none yet" in out and "| lmfn | 1,265,360 |" in out


def test_info_reports_a_broken_bundled_folder(bundled, capsys):
    (bundled / "tiny.json").unlink()
    assert main(["info"]) == 0
    assert "bundled trained models: unusable: bundled model" in capsys.readouterr().out
    assert main(["models"]) == 2
    assert "tiny.keras has no .json file beside it" in capsys.readouterr().err


def test_info_mentions_the_bundled_models(bundled, capsys):
    assert main(["info"]) == 0
    assert "bundled trained models: tiny, tiny_better (best: tiny_better" in \
        capsys.readouterr().out


def test_demo_writes_both_images(bundled, tiny_model_file, photo, tmp_path, capsys):
    out_dir = tmp_path / "demo"
    assert main(["demo", "--input", str(photo), "-o", str(out_dir)]) == 0
    out = capsys.readouterr().out
    assert "model: bundled model tiny_better" in out
    assert f"wrote {out_dir / 'deblurred.png'}" in out
    assert f"wrote {out_dir / 'side_by_side.png'}" in out
    assert "model load " in out and " s, inference " in out
    deblurred = read_image(out_dir / "deblurred.png")
    np.testing.assert_allclose(deblurred, deblur_image(tiny_model_file[1], read_image(photo)),
                               atol=1 / 255)
    band, divider = 16, 2  # the minimums, for a 48-pixel-wide image
    assert read_image(out_dir / "side_by_side.png").shape == (2 * (band + 40), 2 * 48 + divider, 3)

    assert main(["demo", "-m", "tiny", "--input", str(photo), "-o", str(out_dir)]) == 0
    assert "model: bundled model tiny (" in capsys.readouterr().out


def test_demo_without_bundled_model_fails_clearly(none_bundled, photo, tmp_path, capsys):
    assert main(["demo", "--input", str(photo), "-o", str(tmp_path / "demo")]) == 2
    err = capsys.readouterr().err
    assert "tfdeblur demo: error: no trained model is bundled yet" in err
    assert not (tmp_path / "demo").exists()


@pytest.mark.slow
def test_demo_on_the_bundled_photo(bundled, tmp_path, capsys):
    assert main(["demo", "-o", str(tmp_path / "demo")]) == 0
    assert "(1280x720)" in capsys.readouterr().out
    assert read_image(tmp_path / "demo" / "deblurred.png").shape == (720, 1280, 3)
    assert read_image(tmp_path / "demo" / "side_by_side.png").shape == (2 * (32 + 720), 2564, 3)


def test_side_by_side_layout():
    blurry = np.full((720, 1280, 3), 0.2, np.float32)
    sharp = np.full((720, 1280, 3), 0.8, np.float32)
    blurry[400:440, 900:960] = 1.0  # the only detail: the crop must hold it
    canvas = side_by_side(blurry, sharp)
    band, divider = 32, 4
    assert canvas.shape == (2 * (band + 720), 2 * 1280 + divider, 3) and canvas.dtype == np.uint8
    top_left = canvas[band:band + 720, :1280].astype(int)
    top_right = canvas[band:band + 720, 1280 + divider:].astype(int)
    assert np.median(top_left) == 51 and np.median(top_right) == 204
    assert (canvas[:, 1280:1280 + divider] == 255).all()
    y, x = detail_crop(blurry, (240, 426))
    assert y <= 400 and y + 240 >= 440 and x <= 900 and x + 426 >= 960
    # The zoomed crop (x3, nearest neighbour) shows the bright patch three times as large.
    crop = canvas[2 * band + 720:, :1280, 0]
    assert (crop == 255).sum() == pytest.approx(40 * 60 * 9, rel=0.1)
    with pytest.raises(ValueError, match="same shape"):
        side_by_side(blurry, sharp[:10])


def test_a_bundled_model_exports_like_any_other(bundled, tiny_model_file, tmp_path, capsys):
    """`tfdeblur export -m NAME`: a bundled model converts to TFLite (verified against
    Keras inside the export); the bundled file itself is never a destination."""
    out = tmp_path / "tiny_32.tflite"
    assert main(["export", "-m", "tiny", "--tflite", str(out), "--size", "32x32"]) == 0
    assert out.read_bytes()[4:8] == b"TFL3"
    source = bundled / "tiny.keras"
    before = source.read_bytes()
    code = main(["export", "-m", str(source), "--tflite", str(source), "--size", "32x32",
                 "--overwrite"])
    assert code == 2 and "source model" in capsys.readouterr().err
    assert source.read_bytes() == before
