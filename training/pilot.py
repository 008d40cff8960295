"""Pilot runs: candidate recipes trained for the same CPU time each, then compared.

Each candidate is ``tfdeblur train --config BASE --override ...`` in its own
run folder under ``--out``. The driver polls the training process's CPU time
(user + system, all threads, from ``/proc``) and stops it with SIGTERM (the
trainer saves its step) once it has used ``--cpu-minutes``; every validation
row of the run's ``log.csv`` is stamped with the CPU time at which it
appeared. A candidate whose folder already holds a finished pilot is not run
again (``--rerun`` to force).

Results: ``OUT/pilots.json`` (every candidate's curve), and with ``--docs``
a Markdown table and a plot of validation PSNR against CPU-minutes.

    python training/pilot.py --cpu-minutes 12 --docs docs

The candidates (``CANDIDATES`` below) vary network, width, loss and the
identity start over the bundled recipe ``training/configs/lmfn_bundled.json``
(same data, validation, batch and patch size; learning rate 5e-4 unless a
candidate says otherwise; constant learning rate in every pilot).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import signal
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: name -> (description, config overrides). Model keys not valid for a network are
#: replaced whole (``model=...``), so each candidate states its full model section.
CANDIDATES: dict[str, tuple[str, dict]] = {
    "lmfn16_charb_id": ("LMFN width 16, Charbonnier, identity start",
                        {"model": {"name": "lmfn", "width": 16, "num_blocks": 4,
                                   "identity_init": True}}),
    "lmfn32_charb_id": ("LMFN width 32, Charbonnier, identity start",
                        {"model": {"name": "lmfn", "width": 32, "num_blocks": 4,
                                   "identity_init": True}}),
    "lmfn32_l2_id": ("LMFN width 32, L2 (the paper's MSE), identity start",
                     {"model": {"name": "lmfn", "width": 32, "num_blocks": 4,
                                "identity_init": True},
                      "loss": {"name": "pixel", "normalization": "mse"}}),
    "lmfn32_charb_glorot": ("LMFN width 32, Charbonnier, Glorot start",
                            {"model": {"name": "lmfn", "width": 32, "num_blocks": 4,
                                       "identity_init": False}}),
    "svdn16_charb_id": ("SVDN width 16, Charbonnier, identity start",
                        {"model": {"name": "svdn", "width": 16, "dilation_rates": [1, 2, 4],
                                   "kernel_size": 5, "offset_hidden": 16, "head_width": 8,
                                   "identity_init": True}}),
    "svdn8_charb_id": ("SVDN width 8, Charbonnier, identity start",
                       {"model": {"name": "svdn", "width": 8, "dilation_rates": [1, 2, 4],
                                  "kernel_size": 5, "offset_hidden": 8, "head_width": 8,
                                  "identity_init": True}}),
    "svrnn16_charb": ("SVRNN width 16 (2 RNN stages), Charbonnier (no global residual: "
                      "no identity start)",
                      {"model": {"name": "svrnn", "width": 16, "weight_width": 16,
                                 "num_rnns": 2}}),
    "lmfn32_charb_id_p96": ("LMFN width 32, Charbonnier, identity start, 96x96 crops",
                            {"model": {"name": "lmfn", "width": 32, "num_blocks": 4,
                                       "identity_init": True},
                             "data.train.patch_size": 96}),
    "lmfn32_charb_id_lr1e-3": ("LMFN width 32, Charbonnier, identity start, learning rate 1e-3",
                               {"model": {"name": "lmfn", "width": 32, "num_blocks": 4,
                                          "identity_init": True},
                                "optimizer.learning_rate": 1e-3}),
    "lmfn32_charb_id_lr2.5e-4": ("LMFN width 32, Charbonnier, identity start, learning rate "
                                 "2.5e-4",
                                 {"model": {"name": "lmfn", "width": 32, "num_blocks": 4,
                                            "identity_init": True},
                                  "optimizer.learning_rate": 2.5e-4}),
    "svrnn8_charb": ("SVRNN width 8 (2 RNN stages), Charbonnier (no global residual: "
                     "no identity start)",
                     {"model": {"name": "svrnn", "width": 8, "weight_width": 8,
                                "num_rnns": 2}}),
}


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def cpu_while_running(proc: subprocess.Popen, interval: float):
    """Yields ``proc``'s CPU seconds every ``interval`` seconds while it runs; stops when it
    ends (its /proc entry gone)."""
    while proc.poll() is None:
        time.sleep(interval)
        try:
            cpu = cpu_seconds(proc.pid)
        except (FileNotFoundError, ProcessLookupError):
            return
        yield cpu


def _rows(path: str) -> list[dict]:
    if not os.path.exists(path):
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def run_candidate(name: str, overrides: dict, args) -> dict:
    run_dir = os.path.join(args.out, name)
    done = os.path.join(run_dir, "pilot.json")
    if os.path.exists(done) and not args.rerun:
        with open(done) as f:
            return json.load(f)
    if args.rerun and os.path.isdir(run_dir):
        import shutil

        shutil.rmtree(run_dir)
    cmd = [sys.executable, "-m", "tfdeblur", "train", "--config", args.config,
           "--run-dir", run_dir, "--steps", str(args.max_steps),
           "--override", f"train.steps_per_epoch={args.validate_every}",
           "--override", f"train.checkpoint_every={args.validate_every}",
           "--override", "optimizer.schedule={\"name\": \"constant\"}"]
    for key, value in overrides.items():
        cmd += ["--override", f"{key}={json.dumps(value)}"]
    os.makedirs(run_dir, exist_ok=True)
    log = open(os.path.join(run_dir, "pilot_stdout.txt"), "w")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env=env)
    budget = args.cpu_minutes * 60
    stamps: dict[int, float] = {}
    start = time.time()
    cpu = 0.0
    print(f"[pilot] {name}: budget {args.cpu_minutes} CPU-min", flush=True)
    for cpu in cpu_while_running(proc, 2):
        for row in _rows(os.path.join(run_dir, "log.csv")):
            stamps.setdefault(int(row["step"]), cpu)
        if cpu >= budget:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                proc.kill()
            break
    proc.wait()
    log.close()
    curve = []
    for row in _rows(os.path.join(run_dir, "log.csv")):
        step = int(row["step"])
        curve.append({"step": step, "cpu_minutes": round(stamps.get(step, cpu) / 60, 2),
                      **{k: float(v) for k, v in row.items()
                         if k.startswith("val_") and v not in ("", None)}})
    result = {"name": name, "description": CANDIDATES[name][0], "overrides": overrides,
              "cpu_minutes": round(cpu / 60, 2),
              "wall_minutes": round((time.time() - start) / 60, 2),
              "curve": curve}
    with open(done, "w") as f:
        json.dump(result, f, indent=1)
    best = max((c.get("val_gopro_psnr", float("nan")) for c in curve), default=float("nan"))
    print(f"[pilot] {name}: {len(curve)} validations, last step "
          f"{curve[-1]['step'] if curve else 0}, best val_gopro_psnr {best:.3f}", flush=True)
    return result


def write_docs(results: list[dict], folder: str, baseline: dict) -> None:
    os.makedirs(folder, exist_ok=True)
    lines = ["| candidate | steps | CPU-min | gopro PSNR (best) | gopro PSNR (last) | "
             "kodak24 synthetic PSNR (last) |", "|---|---:|---:|---:|---:|---:|"]
    for r in results:
        c = r["curve"]
        last = c[-1] if c else {}
        best = max((x.get("val_gopro_psnr", 0) for x in c), default=0)
        lines.append(f"| {r['description']} | {last.get('step', 0)} | {r['cpu_minutes']:.1f} | "
                     f"{best:.2f} | {last.get('val_gopro_psnr', 0):.2f} | "
                     f"{last.get('val_kodak24_psnr', 0):.2f} |")
    lines.append(f"| *blurry input* | | | {baseline.get('gopro', 0):.2f} | "
                 f"{baseline.get('gopro', 0):.2f} | {baseline.get('kodak24', 0):.2f} |")
    with open(os.path.join(folder, "pilots_table.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("[pilot] matplotlib not installed: no plot", file=sys.stderr)
        return
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, key, label in ((axes[0], "val_gopro_psnr", "gopro_patches (real)"),
                           (axes[1], "val_kodak24_psnr", "Kodak24 (synthetic blur)")):
        for r in results:
            pts = [(x["cpu_minutes"], x[key]) for x in r["curve"] if key in x]
            if pts:
                ax.plot(*zip(*pts, strict=True), marker=".", label=r["name"])
        base = baseline.get(key.split("_")[1])
        if base:
            ax.axhline(base, color="grey", linestyle="--", label="blurry input")
            top = max((x[key] for r in results for x in r["curve"] if key in x), default=base)
            ax.set_ylim(base - 1.0, top + 0.2)  # the first points of a Glorot start lie below
        ax.set_xlabel("CPU-minutes")
        ax.set_ylabel("PSNR (dB)")
        ax.set_title(label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(os.path.join(folder, "pilots.png"), dpi=110)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="lmfn_bundled", help="base recipe")
    p.add_argument("--out", default=os.path.join(REPO, "training", "pilots"))
    p.add_argument("--cpu-minutes", type=float, default=12.0, help="CPU budget per candidate")
    p.add_argument("--validate-every", type=int, default=100, help="steps between validations")
    p.add_argument("--max-steps", type=int, default=100000)
    p.add_argument("--only", nargs="*", default=None, help="run these candidates only")
    p.add_argument("--rerun", action="store_true")
    p.add_argument("--docs", default=None, help="write pilots_table.md and pilots.png here")
    args = p.parse_args(argv)
    names = args.only or list(CANDIDATES)
    unknown = sorted(set(names) - set(CANDIDATES))
    if unknown:
        p.error(f"unknown candidates {unknown}; known: {sorted(CANDIDATES)}")
    results = [run_candidate(n, CANDIDATES[n][1], args) for n in names]
    baseline = {}
    path = os.path.join(args.out, names[0], "validation_baseline.json")
    if os.path.exists(path):
        with open(path) as f:
            b = json.load(f)
        baseline = {k: v["psnr"] for k, v in b.items() if isinstance(v, dict) and "psnr" in v}
    with open(os.path.join(args.out, "pilots.json"), "w") as f:
        json.dump({"cpu_minutes_each": args.cpu_minutes, "baseline": baseline,
                   "results": results}, f, indent=1)
    if args.docs:
        write_docs(results, args.docs, baseline)
    return 0


if __name__ == "__main__":
    sys.exit(main())
