"""Keras callbacks of a resumable training run: validation, TensorBoard, best model, CSV log,
checkpoints.

They serve :func:`tfdeblur.training.train` and work as well in a user's own
``model.fit`` on any tfdeblur model (or any image-to-image Keras model)::

    manager = CheckpointManager("runs/mine/checkpoints", keep=3)
    checkpoint = ResumableCheckpoint(manager, every=500)
    state = checkpoint.restore(model)          # after model.compile(...)
    model.fit(train_ds, epochs=20, steps_per_epoch=1000, initial_epoch=state.epoch,
              callbacks=[Validation({"gopro": val_ds}), TensorBoard("runs/mine/tensorboard",
                         images={"gopro": val_ds}, batch_size=8),
                         BestModel("runs/mine/best.keras", "val_gopro_psnr", state=state),
                         checkpoint])

Paths may be local or on any filesystem TensorFlow has (``gs://...``,
``ram://...``): every file goes through ``tf.io.gfile``. Under a
multi-worker ``tf.distribute`` strategy only the chief writes files; the
other workers keep the same state (best value, step count) without writing.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping

import keras
import numpy as np
import tensorflow as tf

from tfdeblur import _validation as checks
from tfdeblur.inference import deblur_image
from tfdeblur.metrics import psnr, ssim
from tfdeblur.training.checkpoint import (
    CheckpointManager,
    TrainingState,
    is_remote,
    read_file,
    write_file_atomically,
)


def is_chief(model: keras.Model | tf.distribute.Strategy | None = None) -> bool:
    """Whether this process writes the run's files.

    True except on a multi-worker strategy's non-chief workers: TensorFlow's
    ``strategy.extended.should_checkpoint`` of the strategy ``model`` was
    built under (or of the strategy itself, or of the current scope).
    """
    if isinstance(model, tf.distribute.Strategy):
        strategy = model
    else:
        strategy = getattr(model, "distribute_strategy", None) or tf.distribute.get_strategy()
    return bool(getattr(strategy.extended, "should_checkpoint", True))


def save_model_atomically(model: keras.Model, path: str | os.PathLike) -> None:
    """``model.save(path)`` through a temporary ``.keras`` file and a rename (any filesystem)."""
    path = os.fspath(path)
    if is_remote(path):
        folder = tempfile.mkdtemp(prefix="tfdeblur-save-")
        try:
            local = os.path.join(folder, "model.keras")
            model.save(local)
            with open(local, "rb") as f:
                write_file_atomically(path, f.read())
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        return
    folder = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(folder, f".{os.path.basename(path)}.{os.getpid()}.{uuid.uuid4().hex}"
                               ".tmp.keras")
    try:
        model.save(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_json_atomically(path: str | os.PathLike, value) -> None:
    write_file_atomically(path, (json.dumps(value, indent=2, sort_keys=True) + "\n").encode())


def _predictor(model: keras.Model) -> Callable:
    """``model(x, training=False)`` as one cached ``tf.function`` (cross-replica under a
    strategy: each process runs its own copy of the whole batch)."""
    fn = getattr(model, "_tfdeblur_predict", None)
    if fn is None:
        fn = tf.function(lambda x: model(x, training=False), reduce_retracing=True)
        model._tfdeblur_predict = fn
    return fn


def _image(y, model: keras.Model) -> np.ndarray:
    if isinstance(y, (list, tuple, dict)):
        raise ValueError(f"model {model.name!r} has several outputs; validation needs the "
                         "image-to-image model (for SVDN, the model of "
                         "tfdeblur.models.build('svdn'), not its training model)")
    return np.clip(np.asarray(y, np.float32), 0.0, 1.0)


def evaluate_images(model: keras.Model | None, dataset, *,
                    self_ensemble: bool = False) -> dict[str, float]:
    """Mean PSNR / SSIM (data range 1, RGB, no crop) of ``model``'s output over a dataset.

    Args:
        model: the image-to-image network (one output), or None to measure
            the blurry input itself.
        dataset: batches ``(blurry, sharp)`` (extra elements ignored).
        self_ensemble: score ``deblur_image(model, image, self_ensemble=True)``
            of each image (the mean over its 8 orientations) instead.

    Returns:
        ``{"psnr": dB, "ssim": value, "images": count}`` (NaN means for an
        empty dataset).
    """
    values: dict[str, list] = {"psnr": [], "ssim": []}
    predict = None if model is None else _predictor(model)
    for batch in dataset:
        blurry, sharp = batch[0], batch[1]
        if model is None:
            out = np.clip(np.asarray(blurry, np.float32), 0.0, 1.0)
        elif self_ensemble:
            out = np.stack([deblur_image(model, x, self_ensemble=True)
                            for x in np.asarray(blurry, np.float32)])
        else:
            out = _image(predict(tf.convert_to_tensor(blurry, tf.float32)), model)
        sharp = np.asarray(sharp, np.float32)
        values["psnr"].append(np.asarray(psnr(sharp, out)).reshape(-1))
        values["ssim"].append(np.asarray(ssim(sharp, out)).reshape(-1))
    result: dict[str, float] = {}
    for k, v in values.items():
        v = np.concatenate(v) if v else np.zeros(0)
        result[k] = float(np.mean(v)) if v.size else float("nan")
    result["images"] = int(sum(len(v) for v in values["psnr"]))
    return result


class RunProgress(keras.callbacks.ProgbarLogger):
    """Keras's progress bar, numbering epochs out of the whole run across resumed ``fit`` calls."""

    def __init__(self, total_epochs: int):
        super().__init__()
        self.total_epochs = total_epochs

    def set_params(self, params):
        super().set_params(params)
        self.epochs = self.total_epochs


class Validation(keras.callbacks.Callback):
    """Adds ``val_<name>_psnr`` / ``val_<name>_ssim`` of every validation set to the epoch logs.

    The output is clipped to [0, 1] first, as for a saved image. Put it
    before the callbacks that read those keys (:class:`BestModel`,
    :class:`TensorBoard`, :class:`CSVLog`).

    Args:
        sets: name -> dataset of ``(blurry, sharp)`` batches (iterated anew
            every epoch).
        model: the image-to-image model to score; None scores the model
            being trained (give SVDN's inference model when training its
            two-output ``with_positions`` model).
    """

    def __init__(self, sets: Mapping[str, object], model: keras.Model | None = None):
        super().__init__()
        self.sets = dict(sets)
        self.scored = model

    def evaluate(self, model: keras.Model | None = None) -> dict[str, float]:
        logs = {}
        target = model or self.scored or self.model
        for name, ds in self.sets.items():
            r = evaluate_images(target, ds)
            logs[f"val_{name}_psnr"] = r["psnr"]
            logs[f"val_{name}_ssim"] = r["ssim"]
        return logs

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None and self.sets:
            logs.update(self.evaluate())


def current_learning_rate(model) -> float | None:
    """The optimizer's learning rate at its current step (schedules evaluated), or None."""
    try:
        lr = model.optimizer.learning_rate
        return float(lr.numpy() if hasattr(lr, "numpy") else lr)
    except (AttributeError, TypeError, ValueError):
        return None


def _scalar_metadata():
    from tensorflow.core.framework import summary_pb2

    return summary_pb2.SummaryMetadata(
        plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars"),
        data_class=summary_pb2.DATA_CLASS_SCALAR)


def _image_metadata(description: str = ""):
    from tensorflow.core.framework import summary_pb2

    return summary_pb2.SummaryMetadata(
        plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="images"),
        summary_description=description, data_class=summary_pb2.DATA_CLASS_BLOB_SEQUENCE)


class TensorBoard(keras.callbacks.Callback):
    """TensorBoard event files: every epoch log value, the learning rate, speed, image triplets.

    At each epoch end (a validation) it writes, at the global step:

    - ``train/<key>`` for every training log value (``loss`` and each loss
      term such as ``sharp_loss`` / ``positions_loss``, ``psnr``, ``ssim``)
      and ``validation/<key>`` for every ``val_*`` value (``gopro_psnr``),
      so put it after :class:`Validation`;
    - ``train/learning_rate`` (the schedule's value at that step);
    - ``speed/steps_per_second`` and ``speed/images_per_second`` over the
      epoch's training steps (the latter needs ``batch_size``);
    - ``validation/<name>/<i>``: ``blurry | output | sharp`` side by side, for
      the first ``max_images`` images of each set of ``images``.

    The events are written with TensorFlow's summary ops and the TensorBoard
    plugins' formats (``scalars``, ``images``), so writing needs no
    ``tensorboard`` package; view them with ``tensorboard --logdir DIR``.

    Args:
        log_dir: folder of the event files (local or a TensorFlow filesystem URL).
        images: name -> dataset of ``(blurry, sharp)`` batches whose first
            ``max_images`` images are shown (the same images every time), or None.
        max_images: images per set.
        batch_size: the global batch size, for images per second (None: not logged).
        model: the image-to-image model for the triplets (None: the model trained).
        step_offset: global step at the start of training (a resumed run); steps
            are counted from there. None: the optimizer's step count when ``fit`` starts.
    """

    def __init__(self, log_dir: str | os.PathLike, images: Mapping[str, object] | None = None,
                 max_images: int = 3, batch_size: int | None = None,
                 model: keras.Model | None = None, step_offset: int | None = None):
        super().__init__()
        checks.check_int(max_images, "max_images", minimum=0, owner="TensorBoard")
        self.log_dir = os.fspath(log_dir)
        self.max_images = max_images
        self.batch_size = batch_size
        self.scored = model
        self.step = None if step_offset is None else int(step_offset)
        self._images = self._fixed_images(images or {}) if max_images else {}
        self._writer = None
        self._epoch_start = None
        self._epoch_steps = 0

    def _fixed_images(self, sets) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        out = {}
        for name, ds in sets.items():
            blurry, sharp = [], []
            for batch in ds:
                blurry += list(np.asarray(batch[0], np.float32))
                sharp += list(np.asarray(batch[1], np.float32))
                if len(blurry) >= self.max_images:
                    break
            if blurry:
                out[name] = (blurry[: self.max_images], sharp[: self.max_images])
        return out

    @property
    def writer(self):
        if self._writer is None:
            self._writer = tf.summary.create_file_writer(self.log_dir) \
                if is_chief(self.model) else tf.summary.create_noop_writer()
        return self._writer

    def on_train_begin(self, logs=None):
        if self.step is None:
            try:
                self.step = int(self.model.optimizer.iterations.numpy())
            except (AttributeError, TypeError, ValueError):
                self.step = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start, self._epoch_steps = time.perf_counter(), 0

    def on_train_batch_end(self, batch, logs=None):
        self.step = (self.step or 0) + 1
        self._epoch_steps += 1

    def scalars(self, values: Mapping[str, float], step: int | None = None) -> None:
        """Writes ``tag -> value`` scalars at ``step`` (default: the global step)."""
        step = (self.step or 0) if step is None else step
        with self.writer.as_default():
            for tag, value in values.items():
                tf.summary.write(tag, tf.constant(float(value), tf.float32), step=step,
                                 metadata=_scalar_metadata())

    def write_images(self, model: keras.Model, step: int | None = None) -> None:
        """Writes the ``blurry | output | sharp`` triplets of ``model`` at ``step``."""
        step = (self.step or 0) if step is None else step
        predict = _predictor(model)
        with self.writer.as_default():
            for name, (blurry, sharp) in self._images.items():
                for i, (b, s) in enumerate(zip(blurry, sharp, strict=True)):
                    out = _image(predict(tf.convert_to_tensor(b[None])), model)[0]
                    h = min(b.shape[0], s.shape[0], out.shape[0])
                    triplet = np.concatenate([np.clip(b[:h], 0, 1), out[:h],
                                              np.clip(s[:h], 0, 1)], axis=1)
                    png = tf.image.encode_png(tf.cast(tf.round(triplet * 255), tf.uint8))
                    blob = tf.stack([tf.as_string(triplet.shape[1]),
                                     tf.as_string(triplet.shape[0]), png])
                    tf.summary.write(f"validation/{name}/{i}", blob, step=step,
                                     metadata=_image_metadata("blurry | output | sharp"))

    def on_epoch_end(self, epoch, logs=None):
        values = {}
        for key, value in (logs or {}).items():
            if not isinstance(value, (int, float, np.floating, np.integer)):
                continue
            tag = f"validation/{key[4:]}" if key.startswith("val_") else f"train/{key}"
            values[tag] = value
        lr = current_learning_rate(self.model)
        if lr is not None:
            values["train/learning_rate"] = lr
        if self._epoch_start is not None and self._epoch_steps:
            rate = self._epoch_steps / max(time.perf_counter() - self._epoch_start, 1e-9)
            values["speed/steps_per_second"] = rate
            if self.batch_size:
                values["speed/images_per_second"] = rate * self.batch_size
        self.scalars(values)
        if self._images:
            self.write_images(self.scored or self.model)
        self.writer.flush()

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.flush()


class BestModel(keras.callbacks.Callback):
    """Saves the model atomically when ``monitor`` improves, and records it in ``state``.

    Args:
        path: the ``.keras`` file (``<path minus .keras>.json`` records value and step).
        monitor: the log key (e.g. ``val_gopro_psnr``; put :class:`Validation` first).
        mode: ``"max"`` or ``"min"``.
        state: the run's shared :class:`TrainingState` (``best``, ``best_step``,
            ``step``); None keeps one of its own, counting steps itself.
        save: writes the model to a path; None saves ``model`` (or the model
            trained) with :func:`save_model_atomically`.
        model: the model to save when ``save`` is None (e.g. SVDN's inference model).
    """

    def __init__(self, path: str, monitor: str, mode: str = "max",
                 state: TrainingState | None = None,
                 save: Callable[[str], None] | None = None, model: keras.Model | None = None):
        super().__init__()
        if mode not in ("max", "min"):
            raise ValueError(f"BestModel: mode must be 'max' or 'min', got {mode!r}")
        self.path, self.monitor, self.mode = os.fspath(path), monitor, mode
        self._own_state = state is None
        self.state = TrainingState() if state is None else state
        self.save = save
        self.saved_model = model

    def on_train_batch_end(self, batch, logs=None):
        if self._own_state:
            self.state.step += 1

    def _better(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        if self.state.best is None:
            return True
        return value > self.state.best if self.mode == "max" else value < self.state.best

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None:
            return
        value = float(value)
        if self._better(value):
            if is_chief(self.model):
                if self.save is not None:
                    self.save(self.path)
                else:
                    save_model_atomically(self.saved_model or self.model, self.path)
            self.state.best, self.state.best_step = value, self.state.step
            if is_chief(self.model):
                write_json_atomically(os.path.splitext(self.path)[0] + ".json",
                                      {"monitor": self.monitor, "value": value,
                                       "step": self.state.step, "epoch": epoch + 1})


class CSVLog(keras.callbacks.Callback):
    """One CSV row per epoch: ``epoch``, ``step``, ``learning_rate``, every log value, ``time``.

    The file is rewritten atomically for each row (it is small), so a kill
    never leaves half a row; :meth:`truncate` drops rows beyond a restored
    step so the log always matches the weights. Only the chief writes.

    Args:
        path: the CSV file.
        state: the run's shared :class:`TrainingState` (its ``step``).
    """

    first_columns = ("epoch", "step", "learning_rate")

    def __init__(self, path: str, state: TrainingState):
        super().__init__()
        self.path, self.state = os.fspath(path), state

    def read(self) -> list[dict]:
        if not tf.io.gfile.exists(self.path):
            return []
        return list(csv.DictReader(io.StringIO(read_file(self.path).decode("utf-8"),
                                               newline="")))

    def _write(self, rows: list[dict]) -> None:
        if not is_chief(self.model):
            return
        keys: list[str] = []
        for row in rows:
            keys += [k for k in row if k not in keys and k not in self.first_columns
                     and k != "time"]
        # Training values first, then validation, whichever row introduced them.
        columns = [*self.first_columns, *[k for k in keys if not k.startswith("val_")],
                   *[k for k in keys if k.startswith("val_")], "time"]
        buf = io.StringIO()
        writer = csv.DictWriter(buf, columns, restval="", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        write_file_atomically(self.path, buf.getvalue().encode("utf-8"))

    def truncate(self, step: int) -> None:
        rows = self.read()
        kept = [r for r in rows if int(r["step"]) <= step]
        if len(kept) != len(rows):
            self._write(kept)

    def append(self, epoch: int, logs: Mapping) -> None:
        lr = current_learning_rate(self.model)
        row = {"epoch": epoch, "step": self.state.step,
               "learning_rate": "" if lr is None else f"{lr:.6g}"}
        for k, v in logs.items():
            row[k] = f"{float(v):.6g}" if isinstance(v, (int, float, np.floating)) else v
        row["time"] = time.strftime("%Y-%m-%d %H:%M:%S")
        self._write(self.read() + [row])

    def on_epoch_end(self, epoch, logs=None):
        self.append(epoch + 1, logs or {})


class ResumableCheckpoint(keras.callbacks.Callback):
    """Counts steps and writes checkpoints every ``every`` steps and at each epoch end.

    The epoch-end checkpoint is written after validation, the best model and
    the log row (this callback must come after those), so a run resumed
    from it repeats none of them. A step checkpoint is skipped at an epoch
    boundary (the epoch-end one follows). A non-finite loss stops training
    without a checkpoint, so the last good state stays the newest. Only the
    chief writes (every worker counts).

    When a run resumes mid-epoch, the epoch's metric states saved in the
    checkpoint are added back after the first step (Keras builds the
    compiled metrics in that step, after resetting them), so the epoch's log
    row covers the whole epoch. This relies on the states being sums (total
    and count), as they are for Keras's ``Mean`` trackers and tfdeblur's
    PSNR/SSIM; when the saved and current metric variables differ, the
    epoch's averages start afresh instead.

    In a user's own ``model.fit``: ``state = callback.restore(model)`` after
    ``compile`` loads the newest checkpoint (weights, optimizer, step) and
    ``fit(..., initial_epoch=state.epoch)`` continues; a checkpoint from the
    middle of an epoch then repeats that epoch's data from its start (the
    trainer instead skips exactly the batches already used).

    Args:
        manager: a :class:`CheckpointManager`, or its folder.
        state: the shared :class:`TrainingState` (its ``step`` is advanced
            here); None: a fresh one, or the restored one after :meth:`restore`.
        every: steps between step checkpoints.
        steps_per_epoch: epoch length, to recognise boundaries (None: the
            ``steps_per_epoch`` given to ``fit``).
        metric_values: variable path -> saved state of the epoch's metrics,
            added to the metrics after the first step, or None.
        keep: checkpoints kept when ``manager`` is a folder.
    """

    def __init__(self, manager: CheckpointManager | str | os.PathLike,
                 state: TrainingState | None = None, every: int = 500,
                 steps_per_epoch: int | None = None, metric_values: dict | None = None,
                 keep: int = 3):
        super().__init__()
        checks.check_int(every, "every", owner="ResumableCheckpoint")
        if not isinstance(manager, CheckpointManager):
            manager = CheckpointManager(manager, keep=keep)
        self.manager, self.every = manager, every
        self.state = TrainingState() if state is None else state
        self.steps_per_epoch = steps_per_epoch
        self.metric_values = metric_values
        self.diverged_at: int | None = None
        self.last_path: str | None = None
        self.iterations_seen: int | None = None

    def restore(self, model: keras.Model) -> TrainingState:
        """Loads the newest usable checkpoint into ``model`` (compiled; the optimizer is
        built here) and returns the state to continue from (a fresh one without any)."""
        if model.optimizer is None:
            raise ValueError("ResumableCheckpoint.restore: compile the model first")
        model.optimizer.build(model.trainable_variables)
        restored = self.manager.restore(model)
        if restored is not None:
            state, _ = restored
            self.state.__dict__.update(vars(state))
            if self.steps_per_epoch and state.step % self.steps_per_epoch:
                self.metric_values = state.metric_values
        return self.state

    def _merge_metric_values(self) -> None:
        variables = {v.path: v for v in self.model.metrics_variables}
        if set(variables) == set(self.metric_values):
            for path, value in self.metric_values.items():
                variables[path].assign_add(value)
        self.metric_values = None

    def _iterations(self) -> int | None:
        try:
            return int(self.model.optimizer.iterations.numpy())
        except (AttributeError, TypeError, ValueError):
            return None

    def on_train_begin(self, logs=None):
        if self.steps_per_epoch is None:
            self.steps_per_epoch = int(self.params.get("steps") or 0) or None
        self.iterations_seen = self._iterations()

    def on_train_batch_end(self, batch, logs=None):
        if self.metric_values:
            self._merge_metric_values()
        self.state.step += 1
        self.iterations_seen = self._iterations()
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self.diverged_at = self.state.step
            self.model.stop_training = True
            return
        at_boundary = bool(self.steps_per_epoch) and self.state.step % self.steps_per_epoch == 0
        if self.state.step % self.every == 0 and not at_boundary:
            self.save()

    def on_epoch_end(self, epoch, logs=None):
        if self.diverged_at is not None:
            return
        self.state.epoch = epoch + 1
        self.save()

    def step_reached(self) -> int:
        """The step reached, counting one the optimizer made before this callback saw it
        (an interrupt between the two)."""
        now = self._iterations()
        if now is None or self.iterations_seen is None:
            return self.state.step
        return self.state.step + max(0, now - self.iterations_seen)

    def save(self) -> str | None:
        if not is_chief(self.model):
            return None
        self.last_path = self.manager.save(self.model, self.state)
        return self.last_path

