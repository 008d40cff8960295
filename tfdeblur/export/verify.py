"""Checks an export must pass before it is published: each runtime against the Keras model.

- SavedModel: loaded in a fresh Python process that never imports tfdeblur
  (what TF Serving sees): both signatures, an empty batch, the warm-up records.
- TFLite: run in LiteRT's interpreter (``ai_edge_litert``), builtin ops only.
- ONNX: run in ONNX Runtime.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import warnings

import numpy as np

from tfdeblur import _atomic
from tfdeblur.export._common import (
    IMAGE_INPUT_NAME,
    IMAGE_OUTPUT_NAME,
    IMAGE_SIGNATURE_KEY,
    INPUT_NAME,
    OUTPUT_NAME,
    SIGNATURE_KEY,
    TOLERANCES,
    WARMUP_FILE,
    ExportError,
    _check_close,
)

__all__ = ["float_ops", "psnr", "run_tflite", "tflite_interpreter", "tflite_ops",
           "xnnpack_problem"]

_SUBPROCESS_TIMEOUT_S = 600


# ------------------------------------------------------------------ SavedModel

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
import json, os, sys
import numpy as np
import tensorflow as tf
from tensorflow.python.framework import op_def_registry

path, work, key, inp, out, image_key, image_inp, image_out, warmup = sys.argv[1:10]
loaded = tf.saved_model.load(path)
fn = loaded.signatures[key]
x = np.load(os.path.join(work, "x.npy"))
np.save(os.path.join(work, "y.npy"), fn(**{inp: tf.constant(x)})[out].numpy())
empty = fn(**{inp: tf.constant(x[:0])})[out].numpy()
report = {"empty_batch_shape": list(empty.shape)}
with open(os.path.join(work, "images.json")) as f:
    names = json.load(f)
if names:
    images = loaded.signatures[image_key]
    data = []
    for name in names:
        with open(os.path.join(work, "in_" + name), "rb") as f:
            data.append(f.read())
    pngs = images(**{image_inp: tf.constant(data)})[image_out].numpy()
    for name, png in zip(names, pngs):
        with open(os.path.join(work, "out_" + name + ".png"), "wb") as f:
            f.write(png)
    report["image_empty_batch_shape"] = list(
        images(**{image_inp: tf.constant([], tf.string)})[image_out].shape)
report["warmup"] = []
if os.path.exists(os.path.join(path, warmup)):
    from tensorflow_serving.apis import prediction_log_pb2
    for record in tf.data.TFRecordDataset(os.path.join(path, warmup)):
        request = prediction_log_pb2.PredictionLog.FromString(record.numpy()).predict_log.request
        signature = request.model_spec.signature_name or "serving_default"
        outputs = loaded.signatures[signature](
            **{k: tf.constant(tf.make_ndarray(v)) for k, v in request.inputs.items()})
        report["warmup"].append([signature, sorted(outputs)])
report["tfdeblur_imported"] = any(m == "tfdeblur" or m.startswith("tfdeblur.")
                                  for m in sys.modules)
report["custom_ops_registered"] = [o for o in ("TfDeblur>GatedRecurrence",
                                               "TfDeblur>ModulatedDeformConv2D")
                                   if op_def_registry.get(o) is not None]
print(json.dumps(report))
"""


def image_cases(x: np.ndarray, channels: int) -> dict[str, tuple[bytes, np.ndarray]]:
    """Encoded test images for ``deblur_image`` from one float image ``[H, W, C]``.

    Returns ``{name: (file bytes, the samples tfdeblur's reader gives for it)}``:
    for a 3-channel model RGB, grey, grey with alpha, RGBA, 16-bit RGB PNGs and
    a JPEG; for a 1-channel model a grey PNG.
    """
    import cv2  # tfdeblur's image reader decodes with OpenCV
    import tensorflow as tf

    rgb8 = np.rint(np.clip(x[..., :channels], 0, 1) * 255).astype(np.uint8)
    h, w = rgb8.shape[:2]
    alpha = (np.add.outer(np.arange(h), np.arange(w)) * 37 % 256).astype(np.uint8)[..., None]
    if channels == 1:
        return {"grey.png": (tf.io.encode_png(rgb8).numpy(), rgb8[..., 0])}
    grey = rgb8[..., 1:2]
    rgb16 = np.rint(np.clip(x[..., :3], 0, 1) * 65535).astype(np.uint16)
    jpeg = tf.io.encode_jpeg(rgb8, quality=90).numpy()
    return {
        "rgb.png": (tf.io.encode_png(rgb8).numpy(), rgb8),
        "grey.png": (tf.io.encode_png(grey).numpy(), grey[..., 0]),
        # tfdeblur's reader gives grey with alpha as RGBA.
        "grey_alpha.png": (tf.io.encode_png(np.concatenate([grey, alpha], 2)).numpy(),
                           np.concatenate([np.repeat(grey, 3, 2), alpha], 2)),
        "rgba.png": (tf.io.encode_png(np.concatenate([rgb8, alpha], 2)).numpy(),
                     np.concatenate([rgb8, alpha], 2)),
        "rgb16.png": (tf.io.encode_png(rgb16).numpy(), rgb16),
        "photo.jpg": (jpeg, cv2.cvtColor(cv2.imdecode(np.frombuffer(jpeg, np.uint8),
                                                      cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)),
    }


def expected_pngs(model, images: dict[str, tuple[bytes, np.ndarray]]) -> dict[str, np.ndarray]:
    """What ``tfdeblur deblur`` writes as an 8-bit PNG for each image, ``[H, W, C]`` uint8."""
    from tfdeblur.inference import deblur_image

    out = {}
    for name, (_, stored) in images.items():
        y = deblur_image(model, stored)
        y = y[..., None] if y.ndim == 2 else y
        out[name] = np.rint(np.clip(y, 0, 1) * 255).astype(np.uint8)
    return out


def verify_without_tfdeblur(directory: str, x: np.ndarray, want: np.ndarray, what: str,
                            work: str | None = None, *,
                            images: dict[str, tuple[bytes, np.ndarray]] | None = None,
                            expected: dict[str, np.ndarray] | None = None) -> float:
    """Loads the SavedModel in a process without tfdeblur; ExportError when it differs.

    Checks ``serving_default`` on ``x`` against ``want`` (and an empty
    batch), ``deblur_image`` on ``images`` against ``expected`` (within one
    8-bit level), and replays the warm-up records.

    Returns:
        The largest difference of ``serving_default``'s output, relative to
        ``max(1, max |want|)``.
    """
    images = images or {}
    with contextlib.ExitStack() as stack:
        if work is None:
            work = stack.enter_context(_atomic.work_folder(directory))
        np.save(os.path.join(work, "x.npy"), x)
        for name, (data, _) in images.items():
            with open(os.path.join(work, "in_" + name), "wb") as f:
                f.write(data)
        with open(os.path.join(work, "images.json"), "w") as f:
            json.dump(sorted(images), f)
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        env.update(TFDEBLUR_DISABLE_COMPILED="1", TF_CPP_MIN_LOG_LEVEL="2")
        # The child exits when this process does (see _EXIT_WITH_PARENT): it
        # holds the read end of a pipe whose only write end stays here.
        read_fd, write_fd = os.pipe()
        stack.callback(os.close, write_fd)
        stack.callback(os.close, read_fd)
        # -I: no PYTHONPATH, no user site, no current folder on sys.path.
        cmd = [sys.executable, "-I", "-c", _EXIT_WITH_PARENT + _LOAD_WITHOUT_TFDEBLUR,
               str(read_fd), directory, work, SIGNATURE_KEY, INPUT_NAME, OUTPUT_NAME,
               IMAGE_SIGNATURE_KEY, IMAGE_INPUT_NAME, IMAGE_OUTPUT_NAME, WARMUP_FILE]
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
        err = _check_close(np.load(os.path.join(work, "y.npy")), want, TOLERANCES[None], what)
        if images:
            if report["image_empty_batch_shape"] != [0]:
                raise ExportError(f"{what}: {IMAGE_SIGNATURE_KEY} gave shape "
                                  f"{report['image_empty_batch_shape']} for an empty batch")
            for name in sorted(images):
                with open(os.path.join(work, "out_" + name + ".png"), "rb") as f:
                    _check_png(f.read(), expected[name], f"{what}, {IMAGE_SIGNATURE_KEY} on {name}")
        if os.path.exists(os.path.join(directory, WARMUP_FILE)):
            signatures = sorted(s for s, _ in report["warmup"])
            if signatures != sorted([IMAGE_SIGNATURE_KEY, SIGNATURE_KEY]):
                raise ExportError(f"{what}: the warm-up records cover {signatures}, expected "
                                  f"one for each signature")
        return err


def _check_png(png: bytes, want: np.ndarray, what: str) -> None:
    import tensorflow as tf

    try:
        got = tf.io.decode_png(png, channels=0, dtype=tf.uint8).numpy()
    except tf.errors.InvalidArgumentError as e:
        raise ExportError(f"{what}: the output is not a PNG ({e.message})") from e
    if got.shape != want.shape:
        raise ExportError(f"{what}: output PNG of shape {got.shape}, expected {want.shape}")
    diff = np.abs(got.astype(np.int16) - want.astype(np.int16))
    # Rounding to 8 bits turns a 1e-6 difference at a half level into one level.
    if diff.max(initial=0) > 1 or (diff > 0).mean() > 0.01:
        raise ExportError(f"{what}: differs from tfdeblur deblur's output by up to "
                          f"{int(diff.max())} levels on {(diff > 0).mean():.1%} of the samples")


# ---------------------------------------------------------------------- TFLite


def tflite_interpreter(model_path: str | None = None, model_content: bytes | None = None,
                       num_threads: int | None = None, xnnpack: bool = True):
    """LiteRT's interpreter (``ai_edge_litert``) for a ``.tflite`` file or its bytes.

    ``xnnpack=False``: TFLite's builtin kernels only, without the XNNPACK CPU
    delegate LiteRT applies by default.
    """
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    kwargs = {} if xnnpack else {
        "experimental_op_resolver_type": OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES}
    return Interpreter(model_path=model_path, model_content=model_content,
                       num_threads=num_threads, **kwargs)


# LiteRT 2.3's XNNPACK delegate aborts the process ("double free") on some int8
# models it cannot prepare (TensorFlow's interpreter says "failed to create XNNPACK
# runtime" for the same file), so int8 files are probed with it in a child process.
_XNNPACK_PROBE = r"""
import sys
from ai_edge_litert.interpreter import Interpreter
Interpreter(model_path=sys.argv[1]).allocate_tensors()
"""


def xnnpack_problem(file: str) -> str | None:
    """Why LiteRT's default XNNPACK delegate cannot run ``file`` (checked in a child), or None."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    try:
        done = subprocess.run([sys.executable, "-I", "-c", _XNNPACK_PROBE, file], env=env,
                              capture_output=True, text=True, timeout=_SUBPROCESS_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return f"preparing it took more than {_SUBPROCESS_TIMEOUT_S} s"
    if done.returncode == 0:
        return None
    lines = [ln for ln in done.stderr.splitlines()
             if ln.strip() and not ln.startswith(("  ", "Extension modules", "Current thread"))]
    return f"exit {done.returncode}: " + " ".join(lines[-2:])[-300:]


def tflite_ops(interpreter) -> list[str]:
    """The op names of a TFLite model, sorted and unique."""
    # No public API lists a model's ops; this private one has been stable since
    # TF 2.4 and is the same in ai_edge_litert.
    try:
        return sorted({d["op_name"] for d in interpreter._get_ops_details()})
    except Exception:  # noqa: BLE001
        return []


def float_ops(interpreter) -> list[str]:
    """The ops of a quantized model that compute in floating point (sorted, unique).

    An op computes in float when one of its non-constant inputs or outputs is
    float; QUANTIZE and DEQUANTIZE (the edges of the integer part) are not counted.
    """
    out = set()
    for d in interpreter._get_ops_details():
        if d["op_name"] in ("QUANTIZE", "DEQUANTIZE"):
            continue
        types = list(d.get("operand_types", [])) + list(d.get("result_types", []))
        if any(np.dtype(t).kind == "f" for t in types):
            out.add(d["op_name"])
    return sorted(out)


def run_tflite(interpreter, x: np.ndarray) -> np.ndarray:
    """Runs the ``serving_default`` signature on a float image batch in [0, 1].

    An int8 input or output (``--int8-io``) is quantized and dequantized with
    the tensor's scale and zero point, so that the result is comparable.
    """
    runner = interpreter.get_signature_runner(SIGNATURE_KEY)
    inp = runner.get_input_details()[INPUT_NAME]
    out = runner.get_output_details()[OUTPUT_NAME]
    data = np.asarray(x, np.float32)
    if inp["dtype"] != np.float32:
        scale, zero = inp["quantization"]
        info = np.iinfo(inp["dtype"])
        data = np.clip(np.rint(data / scale + zero), info.min, info.max).astype(inp["dtype"])
    y = runner(**{INPUT_NAME: data})[OUTPUT_NAME]
    if out["dtype"] != np.float32:
        scale, zero = out["quantization"]
        y = (y.astype(np.float32) - zero) * scale
    return np.asarray(y, np.float32)


def verify_tflite(file: str, x: np.ndarray, want: np.ndarray, tolerance: float | None,
                  select_tf_ops: bool, what: str, xnnpack: bool = True
                  ) -> tuple[float, list[str], object, np.ndarray]:
    """Runs the ``.tflite`` file in LiteRT; ExportError on failure or a difference.

    ``tolerance`` None skips the comparison (full-integer models are judged
    by PSNR instead). ``xnnpack=False`` runs TFLite's builtin kernels.

    Returns:
        ``(relative difference, op names, the interpreter, its output)``.
    """
    try:
        interpreter = tflite_interpreter(file, xnnpack=xnnpack)
    except (RuntimeError, ValueError) as e:
        raise ExportError(f"{what}: LiteRT's Interpreter cannot load the converted model: "
                          f"{e}") from e
    ops = tflite_ops(interpreter)
    flex = [op for op in ops if op.startswith("Flex") or op == "CUSTOM"]
    if flex and not select_tf_ops:
        raise ExportError(f"{what}: the model contains non-builtin ops {flex}")
    try:
        interpreter.allocate_tensors()
        got = run_tflite(interpreter, x)
    except (RuntimeError, ValueError, KeyError) as e:
        raise ExportError(f"{what}: the converted model does not run in LiteRT's Interpreter: "
                          f"{e}") from e
    if tolerance is None:
        if got.shape != want.shape or not np.isfinite(got).all():
            raise ExportError(f"{what}: output of shape {got.shape} (expected {want.shape}) "
                              f"or with NaN/Inf values")
        return float("nan"), ops, interpreter, got
    return _check_close(got, want, tolerance, what), ops, interpreter, got


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of two images in [0, 1] (both clipped to it), data range 1."""
    a = np.clip(np.asarray(a, np.float64), 0, 1)
    b = np.clip(np.asarray(b, np.float64), 0, 1)
    mse = float(np.mean((a - b) ** 2))
    return float("inf") if mse == 0 else 10.0 * float(np.log10(1.0 / mse))


# ------------------------------------------------------------------------ ONNX


def verify_onnx(model_bytes: bytes, x: np.ndarray, want: np.ndarray, what: str) -> float:
    """Runs the ONNX model in ONNX Runtime (CPU); ExportError above 1e-4 (relative)."""
    import onnxruntime as ort

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            session = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
        got = session.run([OUTPUT_NAME], {INPUT_NAME: np.asarray(x, np.float32)})[0]
    except Exception as e:  # noqa: BLE001 - onnxruntime raises its own exception types
        raise ExportError(f"{what}: the ONNX model does not load or run in ONNX Runtime: "
                          f"{e}") from e
    return _check_close(np.asarray(got), want, TOLERANCES[None], what)
