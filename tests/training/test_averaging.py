"""Weight averaging over checkpoints: running sum file, exact mean, resumable folding, errors."""

import json
import os

import keras
import numpy as np
import pytest

from tfdeblur.training import CheckpointError, CheckpointManager, TrainingState
from tfdeblur.training.averaging import averaged_model, fold_checkpoints, read_average


def _model(width=3, seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((None, None, 3))
    x = keras.layers.Conv2D(width, 3, padding="same", name="conv")(inputs)
    outputs = keras.layers.Conv2D(3, 1, name="out")(x)
    model = keras.Model(inputs, outputs)
    model.compile(optimizer="adam", loss="mse")
    model.optimizer.build(model.trainable_variables)
    return model


def _checkpoints(folder, steps, width=3):
    """Checkpoints whose weights are the seed-s random init of the same model, s = step."""
    manager = CheckpointManager(folder, keep=100)
    weights = {}
    for step in steps:
        model = _model(width, seed=step)
        weights[step] = [np.array(v.numpy(), np.float64) for v in model.variables]
        manager.save(model, TrainingState(step=step))
    return weights


def test_mean_of_the_chosen_steps_folded_in_several_calls(tmp_path):
    ckpts = tmp_path / "ckpts"
    weights = _checkpoints(ckpts, [100, 200, 250, 300, 400])
    avg = tmp_path / "average.npz"
    # steps >= 200 and multiples of 100: 200, 300, 400; 250 is skipped, 100 is before.
    assert fold_checkpoints(avg, [ckpts / "ckpt-000000200.npz", ckpts / "ckpt-000000300.npz"],
                            from_step=200, every=100) == [200, 300]
    assert fold_checkpoints(avg, [ckpts]) == [400]          # settings from the file
    assert fold_checkpoints(avg, [ckpts]) == []              # nothing new: file unchanged
    meta, _ = read_average(avg)
    assert meta["steps"] == [200, 300, 400] and meta["from_step"] == 200
    model = averaged_model(_model(seed=7), avg)
    for v, *ws in zip(model.variables, *(weights[s] for s in (200, 300, 400)), strict=True):
        np.testing.assert_allclose(v.numpy(), np.mean(ws, axis=0), rtol=1e-6, atol=1e-7)


def test_errors_name_the_problem(tmp_path):
    ckpts = tmp_path / "ckpts"
    _checkpoints(ckpts, [10, 20])
    avg = tmp_path / "average.npz"
    with pytest.raises(ValueError, match="from_step is needed"):
        fold_checkpoints(avg, [ckpts])
    with pytest.raises(ValueError, match="every"):
        fold_checkpoints(avg, [ckpts], from_step=0, every=0)
    with pytest.raises(ValueError, match="neither a folder nor a checkpoint"):
        fold_checkpoints(avg, [tmp_path / "weights.h5"], from_step=0)
    assert fold_checkpoints(avg, [ckpts], from_step=0, every=10) == [10, 20]
    with pytest.raises(ValueError, match="from_step=5 differs"):
        fold_checkpoints(avg, [ckpts], from_step=5)
    # a checkpoint of another model (width 4) is refused, the file stays as it was
    other = tmp_path / "other"
    _checkpoints(other, [30], width=4)
    before = avg.read_bytes()
    with pytest.raises(CheckpointError, match="other model variables"):
        fold_checkpoints(avg, [other])
    assert avg.read_bytes() == before
    with pytest.raises(CheckpointError, match="another model"):
        averaged_model(_model(width=4), avg)
    with pytest.raises(FileNotFoundError):
        averaged_model(_model(), tmp_path / "none.npz")
    avg.write_bytes(before[: len(before) // 2])
    with pytest.raises(CheckpointError, match="damaged"):
        read_average(avg)


def test_average_script_writes_the_model_and_its_record(tmp_path):
    import training.average as script

    run = tmp_path / "run"
    weights = _checkpoints(run / "checkpoints", [500, 750, 1000])
    _model(seed=3).save(run / "best.keras")
    assert script.main([str(run), "--from-step", "600", "--every", "250"]) == 0
    record = json.loads((run / "averaged.json").read_text())
    assert record == {"checkpoints": 2, "from_step": 750, "to_step": 1000, "every": 250}
    model = keras.models.load_model(run / "averaged.keras")
    want = np.mean([weights[750][0], weights[1000][0]], axis=0)
    np.testing.assert_allclose(model.variables[0].numpy(), want, rtol=1e-6, atol=1e-7)
    assert not [n for n in os.listdir(run) if n.endswith(".tmp")]
