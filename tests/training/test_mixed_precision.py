"""train.mixed_precision: every network trains under float16 and bfloat16 policies; the saved
model computes in float32."""

import os

import numpy as np
import pytest

from tfdeblur.training import resolve_config, train

NETWORKS = {
    "lmfn": {"name": "lmfn", "width": 4, "num_blocks": 1},
    "svrnn": {"name": "svrnn", "width": 4, "weight_width": 2, "num_rnns": 2},
    "svdn": {"name": "svdn", "width": 2, "dilation_rates": [1], "kernel_size": 3,
             "offset_hidden": 2, "head_width": 2},
}


@pytest.mark.slow
@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
@pytest.mark.parametrize("network", sorted(NETWORKS))
def test_network_trains_under_the_policy_and_saves_a_float32_model(tiny_raw, tmp_path, network,
                                                                    policy):
    import keras

    from tfdeblur.inference import load_model

    cfg = resolve_config({
        **tiny_raw, "model": NETWORKS[network],
        "train": {**tiny_raw["train"], "steps": 2, "steps_per_epoch": 2, "monitor": None,
                  "validate_at_start": False, "tensorboard": False,
                  "mixed_precision": policy}})
    run = tmp_path / "run"
    result = train(cfg, str(run), printer=None)
    assert result.completed and np.isfinite(result.last_logs["loss"]), result.last_logs
    assert np.isfinite(result.last_logs["val_pairs_psnr"])
    # The global policy is back to what it was.
    assert keras.config.dtype_policy().name == "float32"

    model = load_model(os.path.join(run, "final.keras"))
    assert {layer.dtype_policy.name for layer in model.layers} == {"float32"}
    x = np.random.default_rng(0).uniform(0, 1, (1, 24, 24, 3)).astype("float32")
    y = model(x)
    assert y.dtype == "float32" and np.isfinite(np.asarray(y)).all()


@pytest.mark.slow
def test_float16_gets_loss_scaling_and_its_checkpoint_resumes(tiny_raw, tmp_path):
    from tfdeblur.training import prepare

    cfg = resolve_config({
        **tiny_raw, "model": NETWORKS["lmfn"],
        "train": {**tiny_raw["train"], "steps": 1, "steps_per_epoch": 1, "monitor": None,
                  "validate_at_start": False, "tensorboard": False,
                  "mixed_precision": "mixed_float16"}})
    run = tmp_path / "run"
    train(cfg, str(run), printer=None)
    model, _, state, path = prepare(cfg, str(run), printer=None)
    assert type(model.optimizer).__name__ == "LossScaleOptimizer"
    assert path is not None and state.step == 1
    assert int(model.optimizer.iterations.numpy()) in (0, 1)  # a skipped overflow step is 0
    assert model.layers[-1].dtype_policy.name == "mixed_float16"
