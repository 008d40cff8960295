"""Training step time per network and precision policy (float32, mixed_float16, mixed_bfloat16).

One compiled ``train_on_batch`` step (forward, loss, backward, Adam update) of each network
on a fixed batch of random patches, built and compiled under each Keras dtype policy as
``train.mixed_precision`` does (float16 with Keras's LossScaleOptimizer). Prints the median
of ``--repeats`` steps after ``--warmup`` and the ratio to float32, measured side by side in
one process. On CPUs without native half-precision arithmetic the mixed policies are
usually slower; they pay off on GPUs with tensor cores (float16) or bfloat16 units.

    python benchmarks/bench_training.py [--networks lmfn,svdn,svrnn] [--patch 64] [--batch 4]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import tfdeblur.models  # noqa: E402
from tfdeblur.training.trainer import dtype_policy  # noqa: E402

NETWORKS = {
    "lmfn": {"width": 32, "num_blocks": 4},          # the bundled model's size
    "svdn": {"width": 32},
    "svrnn": {"width": 16, "weight_width": 8},
}
POLICIES = ("float32", "mixed_float16", "mixed_bfloat16")


def step_times(name: str, policy: str, x, y, warmup: int, repeats: int) -> list[float]:
    keras.utils.set_random_seed(0)
    with dtype_policy(policy):
        model = tfdeblur.models.build(name, **NETWORKS[name])
        model.compile(optimizer=keras.optimizers.Adam(1e-4), loss="mae")
    times = []
    for i in range(warmup + repeats):
        t = time.perf_counter()
        loss = model.train_on_batch(x, y)
        if i >= warmup:
            times.append(time.perf_counter() - t)
    if not np.isfinite(loss):
        raise RuntimeError(f"{name} under {policy}: non-finite loss {loss}")
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--networks", default="lmfn,svdn,svrnn")
    parser.add_argument("--policies", default=",".join(POLICIES))
    parser.add_argument("--patch", type=int, default=64)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (args.batch, args.patch, args.patch, 3)).astype("float32")
    y = np.clip(x + rng.normal(0, 0.05, x.shape), 0, 1).astype("float32")
    devices = [d.device_type for d in tf.config.list_physical_devices()]
    print(f"# training step, batch {args.batch} x {args.patch}x{args.patch}, median of "
          f"{args.repeats} after {args.warmup} warm-up; {platform.processor() or 'cpu'}, "
          f"devices {devices}, TF {tf.__version__}, Keras {keras.__version__}")
    print(f"| {'network':8} | {'policy':15} | {'step ms':>9} | {'images/s':>9} | "
          f"{'vs float32':>10} |")
    print(f"|{'-' * 10}|{'-' * 17}|{'-' * 11}|{'-' * 11}|{'-' * 12}|")
    for name in args.networks.split(","):
        base = None
        for policy in args.policies.split(","):
            median = statistics.median(step_times(name, policy, x, y, args.warmup,
                                                  args.repeats))
            base = median if policy == "float32" else base
            ratio = f"{median / base:.2f}x" if base else "-"
            print(f"| {name:8} | {policy:15} | {median * 1e3:9.1f} | "
                  f"{args.batch / median:9.1f} | {ratio:>10} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
