"""Command-line tool ``tfdeblur``: eight subcommands.

    tfdeblur info                     versions, compiled-op status, models
    tfdeblur models                   the bundled trained models, then the architectures
    tfdeblur deblur IN... -o OUT      deblur files or folders (the best bundled model, or -m)
    tfdeblur demo                     deblur the bundled real blurry photo, side by side
    tfdeblur evaluate -m M DATA       mean PSNR / SSIM of a model and of the blurry input
    tfdeblur prepare-data ROOT OUT    a paired dataset as sharded TFRecords
    tfdeblur train --run-dir RUN      train from a config, or resume a run
    tfdeblur export -m M ...          SavedModel (TF Serving), TFLite / LiteRT, ONNX

``tfdeblur COMMAND --help`` gives each one's options; the README and docs/cli.md give examples.

Bundled models are listed by ``tfdeblur models`` (see :mod:`tfdeblur.pretrained`);
nothing is ever downloaded. Without a bundled model, ``deblur`` needs ``-m FILE.keras``
and ``demo`` fails with a message saying so.

``deblur`` never replaces an input (unless ``--overwrite-inputs``), keeps each
image's bit depth, alpha channel and greyness, and goes on past an image it
cannot read: each failure is named, and the exit status is 1 at the end.
Errors a person can fix (a missing file, a bad argument, bad training data, a
read-only folder) are one line on stderr with exit status 2; Ctrl-C is
"interrupted", exit status 130. TensorFlow's start-up log lines are hidden
unless ``--verbose``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import re
import sys
import tempfile
import warnings

from tfdeblur import pretrained

COMMANDS = ("info", "models", "deblur", "demo", "export", "train", "prepare-data", "evaluate")

# Set for the CLI process only, before TensorFlow is imported (never by the library).
_QUIET_ENV = {"TF_CPP_MIN_LOG_LEVEL": "3", "OPENCV_LOG_LEVEL": "OFF"}
# What TensorFlow's C++ libraries print while they load, before TF_CPP_MIN_LOG_LEVEL
# takes effect: absl's pre-initialisation notice and glog-style records (oneDNN,
# cudart_stub, cpu_feature_guard and its continuation line).
_LOAD_NOISE = re.compile(r"WARNING: All log messages before absl::InitializeLog\(\) is called"
                         r"|[IWEF]\d{4} \d\d:\d\d:\d+\.\d+\s+\d+ \S+:\d+\] "
                         r"|To enable the following instructions: ")
# Errors a person causes and can fix: one line and exit status 2.
_USER_ERRORS = (FileNotFoundError, FileExistsError, PermissionError, IsADirectoryError,
                NotADirectoryError, ValueError)
_USER_ERROR_NAMES = {"ImageFileError", "FileNotFoundError", "PermissionError", "ValueError",
                     "IsADirectoryError", "NotADirectoryError", "ConfigError"}


def _import_tensorflow_quietly() -> None:
    """Imports TensorFlow with file descriptor 2 captured, then repeats all but its load noise.

    The notices are written by C++ to the process's stderr before any Python
    setting can silence them, so they are filtered at the file-descriptor level.
    """
    if "tensorflow" in sys.modules:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            import tensorflow  # noqa: F401
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            kept = [line for line in capture.read().decode("utf-8", "replace").splitlines()
                    if line.strip() and not _LOAD_NOISE.match(line)]
            if kept:
                print("\n".join(kept), file=sys.stderr)


@contextlib.contextmanager
def _quiet(verbose: bool):
    """Hides TensorFlow's log output and Python warnings from Keras / TensorFlow for the command.

    Everything is restored afterwards, for callers of :func:`main` in their own process.
    """
    if verbose:
        yield
        return
    saved_env = {k: os.environ.get(k) for k in _QUIET_ENV}
    loggers = [logging.getLogger(name) for name in ("tensorflow", "absl")]
    levels = [logger.level for logger in loggers]
    os.environ.update(_QUIET_ENV)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", module=r"(keras|tensorflow|absl)(\.|$)")
            for logger in loggers:
                logger.setLevel(logging.ERROR)
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


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
    from tfdeblur.inference import DeblurFilesError, deblur_files, plan_outputs

    # Checked before the model is loaded: a refused output costs no time.
    plan_outputs(args.inputs, args.output, suffix=args.suffix,
                 overwrite_inputs=args.overwrite_inputs)
    model, description = resolve_model(args.model)
    if not args.quiet:
        print(f"model: {description}")
    try:
        with _small_tile_note("deblur", model, args.tile):
            written = deblur_files(model, args.inputs, args.output, tile=args.tile,
                                   overlap=args.overlap, batch_size=args.batch_size,
                                   self_ensemble=args.self_ensemble, suffix=args.suffix,
                                   progress=not args.quiet,
                                   overwrite_inputs=args.overwrite_inputs)
    except DeblurFilesError as e:
        for _, message in e.failed:
            print(f"tfdeblur deblur: error: {message}", file=sys.stderr)
        print(f"wrote {len(e.written)} image(s) to {args.output}; {len(e.failed)} failed",
              file=sys.stderr)
        return 1
    if not args.quiet:
        print(f"wrote {len(written)} image(s) to {args.output}")
    return 0


@contextlib.contextmanager
def _small_tile_note(command: str, model, tile: int | None):
    """One line on stderr, before any work, when ``tile`` is below the model's minimum.

    The library's :class:`~tfdeblur.inference.TilingWarning` (a Python warning, per
    call) is silenced inside: the note has said it once.
    """
    from tfdeblur.inference import TilingWarning, small_tile_message

    message = small_tile_message(model, tile)
    if message is not None:
        print(f"tfdeblur {command}: warning: {message}", file=sys.stderr)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TilingWarning)
        yield


@contextlib.contextmanager
def _tiling_warnings_as_notes(command: str):
    """Shows a :class:`~tfdeblur.inference.TilingWarning` as one line on stderr.

    For ``demo``, which loads (and times) the model itself: the warning comes
    from the library when the image is tiled.
    """
    from tfdeblur.inference import TilingWarning

    with warnings.catch_warnings():
        show = warnings.showwarning

        def one_line(message, category, filename, lineno, file=None, line=None):
            if issubclass(category, TilingWarning):
                print(f"tfdeblur {command}: warning: {message}", file=sys.stderr)
            else:
                show(message, category, filename, lineno, file, line)

        warnings.showwarning = one_line
        yield


def _demo(args) -> int:
    from tfdeblur import demo

    with _tiling_warnings_as_notes("demo"):
        result = demo.run(args.model, args.output, input_path=args.input, tile=args.tile)
    h, w = result.size
    print(f"model: {result.model}")
    print(f"input: {result.input} ({w}x{h})")
    print(f"model load {result.load_seconds:.2f} s, inference {result.inference_seconds:.2f} s")
    print(f"wrote {result.deblurred}")
    print(f"wrote {result.side_by_side} (blurry | deblurred, zoomed crop underneath)")
    return 0


def _export(args) -> int:
    outputs = [(args.saved_model, "saved_model"), (args.tflite, "tflite"), (args.onnx, "onnx")]
    if not any(path for path, _ in outputs):
        raise ValueError("nothing to export: give --saved-model DIR, --tflite FILE and/or "
                         "--onnx FILE")
    if args.tflite and args.input_size is None:
        raise ValueError("--tflite needs --input-size HxW (TFLite models have a fixed input "
                         "size)")
    if not args.tflite and (args.input_size is not None or args.quantize is not None):
        raise ValueError("--input-size and --quantize apply to --tflite only")
    if (args.quantize == "int8") != (args.calibration is not None):
        raise ValueError("--quantize int8 needs --calibration FOLDER, and --calibration "
                         "applies to --quantize int8 only")
    if args.int8_io and args.quantize != "int8":
        raise ValueError("--int8-io applies to --quantize int8 only")
    given = [os.path.abspath(path) for path, _ in outputs if path]
    if len(set(given)) != len(given):
        raise ValueError("--saved-model, --tflite and --onnx must be different paths")
    for path, _ in outputs:
        # Checked before any work, so that one export is not written and the other refused.
        if path and os.path.lexists(path) and not args.overwrite:
            kind = "folder" if os.path.isdir(path) else "file"
            raise ValueError(f"{path} already exists (a {kind}; pass --overwrite to replace it)")

    from tfdeblur._api import model_file
    from tfdeblur.export import (
        ExportError,
        check_destination,
        export_onnx,
        export_saved_model,
        export_tflite,
    )
    from tfdeblur.inference import load_model

    source, _ = model_file(args.model)  # a bundled model's name or a .keras file
    # Before any work: with --overwrite, only an export of the same kind may be replaced,
    # never the source model or a folder holding it (all destinations checked first).
    for path, kind in outputs:
        if path:
            check_destination(path, kind, overwrite=args.overwrite, source=source)
    model = load_model(source)  # checks that it maps images to images of the same shape
    channels = model.input_shape[-1]
    try:
        if args.saved_model:
            path = export_saved_model(model, args.saved_model, input_shape=(None, None, None),
                                      overwrite=args.overwrite)
            print(f"wrote SavedModel {path} (signatures serving_default: blurry float32 "
                  f"[N, H, W, {channels}] -> sharp, and deblur_image: image_bytes PNG/JPEG "
                  f"-> png_bytes; TF Serving warm-up records; no tfdeblur ops; inspect with "
                  f"`saved_model_cli show --dir {path} --all`)")
        if args.tflite:
            with _print_log("tfdeblur.export.int8"):
                path = export_tflite(model, args.tflite, input_size=args.input_size,
                                     quantize=args.quantize, calibration=args.calibration,
                                     int8_io=args.int8_io, overwrite=args.overwrite)
            io = "int8" if args.int8_io else "float32"
            print(f"wrote TFLite model {path} ({os.path.getsize(path):,} bytes, input blurry "
                  f"{io} [1, {args.input_size[0]}, {args.input_size[1]}, {channels}], "
                  f"quantize={args.quantize})")
        if args.onnx:
            path = export_onnx(model, args.onnx, input_shape=(None, None, None),
                               overwrite=args.overwrite)
            print(f"wrote ONNX model {path} ({os.path.getsize(path):,} bytes, input blurry "
                  f"float32 [N, H, W, {channels}] (NHWC) -> sharp; verified in ONNX Runtime)")
    except ExportError as e:
        print(f"tfdeblur export: failed: {_message(e)}", file=sys.stderr)
        return 1
    return 0


@contextlib.contextmanager
def _print_log(name: str):
    """Prints the INFO records of logger ``name`` on stdout while the block runs."""
    logger = logging.getLogger(name)
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def _prepare_data(args) -> int:
    from tfdeblur.data.tfrecord import write_tfrecords

    m = write_tfrecords(args.root, args.output, layout=args.layout, split=args.split,
                        blur_dir=args.blur_dir, shards=args.shards, with_flow=args.flow,
                        flow_cache=args.flow_cache, flow_preset=args.flow_preset,
                        skip_bad_files=args.skip_bad_files, overwrite=args.overwrite,
                        progress=not args.quiet)
    size = sum(s["bytes"] for s in m["shards"])
    print(f"wrote {m['pairs']} pairs{' with flows' if m['with_flow'] else ''} in "
          f"{len(m['shards'])} TFRecord shards ({size / 1e6:.1f} MB) to {args.output}; "
          f"read them with paired_dataset({args.output!r}) or a config's data root")
    return 0


def _evaluate(args) -> int:
    from tfdeblur.evaluation import evaluate

    with _small_tile_note("evaluate", _evaluate_model(args), args.tile):
        result = evaluate(args.model, args.data, layout=args.layout, split=args.split,
                          tile=args.tile, overlap=args.overlap, batch_size=args.batch_size,
                          self_ensemble=args.self_ensemble, limit=args.limit, csv=args.csv,
                          progress=not args.quiet)
    print(f"model: {result.model}")
    print(result.summary())
    if args.csv:
        print(f"wrote {result.images} rows to {args.csv}")
    return 0


def _evaluate_model(args):
    from tfdeblur._api import resolve_model

    return resolve_model(args.model)[0]  # cached: evaluate() gets the same model


def _train(args) -> int:
    if not getattr(args, "verbose", False):
        _import_tensorflow_quietly()
    from tfdeblur.training import command as train_command

    return train_command.run(args)


class _DeprecatedAlias(argparse.Action):
    """An old spelling of an option: it still works and warns (one line on stderr)."""

    def __init__(self, option_strings, dest, *, new: str, **kwargs):
        self.new = new
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"tfdeblur: warning: {option_string} is deprecated, use {self.new}",
              file=sys.stderr)
        setattr(namespace, self.dest, values)


def _size(text: str) -> tuple[int, int]:
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(p.strip().isdigit() and int(p) > 0 for p in parts):
        raise argparse.ArgumentTypeError(f"expected HxW with positive integers, e.g. 256x256, "
                                         f"got {text!r}")
    return int(parts[0]), int(parts[1])


def _int_at_least(minimum: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    parse.__name__ = "integer"  # argparse names the type in some messages
    return parse


def _add_quiet_and_verbose(parser: argparse.ArgumentParser) -> None:
    """``-q/--quiet`` (the Python functions' ``progress=False``) and ``-v/--verbose``."""
    parser.add_argument("-q", "--quiet", action="store_true",
                        help="no progress bar (progress=False in Python)")
    _add_verbose(parser)


def _add_verbose(parser: argparse.ArgumentParser, default=argparse.SUPPRESS) -> None:
    parser.add_argument("--verbose", action="store_true", default=default,
                        help="show TensorFlow's log output and warnings")


class _Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose arguments may be added when it is first used (``fill``).

    ``tfdeblur train``'s arguments come from :mod:`tfdeblur.training.command`,
    imported only when ``train`` is the subcommand (TensorFlow itself only when
    training starts), so ``tfdeblur --help`` and the other subcommands stay fast.
    """

    def __init__(self, *args, fill=None, **kwargs):
        super().__init__(*args, **kwargs)
        self._fill = fill

    def parse_known_args(self, args=None, namespace=None):
        if self._fill is not None:
            fill, self._fill = self._fill, None
            fill(self)
        return super().parse_known_args(args, namespace)


def _train_arguments(verbose: bool):
    def fill(parser: argparse.ArgumentParser) -> None:
        # The training package loads TensorFlow lazily: the arguments come without it.
        from tfdeblur.training import command as train_command

        train_command.add_arguments(parser)

    return fill


def build_parser(verbose: bool = False) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="tfdeblur", description="Single-image deblurring with Keras / TensorFlow: bundled "
        "trained models, training, export.")
    _add_verbose(p, default=False)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND",
                           title="commands", parser_class=_Parser)
    info = sub.add_parser("info", help="versions, compiled-op status, available models")
    _add_verbose(info)
    models = sub.add_parser("models",
                            help="list the bundled trained models, then the architectures")
    _add_verbose(models)
    d = sub.add_parser("deblur", help="deblur image files (the best bundled model, or -m)")
    d.add_argument("inputs", nargs="+", help="image files or folders of images (subfolders "
                                             "included)")
    d.add_argument("-m", "--model", default=None,
                   help="a bundled model name (`tfdeblur models`) or a trained .keras file "
                        "(default: the best bundled model)")
    d.add_argument("-o", "--output", required=True,
                   help="output folder (inputs keep their names; files of the same name from "
                        "different folders keep enough of their path to be told apart), or an "
                        "output file when there is one image")
    d.add_argument("--tile", type=_int_at_least(1), default=None,
                   help="process large images as overlapping tiles of this size (bounded "
                        "memory). " + _tiling_help())
    d.add_argument("--overlap", type=_int_at_least(0), default=None,
                   help="tile overlap in pixels, less than half the tile (default: the "
                        "model's: " + _overlap_help() + "; reduced to fit a smaller tile)")
    d.add_argument("--batch-size", type=_int_at_least(1), default=4, help="tiles per model call")
    d.add_argument("--self-ensemble", action="store_true",
                   help="deblur each image in its 8 orientations (rotated, mirrored) and average: "
                        "8x the time for a slightly better result")
    d.add_argument("--suffix", default="", help="added to output file names")
    d.add_argument("--overwrite-inputs", action="store_true",
                   help="allow outputs to replace input files (refused otherwise)")
    _add_quiet_and_verbose(d)
    m = sub.add_parser("demo", help="deblur the bundled real blurry photo; writes "
                                    "deblurred.png and side_by_side.png")
    m.add_argument("-m", "--model", default=None,
                   help="a bundled model name or a .keras file (default: the best bundled model)")
    m.add_argument("-o", "--output", default="demo_output", help="output folder (created)")
    m.add_argument("--input", default=None,
                   help="another image instead of the bundled photo (GoPro, 1280x720)")
    m.add_argument("--tile", type=_int_at_least(1), default=None,
                   help="process the image as overlapping tiles of this size, with the "
                        "model's default overlap. " + _tiling_help())
    _add_verbose(m)
    e = sub.add_parser("export", help="export a trained .keras model for TF Serving "
                                      "(SavedModel) or TFLite, stock TensorFlow ops only")
    e.add_argument("-m", "--model", required=True,
                   help="a bundled model name (tfdeblur models) or a trained model file (.keras)")
    e.add_argument("--saved-model", metavar="DIR",
                   help="write a SavedModel folder (any image size; for TF Serving)")
    e.add_argument("--tflite", metavar="FILE", help="write a .tflite file (needs --input-size)")
    e.add_argument("--input-size", type=_size, metavar="HxW", dest="input_size",
                   help="the TFLite model's fixed input size (height x width, Python's "
                        "input_size=(H, W)), e.g. 256x256")
    e.add_argument("--size", type=_size, metavar="HxW", dest="input_size",
                   action=_DeprecatedAlias, new="--input-size", help=argparse.SUPPRESS)
    e.add_argument("--quantize", choices=["dynamic", "float16", "int8"], default=None,
                   help="TFLite quantization: dynamic (int8 weights), float16 (weights) or "
                        "int8 (weights and activations; needs --calibration). Default: float32")
    e.add_argument("--calibration", metavar="FOLDER", default=None,
                   help="images for --quantize int8: crops at --input-size are the representative "
                        "dataset; the export reports the ops left in float and the PSNR of "
                        "the int8 output against the float output on them")
    e.add_argument("--int8-io", action="store_true",
                   help="with --quantize int8: int8 input and output (default: float32)")
    e.add_argument("--onnx", metavar="FILE",
                   help="write an .onnx file (tf2onnx; verified in ONNX Runtime; needs "
                        "pip install 'tfdeblur[onnx]')")
    e.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    _add_verbose(e)
    t = sub.add_parser("train", fill=_train_arguments(verbose),
                       help="train from a config (training/configs/); run again with the same "
                            "--run-dir to resume from its newest checkpoint")
    _add_verbose(t)
    pd = sub.add_parser("prepare-data", help="write a paired dataset as sharded TFRecords "
                                             "(fast reading, per-file sharding across workers)")
    pd.add_argument("root", help="a dataset paired_dataset reads (GoPro, {blur,sharp} folders, "
                                 "a pair list)")
    pd.add_argument("output", help="the folder to write (must not exist unless --overwrite)")
    pd.add_argument("--layout", choices=["auto", "gopro", "folders", "list"], default="auto")
    pd.add_argument("--split", choices=["train", "test"], default=None,
                    help="GoPro split, when ROOT holds both")
    pd.add_argument("--blur-dir", default="blur", help="GoPro blurry folder (blur, blur_gamma)")
    pd.add_argument("--shards", type=_int_at_least(1), default=None,
                    help="number of shard files (default: one per 128 MB, at least 8; use at "
                         "least as many as training workers)")
    pd.add_argument("--flow", action="store_true",
                    help="also store the optical flow of each sharp frame (GoPro layout; "
                         "for SVDN's position loss)")
    pd.add_argument("--flow-cache", default=None, help="flow cache folder")
    pd.add_argument("--flow-preset", choices=["ultrafast", "fast", "medium"], default="medium")
    pd.add_argument("--skip-bad-files", action="store_true",
                    help="leave out pairs with an unreadable file (warned) instead of stopping")
    pd.add_argument("--overwrite", action="store_true", help="replace a prepared OUTPUT")
    _add_quiet_and_verbose(pd)
    ev = sub.add_parser("evaluate", help="mean PSNR / SSIM of a model on a paired dataset, and "
                                         "of its blurry input")
    ev.add_argument("-m", "--model", required=True,
                    help="a bundled model name (tfdeblur models) or a trained .keras file")
    ev.add_argument("data", help="a dataset paired_dataset reads (GoPro split, {blur,sharp} "
                                 "folders, a pair list, prepared TFRecords)")
    ev.add_argument("--csv", metavar="FILE", default=None,
                    help="write one row per image: image, psnr, ssim, blurry_psnr, blurry_ssim")
    ev.add_argument("--tile", type=_int_at_least(1), default=None,
                    help="deblur as overlapping tiles of this size (default: whole images). "
                         + _tiling_help())
    ev.add_argument("--overlap", type=_int_at_least(0), default=None,
                    help="tile overlap in pixels (default: the model's)")
    ev.add_argument("--batch-size", type=_int_at_least(1), default=4, help="tiles per call")
    ev.add_argument("--self-ensemble", action="store_true",
                    help="score the mean over each image's 8 orientations (8x the time)")
    ev.add_argument("--layout", choices=["auto", "gopro", "folders", "list", "tfrecord"],
                    default="auto")
    ev.add_argument("--split", choices=["train", "test"], default=None,
                    help="GoPro split, when DATA holds both")
    ev.add_argument("--limit", type=_int_at_least(1), default=None,
                    help="score the first N pairs only")
    _add_quiet_and_verbose(ev)
    p.subcommand_parsers = sub.choices  # for checks across arguments after parsing
    return p


def _tiling_help() -> str:
    """Which networks are not local, and their minimum tiles (``--tile``'s help)."""
    from tfdeblur._tiling import TILING_DEFAULTS

    non_local = [d for d in TILING_DEFAULTS.values() if d.non_local]
    local = [d.architecture.upper() for d in TILING_DEFAULTS.values() if not d.non_local]
    parts = [f"{d.architecture.upper()} ({d.non_local}; tiles below "
             f"{d.min_tile or 'the whole image'} warn)" for d in non_local]
    return (f"Not local (tiles change their result): {'; '.join(parts)}. Local: "
            f"{', '.join(local)} (tiles change it only near their seams, within the overlap).")


def _overlap_help() -> str:
    from tfdeblur._tiling import FALLBACK_OVERLAP, TILING_DEFAULTS

    known = ", ".join(f"{d.architecture.upper()} {d.overlap}" for d in TILING_DEFAULTS.values())
    return f"{known}, other models {FALLBACK_OVERLAP}"


def _check_tiles(parser: argparse.ArgumentParser, args) -> None:
    # Only a given --overlap is checked here: the model's default is fitted to the tile.
    overlap = getattr(args, "overlap", None)
    if getattr(args, "tile", None) is None or overlap is None:
        return
    if args.tile <= 2 * overlap:
        parser.subcommand_parsers[args.command].error(
            f"argument --tile: must be more than twice --overlap ({overlap}), got {args.tile}")


def _message(e: BaseException) -> str:
    from tfdeblur._messages import user_message

    return user_message(e)


def _is_user_error(e: BaseException) -> bool:
    if isinstance(e, _USER_ERRORS):
        return True
    if isinstance(e, OSError):  # a read-only or full disk, a folder that cannot be made
        return e.filename is not None or bool(e.strerror)
    from tfdeblur._messages import inner_error

    inner = inner_error(e)  # an error raised inside tf.data (e.g. a corrupt training image)
    return inner is not None and inner[0] in _USER_ERROR_NAMES


def main(argv: list[str] | None = None) -> int:
    """Runs the command line ``argv`` (default: the program's); returns the exit status."""
    as_program = argv is None
    if as_program:
        # The tool runs TensorFlow graphs (compiled ops, SavedModel, TFLite): its own
        # process uses Keras's TensorFlow backend whatever the user's Keras config says.
        # (Importing tfdeblur as a library leaves KERAS_BACKEND to the user.)
        os.environ["KERAS_BACKEND"] = "tensorflow"
    status, command = _run(list(sys.argv[1:] if argv is None else argv))
    if as_program and command == "train" and status != 0:
        # A training stopped by an error or Ctrl-C can leave tf.data workers inside a
        # py_function; the iterator's destructor then waits for them while holding the
        # GIL they need, and the interpreter hangs (or aborts) at exit. Everything the
        # run writes is on disk by now (atomic writes), so leave without finalizing.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
    return status


def _run(argv: list[str]) -> tuple[int, str]:
    options = argv[:argv.index("--")] if "--" in argv else argv
    verbose = "--verbose" in options
    command = "?"
    with _quiet(verbose):
        try:
            parser = build_parser(verbose)
            args = parser.parse_args(argv)
            command = args.command
            _check_tiles(parser, args)
            if not verbose:
                _import_tensorflow_quietly()
            handlers = {"info": _info, "models": _models, "deblur": _deblur, "demo": _demo,
                        "export": _export, "train": _train, "prepare-data": _prepare_data,
                        "evaluate": _evaluate}
            return handlers[command](args), command
        except KeyboardInterrupt:
            print(f"tfdeblur {command}: interrupted", file=sys.stderr)
            return 130, command
        except Exception as e:
            if not _is_user_error(e):
                raise
            print(f"tfdeblur {command}: error: {_message(e)}", file=sys.stderr)
            return 2, command
        finally:
            sys.stdout.flush()


if __name__ == "__main__":
    sys.exit(main())
