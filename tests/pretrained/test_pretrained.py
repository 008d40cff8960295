"""Bundled models: the folder, the model cards, tfdeblur.load and tfdeblur.deblur."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

import tfdeblur
from tests.conftest import ROOT
from tests.pretrained.conftest import make_card, write_card
from tfdeblur import pretrained
from tfdeblur.inference import deblur_image
from tfdeblur.pretrained import PretrainedError


def test_available_card_path_best(bundled, tiny_model_file):
    assert pretrained.search_dir() == str(bundled)
    assert pretrained.available() == ["tiny", "tiny_better"]
    card = pretrained.card("tiny")
    assert card["architecture"] == "lmfn"
    assert card["parameters"] == tiny_model_file[1].count_params()
    assert pretrained.path("tiny_better") == os.path.join(str(bundled), "tiny_better.keras")
    assert pretrained.best() == "tiny_better"  # the higher GoPro PSNR


def test_directory_argument_wins_over_the_environment(bundled, tmp_path, monkeypatch):
    monkeypatch.setenv("TFDEBLUR_PRETRAINED_DIR", str(tmp_path / "elsewhere"))
    assert pretrained.available(bundled) == ["tiny", "tiny_better"]
    assert pretrained.best(directory=bundled) == "tiny_better"
    with pytest.raises(PretrainedError, match="elsewhere does not exist"):
        pretrained.available()


def test_package_folder_is_the_default(monkeypatch):
    monkeypatch.delenv("TFDEBLUR_PRETRAINED_DIR", raising=False)
    assert pretrained.search_dir() == os.path.dirname(pretrained.__file__)
    assert os.path.isfile(pretrained.demo_image_path())


def test_default_flag_overrides_psnr(bundled, tiny_model_file):
    n = tiny_model_file[1].count_params()
    write_card(bundled, "tiny", make_card("tiny", n, 20.5, default=True))
    assert pretrained.best() == "tiny"
    write_card(bundled, "tiny_better", make_card("tiny_better", n, 25.0, default=True))
    with pytest.raises(PretrainedError, match='more than one .*"default": true: tiny, tiny_better'):
        pretrained.best()


def test_best_without_bundled_models_is_a_clear_error(none_bundled):
    assert pretrained.available() == []
    with pytest.raises(PretrainedError, match="no trained model is bundled yet"):
        pretrained.best()
    with pytest.raises(PretrainedError, match="no trained model is bundled yet"):
        tfdeblur.deblur(np.zeros((32, 32, 3), np.float32))


def test_unknown_name_lists_the_bundled_ones(bundled):
    with pytest.raises(PretrainedError, match="no bundled model named 'nope'.*tiny, tiny_better"):
        pretrained.card("nope")
    with pytest.raises(PretrainedError, match="tiny, tiny_better"):
        tfdeblur.load("nope")
    with pytest.raises(FileNotFoundError, match="missing.keras does not exist.*tiny, tiny_better"):
        tfdeblur.load(bundled / "missing.keras")


@pytest.mark.parametrize("edit, message", [
    (lambda c: c.pop("architecture"), "missing key 'architecture'"),
    (lambda c: c["validation"].pop("gopro_patches"), "missing key 'validation.gopro_patches'"),
    (lambda c: c["validation"]["kodak24_synthetic"].pop("psnr"),
     "missing key 'validation.kodak24_synthetic.psnr'"),
    (lambda c: c["training"].update(steps=True), "'training.steps' must be an integer, got True"),
    (lambda c: c["training"].update(cpu_hours="2"), "'training.cpu_hours' must be a number"),
    (lambda c: c["validation"]["gopro_patches"].update(psnr=float("nan")),
     "'validation.gopro_patches.psnr' must be a finite number"),
    (lambda c: c["licence"].update(data=[]), "'licence.data' must list the licence"),
    (lambda c: c.update(default="yes"), "'default' must be true or false"),
    (lambda c: c.update(name="other"), "'name' must be 'tiny'"),
    (lambda c: c.update(architecture=" "), "'architecture' must not be empty"),
])
def test_card_validation_names_the_file_and_key(bundled, tiny_model_file, edit, message):
    card = make_card("tiny", tiny_model_file[1].count_params())
    edit(card)
    write_card(bundled, "tiny", card)
    with pytest.raises(PretrainedError, match=message) as info:
        pretrained.available()
    assert str(bundled / "tiny.json") in str(info.value)


def test_hidden_files_are_not_models(bundled):
    (bundled / ".tiny_new.json.tmp123.json").write_text("{partial")
    (bundled / ".old.keras").write_bytes(b"")
    assert pretrained.available() == ["tiny", "tiny_better"]


def test_card_that_is_not_json(bundled):
    (bundled / "tiny.json").write_text("{not json")
    with pytest.raises(PretrainedError, match=r"tiny.json cannot be read as JSON"):
        pretrained.card("tiny")
    (bundled / "tiny.json").write_text("[1, 2]")
    with pytest.raises(PretrainedError, match="must be a JSON object, got list"):
        pretrained.card("tiny")


def test_incomplete_pairs_are_errors(bundled):
    os.remove(bundled / "tiny.json")
    with pytest.raises(PretrainedError, match=r"tiny.keras has no .json file beside it"):
        pretrained.available()
    shutil.copy(bundled / "tiny_better.json", bundled / "tiny.json")
    os.remove(bundled / "tiny_better.keras")
    with pytest.raises(PretrainedError, match=r"tiny_better.json has no .keras file beside it"):
        pretrained.available()


def test_card_that_does_not_match_its_model(bundled, tiny_model_file):
    write_card(bundled, "tiny", make_card("tiny", tiny_model_file[1].count_params() + 1))
    with pytest.raises(PretrainedError, match="parameters but its card tiny.json says"):
        tfdeblur.load("tiny")


def test_load_by_name_and_by_path(bundled, tiny_model_file, rng):
    path, original = tiny_model_file
    x = rng.uniform(0, 1, (1, 24, 40, 3)).astype(np.float32)
    expected = np.asarray(original(x))
    for arg in ("tiny", str(path), path):
        model = tfdeblur.load(arg)
        np.testing.assert_allclose(np.asarray(model(x)), expected, atol=1e-6)
    assert tfdeblur.load("tiny") is not tfdeblur.load("tiny")  # load gives the caller a copy


def test_deblur_arrays_files_and_models(bundled, tiny_model_file, tmp_path, rng):
    from tfdeblur.data.io import read_image, write_image

    path, original = tiny_model_file
    img = (rng.uniform(0, 1, (30, 41, 3)) * 255).astype(np.uint8)
    expected = deblur_image(original, img)
    for model in (None, "tiny", "tiny_better", str(path), original):
        out = tfdeblur.deblur(img, model=model)
        assert out.dtype == np.float32 and out.shape == (30, 41, 3)
        assert out.min() >= 0.0 and out.max() <= 1.0
        np.testing.assert_allclose(out, expected, atol=1e-6)
    np.testing.assert_allclose(tfdeblur.deblur(img.astype(np.uint16) * 257), expected, atol=1e-6)
    np.testing.assert_allclose(tfdeblur.deblur(img / np.float64(255)), expected, atol=1e-6)
    write_image(tmp_path / "photo.png", img)
    np.testing.assert_allclose(tfdeblur.deblur(tmp_path / "photo.png"),
                               deblur_image(original, read_image(tmp_path / "photo.png")),
                               atol=1e-6)
    grey = img[..., 1]
    np.testing.assert_allclose(tfdeblur.deblur(grey),
                               deblur_image(original, np.repeat(grey[..., None], 3, axis=2))
                               .mean(axis=2), atol=1e-6)
    rgba = np.concatenate([img, grey[..., None]], axis=2)
    out = tfdeblur.deblur(rgba)
    assert out.shape == (30, 41, 4)
    np.testing.assert_allclose(out[..., :3], expected, atol=1e-6)
    np.testing.assert_allclose(out[..., 3] * 255, grey, atol=1e-3)
    with pytest.raises(ValueError, match=r"\[H, W, 3\] \(RGB\), \[H, W, 4\] \(RGBA\)"):
        tfdeblur.deblur(np.zeros((30, 41, 2), np.float32))


def test_deblur_caches_models_and_reloads_a_changed_file(bundled, tiny_model_file):
    from tfdeblur._api import resolve_model
    from tfdeblur.models import build

    first, description = resolve_model(None)
    assert "tiny_better" in description and "lmfn" in description
    assert resolve_model("tiny_better")[0] is first
    assert resolve_model(str(bundled / "tiny_better.keras"))[0] is first
    # A new file (different size: one more RFDB) is a different model, even at the same name.
    bigger = build("lmfn", width=4, num_blocks=2)
    bigger.save(bundled / "tiny_better.keras")
    write_card(bundled, "tiny_better", make_card("tiny_better", bigger.count_params(), 25.0))
    reloaded = resolve_model("tiny_better")[0]
    assert reloaded is not first and reloaded.count_params() == bigger.count_params()


def test_import_tfdeblur_does_not_import_tensorflow(bundled):
    code = ("import sys, tfdeblur; print(tfdeblur.pretrained.available()); "
            "print(sorted(m for m in ('tensorflow', 'keras', 'cv2') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         timeout=120, env={**os.environ, "PYTHONPATH": ROOT})
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.splitlines() == ["['tiny', 'tiny_better']", "[]"]


def test_card_example_in_the_folder_readme_is_valid():
    # The documented card format is the one the validator accepts.
    text = open(os.path.join(os.path.dirname(pretrained.__file__), "README.md")).read()
    example = text.split("```json\n", 1)[1].split("```", 1)[0]
    card = json.loads(example)
    assert pretrained.validate_card(card, "README.md", "lmfn_small") is card
