"""Command-line tool: ``tfdeblur info | models | deblur | demo | export | train``.

    tfdeblur info                       # versions, compiled-op status, models
    tfdeblur models                     # the bundled trained models, then the architectures
    tfdeblur deblur blurry.png -o sharp.png            # the best bundled model
    tfdeblur deblur -m lmfn_small frames/ -o out/ --tile 512    # a bundled model by name
    tfdeblur deblur -m model.keras blurry.png -o sharp.png      # a model file
    tfdeblur demo [-m NAME] [-o demo_output/]          # deblur the bundled real blurry photo
    tfdeblur export -m model.keras --saved-model models/m/1
    tfdeblur export -m model.keras --tflite svdn.tflite --size 256x256 --quantize float16
    tfdeblur train --config lmfn_cpu_small --run-dir runs/lmfn

Bundled models are listed by ``tfdeblur models`` (see :mod:`tfdeblur.pretrained`);
nothing is ever downloaded. Without a bundled model, ``deblur`` needs ``-m FILE.keras``
and ``demo`` fails with a message saying so.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from tfdeblur import pretrained

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _info(args) -> int:
    import keras
    import tensorflow as tf

    import tfdeblur
    from tfdeblur import models, ops

    print(f"tfdeblur {tfdeblur.__version__}, TensorFlow {tf.__version__}, "
          f"Keras {keras.__version__}")
    if ops.compiled_available():
        print(f"compiled ops: loaded ({json.dumps(ops.build_info())})")
    else:
        print(f"compiled ops: not in use ({ops.compiled_unavailable_reason()}); portable path")
    print(f"GPUs: {len(tf.config.list_physical_devices('GPU'))}")
    print(f"models: {', '.join(models.available())}")
    try:
        bundled = pretrained.available()
        best = pretrained.best() if bundled else None
    except pretrained.PretrainedError as e:  # reported, not fatal: this command diagnoses
        print(f"bundled trained models: unusable: {e}")
        return 0
    if bundled:
        print(f"bundled trained models: {', '.join(bundled)} (best: {best}; "
              f"`tfdeblur models` compares them)")
    else:
        print(f"bundled trained models: none yet (in {pretrained.search_dir()}); "
              f"`tfdeblur deblur -m FILE.keras` runs a model you trained")
    return 0


def _psnr_cell(scores: dict) -> str:
    return f"{scores['psnr']:.2f} ({scores['blurry_psnr']:.2f})"


def _models(args) -> int:
    from tfdeblur import models

    names = pretrained.available()
    if names:
        best = pretrained.best()
        print("Bundled trained models (PSNR dB of the output, in brackets of the blurry input; "
              "GoPro: 30 real 128x128 crops, never trained on):")
        print()
        print("| bundled model | architecture | parameters | GoPro crops PSNR | "
              "Kodak24 synthetic PSNR | MB |")
        print("|---|---|---:|---:|---:|---:|")
        for name in names:
            c = pretrained.card(name)
            size = os.path.getsize(pretrained.path(name)) / 1e6
            print(f"| {name}{' (best)' if name == best else ''} | {c['architecture']} | "
                  f"{c['parameters']:,} | {_psnr_cell(c['validation']['gopro_patches'])} | "
                  f"{_psnr_cell(c['validation']['kodak24_synthetic'])} | {size:.1f} |")
    else:
        print(f"Bundled trained models: none yet (in {pretrained.search_dir()}).")
    print()
    print("Architectures (paper configurations, untrained):")
    print()
    print("| model | parameters | float32 MB |")
    print("|---|---:|---:|")
    for name in models.available():
        m = models.build(name)
        n = m.count_params()
        print(f"| {name} | {n:,} | {n * 4 / 1e6:.1f} |")
    return 0


def _deblur(args) -> int:
    from tfdeblur._api import resolve_model
    from tfdeblur.inference import deblur_files

    model, description = resolve_model(args.model)
    if not args.quiet:
        print(f"model: {description}")
    written = deblur_files(model, args.inputs, args.output, tile=args.tile,
                           overlap=args.overlap, batch_size=args.batch_size,
                           suffix=args.suffix, progress=not args.quiet)
    if not args.quiet:
        print(f"wrote {len(written)} image(s) to {args.output}")
    return 0


def _demo(args) -> int:
    from tfdeblur import demo

    result = demo.run(args.model, args.output, input_path=args.input, tile=args.tile)
    h, w = result.size
    print(f"model: {result.model}")
    print(f"input: {result.input} ({w}x{h})")
    print(f"model load {result.load_seconds:.2f} s, inference {result.inference_seconds:.2f} s")
    print(f"wrote {result.deblurred}")
    print(f"wrote {result.side_by_side} (blurry | deblurred, zoomed crop underneath)")
    return 0


def _export(args) -> int:
    if not args.saved_model and not args.tflite:
        raise ValueError("nothing to export: give --saved-model DIR and/or --tflite FILE")
    if args.tflite and args.size is None:
        raise ValueError("--tflite needs --size HxW (TFLite models have a fixed input size)")
    if not args.tflite and (args.size is not None or args.quantize is not None):
        raise ValueError("--size and --quantize apply to --tflite only")
    if args.saved_model and args.tflite and (
            os.path.abspath(args.saved_model) == os.path.abspath(args.tflite)):
        raise ValueError("--saved-model and --tflite must be different paths")
    for path in (args.saved_model, args.tflite):
        # Checked before any work, so that one export is not written and the other refused.
        if path and os.path.lexists(path) and not args.overwrite:
            raise FileExistsError(f"{path} already exists (pass --overwrite to replace it)")

    from tfdeblur.export import ExportError, convert_tflite, export_saved_model
    from tfdeblur.inference import load_model

    model = load_model(args.model)
    try:
        if args.saved_model:
            path = export_saved_model(model, args.saved_model, input_shape=(None, None, None),
                                      overwrite=args.overwrite)
            print(f"wrote SavedModel {path} (signature serving_default: blurry float32 "
                  f"[N, H, W, {model.input_shape[-1]}] -> sharp; no tfdeblur ops; inspect with "
                  f"`saved_model_cli show --dir {path} --all`)")
        if args.tflite:
            path = convert_tflite(model, args.tflite, input_size=args.size,
                                  quantize=args.quantize, overwrite=args.overwrite)
            print(f"wrote TFLite model {path} ({os.path.getsize(path):,} bytes, input blurry "
                  f"[1, {args.size[0]}, {args.size[1]}, {model.input_shape[-1]}], "
                  f"quantize={args.quantize})")
    except ExportError as e:
        print(f"tfdeblur export: failed: {e}", file=sys.stderr)
        return 1
    return 0


def _size(text: str) -> tuple[int, int]:
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(p.strip().isdigit() and int(p) > 0 for p in parts):
        raise argparse.ArgumentTypeError(f"expected HxW with positive integers, e.g. 256x256, "
                                         f"got {text!r}")
    return int(parts[0]), int(parts[1])


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tfdeblur", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="versions, compiled-op status, available models")
    sub.add_parser("models", help="list the bundled trained models, then the architectures")
    d = sub.add_parser("deblur", help="deblur image files (the best bundled model, or -m)")
    d.add_argument("inputs", nargs="+", help="image files or folders of images")
    d.add_argument("-m", "--model", default=None,
                   help="a bundled model name (`tfdeblur models`) or a trained .keras file "
                        "(default: the best bundled model)")
    d.add_argument("-o", "--output", required=True,
                   help="output folder, or an output file when there is one input")
    d.add_argument("--tile", type=int, default=None,
                   help="process large images as overlapping tiles of this size")
    d.add_argument("--overlap", type=int, default=32, help="tile overlap in pixels")
    d.add_argument("--batch-size", type=int, default=4, help="tiles per model call")
    d.add_argument("--suffix", default="", help="added to output file names")
    d.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    m = sub.add_parser("demo", help="deblur the bundled real blurry photo; writes "
                                    "deblurred.png and side_by_side.png")
    m.add_argument("-m", "--model", default=None,
                   help="a bundled model name or a .keras file (default: the best bundled model)")
    m.add_argument("-o", "--output", default="demo_output", help="output folder (created)")
    m.add_argument("--input", default=None,
                   help="another image instead of the bundled photo (GoPro, 1280x720)")
    m.add_argument("--tile", type=int, default=None,
                   help="process the image as overlapping tiles of this size")
    e = sub.add_parser("export", help="export a trained .keras model for TF Serving "
                                      "(SavedModel) or TFLite, stock TensorFlow ops only")
    e.add_argument("-m", "--model", required=True, help="trained model file (.keras)")
    e.add_argument("--saved-model", metavar="DIR",
                   help="write a SavedModel folder (any image size; for TF Serving)")
    e.add_argument("--tflite", metavar="FILE", help="write a .tflite file (needs --size)")
    e.add_argument("--size", type=_size, metavar="HxW",
                   help="the TFLite model's fixed input size, e.g. 256x256")
    e.add_argument("--quantize", choices=["dynamic", "float16"], default=None,
                   help="TFLite weight quantization (default: float32)")
    e.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    from tfdeblur.training import command as train_command

    train_command.add_arguments(sub.add_parser(
        "train", help="train from a config (training/configs/); run again with the same "
                      "--run-dir to resume from its newest checkpoint"))
    return p


def _train(args) -> int:
    from tfdeblur.training import command as train_command

    return train_command.run(args)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handlers = {"info": _info, "models": _models, "deblur": _deblur, "demo": _demo,
                "export": _export, "train": _train}
    try:
        return handlers[args.command](args)
    except (FileNotFoundError, FileExistsError, ValueError) as e:
        print(f"tfdeblur {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
