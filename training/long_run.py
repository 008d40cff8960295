"""A long training run kept in the repository: CPU accounting and periodic commits.

Runs ``tfdeblur train`` on a run folder inside the repository
(``training/runs/<name>/``), resuming from its newest checkpoint, and

- adds the CPU time the training process uses (user + system, all threads,
  from ``/proc``) to ``RUN/cpu_time.json``, one entry per stretch of work
  (start and end time, steps, CPU-seconds), so the model card can state the
  CPU-hours of the whole run across sessions and machines;
- every ``--commit-minutes`` commits the run's newest checkpoint (weights and
  optimizer state), ``log.csv``, ``config.json``, ``best.keras``/``best.json``
  and ``cpu_time.json`` to git (only those paths; older checkpoints are
  removed from the index), so that the run resumes from the repository alone;
- with ``--average-from STEP`` (or once ``RUN/average.npz`` exists) folds every
  checkpoint the run writes from that step on into the weight average
  ``RUN/average.npz`` (``training/average.py`` turns it into a model), which is
  committed with the checkpoint.

SIGTERM / Ctrl-C stop the training the trainer's way (it saves the step
reached), then the final accounting and commit are made.

    python training/long_run.py --config lmfn_bundled --name lmfn_bundled --commit-minutes 45
    python training/long_run.py --name lmfn_bundled          # resume (config from the run)
    python training/long_run.py --name lmfn_bundled --steps 60000 --override \
        'optimizer.schedule={"name": "multistep", "milestones": [20000, 40000, 50000],
                             "factor": 0.5}'          # one argument: a new schedule to come
"""

from __future__ import annotations

import argparse
import datetime
import glob
import json
import os
import signal
import subprocess
import sys
import time

from pilot import cpu_while_running  # training/pilot.py: the same CPU accounting

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KEPT = ("log.csv", "config.json", "best.keras", "best.json", "cpu_time.json",
        "validation_baseline.json", "average.npz")


def newest_step(run_dir: str) -> int:
    steps = [int(os.path.basename(p)[5:-4])
             for p in glob.glob(os.path.join(run_dir, "checkpoints", "ckpt-*.npz"))]
    return max(steps, default=0)


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def record(run_dir: str, entry: dict) -> dict:
    """Writes ``entry`` (the current stretch) into ``cpu_time.json``, replacing its last
    version; returns the file's content."""
    path = os.path.join(run_dir, "cpu_time.json")
    data = {"entries": []}
    if os.path.exists(path):
        with open(path) as f:
            data = json.load(f)
    entries = [e for e in data["entries"] if e.get("id") != entry["id"]] + [entry]
    data = {"entries": entries,
            "cpu_hours_total": round(sum(e["cpu_seconds"] for e in entries) / 3600, 3),
            "cores": "cpu_seconds count all cores (2-core machine: 1 wall-hour <= 2 CPU-hours)"}
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1)
    os.replace(tmp, path)
    return data


def commit(run_dir: str, message: str) -> None:
    """Commits the run's kept files and its newest checkpoint; older ones leave the index."""
    rel = os.path.relpath(run_dir, REPO)
    ckpts = sorted(glob.glob(os.path.join(run_dir, "checkpoints", "ckpt-*.npz")))
    paths = [os.path.join(rel, n) for n in KEPT if os.path.exists(os.path.join(run_dir, n))]
    if ckpts:
        paths.append(os.path.relpath(ckpts[-1], REPO))
    tracked = subprocess.run(["git", "ls-files", os.path.join(rel, "checkpoints")], cwd=REPO,
                             capture_output=True, text=True).stdout.split()
    stale = [p for p in tracked if p not in paths]
    for attempt in range(10):
        try:
            if stale:
                subprocess.run(["git", "rm", "-q", "--cached", "--ignore-unmatch", *stale],
                               cwd=REPO, check=True, capture_output=True)
            subprocess.run(["git", "add", "-f", *paths], cwd=REPO, check=True,
                           capture_output=True)
            r = subprocess.run(["git", "commit", "-q", "-m", message, "--", *paths, *stale],
                               cwd=REPO, capture_output=True, text=True)
            if r.returncode == 0 or "nothing to commit" in (r.stdout + r.stderr):
                print(f"[long_run] committed: {message}", flush=True)
                return
            raise subprocess.CalledProcessError(r.returncode, "git commit", r.stdout + r.stderr)
        except subprocess.CalledProcessError as e:
            out = (e.output or "") + (e.stderr.decode() if isinstance(e.stderr, bytes) else
                                      (e.stderr or ""))
            if "index.lock" in str(out) and attempt < 9:
                time.sleep(3)
                continue
            print(f"[long_run] commit failed: {out.strip()[:500]}", file=sys.stderr, flush=True)
            return


def fold(average: str, run_dir: str, args) -> None:
    """Folds the run's new checkpoints into its weight average (a failure is reported,
    not fatal: the training goes on)."""
    sys.path.insert(0, REPO)
    from tfdeblur.training.averaging import fold_checkpoints

    try:
        added = fold_checkpoints(average, [os.path.join(run_dir, "checkpoints")],
                                 from_step=args.average_from, every=args.average_every)
    except Exception as e:  # noqa: BLE001 - e.g. a checkpoint being replaced right now
        print(f"[long_run] weight average not updated: {type(e).__name__}: {e}",
              file=sys.stderr, flush=True)
        return
    if added:
        print(f"[long_run] weight average: added step(s) {added}", flush=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--name", required=True, help="run name: training/runs/NAME")
    ap.add_argument("--config", default=None, help="config for a new run (omit to resume)")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                    help="passed to tfdeblur train (e.g. a new schedule for the steps to come)")
    ap.add_argument("--commit-minutes", type=float, default=45.0)
    ap.add_argument("--no-commit", action="store_true")
    ap.add_argument("--python", default=sys.executable)
    ap.add_argument("--average-from", type=int, default=None,
                    help="fold the checkpoints from this step on into RUN/average.npz")
    ap.add_argument("--average-every", type=int, default=None,
                    help="with --average-from: step spacing of the averaged checkpoints")
    args = ap.parse_args(argv)
    run_dir = os.path.join(REPO, "training", "runs", args.name)
    os.makedirs(run_dir, exist_ok=True)
    cmd = [args.python, "-m", "tfdeblur", "train", "--run-dir", run_dir]
    if args.config:
        cmd += ["--config", args.config]
    if args.steps:
        cmd += ["--steps", str(args.steps)]
    for o in args.override:
        cmd += ["--override", o]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    entry = {"id": _now(), "start": _now(), "end": None, "from_step": newest_step(run_dir),
             "to_step": None, "cpu_seconds": 0.0, "host_cores": os.cpu_count()}
    proc = subprocess.Popen(cmd, cwd=os.getcwd(), env=env)
    stop = {"asked": False}

    def forward(signum, frame):
        stop["asked"] = True
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    last_commit = time.time()
    cpu = 0.0
    average = os.path.join(run_dir, "average.npz")
    averaging = args.average_from is not None or os.path.exists(average)
    folded_up_to = -1
    for cpu in cpu_while_running(proc, 5):
        entry.update(end=_now(), to_step=newest_step(run_dir), cpu_seconds=round(cpu, 1))
        record(run_dir, entry)
        if averaging and entry["to_step"] != folded_up_to:
            fold(average, run_dir, args)
            folded_up_to = entry["to_step"]
        if not args.no_commit and time.time() - last_commit > args.commit_minutes * 60:
            commit(run_dir, f"training run {args.name}: checkpoint at step "
                            f"{entry['to_step']} ({cpu / 3600:.2f} CPU-hours this stretch)")
            last_commit = time.time()
    rc = proc.wait()
    if averaging:
        fold(average, run_dir, args)
    entry.update(end=_now(), to_step=newest_step(run_dir), cpu_seconds=round(cpu, 1))
    data = record(run_dir, entry)
    if not args.no_commit:
        commit(run_dir, f"training run {args.name}: checkpoint at step {entry['to_step']} "
                        f"(stopped, exit {rc}; {data['cpu_hours_total']:.2f} CPU-hours in all)")
    return rc


if __name__ == "__main__":
    sys.exit(main())
