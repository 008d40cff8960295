"""Command line of the training recipes (``training/train.py``; a ``tfdeblur train`` subcommand).

``add_arguments`` fills an ``argparse`` parser and ``run`` executes the
parsed arguments, so the script and a subcommand share one implementation.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys

from tfdeblur.training.config import (
    ConfigError,
    apply_overrides,
    load_config,
    read_config_file,
    resolve_config,
)


def config_folders() -> list[str]:
    """Where ``--config NAME`` is looked up: ``./training/configs``, then the repository's."""
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    folders = [os.path.join(os.getcwd(), "training", "configs"),
               os.path.join(repo, "training", "configs")]
    return list(dict.fromkeys(f for f in folders if os.path.isdir(f)))


def find_config(value: str) -> str:
    """A config file path, or the file of a named recipe (``lmfn_cpu_small``)."""
    if os.path.exists(value) or os.sep in value or value.endswith(".json"):
        return value
    names: set[str] = set()
    for folder in config_folders():
        path = os.path.join(folder, value + ".json")
        if os.path.isfile(path):
            return path
        names.update(n[:-5] for n in os.listdir(folder) if n.endswith(".json"))
    raise ConfigError(f"--config {value!r} is neither a file nor a named config "
                      f"(named configs: {', '.join(sorted(names)) or 'none found'})")


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--config", help="JSON config file, or the name of one in "
                        "training/configs/ (omit to resume with the run folder's saved config)")
    parser.add_argument("--run-dir", required=True,
                        help="run folder (checkpoints, log, models); run again with the same "
                             "folder to resume")
    parser.add_argument("--steps", type=int, help="total optimizer steps (sets train.steps)")
    parser.add_argument("--distribute", choices=("none", "mirrored", "multi_worker"),
                        help="tf.distribute strategy (sets train.distribute): mirrored = this "
                             "machine's GPUs, multi_worker = the cluster in TF_CONFIG (start "
                             "one process per worker, all with the same --run-dir); the "
                             "config's batch size is the global batch")
    parser.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                        help="set a config key (dotted; the value is JSON, else a string); "
                             "repeatable")
    return parser


def _read_run_config(run_dir: str) -> dict:
    """A run folder's saved config.json (local, or on a TensorFlow filesystem URL)."""
    path = os.path.join(run_dir, "config.json")
    if "://" not in run_dir:
        return read_config_file(path)
    import tensorflow as tf

    try:
        with tf.io.gfile.GFile(path, "rb") as f:
            raw = json.loads(f.read().decode("utf-8"))
    except (tf.errors.OpError, ValueError, UnicodeDecodeError) as e:
        raise ConfigError(f"config file {path} cannot be read: {e}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {path} must hold a JSON object")
    return raw


def _interrupt(signum, frame):
    # SIGTERM (a scheduler's preemption) takes the same path as Ctrl-C: the
    # trainer saves a checkpoint of the current step before exiting.
    raise KeyboardInterrupt(f"signal {signum}")


def run(args: argparse.Namespace) -> int:
    """Trains as ``args`` say; prints a ``summary: {json}`` line; returns the exit status."""
    from tfdeblur.training.trainer import RunFolderError, train

    overrides = list(args.override)
    if getattr(args, "distribute", None) is not None:
        overrides.append(f"train.distribute={args.distribute}")
    try:
        if args.config is not None:
            cfg = load_config(find_config(args.config), overrides, steps=args.steps)
        elif overrides or args.steps is not None:
            raw = apply_overrides(_read_run_config(args.run_dir), overrides)
            if args.steps is not None:
                raw.setdefault("train", {})["steps"] = args.steps
            cfg = resolve_config(raw)
        else:
            cfg = None
        previous = signal.signal(signal.SIGTERM, _interrupt) if _in_main_thread() else None
        try:
            result = train(cfg, args.run_dir)
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
    except (ConfigError, RunFolderError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; run again with the same --run-dir to resume", file=sys.stderr)
        return 130
    print("summary: " + json.dumps(result.to_json(), default=str), flush=True)
    return 0


def _in_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="train.py", description="Train a deblurring network from a config; resumes from "
        "the run folder's newest checkpoint.")
    return run(add_arguments(parser).parse_args(argv))
