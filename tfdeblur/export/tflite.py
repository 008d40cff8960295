"""TFLite export for phones: one fixed size, TFLite builtin ops only, verified in LiteRT."""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf

from tfdeblur import _atomic
from tfdeblur import _validation as checks
from tfdeblur.export import _common, destinations, verify
from tfdeblur.export._common import (
    INPUT_NAME,
    OUTPUT_NAME,
    SIGNATURE_KEY,
    TOLERANCES,
    ExportError,
)
from tfdeblur.export.saved_model import _write_saved_model
from tfdeblur.ops.deform_conv import builtin_sampling

__all__ = ["QUANTIZATIONS", "calibration_images", "export_tflite"]

log = logging.getLogger(__name__)
# The int8 report (ops left in float, PSNR against float) goes to this logger at
# INFO; the CLI prints it.
report_log = logging.getLogger("tfdeblur.export.int8")

#: Accepted ``quantize`` values of :func:`export_tflite`.
QUANTIZATIONS = (None, "dynamic", "float16", "int8")
# An int8 model whose output is further than this from the float model's on the
# calibration images (median PSNR) is refused: something went wrong in the
# quantization (a tensor whose range the calibration did not see, say).
INT8_MIN_PSNR_DB = 25.0
#: Calibration crops taken from a folder when ``calibration_samples`` is not given.
DEFAULT_CALIBRATION_SAMPLES = 32


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


def _tflite_test_image(test_image, size: tuple[int, int], channels: int) -> np.ndarray:
    if test_image is None:
        return _common._probe_images(1, *size, channels)
    x = np.asarray(test_image)
    if x.ndim == 3:
        x = x[None]
    if x.shape != (1, *size, channels) or not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"test_image must be a float [H, W, C] image of input_size "
                         f"{size} with {channels} channels, got {x.dtype} {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("test_image has NaN or Inf values")
    return x.astype(np.float32)




def calibration_images(calibration, input_size: tuple[int, int], channels: int,
                       samples: int = DEFAULT_CALIBRATION_SAMPLES) -> np.ndarray:
    """The representative dataset: ``[N, H, W, C]`` float32 crops of ``input_size`` in [0, 1].

    From a folder (subfolders included) or a list of image files: at most
    ``samples`` crops at ``input_size`` (the export's ``(H, W)``), one per
    image from images spread over the sorted list when there are more images
    than that, else several per image on a grid over it. Grey images are
    repeated over three channels; for a 1-channel model colour images are
    turned grey (the mean). Images smaller than ``input_size`` are left out.
    From an array ``[N, H, W, C]`` (float in [0, 1]): used as it is.

    Raises:
        ValueError: no usable image (naming the folder), a bad array or argument.
        FileNotFoundError: the folder does not exist.
    """
    h, w = checks.check_size(input_size, "input_size")
    if isinstance(calibration, np.ndarray):
        x = calibration
        if (x.ndim != 4 or x.shape[1:] != (h, w, channels)
                or not np.issubdtype(x.dtype, np.floating) or not np.isfinite(x).all()
                or x.size == 0 or x.min() < 0 or x.max() > 1):
            raise ValueError(f"calibration must be a folder of images or a float array "
                             f"[N, {h}, {w}, {channels}] in [0, 1], got {x.dtype} {x.shape}")
        return x.astype(np.float32)
    from tfdeblur.data.io import read_image
    from tfdeblur.inference import list_images

    checks.check_int(samples, "calibration_samples")
    items = [calibration] if isinstance(calibration, (str, os.PathLike)) else list(calibration)
    files = list_images(items)
    # Images spread over the sorted list first, so that fewer crops than images
    # still sample all of it; as many usable images as crops at most.
    spread = list(dict.fromkeys(np.linspace(0, len(files) - 1, min(samples, len(files)))
                                .round().astype(int).tolist()))
    order = spread + [i for i in range(len(files)) if i not in set(spread)]
    usable, small = [], []
    for i in order:
        img = read_image(files[i])
        if img.shape[0] < h or img.shape[1] < w:
            small.append(os.path.basename(files[i]))
            continue
        usable.append(img.mean(axis=2, keepdims=True) if channels == 1 else img)
        if len(usable) == samples:
            break
    per_image = -(-samples // max(len(usable), 1))
    side = int(np.ceil(np.sqrt(per_image)))
    crops = []
    for img in usable:
        # Crop positions on a grid over the image, deterministic.
        ys = np.linspace(0, img.shape[0] - h, side).round().astype(int)
        xs = np.linspace(0, img.shape[1] - w, side).round().astype(int)
        spots = list(dict.fromkeys((y, x) for y in ys for x in xs))[:per_image]
        crops.extend(img[y:y + h, x:x + w] for y, x in spots)
    if small:
        log.warning("calibration: %d image(s) smaller than %dx%d left out: %s", len(small), h, w,
                    ", ".join(small[:5]) + (" ..." if len(small) > 5 else ""))
    if not crops:
        raise ValueError(f"calibration: no image in {calibration} is at least {h}x{w} "
                         f"(the export size)")
    return np.stack(crops[:samples]).astype(np.float32)


def _convert(saved_model_dir: str, quantize: str | None, select_tf_ops: bool,
             representative: np.ndarray | None = None, int8_io: bool = False) -> bytes:
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
    if quantize == "int8":
        # int8 kernels where TFLite has them; an op without one stays float
        # (reported after the conversion) rather than failing the export.
        converter.representative_dataset = lambda: (
            {INPUT_NAME: crop[None]} for crop in representative)
        if int8_io:
            converter.inference_input_type = tf.int8
            converter.inference_output_type = tf.int8
    try:
        with warnings.catch_warnings():
            # The converter's calibration step runs tf.lite.Interpreter, which warns
            # that it is deprecated (TensorFlow's own use; our runs use LiteRT).
            warnings.filterwarnings("ignore", message=r"(?s).*tf\.lite\.Interpreter is deprecated")
            return converter.convert()
    except Exception as e:  # noqa: BLE001 - ConverterError and friends
        lines = [ln for ln in str(e).splitlines() if ln.strip()]
        detail = "\n".join(lines[-12:])
        hint = ("" if select_tf_ops else
                " (some ops are not TFLite builtins; select_tf_ops=True would keep them as "
                "TensorFlow ops, which needs the Flex delegate on the device)")
        raise ExportError(f"TFLite conversion failed{hint}:\n{detail}") from e


def export_tflite(model_or_saved_model, path: str | os.PathLike, *,
                  input_size: Sequence[int], quantize: str | None = None,
                  calibration=None, calibration_samples: int = DEFAULT_CALIBRATION_SAMPLES,
                  int8_io: bool = False, overwrite: bool = False, select_tf_ops: bool = False,
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
    LiteRT's interpreter (``ai_edge_litert.interpreter.Interpreter``) and its
    output on ``test_image`` must match the Keras model (or the SavedModel)
    within a tolerance relative to ``max(1, max |output|)``: 1e-4 without
    quantization, 1e-2 for float16 weights, 5e-2 for dynamic-range (int8
    weight) quantization. A full-integer (``"int8"``) model is judged on the
    calibration images instead: the median PSNR of its output against the
    float model's must be at least ``INT8_MIN_PSNR_DB`` (25 dB); the ops
    that stayed float and that PSNR are logged (logger
    ``tfdeblur.export.int8``, INFO; ``tfdeblur export`` prints them).

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
            kernels; about 4x smaller), ``"float16"`` (float16 weights, 2x
            smaller, computed in float32 or on a float16 GPU delegate) or
            ``"int8"`` (int8 weights and activations with scales from
            ``calibration``, for integer-only accelerators; an op without an
            int8 kernel stays float).
        calibration: for ``"int8"`` only (and required there): a folder of
            images (or a list of files) to take the representative crops
            from (see :func:`calibration_images`), or a float array
            ``[N, H, W, C]`` of crops at ``input_size``.
        calibration_samples: at most how many crops to take from the folder.
        int8_io: with ``"int8"``: int8 input and output tensors (their scale
            and zero point in the tensor details) instead of float32.
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
        >>> export_tflite(model, "lmfn_256.tflite", input_size=(256, 256),
        ...               quantize="int8", calibration="photos/")
        '/.../lmfn_256.tflite'
    """
    if quantize not in QUANTIZATIONS:
        raise ValueError(f"quantize must be one of {QUANTIZATIONS}, got {quantize!r}")
    if (calibration is not None) != (quantize == "int8"):
        raise ValueError("calibration is needed for quantize='int8' and applies to it only, "
                         f"got quantize={quantize!r} and calibration={calibration!r}")
    if int8_io and quantize != "int8":
        raise ValueError(f"int8_io applies to quantize='int8' only, got quantize={quantize!r}")
    if _is_saved_model(model_or_saved_model):
        source_model = _SavedModelSource(os.fspath(model_or_saved_model))
        keras_model = None
        size = _common._check_static_size(input_size)
        source_model.check_size(size)
        channels = int(source_model.spec.shape[-1])
        name = source_model.name
    else:
        keras_model = _common._load_keras(model_or_saved_model)
        size = _common._check_input_size(input_size, keras_model)
        channels = _common._channels(keras_model)
        name = keras_model.name
    x = _tflite_test_image(test_image, size, channels)
    crops = (None if calibration is None
             else calibration_images(calibration, size, channels, calibration_samples))
    source = destinations._source_path(model_or_saved_model)
    path = destinations._prepare_destination(path, overwrite, "tflite", source)
    what = f"TFLite conversion of {name!r} at {size[0]}x{size[1]}"
    batch_shape = (1, *size, channels)
    with _atomic.work_folder(path) as work:
        saved = os.path.join(work, "saved_model")  # intermediate, not published
        if keras_model is not None:
            portable, _, want = _common._verified_portable(keras_model, (*size, channels), x)
            with builtin_sampling():   # gathers, not crop_and_resize: TFLite builtins
                _write_saved_model(portable, saved, batch_shape, image_signature=False)
            reference = portable
        else:
            try:
                want = np.asarray(source_model(x))
            except tf.errors.InvalidArgumentError as e:
                raise ValueError(f"input_size {size}: the SavedModel {source_model.path} rejects "
                                 f"this size: {e.message.strip()}") from e
            _write_static_saved_model(source_model, saved, batch_shape)
            reference = source_model
        try:
            flat = _convert(saved, quantize, select_tf_ops, crops, int8_io)
        except ExportError as e:
            if keras_model is not None:
                raise
            # A SavedModel for any image size keeps its while loops' lists of
            # unknown element shape (SVDN's deformable convolution, in both of its
            # samplers), and a crop_and_resize: from the Keras model the network
            # is traced again at the fixed size with TFLite builtins.
            raise ExportError(f"{e}\nConvert the Keras model (.keras file) instead of the "
                              f"SavedModel: the exporter then traces it at {size[0]}x{size[1]} "
                              f"with TFLite builtins only.") from e
        new = os.path.join(work, "model.tflite")
        with open(new, "wb") as f:
            f.write(flat)
            f.flush()
            os.fsync(f.fileno())
        int8 = quantize == "int8"
        # int8: the builtin kernels here, XNNPACK in a child (see verify.xnnpack_problem).
        err, ops, interpreter, _ = verify.verify_tflite(
            new, x, want, None if int8 else TOLERANCES[quantize], select_tf_ops, what,
            xnnpack=not int8)
        if int8:
            _check_int8(interpreter, reference, crops, what, len(flat))
            problem = verify.xnnpack_problem(new)
            if problem is not None:
                report_log.warning(
                    "int8: LiteRT's default XNNPACK CPU delegate cannot run this model (%s); "
                    "it runs with the builtin kernels (Interpreter(..., experimental_op_"
                    "resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)) or "
                    "another delegate", problem)
        destinations._publish(new, path, "tflite", overwrite, source)
    log.info("%s: wrote %s (%d bytes, quantize=%s, max relative difference %.2g; ops: %s)",
             what, path, len(flat), quantize, err, ", ".join(ops))
    return path


def _check_int8(interpreter, reference, crops: np.ndarray, what: str, size: int) -> None:
    """Measures the int8 model against the float one on the calibration crops."""
    scores = []
    for crop in crops:
        want = np.asarray(reference(crop[None], training=False) if isinstance(
            reference, keras.Model) else reference(crop[None]))
        scores.append(verify.psnr(verify.run_tflite(interpreter, crop[None]), want))
    median = float(np.median(scores))
    floats = verify.float_ops(interpreter)
    report_log.info("int8: %d bytes; ops left in float: %s; PSNR of the int8 output against "
                    "the float output on %d calibration crops: median %.2f dB (min %.2f)",
                    size, ", ".join(floats) if floats else "none", len(scores), median,
                    min(scores))
    if not median >= INT8_MIN_PSNR_DB:
        raise ExportError(f"{what}: the int8 model's output is {median:.1f} dB (median PSNR on "
                          f"{len(scores)} calibration crops) from the float model's, below "
                          f"{INT8_MIN_PSNR_DB:g} dB; calibrate with images like the ones it "
                          f"will see, or use quantize='dynamic'")
