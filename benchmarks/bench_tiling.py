"""What tiling costs in quality: tiled against whole-image deblurring, per model, tile and overlap.

``tfdeblur.inference.deblur_image(model, image, tile=T, overlap=O)`` runs
``T x T`` tiles that share ``O`` pixels and blends them linearly. A network
whose output at a pixel depends only on a neighbourhood smaller than the
overlap gives the whole-image result; LMFN (ALFM: channel attention with
statistics of the whole feature map) and SVRNN (spatial recurrences across
the whole image) do not. For every model, tile side and overlap this prints:

- on Kodak24 photos, whole (500x500), blurred with the synthetic blur of the
  bundled recipe's Kodak validation set (``data.validation.kodak24`` of
  ``training/configs/lmfn_bundled.json``; photo ``i`` drawn from
  ``numpy.random.default_rng([seed, i])``, a moving foreground cut from
  another photo of the set): the whole-image PSNR against the sharp photo
  (once per model), the tiled PSNR, their difference (tiled - whole, dB; mean
  and the worst image), and the PSNR of the tiled output against the whole
  output with the largest absolute difference (in 1/255);
- on the real blurry 1280x720 GoPro frame (``gopro_blurry_720p.png``, no
  sharp image): the tiled output against the whole one, PSNR and largest
  absolute difference (in 1/255);
- whether the setting keeps every image within ``--tolerance`` dB (0.1) of
  its whole-image PSNR, and per model the smallest tile for which one overlap
  does so at that tile and every larger tile tested (the suggested minimum
  tile and default overlap).

Metrics: ``tfdeblur.metrics.psnr``, RGB, data range 1, no border crop,
outputs clipped to [0, 1] (as ``deblur_image`` returns them); identical
outputs give ``inf``. Means are over images; the tiled-vs-whole PSNR on
Kodak is the median over images. Nothing is timed (``bench_quality.py
--tile`` times tiled runs).

Usage::

    python benchmarks/bench_tiling.py --models runs/lmfn/best.keras runs/svdn/best.keras
    python benchmarks/bench_tiling.py                      # every bundled model
    python benchmarks/bench_tiling.py --quick --models tiny.keras   # smoke test
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
import warnings
from collections.abc import Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)
sys.path.insert(0, HERE)

import numpy as np  # noqa: E402
from bench_quality import (  # noqa: E402 - the recipe's blur and the image list, read once
    add_model_and_data_arguments,
    default_models,
    image_files,
    recipe_blur,
)

TILES = (64, 96, 128, 192, 256, 384)
OVERLAPS = (16, 32, 64, 96)
QUICK = {"images": 2, "tiles": (128, 256), "overlaps": (16, 64)}


def kodak_pairs(data: str, recipe: str, count: int, seed: int | None):
    """``(blurry [N, 500, 500, 3], sharp, seed)``: whole Kodak photos with the recipe's blur."""
    from tfdeblur.data import read_image, synthesize_pair

    config, recipe_seed = recipe_blur(recipe, data)
    seed = recipe_seed if seed is None else seed
    paths = image_files(os.path.join(data, "photos_kodak24"), None)
    photos = [read_image(p) for p in paths]
    blurry, sharp = [], []
    for i, photo in enumerate(photos[:count]):
        rng = np.random.default_rng([seed, i])
        j = int(rng.integers(len(photos)))
        # Kodak photos are all 500x500: another one is a foreground texture of the right shape.
        pair = synthesize_pair(photo, rng, config=config, foreground=lambda j=j: photos[j])
        blurry.append(pair.blurry)
        sharp.append(pair.sharp)
    return np.stack(blurry), np.stack(sharp), seed, [os.path.basename(p) for p in paths[:count]]


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    from tfdeblur import metrics

    return float(metrics.psnr(a, b, data_range=1.0))


def max_diff(a: np.ndarray, b: np.ndarray) -> float:
    """Largest absolute difference, in 1/255."""
    return float(np.abs(a - b).max() * 255.0)


def tile_count(h: int, w: int, tile: int, overlap: int) -> int:
    from tfdeblur.inference import _tile_starts

    th, tw = min(tile, h), min(tile, w)
    return len(_tile_starts(h, th, th - overlap)) * len(_tile_starts(w, tw, tw - overlap))


def measure_model(model, blurry: np.ndarray, sharp: np.ndarray, frame: np.ndarray | None,
                  tiles: Sequence[int], overlaps: Sequence[int], log) -> dict:
    """The whole-image scores and one row per valid (tile, overlap)."""
    from tfdeblur.inference import TilingWarning, deblur_image

    whole = [deblur_image(model, b) for b in blurry]
    whole_psnr = [psnr(o, s) for o, s in zip(whole, sharp, strict=True)]
    frame_whole = None if frame is None else deblur_image(model, frame)
    rows = []
    for tile in tiles:
        for overlap in overlaps:
            if 2 * overlap >= tile:
                continue
            log(f"tile {tile}, overlap {overlap}")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", TilingWarning)  # below the minimum is measured
                tiled = [deblur_image(model, b, tile=tile, overlap=overlap) for b in blurry]
                frame_tiled = (None if frame is None
                               else deblur_image(model, frame, tile=tile, overlap=overlap))
            tiled_psnr = [psnr(o, s) for o, s in zip(tiled, sharp, strict=True)]
            delta = [t - w for t, w in zip(tiled_psnr, whole_psnr, strict=True)]
            row = {
                "tile": tile, "overlap": overlap,
                "tiles_500": tile_count(*blurry.shape[1:3], tile, overlap),
                "tiled_psnr": tiled_psnr, "delta_db": delta,
                "tiled_vs_whole_psnr": [psnr(t, w) for t, w in zip(tiled, whole, strict=True)],
                "max_diff_255": max(max_diff(t, w) for t, w in zip(tiled, whole, strict=True)),
            }
            if frame is not None:
                row.update(tiles_720p=tile_count(*frame.shape[:2], tile, overlap),
                           frame_tiled_vs_whole_psnr=psnr(frame_tiled, frame_whole),
                           frame_max_diff_255=max_diff(frame_tiled, frame_whole))
            rows.append(row)
    return {"whole_psnr": whole_psnr, "rows": rows}


def meets(row: dict, tolerance: float) -> bool:
    return max(abs(d) for d in row["delta_db"]) <= tolerance


def suggest(rows: list[dict], tolerance: float) -> dict | None:
    """The smallest tile T and an overlap O within ``tolerance`` at T and every larger tile.

    Ties in T go to the smaller overlap (fewer tiles). None when no overlap
    meets the tolerance at the largest tile tested.
    """
    best = None
    for overlap in sorted({r["overlap"] for r in rows}):
        mine = sorted((r for r in rows if r["overlap"] == overlap), key=lambda r: r["tile"])
        tile = None
        for r in reversed(mine):
            if not meets(r, tolerance):
                break
            tile = r["tile"]
        if tile is not None and (best is None or tile < best["min_tile"]):
            best = {"min_tile": tile, "overlap": overlap}
    return best


def fmt_db(x: float) -> str:
    return "inf" if math.isinf(x) else f"{x:.2f}"


def model_table(result: dict, tolerance: float) -> str:
    frame = result["rows"] and "frame_max_diff_255" in result["rows"][0]
    head = ["tile", "overlap", "tiles 500x500", "tiled PSNR (mean)", "tiled - whole dB (mean)",
            "tiled - whole dB (worst)", "tiled vs whole PSNR (median)",
            "tiled vs whole max diff /255"]
    if frame:
        head += ["720p tiles", "720p tiled vs whole PSNR", "720p max diff /255"]
    head.append(f"within {tolerance} dB")
    lines = ["| " + " | ".join(head) + " |", "|" + "---:|" * (len(head) - 1) + ":---:|"]
    for r in result["rows"]:
        worst = max(r["delta_db"], key=abs)
        cells = [str(r["tile"]), str(r["overlap"]), str(r["tiles_500"]),
                 f"{statistics.mean(r['tiled_psnr']):.2f}",
                 f"{statistics.mean(r['delta_db']):+.3f}", f"{worst:+.3f}",
                 fmt_db(statistics.median(r["tiled_vs_whole_psnr"])), f"{r['max_diff_255']:.1f}"]
        if frame:
            cells += [str(r["tiles_720p"]), fmt_db(r["frame_tiled_vs_whole_psnr"]),
                      f"{r['frame_max_diff_255']:.1f}"]
        cells.append("yes" if meets(r, tolerance) else "no")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def summary_table(results: list[dict], tolerance: float) -> str:
    from tfdeblur.inference import TILING_DEFAULTS

    lines = ["| model | architecture | whole PSNR (mean) | suggested min tile | suggested overlap "
             "| worst tiled - whole dB there | package default: min tile, overlap |",
             "|---|---|---:|---:|---:|---:|---|"]
    for res in results:
        s = res["suggestion"]
        row = None if s is None else next(r for r in res["rows"] if r["tile"] == s["min_tile"]
                                          and r["overlap"] == s["overlap"])
        d = TILING_DEFAULTS.get(res["architecture"])
        lines.append("| " + " | ".join([
            res["label"], res["architecture"] or "?",
            f"{statistics.mean(res['whole_psnr']):.2f}",
            "none tested" if s is None else str(s["min_tile"]),
            "-" if s is None else str(s["overlap"]),
            "-" if row is None else f"{max(row['delta_db'], key=abs):+.3f}",
            "-" if d is None else f"{d.min_tile or 'none'}, {d.overlap}"]) + " |")
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_model_and_data_arguments(parser)
    parser.add_argument("--images", type=int, default=6, help="Kodak photos (first N, sorted)")
    parser.add_argument("--tiles", type=int, nargs="+", default=list(TILES), help="tile sides")
    parser.add_argument("--overlaps", type=int, nargs="+", default=list(OVERLAPS),
                        help="overlaps (pairs with 2 x overlap >= tile are skipped)")
    parser.add_argument("--frame", default=None,
                        help="the real frame (default: DATA/gopro_blurry_720p.png); "
                             "'none' to skip it")
    parser.add_argument("--tolerance", type=float, default=0.1,
                        help="dB that tiled may lose against whole on every image")
    parser.add_argument("--quick", action="store_true",
                        help=f"{QUICK['images']} photos, tiles {QUICK['tiles']}, overlaps "
                             f"{QUICK['overlaps']}: a smoke test, not a result")
    parser.add_argument("--json", default=None, help="also write the numbers to this file")
    args = parser.parse_args(argv)
    if args.quick:
        args.images, args.tiles, args.overlaps = (QUICK["images"], list(QUICK["tiles"]),
                                                  list(QUICK["overlaps"]))
    if not 1 <= args.images <= 24:
        parser.error(f"--images must be in 1..24 (Kodak24), got {args.images}")
    if min(args.tiles) < 1 or min(args.overlaps) < 0:
        parser.error(f"--tiles must be >= 1 and --overlaps >= 0, got {args.tiles}, "
                     f"{args.overlaps}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    from tfdeblur import load
    from tfdeblur.data import read_image
    from tfdeblur.inference import tiling_defaults

    start = time.perf_counter()

    def log(msg):
        print(f"... {time.perf_counter() - start:6.1f} s {msg}", file=sys.stderr, flush=True)

    names = args.models
    if names is None:
        names, why = default_models()
        if not names:
            raise SystemExit(f"bench_tiling: {why}; give models with --models FILE.keras ...")
    blurry, sharp, seed, photo_names = kodak_pairs(args.data, args.recipe, args.images,
                                                   args.seed)
    frame_path = args.frame or os.path.join(args.data, "gopro_blurry_720p.png")
    frame = None if frame_path == "none" else read_image(frame_path)
    results = []
    for name in names:
        log(name)
        model = load(name)
        arch = tiling_defaults(model).architecture
        label = os.path.basename(name) if name.endswith(".keras") else name
        res = measure_model(model, blurry, sharp, frame, args.tiles, args.overlaps,
                            lambda msg, label=label: log(f"{label}: {msg}"))
        res.update(model=name, label=label, architecture=arch,
                   parameters=int(model.count_params()),
                   suggestion=suggest(res["rows"], args.tolerance))
        results.append(res)

    for res in results:
        print(f"### {res['label']} ({res['architecture'] or 'unknown architecture'}, "
              f"{res['parameters']:,} parameters)")
        print()
        print(f"Whole-image PSNR against sharp: mean {statistics.mean(res['whole_psnr']):.2f} dB "
              f"(per image: {', '.join(f'{p:.2f}' for p in res['whole_psnr'])}).")
        print()
        print(model_table(res, args.tolerance))
        print()
    print("### Suggested tiling (smallest tested tile within the tolerance there and at every "
          "larger tested tile, with the smallest such overlap)")
    print()
    print(summary_table(results, args.tolerance))
    print()
    print(f"Kodak24: {len(blurry)} whole 500x500 photos ({', '.join(photo_names)}), blur of "
          f"{os.path.relpath(args.recipe, REPO)} data.validation.kodak24, seed {seed}. "
          f"Real frame: {'none' if frame is None else frame_path}. 'within {args.tolerance} dB': "
          f"every photo's tiled PSNR is within {args.tolerance} dB of its whole-image PSNR. "
          f"Means over photos; tiled-vs-whole PSNR on Kodak: median over photos; max diff: the "
          f"largest over photos.")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"seed": seed, "photos": photo_names, "frame": frame_path,
                       "tolerance": args.tolerance, "models": results}, f, indent=1)
    log("done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
