"""Restoration quality and CPU time of the bundled models, beside the blurry input and a
classical baseline given the true kernel: the table of the README's "Results".

Rows: the blurry input; Wiener deconvolution and Richardson-Lucy given the
TRUE background kernel of each synthetic pair; each model (by default every
bundled model of ``tfdeblur.pretrained.available()``; ``--models`` takes
bundled names or ``.keras`` files). Columns:

- PSNR / SSIM on ``gopro_patches`` (30 real blurry/sharp 128x128 GoPro crops;
  no kernel is known there, so the classical rows show "n/a");
- PSNR / SSIM on Kodak24 with synthetic blur: the blur of the bundled recipe's
  Kodak validation set (``data.validation.kodak24`` of
  ``training/configs/lmfn_bundled.json``: linear-light blur with gamma 2.2,
  moving foreground layers, saturated highlights, sensor noise, JPEG), one
  ``--crop`` x ``--crop`` window per photo at a position drawn from the seed,
  blurred on a window ``config.max_radius()`` larger per side and cropped
  back (as ``synthetic_dataset`` does), photo ``i`` drawn from
  ``numpy.random.default_rng([seed, i])``;
- with ``--uniform``, the same photos with camera shake only (no foreground
  layer, no saturated highlights, no JPEG; sensor noise and 8-bit rounding
  kept): one spatially uniform kernel, the classical baseline's own model;
- CPU seconds for one 1280x720 frame (the real GoPro frame
  ``gopro_blurry_720p.png``): median of ``--repeats`` runs after one warm-up,
  through ``tfdeblur.inference.deblur_image`` (``--tile`` to tile it); for
  the classical rows, the deconvolution alone with
  Levin et al.'s largest recorded kernel;
- the papers' GoPro test-set figures, in separate columns: other data (the
  full-resolution GoPro test set), other compute (full-size networks trained
  on GPUs), not comparable with the measured columns.

Metrics: ``tfdeblur.metrics.psnr`` / ``ssim`` on RGB in [0, 1] (data range 1,
no border crop, outputs clipped to [0, 1]), the mean of per-image values.

The classical baselines invert the recipe's tone curve (``x ** 2.2``),
deconvolve each channel in linear light (reflect-padded, FFT), clip and
re-apply the curve. Wiener: ``X = conj(K) Y / (|K|^2 + nsr)`` with one
noise-to-signal ratio tuned on BSDS500 photos (never Kodak; same blur,
another seed) and, in a second row, the best ratio per image (an oracle that
sees the sharp image). Richardson-Lucy: its iteration count tuned on the same
BSDS500 photos. Where a foreground layer moves differently from the
background, the true kernel is only the background's.

Usage::

    python benchmarks/bench_quality.py                       # every bundled model
    python benchmarks/bench_quality.py --models runs/lmfn/best.keras --uniform
    python benchmarks/bench_quality.py --quick --models tiny.keras   # smoke test
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import numpy as np  # noqa: E402

DEFAULT_DATA = os.path.join(os.path.dirname(REPO), "shared", "data")
DEFAULT_RECIPE = os.path.join(REPO, "training", "configs", "lmfn_bundled.json")
DATA_ENTRIES = ("gopro_patches", "photos_kodak24", "photos_bsds500", "levin09_kernels.npz",
                "gopro_blurry_720p.png")

# The papers' own figures: GoPro test set (Nah et al. 2017) at full resolution,
# full-size networks trained on GPUs.
PAPERS = {
    "svrnn": {"psnr": 29.19, "ssim": 0.9306, "source": "Zhang et al., CVPR 2018 (SVRNN)"},
    "svdn": {"psnr": 29.81, "ssim": 0.9368, "source": "Yuan, Su, Ma, CVPR 2020 (SVDN)"},
    "lmfn": {"psnr": 31.54, "ssim": 0.923, "source": "Zhang et al. (LMFN)"},
}

# Grids the classical baselines are tuned over (once, on BSDS500).
NSR_GRID = tuple(float(v) for v in np.round(10.0 ** np.arange(-3.0, 0.01, 0.25), 6))
RL_ITERATIONS = (1, 2, 3, 5, 7, 10, 15, 20, 30, 40)


# --------------------------------------------------------------------------- classical


def _otf(kernel: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Real-FFT transfer function of ``kernel`` (centre = zero displacement) on ``shape``."""
    kh, kw = kernel.shape
    psf = np.zeros(shape, np.float64)
    psf[:kh, :kw] = kernel
    psf = np.roll(psf, (-(kh // 2), -(kw // 2)), axis=(0, 1))
    return np.fft.rfft2(psf)


def _to_linear(blurry: np.ndarray, kernel: np.ndarray, gamma: float | None):
    """Linear-light, reflect-padded image and its padding (wide enough for the kernel)."""
    k = np.asarray(kernel, np.float64)
    if k.ndim != 2 or k.shape[0] % 2 == 0 or k.shape[1] % 2 == 0:
        raise ValueError(f"kernel must be 2-D with odd sides, got shape {k.shape}")
    y = np.clip(np.asarray(blurry, np.float64), 0.0, 1.0)
    if y.ndim != 3:
        raise ValueError(f"blurry must be [H, W, C], got shape {y.shape}")
    if gamma:
        y = y ** gamma
    pad = min(max(32, max(k.shape)), y.shape[0] - 1, y.shape[1] - 1)
    return np.pad(y, ((pad, pad), (pad, pad), (0, 0)), mode="reflect"), pad, k / k.sum()


def _to_display(x: np.ndarray, pad: int, gamma: float | None) -> np.ndarray:
    x = np.clip(x[pad:x.shape[0] - pad, pad:x.shape[1] - pad], 0.0, 1.0)
    return (x ** (1.0 / gamma) if gamma else x).astype(np.float32)


def wiener_deconvolve(blurry: np.ndarray, kernel: np.ndarray, nsr: float | Sequence[float],
                      gamma: float | None = 2.2):
    """Wiener deconvolution with a known kernel, in linear light.

    Args:
        blurry: float ``[H, W, C]`` in [0, 1], display-referred.
        kernel: the blur kernel (odd sides, centre = zero displacement, the
            convention of :mod:`tfdeblur.data.synthetic`).
        nsr: noise-to-signal power ratio (constant over frequencies), or a
            sequence of them (one output each, sharing the FFTs).
        gamma: the tone curve the blur was made under (``x ** gamma`` is
            deconvolved); ``None`` deconvolves the values as they are.

    Returns:
        float32 ``[H, W, C]`` in [0, 1], or a list of them for a sequence.
    """
    y, pad, k = _to_linear(blurry, kernel, gamma)
    shape = y.shape[:2]
    h = _otf(k, shape)
    spectrum = np.fft.rfft2(y, axes=(0, 1))
    many = not isinstance(nsr, (int, float))
    outs = []
    for value in (nsr if many else [nsr]):
        if not value > 0:
            raise ValueError(f"nsr must be > 0, got {value}")
        gain = np.conj(h) / (np.abs(h) ** 2 + value)
        x = np.fft.irfft2(spectrum * gain[..., None], s=shape, axes=(0, 1))
        outs.append(_to_display(x, pad, gamma))
    return outs if many else outs[0]


def richardson_lucy(blurry: np.ndarray, kernel: np.ndarray, iterations: int | Sequence[int],
                    gamma: float | None = 2.2):
    """Richardson-Lucy deconvolution with a known kernel, in linear light.

    Args:
        blurry, kernel, gamma: as :func:`wiener_deconvolve`.
        iterations: number of iterations (>= 1), or a sequence of them (the
            estimate after each, from one run).

    Returns:
        float32 ``[H, W, C]`` in [0, 1], or a list of them for a sequence.
    """
    y, pad, k = _to_linear(blurry, kernel, gamma)
    shape = y.shape[:2]
    h = _otf(k, shape)[..., None]

    def conv(x, transfer):
        return np.fft.irfft2(np.fft.rfft2(x, axes=(0, 1)) * transfer, s=shape, axes=(0, 1))

    many = not isinstance(iterations, int)
    wanted = sorted(set(iterations if many else [iterations]))
    if wanted[0] < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}")
    est = np.full_like(y, max(float(y.mean()), 1e-3))
    saved = {}
    for t in range(1, wanted[-1] + 1):
        est = est * conv(y / np.maximum(conv(est, h), 1e-6), np.conj(h))
        if t in wanted:
            saved[t] = _to_display(est, pad, gamma)
    return [saved[t] for t in iterations] if many else saved[iterations]


# --------------------------------------------------------------------------- data


@dataclasses.dataclass
class SyntheticSet:
    """Blurry/sharp crops and the true background kernel of each, with how they were made."""

    name: str
    blurry: np.ndarray  # [N, H, W, 3]
    sharp: np.ndarray
    kernels: list
    foreground: int  # pairs with a moving foreground layer
    config: object  # the BlurConfig


def recipe_blur(recipe: str, data: str):
    """The BlurConfig (kernels loaded) and seed of the recipe's Kodak validation set."""
    from tfdeblur.data import load_kernels
    from tfdeblur.training.config import load_config
    from tfdeblur.training.trainer import _dataset_kwargs

    cfg = load_config(recipe, [f"vars.data={data}"], base_dir=REPO)
    section = cfg["data"]["validation"].get("kodak24")
    if section is None or section.get("type") != "synthetic":
        raise ValueError(f"recipe {recipe} has no synthetic data.validation.kodak24 set")
    _, _, kwargs = _dataset_kwargs(section)
    config = kwargs["config"]
    if kwargs.get("kernels"):
        config = dataclasses.replace(config, kernels=tuple(load_kernels(kwargs["kernels"])))
    return config, int(section["seed"])


def uniform_blur(config):
    """``config`` with camera shake only: the classical baseline's own model."""
    return dataclasses.replace(config, p_foreground=0.0, p_highlights=0.0, p_jpeg=0.0)


def synthetic_set(name: str, paths: Sequence[str], config, seed: int, crop: int) -> SyntheticSet:
    """One ``crop`` x ``crop`` synthetic pair per photo (photo ``i``: rng ``[seed, i]``)."""
    from tfdeblur.data import read_image, synthesize_pair

    margin = config.max_radius()
    side = crop + 2 * margin
    photos = [read_image(p) for p in paths]

    def window(img, rng, path):
        h, w = img.shape[:2]
        if h < side or w < side:
            raise ValueError(f"{path} is {w}x{h}, smaller than the {side}x{side} window that "
                             f"--crop {crop} needs (crop + 2 x blur margin {margin})")
        top, left = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
        return img[top:top + side, left:left + side]

    def foreground(rng):
        # Another photo of the set, as synthetic_dataset cuts its foreground layers.
        j = int(rng.integers(len(photos)))
        return lambda: window(photos[j], rng, paths[j])

    blurry, sharp, kernels, fg = [], [], [], 0
    for i, (img, path) in enumerate(zip(photos, paths, strict=True)):
        rng = np.random.default_rng([seed, i])
        pair = synthesize_pair(window(img, rng, path), rng, config=config,
                               foreground=lambda rng=rng: foreground(rng)())
        inner = (slice(margin, margin + crop), slice(margin, margin + crop))
        blurry.append(pair.blurry[inner])
        sharp.append(pair.sharp[inner])
        kernels.append(pair.background_kernel)
        fg += pair.foreground_kernel is not None
    return SyntheticSet(name, np.stack(blurry), np.stack(sharp), kernels, fg, config)


def gopro_patches(root: str, limit: int | None) -> tuple[np.ndarray, np.ndarray]:
    from tfdeblur.data import find_pairs, read_image

    pairs = find_pairs(root)[:limit]
    return (np.stack([read_image(p.blurry) for p in pairs]),
            np.stack([read_image(p.sharp) for p in pairs]))


def image_files(folder: str, limit: int | None) -> list[str]:
    from tfdeblur.data.io import is_image_file

    names = sorted(f for f in os.listdir(folder) if is_image_file(f) and not f.startswith("."))
    if not names:
        raise ValueError(f"{folder} holds no images")
    return [os.path.join(folder, f) for f in names[:limit]]


# --------------------------------------------------------------------------- scoring


def score(outputs: np.ndarray, sharp: np.ndarray) -> dict:
    """Mean per-image PSNR / SSIM (tfdeblur.metrics: RGB, data range 1, no crop)."""
    from tfdeblur import metrics

    out = np.clip(np.asarray(outputs, np.float32), 0.0, 1.0)
    p = np.asarray(metrics.psnr(out, sharp, data_range=1.0))
    s = np.asarray(metrics.ssim(out, sharp, data_range=1.0))
    return {"psnr": float(p.mean()), "ssim": float(s.mean()), "images": int(len(out)),
            "psnr_per_image": [float(v) for v in p]}


def per_image_psnr(outputs: Sequence[np.ndarray], sharp: np.ndarray) -> np.ndarray:
    from tfdeblur import metrics

    return np.asarray(metrics.psnr(np.stack(outputs), np.broadcast_to(
        sharp, (len(outputs),) + sharp.shape), data_range=1.0))


def tune(tuning: SyntheticSet) -> dict:
    """The Wiener NSR and the Richardson-Lucy iteration count of best mean PSNR on ``tuning``."""
    wiener = np.zeros(len(NSR_GRID))
    rl = np.zeros(len(RL_ITERATIONS))
    for b, s, k in zip(tuning.blurry, tuning.sharp, tuning.kernels, strict=True):
        gamma = tuning.config.gamma
        wiener += per_image_psnr(wiener_deconvolve(b, k, NSR_GRID, gamma), s)
        rl += per_image_psnr(richardson_lucy(b, k, RL_ITERATIONS, gamma), s)
    return {"nsr": NSR_GRID[int(np.argmax(wiener))],
            "iterations": RL_ITERATIONS[int(np.argmax(rl))],
            "images": len(tuning.blurry)}


def classical_outputs(ds: SyntheticSet, tuned: dict) -> dict[str, np.ndarray]:
    """Each classical method's outputs on ``ds`` (true background kernels)."""
    gamma = ds.config.gamma
    out = {"wiener": [], "wiener_oracle": [], "rl": []}
    for b, s, k in zip(ds.blurry, ds.sharp, ds.kernels, strict=True):
        grid = wiener_deconvolve(b, k, NSR_GRID, gamma)
        out["wiener"].append(grid[NSR_GRID.index(tuned["nsr"])])
        out["wiener_oracle"].append(grid[int(np.argmax(per_image_psnr(grid, s)))])
        out["rl"].append(richardson_lucy(b, k, tuned["iterations"], gamma))
    return {name: np.stack(v) for name, v in out.items()}


def median_seconds(fn, repeats: int, warmup: bool = True) -> float:
    if warmup:
        fn()  # graph building, allocations
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


# --------------------------------------------------------------------------- models


def default_models() -> tuple[list[str], str | None]:
    """Every bundled model, or ``[]`` and why."""
    try:
        from tfdeblur import pretrained

        names = list(pretrained.available())
    except (ImportError, AttributeError) as e:
        return [], f"tfdeblur.pretrained.available() is not importable ({e})"
    if not names:
        return [], f"no model is bundled yet (looked in {pretrained.search_dir()})"
    return names, None


def load_model(name_or_path: str):
    """(model, architecture or None) for a bundled name or a ``.keras`` file."""
    try:
        from tfdeblur import load, pretrained
    except ImportError:
        from tfdeblur.inference import load_model as load
        pretrained = None
    model = load(name_or_path)
    arch = None
    if pretrained is not None and name_or_path in pretrained.available():
        arch = pretrained.card(name_or_path).get("architecture")
    if arch is None:
        arch = model.name if model.name in PAPERS else None
    return model, arch


def run_model(model, images: np.ndarray, tile: int | None,
              self_ensemble: bool = False) -> np.ndarray:
    from tfdeblur.inference import deblur_image

    return np.stack([deblur_image(model, img, tile=tile, self_ensemble=self_ensemble)
                     for img in images])


# --------------------------------------------------------------------------- table


def fmt(x, digits: int) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def fmt_params(n) -> str:
    if n is None:
        return "-"
    return f"{n / 1e6:.2f} M" if n >= 1e5 else f"{n / 1e3:.1f} k" if n >= 1e3 else str(n)


def table(rows: list[dict], sets: list[tuple[str, str]]) -> str:
    head = ["method", "params", "GoPro patches (real) PSNR", "SSIM"]
    for _, label in sets:
        head += [f"{label} PSNR", "SSIM"]
    head += ["CPU s / 1280x720", "paper's full-size net, GoPro test PSNR*", "SSIM*"]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for r in rows:
        g = r["gopro_patches"] or {}
        cells = [r["method"], fmt_params(r["parameters"]), fmt(g.get("psnr"), 2),
                 fmt(g.get("ssim"), 4)]
        for key, _ in sets:
            s = r[key] or {}
            cells += [fmt(s.get("psnr"), 2), fmt(s.get("ssim"), 4)]
        t = r["cpu_seconds_720p"]
        p = r["paper_gopro"] or {}
        cells += ["-" if t is None else f"{t:.3g}", "-" if not p else f"{p['psnr']:.2f}",
                  "-" if not p else f"{p['ssim']:.4g}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# --------------------------------------------------------------------------- main


def check_data(data: str) -> None:
    if not os.path.isdir(data):
        raise SystemExit(f"bench_quality: the data folder {data} does not exist (it holds "
                         f"{', '.join(DATA_ENTRIES)}; see ../shared/data/README.md); give it "
                         "with --data")
    missing = [e for e in DATA_ENTRIES if not os.path.exists(os.path.join(data, e))]
    if missing:
        raise SystemExit(f"bench_quality: the data folder {data} lacks {', '.join(missing)} "
                         f"(it needs {', '.join(DATA_ENTRIES)}; see ../shared/data/README.md); "
                         "give another with --data")


def add_model_and_data_arguments(parser: argparse.ArgumentParser) -> None:
    """``--models``, ``--data``, ``--recipe``, ``--seed``: what this script and
    bench_tiling.py score, on the same synthetic Kodak set."""
    parser.add_argument("--models", nargs="*", default=None,
                        help="bundled names or .keras files (default: every bundled model)")
    parser.add_argument("--data", default=DEFAULT_DATA,
                        help=f"the shared data folder (default {DEFAULT_DATA})")
    parser.add_argument("--recipe", default=DEFAULT_RECIPE,
                        help="recipe whose data.validation.kodak24 blur is used")
    parser.add_argument("--seed", type=int, default=None,
                        help="seed of the synthetic Kodak set (default: the recipe's, 24)")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_model_and_data_arguments(parser)
    parser.add_argument("--crop", type=int, default=256, help="side of each Kodak crop")
    parser.add_argument("--tuning-images", type=int, default=16,
                        help="BSDS500 photos the classical baselines are tuned on")
    parser.add_argument("--uniform", action="store_true",
                        help="also score Kodak24 with camera shake only (one uniform kernel)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per method")
    parser.add_argument("--tile", type=int, default=None,
                        help="run the 720p timing frame as tiles of this side (deblur_image)")
    parser.add_argument("--threads", type=int, default=0,
                        help="TensorFlow intra-op threads (0: TensorFlow's default)")
    parser.add_argument("--quick", action="store_true",
                        help="few images and one timed run: a smoke test, not a result")
    parser.add_argument("--self-ensemble", action="store_true",
                        help="also a row per model for the mean over the 8 orientations "
                             "(deblur_image(self_ensemble=True): 8x the time)")
    parser.add_argument("--json", default=None, help="also write the numbers to this file")
    args = parser.parse_args(argv)
    for name, minimum in (("crop", 16), ("repeats", 1), ("tuning_images", 1)):
        if getattr(args, name) < minimum:
            parser.error(f"--{name.replace('_', '-')} must be >= {minimum}, got "
                         f"{getattr(args, name)}")
    if args.tile is not None and args.tile <= 64:
        parser.error(f"--tile must be > 64 (twice deblur_image's overlap), got {args.tile}")
    return args


def measure(args: argparse.Namespace) -> dict:
    """Every row of the table, the notes that go with it and the settings."""
    from tfdeblur.data import load_kernels, read_image

    start = time.perf_counter()

    def log(msg):
        print(f"... {time.perf_counter() - start:5.1f} s {msg}", file=sys.stderr, flush=True)

    n_gopro, n_kodak = (4, 3) if args.quick else (None, None)
    n_tune = min(args.tuning_images, 2) if args.quick else args.tuning_images
    repeats = 1 if args.quick else args.repeats
    names = args.models
    if names is None:
        names, why = default_models()
        if not names:
            print(f"bench_quality: {why}; only the blurry input and the classical baselines are "
                  "measured. Give models with --models NAME_OR_FILE.keras ...", file=sys.stderr)

    config, recipe_seed = recipe_blur(args.recipe, args.data)
    seed = recipe_seed if args.seed is None else args.seed
    margin = config.max_radius()
    kodak_paths = image_files(os.path.join(args.data, "photos_kodak24"), n_kodak)
    tune_paths = image_files(os.path.join(args.data, "photos_bsds500"), n_tune)
    # BSDS500 photos are 481x321: their crops may have to be smaller than Kodak's.
    tune_crop = min(args.crop, min(min(read_image(p).shape[:2]) for p in tune_paths) - 2 * margin)
    sets = [("kodak24_synthetic", "Kodak24 synthetic", config)]
    if args.uniform:
        sets.append(("kodak24_uniform", "Kodak24 camera shake only", uniform_blur(config)))

    log("gopro_patches")
    gopro_blurry, gopro_sharp = gopro_patches(os.path.join(args.data, "gopro_patches"), n_gopro)
    synth, tuned = {}, {}
    for key, label, cfg in sets:
        log(f"{label}: synthesis, tuning the classical baselines on {len(tune_paths)} BSDS500 "
            "photos")
        synth[key] = synthetic_set(key, kodak_paths, cfg, seed, args.crop)
        tuned[key] = tune(synthetic_set(key, tune_paths, cfg, seed + 1000, tune_crop))

    frame = read_image(os.path.join(args.data, "gopro_blurry_720p.png"))
    if frame.shape[:2] != (720, 1280):
        raise SystemExit(f"bench_quality: gopro_blurry_720p.png is {frame.shape[1]}x"
                         f"{frame.shape[0]}, expected 1280x720")
    timing_kernel = max(load_kernels(os.path.join(args.data, "levin09_kernels.npz")),
                        key=lambda k: k.size)
    gamma = config.gamma

    def row(method, kind, outputs, gopro=None, seconds=None, parameters=None, paper=None,
            **extra):
        return {"method": method, "kind": kind, **extra, "parameters": parameters,
                "gopro_patches": None if gopro is None else score(gopro, gopro_sharp),
                **{key: score(outputs[key], synth[key].sharp) for key, _, _ in sets},
                "cpu_seconds_720p": seconds, "paper_gopro": paper}

    rows = [row("blurry input", "input", {k: synth[k].blurry for k, _, _ in sets}, gopro_blurry)]

    log("classical baselines")
    outs = {key: classical_outputs(synth[key], tuned[key]) for key, _, _ in sets}
    first = tuned[sets[0][0]]
    classical = [
        ("wiener", "Wiener, true kernel, NSR tuned on BSDS500",
         lambda: wiener_deconvolve(frame, timing_kernel, first["nsr"], gamma)),
        ("wiener_oracle", "Wiener, true kernel, oracle NSR per image", None),
        ("rl", "Richardson-Lucy, true kernel, iterations tuned on BSDS500",
         lambda: richardson_lucy(frame, timing_kernel, first["iterations"], gamma)),
    ]
    for name, label, timed in classical:
        log(f"{name}: 720p timing")
        seconds = None if timed is None else median_seconds(timed, repeats, warmup=False)
        rows.append(row(label, "classical", {k: outs[k][name] for k, _, _ in sets},
                        seconds=seconds))

    for name in names:
        model, arch = load_model(name)
        label = os.path.basename(name) if name.endswith(".keras") else name
        label += f" ({arch})" if arch and arch not in label else ""
        for ensemble in (False, True) if args.self_ensemble else (False,):
            log(name + (", self-ensemble" if ensemble else ""))
            rows.append(row(
                label + (", 8-orientation self-ensemble" if ensemble else ""), "model",
                {k: run_model(model, synth[k].blurry, None, ensemble) for k, _, _ in sets},
                run_model(model, gopro_blurry, None, ensemble),
                seconds=median_seconds(
                    lambda m=model, e=ensemble: run_model(m, frame[None], args.tile, e), repeats),
                parameters=int(model.count_params()),
                paper=None if ensemble else PAPERS.get(arch), model=name, architecture=arch,
                self_ensemble=ensemble))

    main_set = synth["kodak24_synthetic"]
    n, fg = len(main_set.blurry), main_set.foreground
    notes = [
        f"GoPro patches: {len(gopro_blurry)} real 128x128 pairs (one GoPro training sequence); "
        "no kernel is known there, so the classical rows are n/a.",
        f"Kodak24 synthetic: {n} photos, one {args.crop}x{args.crop} crop each, the blur of "
        f"{os.path.relpath(args.recipe, REPO)} data.validation.kodak24 (seed {seed}); "
        f"{fg} of {n} pairs have moving foreground layers, where the true kernel the classical "
        "rows get is only the background's.",
    ]
    if args.uniform:
        notes.append("Kodak24 camera shake only: the same photos and seed with p_foreground=0, "
                     "p_highlights=0, p_jpeg=0 (sensor noise and 8-bit rounding kept): one "
                     "spatially uniform kernel per image, the classical baseline's own model.")
    notes += [f"Tuned for {label} (on BSDS500 with that blur): Wiener NSR "
              f"{tuned[key]['nsr']:.3g}, Richardson-Lucy {tuned[key]['iterations']} iterations."
              for key, label, _ in sets]
    notes += [
        f"Classical rows: deconvolution in linear light (gamma {gamma}) given the true background "
        f"kernel, NSR and iteration count tuned on {len(tune_paths)} BSDS500 photos "
        f"({tune_crop}x{tune_crop} crops, same blur, seed {seed + 1000}; never Kodak) over NSR "
        f"{NSR_GRID[0]:g}..{NSR_GRID[-1]:g} and {list(RL_ITERATIONS)} iterations; the oracle row "
        "picks the NSR of that grid with the best PSNR per image, from the sharp image. Their "
        "CPU time is the deconvolution alone with a known kernel (Levin et al.'s largest, "
        f"{timing_kernel.shape[0]}x{timing_kernel.shape[1]} centred; NumPy FFT, one thread; "
        f"Richardson-Lucy with the {sets[0][1]} iteration count); estimating the kernel is not "
        "included.",
        "Metrics: tfdeblur.metrics psnr/ssim, RGB, data range 1, no border crop, outputs "
        "clipped to [0, 1], mean of per-image values.",
        f"CPU time: the real 1280x720 frame gopro_blurry_720p.png through deblur_image"
        f"{f' (tiles of {args.tile})' if args.tile else ' (whole frame)'}, median of {repeats} "
        "run(s) after one warm-up (none for the classical rows).",
        "* Paper columns: the papers' own figures for the full-size networks, trained on GPUs, "
        "on the full-resolution GoPro test set: other data and other compute, not comparable "
        "with the measured columns. Sources: "
        + "; ".join(f"{k}: {v['source']}" for k, v in PAPERS.items()) + ".",
    ]
    if args.self_ensemble:
        notes.append("Self-ensemble rows: deblur_image(self_ensemble=True), the mean of the "
                     "outputs for the image rotated by 0, 90, 180 and 270 degrees, each also "
                     "mirrored, every output turned back first: 8 network passes.")
    if args.quick:
        notes.append("--quick: a handful of images and one timed run, a smoke test only.")
    settings = {"data": args.data, "recipe": args.recipe, "seed": seed, "crop": args.crop,
                "tuning_crop": tune_crop, "quick": args.quick, "repeats": repeats,
                "tile": args.tile, "threads": args.threads, "tuned": tuned,
                "blur": {key: {k: v for k, v in dataclasses.asdict(cfg).items() if k != "kernels"}
                         for key, _, cfg in sets}}
    return {"settings": settings, "sets": [(key, label) for key, label, _ in sets],
            "rows": rows, "notes": notes}


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    check_data(args.data)
    import tensorflow as tf

    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    result = measure(args)
    print(f"tfdeblur bench_quality: TensorFlow {tf.__version__}, "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs, "
          f"intra-op threads: {args.threads or 'default'}")
    print()
    print(table(result["rows"], result["sets"]))
    print()
    for note in result["notes"]:
        print(f"- {note}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({k: result[k] for k in ("settings", "rows", "notes")}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
