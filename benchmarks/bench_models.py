"""Size, FLOPs and CPU latency of every registered network, beside the papers' numbers.

For each model in ``tfdeblur.models.available()`` (paper configuration) prints:
parameters, size in MB (float32 weights, 10^6 bytes), FLOPs for one frame,
and CPU latency for one frame (batch 1, median of ``--repeats`` runs after
``--warmup`` runs, in a ``tf.function``) built with ``implementation=
"compiled"`` and with ``"portable"``.

FLOPs are counted on the graph of a concrete function traced for the frame
size, with TensorFlow's registered per-op statistics (the numbers
``tf.compat.v1.profiler`` reports): convolutions, transposed convolutions and
matrix products count 2 FLOPs per multiply-accumulate ("conv/matmul"); "all
counted" adds the element-wise ops TensorFlow has statistics for (add, mul,
...). Ops without statistics are not counted (activations, resizing,
pooling windows beyond their output, gathers, and custom ops), so the
portable implementation is what gets counted; ops skipped are listed with
``--verbose``.

Usage::

    python benchmarks/bench_models.py                      # 1280x720, all models
    python benchmarks/bench_models.py --height 128 --width 128 --repeats 2 --models lmfn
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections import Counter

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from tensorflow.python.framework import ops as tf_ops  # noqa: E402

import tfdeblur.models  # noqa: E402
from tfdeblur.ops import compiled_available, compiled_unavailable_reason  # noqa: E402

# What the papers report (MODELS.md; times for a 1280x720 frame on the GPU named).
PAPERS = {
    "svrnn": {"params": "9.2 M", "size": "37.1 MB", "time": "1.4 s (Tesla K80)",
              "source": "Zhang et al. CVPR 2018, Table 3"},
    "svdn": {"params": "0.8 M", "size": "3.1 MB", "time": "0.01 s (GTX 1080 Ti)",
             "source": "Yuan et al. CVPR 2020, Table 1"},
    "lmfn": {"params": "1.25 M", "size": "-", "time": "0.019 s (RTX 2080 Ti)",
             "source": "Zhang et al. (LMFN), Table 1"},
}

CONV_MATMUL = {"Conv2D", "Conv3D", "DepthwiseConv2dNative", "Conv2DBackpropInput", "MatMul",
               "BatchMatMul", "BatchMatMulV2", "BatchMatMulV3"}
# Ops that move or describe data; never worth listing as "not counted".
_BOOKKEEPING = {"Const", "Identity", "IdentityN", "Placeholder", "ReadVariableOp", "NoOp",
                "Reshape", "Shape", "StridedSlice", "Pack", "Unpack", "ConcatV2", "Slice",
                "Transpose", "Cast", "Fill", "ZerosLike", "Range", "ExpandDims", "Squeeze",
                "Assert", "SplitV", "Split", "Tile", "ReverseV2", "Pad", "MirrorPad",
                "DepthToSpace", "Select", "SelectV2", "GatherV2", "GatherNd", "FloorMod",
                "FloorDiv", "Prod", "Size", "Rank", "StopGradient", "PartitionedCall",
                "StatefulPartitionedCall", "CheckNumerics"}


def count_flops(model: keras.Model, height: int, width: int) -> dict:
    """FLOPs of one forward pass on a ``[1, height, width, C]`` frame (see module doc)."""
    channels = model.input_shape[-1]
    fn = tf.function(lambda x: model(x, training=False))
    graph = fn.get_concrete_function(
        tf.TensorSpec([1, height, width, channels], tf.float32)).graph
    conv_matmul = total = 0
    skipped: Counter = Counter()
    for op in graph.get_operations():
        try:
            value = tf_ops.get_stats_for_node_def(graph, op.node_def, "flops").value
        except ValueError:  # statistics registered but a shape is unknown
            value = None
        if value is None:
            if op.type not in _BOOKKEEPING:
                skipped[op.type] += 1
            continue
        value = int(value)
        total += value
        if op.type in CONV_MATMUL:
            conv_matmul += value
    return {"conv_matmul": conv_matmul, "all_counted": total, "skipped": dict(skipped)}


def latencies(models: dict, height: int, width: int, repeats: int, warmup: int
              ) -> dict[str, list[float]]:
    """Seconds per forward pass of a ``[1, height, width, C]`` frame, per model.

    The models' runs alternate, so that a change in machine load during the
    benchmark affects them alike.
    """
    channels = next(iter(models.values())).input_shape[-1]
    x = tf.constant(np.random.default_rng(0).random((1, height, width, channels), "float32"))
    fns = {k: tf.function(lambda t, m=m: m(t, training=False), jit_compile=False)
           for k, m in models.items()}
    for fn in fns.values():
        for _ in range(max(warmup, 1)):  # the first call also traces
            _ = np.asarray(fn(x))
    times = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            start = time.perf_counter()
            _ = np.asarray(fn(x))  # np.asarray waits for the result
            times[k].append(time.perf_counter() - start)
    return times


def bench_model(name: str, args) -> dict:
    row = {"model": name}
    portable = tfdeblur.models.build(name, implementation="portable")
    params = portable.count_params()
    row.update(params=int(params), size_mb=params * 4 / 1e6)
    row.update(flops=count_flops(portable, args.height, args.width))
    models = {"portable": portable}
    if compiled_available():
        compiled = tfdeblur.models.build(name, implementation="compiled")
        compiled.set_weights(portable.get_weights())
        models["compiled"] = compiled
    times = latencies(models, args.height, args.width, args.repeats, args.warmup)
    for impl in ("compiled", "portable"):
        row[impl] = (None if impl not in times else
                     {"median_s": statistics.median(times[impl]), "runs_s": times[impl]})
    return row


def fmt_params(n: float) -> str:
    return f"{n / 1e6:.3f} M"


def fmt_time(entry) -> str:
    return "n/a" if entry is None else f"{entry['median_s']:.3f} s"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="*", default=None,
                        help="model names (default: tfdeblur.models.available())")
    parser.add_argument("--height", type=int, default=720)
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per model")
    parser.add_argument("--warmup", type=int, default=2, help="untimed runs first (>= 1)")
    parser.add_argument("--threads", type=int, default=0,
                        help="TensorFlow intra-op threads (0: TensorFlow's default)")
    parser.add_argument("--json", default=None, help="also write the results to this file")
    parser.add_argument("--verbose", action="store_true",
                        help="list the op types whose FLOPs are not counted")
    args = parser.parse_args(argv)
    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    names = args.models or tfdeblur.models.available()
    unknown = sorted(set(names) - set(tfdeblur.models.available()))
    if unknown:
        parser.error(f"unknown models {unknown}; available: {tfdeblur.models.available()}")

    print(f"tfdeblur bench_models: {args.width}x{args.height} frame, batch 1, CPU; "
          f"median of {args.repeats} runs after {args.warmup} warm-up")
    print(f"TensorFlow {tf.__version__}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} logical CPUs, intra-op threads: {args.threads or 'default'}")
    if not compiled_available():
        print(f"compiled ops: unavailable ({compiled_unavailable_reason()})")
    rows = []
    for name in names:
        print(f"... {name}", file=sys.stderr, flush=True)
        rows.append(bench_model(name, args))

    frame = f"{args.width}x{args.height}"
    print()
    print(f"| model | params | size (fp32) | GFLOPs conv/matmul, {frame} | GFLOPs all counted "
          f"| CPU latency compiled | CPU latency portable | paper params | paper size "
          f"| paper time (GPU) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        p = PAPERS.get(r["model"], {})
        print(f"| {r['model']} | {fmt_params(r['params'])} | {r['size_mb']:.2f} MB "
              f"| {r['flops']['conv_matmul'] / 1e9:.2f} | {r['flops']['all_counted'] / 1e9:.2f} "
              f"| {fmt_time(r['compiled'])} | {fmt_time(r['portable'])} "
              f"| {p.get('params', '-')} | {p.get('size', '-')} | {p.get('time', '-')} |")
    print()
    for r in rows:
        if r["model"] in PAPERS:
            print(f"paper numbers for {r['model']}: {PAPERS[r['model']]['source']}")
    if args.verbose:
        for r in rows:
            print(f"{r['model']}: op types not counted: {r['flops']['skipped']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"frame": frame, "repeats": args.repeats, "rows": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
