"""tfdeblur.evaluate / ``tfdeblur evaluate``: per-image and mean PSNR / SSIM, checked against
independent computations."""

import csv
import math
import os

import cv2
import keras
import numpy as np
import pytest

import tfdeblur
from tfdeblur import metrics, pretrained
from tfdeblur.cli import main
from tfdeblur.data import read_image, write_image, write_tfrecords
from tfdeblur.evaluation import CSV_COLUMNS, evaluate


def _psnr64(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR by its definition, float64 NumPy (data range 1, all pixels and channels)."""
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 10.0 * math.log10(1.0 / mse)


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    """A {blur,sharp} folder of four pairs of two sizes (whole images of any size are scored)."""
    rng = np.random.default_rng(3)
    root = tmp_path_factory.mktemp("eval") / "pairs"
    for d in ("blur", "sharp"):
        os.makedirs(root / d)
    for i, (h, w) in enumerate([(64, 64), (64, 64), (72, 80), (64, 96)]):
        small = rng.random((5, 5, 3)).astype(np.float32)
        sharp = np.clip(cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC), 0, 1)
        write_image(str(root / "sharp" / f"im{i}.png"), sharp)
        write_image(str(root / "blur" / f"im{i}.png"), cv2.blur(sharp, (7, 1)))
    return str(root)


@pytest.fixture(scope="module")
def halving_model(tmp_path_factory):
    """A pointwise model with a known output, 0.5 * x + 0.25, saved as a .keras file."""
    inputs = keras.Input((None, None, 3))
    conv = keras.layers.Conv2D(3, 1, kernel_initializer=keras.initializers.Constant(0.0),
                               bias_initializer=keras.initializers.Constant(0.25))
    model = keras.Model(inputs, conv(inputs))
    conv.kernel.assign(0.5 * np.eye(3, dtype=np.float32)[None, None])
    path = str(tmp_path_factory.mktemp("model") / "half.keras")
    model.save(path)
    return path


def _expected(root, fn):
    rows = []
    for name in sorted(os.listdir(os.path.join(root, "blur"))):
        b = read_image(os.path.join(root, "blur", name))
        s = read_image(os.path.join(root, "sharp", name))
        o = np.clip(fn(b), 0, 1)
        rows.append({"image": os.path.join("blur", name), "psnr": _psnr64(s, o),
                     "blurry_psnr": _psnr64(s, b),
                     "ssim": float(metrics.ssim(s.astype(np.float64), o.astype(np.float64))),
                     "blurry_ssim": float(metrics.ssim(s.astype(np.float64),
                                                       b.astype(np.float64)))})
    return rows


def test_scores_match_independent_computation(pairs, halving_model, tmp_path):
    out = tmp_path / "scores.csv"
    r = evaluate(halving_model, pairs, csv=out, progress=False)
    want = _expected(pairs, lambda b: 0.5 * b + 0.25)
    assert r.images == 4 and [row["image"] for row in r.rows] == [w["image"] for w in want]
    for got, exp in zip(r.rows, want, strict=True):
        for k in CSV_COLUMNS[1:]:
            assert got[k] == pytest.approx(exp[k], abs=2e-5), k
    assert r.psnr == pytest.approx(np.mean([w["psnr"] for w in want]), abs=2e-5)
    assert r.blurry_psnr == pytest.approx(np.mean([w["blurry_psnr"] for w in want]), abs=1e-9)
    assert r.psnr != pytest.approx(r.blurry_psnr, abs=0.1)  # the model's output is scored
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == list(CSV_COLUMNS) and len(rows) == 4
    assert float(rows[2]["blurry_psnr"]) == pytest.approx(want[2]["blurry_psnr"], abs=1e-5)
    assert "blurry" in r.summary() and "gain" in r.summary()


def test_tiled_and_tfrecord_and_limit(pairs, halving_model, tmp_path):
    whole = evaluate(halving_model, pairs, progress=False)
    tiled = evaluate(halving_model, pairs, tile=40, overlap=8, progress=False)
    for a, b in zip(whole.rows, tiled.rows, strict=True):  # pointwise: tiles change nothing
        assert a["psnr"] == pytest.approx(b["psnr"], abs=1e-4)
    records = tmp_path / "tfr"
    write_tfrecords(pairs, records, shards=2, progress=False)
    from_records = evaluate(keras.models.load_model(halving_model), records, progress=False)
    assert [r["image"] for r in from_records.rows] == [r["image"] for r in whole.rows]
    assert from_records.blurry_psnr == whole.blurry_psnr and from_records.psnr == whole.psnr
    first = evaluate(halving_model, pairs, limit=2, progress=False)
    assert first.images == 2 and first.rows == whole.rows[:2]
    with pytest.raises(ValueError, match="^limit must be an integer >= 1 or None, got 0$"):
        evaluate(halving_model, pairs, limit=0)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        evaluate(halving_model, tmp_path / "nowhere")


def test_command_line(pairs, halving_model, tmp_path, capsys):
    out = tmp_path / "rows.csv"
    assert main(["evaluate", "-m", halving_model, pairs, "--csv", str(out), "-q"]) == 0
    text = capsys.readouterr().out
    r = evaluate(halving_model, pairs, progress=False)
    assert r.summary() in text and f"wrote 4 rows to {out}" in text
    assert f"{'model':8s} {r.psnr:9.3f} {r.ssim:8.4f}" in text
    assert out.read_text().splitlines()[0] == ",".join(CSV_COLUMNS)
    assert main(["evaluate", "-m", halving_model, str(tmp_path / "none"), "-q"]) == 2
    assert "tfdeblur evaluate: error:" in capsys.readouterr().err
    assert main(["prepare-data", pairs, str(tmp_path / "tfr"), "-q", "--shards", "2"]) == 0
    assert "wrote 4 pairs in 2 TFRecord shards" in capsys.readouterr().out
    assert main(["evaluate", "-m", halving_model, str(tmp_path / "tfr"), "-q"]) == 0
    assert f"{'blurry':8s} {r.blurry_psnr:9.3f}" in capsys.readouterr().out


@pytest.mark.skipif("lmfn_bundled" not in pretrained.available(), reason="no bundled model")
def test_bundled_model_by_name(pairs):
    r = tfdeblur.evaluate("lmfn_bundled", pairs, limit=2, progress=False)
    assert r.model.startswith("bundled model lmfn_bundled") and r.images == 2
    assert math.isfinite(r.psnr) and math.isfinite(r.ssim)


@pytest.mark.slow
def test_gopro_patches_blurry_psnr(shared_data, halving_model):
    root = os.path.join(shared_data, "gopro_patches")
    if not os.path.isdir(root):
        pytest.skip(f"{root} is absent")
    r = evaluate(halving_model, root, progress=False)
    names = sorted(os.listdir(os.path.join(root, "blur")))
    assert r.images == len(names) == 30
    independent = []
    for row in r.rows:
        s = read_image(os.path.join(root, "sharp", os.path.basename(row["image"])))
        b = read_image(os.path.join(root, row["image"]))
        independent.append(_psnr64(s, b))
        assert row["blurry_psnr"] == pytest.approx(float(metrics.psnr(s, b)), abs=1e-3)
    assert r.blurry_psnr == pytest.approx(float(np.mean(independent)), abs=1e-9)
