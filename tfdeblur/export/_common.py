"""What every exporter shares: names, tolerances, the portable rebuild and its check."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import NamedTuple

import keras
import numpy as np

from tfdeblur import _validation as checks

#: Signature of exported SavedModels (TF Serving's default) and TFLite files.
SIGNATURE_KEY = "serving_default"
#: Name of the signature's input, float32 ``[N, H, W, C]`` in [0, 1].
INPUT_NAME = "blurry"
#: Name of the signature's output, float32 ``[N, H, W, C]`` (not clipped).
OUTPUT_NAME = "sharp"
#: Signature that takes encoded images and returns PNG files.
IMAGE_SIGNATURE_KEY = "deblur_image"
#: Its input: string ``[N]``, each an encoded PNG or JPEG (8 or 16 bits; grey, RGB, RGBA).
IMAGE_INPUT_NAME = "image_bytes"
#: Its output: string ``[N]``, each an 8-bit PNG of its image's size and channels.
#: (TF Serving's REST API returns outputs whose name ends in ``_bytes`` as base64.)
IMAGE_OUTPUT_NAME = "png_bytes"
#: TF Serving's warm-up file, relative to the SavedModel folder.
WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")
#: Op type prefix of the compiled ops; none may appear in an export.
CUSTOM_OP_PREFIX = "TfDeblur>"

# Largest accepted |export - keras| relative to max(1, max |keras output|).
# float32 exports run the same portable ops as the Keras copy (other fusion
# and summation orders only: 2e-7 to 4e-7 measured). float16 weights round to
# 11 significant bits (1.7e-4 measured on the paper-size LMFN and SVRNN);
# dynamic-range quantization stores int8 weights and quantizes activations on
# the fly (7.7e-3 measured). The margins leave room for trained weights.
# Full-integer int8 is judged by PSNR instead (see tflite.py).
TOLERANCES = {None: 1e-4, "float16": 1e-2, "dynamic": 5e-2}
# Tolerance between the compiled network and its portable rebuild.
_PORTABLE_TOLERANCE = 1e-4


class ExportError(RuntimeError):
    """An export could not be produced or failed its verification (nothing was written)."""


# --------------------------------------------------------------------------- model


def _load_keras(model) -> keras.Model:
    if isinstance(model, keras.Model):
        from tfdeblur.inference import check_image_to_image

        # One image in, one image of the same shape out (SVDN's training model, with
        # its sampling positions, is refused, naming the model to export instead).
        check_image_to_image(model, f"model {model.name!r}")
        return model
    if isinstance(model, (str, os.PathLike)):
        from tfdeblur.inference import load_model

        return load_model(model)  # checked the same way
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
    h, w, c = checks.check_input_shape(input_shape, known_channels=False)
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
    _copy_weights(model, copy)
    return copy


def _copy_weights(src: keras.Model, dst: keras.Model) -> None:
    # Variable to variable, without NumPy: Keras's get_weights() converts through
    # Variable.__array__, which NumPy 2 warns about (DeprecationWarning, the copy keyword).
    for s, d in zip(src.weights, dst.weights, strict=True):
        d.assign(s.value)


def _layer_configs(model: keras.Model) -> list:
    configs = []
    for layer in _all_layers(model):
        try:
            configs.append(layer.get_config())
        except NotImplementedError:
            pass
    return configs


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
    want = np.asarray(reference(x, training=False))
    if portable is not model:
        _check_close(np.asarray(portable(x, training=False)), want, _PORTABLE_TOLERANCE,
                     f"portable rebuild of {model.name!r}")
    return portable, x, want


class Prepared(NamedTuple):
    """What an export of any size starts from (:func:`_prepare`)."""

    model: keras.Model       # the Keras model given (loaded from its file)
    source: object           # its file, or None (what the destination may not replace)
    path: str                # the checked destination
    shape: tuple             # (H, W, C), H and W None for any size
    portable: keras.Model    # the portable rebuild, checked against the model
    x: np.ndarray            # the probe images of the check
    want: np.ndarray         # the model's output on them
    what: str                # "<kind> export of 'name'", for messages


def _prepare(model, path, input_shape, overwrite: bool, kind: str, label: str) -> Prepared:
    """Loads and checks the model, ``input_shape`` and the destination, then rebuilds the
    model on portable ops and checks the rebuild (the exporters' shared first steps)."""
    from tfdeblur.export import destinations

    source = destinations._source_path(model)
    model = _load_keras(model)
    shape = _check_input_shape(input_shape, model)
    path = destinations._prepare_destination(path, overwrite, kind, source)
    portable, x, want = _verified_portable(model, shape)
    return Prepared(model, source, path, shape, portable, x, want,
                    f"{label} export of {model.name!r}")


def _rebuild_same_ops(model: keras.Model, input_shape) -> keras.Model:
    config = model.get_config()
    _set_input_shape(config, (None, *input_shape))
    copy = type(model).from_config(config)
    _copy_weights(model, copy)
    return copy


def _check_static_size(input_size) -> tuple[int, int]:
    return checks.check_size(input_size, "input_size")
