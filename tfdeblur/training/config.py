"""Training configurations: small JSON files, checked key by key before anything is built.

A configuration is a JSON object with the sections below (``training/configs``
holds the papers' recipes and small CPU ones). Every key is checked: an
unknown key, a value of the wrong type, a folder or file that does not exist,
or a ``"REQUIRED: ..."`` placeholder left in place is a :class:`ConfigError`
naming the dotted key (``optimizer.learning_rate``, ``data.train.root``).

.. code-block:: json

    {
      "name": "lmfn_cpu_small",
      "seed": 0,
      "model": {"name": "lmfn", "width": 8, "num_blocks": 2},
      "loss": {"name": "pixel", "normalization": "mse"},
      "optimizer": {"name": "adam", "learning_rate": 1e-4, "weight_decay": 1e-4,
                    "weight_decay_mode": "l2",
                    "schedule": {"name": "step", "every": 500000, "factor": 0.1}},
      "data": {
        "train": {"type": "synthetic", "root": "../shared/data/photos_bsds500",
                  "patch_size": 64, "batch_size": 4, "augment": true},
        "validation": {"gopro": {"type": "paired", "root": "../shared/data/gopro_patches"}}
      },
      "train": {"steps": 2000, "steps_per_epoch": 100, "checkpoint_every": 50}
    }

- ``model``: ``name`` from :func:`tfdeblur.models.available`, the other keys
  are that builder's arguments. SVDN's ``return_positions`` is set by the
  trainer (from the loss).
- ``loss``: ``name`` is ``"pixel"`` (:class:`~tfdeblur.losses.PixelLoss`,
  ``normalization`` ``"mse"``, ``"half_mse"`` or ``"half_sum"``),
  ``"charbonnier"`` (:class:`~tfdeblur.losses.CharbonnierLoss`) or ``"svdn"``
  (:class:`~tfdeblur.losses.SVDNLoss`), the other keys its arguments.
- ``metrics``: metrics on training batches, names from :data:`tfdeblur.registry.METRICS`.
  Every name (model, loss, metric, dataset type, schedule, optimizer) is an entry of
  :mod:`tfdeblur.registry`.
- ``optimizer``: Adam; ``weight_decay_mode`` ``"l2"`` adds
  ``weight_decay * w`` to the gradient (Caffe's and PyTorch's Adam, the
  papers' frameworks; :class:`~tfdeblur.training.AdamL2`), ``"decoupled"``
  shrinks the weights directly (AdamW). ``schedule``: ``constant``,
  ``polynomial`` (``end_learning_rate``, ``power``, ``decay_steps``, default
  ``train.steps``), ``step`` (multiply by ``factor`` every ``every`` steps) or
  ``multistep`` (multiply by ``factor`` at each step of ``milestones``). A
  resumed run may change ``optimizer.learning_rate`` and ``optimizer.schedule``
  when the new ones give the same learning rate at every step already
  trained (e.g. ``step`` every 20k → ``multistep`` ``[20000, 40000, 50000]``
  before step 50k): only the rest of the run changes.
- ``data.train`` / ``data.validation.<name>``: ``type`` ``"synthetic"``
  (:func:`~tfdeblur.data.synthetic_dataset`, blur settings in ``blur``, the
  fields of :class:`~tfdeblur.data.BlurConfig`) or ``"paired"``
  (:func:`~tfdeblur.data.paired_dataset`); the other keys are that function's
  arguments. Validation sets also take ``limit`` (use the first N images).
  Every image file is checked before the first step; ``data.skip_bad_files:
  true`` (or per section) leaves bad ones out with a warning naming each.
  A ``"paired"`` root may be a folder prepared by ``tfdeblur prepare-data``
  (TFRecords). ``data.train.service: "grpc://host:port"`` runs the training
  pipeline on that tf.data service dispatcher's workers.
- ``train``: ``steps`` (total optimizer steps), ``steps_per_epoch`` (the
  interval of validation, logging and the epoch-end checkpoint),
  ``checkpoint_every`` (steps), ``keep_checkpoints``, ``monitor`` (a
  validation log key such as ``val_gopro_psnr``, for ``best.keras``),
  ``validate_at_start``, ``jit_compile``, ``verbose``, ``distribute``
  (``"none"``, ``"mirrored"``: ``tf.distribute.MirroredStrategy`` over the local
  devices, ``"multi_worker"``: ``MultiWorkerMirroredStrategy`` from ``TF_CONFIG``;
  the data sections' ``batch_size`` is the global batch), ``mixed_precision``
  (``"float32"``, ``"mixed_float16"``, ``"mixed_bfloat16"``: the Keras dtype
  policy of the layers; saved models compute in float32), ``tensorboard``
  (event files in ``<run-dir>/tensorboard``) and ``tensorboard_images``
  (validation images shown per set).

``vars`` holds named values that other strings use as ``${name}`` (a path
given once for the training and the validation set); ``--override
vars.gopro=/data/GOPRO_Large`` then sets both. Relative paths are resolved
against the working directory when the configuration is loaded, and the run
folder keeps the resolved copy.
"""

from __future__ import annotations

import copy
import inspect
import itertools
import json
import math
import numbers
import os
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from tfdeblur import registry

#: Marks a value the user must provide (a data folder, a weights file).
REQUIRED = "REQUIRED"
WEIGHT_DECAY_MODES = ("l2", "decoupled")
#: Keys that may change when a run is resumed; any other difference is an error.
RESUMABLE_CHANGES = ("name", "description", "train.steps", "train.checkpoint_every",
                     "train.keep_checkpoints", "train.verbose", "train.distribute",
                     "train.tensorboard", "train.tensorboard_images")
#: ``train.distribute`` and ``train.mixed_precision`` values.
DISTRIBUTE = ("none", "mirrored", "multi_worker")
MIXED_PRECISION = ("float32", "mixed_float16", "mixed_bfloat16")
#: Where the data lies may change between stretches of a run (another machine, a moved
#: dataset, another tf.data service dispatcher): the folders and files of the data
#: sections, their ``service`` address, and ``vars``.
RESUMABLE_LOCATIONS = ("root", "kernels", "flow_cache", "service")


def is_resumable_change(key: str) -> bool:
    """Whether a run may resume with this (dotted) key changed: see
    :data:`RESUMABLE_CHANGES` and :data:`RESUMABLE_LOCATIONS`."""
    if key in RESUMABLE_CHANGES or key == "vars" or key.startswith("vars."):
        return True
    return key.startswith("data.") and key.rsplit(".", 1)[-1] in RESUMABLE_LOCATIONS
#: Arguments of the dataset functions that the trainer sets itself.
_TRAINER_DATA_ARGS = {"repeat", "skip", "drop_remainder", "num_parallel_calls", "config",
                      "progress", "redraw_each_epoch"}


class ConfigError(ValueError):
    """A configuration problem; the message starts with the dotted key."""


# --------------------------------------------------------------------------- value checks


def _fail(key: str, message: str) -> ConfigError:
    return ConfigError(f"config key {key!r}: {message}")


def _is_int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return (isinstance(v, numbers.Real) and not isinstance(v, bool)
            and math.isfinite(float(v)))


def check_int(key: str, v, minimum: int | None = None) -> int:
    if not _is_int(v) or (minimum is not None and v < minimum):
        bound = f" >= {minimum}" if minimum is not None else ""
        raise _fail(key, f"must be an integer{bound}, got {v!r}")
    return int(v)


def check_number(key: str, v, minimum: float | None = None, maximum: float | None = None,
                 exclusive_min: bool = False) -> float:
    ok = _is_number(v)
    if ok and minimum is not None:
        ok = v > minimum if exclusive_min else v >= minimum
    if ok and maximum is not None:
        ok = v <= maximum
    if not ok:
        lo = "" if minimum is None else f"{'>' if exclusive_min else '>='} {minimum}"
        hi = "" if maximum is None else f"<= {maximum}"
        bounds = " and ".join(b for b in (lo, hi) if b)
        raise _fail(key, f"must be a finite number{' ' + bounds if bounds else ''}, got {v!r}")
    return float(v)


def check_bool(key: str, v) -> bool:
    if not isinstance(v, bool):
        raise _fail(key, f"must be true or false, got {v!r}")
    return v


def check_str(key: str, v, choices: Sequence[str] | None = None) -> str:
    if not isinstance(v, str) or not v:
        raise _fail(key, f"must be a non-empty string, got {v!r}")
    if choices is not None and v not in choices:
        raise _fail(key, f"must be one of {list(choices)}, got {v!r}")
    return v


def check_mapping(key: str, v) -> dict:
    if not isinstance(v, Mapping):
        raise _fail(key, f"must be a JSON object, got {type(v).__name__} {v!r}")
    return dict(v)


def _unknown(key: str, given: Mapping, known: Sequence[str]) -> None:
    extra = sorted(set(given) - set(known))
    if extra:
        where = f"{key}." if key else ""
        raise ConfigError(f"config key {where + extra[0]!r} is unknown; keys accepted in "
                          f"{key or 'the top level'!r}: {sorted(known)}")


def _required_placeholders(value, key: str = "") -> list[tuple[str, str]]:
    """(dotted key, placeholder text) of every ``"REQUIRED..."`` string left in ``value``."""
    out = []
    if isinstance(value, Mapping):
        for k, v in value.items():
            out += _required_placeholders(v, f"{key}.{k}" if key else str(k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += _required_placeholders(v, f"{key}[{i}]")
    elif isinstance(value, str) and value.startswith(REQUIRED):
        out.append((key, value))
    return out


def _path(key: str, value, base: str, kind: str) -> str:
    """``value`` resolved against ``base``; ``kind``: "dir", "file", "any" (must exist) or "new"."""
    if not isinstance(value, (str, os.PathLike)) or not os.fspath(value):
        raise _fail(key, f"must be a path, got {value!r}")
    path = os.path.normpath(os.path.join(base, os.path.expanduser(os.fspath(value))))
    if kind == "dir" and not os.path.isdir(path):
        raise _fail(key, f"folder {path} does not exist"
                    + (" (it is a file)" if os.path.isfile(path) else ""))
    if kind == "file" and not os.path.isfile(path):
        raise _fail(key, f"file {path} does not exist"
                    + (" (it is a folder)" if os.path.isdir(path) else ""))
    if kind == "any" and not os.path.exists(path):
        raise _fail(key, f"{path} does not exist")
    return path


def _signature_args(fn: Callable) -> dict[str, inspect.Parameter]:
    return {n: p for n, p in inspect.signature(fn).parameters.items()
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


# --------------------------------------------------------------------------- sections


def _model_section(d, base: str) -> dict:
    import tfdeblur.models as models

    d = check_mapping("model", d)
    name = check_str("model.name", d.get("name"), models.available())
    builder = registry.MODELS.get(name)
    accepted = set(_signature_args(builder)) - {"return_positions"}
    args = {k: v for k, v in d.items() if k != "name"}
    if "return_positions" in args:
        raise _fail("model.return_positions", "is set by the trainer (true when the loss has a "
                    "position term); remove it")
    _unknown("model", args, sorted(accepted | {"name"}))
    if args.get("vgg16_weights") is not None:
        args["vgg16_weights"] = _path("model.vgg16_weights", args["vgg16_weights"], base, "file")
    return {"name": name, **args}


def _loss_section(d, base: str) -> dict:
    from tfdeblur import losses

    d = check_mapping("loss", d)
    name = check_str("loss.name", d.get("name"), registry.LOSSES.names())
    cls = registry.LOSSES.get(name)
    accepted = set(_signature_args(cls.__init__)) - {"self", "reduction", "dtype", "name"}
    args = {k: v for k, v in d.items() if k != "name"}
    _unknown("loss", args, sorted(accepted | {"name"}))
    if "normalization" in args:
        check_str("loss.normalization", args["normalization"], list(losses.NORMALIZATIONS))
    if name == "svdn":
        perceptual = args.get("perceptual_weight", 0.01)
        if args.get("vgg16_weights") is None and perceptual != 0:
            raise _fail("loss.vgg16_weights",
                        "SVDN's perceptual loss needs a local Keras VGG16 notop weights file "
                        "(vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5; never downloaded): "
                        "--override loss.vgg16_weights=PATH, or loss.perceptual_weight=0 to "
                        "train without the perceptual term")
    if args.get("vgg16_weights") is not None:
        args["vgg16_weights"] = _path("loss.vgg16_weights", args["vgg16_weights"], base, "file")
    return {"name": name, **args}


def _schedule_section(d, steps: int) -> dict:
    d = check_mapping("optimizer.schedule", d)
    name = check_str("optimizer.schedule.name", d.get("name", "constant"),
                     registry.SCHEDULES.names())
    defaults = registry.SCHEDULES.defaults(name)
    _unknown("optimizer.schedule", d, ["name", *defaults])
    out = {"name": name, **defaults, **{k: v for k, v in d.items() if k != "name"}}
    if name == "polynomial":
        check_number("optimizer.schedule.end_learning_rate", out["end_learning_rate"], 0)
        check_number("optimizer.schedule.power", out["power"], 0, exclusive_min=True)
        if out["decay_steps"] is None:
            out["decay_steps"] = steps
        check_int("optimizer.schedule.decay_steps", out["decay_steps"], 1)
    elif name == "step":
        if out["every"] is None:
            raise _fail("optimizer.schedule.every", "is required for the 'step' schedule "
                        "(multiply the learning rate by 'factor' every 'every' steps)")
        check_int("optimizer.schedule.every", out["every"], 1)
        check_number("optimizer.schedule.factor", out["factor"], 0, exclusive_min=True)
    elif name == "multistep":
        m = out["milestones"]
        if not isinstance(m, (list, tuple)) or not m:
            raise _fail("optimizer.schedule.milestones", "must be a non-empty list of steps "
                        f"for the 'multistep' schedule, got {m!r}")
        for i, v in enumerate(m):
            check_int(f"optimizer.schedule.milestones[{i}]", v, 1)
        if any(b <= a for a, b in itertools.pairwise(m)):
            raise _fail("optimizer.schedule.milestones", f"must increase, got {list(m)!r}")
        out["milestones"] = list(m)
        check_number("optimizer.schedule.factor", out["factor"], 0, exclusive_min=True)
    return out


def _optimizer_section(d, steps: int) -> dict:
    d = check_mapping("optimizer", d)
    name = check_str("optimizer.name", d.get("name", "adam"), registry.OPTIMIZERS.names())
    defaults = copy.deepcopy(dict(registry.OPTIMIZERS.defaults(name)))
    _unknown("optimizer", d, ["name", *defaults])
    out = {"name": name, **defaults, **d}
    check_number("optimizer.learning_rate", out["learning_rate"], 0, exclusive_min=True)
    for b in ("beta_1", "beta_2"):
        check_number(f"optimizer.{b}", out[b], 0, 1)
        if out[b] >= 1:
            raise _fail(f"optimizer.{b}", f"must be < 1, got {out[b]!r}")
    check_number("optimizer.epsilon", out["epsilon"], 0, exclusive_min=True)
    check_number("optimizer.weight_decay", out["weight_decay"], 0)
    check_str("optimizer.weight_decay_mode", out["weight_decay_mode"], WEIGHT_DECAY_MODES)
    if out["clipnorm"] is not None:
        check_number("optimizer.clipnorm", out["clipnorm"], 0, exclusive_min=True)
    out["schedule"] = _schedule_section(out["schedule"], steps)
    return out


def _dataset_section(key: str, d, base: str, seed: int, *, training: bool) -> dict:
    import dataclasses

    from tfdeblur.data import BlurConfig

    d = check_mapping(key, d)
    kind = check_str(f"{key}.type", d.get("type"), registry.DATASETS.names())
    params = _signature_args(registry.DATASETS.get(kind))
    accepted = (set(params) - _TRAINER_DATA_ARGS - {"root"}) | {"type", "root"}
    if kind == "synthetic":
        accepted.add("blur")
    if not training:
        accepted = (accepted | {"limit"}) - {"with_flow", "flow_cache", "flow_preset",
                                             "augment", "shuffle", "flip", "rotate",
                                             "permute_channels", "service"}
    _unknown(key, d, sorted(accepted))
    if "root" not in d:
        raise _fail(f"{key}.root", "is required (the dataset folder)")
    out = dict(d)
    root_kind = "dir" if kind == "synthetic" else "any"
    out["root"] = _path(f"{key}.root", d["root"], base, root_kind)
    if kind == "paired" and not os.path.isdir(out["root"]) and not os.path.isfile(out["root"]):
        raise _fail(f"{key}.root", f"{out['root']} is neither a folder nor a pair list")
    if d.get("kernels") is not None:
        out["kernels"] = _path(f"{key}.kernels", d["kernels"], base, "file")
    if d.get("flow_cache") is not None:
        out["flow_cache"] = _path(f"{key}.flow_cache", d["flow_cache"], base, "new")
    if d.get("service") is not None:
        from tfdeblur.data._pipeline import check_service

        try:
            check_service(d["service"])
        except ValueError as e:
            raise _fail(f"{key}.service", str(e)) from None
    if "blur" in d:
        blur = check_mapping(f"{key}.blur", d["blur"])
        fields = [f.name for f in dataclasses.fields(BlurConfig) if f.name != "kernels"]
        _unknown(f"{key}.blur", blur, fields)
        try:
            BlurConfig(**blur)
        except (TypeError, ValueError) as e:
            raise _fail(f"{key}.blur", str(e)) from None
    out.setdefault("seed", seed)
    check_int(f"{key}.seed", out["seed"], 0)
    if training:
        out.setdefault("augment", True)
        out.setdefault("shuffle", True)
        if out.get("batch_size") is None:
            raise _fail(f"{key}.batch_size", "is required for the training set")
        if out.get("patch_size") is None:
            raise _fail(f"{key}.patch_size", "is required for the training set (images of "
                        "one size are needed to form batches)")
    else:
        out.setdefault("batch_size", 1)
        if out.get("limit") is not None:
            check_int(f"{key}.limit", out["limit"], 1)
    check_int(f"{key}.batch_size", out["batch_size"], 1)
    return out


def _data_section(d, base: str, seed: int) -> dict:
    d = check_mapping("data", d)
    _unknown("data", d, ["train", "validation", "skip_bad_files"])
    if "train" not in d:
        raise _fail("data.train", "is required (the training set)")
    if "skip_bad_files" in d:
        # Shorthand: the default of every data section's skip_bad_files.
        skip = check_bool("data.skip_bad_files", d["skip_bad_files"])
        val = check_mapping("data.validation", d.get("validation", {}))
        d = {"train": {"skip_bad_files": skip, **check_mapping("data.train", d["train"])},
             "validation": {k: {"skip_bad_files": skip,
                                **check_mapping(f"data.validation.{k}", v)}
                            for k, v in val.items()}}
    out = {"train": _dataset_section("data.train", d["train"], base, seed, training=True)}
    val = check_mapping("data.validation", d.get("validation", {}))
    out["validation"] = {}
    for name, v in val.items():
        if not name.isidentifier():
            raise _fail(f"data.validation.{name}", "validation set names must be identifiers "
                        "(letters, digits, _), they become log columns val_<name>_psnr")
        out["validation"][name] = _dataset_section(f"data.validation.{name}", v, base, seed,
                                                   training=False)
    return out


_TRAIN_DEFAULTS = {"steps": None, "steps_per_epoch": 1000, "checkpoint_every": 500,
                   "keep_checkpoints": 3, "monitor": None, "monitor_mode": "max",
                   "validate_at_start": True, "jit_compile": "auto", "verbose": "auto",
                   "distribute": "none", "mixed_precision": "float32", "tensorboard": True,
                   "tensorboard_images": 3}


def _train_section(d) -> dict:
    d = check_mapping("train", d)
    _unknown("train", d, _TRAIN_DEFAULTS)
    out = {**_TRAIN_DEFAULTS, **d}
    if out["steps"] is None:
        raise _fail("train.steps", "is required (the total number of optimizer steps)")
    check_int("train.steps", out["steps"], 1)
    check_int("train.steps_per_epoch", out["steps_per_epoch"], 1)
    check_int("train.checkpoint_every", out["checkpoint_every"], 1)
    check_int("train.keep_checkpoints", out["keep_checkpoints"], 1)
    if out["monitor"] is not None:
        check_str("train.monitor", out["monitor"])
    check_str("train.monitor_mode", out["monitor_mode"], ("max", "min"))
    check_bool("train.validate_at_start", out["validate_at_start"])
    if out["jit_compile"] not in (True, False, "auto"):
        raise _fail("train.jit_compile", f"must be true, false or \"auto\", got "
                    f"{out['jit_compile']!r}")
    if out["verbose"] not in ("auto", 0, 1, 2):
        raise _fail("train.verbose", f"must be \"auto\", 0, 1 or 2, got {out['verbose']!r}")
    check_str("train.distribute", out["distribute"], DISTRIBUTE)
    check_str("train.mixed_precision", out["mixed_precision"], MIXED_PRECISION)
    check_bool("train.tensorboard", out["tensorboard"])
    check_int("train.tensorboard_images", out["tensorboard_images"], 0)
    return out


_TOP_KEYS = ("name", "description", "vars", "seed", "model", "loss", "metrics", "optimizer",
             "data", "train")
_VAR = re.compile(r"\$\{([^}]*)\}")


def _substitute(value, variables: Mapping[str, Any], key: str = ""):
    """``value`` with every ``${name}`` replaced by ``variables[name]``.

    A string that is exactly ``${name}`` takes the variable's value and type.
    """
    if isinstance(value, Mapping):
        return {k: _substitute(v, variables, f"{key}.{k}" if key else str(k))
                for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, variables, f"{key}[{i}]") for i, v in enumerate(value)]
    if not isinstance(value, str) or "${" not in value:
        return value
    for name in _VAR.findall(value):
        if name not in variables:
            raise _fail(key, f"uses ${{{name}}} but 'vars' defines no {name!r} "
                        f"(defined: {sorted(variables)})")
    whole = _VAR.fullmatch(value)
    if whole:
        return variables[whole.group(1)]
    return _VAR.sub(lambda m: str(variables[m.group(1)]), value)


def resolve_config(raw: Mapping[str, Any], base_dir: str | os.PathLike | None = None) -> dict:
    """Checks a configuration and fills in its defaults.

    Args:
        raw: the configuration (parsed JSON).
        base_dir: folder relative paths are resolved against (default: the
            working directory).

    Returns:
        A new dict: every section present, defaults filled in, paths absolute.

    Raises:
        ConfigError: naming the first offending key.
    """
    if not isinstance(raw, Mapping):
        raise ConfigError(f"a configuration must be a JSON object, got {type(raw).__name__}")
    raw = copy.deepcopy(dict(raw))
    base = os.path.abspath(os.fspath(base_dir) if base_dir is not None else os.getcwd())
    _unknown("", raw, _TOP_KEYS)
    variables = check_mapping("vars", raw.get("vars", {}))
    for name, v in variables.items():
        if not name.isidentifier():
            raise _fail(f"vars.{name}", "variable names must be identifiers")
        if not (isinstance(v, str) or _is_number(v) or v is None):
            raise _fail(f"vars.{name}", f"must be a string or a number, got {v!r}")
    # Report a placeholder under the variable that holds it, not where it is used.
    holes = _required_placeholders({"vars": variables}) or _required_placeholders(raw)
    raw = {k: (v if k == "vars" else _substitute(v, variables, k)) for k, v in raw.items()}
    if holes:
        key, text = holes[0]
        more = f" (also: {', '.join(k for k, _ in holes[1:])})" if len(holes) > 1 else ""
        raise _fail(key, f"must be set: {text[len(REQUIRED):].lstrip(': ')}. Give it with "
                    f"--override {key}=VALUE{more}")
    for section in ("model", "loss", "data", "train"):
        if section not in raw:
            raise _fail(section, "section is required")
    cfg: dict[str, Any] = {}
    cfg["name"] = check_str("name", raw.get("name", "run"))
    cfg["description"] = raw.get("description", "")
    if not isinstance(cfg["description"], str):
        raise _fail("description", f"must be a string, got {cfg['description']!r}")
    cfg["vars"] = variables
    cfg["seed"] = check_int("seed", raw.get("seed", 0), 0)
    cfg["train"] = _train_section(raw["train"])
    cfg["model"] = _model_section(raw["model"], base)
    cfg["loss"] = _loss_section(raw["loss"], base)
    metrics = raw.get("metrics", ["psnr"])
    if not isinstance(metrics, list):
        raise _fail("metrics", f"must be a list of names from {registry.METRICS.names()}, "
                    f"got {metrics!r}")
    for i, m in enumerate(metrics):
        check_str(f"metrics[{i}]", m, registry.METRICS.names())
    cfg["metrics"] = list(metrics)
    cfg["optimizer"] = _optimizer_section(raw.get("optimizer", {}), cfg["train"]["steps"])
    cfg["data"] = _data_section(raw["data"], base, cfg["seed"])
    if position_weight(cfg) and not cfg["data"]["train"].get("with_flow", False):
        raise _fail("data.train.with_flow", "must be true: the loss has a position term "
                    f"(loss.position_weight = {position_weight(cfg)}), which needs optical flow; "
                    "or set loss.position_weight=0")
    monitor = cfg["train"]["monitor"]
    if monitor is not None:
        known = [f"val_{n}_{m}" for n in cfg["data"]["validation"]
                 for m in registry.METRICS.names()]
        if monitor not in known:
            raise _fail("train.monitor", f"must be one of the validation log keys {known}, "
                        f"got {monitor!r}")
    return cfg


def position_weight(cfg: Mapping) -> float:
    """SVDN's position-loss weight of a resolved config (0 for other losses)."""
    loss = cfg["loss"]
    if loss["name"] != "svdn":
        return 0.0
    return float(loss.get("position_weight", 1e-4))


# --------------------------------------------------------------------------- files, overrides


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"a.b.c=value"`` -> (["a", "b", "c"], value); the value is JSON, else a string."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must be key=value (e.g. train.steps=100)")
    key, value = text.split("=", 1)
    parts = key.strip().split(".")
    if not all(parts):
        raise ConfigError(f"override {text!r}: bad key {key!r}")
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError:
        parsed = value
    return parts, parsed


def apply_overrides(raw: Mapping, overrides: Sequence[str]) -> dict:
    """A copy of ``raw`` with each ``key=value`` override set (sections created as needed)."""
    out = copy.deepcopy(dict(raw))
    for text in overrides:
        parts, value = parse_override(text)
        node = out
        for i, p in enumerate(parts[:-1]):
            nxt = node.setdefault(p, {})
            if not isinstance(nxt, dict):
                raise ConfigError(f"override {text!r}: {'.'.join(parts[:i + 1])!r} is not a "
                                  "section")
            node = nxt
        node[parts[-1]] = value
    return out


def read_config_file(path: str | os.PathLike) -> dict:
    """Parses a JSON configuration file (errors name the file and the line)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ConfigError(f"config file {path} does not exist")
    try:
        with open(path, encoding="utf-8") as f:
            raw = json.load(f)
    except json.JSONDecodeError as e:
        raise ConfigError(f"config file {path}:{e.lineno}:{e.colno}: invalid JSON: {e.msg}") \
            from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"config file {path} cannot be read: {e}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {path} must hold a JSON object")
    return raw


def load_config(path: str | os.PathLike, overrides: Sequence[str] = (), *,
                steps: int | None = None, base_dir: str | os.PathLike | None = None) -> dict:
    """Reads, overrides and resolves a configuration file (see :func:`resolve_config`).

    Args:
        path: a JSON file.
        overrides: ``"dotted.key=value"`` strings (values parsed as JSON).
        steps: shorthand for ``train.steps=steps``.
        base_dir: folder relative paths are resolved against (default: cwd).
    """
    raw = apply_overrides(read_config_file(path), overrides)
    if steps is not None:
        raw.setdefault("train", {})["steps"] = steps
    return resolve_config(raw, base_dir)


def flatten(cfg: Mapping, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (lists are leaves)."""
    out: dict[str, Any] = {}
    for k, v in cfg.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, Mapping) and v:
            out.update(flatten(v, key))
        else:
            out[key] = v
    return out


def differences(old: Mapping, new: Mapping) -> list[tuple[str, Any, Any]]:
    """(key, old value, new value) of every differing leaf of two resolved configs.

    A ``train`` key missing from ``old`` (a run started before the key
    existed) and at its default in ``new`` is no difference: the default is
    what the older run did.
    """
    a, b = flatten(old), flatten(new)
    missing = object()
    out = []
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key, missing), b.get(key, missing)
        section, _, leaf = key.partition(".")
        if va is missing and section == "train" and leaf in _TRAIN_DEFAULTS \
                and _TRAIN_DEFAULTS[leaf] is not None and vb == _TRAIN_DEFAULTS[leaf]:
            continue
        if va != vb:
            out.append((key, None if va is missing else va, None if vb is missing else vb))
    return out
