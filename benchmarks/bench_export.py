"""Exports against the Keras model: CPU latency side by side, and export cost, size, TFLite.

Two tables, chosen with ``--table``:

``latency`` (default): for each network and frame size, the forward time of
one ``[1, H, W, 3]`` frame, measured side by side in one process:

* **Keras compiled**: the Keras model with the compiled ops
  (``implementation="auto"``), called in a ``tf.function`` for that shape;
* **Keras portable**: the same network with the portable (stock TensorFlow)
  twins of the ops, :func:`tfdeblur.export.portable_model`, same weights;
* **SavedModel**: the export of :func:`tfdeblur.export.export_saved_model`
  (portable ops, any image size), loaded with ``tf.saved_model.load`` and
  called through ``serving_default``.

Each is warmed up (``--warmup`` calls, tracing included), then the three are
called in turn ``--repeats`` times, so that a change in the machine's load
hits all three alike; the table shows medians (ms) and the ratio to Keras
compiled. The issue's goal is a SavedModel within 1.3x of Keras compiled.

``exports``: for each network one row per export: the time
:func:`~tfdeblur.export.export_saved_model` and the TFLite conversion take
(verification included), the size on disk, the largest difference from the
Keras model on a test image (relative to ``max(1, max |output|)``), and the
CPU latency of one frame: SavedModel ``serving_default`` and
``tf.lite.Interpreter`` with ``--threads`` threads (XNNPACK). A conversion
that fails (e.g. SVDN to TFLite, see the README's Export section) is listed
with its error.

Usage::

    python benchmarks/bench_export.py              # svdn, svrnn at 256x448 and 720x1280
    python benchmarks/bench_export.py --models svdn --sizes 64x96 --repeats 3 --tiny
    python benchmarks/bench_export.py --table exports --sizes 256x256 --models lmfn svrnn
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import tfdeblur.export as tfx  # noqa: E402
import tfdeblur.models  # noqa: E402
from tfdeblur.export import export_saved_model, portable_model  # noqa: E402
from tfdeblur.ops import compiled_available, compiled_unavailable_reason  # noqa: E402

TINY = {
    "svrnn": dict(width=4, weight_width=2, num_rnns=2),
    "svdn": dict(width=2, dilation_rates=(1, 2), kernel_size=3, offset_hidden=2, head_width=2),
    "lmfn": dict(width=8, num_blocks=2),
}


def _size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"a size is HxW, e.g. 256x448, got {text!r}") from None
    if h < 1 or w < 1:
        raise argparse.ArgumentTypeError(f"a size must be positive, got {text!r}")
    return h, w


def _rel_err(got, want) -> float:
    return float(np.max(np.abs(np.asarray(got, np.float64) - want))) / max(
        1.0, float(np.max(np.abs(want))))


def _keras_fn(model):
    fn = tf.function(lambda t: model(t, training=False))
    return lambda x: fn(x).numpy()


def _saved_model_fn(path: str):
    signature = tf.saved_model.load(path).signatures["serving_default"]
    return lambda x: signature(blurry=x)["sharp"].numpy()


def _side_by_side(fns: dict, x: tf.Tensor, warmup: int, repeats: int) -> dict:
    """Median seconds of each function, called in turn ``repeats`` times after warm-up."""
    for fn in fns.values():
        for _ in range(warmup):
            fn(x)
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn(x)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def latency_table(args, work: str) -> None:
    if not compiled_available():
        print(f"note: the compiled library is not loaded ({compiled_unavailable_reason()}); "
              "'Keras compiled' runs the portable ops too\n")
    print("| model | frame | Keras compiled ms | Keras portable ms | SavedModel ms | "
          "portable / compiled | SavedModel / compiled | max rel. diff |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    rng = np.random.default_rng(0)
    for name in args.models:
        model = tfdeblur.models.build(name, **(TINY[name] if args.tiny else {}))
        portable = portable_model(model)
        start = time.perf_counter()
        path = export_saved_model(model, os.path.join(work, name, "1"))
        print(f"<!-- {name}: SavedModel exported in {time.perf_counter() - start:.0f} s -->",
              flush=True)
        fns = {"compiled": _keras_fn(model), "portable": _keras_fn(portable),
               "saved_model": _saved_model_fn(path)}
        for h, w in args.sizes:
            x = tf.constant(rng.random((1, h, w, 3)).astype("float32"))
            want = fns["compiled"](x)
            diff = max(_rel_err(fns[k](x), want) for k in ("portable", "saved_model"))
            t = _side_by_side(fns, x, args.warmup, args.repeats)
            base = t["compiled"]
            print(f"| {name} | {h}x{w} | {1e3 * base:.0f} | {1e3 * t['portable']:.0f} | "
                  f"{1e3 * t['saved_model']:.0f} | {t['portable'] / base:.2f}x | "
                  f"{t['saved_model'] / base:.2f}x | {diff:.1e} |", flush=True)


def exports_table(args, work: str) -> None:
    convert_tflite = getattr(tfx, "export_tflite", None) or tfx.convert_tflite
    export_error = getattr(tfx, "ExportError", RuntimeError)
    h, w = args.sizes[0]
    x = np.random.default_rng(0).random((1, h, w, 3)).astype("float32")
    print("| model | export | time s | size MB | max rel. diff | CPU ms | Keras CPU ms |")
    print("|---|---|---:|---:|---:|---:|---:|")

    def median_ms(fn) -> float:
        return 1e3 * _side_by_side({"f": fn}, x, args.warmup, args.repeats)["f"]

    for name in args.models:
        model = tfdeblur.models.build(name, **(TINY[name] if args.tiny else {}))
        keras_fn = _keras_fn(model)
        want = keras_fn(x)
        keras_ms = median_ms(keras_fn)

        start = time.perf_counter()
        path = export_saved_model(model, os.path.join(work, name, "1"))
        seconds = time.perf_counter() - start
        fn = _saved_model_fn(path)
        size = sum(os.path.getsize(os.path.join(d, f))
                   for d, _, files in os.walk(path) for f in files)
        print(f"| {name} | SavedModel | {seconds:.1f} | {size / 1e6:.2f} | "
              f"{_rel_err(fn(x), want):.1e} | {median_ms(fn):.1f} | {keras_ms:.1f} |", flush=True)

        for quantize in (None, "float16", "dynamic"):
            label = f"TFLite {quantize or 'float32'}"
            file = os.path.join(work, f"{name}_{quantize}.tflite")
            start = time.perf_counter()
            try:
                convert_tflite(model, file, input_size=(h, w), quantize=quantize,
                               test_image=x[0])
            except export_error as e:
                first = str(e).splitlines()[0]
                print(f"| {name} | {label} | failed: {first[:160]} | | | | |", flush=True)
                break
            seconds = time.perf_counter() - start
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                interpreter = tf.lite.Interpreter(model_path=file, num_threads=args.threads)
            runner = interpreter.get_signature_runner()
            got = runner(blurry=x)["sharp"]
            ms = median_ms(lambda _, r=runner: r(blurry=x))
            print(f"| {name} | {label} | {seconds:.1f} | {os.path.getsize(file) / 1e6:.2f} "
                  f"| {_rel_err(got, want):.1e} | {ms:.1f} | {keras_ms:.1f} |", flush=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--table", choices=("latency", "exports"), default="latency")
    p.add_argument("--models", nargs="+", default=None,
                   help="default: svdn svrnn (latency), lmfn svdn svrnn (exports)")
    p.add_argument("--sizes", nargs="+", type=_size, default=None,
                   help="HxW frames (default: 256x448 720x1280; exports: 256x256)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=2, help="TFLite interpreter threads")
    p.add_argument("--tiny", action="store_true", help="the tests' tiny variants")
    args = p.parse_args(argv)
    if args.warmup < 1 or args.repeats < 1:
        p.error("--warmup and --repeats must be >= 1")
    latency = args.table == "latency"
    args.models = args.models or (["svdn", "svrnn"] if latency else ["lmfn", "svdn", "svrnn"])
    args.sizes = args.sizes or ([(256, 448), (720, 1280)] if latency else [(256, 256)])
    threads = tf.config.threading.get_intra_op_parallelism_threads() or os.cpu_count()
    print(f"TensorFlow {tf.__version__}, {os.cpu_count()} CPUs (intra-op threads {threads}), "
          f"batch 1, {args.warmup} warm-up calls, median of {args.repeats} runs"
          f"{', tiny models' if args.tiny else ', paper models'}\n")
    work = tempfile.mkdtemp(prefix="bench-export-")
    try:
        (latency_table if latency else exports_table)(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
