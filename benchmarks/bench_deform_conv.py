"""Speed of the modulated deformable convolution: compiled vs portable vs tf.nn.conv2d.

Prints a Markdown table: for 3x3 and 5x5 kernels, 64 -> 64 channels, at
[1, 180, 320, 64] and [8, 64, 64, 64] (stride 1, "same"), the median time of
the forward pass and of forward + backward (gradients of every input) of

- the compiled op (``implementation="compiled"``),
- the portable twin (stock TensorFlow ops: one gather + matmul),
- ``tf.nn.conv2d`` + bias of the same geometry (the dense lower bound),

all in the same run, each inside a ``tf.function``. Offsets are random in
[-2, 2] pixels and masks random in [0, 1].

Usage::

    python benchmarks/bench_deform_conv.py [--reps 10] [--warmup 2] [--quick]
        [--threads N] [--skip-portable]

``--quick`` uses small shapes (to check that the script works).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tfdeblur.ops import compiled_available, modulated_deform_conv2d  # noqa: E402

FULL_SHAPES = [(1, 180, 320, 64), (8, 64, 64, 64)]
QUICK_SHAPES = [(1, 36, 64, 64), (2, 24, 24, 64)]
KERNELS = [3, 5]


def _median_ms(fn, reps: int, warmup: int) -> float:
    for _ in range(warmup):
        _sync(fn())
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        _sync(fn())
        times.append(time.perf_counter() - t0)
    return 1000.0 * statistics.median(times)


def _sync(result) -> None:
    # Pulling one scalar to the host waits for the computation to finish.
    flat = tf.nest.flatten(result)
    for t in flat:
        if t is not None:
            _ = t.numpy().ravel()[:1]


def _inputs(shape, k: int, rng: np.random.Generator):
    n, h, w, c = shape
    taps = k * k
    return dict(
        x=tf.constant(rng.normal(size=shape).astype(np.float32)),
        offset=tf.constant(rng.uniform(-2, 2, (n, h, w, 2 * taps)).astype(np.float32)),
        mask=tf.constant(rng.uniform(0, 1, (n, h, w, taps)).astype(np.float32)),
        kernel=tf.constant((rng.normal(size=(k, k, c, c)) / (k * np.sqrt(c))).astype(np.float32)),
        bias=tf.constant(np.zeros(c, np.float32)),
        dy=tf.constant(rng.normal(size=(n, h, w, c)).astype(np.float32)),
    )


def _deform_fns(impl: str, a: dict):
    def forward():
        return modulated_deform_conv2d(a["x"], a["offset"], a["mask"], a["kernel"], a["bias"],
                                       implementation=impl)

    def forward_backward():
        inputs = [a["x"], a["offset"], a["mask"], a["kernel"], a["bias"]]
        with tf.GradientTape() as tape:
            tape.watch(inputs)
            y = modulated_deform_conv2d(*inputs, implementation=impl)
        return tape.gradient(y, inputs, output_gradients=a["dy"])

    return tf.function(forward), tf.function(forward_backward)


def _dense_fns(a: dict):
    def forward():
        return tf.nn.bias_add(tf.nn.conv2d(a["x"], a["kernel"], 1, "SAME"), a["bias"])

    def forward_backward():
        inputs = [a["x"], a["kernel"], a["bias"]]
        with tf.GradientTape() as tape:
            tape.watch(inputs)
            y = tf.nn.bias_add(tf.nn.conv2d(inputs[0], inputs[1], 1, "SAME"), inputs[2])
        return tape.gradient(y, inputs, output_gradients=a["dy"])

    return tf.function(forward), tf.function(forward_backward)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--reps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--quick", action="store_true", help="small shapes, to check the script")
    p.add_argument("--threads", type=int, default=0,
                   help="intra-op threads (0: TensorFlow's default)")
    p.add_argument("--skip-portable", action="store_true",
                   help="leave out the portable twin (it needs a few GB at full size)")
    args = p.parse_args(argv)
    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    if not compiled_available():
        print("compiled op library not available: build it first (custom_ops/build.py)")
        return 1
    shapes = QUICK_SHAPES if args.quick else FULL_SHAPES
    rng = np.random.default_rng(0)
    print(f"TensorFlow {tf.__version__}, {os.cpu_count()} CPUs visible, "
          f"intra-op threads {tf.config.threading.get_intra_op_parallelism_threads() or 'auto'}, "
          f"median of {args.reps} runs, float32, stride 1, 'same', offsets in [-2, 2]\n")
    header = ("| input | kernel | pass | compiled ms | portable ms | conv2d ms "
              "| compiled / conv2d | portable / compiled |")
    print(header)
    print("|---|---|---|---:|---:|---:|---:|---:|")
    for shape in shapes:
        for k in KERNELS:
            a = _inputs(shape, k, rng)
            comp_f, comp_fb = _deform_fns("compiled", a)
            port_f, port_fb = _deform_fns("portable", a)
            dense_f, dense_fb = _dense_fns(a)
            for label, comp, port, dense in (("forward", comp_f, port_f, dense_f),
                                             ("fwd+bwd", comp_fb, port_fb, dense_fb)):
                t_comp = _median_ms(comp, args.reps, args.warmup)
                t_dense = _median_ms(dense, args.reps, args.warmup)
                t_port = (float("nan") if args.skip_portable
                          else _median_ms(port, max(1, args.reps // 2), 1))
                print(f"| {list(shape)} | {k}x{k} | {label} | {t_comp:.1f} | {t_port:.1f} | "
                      f"{t_dense:.1f} | {t_comp / t_dense:.2f}x | {t_port / t_comp:.2f}x |",
                      flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
