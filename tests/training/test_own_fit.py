"""The package's callbacks in a user's own model.fit: validation, TensorBoard images,
resumable checkpoints, best model."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfdeblur.models
from tests.training.test_tensorboard_and_remote import read_events
from tfdeblur.training import (
    BestModel,
    CheckpointManager,
    ResumableCheckpoint,
    TensorBoard,
    Validation,
)


def _data(n=6, size=24, seed=0):
    rng = np.random.default_rng(seed)
    sharp = rng.uniform(0, 1, (n, size, size, 3)).astype("float32")
    blurry = (sharp + np.roll(sharp, 1, axis=2)) / 2
    return blurry, sharp


def _model():
    keras.utils.set_random_seed(1)
    model = tfdeblur.models.build("lmfn", width=4, num_blocks=1)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mae")
    return model


def _callbacks(root, val, every=2):
    checkpoint = ResumableCheckpoint(CheckpointManager(str(root / "checkpoints"), keep=2),
                                     every=every)
    return checkpoint, [Validation({"val": val}),
                        TensorBoard(str(root / "tensorboard"), images={"val": val},
                                    max_images=2, batch_size=2),
                        BestModel(str(root / "best.keras"), "val_val_psnr",
                                  state=checkpoint.state),
                        checkpoint]


@pytest.mark.slow
def test_callbacks_in_a_users_own_fit_resume_and_log(tmp_path):
    blurry, sharp = _data()
    train = tf.data.Dataset.from_tensor_slices((blurry, sharp)).batch(2).repeat()
    val = tf.data.Dataset.from_tensor_slices((blurry[:3], sharp[:3])).batch(3)

    # Two epochs of three steps in one go...
    straight = _model()
    checkpoint, callbacks = _callbacks(tmp_path / "straight", val)
    checkpoint.restore(straight)
    straight.fit(train, epochs=2, steps_per_epoch=3, callbacks=callbacks, verbose=0)

    # ... and the same stopped after the first epoch, then resumed in a new model.
    first = _model()
    checkpoint, callbacks = _callbacks(tmp_path / "run", val)
    assert checkpoint.restore(first).step == 0
    first.fit(train, epochs=1, steps_per_epoch=3, callbacks=callbacks, verbose=0)
    again = _model()
    checkpoint, callbacks = _callbacks(tmp_path / "run", val)
    state = checkpoint.restore(again)
    assert (state.step, state.epoch) == (3, 1) and state.best is not None
    again.fit(train.skip(3), epochs=2, initial_epoch=state.epoch, steps_per_epoch=3,
              callbacks=callbacks, verbose=0)
    assert checkpoint.state.step == 6
    for a, b in zip(again.get_weights(), straight.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)

    # Checkpoints every 2 steps and at each epoch end (newest 2 kept), the best model, the events.
    assert [s for s, _ in checkpoint.manager.checkpoints()] == [6, 4]
    best = json.loads((tmp_path / "run" / "best.json").read_text())
    assert best["monitor"] == "val_val_psnr" and best["step"] in (3, 6)
    loaded = keras.models.load_model(tmp_path / "run" / "best.keras")
    assert loaded(blurry[:1]).shape == (1, 24, 24, 3)
    events = read_events(str(tmp_path / "run" / "tensorboard"))
    assert [s for s, _ in events["train/loss"]] == [3, 6]
    assert [s for s, _ in events["validation/val_psnr"]] == [3, 6]
    assert [s for s, _ in events["validation/val/1"]] == [3, 6]
    assert "train/learning_rate" in events and "speed/images_per_second" in events
