"""Averages a training run's checkpoints into ``RUN/averaged.keras`` (weight averaging).

Folds the checkpoints of ``RUN/checkpoints`` (and of ``--checkpoints``
folders or files) whose step is ``>= --from-step`` and a multiple of
``--every`` into the running sum ``RUN/average.npz``
(:mod:`tfdeblur.training.averaging`), then writes the mean weights as
``RUN/averaged.keras`` and ``RUN/averaged.json`` (the steps averaged).
``training/long_run.py --average-from STEP`` folds each checkpoint in as the
run writes it; ``training/bundle.py RUN --which averaged`` bundles the result.

    python training/average.py training/runs/lmfn_bundled --from-step 27000 --every 250
    python training/average.py training/runs/lmfn_bundled          # fold new ones, rewrite
"""

from __future__ import annotations

import argparse
import json
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)


def write_averaged(run_dir: str) -> dict:
    """Writes ``averaged.keras`` and ``averaged.json`` from ``average.npz``; returns the record."""
    from tfdeblur import _atomic
    from tfdeblur.inference import load_model
    from tfdeblur.training.averaging import averaged_model, read_average
    from tfdeblur.training.callbacks import save_model_atomically

    meta, _ = read_average(os.path.join(run_dir, "average.npz"))
    model = averaged_model(load_model(os.path.join(run_dir, "best.keras")),
                           os.path.join(run_dir, "average.npz"))
    save_model_atomically(model, os.path.join(run_dir, "averaged.keras"))
    steps = meta["steps"]
    record = {"checkpoints": len(steps), "from_step": steps[0], "to_step": steps[-1],
              "every": meta["every"]}
    _atomic.write_file(os.path.join(run_dir, "averaged.json"),
                       (json.dumps(record, indent=2) + "\n").encode("utf-8"))
    return record


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run_dir")
    ap.add_argument("--from-step", type=int, default=None,
                    help="first step to average (needed for a new average file)")
    ap.add_argument("--every", type=int, default=None, help="step spacing (default 1: all)")
    ap.add_argument("--checkpoints", nargs="*", default=[],
                    help="more folders or ckpt-STEP.npz files (e.g. copies kept aside)")
    args = ap.parse_args(argv)

    from tfdeblur.training.averaging import fold_checkpoints

    run_dir = os.path.abspath(args.run_dir)
    added = fold_checkpoints(os.path.join(run_dir, "average.npz"),
                             [os.path.join(run_dir, "checkpoints"), *args.checkpoints],
                             from_step=args.from_step, every=args.every)
    print(f"average: {len(added)} checkpoint(s) added"
          + (f" (steps {added[0]}-{added[-1]})" if added else ""))
    record = write_averaged(run_dir)
    print(f"averaged.keras: mean of {record['checkpoints']} checkpoints, steps "
          f"{record['from_step']}-{record['to_step']} every {record['every']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
