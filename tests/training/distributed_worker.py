"""One training process of the distribution tests (run as a script, one per worker).

    python distributed_worker.py CONFIG.json RUN_DIR WEIGHTS_OUT.npz [--logical-cpus N]
        [--mirrored]

Trains ``CONFIG.json`` (a resolved configuration) in ``RUN_DIR`` as ``tfdeblur.training.train``
does, under the strategy its ``train.distribute`` names (``TF_CONFIG`` gives a multi-worker
cluster), or, with ``--mirrored``, under ``MirroredStrategy`` over ``N`` logical CPU devices.
Writes this worker's final variables to ``WEIGHTS_OUT.npz`` and prints a ``summary: {json}``
line.
"""

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("config")
    parser.add_argument("run_dir")
    parser.add_argument("weights")
    parser.add_argument("--logical-cpus", type=int, default=0)
    parser.add_argument("--mirrored", action="store_true")
    args = parser.parse_args()

    import numpy as np
    import tensorflow as tf

    strategy = None
    if args.logical_cpus:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * args.logical_cpus)
    if args.mirrored:
        devices = [d.name for d in tf.config.list_logical_devices("CPU")]
        strategy = tf.distribute.MirroredStrategy(devices)

    import keras

    from tfdeblur.training import train
    from tfdeblur.training.trainer import make_strategy

    with open(args.config) as f:
        cfg = json.load(f)
    if strategy is None:
        strategy = make_strategy(cfg["train"]["distribute"])

    class Capture(keras.callbacks.Callback):
        """This worker's own variables after its last step (not re-read from a file)."""

        weights = None

        def on_train_end(self, logs=None):
            Capture.weights = [np.asarray(v.numpy()) for v in self.model.variables]

    result = train(cfg, args.run_dir, printer=None, strategy=strategy, callbacks=[Capture()])
    if Capture.weights is not None:
        np.savez(args.weights, *Capture.weights)
    print("summary: " + json.dumps({**result.to_json(),
                                    "chief": bool(strategy.extended.should_checkpoint)}),
          flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
