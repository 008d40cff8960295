"""TensorBoard events of a run; a run in TensorFlow's ram:// filesystem interrupted and resumed."""

import csv
import io
import uuid

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfdeblur.training import list_checkpoints, read_checkpoint, resolve_config, train


def read_events(folder: str) -> dict[str, list[tuple[int, object]]]:
    """tag -> [(step, summary value)] of every event file of a folder (TensorFlow's reader)."""
    out: dict[str, list] = {}
    for path in sorted(tf.io.gfile.glob(folder.rstrip("/") + "/events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                out.setdefault(value.tag, []).append((event.step, value))
    return out


def scalar(value) -> float:
    return float(tf.make_ndarray(value.tensor))


def _cfg(tiny_raw, **train):
    return resolve_config({**tiny_raw, "train": {**tiny_raw["train"], **train}})


@pytest.mark.slow
def test_tensorboard_has_losses_metrics_learning_rate_speed_and_image_triplets(tiny_raw,
                                                                               tmp_path):
    cfg = _cfg(tiny_raw, steps=4, steps_per_epoch=2, checkpoint_every=2, tensorboard_images=2)
    run = tmp_path / "run"
    train(cfg, str(run), printer=None)
    events = read_events(str(run / "tensorboard"))

    steps = {tag: [s for s, _ in values] for tag, values in events.items()}
    for tag in ("train/loss", "train/psnr", "train/learning_rate", "speed/steps_per_second",
                "speed/images_per_second"):
        assert steps.get(tag) == [2, 4], (tag, sorted(steps))
    # Validation at the start (step 0) and at every epoch end.
    for tag in ("validation/pairs_psnr", "validation/pairs_ssim"):
        assert steps[tag] == [0, 2, 4], tag
    # Every tag names what it is: loss, psnr, ssim, learning_rate, per_second, images.
    assert all(v.metadata.plugin_data.plugin_name == "scalars"
               for tag, values in events.items() if not tag.startswith("validation/pairs/")
               for _, v in values)

    lr = [scalar(v) for _, v in events["train/learning_rate"]]
    np.testing.assert_allclose(lr, [3e-3, 3e-3], rtol=1e-6)
    with open(run / "log.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    np.testing.assert_allclose([scalar(v) for _, v in events["validation/pairs_psnr"]],
                               [float(r["val_pairs_psnr"]) for r in rows], rtol=1e-5)
    np.testing.assert_allclose([scalar(v) for _, v in events["train/loss"]],
                               [float(r["loss"]) for r in rows[1:]], rtol=1e-5)
    rates = [scalar(v) for _, v in events["speed/steps_per_second"]]
    images = [scalar(v) for _, v in events["speed/images_per_second"]]
    assert all(r > 0 for r in rates)
    np.testing.assert_allclose(images, [2 * r for r in rates], rtol=1e-6)  # batch 2

    # Two triplets (blurry | output | sharp) of the 24 x 24 validation pairs, each validation.
    for i in (0, 1):
        values = events[f"validation/pairs/{i}"]
        assert [s for s, _ in values] == [0, 2, 4]
        v = values[-1][1]
        assert v.metadata.plugin_data.plugin_name == "images"
        width, height, png = tf.make_ndarray(v.tensor)
        assert (int(width), int(height)) == (72, 24)
        triplet = tf.io.decode_png(png).numpy()
        assert triplet.shape == (24, 72, 3)
    assert "validation/pairs/2" not in events


@pytest.mark.slow
def test_run_in_ram_filesystem_interrupted_and_resumed_matches_a_straight_run(tiny_raw):
    cfg = _cfg(tiny_raw, steps=6, steps_per_epoch=4, checkpoint_every=2, tensorboard_images=1)
    run = f"ram://tfdeblur-test-{uuid.uuid4().hex}/run"
    straight = f"ram://tfdeblur-test-{uuid.uuid4().hex}/straight"

    class Interrupt(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.steps = 0

        def on_train_batch_end(self, batch, logs=None):
            self.steps += 1
            if self.steps == 3:
                raise KeyboardInterrupt("test")

    with pytest.raises(KeyboardInterrupt):
        train(cfg, run, printer=None, callbacks=[Interrupt()])
    # The interrupt saved the step it reached, next to the step-2 checkpoint.
    assert [s for s, _ in list_checkpoints(run + "/checkpoints")] == [3, 2]

    result = train(None, run, printer=None)
    assert (result.start_step, result.step, result.completed) == (3, 6, True)
    for name in ("config.json", "log.csv", "best.keras", "best.json", "final.keras",
                 "validation_baseline.json"):
        assert tf.io.gfile.exists(f"{run}/{name}"), name
    assert "validation/pairs/0" in read_events(run + "/tensorboard")
    with tf.io.gfile.GFile(run + "/log.csv") as f:
        assert [r["step"] for r in csv.DictReader(io.StringIO(f.read()))] == ["0", "4", "6"]

    train(cfg, straight, printer=None)
    _, resumed = read_checkpoint(list_checkpoints(run + "/checkpoints")[0][1])
    _, whole = read_checkpoint(list_checkpoints(straight + "/checkpoints")[0][1])
    for group in ("model", "optimizer"):
        for a, b in zip(resumed[group], whole[group], strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
