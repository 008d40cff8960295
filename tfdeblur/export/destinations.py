"""Where an export may be written, and what it may replace."""

from __future__ import annotations

import os
import re
import stat

from tfdeblur import _atomic

#: ``kind`` values of :func:`check_destination`.
DESTINATION_KINDS = ("saved_model", "tflite", "onnx")
_WHAT = {"saved_model": "SavedModel folder", "tflite": "TFLite file", "onnx": "ONNX file"}
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
    ``fingerprint.pb``, ``keras_metadata.pb``) or an empty folder, a TFLite
    flatbuffer (``"TFL3"`` at bytes 4..8), or an ONNX model (it parses as an
    ONNX ``ModelProto`` with a graph). Never replaced, even then: the
    source model or a folder containing it, the current working folder or
    one of its parents, a symbolic link to something outside its own folder.

    Args:
        path: the SavedModel folder, ``.tflite`` or ``.onnx`` file to write.
        kind: ``"saved_model"``, ``"tflite"`` or ``"onnx"``.
        overwrite: whether an existing export at ``path`` may be replaced.
        source: the path of the model being exported (``.keras`` file or
            SavedModel folder), None when it is an in-memory model.

    Returns:
        The absolute path.

    Raises:
        FileExistsError: ``path`` exists and is not replaced (the message
            says why).
        ValueError: ``path`` lies inside the source SavedModel, is a folder
            for a TFLite or ONNX file or a file for a SavedModel, or a bad ``kind``.

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
    if kind != "saved_model" and os.path.isdir(real):
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
    if kind == "onnx":
        return _not_an_onnx_file(real)
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


def _not_an_onnx_file(file: str) -> str | None:
    try:
        if not stat.S_ISREG(os.stat(file).st_mode):
            return "it is not a regular file"
    except OSError as e:
        return f"it cannot be read ({e.strerror})"
    try:
        import onnx
    except ImportError:
        return "it cannot be checked to be an ONNX model (the onnx package is not installed)"
    try:
        proto = onnx.load_model(file, load_external_data=False)
    except Exception:  # noqa: BLE001 - DecodeError and friends
        return "it is not an ONNX model (it does not parse as an ONNX ModelProto)"
    if not proto.graph.node:
        return "it is not an ONNX model (it has no graph)"
    return None


def _publish(new: str, path: str, kind: str, overwrite: bool, source) -> None:
    """Moves the verified ``new`` (in the work folder of ``path``) into place."""
    _atomic.publish(new, path, overwrite=overwrite, what=_WHAT[kind],
                    # Checked again: the export took a while and the destination may have changed.
                    recheck=lambda: check_destination(path, kind, overwrite=overwrite,
                                                      source=source))
