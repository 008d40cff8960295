"""Exports for serving: SavedModel for TF Serving and TFLite for phones, stock ops only.

TF Serving and the TFLite runtime ship no tfdeblur kernels, so an export must
not contain the compiled ``TfDeblur>...`` ops. Both exporters rebuild the
network from its Keras config with ``implementation="portable"`` (the pure
TensorFlow twins of the ops), copy the weights, check that the copy gives the
original's output, write the export next to its destination and move it into
place only after it has been verified:

- :func:`export_saved_model`: a SavedModel with one signature,
  ``serving_default``: input ``blurry`` float32 ``[N, H, W, C]`` (any batch,
  any size from the model's minimum unless ``input_shape`` fixes it), output
  ``sharp`` of the same shape. Verified by scanning every op of the graph
  for ``TfDeblur>`` ops and by loading it in a fresh Python process that
  never imports tfdeblur (``TFDEBLUR_DISABLE_COMPILED=1``) and comparing
  what its signature returns with the Keras model. Inspect it with
  ``saved_model_cli show --dir PATH --all``.
- :func:`convert_tflite`: a ``.tflite`` flatbuffer for one fixed size
  ``[1, H, W, C]`` (TFLite handles dynamic sizes poorly, and static shapes
  let the portable spatial RNN unroll its scan), TFLite builtin ops only,
  optionally with dynamic-range or float16 weight quantization. Verified by
  running it in ``tf.lite.Interpreter`` against the Keras model.

A model built with ``return_positions=True`` (SVDN training) is exported with
its image output only. Verification failures raise :class:`ExportError` and
leave nothing at the destination.

Everything an export writes before it is published (the export, the TFLite
converter's intermediate SavedModel, the verifier's arrays) lives in one hidden
folder next to the destination, marked with the exporting process's id; the
verifier process exits with the exporting one. An export that is killed
leaves that folder behind, and the next export into the same parent folder
removes it once the process that made it no longer runs.

``overwrite=True`` replaces only an export of the same kind (see
:func:`check_destination`): a SavedModel folder (or an empty folder) or a
TFLite flatbuffer, never the source model, a folder containing it, the
current working folder or one of its parents, or a symbolic link to
something outside its own folder.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf

__all__ = [
    "CUSTOM_OP_PREFIX",
    "DESTINATION_KINDS",
    "INPUT_NAME",
    "OUTPUT_NAME",
    "QUANTIZATIONS",
    "SIGNATURE_KEY",
    "ExportError",
    "check_destination",
    "convert_tflite",
    "export_saved_model",
    "portable_model",
    "saved_model_op_types",
]

log = logging.getLogger(__name__)

#: Signature of exported SavedModels (TF Serving's default) and TFLite files.
SIGNATURE_KEY = "serving_default"
#: Name of the signature's input, float32 ``[N, H, W, C]`` in [0, 1].
INPUT_NAME = "blurry"
#: Name of the signature's output, float32 ``[N, H, W, C]`` (not clipped).
OUTPUT_NAME = "sharp"
#: Op type prefix of the compiled ops; none may appear in an export.
CUSTOM_OP_PREFIX = "TfDeblur>"
#: Accepted ``quantize`` values of :func:`convert_tflite`.
QUANTIZATIONS = (None, "dynamic", "float16")

# Largest accepted |export - keras| relative to max(1, max |keras output|).
# float32 exports run the same portable ops as the Keras copy (other fusion
# and summation orders only: 2e-7 to 4e-7 measured). float16 weights round to
# 11 significant bits (1.7e-4 measured on the paper-size LMFN and SVRNN);
# dynamic-range quantization stores int8 weights and quantizes activations on
# the fly (7.7e-3 measured). The margins leave room for trained weights.
_TOLERANCES = {None: 1e-4, "float16": 1e-2, "dynamic": 5e-2}
# Tolerance between the compiled network and its portable rebuild.
_PORTABLE_TOLERANCE = 1e-4
_SUBPROCESS_TIMEOUT_S = 600


class ExportError(RuntimeError):
    """An export could not be produced or failed its verification (nothing was written)."""


# --------------------------------------------------------------------------- model


def _load_keras(model) -> keras.Model:
    if isinstance(model, keras.Model):
        return model
    if isinstance(model, (str, os.PathLike)):
        from tfdeblur.inference import load_model

        return load_model(model)
    raise ValueError(f"model must be a keras.Model or the path of a .keras file, "
                     f"got {type(model).__name__}")


def _pad_layer(model: keras.Model):
    from tfdeblur.models._padding import PadToMultiple

    for layer in _all_layers(model):
        if isinstance(layer, PadToMultiple):
            return layer
    return None


def _all_layers(model) -> list:
    out = []
    for layer in getattr(model, "layers", []):
        out.append(layer)
        out.extend(_all_layers(layer))
    return out


def _size_limits(model: keras.Model) -> tuple[int, int]:
    """``(multiple, min_size)`` of the model's padding layer, ``(1, 1)`` without one."""
    pad = _pad_layer(model)
    return (pad.multiple, pad.min_size) if pad is not None else (1, 1)


def _channels(model: keras.Model) -> int:
    shape = model.inputs[0].shape if getattr(model, "inputs", None) else None
    if shape is None or len(shape) != 4 or shape[-1] is None:
        raise ValueError(f"model {model.name!r} must take one image input [N, H, W, C] with a "
                         f"known channel count, got input shape {shape}")
    return int(shape[-1])


def _check_input_shape(input_shape, model: keras.Model) -> tuple:
    channels = _channels(model)
    _, min_size = _size_limits(model)
    try:
        shape = tuple(input_shape)
    except TypeError:
        shape = None
    if shape is None or len(shape) != 3 or not all(
            d is None or (isinstance(d, (int, np.integer)) and not isinstance(d, bool))
            for d in shape):
        raise ValueError(f"input_shape must be (H, W, C) with ints or None, got {input_shape!r}")
    h, w, c = (None if d is None else int(d) for d in shape)
    if c is not None and c != channels:
        raise ValueError(f"input_shape must have the model's {channels} channels, "
                         f"got {input_shape!r}")
    for side, n in (("height", h), ("width", w)):
        if n is not None and n < min_size:
            raise ValueError(f"input_shape {side} must be None or at least the model's minimum "
                             f"of {min_size} pixels, got {input_shape!r}")
    return h, w, channels


def _check_input_size(input_size, model: keras.Model) -> tuple[int, int]:
    size = _check_static_size(input_size)
    _, min_size = _size_limits(model)
    if min(size) < min_size:
        raise ValueError(f"input_size must be at least the model's minimum of {min_size} "
                         f"pixels per side, got {input_size!r}")
    return size


def _with_portable_ops(config, changed: list):
    """A copy of a Keras config with every compiled-op ``implementation`` set to portable."""
    if isinstance(config, dict):
        out = {}
        for key, value in config.items():
            # Only tfdeblur's string values: Keras's own LSTM/GRU use an int
            # ``implementation``.
            if key == "implementation" and value in ("auto", "compiled"):
                changed.append(value)
                value = "portable"
            out[key] = _with_portable_ops(value, changed)
        return out
    if isinstance(config, (list, tuple)):
        return type(config)(_with_portable_ops(v, changed) for v in config)
    return config


def _set_input_shape(config: dict, batch_shape: tuple) -> None:
    inputs = [layer for layer in config.get("layers", [])
              if layer.get("class_name") == "InputLayer"]
    if len(inputs) != 1:
        raise ValueError(f"model must have exactly one input layer, found {len(inputs)}")
    inputs[0]["config"]["batch_shape"] = tuple(batch_shape)


def portable_model(model: keras.Model, input_shape: Sequence | None = None) -> keras.Model:
    """The same network built from stock TensorFlow ops only, with the same weights.

    Rebuilds a functional model (every :func:`tfdeblur.models.build` network,
    and models loaded from ``.keras`` files) from its config with each
    ``implementation`` set to ``"portable"`` and copies the weights. The
    model itself is returned when it already uses no compiled op and no new
    ``input_shape`` is asked for.

    Args:
        model: a functional ``keras.Model`` with one image input.
        input_shape: ``(H, W, C)`` to build the copy for (None sides: any
            size); None keeps the model's input shape.

    Returns:
        A ``keras.Model`` of the model's class whose outputs equal the
        model's within float32 round-off.

    Raises:
        ValueError: a model that cannot be rebuilt from its config (e.g. a
            subclassed model running a compiled op), or a bad ``input_shape``.

    Example:
        >>> model = tfdeblur.models.build("svrnn", width=4, weight_width=2, num_rnns=2)
        >>> portable = portable_model(model)        # no TfDeblur> op in its graph
    """
    import tfdeblur.layers  # noqa: F401 - registers the layers for from_config
    import tfdeblur.models  # noqa: F401

    try:
        config = model.get_config()
    except NotImplementedError:
        config = None
    functional = isinstance(config, dict) and "layers" in config
    changed: list = []
    if functional:
        config = _with_portable_ops(config, changed)
    else:
        _with_portable_ops(_layer_configs(model), changed)
    new_shape = None
    if input_shape is not None:
        h, w, c = _check_input_shape(input_shape, model)
        new_shape = (None, h, w, c)
        if tuple(model.inputs[0].shape) == new_shape:
            new_shape = None
    if not changed and new_shape is None:
        return model
    if not functional:
        raise ValueError(f"model {model.name!r} ({type(model).__name__}) is not a functional "
                         "model, so it cannot be rebuilt with implementation='portable'; build "
                         "it with implementation='portable' instead")
    if new_shape is not None:
        _set_input_shape(config, new_shape)
    try:
        copy = type(model).from_config(config)
    except Exception as e:  # noqa: BLE001 - Keras raises many types for bad configs
        raise ValueError(f"model {model.name!r} could not be rebuilt from its config: {e}") from e
    src, dst = model.weights, copy.weights
    if [tuple(v.shape) for v in src] != [tuple(v.shape) for v in dst]:
        raise ValueError(f"model {model.name!r}: the rebuilt network's weights do not match the "
                         f"original's ({len(dst)} vs {len(src)} variables)")
    copy.set_weights(model.get_weights())
    return copy


def _layer_configs(model: keras.Model) -> list:
    configs = []
    for layer in _all_layers(model):
        try:
            configs.append(layer.get_config())
        except NotImplementedError:
            pass
    return configs


def _image_output(model: keras.Model, x, **kwargs):
    y = model(x, training=False, **kwargs)
    # SVDN built with return_positions=True returns [image, positions].
    return y[0] if isinstance(y, (list, tuple)) else y


def _probe_images(n: int, h: int, w: int, c: int, seed: int = 0) -> np.ndarray:
    """Deterministic test images in [0, 1]: structure at several scales plus noise."""
    rng = np.random.default_rng(seed)
    out = np.zeros((n, h, w, c))
    for cell in (1, 3, 7):
        coarse = rng.random((n, -(-h // cell), -(-w // cell), c))
        out += np.repeat(np.repeat(coarse, cell, axis=1), cell, axis=2)[:, :h, :w]
    return (out / 3.0).astype("float32")


def _probe_size(model: keras.Model, h: int | None, w: int | None) -> tuple[int, int]:
    # Not a multiple of the padding multiple, so the pad/crop path is exercised.
    _, min_size = _size_limits(model)
    base = max(min_size, 16) + 3
    return (h if h is not None else base, w if w is not None else base + 2)


def _check_close(got: np.ndarray, want: np.ndarray, tolerance: float, what: str) -> float:
    """Max |got - want| relative to max(1, max |want|); ExportError above ``tolerance``."""
    if got.shape != want.shape:
        raise ExportError(f"{what}: output shape {got.shape}, expected {want.shape}")
    if not np.isfinite(got).all():
        raise ExportError(f"{what}: output has NaN or Inf values")
    scale = max(1.0, float(np.max(np.abs(want)))) if want.size else 1.0
    err = float(np.max(np.abs(got.astype(np.float64) - want))) / scale if want.size else 0.0
    if err > tolerance:
        raise ExportError(f"{what}: output differs from the Keras model by {err:.3g} (relative "
                          f"to the output scale), more than the tolerance {tolerance:g}")
    return err


def _verified_portable(model: keras.Model, input_shape, x: np.ndarray | None = None
                       ) -> tuple[keras.Model, np.ndarray, np.ndarray]:
    """The portable copy, a test batch (``x`` or a probe) and the original's output on it."""
    h, w, c = _check_input_shape(input_shape, model)
    portable = portable_model(model, (h, w, c))
    if x is None:
        ph, pw = _probe_size(model, h, w)
        x = _probe_images(2, ph, pw, c)
    ph, pw = x.shape[1:3]
    model_h, model_w = model.inputs[0].shape[1:3]
    if (model_h not in (None, ph)) or (model_w not in (None, pw)):
        # The original was built for another fixed size: its own weights in a
        # same-implementation copy for this size give the reference.
        reference = _rebuild_same_ops(model, (h, w, c))
    else:
        reference = model
    want = np.asarray(_image_output(reference, x))
    if portable is not model:
        _check_close(np.asarray(_image_output(portable, x)), want, _PORTABLE_TOLERANCE,
                     f"portable rebuild of {model.name!r}")
    return portable, x, want


def _rebuild_same_ops(model: keras.Model, input_shape) -> keras.Model:
    config = model.get_config()
    _set_input_shape(config, (None, *input_shape))
    copy = type(model).from_config(config)
    copy.set_weights(model.get_weights())
    return copy


# ------------------------------------------------------------------ destinations

#: ``kind`` values of :func:`check_destination`.
DESTINATION_KINDS = ("saved_model", "tflite")
_WHAT = {"saved_model": "SavedModel folder", "tflite": "TFLite file"}
# Everything tf.saved_model.save (and Keras's and TF1's exporters) write in a
# SavedModel folder; a folder holding anything else is not replaced.
_SAVED_MODEL_ENTRIES = frozenset({"saved_model.pb", "saved_model.pbtxt", "variables", "assets",
                                  "assets.extra", "fingerprint.pb", "keras_metadata.pb"})
_VARIABLES_FILE = re.compile(r"variables\.(index|data-\d{5}-of-\d{5})")
# A TFLite file is a flatbuffer with the file identifier "TFL3" at bytes 4..8.
_TFLITE_IDENTIFIER = b"TFL3"


def _exists_error(path: str, what: str) -> FileExistsError:
    return FileExistsError(f"{what} {path} already exists (pass overwrite=True to replace it)")


def _within(path: str, folder: str) -> bool:
    """Whether the absolute ``path`` is ``folder`` or lies inside it."""
    return os.path.commonpath([path, folder]) == folder


def check_destination(path: str | os.PathLike, kind: str, *, overwrite: bool = False,
                      source: str | os.PathLike | None = None) -> str:
    """Checks that an export may be written to ``path`` before any work is done.

    A new path is always accepted, except inside the source SavedModel
    folder. An existing one is replaced only with ``overwrite=True`` and only
    when it is an export of the same kind: a SavedModel folder (it holds
    ``saved_model.pb`` or ``saved_model.pbtxt`` and nothing that is not part
    of a SavedModel: ``variables/``, ``assets/``, ``assets.extra/``,
    ``fingerprint.pb``, ``keras_metadata.pb``) or an empty folder, or a TFLite
    flatbuffer (``"TFL3"`` at bytes 4..8). Never replaced, even then: the
    source model or a folder containing it, the current working folder or
    one of its parents, a symbolic link to something outside its own folder.

    Args:
        path: the SavedModel folder or ``.tflite`` file to write.
        kind: ``"saved_model"`` or ``"tflite"``.
        overwrite: whether an existing export at ``path`` may be replaced.
        source: the path of the model being exported (``.keras`` file or
            SavedModel folder), None when it is an in-memory model.

    Returns:
        The absolute path.

    Raises:
        FileExistsError: ``path`` exists and is not replaced (the message
            says why).
        ValueError: ``path`` lies inside the source SavedModel, is a folder
            for a TFLite file or a file for a SavedModel, or a bad ``kind``.

    Example:
        >>> check_destination("models/svdn/1", "saved_model", overwrite=True,
        ...                   source="svdn.keras")
        '/.../models/svdn/1'
    """
    if kind not in DESTINATION_KINDS:
        raise ValueError(f"kind must be one of {DESTINATION_KINDS}, got {kind!r}")
    what = _WHAT[kind]
    path = os.path.abspath(os.fspath(path))
    real = os.path.realpath(path)
    source_real = None if source is None else os.path.realpath(os.fspath(source))
    if source_real is not None and os.path.isdir(source_real) and _within(real, source_real):
        raise ValueError(f"{what} {path} lies inside the source SavedModel {source}; "
                         f"write it outside the folder being converted")
    if not os.path.lexists(path):
        return path
    if not overwrite:
        raise _exists_error(path, what)
    if kind == "tflite" and os.path.isdir(real):
        raise ValueError(f"path {path} is a folder; the {what} must be a file path")
    if kind == "saved_model" and os.path.lexists(real) and not os.path.isdir(real):
        raise ValueError(f"path {path} is a file; the {what} must be a folder path")
    reason = _not_replaceable(path, real, kind, source_real)
    if reason is not None:
        raise FileExistsError(f"{what} {path} already exists and is not replaced (even with "
                              f"overwrite=True): {reason}")
    return path


def _not_replaceable(path: str, real: str, kind: str, source_real: str | None) -> str | None:
    """Why the existing ``path`` (real path ``real``) must not be replaced, None if it may."""
    if source_real is not None:
        if real == source_real:
            return "it is the source model"
        if _within(source_real, real):
            return f"it contains the source model {source_real}"
    try:
        cwd = os.path.realpath(os.getcwd())
    except OSError:  # the working folder was deleted: nothing to protect there
        cwd = None
    if cwd is not None and _within(cwd, real):
        return ("it is the current working folder" if cwd == real
                else f"it contains the current working folder {cwd}")
    if os.path.islink(path):
        folder = os.path.realpath(os.path.dirname(path))
        if real == folder or not _within(real, folder):
            return f"it is a symbolic link to {real}, outside its folder {folder}"
    if kind == "saved_model":
        return _not_a_saved_model(real)
    return _not_a_tflite_file(real)


def _not_a_saved_model(folder: str) -> str | None:
    try:
        entries = os.listdir(folder)
    except OSError as e:  # e.g. a link to nothing
        return f"it cannot be listed ({e.strerror})"
    if not entries:
        return None  # an empty folder: nothing to lose
    foreign = sorted(set(entries) - _SAVED_MODEL_ENTRIES)
    if foreign:
        return f"it is not a SavedModel folder: it holds {_names(foreign)}"
    if not any(os.path.isfile(os.path.join(folder, name))
               for name in ("saved_model.pb", "saved_model.pbtxt")):
        return "it is not a SavedModel folder: it has no saved_model.pb or saved_model.pbtxt"
    variables = os.path.join(folder, "variables")
    if os.path.lexists(variables):
        if os.path.islink(variables) or not os.path.isdir(variables):
            return "its variables entry is not a folder"
        foreign = sorted(n for n in os.listdir(variables) if not _VARIABLES_FILE.fullmatch(n))
        if foreign:
            return f"its variables folder holds {_names(foreign)}, which no SavedModel writes"
    return None


def _names(names: list[str]) -> str:
    shown = ", ".join(names[:5])
    return shown + (f" and {len(names) - 5} more" if len(names) > 5 else "")


def _not_a_tflite_file(file: str) -> str | None:
    try:
        if not stat.S_ISREG(os.stat(file).st_mode):
            return "it is not a regular file"
        with open(file, "rb") as f:
            head = f.read(8)
    except OSError as e:
        return f"it cannot be read ({e.strerror})"
    if len(head) < 8 or head[4:8] != _TFLITE_IDENTIFIER:
        return "it is not a TFLite flatbuffer (no 'TFL3' identifier at bytes 4..8)"
    return None


def _prepare_destination(path, overwrite: bool, kind: str, source) -> str:
    path = check_destination(path, kind, overwrite=overwrite, source=source)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    return path


def _source_path(model) -> str | os.PathLike | None:
    return model if isinstance(model, (str, os.PathLike)) else None


# ------------------------------------------------------------------ atomic writes

# Everything an export writes before it is published lives in one hidden
# folder next to the destination, named after it and the exporting process
# and holding a marker (process id, host, process start time). A killed export
# leaves that folder behind; the next export into the same parent folder
# removes it once its process no longer runs.
_WORK_TAG = ".tfdeblur-tmp-"
_WORK_NAME = re.compile(r"\..*\.tfdeblur-tmp-(\d+)-[a-z0-9_]{8}")
_MARKER = "tfdeblur-export.json"
# An old destination set aside while the new one is renamed in (see _publish).
_SET_ASIDE = "old"
# A work folder without its marker (its process was killed within microseconds
# of creating it) is judged by the process id in its name once it is older
# than this, so that a folder just being made is never taken for a stale one.
_UNMARKED_GRACE_S = 60.0


def _process_state(pid: int) -> tuple[str, str] | None:
    """``(state, start time in clock ticks)`` of a Linux process, None if unknown."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (fields[0], fields[19]) if len(fields) > 19 else None


def _process_alive(pid: int, start: str | None) -> bool:
    """Whether process ``pid`` (started at ``start``, if known) may still run; True if unsure."""
    if os.name == "nt":
        return True  # os.kill(pid, 0) would terminate it there
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process
    except (OverflowError, ValueError):
        return False
    state = _process_state(pid)
    if state is not None:
        if state[0] in ("Z", "X"):  # killed, not yet reaped
            return False
        if start is not None and state[1] != start:  # the id was reused
            return False
    return True


@contextlib.contextmanager
def _work_folder(path: str):
    """A hidden folder next to ``path`` for everything the export writes; removed on exit."""
    parent = os.path.dirname(path)
    _remove_stale_work_folders(parent)
    pid = os.getpid()
    work = tempfile.mkdtemp(prefix=f".{os.path.basename(path)[:80]}{_WORK_TAG}{pid}-",
                            dir=parent)
    try:
        state = _process_state(pid)
        marker = {"pid": pid, "host": socket.gethostname(),
                  "start": state[1] if state else None, "destination": os.path.basename(path)}
        with open(os.path.join(work, _MARKER + ".tmp"), "w") as f:
            json.dump(marker, f)
        os.replace(os.path.join(work, _MARKER + ".tmp"), os.path.join(work, _MARKER))
        yield work
    finally:
        _remove(work)


def _remove_stale_work_folders(parent: str) -> None:
    """Removes the work folders in ``parent`` left by export processes that no longer run."""
    try:
        names = os.listdir(parent)
    except OSError:
        return
    for name in names:
        match = _WORK_NAME.fullmatch(name)
        work = os.path.join(parent, name)
        if match is None or os.path.islink(work) or not os.path.isdir(work):
            continue
        pid = int(match.group(1))
        marker = _read_marker(work)
        if marker is None:
            try:
                age = time.time() - os.lstat(work).st_mtime
            except OSError:
                continue
            if age < _UNMARKED_GRACE_S or os.path.lexists(os.path.join(work, _MARKER)):
                continue  # being made, or a marker that is not ours
            marker = {"pid": pid, "host": socket.gethostname(), "start": None,
                      "destination": None}
        if (pid <= 0 or marker.get("pid") != pid or marker.get("host") != socket.gethostname()
                or _process_alive(pid, marker.get("start"))):
            continue
        _restore_set_aside(work, parent, marker.get("destination"))
        _remove(work)
        log.info("removed %s, left by export process %d, which no longer runs", work, pid)


def _read_marker(work: str) -> dict | None:
    try:
        with open(os.path.join(work, _MARKER)) as f:
            marker = json.load(f)
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) else None


def _restore_set_aside(work: str, parent: str, destination) -> None:
    # Killed between setting the old export aside and renaming the new one in:
    # the old one goes back to its place.
    old = os.path.join(work, _SET_ASIDE)
    if not isinstance(destination, str) or os.sep in destination or destination in ("", ".", ".."):
        return
    path = os.path.join(parent, destination)
    if os.path.lexists(old) and not os.path.lexists(path):
        try:
            os.rename(old, path)
            log.warning("restored %s, set aside by an export process that was killed", path)
        except OSError:
            pass


def _publish(new: str, path: str, kind: str, overwrite: bool, source, work: str) -> None:
    """Moves the finished ``new`` (in ``work``, next to ``path``) to ``path`` in one rename."""
    what = _WHAT[kind]
    if os.path.isdir(new):
        if not os.path.lexists(path):
            try:
                # Fails for a non-empty folder that appeared meanwhile: a
                # concurrent export is never merged into.
                os.rename(new, path)
                return
            except OSError:
                if not os.path.lexists(path):
                    raise
        # Checked again: the export took a while and the destination may have changed.
        check_destination(path, kind, overwrite=overwrite, source=source)
        # A folder cannot replace another in one step: set the old one aside,
        # rename the new one in, then delete the old one (restored on failure,
        # or by the next export when this process is killed in between).
        old = os.path.join(work, _SET_ASIDE)
        os.rename(path, old)
        try:
            os.rename(new, path)
        except BaseException:
            os.rename(old, path)
            raise
        _remove(old)
    elif overwrite:
        if os.path.lexists(path):
            check_destination(path, kind, overwrite=overwrite, source=source)
        os.replace(new, path)
    else:
        try:
            os.link(new, path)  # fails if path exists, unlike rename
        except FileExistsError as e:
            raise _exists_error(path, what) from e
        except OSError:  # no hard links on this file system
            if os.path.lexists(path):
                raise _exists_error(path, what) from None
            os.rename(new, path)
            return
        os.unlink(new)


def _remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.lexists(path):
        os.unlink(path)


# -------------------------------------------------------------------- SavedModel


def _write_saved_model(model: keras.Model, directory: str, batch_shape: tuple) -> None:
    # A plain tf.Module that tracks the tf.Variables the signature captures.
    # keras.export.ExportArchive (and model.export) also track the Keras
    # wrappers of the same variables, so every weight is written twice (2x the
    # size on disk and in TF Serving's memory; keras-team/keras#23553).
    module = tf.Module()
    module.model_variables = [v.value for v in model.variables]

    # No autograph: nothing here needs it, and it writes each converted
    # function to the system temp folder, deleted only when the process exits.
    @tf.function(input_signature=[tf.TensorSpec(batch_shape, tf.float32, name=INPUT_NAME)],
                 autograph=False)
    def serve(blurry):
        return {OUTPUT_NAME: _image_output(model, blurry)}

    module.serve = serve
    tf.saved_model.save(module, directory,
                        signatures={SIGNATURE_KEY: serve.get_concrete_function()})


def saved_model_op_types(path: str | os.PathLike) -> set[str]:
    """Every op type in a SavedModel's graphs, functions included (no TF runtime needed).

    Read from ``saved_model.pb`` directly, so it works for a SavedModel
    whose ops are not registered in this process.
    """
    from tensorflow.core.protobuf import saved_model_pb2

    pb = os.path.join(os.fspath(path), "saved_model.pb")
    if not os.path.isfile(pb):
        raise FileNotFoundError(f"{pb} does not exist (not a SavedModel folder)")
    saved = saved_model_pb2.SavedModel()
    with open(pb, "rb") as f:
        saved.ParseFromString(f.read())
    ops: set[str] = set()
    for meta in saved.meta_graphs:
        ops.update(node.op for node in meta.graph_def.node)
        for fn in meta.graph_def.library.function:
            ops.update(node.op for node in fn.node_def)
    return ops


# Prepended to the verification script, before TensorFlow is imported: reads
# the pipe whose write end only the exporting process holds, and exits at its
# end of file, i.e. when the exporting process has exited or was killed.
_EXIT_WITH_PARENT = r"""
import os, sys, threading
def _exit_with_parent(fd=int(sys.argv.pop(1))):
    while os.read(fd, 1):
        pass
    os._exit(70)
threading.Thread(target=_exit_with_parent, daemon=True).start()
"""

# Runs in a fresh interpreter that never imports tfdeblur: what TF Serving sees.
_LOAD_WITHOUT_TFDEBLUR = r"""
import json, sys
import numpy as np
import tensorflow as tf
from tensorflow.python.framework import op_def_registry

path, x_path, y_path, key, inp, out = sys.argv[1:7]
fn = tf.saved_model.load(path).signatures[key]
x = np.load(x_path)
y = fn(**{inp: tf.constant(x)})[out].numpy()
empty = fn(**{inp: tf.constant(x[:0])})[out].numpy()
np.save(y_path, y)
print(json.dumps({
    "tfdeblur_imported": any(m == "tfdeblur" or m.startswith("tfdeblur.") for m in sys.modules),
    "custom_ops_registered": [o for o in ("TfDeblur>GatedRecurrence",
                                          "TfDeblur>ModulatedDeformConv2D")
                              if op_def_registry.get(o) is not None],
    "empty_batch_shape": list(empty.shape),
}))
"""


def _verify_without_tfdeblur(directory: str, x: np.ndarray, want: np.ndarray,
                             what: str, work: str | None = None) -> float:
    with contextlib.ExitStack() as stack:
        if work is None:
            work = stack.enter_context(_work_folder(directory))
        x_path, y_path = os.path.join(work, "x.npy"), os.path.join(work, "y.npy")
        np.save(x_path, x)
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        env.update(TFDEBLUR_DISABLE_COMPILED="1", TF_CPP_MIN_LOG_LEVEL="2")
        # The child exits when this process does (see _EXIT_WITH_PARENT): it
        # holds the read end of a pipe whose only write end stays here.
        read_fd, write_fd = os.pipe()
        stack.callback(os.close, write_fd)
        stack.callback(os.close, read_fd)
        # -I: no PYTHONPATH, no user site, no current folder on sys.path.
        cmd = [sys.executable, "-I", "-c", _EXIT_WITH_PARENT + _LOAD_WITHOUT_TFDEBLUR,
               str(read_fd), directory, x_path, y_path, SIGNATURE_KEY, INPUT_NAME, OUTPUT_NAME]
        try:
            done = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True,
                                  timeout=_SUBPROCESS_TIMEOUT_S, pass_fds=(read_fd,))
        except subprocess.TimeoutExpired as e:
            raise ExportError(f"{what}: loading the SavedModel in a fresh process took more "
                              f"than {_SUBPROCESS_TIMEOUT_S} s") from e
        if done.returncode != 0:
            tail = "\n".join(done.stderr.strip().splitlines()[-15:])
            raise ExportError(f"{what}: the SavedModel failed to load or run in a process "
                              f"without tfdeblur (exit {done.returncode}):\n{tail}")
        report = json.loads(done.stdout.strip().splitlines()[-1])
        if report["tfdeblur_imported"] or report["custom_ops_registered"]:
            raise ExportError(f"{what}: the verification process had tfdeblur loaded "
                              f"({report}); it cannot tell whether TF Serving could run it")
        expected_empty = [0, *x.shape[1:]]
        if report["empty_batch_shape"] != expected_empty:
            raise ExportError(f"{what}: an empty batch gave shape {report['empty_batch_shape']}, "
                              f"expected {expected_empty}")
        return _check_close(np.load(y_path), want, _TOLERANCES[None], what)


def export_saved_model(model: keras.Model | str | os.PathLike, path: str | os.PathLike, *,
                       input_shape: Sequence = (None, None, 3), overwrite: bool = False) -> str:
    """Writes a SavedModel for TF Serving that contains only stock TensorFlow ops.

    The network is rebuilt with ``implementation="portable"`` (see
    :func:`portable_model`) when it uses a compiled op, checked against the
    original on a test batch, and exported with the signature
    ``serving_default``: input ``blurry`` float32 ``[N, H, W, C]`` in [0, 1],
    output ``sharp`` float32 ``[N, H, W, C]`` (not clipped). The export is
    written to a hidden temporary folder next to ``path`` and verified there:
    its graph is scanned for ``TfDeblur>`` ops (there must be none) and it
    is loaded with ``tf.saved_model.load`` in a fresh Python process that
    never imports tfdeblur (``TFDEBLUR_DISABLE_COMPILED=1``, as TF Serving
    would run it), whose output must match the Keras model and which must
    accept an empty batch. Only then is the folder renamed to ``path``;
    any failure removes it, and a killed export's folder is removed by the
    next export into the same parent folder.

    The model's run-time checks stay in the graph: images smaller than the
    model's minimum and NaN/Inf values fail with an ``InvalidArgumentError``.

    Inspect an export with TensorFlow's command-line tool (signature, input
    ``blurry`` DT_FLOAT ``(-1, -1, -1, 3)``, output ``sharp``, the op list)
    and run it on a float32 ``.npy`` batch::

        saved_model_cli show --dir PATH --all
        saved_model_cli run --dir PATH --tag_set serve \\
            --signature_def serving_default --inputs blurry=blurry.npy --outdir out/

    TF Serving expects numbered version folders: export to ``models/NAME/1``
    and serve ``models/NAME``.

    Args:
        model: a tfdeblur network (``keras.Model``) or the path of a ``.keras``
            file.
        path: folder to create (parent folders are created).
        input_shape: ``(H, W, C)`` of the signature's images, None for any
            height/width (default); C must be the model's channel count.
        overwrite: replace an existing ``path`` when it is a SavedModel
            folder or an empty folder (see :func:`check_destination`; the old
            export stays in place until the new one is verified).

    Returns:
        The absolute path of the SavedModel folder.

    Raises:
        FileExistsError: ``path`` exists and ``overwrite`` is False, or it is
            not replaced even with ``overwrite`` (not a SavedModel folder, the
            source model or a folder containing it, the current working
            folder or one of its parents, a link out of its folder).
        ValueError: a bad ``model`` or ``input_shape``; ``path`` is a file.
        ExportError: the export failed its verification (nothing written).

    Example:
        >>> model = tfdeblur.models.build("svdn", width=16)
        >>> export_saved_model(model, "exports/svdn/1")          # TF Serving layout
        '/.../exports/svdn/1'
    """
    source = _source_path(model)
    model = _load_keras(model)
    h, w, c = _check_input_shape(input_shape, model)
    path = _prepare_destination(path, overwrite, "saved_model", source)
    portable, x, want = _verified_portable(model, (h, w, c))
    what = f"SavedModel export of {model.name!r}"
    with _work_folder(path) as work:
        new = os.path.join(work, "saved_model")
        _write_saved_model(portable, new, (None, h, w, c))
        custom = sorted(op for op in saved_model_op_types(new) if op.startswith(CUSTOM_OP_PREFIX))
        if custom:
            raise ExportError(f"{what}: the graph contains compiled tfdeblur ops {custom}")
        err = _verify_without_tfdeblur(new, x, want, what, work)
        _publish(new, path, "saved_model", overwrite, source, work)
    log.info("%s: wrote %s (max relative difference %.2g, verified without tfdeblur)",
             what, path, err)
    return path


# ------------------------------------------------------------------------ TFLite


def _is_saved_model(source) -> bool:
    return (isinstance(source, (str, os.PathLike))
            and os.path.isfile(os.path.join(os.fspath(source), "saved_model.pb")))


class _SavedModelSource:
    """A SavedModel's ``serving_default`` signature, called like a Keras model."""

    def __init__(self, path: str):
        self.path = os.path.abspath(path)
        self.loaded = tf.saved_model.load(self.path)
        if SIGNATURE_KEY not in self.loaded.signatures:
            raise ValueError(f"SavedModel {self.path} has no {SIGNATURE_KEY!r} signature "
                             f"(has {sorted(self.loaded.signatures)})")
        self.fn = self.loaded.signatures[SIGNATURE_KEY]
        _, kwargs = self.fn.structured_input_signature
        if len(kwargs) != 1:
            raise ValueError(f"SavedModel {self.path}: signature {SIGNATURE_KEY!r} must take one "
                             f"image input, takes {sorted(kwargs)}")
        (self.input_name, self.spec), = kwargs.items()
        outputs = self.fn.structured_outputs
        self.output_name = OUTPUT_NAME if OUTPUT_NAME in outputs else sorted(outputs)[0]
        shape = self.spec.shape
        if shape.rank != 4 or shape[-1] is None:
            raise ValueError(f"SavedModel {self.path}: input {self.input_name!r} must be "
                             f"[N, H, W, C] with known C, got {shape}")
        self.name = os.path.basename(self.path.rstrip(os.sep))

    def check_size(self, size: tuple[int, int]) -> None:
        for side, n, fixed in zip(("height", "width"), size, self.spec.shape[1:3], strict=True):
            if fixed is not None and fixed != n:
                raise ValueError(f"input_size {side} {n} does not match the SavedModel's fixed "
                                 f"{side} {fixed}")

    def __call__(self, x):
        return self.fn(**{self.input_name: tf.constant(x, tf.float32)})[self.output_name]


def _write_static_saved_model(source: _SavedModelSource, directory: str,
                              batch_shape: tuple) -> None:
    module = tf.Module()
    module.loaded = source.loaded

    @tf.function(input_signature=[tf.TensorSpec(batch_shape, tf.float32, name=INPUT_NAME)],
                 autograph=False)
    def serve(blurry):
        return {OUTPUT_NAME: source.fn(**{source.input_name: blurry})[source.output_name]}

    tf.saved_model.save(module, directory, signatures={SIGNATURE_KEY: serve})


def _tflite_ops(interpreter) -> list[str]:
    # No public API lists a TFLite model's ops; this private one has been
    # stable since TF 2.4 (used to spot Flex ops and for the log).
    try:
        return sorted({d["op_name"] for d in interpreter._get_ops_details()})
    except Exception:  # noqa: BLE001
        return []


def _interpreter(model_path: str):
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*tf.lite.Interpreter is deprecated.*")
        return tf.lite.Interpreter(model_path=model_path)


def _convert(saved_model_dir: str, quantize: str | None, select_tf_ops: bool) -> bytes:
    # From a SavedModel, not from_concrete_functions: with Keras 3 models the
    # latter keeps the weights as uninitialised resource variables (READ_VARIABLE
    # fails or yields NaN in TF 2.21).
    converter = tf.lite.TFLiteConverter.from_saved_model(saved_model_dir,
                                                         signature_keys=[SIGNATURE_KEY])
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if select_tf_ops:
        converter.target_spec.supported_ops.append(tf.lite.OpsSet.SELECT_TF_OPS)
    if quantize is not None:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantize == "float16":
        converter.target_spec.supported_types = [tf.float16]
    try:
        return converter.convert()
    except Exception as e:  # noqa: BLE001 - ConverterError and friends
        lines = [ln for ln in str(e).splitlines() if ln.strip()]
        detail = "\n".join(lines[-12:])
        hint = ("" if select_tf_ops else
                " (some ops are not TFLite builtins; select_tf_ops=True would keep them as "
                "TensorFlow ops, which needs the Flex delegate on the device)")
        raise ExportError(f"TFLite conversion failed{hint}:\n{detail}") from e


def convert_tflite(model_or_saved_model, path: str | os.PathLike, *,
                   input_size: Sequence[int], quantize: str | None = None,
                   overwrite: bool = False, select_tf_ops: bool = False,
                   test_image: np.ndarray | None = None) -> str:
    """Converts a network to a TFLite file for one fixed image size, builtin ops only.

    From a Keras model the network is rebuilt with
    ``implementation="portable"`` for ``[1, H, W, C]`` (static shapes: the
    portable spatial RNN then unrolls its scan, and the padding to the
    model's multiple becomes constant slices), exported to a temporary
    SavedModel and converted with ``TFLiteConverter`` restricted to TFLite
    builtin ops. A SavedModel folder (e.g. from :func:`export_saved_model`)
    is converted through its ``serving_default`` signature with the batch
    and size fixed. The file keeps the signature (input ``blurry``, output
    ``sharp``; ``interpreter.get_signature_runner()``).

    The result is verified before it is moved into place: it must load in
    ``tf.lite.Interpreter`` and its output on ``test_image`` must match the
    Keras model (or the SavedModel) within a tolerance relative to
    ``max(1, max |output|)``: 1e-4 without quantization, 1e-2 for float16
    weights, 5e-2 for dynamic-range (int8 weight) quantization.

    The model's run-time input checks (minimum size, NaN/Inf) are dropped by
    the converter: TFLite has no assertions. The size is fixed anyway, and
    NaN in gives NaN out.

    Args:
        model_or_saved_model: a ``keras.Model``, the path of a ``.keras``
            file, or a SavedModel folder.
        path: the ``.tflite`` file to write (parent folders are created).
        input_size: ``(H, W)`` of the one image per call; at least the
            model's minimum side. For sizes that are not a multiple of the
            model's multiple the padding is part of the graph.
        quantize: None (float32), ``"dynamic"`` (int8 weights, dynamic-range
            kernels; about 4x smaller) or ``"float16"`` (float16 weights,
            2x smaller, computed in float32 or on a float16 GPU delegate).
        overwrite: replace an existing file when it is a TFLite flatbuffer
            (see :func:`check_destination`).
        select_tf_ops: allow TensorFlow ops that are not TFLite builtins
            (the app then needs the Flex delegate). None of the three
            networks needs it.
        test_image: ``[H, W, C]`` or ``[1, H, W, C]`` float image in [0, 1]
            for the verification; None: a synthetic one.

    Returns:
        The absolute path of the ``.tflite`` file.

    Raises:
        FileExistsError: ``path`` exists and ``overwrite`` is False, or it is
            not replaced even with ``overwrite`` (not a TFLite flatbuffer, the
            source model, a link out of its folder).
        ValueError: bad arguments (naming them); ``path`` is a folder or lies
            inside the source SavedModel.
        ExportError: conversion or verification failed (nothing written).

    Example:
        >>> model = tfdeblur.models.build("lmfn", width=16, num_blocks=2)
        >>> convert_tflite(model, "lmfn_256.tflite", input_size=(256, 256),
        ...                quantize="float16")
        '/.../lmfn_256.tflite'
    """
    if quantize not in QUANTIZATIONS:
        raise ValueError(f"quantize must be one of {QUANTIZATIONS}, got {quantize!r}")
    if _is_saved_model(model_or_saved_model):
        source_model = _SavedModelSource(os.fspath(model_or_saved_model))
        keras_model = None
        size = _check_static_size(input_size)
        source_model.check_size(size)
        channels = int(source_model.spec.shape[-1])
        name = source_model.name
    else:
        keras_model = _load_keras(model_or_saved_model)
        size = _check_input_size(input_size, keras_model)
        channels = _channels(keras_model)
        name = keras_model.name
    x = _tflite_test_image(test_image, size, channels)
    source = _source_path(model_or_saved_model)
    path = _prepare_destination(path, overwrite, "tflite", source)
    what = f"TFLite conversion of {name!r} at {size[0]}x{size[1]}"
    batch_shape = (1, *size, channels)
    with _work_folder(path) as work:
        saved = os.path.join(work, "saved_model")  # intermediate, not published
        if keras_model is not None:
            portable, _, want = _verified_portable(keras_model, (*size, channels), x)
            _write_saved_model(portable, saved, batch_shape)
        else:
            try:
                want = np.asarray(source_model(x))
            except tf.errors.InvalidArgumentError as e:
                raise ValueError(f"input_size {size}: the SavedModel {source_model.path} rejects "
                                 f"this size: {e.message.strip()}") from e
            _write_static_saved_model(source_model, saved, batch_shape)
        flat = _convert(saved, quantize, select_tf_ops)
        new = os.path.join(work, "model.tflite")
        with open(new, "wb") as f:
            f.write(flat)
            f.flush()
            os.fsync(f.fileno())
        err, ops = _verify_tflite(new, x, want, quantize, select_tf_ops, what)
        _publish(new, path, "tflite", overwrite, source, work)
    log.info("%s: wrote %s (%d bytes, quantize=%s, max relative difference %.2g; ops: %s)",
             what, path, len(flat), quantize, err, ", ".join(ops))
    return path


def _check_static_size(input_size) -> tuple[int, int]:
    try:
        size = tuple(input_size)
    except TypeError:
        size = None
    if size is None or len(size) != 2 or not all(
            isinstance(d, (int, np.integer)) and not isinstance(d, bool) and d >= 1
            for d in size):
        raise ValueError(f"input_size must be (H, W) with two positive ints, got {input_size!r}")
    return int(size[0]), int(size[1])


def _tflite_test_image(test_image, size: tuple[int, int], channels: int) -> np.ndarray:
    if test_image is None:
        return _probe_images(1, *size, channels)
    x = np.asarray(test_image)
    if x.ndim == 3:
        x = x[None]
    if x.shape != (1, *size, channels) or not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"test_image must be a float [H, W, C] image of input_size "
                         f"{size} with {channels} channels, got {x.dtype} {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("test_image has NaN or Inf values")
    return x.astype(np.float32)


def _verify_tflite(file: str, x: np.ndarray, want: np.ndarray, quantize: str | None,
                   select_tf_ops: bool, what: str) -> tuple[float, list[str]]:
    try:
        interpreter = _interpreter(file)
    except (RuntimeError, ValueError) as e:
        raise ExportError(f"{what}: tf.lite.Interpreter cannot load the converted model: "
                          f"{e}") from e
    ops = _tflite_ops(interpreter)
    flex = [op for op in ops if op.startswith("Flex") or op == "CUSTOM"]
    if flex and not select_tf_ops:
        raise ExportError(f"{what}: the model contains non-builtin ops {flex}")
    try:
        interpreter.allocate_tensors()
        runner = interpreter.get_signature_runner(SIGNATURE_KEY)
        got = runner(**{INPUT_NAME: x})[OUTPUT_NAME]
    except (RuntimeError, ValueError) as e:
        raise ExportError(f"{what}: the converted model does not run in tf.lite.Interpreter: "
                          f"{e}") from e
    return _check_close(np.asarray(got), want, _TOLERANCES[quantize], what), ops
