"""Checkpoint files: round trip of model + optimizer state, damage detection, fallback, pruning."""

import os
import warnings

import keras
import numpy as np
import pytest

from tfdeblur.training import (
    AdamL2,
    CheckpointError,
    CheckpointManager,
    TrainingState,
    load_checkpoint,
    load_weights,
    read_checkpoint,
)


def _model(width=3, seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((None, None, 3))
    x = keras.layers.Conv2D(width, 3, padding="same", name="conv")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)  # non-trainable variables too
    outputs = keras.layers.Conv2D(3, 1, name="out")(x)
    model = keras.Model(inputs, outputs)
    model.compile(optimizer=AdamL2(l2=1e-3, learning_rate=1e-2), loss="mse")
    model.optimizer.build(model.trainable_variables)
    return model


def _trained(steps=3, seed=0):
    model = _model(seed=seed)
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        x = rng.random((2, 8, 8, 3)).astype("float32")
        model.train_on_batch(x, x * 0.5)
    return model


def _values(variables):
    return [np.array(v.numpy()) for v in variables]


def test_round_trip_restores_weights_and_optimizer_state(tmp_path):
    model = _trained()
    manager = CheckpointManager(tmp_path, keep=2)
    path = manager.save(model, TrainingState(step=3, epoch=1, best=21.5, best_step=2,
                                             extra={"name": "x"}))
    assert os.path.basename(path) == "ckpt-000000003.npz"

    fresh = _model(seed=9)
    assert not np.array_equal(_values(fresh.variables)[0], _values(model.variables)[0])
    state, restored = manager.restore(fresh)
    assert restored == path
    assert (state.step, state.epoch, state.best, state.best_step, state.extra) == \
        (3, 1, 21.5, 2, {"name": "x"})
    for a, b in zip(_values(model.variables), _values(fresh.variables), strict=True):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(_values(model.optimizer.variables), _values(fresh.optimizer.variables),
                    strict=True):
        np.testing.assert_array_equal(a, b)
    assert int(fresh.optimizer.iterations.numpy()) == 3
    # The metric states (loss tracker) come back separately, for the resumed epoch.
    assert set(state.metric_values) == {v.path for v in model.metrics_variables}
    # The next step is the same as the original model's next step.
    x = np.random.default_rng(7).random((2, 8, 8, 3)).astype("float32")
    model.train_on_batch(x, x)
    fresh.train_on_batch(x, x)
    for a, b in zip(_values(model.variables), _values(fresh.variables), strict=True):
        np.testing.assert_array_equal(a, b)


def test_keeps_the_newest_k_and_ignores_temporary_files(tmp_path):
    model = _trained(1)
    manager = CheckpointManager(tmp_path, keep=2)
    for step in (2, 4, 6):
        manager.save(model, TrainingState(step=step))
    # A write cut short by a kill leaves only a temporary file, never a ckpt-*.npz.
    (tmp_path / ".ckpt-000000008.npz.123.abc.tmp").write_bytes(b"partial")
    assert [s for s, _ in manager.checkpoints()] == [6, 4]
    assert manager.remove_temporary_files() == [".ckpt-000000008.npz.123.abc.tmp"]
    assert sorted(os.listdir(tmp_path)) == ["ckpt-000000004.npz", "ckpt-000000006.npz"]


def _flip_byte(path, where=0.5):
    data = bytearray(open(path, "rb").read())
    data[int(len(data) * where)] ^= 0xFF
    open(path, "wb").write(bytes(data))


@pytest.mark.parametrize("damage", ["flip", "truncate", "empty"])
def test_damaged_checkpoint_is_detected(tmp_path, damage):
    model = _trained(1)
    path = CheckpointManager(tmp_path).save(model, TrainingState(step=1))
    if damage == "flip":
        _flip_byte(path)
    elif damage == "truncate":
        data = open(path, "rb").read()
        open(path, "wb").write(data[:len(data) // 2])
    else:
        open(path, "wb").close()
    with pytest.raises(CheckpointError, match="ckpt-000000001.npz"):
        read_checkpoint(path)
    before = _values(model.variables)
    with pytest.raises(CheckpointError):
        load_checkpoint(path, model)
    for a, b in zip(before, _values(model.variables), strict=True):
        np.testing.assert_array_equal(a, b)


def test_damaged_newest_falls_back_to_previous(tmp_path):
    manager = CheckpointManager(tmp_path, keep=3)
    old = _trained(2)
    manager.save(old, TrainingState(step=2))
    newest = manager.save(_trained(4, seed=1), TrainingState(step=4))
    _flip_byte(newest, 0.3)
    with pytest.warns(UserWarning, match="ckpt-000000004.npz.*trying the previous"):
        assert manager.restore(_model(seed=5))[0].step == 2
    assert os.path.exists(newest)          # only looked at
    fresh = _model(seed=5)
    with pytest.warns(UserWarning, match="ckpt-000000004.npz.*trying the previous"):
        state, path = manager.restore(fresh, quarantine=True)
    assert state.step == 2 and path.endswith("ckpt-000000002.npz")
    for a, b in zip(_values(old.variables), _values(fresh.variables), strict=True):
        np.testing.assert_array_equal(a, b)
    # The damaged file is set aside, so it never counts among the kept checkpoints.
    assert os.path.exists(newest + ".damaged") and not os.path.exists(newest)
    assert [s for s, _ in manager.checkpoints()] == [2]


def test_all_damaged_starts_from_scratch(tmp_path):
    manager = CheckpointManager(tmp_path)
    _flip_byte(manager.save(_trained(1), TrainingState(step=1)))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert manager.restore(_model()) is None
    assert any("starting from scratch" in str(w.message) for w in caught)


def test_checkpoint_of_another_model_is_an_error_not_a_fallback(tmp_path):
    manager = CheckpointManager(tmp_path)
    manager.save(_trained(1), TrainingState(step=1))
    keras.utils.set_random_seed(0)
    inputs = keras.Input((None, None, 3))
    other = keras.Model(inputs, keras.layers.Conv2D(3, 5, padding="same", name="conv")(inputs))
    other.compile(optimizer=AdamL2(), loss="mse")
    other.optimizer.build(other.trainable_variables)
    with pytest.raises(CheckpointError, match="another configuration"):
        manager.restore(other)
    assert [s for s, _ in manager.checkpoints()] == [1]


def test_load_weights_for_inference(tmp_path):
    model = _trained(2)
    path = CheckpointManager(tmp_path).save(model, TrainingState(step=2))
    plain = _model(seed=4)
    meta = load_weights(plain, path)
    assert meta["step"] == 2
    x = np.random.default_rng(1).random((1, 8, 8, 3)).astype("float32")
    np.testing.assert_array_equal(model.predict_on_batch(x), plain.predict_on_batch(x))


def test_manager_rejects_bad_keep(tmp_path):
    with pytest.raises(ValueError,
                       match="^CheckpointManager: keep must be an integer >= 1, got 0$"):
        CheckpointManager(tmp_path, keep=0)
