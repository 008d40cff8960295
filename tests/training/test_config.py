"""Configuration checks: every bad key, value, folder or placeholder is named; the recipes."""

import copy
import json
import os
import re

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfdeblur.losses import PixelLoss
from tfdeblur.training import (
    AdamL2,
    ConfigError,
    apply_overrides,
    build_model,
    build_optimizer,
    compile_arguments,
    fit_plan,
    load_config,
    read_config_file,
    resolve_config,
)
from tfdeblur.training.config import differences

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG_DIR = os.path.join(ROOT, "training", "configs")


def _set(raw, dotted, value):
    return apply_overrides(raw, [f"{dotted}={json.dumps(value)}"])


def test_tiny_config_resolves_with_defaults(tiny_raw):
    cfg = resolve_config(tiny_raw)
    assert cfg["optimizer"]["beta_2"] == 0.999
    assert cfg["optimizer"]["schedule"] == {"name": "constant"}
    assert cfg["data"]["train"]["augment"] is True and cfg["data"]["train"]["shuffle"] is True
    assert cfg["data"]["train"]["seed"] == 3
    assert cfg["train"]["jit_compile"] == "auto"
    # Resolved configs are JSON (saved in the run folder and compared on resume).
    assert json.loads(json.dumps(cfg)) == cfg


@pytest.mark.parametrize("dotted", [
    "learning_rat",                      # top level
    "model.widht",
    "loss.normalisation",
    "optimizer.lr",
    "optimizer.schedule.every",          # not a key of the constant schedule
    "data.train.patchsize",
    "data.train.blur.max_lenght",
    "data.validation.pairs.augment",     # validation sets are never augmented
    "train.epochs",
])
def test_unknown_keys_are_named(tiny_raw, dotted):
    with pytest.raises(ConfigError, match=f"'{dotted}' is unknown"):
        resolve_config(_set(tiny_raw, dotted, 1))


@pytest.mark.parametrize("dotted, value, key, message", [
    ("train.steps", "10", None, "must be an integer >= 1"),
    ("train.steps", 0, None, "must be an integer >= 1"),
    ("train.steps_per_epoch", 2.5, None, "must be an integer"),
    ("train.keep_checkpoints", 0, None, "must be an integer >= 1"),
    ("optimizer.learning_rate", -1e-4, None, "must be a finite number > 0"),
    ("optimizer.beta_2", 1.0, None, "must be < 1"),
    ("optimizer.weight_decay_mode", "adamw", None, "must be one of"),
    ("optimizer.schedule", {"name": "cosine"}, "optimizer.schedule.name", "must be one of"),
    ("optimizer.schedule", {"name": "step"}, "optimizer.schedule.every",
     "is required for the 'step' schedule"),
    ("optimizer.schedule", {"name": "multistep"}, "optimizer.schedule.milestones",
     "must be a non-empty list"),
    ("optimizer.schedule", {"name": "multistep", "milestones": [5, 5]},
     "optimizer.schedule.milestones", "must increase"),
    ("optimizer.schedule", {"name": "multistep", "milestones": [10, 0.5]},
     "optimizer.schedule.milestones[1]", "must be an integer >= 1"),
    ("optimizer.schedule", {"name": "multistep", "milestones": [10], "factor": 0},
     "optimizer.schedule.factor", "must be a finite number > 0"),
    ("model.name", "unet", None, "must be one of"),
    ("loss.name", "l1", None, "must be one of"),
    ("loss.normalization", "sum", None, "must be one of"),
    ("metrics", ["psnr", "lpips"], "metrics[1]", "must be one of"),
    ("data.train.type", "video", None, "must be one of"),
    ("data.train.batch_size", 0, None, "must be an integer >= 1"),
    ("data.train.blur", {"max_length": -1.0}, None, "min_length <= max_length"),
    ("data.validation.pairs.limit", 0, None, "must be an integer >= 1"),
    ("train.monitor", "val_gopro_psnr", None, "must be one of the validation log keys"),
    ("train.validate_at_start", "yes", None, "must be true or false"),
])
def test_bad_values_are_named(tiny_raw, dotted, value, key, message):
    key = key or dotted
    with pytest.raises(ConfigError, match=f"^config key {re.escape(repr(key))}: .*{message}"):
        resolve_config(_set(tiny_raw, dotted, value))


def test_missing_sections_and_keys(tiny_raw):
    for section in ("model", "loss", "data", "train"):
        raw = copy.deepcopy(tiny_raw)
        del raw[section]
        with pytest.raises(ConfigError, match=f"'{section}'.*required"):
            resolve_config(raw)
    raw = copy.deepcopy(tiny_raw)
    del raw["data"]["train"]["patch_size"]
    with pytest.raises(ConfigError, match="'data.train.patch_size'.*required"):
        resolve_config(raw)
    raw = copy.deepcopy(tiny_raw)
    del raw["train"]["steps"]
    with pytest.raises(ConfigError, match="'train.steps'.*required"):
        resolve_config(raw)


def test_missing_folders_and_files_are_named(tiny_raw, tmp_path):
    missing = str(tmp_path / "no_such_photos")
    with pytest.raises(ConfigError, match=f"'data.train.root': folder {missing} does not exist"):
        resolve_config(_set(tiny_raw, "data.train.root", missing))
    with pytest.raises(ConfigError, match="'data.validation.pairs.root'.*does not exist"):
        resolve_config(_set(tiny_raw, "data.validation.pairs.root", missing))
    with pytest.raises(ConfigError, match="'data.train.kernels': file .*kernels.npz does not"):
        resolve_config(_set(tiny_raw, "data.train.kernels", str(tmp_path / "kernels.npz")))
    raw = _set(tiny_raw, "model", {"name": "svrnn", "vgg16_weights": str(tmp_path / "v.h5")})
    with pytest.raises(ConfigError, match="'model.vgg16_weights': file .*v.h5 does not exist"):
        resolve_config(raw)


def test_relative_paths_resolve_against_the_base_folder(tiny_raw, photo_dir):
    base, name = os.path.split(photo_dir)
    cfg = resolve_config(_set(tiny_raw, "data.train.root", name), base_dir=base)
    assert cfg["data"]["train"]["root"] == photo_dir


def test_required_placeholders_and_vars(tiny_raw, photo_dir):
    raw = _set(tiny_raw, "data.train.root", "REQUIRED: the photo folder")
    with pytest.raises(ConfigError, match="'data.train.root': must be set: the photo folder. "
                                          "Give it with --override data.train.root=VALUE"):
        resolve_config(raw)
    raw = _set(raw, "vars", {"photos": "REQUIRED: the photo folder"})
    raw = _set(raw, "data.train.root", "${photos}")
    with pytest.raises(ConfigError, match="'vars.photos': must be set"):
        resolve_config(raw)
    cfg = resolve_config(_set(raw, "vars.photos", os.path.dirname(photo_dir)), base_dir="/")
    assert cfg["data"]["train"]["root"] == os.path.dirname(photo_dir)
    raw = _set(raw, "data.train.root", "${photos}/" + os.path.basename(photo_dir))
    cfg = resolve_config(_set(raw, "vars.photos", os.path.dirname(photo_dir)))
    assert cfg["data"]["train"]["root"] == photo_dir
    with pytest.raises(ConfigError, match=r"'data.train.root': uses \$\{pics\}"):
        resolve_config(_set(raw, "data.train.root", "${pics}"))


def test_svdn_loss_needs_vgg16_file_or_explicit_zero_and_flow(tiny_raw):
    raw = _set(tiny_raw, "model", {"name": "svdn", "width": 2})
    raw = _set(raw, "loss", {"name": "svdn"})
    with pytest.raises(ConfigError, match="'loss.vgg16_weights'.*--override "
                                          "loss.vgg16_weights=PATH"):
        resolve_config(raw)
    raw = _set(raw, "loss.perceptual_weight", 0)
    with pytest.raises(ConfigError, match="'data.train.with_flow': must be true"):
        resolve_config(raw)
    resolve_config(_set(raw, "data.train.with_flow", True))
    resolve_config(_set(raw, "loss.position_weight", 0))
    with pytest.raises(ConfigError, match="'model.return_positions'.*set by the trainer"):
        resolve_config(_set(raw, "model.return_positions", True))


def test_overrides():
    raw = {"train": {"steps": 5}, "name": "a"}
    out = apply_overrides(raw, ["train.steps=7", "name=b", "optimizer.schedule.name=step",
                                "data.train.patch_size=[32, 48]", "vars.x=null"])
    assert out["train"]["steps"] == 7 and out["name"] == "b"
    assert out["optimizer"]["schedule"]["name"] == "step"
    assert out["data"]["train"]["patch_size"] == [32, 48] and out["vars"]["x"] is None
    assert raw == {"train": {"steps": 5}, "name": "a"}
    with pytest.raises(ConfigError, match="must be key=value"):
        apply_overrides(raw, ["train.steps"])
    with pytest.raises(ConfigError, match="'name' is not a section"):
        apply_overrides(raw, ["name.first=x"])


def test_config_files_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"name": "x",\n "seed": }')
    with pytest.raises(ConfigError, match=r"bad.json:2:.*invalid JSON"):
        read_config_file(bad)
    with pytest.raises(ConfigError, match="does not exist"):
        read_config_file(tmp_path / "none.json")
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(ConfigError, match="must hold a JSON object"):
        read_config_file(tmp_path / "list.json")


def test_differences_lists_changed_leaves(tiny_raw):
    a = resolve_config(tiny_raw)
    b = resolve_config(_set(_set(tiny_raw, "train.steps", 9), "optimizer.beta_1", 0.8))
    assert [d[0] for d in differences(a, b)] == ["optimizer.beta_1", "train.steps"]


@pytest.mark.parametrize("start, total, spe, plan", [
    (0, 12, 4, [(0, 3, 4)]),
    (0, 10, 4, [(0, 2, 4), (2, 3, 2)]),
    (5, 12, 4, [(1, 2, 3), (2, 3, 4)]),
    (5, 7, 4, [(1, 2, 2)]),
    (5, 6, 4, [(1, 2, 1)]),
    (8, 8, 4, []),
    (3, 4, 100, [(0, 1, 1)]),
])
def test_fit_plan_keeps_epoch_boundaries(start, total, spe, plan):
    assert fit_plan(start, total, spe) == plan
    assert sum((e1 - e0) * s for (e0, e1, s) in plan) == total - start


# --------------------------------------------------------------------------- the recipes


@pytest.fixture
def gopro_tree(tmp_path):
    """An empty GoPro-like layout: enough for the config checks (folders exist)."""
    for split in ("train", "test"):
        os.makedirs(tmp_path / "GOPRO_Large" / split / "seq" / "blur")
        os.makedirs(tmp_path / "GOPRO_Large" / split / "seq" / "sharp")
    vgg = tmp_path / "vgg16_notop.h5"
    vgg.write_bytes(b"not read by the config checks")
    return str(tmp_path / "GOPRO_Large"), str(vgg)


def _recipe(name, overrides=()):
    return load_config(os.path.join(CONFIG_DIR, f"{name}.json"), overrides)


@pytest.mark.parametrize("name", ["svrnn_gopro", "svdn_gopro", "lmfn_gopro"])
def test_paper_recipes_name_the_files_the_user_must_give(name):
    with pytest.raises(ConfigError, match="must be set"):
        _recipe(name)


def test_paper_recipes_hold_the_papers_settings(gopro_tree):
    gopro, vgg = gopro_tree
    svrnn = _recipe("svrnn_gopro", [f"vars.gopro={gopro}", f"model.vgg16_weights={vgg}"])
    opt, data = svrnn["optimizer"], svrnn["data"]["train"]
    # The authors' loss scale (sum / 2 / batch), against which their decay 1e-6 was set.
    assert svrnn["loss"] == {"name": "pixel", "normalization": "half_sum"}
    assert (opt["learning_rate"], opt["beta_1"], opt["beta_2"]) == (1e-4, 0.9, 0.999)
    assert (opt["weight_decay"], opt["weight_decay_mode"]) == (1e-6, "l2")
    assert (data["patch_size"], data["batch_size"], svrnn["train"]["steps"]) == (128, 20, 200000)
    assert data["root"] == gopro and svrnn["data"]["validation"]["gopro_test"]["root"] == gopro

    svdn = _recipe("svdn_gopro", [f"vars.gopro={gopro}", f"loss.vgg16_weights={vgg}"])
    opt, data, loss = svdn["optimizer"], svdn["data"]["train"], svdn["loss"]
    assert (loss["perceptual_weight"], loss["position_weight"]) == (0.01, 1e-4)
    assert (opt["learning_rate"], opt["beta_1"], opt["beta_2"], opt["epsilon"]) == \
        (1e-3, 0.9, 0.9, 1e-8)
    assert opt["schedule"] == {"name": "polynomial", "end_learning_rate": 1e-6, "power": 0.9,
                               "decay_steps": svdn["train"]["steps"]}
    assert (data["patch_size"], data["batch_size"], data["with_flow"]) == (256, 32, True)
    assert "identity_init" not in svdn["model"]             # the paper's Xavier start
    assert data["augment"] and data.get("flip", True) and data.get("rotate", True) \
        and data.get("permute_channels", True)
    # 2000 epochs of GoPro's 2103 training pairs in batches of 32.
    assert abs(svdn["train"]["steps"] - 2000 * 2103 / 32) < 100

    lmfn = _recipe("lmfn_gopro", [f"vars.gopro={gopro}"])
    opt, data = lmfn["optimizer"], lmfn["data"]["train"]
    assert (opt["learning_rate"], opt["weight_decay"], opt["weight_decay_mode"]) == \
        (1e-4, 1e-4, "l2")
    assert opt["schedule"] == {"name": "step", "every": 500000, "factor": 0.1}
    assert not (data["flip"] or data["rotate"] or data["permute_channels"])


def test_cpu_configs_resolve(shared_data):
    for name in ("lmfn_cpu_small", "svrnn_cpu_small", "svdn_cpu_small"):
        cfg = load_config(os.path.join(CONFIG_DIR, f"{name}.json"),
                          base_dir=os.path.dirname(os.path.dirname(CONFIG_DIR)))
        assert cfg["data"]["train"]["root"].endswith("photos_bsds500")
        # Never train on the real GoPro crops: they are the real-blur validation set.
        assert "gopro" not in cfg["data"]["train"]["root"]
        assert cfg["data"]["validation"]["gopro"]["root"].endswith("gopro_patches")


def test_pixel_loss_normalizations_are_accepted(tiny_raw):
    for normalization in ("mse", "half_mse", "half_sum"):
        cfg = resolve_config(_set(tiny_raw, "loss.normalization", normalization))
        assert compile_arguments(cfg)["loss"].normalization == normalization


def test_svdn_cpu_small_starts_from_the_identity(shared_data):
    cfg = load_config(os.path.join(CONFIG_DIR, "svdn_cpu_small.json"), base_dir=ROOT)
    assert cfg["model"]["identity_init"] is True
    model = build_model(cfg)
    x = np.random.default_rng(0).uniform(0, 1, (1, 37, 50, 3)).astype("float32")
    np.testing.assert_array_equal(np.asarray(model(x)), x)


# --------------------------------------------------------- SVRNN's weight decay vs its loss

def _decay_to_data_ratio(loss, optimizer, batch, patch, rng):
    """|decay term| / |data term| of the gradient for a one-weight network ``pred = w x``.

    The data term is the loss's gradient; the decay term is what the optimizer
    adds to it, read from its first moment after one step on a zero data
    gradient (Adam's ``m = (1 - beta_1) g`` after one step).
    """
    x = rng.uniform(0, 1, (batch, patch, patch, 3)).astype("float32")
    y = rng.uniform(0, 1, x.shape).astype("float32")
    w = keras.Variable(0.8, dtype="float32", name="w")
    with tf.GradientTape() as tape:
        value = loss(tf.constant(y), w * tf.constant(x))
    data = float(tape.gradient(value, w))
    optimizer.apply_gradients([(tf.zeros_like(w.value), w)])
    (m,) = [v for v in optimizer.variables if v.name == "w_momentum"]
    decay = float(m.numpy()) / (1 - optimizer.beta_1)
    # The authors' loss, sum((w x - y)^2) / 2 / batch, differentiated in float64.
    xd, yd = x.astype(np.float64), y.astype(np.float64)
    authors_data = ((0.8 * xd - yd) * xd).sum() / batch
    return decay / data, 1e-6 * 0.8 / authors_data


@pytest.mark.parametrize("name", ["svrnn_gopro", "svrnn_cpu_small"])
def test_svrnn_recipes_weight_decay_has_the_authors_strength(name, gopro_tree, rng, request):
    """Decay / data gradient with the recipe's loss and optimizer = the authors' (L2Loss.m).

    With the per-element mean ("mse") the same decay 1e-6 would be Np / 2 times
    stronger: 24,576x at SVRNN's 128x128x3 patches (6,144x at the CPU recipe's 64x64).
    """
    gopro, vgg = gopro_tree
    overrides = ([f"vars.gopro={gopro}", f"model.vgg16_weights={vgg}"]
                 if name == "svrnn_gopro" else [])
    if name == "svrnn_cpu_small":
        request.getfixturevalue("shared_data")          # skips without ../shared/data
    cfg = load_config(os.path.join(CONFIG_DIR, f"{name}.json"), overrides, base_dir=ROOT)
    train = cfg["data"]["train"]
    batch, patch = train["batch_size"], train["patch_size"]
    assert (cfg["optimizer"]["weight_decay"], cfg["optimizer"]["weight_decay_mode"]) == \
        (1e-6, "l2")
    optimizer = build_optimizer(cfg["optimizer"])
    assert isinstance(optimizer, AdamL2) and optimizer.l2 == 1e-6
    loss = compile_arguments(cfg)["loss"]
    got, authors = _decay_to_data_ratio(loss, optimizer, batch, patch, rng)
    assert authors > 0
    np.testing.assert_allclose(got, authors, rtol=1e-4)
    # The per-element mean would make the decay Np / 2 times the authors' strength.
    mse, authors = _decay_to_data_ratio(PixelLoss("mse"), build_optimizer(cfg["optimizer"]),
                                        batch, patch, rng)
    np.testing.assert_allclose(mse / authors, patch * patch * 3 / 2, rtol=1e-4)
    if name == "svrnn_gopro":
        assert patch * patch * 3 / 2 == 24_576
