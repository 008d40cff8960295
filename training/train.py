#!/usr/bin/env python3
"""Train a deblurring network from a config, resuming from the run folder's last checkpoint.

    python training/train.py --config training/configs/lmfn_cpu_small.json --run-dir runs/lmfn
    python training/train.py --config lmfn_cpu_small --run-dir runs/lmfn --steps 200 \\
        --override data.train.batch_size=8 --override optimizer.learning_rate=2e-4
    python training/train.py --run-dir runs/lmfn          # resume with the saved config

``--config`` takes a file or the name of one in training/configs/. Run it
again with the same ``--run-dir`` after an interruption (even a kill) and
training continues from the newest complete checkpoint.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

CONFIG_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")


def _config_path(value: str) -> str:
    if os.path.exists(value) or os.sep in value or value.endswith(".json"):
        return value
    named = os.path.join(CONFIG_DIR, value + ".json")
    if os.path.exists(named):
        return named
    names = sorted(n[:-5] for n in os.listdir(CONFIG_DIR) if n.endswith(".json"))
    raise SystemExit(f"error: --config {value!r} is neither a file nor a config in {CONFIG_DIR} "
                     f"({', '.join(names)})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", help="JSON config file, or a name from training/configs/ "
                        "(omit to resume with the run folder's saved config)")
    parser.add_argument("--run-dir", required=True, help="run folder (checkpoints, logs, models)")
    parser.add_argument("--steps", type=int, help="total optimizer steps (sets train.steps)")
    parser.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                        help="set a config key (dotted; the value is JSON, else a string); "
                             "repeatable")
    args = parser.parse_args(argv)

    from tfdeblur.training import ConfigError, RunFolderError, load_config, train

    try:
        if args.config is not None:
            cfg = load_config(_config_path(args.config), args.override, steps=args.steps)
        elif args.override or args.steps is not None:
            from tfdeblur.training import apply_overrides, read_config_file, resolve_config

            saved = os.path.join(args.run_dir, "config.json")
            raw = apply_overrides(read_config_file(saved), args.override)
            if args.steps is not None:
                raw["train"]["steps"] = args.steps
            cfg = resolve_config(raw)
        else:
            cfg = None
        result = train(cfg, args.run_dir)
    except (ConfigError, RunFolderError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print("summary: " + json.dumps(result.to_json(), default=str), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
