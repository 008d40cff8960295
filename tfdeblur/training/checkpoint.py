"""Training checkpoints: the whole training state in one file, written atomically, last K kept.

A checkpoint ``ckpt-<step>.npz`` (step zero-padded to 9 digits) holds every
model variable (trainable or not), every optimizer variable (iteration
count, Adam's moments, ...), the running values of the compiled metrics and a
JSON record (``__meta__``): the global step, epoch, step within the epoch,
the best monitored value so far, and the variable paths and shapes. It is
written to a temporary file in the same folder, flushed to disk and renamed
into place, so a reader sees the previous set of checkpoints or the new
complete file, never a partial one, whenever the process is killed. Loading
verifies the zip's CRC-32 of every member before using any of it, and
:meth:`CheckpointManager.restore` falls back to the next older checkpoint
when the newest is damaged.

Every read and write goes through ``tf.io.gfile``, so a checkpoint folder
may be on any filesystem TensorFlow has (``gs://``, ``s3://`` with
tensorflow-io, ``ram://``); on a local disk the write is also flushed and
the folder entry synced. Under a ``tf.distribute`` strategy the variables
are read in the cross-replica context (their one synchronised value) and
assigned to every replica on restore, so a checkpoint does not depend on the
strategy or the number of devices it was written with.

Why this format and not ``tf.train.CheckpointManager``: the ``.npz`` file
gives the same guarantees that manager gives (strategies, gfile, newest K
kept) in one self-describing, atomically renamed file whose every member is
CRC-checked before any is used, and it is readable with NumPy alone. What
``tf.train.Checkpoint`` adds, the ``tf.data`` iterator state, is not needed:
the training stream is a pure function of the seed and the step (a resumed
run skips the batches already used), which stays exact with any number of
workers, where a saved iterator state is tied to one sharding. The long
runs' checkpoints stay readable as they are. Why not
``keras.callbacks.BackupAndRestore`` (Keras 3.15): it writes
``latest.weights.h5`` in place and its metadata in a second file (a kill in
between leaves weights and epoch disagreeing), and although it records the
batch of a mid-epoch save it restores only the epoch, restarting that epoch's
data from its first batch with mid-epoch weights.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import time
import warnings
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field

import keras
import numpy as np
import tensorflow as tf

from tfdeblur import _atomic
from tfdeblur import _validation as checks

FORMAT_VERSION = 1
_NAME = re.compile(r"^ckpt-(\d{9})\.npz$")
_META = "__meta__"


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: damaged, or written for another model."""


@dataclass
class TrainingState:
    """Where training stands: what a checkpoint records besides the variables.

    Attributes:
        step: optimizer steps done (the global step).
        epoch: epochs completed (validated and logged).
        best: best monitored validation value so far, or None.
        best_step: the step of ``best``.
        extra: free-form JSON-able record (e.g. the config's name).
        metric_values: running metric values read from a checkpoint (not
            written: a checkpoint takes them from the model).
    """

    step: int = 0
    epoch: int = 0
    best: float | None = None
    best_step: int | None = None
    extra: dict = field(default_factory=dict)
    metric_values: dict | None = field(default=None, repr=False)


def _variables(model: keras.Model) -> dict[str, list]:
    optimizer = model.optimizer
    strategy = getattr(model, "distribute_strategy", None) or tf.distribute.get_strategy()
    # The metrics' running states are kept on one replica only: under several replicas
    # they are sync-on-read variables whose read is a collective all workers must join
    # (only the chief writes), so a mid-epoch resume there restarts the epoch's averages.
    single = strategy.num_replicas_in_sync == 1
    return {
        "model": list(model.variables),
        "optimizer": list(optimizer.variables) if optimizer is not None else [],
        "metrics": list(model.metrics_variables) if single else [],
    }


def _describe(v) -> dict:
    return {"path": v.path, "shape": list(v.shape), "dtype": str(v.dtype)}


# --------------------------------------------------------------------------- files (tf.io.gfile)


def is_remote(path: str) -> bool:
    """Whether ``path`` is a URL of a TensorFlow filesystem (``gs://``, ``ram://``, ...)."""
    return _atomic.is_url(path)


def write_file_atomically(path: str | os.PathLike, data: bytes) -> None:
    """Writes ``data`` to ``path`` (local or a TensorFlow filesystem URL) through a rename.

    :func:`tfdeblur._atomic.write_file`: a hidden ``.{name}.{pid}.{random}.tmp``
    in the same folder, flushed, renamed into place (the local folder synced;
    elsewhere ``tf.io.gfile.rename``, atomic where the filesystem makes it so).
    """
    _atomic.write_file(os.fspath(path), data)


def read_file(path: str | os.PathLike) -> bytes:
    with tf.io.gfile.GFile(os.fspath(path), "rb") as f:
        return f.read()


def _remove(path: str) -> None:
    with contextlib.suppress(Exception):
        tf.io.gfile.remove(path)


def checkpoint_path(directory: str, step: int) -> str:
    return os.path.join(directory, f"ckpt-{step:09d}.npz")


def write_checkpoint(path: str, model: keras.Model, state: TrainingState) -> None:
    """Writes ``model``'s variables, its optimizer's and metrics' and ``state`` to ``path``.

    The optimizer must be built (it is after the first step, or by
    ``optimizer.build(model.trainable_variables)``).
    """
    groups = _variables(model)
    arrays: dict[str, np.ndarray] = {}
    described: dict[str, list] = {}
    for group, variables in groups.items():
        described[group] = []
        for i, v in enumerate(variables):
            arrays[f"{group}/{i:06d}"] = np.asarray(v.numpy())
            described[group].append(_describe(v))
    meta = {"format": FORMAT_VERSION, "step": int(state.step), "epoch": int(state.epoch),
            "best": state.best, "best_step": state.best_step, "extra": state.extra,
            "time": time.time(), "variables": described}
    arrays[_META] = np.frombuffer(json.dumps(meta).encode("utf-8"), np.uint8)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    write_file_atomically(path, buf.getvalue())


def read_checkpoint(path: str) -> tuple[dict, dict[str, list[np.ndarray]]]:
    """(meta, {"model" | "optimizer" | "metrics": [arrays]}) of a checkpoint file.

    Raises:
        CheckpointError: naming the file when it is truncated, fails its
            CRC check or lacks a member.
    """
    try:
        try:
            content = io.BytesIO(read_file(path))
        except tf.errors.OpError as e:
            raise OSError(e.message) from None
        with zipfile.ZipFile(content) as z:
            bad = z.testzip()
            if bad is not None:
                raise CheckpointError(f"checkpoint {path} is damaged: member {bad} fails its "
                                      "CRC check")
        content.seek(0)
        with np.load(content, allow_pickle=False) as data:
            meta = json.loads(bytes(data[_META]).decode("utf-8"))
            if meta.get("format") != FORMAT_VERSION:
                raise CheckpointError(f"checkpoint {path} has format {meta.get('format')!r}, "
                                      f"this version reads {FORMAT_VERSION}")
            groups = {}
            for group, described in meta["variables"].items():
                groups[group] = [data[f"{group}/{i:06d}"] for i in range(len(described))]
    except CheckpointError:
        raise
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile,
            json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"checkpoint {path} is damaged or incomplete: "
                              f"{type(e).__name__}: {e}") from None
    return meta, groups


def _check_match(path: str, group: str, described: list[dict], variables: list) -> None:
    if len(described) != len(variables):
        raise CheckpointError(
            f"checkpoint {path} holds {len(described)} {group} variables but this "
            f"{group} has {len(variables)}: it was written for another configuration")
    def key(p: str) -> str:
        # An optimizer's variables carry its name, which Keras makes unique per process
        # ("adam", "adam_1", ...): the same optimizer built again may differ in it.
        return p.split("/", 1)[-1] if group == "optimizer" else p

    for d, v in zip(described, variables, strict=True):
        if tuple(d["shape"]) != tuple(v.shape) or key(d["path"]) != key(v.path):
            raise CheckpointError(
                f"checkpoint {path}: {group} variable {d['path']} {tuple(d['shape'])} does not "
                f"match {v.path} {tuple(v.shape)}: it was written for another configuration")


def _is_learning_rate(path: str) -> bool:
    return path.split("/", 1)[-1] == "learning_rate"


def load_checkpoint(path: str, model: keras.Model) -> TrainingState:
    """Assigns a checkpoint's model and optimizer variables to ``model``.

    The optimizer must be built. Nothing is assigned unless the whole file
    reads back and every variable matches in path and shape. The metrics'
    running values come back in ``state.metric_values`` (variable path ->
    value): Keras resets metrics at every epoch start, so they are assigned
    then (see :class:`~tfdeblur.training.callbacks.ResumableCheckpoint`).

    Raises:
        CheckpointError: damaged file, or a checkpoint of another model.
    """
    meta, groups = read_checkpoint(path)
    targets = _variables(model)
    described = dict(meta["variables"])
    # A constant learning rate is an optimizer variable, a schedule is not: the rate is the
    # configuration's (a resumed run may switch between them, see the trainer), not state.
    keep = [i for i, d in enumerate(described.get("optimizer", []))
            if not _is_learning_rate(d["path"])]
    described["optimizer"] = [described["optimizer"][i] for i in keep]
    groups["optimizer"] = [groups["optimizer"][i] for i in keep]
    targets["optimizer"] = [v for v in targets["optimizer"] if not _is_learning_rate(v.path)]
    for group in ("model", "optimizer"):
        _check_match(path, group, described.get(group, []), targets[group])
    for group in ("model", "optimizer"):
        for v, value in zip(targets[group], groups[group], strict=True):
            v.assign(value)
    metric_values = {d["path"]: value for d, value in
                     zip(meta["variables"].get("metrics", []), groups.get("metrics", []),
                         strict=True)}
    return TrainingState(step=meta["step"], epoch=meta["epoch"], best=meta.get("best"),
                         best_step=meta.get("best_step"), extra=meta.get("extra") or {},
                         metric_values=metric_values)


def load_weights(model: keras.Model, path: str | os.PathLike) -> dict:
    """Loads only the model weights of a training checkpoint into ``model`` (e.g. for inference).

    Returns the checkpoint's meta record.
    """
    path = os.fspath(path)
    meta, groups = read_checkpoint(path)
    _check_match(path, "model", meta["variables"]["model"], list(model.variables))
    for v, value in zip(model.variables, groups["model"], strict=True):
        v.assign(value)
    return meta


class CheckpointManager:
    """The checkpoints of one run folder: numbered files, the newest ``keep`` kept.

    Args:
        directory: the folder (created when missing).
        keep: how many of the newest checkpoints to keep, >= 1.

    Example:
        >>> manager = CheckpointManager("runs/lmfn/checkpoints", keep=3)
        >>> manager.save(model, TrainingState(step=500, epoch=0))
        >>> state = manager.restore(model)     # None when there is none
    """

    def __init__(self, directory: str | os.PathLike, keep: int = 3, *, create: bool = True):
        self.keep = checks.check_int(keep, "keep", owner="CheckpointManager")
        self.directory = os.fspath(directory)
        if create:
            tf.io.gfile.makedirs(self.directory)

    def checkpoints(self) -> list[tuple[int, str]]:
        """(step, path) of the checkpoint files, newest first (temporary files excluded)."""
        return list_checkpoints(self.directory)

    def remove_temporary_files(self) -> list[str]:
        """Deletes leftovers of writes cut short (a killed run); call only while no run writes."""
        removed = []
        if not tf.io.gfile.isdir(self.directory):
            return removed
        for name in tf.io.gfile.listdir(self.directory):
            name = name.rstrip("/")
            if name.startswith(".ckpt-") and name.endswith(".tmp"):
                _remove(os.path.join(self.directory, name))
                removed.append(name)
        return removed

    def save(self, model: keras.Model, state: TrainingState) -> str:
        """Writes the checkpoint of ``state.step`` and deletes those beyond the newest ``keep``."""
        path = checkpoint_path(self.directory, state.step)
        write_checkpoint(path, model, state)
        for _, old in self.checkpoints()[self.keep:]:
            _remove(old)
        return path

    def restore(self, model: keras.Model, *, max_step: int | None = None,
                quarantine: bool = False) -> tuple[TrainingState, str] | None:
        """Loads the newest usable checkpoint; damaged ones are skipped with a warning.

        Args:
            model: compiled model with a built optimizer.
            max_step: ignore checkpoints beyond this step.
            quarantine: rename a damaged file to ``<name>.damaged`` (kept for
                inspection, no longer counted among the checkpoints).

        Returns:
            ``(state, path)``, or None when there is no usable checkpoint.

        Raises:
            CheckpointError: when a readable checkpoint does not match the
                model (another configuration): falling back would not help.
        """
        skipped: list[str] = []
        for step, path in self.checkpoints():
            if max_step is not None and step > max_step:
                continue
            try:
                meta, _ = read_checkpoint(path)
                if meta.get("step") != step:
                    raise CheckpointError(f"checkpoint {path} records step {meta.get('step')}, "
                                          f"not {step}")
            except CheckpointError as e:
                warnings.warn(f"{e}; trying the previous checkpoint", stacklevel=2)
                skipped.append(path)
                if quarantine:
                    with contextlib.suppress(Exception):
                        tf.io.gfile.rename(path, path + ".damaged", overwrite=True)
                continue
            return load_checkpoint(path, model), path
        if skipped:
            warnings.warn(f"no usable checkpoint in {self.directory} ({len(skipped)} damaged); "
                          "starting from scratch", stacklevel=2)
        return None


def list_checkpoints(directory: str | os.PathLike) -> list[tuple[int, str]]:
    """(step, path) of the checkpoint files of a folder, newest first; [] without the folder."""
    directory = os.fspath(directory)
    if not tf.io.gfile.isdir(directory):
        return []
    out = []
    for name in tf.io.gfile.listdir(directory):
        m = _NAME.match(name.rstrip("/"))
        if m:
            out.append((int(m.group(1)), os.path.join(directory, name)))
    return sorted(out, reverse=True)


__all__: Sequence[str] = ["CheckpointError", "CheckpointManager", "TrainingState",
                          "is_remote", "list_checkpoints", "load_checkpoint", "load_weights",
                          "read_checkpoint", "read_file", "write_checkpoint",
                          "write_file_atomically"]
