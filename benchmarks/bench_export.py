"""Export cost, file sizes and CPU latency of SavedModel and TFLite exports of every network.

For each model (paper configuration unless ``--tiny``) prints one row per
export: the time :func:`tfdeblur.export.export_saved_model` /
:func:`tfdeblur.export.convert_tflite` take (verification included), the
size on disk, the largest difference from the Keras model on a test image
(relative to ``max(1, max |output|)``), and the CPU latency of one
``[1, H, W, 3]`` frame (median of ``--repeats`` runs after one warm-up):
the Keras model (``implementation="auto"``, in a ``tf.function``), the
SavedModel's ``serving_default`` signature, and ``tf.lite.Interpreter``
with ``--threads`` threads (XNNPACK, TFLite's default CPU delegate). An
export that fails (e.g. SVDN to TFLite, see the README's Export section) is
listed with its error.

Usage::

    python benchmarks/bench_export.py                          # 256x256, paper models
    python benchmarks/bench_export.py --size 64x64 --repeats 2 --models lmfn svrnn
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

import tfdeblur.models  # noqa: E402
from tfdeblur.export import ExportError, convert_tflite, export_saved_model  # noqa: E402

TINY = {
    "svrnn": dict(width=4, weight_width=2, num_rnns=2),
    "svdn": dict(width=2, dilation_rates=(1, 2), kernel_size=3, offset_hidden=2, head_width=2),
    "lmfn": dict(width=8, num_blocks=2),
}


def _median_ms(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def _rel_err(got, want) -> float:
    return float(np.max(np.abs(np.asarray(got, np.float64) - want))) / max(
        1.0, float(np.max(np.abs(want))))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", nargs="+", default=["lmfn", "svdn", "svrnn"])
    p.add_argument("--size", default="256x256", help="HxW of the frame (TFLite size)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=2, help="TFLite interpreter threads")
    p.add_argument("--tiny", action="store_true", help="the tests' tiny variants")
    args = p.parse_args(argv)
    h, w = (int(v) for v in args.size.lower().split("x"))
    rng = np.random.default_rng(0)
    x = rng.random((1, h, w, 3)).astype("float32")

    print(f"TensorFlow {tf.__version__}, frame [1, {h}, {w}, 3], {os.cpu_count()} CPUs, "
          f"median of {args.repeats} runs, TFLite threads {args.threads}\n")
    print("| model | export | time s | size MB | max rel. diff | CPU ms | Keras CPU ms |")
    print("|---|---|---:|---:|---:|---:|---:|")
    work = tempfile.mkdtemp(prefix="bench-export-")
    try:
        for name in args.models:
            model = tfdeblur.models.build(name, **(TINY[name] if args.tiny else {}))
            keras_fn = tf.function(lambda t, m=model: m(t, training=False))
            want = np.asarray(keras_fn(x))
            keras_ms = _median_ms(lambda f=keras_fn: f(x).numpy(), args.repeats)

            start = time.perf_counter()
            path = export_saved_model(model, os.path.join(work, name, "1"))
            seconds = time.perf_counter() - start
            fn = tf.saved_model.load(path).signatures["serving_default"]
            got = fn(blurry=tf.constant(x))["sharp"]
            ms = _median_ms(lambda f=fn: f(blurry=tf.constant(x))["sharp"].numpy(),
                            args.repeats)
            size = sum(os.path.getsize(os.path.join(d, f))
                       for d, _, files in os.walk(path) for f in files)
            print(f"| {name} | SavedModel | {seconds:.1f} | {size / 1e6:.2f} | "
                  f"{_rel_err(got, want):.1e} | {ms:.1f} | {keras_ms:.1f} |", flush=True)

            for quantize in (None, "float16", "dynamic"):
                label = f"TFLite {quantize or 'float32'}"
                file = os.path.join(work, f"{name}_{quantize}.tflite")
                start = time.perf_counter()
                try:
                    convert_tflite(model, file, input_size=(h, w), quantize=quantize,
                                   test_image=x[0])
                except ExportError as e:
                    first = str(e).splitlines()[0]
                    print(f"| {name} | {label} | failed: {first[:160]} | | | | |", flush=True)
                    break
                seconds = time.perf_counter() - start
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    interpreter = tf.lite.Interpreter(model_path=file,
                                                      num_threads=args.threads)
                runner = interpreter.get_signature_runner()
                got = runner(blurry=x)["sharp"]
                ms = _median_ms(lambda r=runner: r(blurry=x), args.repeats)
                print(f"| {name} | {label} | {seconds:.1f} | {os.path.getsize(file) / 1e6:.2f} "
                      f"| {_rel_err(got, want):.1e} | {ms:.1f} | {keras_ms:.1f} |", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
