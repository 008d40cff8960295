"""training/bundle.py: a run becomes a bundled model whose card states what was measured."""

import copy
import importlib.util
import json
import os

import numpy as np
import pytest

import tfdeblur
from tests.training.conftest import TINY
from tfdeblur import pretrained
from tfdeblur.data import read_image
from tfdeblur.inference import deblur_image
from tfdeblur.metrics import psnr
from tfdeblur.training import resolve_config, train
from tfdeblur.training.averaging import fold_checkpoints

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _script(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "training",
                                                                     f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tiny_run(photo_dir, pair_dir, tmp_path_factory):
    """A 6-step run validated on sets named as the bundled recipes name theirs."""
    raw = copy.deepcopy(TINY)
    raw["data"]["train"]["root"] = photo_dir
    raw["data"]["validation"] = {
        "gopro": {"type": "paired", "root": pair_dir, "batch_size": 2},
        "kodak24": {"type": "paired", "root": pair_dir, "batch_size": 3}}
    raw["train"]["monitor"] = "val_gopro_psnr"
    raw["train"]["validate_at_start"] = True
    run = str(tmp_path_factory.mktemp("bundle") / "run")
    train(resolve_config(raw), run, printer=None)
    # What training/long_run.py records: two stretches, the second half-way past step 4.
    with open(os.path.join(run, "cpu_time.json"), "w") as f:
        json.dump({"entries": [{"from_step": 0, "to_step": 2, "cpu_seconds": 3600.0},
                               {"from_step": 2, "to_step": 6, "cpu_seconds": 7200.0}]}, f)
    return run


def _pairs(pair_dir):
    names = sorted(os.listdir(os.path.join(pair_dir, "blur")))
    return [(read_image(os.path.join(pair_dir, "blur", n)),
             read_image(os.path.join(pair_dir, "sharp", n))) for n in names]


def test_bundle_best_and_averaged_write_a_valid_card_with_measured_scores(tiny_run, pair_dir,
                                                                         tmp_path):
    bundle = _script("bundle")
    out = str(tmp_path / "pretrained")
    assert bundle.main([tiny_run, "--name", "tiny_best", "--out", out]) == 0
    card = pretrained.validate_card(json.load(open(os.path.join(out, "tiny_best.json"))),
                                    "tiny_best.json", "tiny_best")
    best = json.load(open(os.path.join(tiny_run, "best.json")))
    assert card["training"]["steps"] == best["step"]
    # CPU-hours up to the bundled step: whole stretches, then the share of the next.
    expected_hours = 1.0 if best["step"] <= 2 else 1.0 + 2.0 * (best["step"] - 2) / 4
    assert card["training"]["cpu_hours"] == pytest.approx(round(expected_hours, 2))
    assert card["default"] is False and card["parameters"] > 0

    model = tfdeblur.load("tiny_best", directory=out)
    pairs = _pairs(pair_dir)
    single = np.mean([float(psnr(s, deblur_image(model, b))) for b, s in pairs])
    ensemble = np.mean([float(psnr(s, deblur_image(model, b, self_ensemble=True)))
                        for b, s in pairs])
    blurry = np.mean([float(psnr(s, b)) for b, s in pairs])
    for key in ("gopro_patches", "kodak24_synthetic"):
        v = card["validation"][key]
        assert v["images"] == 3
        assert v["psnr"] == pytest.approx(single, abs=2e-3)
        assert v["self_ensemble_psnr"] == pytest.approx(ensemble, abs=2e-3)
        assert v["blurry_psnr"] == pytest.approx(blurry, abs=2e-3)

    # The weight average of the kept checkpoints, bundled as the default model.
    fold_checkpoints(os.path.join(tiny_run, "average.npz"),
                     [os.path.join(tiny_run, "checkpoints")], from_step=2, every=2)
    _script("average").write_averaged(tiny_run)
    assert bundle.main([tiny_run, "--name", "tiny_avg", "--which", "averaged", "--default",
                        "--out", out]) == 0
    avg = json.load(open(os.path.join(out, "tiny_avg.json")))
    averaged = json.load(open(os.path.join(tiny_run, "averaged.json")))
    assert avg["training"]["steps"] == averaged["to_step"]
    assert f"{averaged['checkpoints']} checkpoints" in avg["training"]["selection"]
    assert avg["default"] is True
    assert pretrained.best(directory=out) == "tiny_avg"


def test_bundle_refuses_a_run_without_cpu_time(tiny_run, tmp_path):
    import shutil

    run = str(tmp_path / "run")
    shutil.copytree(tiny_run, run)
    os.remove(os.path.join(run, "cpu_time.json"))
    with pytest.raises(SystemExit, match="cpu_time.json is missing"):
        _script("bundle").main([run, "--name", "tiny", "--out", str(tmp_path / "out")])
    assert not os.path.exists(tmp_path / "out" / "tiny.keras")
