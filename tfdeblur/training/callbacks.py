"""Keras callbacks of a resumable training run: validation, best model, CSV log, checkpoints."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import time
import uuid
from collections.abc import Callable, Mapping

import keras
import numpy as np

from tfdeblur.data.io import atomic_write_bytes
from tfdeblur.metrics import psnr, ssim
from tfdeblur.training.checkpoint import CheckpointManager, TrainingState


def save_model_atomically(model: keras.Model, path: str | os.PathLike) -> None:
    """``model.save(path)`` through a temporary ``.keras`` file and a rename."""
    path = os.fspath(path)
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
    atomic_write_bytes(path, (json.dumps(value, indent=2, sort_keys=True) + "\n").encode())


def _first_output(y):
    # SVDN trained with flow guidance returns (image, positions).
    return y[0] if isinstance(y, (list, tuple)) else y


def evaluate_images(model: keras.Model | None, dataset) -> dict[str, float]:
    """Mean PSNR / SSIM (data range 1, RGB, no crop) of ``model``'s output over a dataset.

    Args:
        model: the network, or None to measure the blurry input itself.
        dataset: batches ``(blurry, sharp)`` (extra elements ignored).

    Returns:
        ``{"psnr": dB, "ssim": value, "images": count}`` (NaN means for an
        empty dataset).
    """
    values: dict[str, list] = {"psnr": [], "ssim": []}
    for batch in dataset:
        blurry, sharp = batch[0], batch[1]
        out = blurry if model is None else _first_output(model.predict_on_batch(blurry))
        out = np.clip(np.asarray(out, np.float32), 0.0, 1.0)
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

    The output is clipped to [0, 1] first, as for a saved image.

    Args:
        sets: name -> dataset of ``(blurry, sharp)`` batches (iterated anew
            every epoch).
    """

    def __init__(self, sets: Mapping[str, object]):
        super().__init__()
        self.sets = dict(sets)

    def evaluate(self, model: keras.Model | None = None) -> dict[str, float]:
        logs = {}
        target = self.model if model is None else model
        for name, ds in self.sets.items():
            r = evaluate_images(target, ds)
            logs[f"val_{name}_psnr"] = r["psnr"]
            logs[f"val_{name}_ssim"] = r["ssim"]
        return logs

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None and self.sets:
            logs.update(self.evaluate())


class BestModel(keras.callbacks.Callback):
    """Saves ``save(path)`` atomically when ``monitor`` improves, and records it in ``state``.

    Args:
        path: the ``.keras`` file.
        monitor: the log key (e.g. ``val_gopro_psnr``).
        mode: ``"max"`` or ``"min"``.
        state: the run's shared :class:`TrainingState` (``best``, ``best_step``).
        save: writes the model to a path (the trainer saves an inference copy).
    """

    def __init__(self, path: str, monitor: str, mode: str, state: TrainingState,
                 save: Callable[[str], None]):
        super().__init__()
        self.path, self.monitor, self.mode, self.state, self.save = path, monitor, mode, state, save

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
            self.save(self.path)
            self.state.best, self.state.best_step = value, self.state.step
            write_json_atomically(os.path.splitext(self.path)[0] + ".json",
                                  {"monitor": self.monitor, "value": value,
                                   "step": self.state.step, "epoch": epoch + 1})


class CSVLog(keras.callbacks.Callback):
    """One CSV row per epoch: ``epoch``, ``step``, ``learning_rate``, every log value, ``time``.

    The file is rewritten atomically for each row (it is small), so a kill
    never leaves half a row; :meth:`truncate` drops rows beyond a restored
    step so the log always matches the weights.

    Args:
        path: the CSV file.
        state: the run's shared :class:`TrainingState`.
    """

    first_columns = ("epoch", "step", "learning_rate")

    def __init__(self, path: str, state: TrainingState):
        super().__init__()
        self.path, self.state = path, state

    def read(self) -> list[dict]:
        if not os.path.exists(self.path):
            return []
        with open(self.path, newline="", encoding="utf-8") as f:
            return list(csv.DictReader(f))

    def _write(self, rows: list[dict]) -> None:
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
        atomic_write_bytes(self.path, buf.getvalue().encode("utf-8"))

    def truncate(self, step: int) -> None:
        rows = self.read()
        kept = [r for r in rows if int(r["step"]) <= step]
        if len(kept) != len(rows):
            self._write(kept)

    def append(self, epoch: int, logs: Mapping) -> None:
        row = {"epoch": epoch, "step": self.state.step,
               "learning_rate": _current_learning_rate(self.model)}
        for k, v in logs.items():
            row[k] = f"{float(v):.6g}" if isinstance(v, (int, float, np.floating)) else v
        row["time"] = time.strftime("%Y-%m-%d %H:%M:%S")
        self._write(self.read() + [row])

    def on_epoch_end(self, epoch, logs=None):
        self.append(epoch + 1, logs or {})


def _current_learning_rate(model) -> str:
    try:
        lr = model.optimizer.learning_rate
        return f"{float(lr.numpy() if hasattr(lr, 'numpy') else lr):.6g}"
    except (AttributeError, TypeError, ValueError):
        return ""


class ResumableCheckpoint(keras.callbacks.Callback):
    """Counts steps and writes checkpoints every ``every`` steps and at each epoch end.

    The epoch-end checkpoint is written after validation, the best model and
    the log row (this callback must come after those), so a run resumed
    from it repeats none of them. A step checkpoint is skipped at an epoch
    boundary (the epoch-end one follows). A non-finite loss stops training
    without a checkpoint, so the last good state stays the newest.

    When a run resumes mid-epoch, the epoch's metric states saved in the
    checkpoint are added back after the first step (Keras builds the
    compiled metrics in that step, after resetting them), so the epoch's log
    row covers the whole epoch. This relies on the states being sums (total
    and count), as they are for Keras's ``Mean`` trackers and tfdeblur's
    PSNR/SSIM; when the saved and current metric variables differ, the
    epoch's averages start afresh instead.

    Args:
        manager: the run's :class:`CheckpointManager`.
        state: the run's shared :class:`TrainingState` (its ``step`` is
            advanced here).
        every: steps between step checkpoints.
        steps_per_epoch: epoch length, to recognise boundaries.
        metric_values: variable path -> saved state of the epoch's metrics,
            added to the metrics after the first step, or None.
    """

    def __init__(self, manager: CheckpointManager, state: TrainingState, every: int,
                 steps_per_epoch: int, metric_values: dict | None = None):
        super().__init__()
        self.manager, self.state, self.every = manager, state, every
        self.steps_per_epoch = steps_per_epoch
        self.metric_values = metric_values
        self.diverged_at: int | None = None
        self.last_path: str | None = None

    def _merge_metric_values(self) -> None:
        variables = {v.path: v for v in self.model.metrics_variables}
        if set(variables) == set(self.metric_values):
            for path, value in self.metric_values.items():
                variables[path].assign_add(value)
        self.metric_values = None

    def on_train_batch_end(self, batch, logs=None):
        if self.metric_values:
            self._merge_metric_values()
        self.state.step += 1
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self.diverged_at = self.state.step
            self.model.stop_training = True
            return
        if self.state.step % self.every == 0 and self.state.step % self.steps_per_epoch != 0:
            self.save()

    def on_epoch_end(self, epoch, logs=None):
        if self.diverged_at is not None:
            return
        self.state.epoch = epoch + 1
        self.save()

    def save(self) -> str:
        self.last_path = self.manager.save(self.model, self.state)
        return self.last_path
