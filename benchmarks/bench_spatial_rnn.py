"""Benchmark of the four-direction spatial RNN (fused gated recurrence).

Prints one table per shape: forward and forward+backward wall time (median)
of the compiled op, the portable twin (stock TF ops, graph mode and XLA), a
straightforward ``tf.scan`` implementation, and a bandwidth floor (one
XLA-fused elementwise pass over the same bytes), all measured in the same run.

    python benchmarks/bench_spatial_rnn.py            # full: SVRNN's 1280x720 features
    python benchmarks/bench_spatial_rnn.py --quick    # fewer repeats
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from tfdeblur.ops import DIRECTIONS, compiled_available, spatial_rnn  # noqa: E402

SHAPES = {"svrnn_720p": (1, 360, 640, 32), "batch8_64": (8, 64, 64, 32)}


def scan_direction(x, g, direction):
    """What a TensorFlow user would write by hand: tf.scan along the scan axis."""
    perm = [2, 0, 1, 3] if direction in ("left_to_right", "right_to_left") else [1, 0, 2, 3]
    inv = np.argsort(perm).tolist()
    xs, gs = tf.transpose(x, perm), tf.transpose(g, perm)
    rev = direction in ("right_to_left", "bottom_to_top")
    if rev:
        xs, gs = tf.reverse(xs, [0]), tf.reverse(gs, [0])
    h = tf.scan(lambda h, xg: (1 - xg[1]) * xg[0] + xg[1] * h, (xs, gs),
                initializer=tf.zeros_like(xs[0]))
    if rev:
        h = tf.reverse(h, [0])
    return tf.transpose(h, inv)


def scan_spatial_rnn(x, gates):
    return tf.concat([scan_direction(x, g, d)
                      for g, d in zip(tf.split(gates, 4, axis=3), DIRECTIONS, strict=True)], axis=3)


def floor_forward(x, gates):
    # Reads x and the gates once and writes the 4C output once.
    return (1 - gates) * tf.tile(x, [1, 1, 1, 4])


def floor_backward(x, gates, y, dy):
    # Reads x, gates, y, dy once; writes dx and dgates once.
    s = tf.shape(gates)
    dxs = tf.reshape((1 - gates) * dy, [s[0], s[1], s[2], 4, -1])
    return tf.reduce_sum(dxs, axis=3), dy * (y - tf.tile(x, [1, 1, 1, 4]))


def make_fns(fn, jit=False):
    fwd = tf.function(fn, jit_compile=jit)

    @tf.function(jit_compile=jit)
    def fwd_bwd(x, g, dy):
        with tf.GradientTape() as tape:
            tape.watch([x, g])
            y = fn(x, g)
        # y too: a function returning only the gradients lets TensorFlow prune
        # every forward op the backward does not read.
        return y, tape.gradient(y, [x, g], output_gradients=dy)

    return fwd, fwd_bwd


def floor_fns():
    fwd = tf.function(floor_forward, jit_compile=True)
    bwd = tf.function(floor_backward, jit_compile=True)

    # Two separate fused passes, like the real forward and backward: y is
    # written by the first and read by the second (one XLA function could
    # keep y in registers, which no training step can).
    def fwd_bwd(x, g, dy):
        y = fwd(x, g)
        return y, bwd(x, g, y, dy)

    return fwd, fwd_bwd


def timeit(fn, args, repeats):
    out = fn(*args)  # warm-up / trace
    _ = [np.asarray(o) for o in tf.nest.flatten(out)]
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn(*args)
        _ = [o.numpy() for o in tf.nest.flatten(out)]
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="3 repeats, skip the slow tf.scan rows")
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--shapes", nargs="*", default=list(SHAPES), choices=list(SHAPES))
    args = p.parse_args(argv)
    repeats = args.repeats or (3 if args.quick else 7)

    impls = []
    if compiled_available():
        impls.append(("compiled", make_fns(lambda a, b: spatial_rnn(a, b, "compiled"))))
    else:
        print("compiled op library not available: compiled rows skipped")
    impls.append(("portable (graph)", make_fns(lambda a, b: spatial_rnn(a, b, "portable"))))
    impls.append(("portable (XLA)", make_fns(lambda a, b: spatial_rnn(a, b, "portable"), True)))
    if not args.quick:
        impls.append(("tf.scan by hand", make_fns(scan_spatial_rnn)))
    impls.append(("bandwidth floor", floor_fns()))

    print(f"TensorFlow {tf.__version__}, {os.cpu_count()} CPU threads, median of {repeats} runs")
    rng = np.random.default_rng(0)
    for key in args.shapes:
        shape = SHAPES[key]
        n, h, w, c = shape
        x = tf.constant(rng.standard_normal(shape, dtype=np.float32))
        g = tf.constant(np.tanh(rng.standard_normal((n, h, w, 4 * c), dtype=np.float32)))
        dy = tf.constant(rng.standard_normal((n, h, w, 4 * c), dtype=np.float32))
        rows = []
        for name, (fwd, fwd_bwd) in impls:
            rows.append((name, timeit(fwd, (x, g), repeats), timeit(fwd_bwd, (x, g, dy), repeats)))
        floor_f, floor_fb = rows[-1][1], rows[-1][2]
        ref = {r[0]: r for r in rows}
        comp = ref.get("compiled")
        mb = (x.numpy().nbytes + 2 * g.numpy().nbytes) / 2**20
        print(f"\nspatial_rnn x={list(shape)} gates={[n, h, w, 4 * c]} ({mb:.0f} MB in+out fwd)")
        print(f"| implementation | forward ms | fwd / floor | fwd+bwd ms | fwd+bwd / floor |"
              f"{' fwd+bwd / compiled |' if comp else ''}")
        print(f"|---|---:|---:|---:|---:|{'---:|' if comp else ''}")
        for name, f, fb in rows:
            extra = f" {fb / comp[2]:.1f}x |" if comp else ""
            print(f"| {name} | {f * 1e3:.1f} | {f / floor_f:.2f} | {fb * 1e3:.1f} | "
                  f"{fb / floor_fb:.2f} |{extra}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
