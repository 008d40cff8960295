"""Command-line tool: ``tfdeblur info | models | deblur``.

    tfdeblur info                       # versions, compiled-op status, models
    tfdeblur models                     # the architectures and their sizes
    tfdeblur deblur -m model.keras blurry.png -o sharp.png
    tfdeblur deblur -m model.keras frames/ -o out/ --tile 512

``deblur`` needs a trained model file (``.keras``); no pretrained weights are
bundled yet and none are downloaded.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

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
    return 0


def _models(args) -> int:
    from tfdeblur import models

    print("| model | parameters | float32 MB |")
    print("|---|---:|---:|")
    for name in models.available():
        m = models.build(name)
        n = m.count_params()
        print(f"| {name} | {n:,} | {n * 4 / 1e6:.1f} |")
    return 0


def _deblur(args) -> int:
    from tfdeblur.inference import deblur_files, load_model

    model = load_model(args.model)
    written = deblur_files(model, args.inputs, args.output, tile=args.tile,
                           overlap=args.overlap, batch_size=args.batch_size,
                           suffix=args.suffix, progress=not args.quiet)
    if not args.quiet:
        print(f"wrote {len(written)} image(s) to {args.output}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tfdeblur", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="versions, compiled-op status, available models")
    sub.add_parser("models", help="list the architectures with their parameter counts")
    d = sub.add_parser("deblur", help="deblur image files with a trained .keras model")
    d.add_argument("inputs", nargs="+", help="image files or folders of images")
    d.add_argument("-m", "--model", required=True, help="trained model file (.keras)")
    d.add_argument("-o", "--output", required=True,
                   help="output folder, or an output file when there is one input")
    d.add_argument("--tile", type=int, default=None,
                   help="process large images as overlapping tiles of this size")
    d.add_argument("--overlap", type=int, default=32, help="tile overlap in pixels")
    d.add_argument("--batch-size", type=int, default=4, help="tiles per model call")
    d.add_argument("--suffix", default="", help="added to output file names")
    d.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handlers = {"info": _info, "models": _models, "deblur": _deblur}
    try:
        return handlers[args.command](args)
    except (FileNotFoundError, ValueError) as e:
        print(f"tfdeblur {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
