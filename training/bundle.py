"""Turns a training run into a bundled model: ``tfdeblur/pretrained/NAME.keras`` + model card.

Takes the run's ``best.keras`` (the step with the best ``train.monitor``,
``val_gopro_psnr`` for the bundled recipes), ``final.keras`` or
``averaged.keras`` (the mean weights of a span of checkpoints,
``training/average.py``), measures it
again on the run's validation sets exactly as training validated (whole
images, PSNR/SSIM of the output clipped to [0, 1]; and with the 8-orientation
self-ensemble of ``deblur_image(self_ensemble=True)``), and writes the model and
its card (format: ``tfdeblur/pretrained/README.md``) atomically. Steps come
from ``best.json``, CPU-hours from ``cpu_time.json`` (written by
``training/long_run.py``; the hours up to the bundled step, pro rata for the
stretch it falls in).

    python training/bundle.py training/runs/lmfn_bundled --name lmfn_bundled --default
"""

from __future__ import annotations

import argparse
import json
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PRETRAINED = os.path.join(REPO, "tfdeblur", "pretrained")
#: All bundled files together must stay below this (the package stays small: < 20 MB).
SIZE_LIMIT = 20_000_000

LICENCES = {
    "weights": "Apache-2.0 (as the package)",
    "data": ["BSDS500 (Berkeley Segmentation Dataset, Arbelaez et al. 2011): research use; "
             "the sharp photos the training pairs are synthesised from",
             "Levin et al. 2009 recorded camera-shake kernels: part of the synthesis",
             "GoPro (Nah et al. 2017): CC BY 4.0; 30 real crops, validation and model "
             "selection only, never trained on",
             "Kodak Lossless True Color Image Suite: validation only (synthetic blur)"],
}


def cpu_hours_until(run_dir: str, step: int) -> float | None:
    path = os.path.join(run_dir, "cpu_time.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        entries = json.load(f)["entries"]
    total = 0.0
    for e in entries:
        lo, hi = e.get("from_step", 0), e.get("to_step") or e.get("from_step", 0)
        if hi <= step:
            total += e["cpu_seconds"]
        elif lo < step:
            total += e["cpu_seconds"] * (step - lo) / max(hi - lo, 1)
    return round(total / 3600, 2)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run_dir")
    ap.add_argument("--name", required=True, help="bundled model name")
    ap.add_argument("--which", choices=["best", "final", "averaged"], default="best",
                    help="best.keras, final.keras or averaged.keras (training/average.py)")
    ap.add_argument("--description", default=None)
    ap.add_argument("--default", action="store_true", help="make it the default model")
    ap.add_argument("--out", default=PRETRAINED)
    args = ap.parse_args(argv)

    from tfdeblur import pretrained
    from tfdeblur.inference import load_model
    from tfdeblur.training import config as config_lib
    from tfdeblur.training.callbacks import evaluate_images, save_model_atomically
    from tfdeblur.training.trainer import validation_datasets

    run_dir = os.path.abspath(args.run_dir)
    model_path = os.path.join(run_dir, f"{args.which}.keras")
    if not os.path.exists(model_path):
        raise SystemExit(f"{model_path} does not exist")
    with open(os.path.join(run_dir, "config.json")) as f:
        raw = json.load(f)
    cfg = config_lib.resolve_config(raw, REPO)
    step = None
    averaged = None
    selection = (f"the step with the best {cfg['train']['monitor']} (so gopro_patches figures "
                 "are those of the selected step: mildly optimistic)")
    if args.which == "best":
        with open(os.path.join(run_dir, "best.json")) as f:
            step = json.load(f)["step"]
    elif args.which == "averaged":
        with open(os.path.join(run_dir, "averaged.json")) as f:
            averaged = json.load(f)
        step = averaged["to_step"]
        selection = (f"the mean of the weights of {averaged['checkpoints']} checkpoints, steps "
                     f"{averaged['from_step']}-{averaged['to_step']} every {averaged['every']} "
                     "(weight averaging, training/average.py); no step selected on validation")
    else:
        step = cfg["train"]["steps"]
    model = load_model(model_path)
    sets = validation_datasets(cfg)
    val = {}
    with open(os.path.join(run_dir, "validation_baseline.json")) as f:
        baseline = json.load(f)
    card_keys = {"gopro": "gopro_patches", "kodak24": "kodak24_synthetic"}
    for name, ds in sets.items():
        r = evaluate_images(model, ds)
        e = evaluate_images(model, ds, self_ensemble=True)
        b = baseline[name]
        val[card_keys.get(name, name)] = {
            "psnr": round(r["psnr"], 3), "ssim": round(r["ssim"], 4),
            "blurry_psnr": round(b["psnr"], 3), "blurry_ssim": round(b["ssim"], 4),
            "self_ensemble_psnr": round(e["psnr"], 3), "self_ensemble_ssim": round(e["ssim"], 4),
            "images": r["images"]}
        print(f"{name}: PSNR {r['psnr']:.3f} dB (blurry {b['psnr']:.3f}, self-ensemble "
              f"{e['psnr']:.3f}), SSIM {r['ssim']:.4f} (blurry {b['ssim']:.4f}, self-ensemble "
              f"{e['ssim']:.4f}), {r['images']} images")
    model_cfg = dict(raw["model"])
    arch = model_cfg.pop("name")
    train_data = raw["data"]["train"]
    card = {
        "name": args.name,
        "description": args.description or raw.get("description", ""),
        "architecture": arch,
        "builder_config": model_cfg,
        "parameters": int(model.count_params()),
        "training": {
            "config": raw.get("name"),
            "run": os.path.relpath(run_dir, REPO),
            "steps": int(step),
            "cpu_hours": cpu_hours_until(run_dir, int(step)),
            "batch_size": train_data.get("batch_size"),
            "patch_size": train_data.get("patch_size"),
            "loss": raw["loss"],
            "optimizer": raw["optimizer"],
            "data": "synthetic dynamic-scene blur from the 500 BSDS500 photos "
                    "(docs/training_data.md)" if train_data.get("type") == "synthetic"
                    else f"pairs from {train_data.get('root')}",
            "synthesis": train_data.get("blur", {}),
            "selection": selection,
        },
        "validation": val,
        "licence": LICENCES,
        "default": bool(args.default),
    }
    if card["training"]["cpu_hours"] is None:
        raise SystemExit(f"{run_dir}/cpu_time.json is missing: run training through "
                         "training/long_run.py so that CPU time is recorded")
    pretrained.validate_card(card, f"{args.name}.json", args.name)
    os.makedirs(args.out, exist_ok=True)
    if args.default:
        for other in pretrained.available(directory=args.out):
            if other == args.name:
                continue
            path = os.path.join(args.out, other + ".json")
            with open(path) as f:
                c = json.load(f)
            if c.get("default"):
                c["default"] = False
                _write_json(path, c)
    save_model_atomically(model, os.path.join(args.out, args.name + ".keras"))
    _write_json(os.path.join(args.out, args.name + ".json"), card)
    total = sum(os.path.getsize(os.path.join(args.out, n)) for n in os.listdir(args.out)
                if n.endswith((".keras", ".json")))
    print(f"bundled {args.name}: {card['parameters']:,} parameters, step {step}, "
          f"{card['training']['cpu_hours']} CPU-hours; bundled files {total / 1e6:.2f} MB")
    if total > SIZE_LIMIT:
        print(f"warning: bundled models take {total / 1e6:.1f} MB, over "
              f"{SIZE_LIMIT / 1e6:.0f} MB", file=sys.stderr)
        return 1
    return 0


def _write_json(path: str, value) -> None:
    from tfdeblur import _atomic

    _atomic.write_file(path, (json.dumps(value, indent=2) + "\n").encode("utf-8"))


if __name__ == "__main__":
    sys.exit(main())
