"""TFLite exports per network and quantization: file size, LiteRT CPU latency, PSNR vs float.

For each model (the bundled ``lmfn_bundled`` and tiny SVRNN / SVDN / LMFN
variants with random weights by default) and each quantization of
:func:`tfdeblur.export.export_tflite` (float32, float16 weights,
dynamic-range int8 weights, full-integer int8 with float32 I/O and with
int8 I/O), this exports a ``.tflite`` file for ``--input-size`` and prints:

- ``size``: the file size;
- ``latency``: the median wall time of one ``invoke()`` in LiteRT's
  interpreter (``ai_edge_litert``; its default XNNPACK CPU delegate, or the
  builtin kernels where XNNPACK cannot run an int8 file; ``--threads``
  threads) over ``--repeats`` runs after one warm-up run, and its ratio to
  the float32 file of the same model (measured in the same process, one
  after the other);
- ``PSNR vs float``: the median over the calibration crops of the PSNR
  (data range 1, outputs clipped to [0, 1]) of the file's output against the
  float Keras model's (float32 exports: rounding only, usually above 80 dB).

The calibration crops (``--samples`` at ``--input-size``, spread over the images of
``--calibration``, a folder or files; by default a grid over the real blurry
1280x720 GoPro frame of ``../shared/data``) are the
int8 representative dataset and the evaluation images alike, which is what
the export itself reports; ``--eval FOLDER`` measures on other images.

Usage::

    python benchmarks/bench_tflite.py                            # the README table
    python benchmarks/bench_tflite.py --models lmfn_bundled --input-size 256x256 --repeats 20
    python benchmarks/bench_tflite.py --models svdn --quick     # smoke test
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)

import keras  # noqa: E402
import numpy as np  # noqa: E402

import tfdeblur  # noqa: E402
import tfdeblur.models  # noqa: E402
from tfdeblur.export import calibration_images, export_tflite  # noqa: E402
from tfdeblur.export.verify import (  # noqa: E402
    psnr,
    run_tflite,
    tflite_interpreter,
    xnnpack_problem,
)

# One real dynamic-scene blurry GoPro frame, 1280x720: crops of it calibrate and evaluate.
DEFAULT_DATA = os.path.join(os.path.dirname(REPO), "shared", "data", "gopro_blurry_720p.png")
# Tiny variants (random weights): every part of each network, a few k parameters.
TINY = {
    "svrnn": dict(width=8, weight_width=4, num_rnns=2),
    "svdn": dict(width=8, dilation_rates=(1, 2), kernel_size=3, offset_hidden=8, head_width=8),
    "lmfn": dict(width=16, num_blocks=2),
}
VARIANTS = [("float32", None, False), ("float16", "float16", False),
            ("dynamic", "dynamic", False), ("int8", "int8", False),
            ("int8, int8 I/O", "int8", True)]


def _model(name: str) -> tuple[keras.Model, str]:
    if name in TINY:
        keras.utils.set_random_seed(0)
        kw = TINY[name]
        return tfdeblur.models.build(name, **kw), f"{name} tiny ({kw['width']} wide, random)"
    return tfdeblur.load(name), name


def _latency(path: str, x: np.ndarray, repeats: int, threads: int, xnnpack: bool) -> float:
    """Median seconds of one invoke() (the input set once, in the file's input type)."""
    interpreter = tflite_interpreter(path, num_threads=threads, xnnpack=xnnpack)
    interpreter.allocate_tensors()
    inp = interpreter.get_input_details()[0]
    data = x.astype(np.float32)
    if inp["dtype"] != np.float32:
        scale, zero = inp["quantization"]
        data = np.clip(np.rint(data / scale + zero), -128, 127).astype(inp["dtype"])
    interpreter.set_tensor(inp["index"], data)
    interpreter.invoke()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        interpreter.invoke()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", nargs="+", default=["lmfn_bundled", "lmfn", "svrnn", "svdn"],
                   help="bundled model names / .keras files, or svrnn|svdn|lmfn for the tiny "
                        "random variants")
    p.add_argument("--input-size", "--size", dest="input_size", default="256x256",
                   help="export size HxW (export_tflite's input_size; --size: its old name)")
    p.add_argument("--calibration", default=DEFAULT_DATA,
                   help="calibration images (a folder or an image file)")
    p.add_argument("--eval", default=None, help="folder of evaluation images (default: the "
                                                "calibration crops)")
    p.add_argument("--samples", type=int, default=16, help="calibration crops")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--quick", action="store_true", help="64x64, 4 crops, 3 repeats")
    args = p.parse_args(argv)
    if args.quick:
        args.input_size, args.samples, args.repeats = "64x64", 4, 3
    h, w = (int(v) for v in args.input_size.lower().split("x"))
    logging.getLogger("tfdeblur.export.int8").setLevel(logging.WARNING)

    rows = []
    with tempfile.TemporaryDirectory() as work:
        for name in args.models:
            model, label = _model(name)
            c = model.input_shape[-1]
            crops = calibration_images(args.calibration, (h, w), c, args.samples)
            evals = crops if args.eval is None else calibration_images(args.eval, (h, w), c,
                                                                       args.samples)
            want = [np.asarray(model(e[None], training=False)) for e in evals]
            base = None
            for variant, quantize, int8_io in VARIANTS:
                path = os.path.join(work, f"{os.path.basename(name)}_{len(rows)}.tflite")
                start = time.perf_counter()
                export_tflite(model, path, input_size=(h, w), quantize=quantize,
                              calibration=crops if quantize == "int8" else None,
                              int8_io=int8_io, test_image=evals[0])
                export_s = time.perf_counter() - start
                # LiteRT's XNNPACK delegate aborts on some int8 models: probed in a child.
                xnnpack = quantize != "int8" or xnnpack_problem(path) is None
                interpreter = tflite_interpreter(path, num_threads=args.threads,
                                                 xnnpack=xnnpack)
                interpreter.allocate_tensors()
                scores = [psnr(run_tflite(interpreter, e[None]), y)
                          for e, y in zip(evals, want, strict=True)]
                latency = _latency(path, evals[:1], args.repeats, args.threads, xnnpack)
                if not xnnpack:
                    variant += " (builtin kernels: XNNPACK cannot run it)"
                base = latency if base is None else base
                rows.append((label, variant, os.path.getsize(path), latency, latency / base,
                             statistics.median(scores), export_s))
                print(f"  {label}, {variant}: {os.path.getsize(path) / 1e3:.0f} kB, "
                      f"{latency * 1e3:.1f} ms, {statistics.median(scores):.2f} dB "
                      f"(export {export_s:.0f} s)", file=sys.stderr, flush=True)

    import ai_edge_litert

    print(f"TFLite at {h}x{w}, LiteRT {getattr(ai_edge_litert, '__version__', '?')} CPU "
          f"(XNNPACK), {args.threads} thread(s), median of {args.repeats} runs; PSNR vs the "
          f"float Keras model, median over {len(evals)} crops "
          f"({'calibration crops' if args.eval is None else args.eval})")
    print()
    print("| model | TFLite | size | CPU latency | vs float32 | PSNR vs float |")
    print("|---|---|---:|---:|---:|---:|")
    for label, variant, size, latency, ratio, score, _ in rows:
        shown = "exact" if score == float("inf") else f"{score:.1f} dB"
        print(f"| {label} | {variant} | {size / 1e3:,.0f} kB | {latency * 1e3:.1f} ms | "
              f"{ratio:.2f}x | {shown} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
