"""Speed of the modulated deformable convolution: compiled vs portable vs conv2d vs torchvision.

Prints a Markdown table: for 3x3 and 5x5 kernels, 64 -> 64 channels, at
[1, 180, 320, 64] and [8, 64, 64, 64] (stride 1, "same"), the median time of
the forward pass and of forward + backward (gradients of every input) of

- the compiled op (``implementation="compiled"``),
- the portable twin (stock TensorFlow ops: crop_and_resize samples in float32 + matmul),
- ``tf.nn.conv2d`` + bias of the same geometry (the dense lower bound),
- torchvision's CPU ``torchvision.ops.deform_conv2d`` on the same values in
  NCHW (when ``torch`` and ``torchvision`` import; the row is skipped, saying
  why, when they do not), with the same number of intra-op threads,

all in the same run, each TensorFlow one inside a ``tf.function``. Offsets are
random in [-2, 2] pixels and masks random in [0, 1].

The forward + backward functions return the forward output as well as the
gradients: a ``tf.function`` that returns only ``tape.gradient(...)`` lets
TensorFlow prune the forward op (the backward of a convolution does not read
its output), and such a row would time the backward alone.

Usage::

    python benchmarks/bench_deform_conv.py [--reps 10] [--warmup 2] [--quick]
        [--threads N] [--skip-portable] [--skip-torchvision]

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
    # Pulling one scalar to the host waits for the computation to finish
    # (TensorFlow's eager tensors; torch's CPU tensors are ready already).
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
        return y, tape.gradient(y, inputs, output_gradients=a["dy"])

    return tf.function(forward), tf.function(forward_backward)


def _dense_fns(a: dict):
    def forward():
        return tf.nn.bias_add(tf.nn.conv2d(a["x"], a["kernel"], 1, "SAME"), a["bias"])

    def forward_backward():
        inputs = [a["x"], a["kernel"], a["bias"]]
        with tf.GradientTape() as tape:
            tape.watch(inputs)
            y = tf.nn.bias_add(tf.nn.conv2d(inputs[0], inputs[1], 1, "SAME"), inputs[2])
        return y, tape.gradient(y, inputs, output_gradients=a["dy"])

    return tf.function(forward), tf.function(forward_backward)


def _torchvision():
    """(torch, torchvision.ops.deform_conv2d), or (None, why not)."""
    try:
        import torch
        from torchvision.ops import deform_conv2d
    except Exception as e:  # ImportError, or a wheel missing its shared libraries
        return None, f"{type(e).__name__}: {e}"
    return torch, deform_conv2d


def _torchvision_fns(torch, deform_conv2d, a: dict, k: int):
    """torchvision's forward and forward + backward on the same values as ``a``, in NCHW.

    The forward runs under ``torch.no_grad()``; forward + backward computes the
    gradients of every input with ``torch.autograd.grad`` (``dy`` as the output
    gradient) and returns them with the output.
    """
    def nchw(t, perm=(0, 3, 1, 2)):
        return torch.from_numpy(np.ascontiguousarray(t.numpy().transpose(perm)))

    x, offset, mask, dy = (nchw(a[key]) for key in ("x", "offset", "mask", "dy"))
    kernel = nchw(a["kernel"], (3, 2, 0, 1))              # [KH, KW, Cin, Cout] -> OIHW
    bias = torch.from_numpy(a["bias"].numpy())
    inputs = [x, offset, mask, kernel, bias]
    pad = (k // 2, k // 2)                                # "same" at stride 1, odd k

    def forward():
        with torch.no_grad():
            return deform_conv2d(x, offset, kernel, bias, padding=pad, mask=mask)

    def forward_backward():
        leaves = [t.detach().requires_grad_(True) for t in inputs]
        xl, ol, ml, kl, bl = leaves
        y = deform_conv2d(xl, ol, kl, bl, padding=pad, mask=ml)
        return [y.detach(), *torch.autograd.grad(y, leaves, dy)]

    return forward, forward_backward


def _ms(t: float) -> str:
    return "-" if np.isnan(t) else f"{t:.1f}"   # "-": left out (--skip-...)


def _ratio(t: float, base: float) -> str:
    return "-" if np.isnan(t) else f"{t / base:.2f}x"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--reps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--quick", action="store_true", help="small shapes, to check the script")
    p.add_argument("--threads", type=int, default=0,
                   help="intra-op threads (0: TensorFlow's default)")
    p.add_argument("--skip-portable", action="store_true",
                   help="leave out the portable twin (it needs a few GB at full size)")
    p.add_argument("--skip-torchvision", action="store_true",
                   help="leave out torchvision's deform_conv2d even when it imports")
    args = p.parse_args(argv)
    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    if not compiled_available():
        print("compiled op library not available: build it first (custom_ops/build.py)")
        return 1
    torch, deform_conv2d = (None, "--skip-torchvision") if args.skip_torchvision else _torchvision()
    threads = tf.config.threading.get_intra_op_parallelism_threads()
    if torch is not None:
        # TensorFlow's default pool has one thread per logical CPU; torch's the same here.
        torch.set_num_threads(threads or os.cpu_count() or 1)
        import torchvision

        peer = (f"torch {torch.__version__}, torchvision {torchvision.__version__} "
                f"({torch.get_num_threads()} threads)")
    else:
        peer = f"torchvision row skipped ({deform_conv2d})"
    shapes = QUICK_SHAPES if args.quick else FULL_SHAPES
    rng = np.random.default_rng(0)
    print(f"TensorFlow {tf.__version__}, {os.cpu_count()} CPUs visible, "
          f"intra-op threads {threads or 'auto'}, {peer}, "
          f"median of {args.reps} runs, float32, stride 1, 'same', offsets in [-2, 2]\n")
    header = ("| input | kernel | pass | compiled ms | portable ms | conv2d ms | torchvision ms "
              "| compiled / conv2d | portable / compiled | torchvision / compiled |")
    print(header)
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|")
    agreement = []
    for shape in shapes:
        for k in KERNELS:
            a = _inputs(shape, k, rng)
            comp_f, comp_fb = _deform_fns("compiled", a)
            port_f, port_fb = _deform_fns("portable", a)
            dense_f, dense_fb = _dense_fns(a)
            tv_f = tv_fb = None
            if torch is not None:
                tv_f, tv_fb = _torchvision_fns(torch, deform_conv2d, a, k)
                ours = comp_f().numpy()
                theirs = tv_f().numpy().transpose(0, 2, 3, 1)
                agreement.append(float(np.max(np.abs(ours - theirs))
                                       / max(np.max(np.abs(ours)), 1e-30)))
            for label, comp, port, dense, tv in (("forward", comp_f, port_f, dense_f, tv_f),
                                                 ("fwd+bwd", comp_fb, port_fb, dense_fb, tv_fb)):
                t_comp = _median_ms(comp, args.reps, args.warmup)
                t_dense = _median_ms(dense, args.reps, args.warmup)
                t_port = (float("nan") if args.skip_portable
                          else _median_ms(port, max(1, args.reps // 2), 1))
                t_tv = float("nan") if tv is None else _median_ms(tv, args.reps, args.warmup)
                print(f"| {list(shape)} | {k}x{k} | {label} | {t_comp:.1f} | {_ms(t_port)} | "
                      f"{t_dense:.1f} | {_ms(t_tv)} | {t_comp / t_dense:.2f}x | "
                      f"{_ratio(t_port, t_comp)} | {_ratio(t_tv, t_comp)} |", flush=True)
    if agreement:
        print(f"\ntorchvision's forward output equals the compiled op's on every row to "
              f"{max(agreement):.1e} of its largest value (same inputs, NCHW vs NHWC)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
