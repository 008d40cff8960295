"""What SVDN's loss terms and the metrics cost, beside the network they train.

Prints two tables:

1. One SVDN training step (forward + backward, paper configuration, no
   optimizer update) on a batch of crops with the loss growing term by term:
   pixel only; + perceptual (VGG16 to ``--layer``); + position (DCN1's
   sampling points against the flow). The VGG16 weights are random, written
   to a temporary file (timings do not depend on the values; nothing is
   downloaded).
2. PSNR and SSIM of one frame (default 1280x720 RGB) in float32 and float64,
   eagerly and in a ``tf.function``.

Medians of ``--repeats`` runs after ``--warmup`` runs.

Usage::

    python benchmarks/bench_losses.py                                  # 8 x 256x256, 720p
    python benchmarks/bench_losses.py --batch 1 --crop 64 --frame 128x96 --repeats 2
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import tfdeblur.models  # noqa: E402
from tfdeblur.losses import SVDNLoss  # noqa: E402
from tfdeblur.metrics import psnr, ssim  # noqa: E402
from tfdeblur.models.svdn import with_positions  # noqa: E402
from tfdeblur.ops import compiled_available  # noqa: E402


def median_ms(fn, warmup: int, repeats: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def _sync(value):
    return [np.asarray(v) for v in tf.nest.flatten(value)]


def loss_table(args, vgg_path: str) -> list[str]:
    implementation = "compiled" if compiled_available() else "portable"
    keras.utils.set_random_seed(0)
    model = with_positions(tfdeblur.models.build("svdn", implementation=implementation))
    rng = np.random.default_rng(0)
    shape = (args.batch, args.crop, args.crop, 3)
    blurry = tf.constant(rng.uniform(0, 1, shape), tf.float32)
    sharp = tf.constant(rng.uniform(0, 1, shape), tf.float32)
    flow = tf.constant(rng.normal(0, 4, (*shape[:3], 4)), tf.float32)
    variants = [
        ("pixel", SVDNLoss(perceptual_weight=0, position_weight=0)),
        (f"pixel + perceptual ({args.layer})",
         SVDNLoss(vgg_path, position_weight=0, perceptual_layer=args.layer)),
        ("pixel + perceptual + position", SVDNLoss(vgg_path, perceptual_layer=args.layer)),
    ]
    rows = []
    base = None
    for label, loss in variants:
        @tf.function
        def step(loss=loss):
            with tf.GradientTape() as tape:
                image, positions = model(blurry, training=True)
                value = loss((sharp, flow), (image, positions))
            return value, tape.gradient(value, model.trainable_variables)

        ms = median_ms(lambda step=step: _sync(step()), args.warmup, args.repeats)
        base = base or ms
        rows.append(f"| {label} | {ms:.1f} | {ms / base:.2f}x |")
    head = [f"SVDN (paper configuration, {implementation} DCN) forward + backward, batch "
            f"{args.batch} of {args.crop}x{args.crop}, float32:", "",
            "| loss | ms per step | vs pixel only |", "|---|---:|---:|"]
    return head + rows


def metric_table(args) -> list[str]:
    w, h = (int(v) for v in args.frame.split("x"))
    rng = np.random.default_rng(1)
    a = rng.uniform(0, 1, (h, w, 3))
    b = np.clip(a + rng.normal(0, 0.05, a.shape), 0, 1)
    rows = []
    for dtype in ("float32", "float64"):
        x, y = tf.constant(a.astype(dtype)), tf.constant(b.astype(dtype))
        for name, fn in (("psnr", psnr), ("ssim", ssim)):
            traced = tf.function(fn)
            eager = median_ms(lambda fn=fn, x=x, y=y: np.asarray(fn(x, y)), args.warmup,
                              args.repeats)
            graph = median_ms(lambda t=traced, x=x, y=y: np.asarray(t(x, y)), args.warmup,
                              args.repeats)
            rows.append(f"| {name} | {dtype} | {eager:.1f} | {graph:.1f} |")
    head = [f"Metrics of one {w}x{h} RGB frame:", "",
            "| metric | dtype | eager ms | tf.function ms |", "|---|---|---:|---:|"]
    return head + rows


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--crop", type=int, default=256)
    p.add_argument("--layer", default="block3_conv3")
    p.add_argument("--frame", default="1280x720", help="WxH of the metric frame")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args(argv)
    print(f"TensorFlow {tf.__version__}, {os.cpu_count()} CPUs visible, "
          f"{platform.processor() or platform.machine()}, median of {args.repeats} runs")
    with tempfile.TemporaryDirectory() as tmp:
        vgg_path = os.path.join(tmp, "vgg16_notop.weights.h5")
        keras.applications.VGG16(weights=None, include_top=False).save_weights(vgg_path)
        lines = loss_table(args, vgg_path)
    print("\n".join(["", *lines, "", *metric_table(args)]))


if __name__ == "__main__":
    main()
