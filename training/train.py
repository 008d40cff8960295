#!/usr/bin/env python3
"""Train a deblurring network from a config, resuming from the run folder's last checkpoint.

    python training/train.py --config training/configs/lmfn_cpu_small.json --run-dir runs/lmfn
    python training/train.py --config lmfn_cpu_small --run-dir runs/lmfn --steps 200 \\
        --override data.train.batch_size=8 --override optimizer.learning_rate=2e-4
    python training/train.py --run-dir runs/lmfn          # resume with the saved config

``--config`` takes a file or the name of one in training/configs/. Run it
again with the same ``--run-dir`` after an interruption (even a kill) and
training continues from the newest complete checkpoint. The code lives in
``tfdeblur.training``; this script is its command line.
"""

import sys

from tfdeblur.training.command import main

if __name__ == "__main__":
    sys.exit(main())
