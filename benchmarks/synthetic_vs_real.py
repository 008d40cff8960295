"""Do the synthetic training pairs span the real GoPro blur? Distributions side by side.

Draws synthetic 128x128 pairs from BSDS500 photos with the blur settings of a
training recipe (default: the bundled LMFN's, ``training/configs/lmfn_bundled.json``)
exactly as the training pipeline makes them (a window ``max_radius`` larger
per side, blurred, cropped back), and compares them with the 30 real
``gopro_patches`` pairs on two statistics:

- blurry-vs-sharp PSNR (dB);
- blur extent as the *gradient energy ratio* ``sum |grad B|^2 / sum |grad S|^2``
  of the grey images (1: no blur; smaller: more blur; independent of the
  scene's contrast and of flat areas that hide blur from the PSNR).

Prints percentiles and the fraction of real pairs inside the synthetic 1-99 %
range, and writes a figure (histograms) with ``--figure``.

    python benchmarks/synthetic_vs_real.py --figure docs/synthetic_vs_real.png
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(1.0 / max(np.mean((a.astype(np.float64) - b) ** 2), 1e-12)))


def gradient_energy_ratio(blurry: np.ndarray, sharp: np.ndarray) -> float:
    def energy(x):
        g = np.asarray(x, np.float64).mean(axis=2)
        return np.mean(np.diff(g, axis=0) ** 2) + np.mean(np.diff(g, axis=1) ** 2)
    return float(energy(blurry) / max(energy(sharp), 1e-12))


def real_pairs(root: str):
    from tfdeblur.data.io import read_image

    blur = sorted(glob.glob(os.path.join(root, "blur", "*.png")))
    if not blur:
        raise SystemExit(f"no real pairs under {root}/blur")
    for path in blur:
        yield read_image(path), read_image(path.replace(os.sep + "blur" + os.sep,
                                                         os.sep + "sharp" + os.sep))


def synthetic_pairs(photos_root: str, blur_cfg: dict, kernels: str | None, n: int, seed: int,
                    patch: int = 128):
    from tfdeblur.data.io import read_image
    from tfdeblur.data.synthetic import BlurConfig, _random_window, load_kernels, synthesize_pair

    cfg = BlurConfig(**blur_cfg, kernels=tuple(load_kernels(kernels)) if kernels else ())
    photos = sorted(glob.glob(os.path.join(photos_root, "*.jpg")) +
                    glob.glob(os.path.join(photos_root, "*.png")))
    if not photos:
        raise SystemExit(f"no photos under {photos_root}")
    rng = np.random.default_rng(seed)
    m = cfg.max_radius()
    size = patch + 2 * m
    for _ in range(n):
        img = _random_window(read_image(photos[rng.integers(len(photos))]), size, size, rng)

        def fg():
            return _random_window(read_image(photos[rng.integers(len(photos))]), size, size, rng)
        pair = synthesize_pair(img, rng, config=cfg, foreground=fg)
        yield pair.blurry[m:m + patch, m:m + patch], pair.sharp[m:m + patch, m:m + patch]


def stats(pairs) -> dict[str, np.ndarray]:
    p, g = [], []
    for b, s in pairs:
        p.append(psnr(b, s))
        g.append(gradient_energy_ratio(b, s))
    return {"psnr": np.array(p), "gradient_ratio": np.array(g)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=os.path.join(REPO, "..", "shared", "data"))
    ap.add_argument("--config", default=os.path.join(REPO, "training", "configs",
                                                     "lmfn_bundled.json"))
    ap.add_argument("-n", type=int, default=500, help="synthetic pairs to draw")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--figure", default=None, help="write a PNG with the histograms")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    if not os.path.isdir(args.data):
        raise SystemExit(f"data folder {args.data} does not exist (see ../shared/data/README.md)")
    with open(args.config) as f:
        train = json.load(f)["data"]["train"]
    kernels = train.get("kernels")
    if kernels:
        kernels = kernels.replace("${data}", args.data)
    real = stats(real_pairs(os.path.join(args.data, "gopro_patches")))
    syn = stats(synthetic_pairs(os.path.join(args.data, "photos_bsds500"), train.get("blur", {}),
                                kernels, args.n, args.seed, 128))
    pct = [1, 5, 25, 50, 75, 95, 99]
    print(f"recipe {os.path.relpath(args.config, REPO)}: {args.n} synthetic 128x128 pairs "
          f"(BSDS500, seed {args.seed}) vs {len(real['psnr'])} real gopro_patches pairs\n")
    print("| statistic | set | " + " | ".join(f"p{q}" for q in pct) + " | mean |")
    print("|---|---|" + "---:|" * (len(pct) + 1))
    out = {}
    notes = []
    for key, label in (("psnr", "blurry-vs-sharp PSNR dB"),
                       ("gradient_ratio", "gradient energy ratio")):
        for name, st in (("real", real), ("synthetic", syn)):
            v = st[key]
            print(f"| {label} | {name} | " + " | ".join(f"{x:.2f}" for x in np.percentile(v, pct))
                  + f" | {v.mean():.2f} |")
        lo, hi = np.percentile(syn[key], [1, 99])
        inside = float(np.mean((real[key] >= lo) & (real[key] <= hi)))
        out[key] = {"real": real[key].tolist(), "synthetic_percentiles": dict(
            zip(map(str, pct), np.percentile(syn[key], pct).tolist(), strict=True)),
            "real_inside_synthetic_1_99": inside}
        notes.append(f"{label}: {inside * 100:.0f} % of the real pairs lie within the "
                     f"synthetic 1-99 % range [{lo:.2f}, {hi:.2f}]")
    print("\n" + "\n".join(notes))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    if args.figure:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
        for ax, key, label in ((axes[0], "psnr", "blurry-vs-sharp PSNR (dB)"),
                               (axes[1], "gradient_ratio",
                                "gradient energy ratio blurry / sharp")):
            if key == "psnr":
                bins = np.linspace(min(real[key].min(), syn[key].min()),
                                   max(real[key].max(), syn[key].max()), 30)
            else:  # a ratio: log-spaced bins (noise on a flat patch can push it above 1)
                bins = np.geomspace(max(min(real[key].min(), syn[key].min()), 1e-3),
                                    max(real[key].max(), syn[key].max()), 30)
                ax.set_xscale("log")
            ax.hist(syn[key], bins=bins, density=True, alpha=0.5,
                    label=f"synthetic (BSDS500, n={len(syn[key])})")
            ax.hist(real[key], bins=bins, density=True, alpha=0.6, histtype="stepfilled",
                    label=f"real gopro_patches (n={len(real[key])})")
            ax.set_xlabel(label)
            ax.set_ylabel("density")
            ax.grid(alpha=0.3)
        axes[0].legend(fontsize=8)
        fig.suptitle("Synthetic training blur vs real GoPro blur")
        fig.tight_layout()
        os.makedirs(os.path.dirname(os.path.abspath(args.figure)), exist_ok=True)
        fig.savefig(args.figure, dpi=110)
        print(f"figure: {args.figure}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
