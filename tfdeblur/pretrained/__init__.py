"""Bundled trained models: ``available()``, ``card(name)``, ``path(name)``, ``best()``.

A bundled model ``NAME`` is a pair of files in one folder:

- ``NAME.keras``: the inference model, saved with ``model.save`` (uncompiled,
  one image output), loadable by :func:`tfdeblur.inference.load_model`;
- ``NAME.json``: its model card, checked by :func:`validate_card` (the keys
  are listed in ``tfdeblur/pretrained/README.md``).

The folder searched is, in this order: the ``directory`` argument of each
function, the environment variable ``TFDEBLUR_PRETRAINED_DIR``, this package's
own folder. ``best()`` is the card marked ``"default": true`` (at most one may
be), else the highest ``validation.gopro_patches.psnr`` (real GoPro blur,
never trained on). This module uses the standard library only: listing the
models does not import TensorFlow.

Example:
    >>> from tfdeblur import pretrained
    >>> pretrained.available()                       # ['lmfn_bundled']
    >>> pretrained.card(pretrained.best())["validation"]["gopro_patches"]
    {'psnr': 24.1, 'ssim': 0.78, 'blurry_psnr': 22.36, ...}
"""

from __future__ import annotations

import json
import math
import os

__all__ = [
    "ENV_VAR",
    "PretrainedError",
    "available",
    "best",
    "card",
    "demo_image_path",
        "path",
    "search_dir",
    "validate_card",
]

ENV_VAR = "TFDEBLUR_PRETRAINED_DIR"
PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
# The real blurry photo `tfdeblur demo` deblurs (GoPro test set, CC BY 4.0; see README.md here).
DEMO_IMAGE = "gopro_blurry_720p.png"

_NUMBER = (int, float)
# Required card keys: dotted path -> accepted types (bool is rejected wherever a number is due).
_REQUIRED: dict[str, tuple[type, ...]] = {
    "name": (str,),
    "architecture": (str,),
    "builder_config": (dict,),
    "parameters": (int,),
    "training": (dict,),
    "training.config": (str,),
    "training.steps": (int,),
    "training.cpu_hours": _NUMBER,
    "training.data": (str,),
    "training.synthesis": (dict,),
    "validation": (dict,),
    "validation.gopro_patches": (dict,),
    "validation.gopro_patches.psnr": _NUMBER,
    "validation.gopro_patches.ssim": _NUMBER,
    "validation.gopro_patches.blurry_psnr": _NUMBER,
    "validation.kodak24_synthetic": (dict,),
    "validation.kodak24_synthetic.psnr": _NUMBER,
    "validation.kodak24_synthetic.ssim": _NUMBER,
    "validation.kodak24_synthetic.blurry_psnr": _NUMBER,
    "licence": (dict,),
    "licence.weights": (str,),
    "licence.data": (list,),
}
_OPTIONAL: dict[str, tuple[type, ...]] = {
    "default": (bool,),
    "description": (str,),
}


class PretrainedError(ValueError):
    """A bundled model that is missing, unknown, incomplete or has an invalid card."""


def search_dir(directory: str | os.PathLike | None = None) -> str:
    """The folder searched for bundled models.

    ``directory`` when given, else ``$TFDEBLUR_PRETRAINED_DIR`` when set, else
    the package folder.
    """
    if directory is not None:
        return os.fspath(directory)
    return os.environ.get(ENV_VAR) or PACKAGE_DIR


def demo_image_path() -> str:
    """The bundled real blurry photo (1280x720, GoPro test set, CC BY 4.0)."""
    return os.path.join(PACKAGE_DIR, DEMO_IMAGE)


_MISSING = object()
_TYPE_NAMES = {_NUMBER: "a number", (int,): "an integer", (str,): "a string",
               (dict,): "a JSON object", (list,): "a list", (bool,): "true or false"}


def _lookup(value: dict, dotted: str):
    for key in dotted.split("."):
        if not isinstance(value, dict) or key not in value:
            return _MISSING
        value = value[key]
    return value


def validate_card(value, source: str = "<card>", name: str | None = None) -> dict:
    """Checks a model card; returns it.

    Args:
        value: the card, as read from ``NAME.json``.
        source: the file named in error messages.
        name: the bundled name; the card's ``"name"`` must equal it.

    Raises:
        PretrainedError: naming ``source`` and the first wrong key (missing, of the wrong
            type, a non-finite or negative number, an empty licence list).
    """
    if not isinstance(value, dict):
        raise PretrainedError(f"model card {source}: must be a JSON object, "
                              f"got {type(value).__name__}")
    for key, types in {**_REQUIRED, **_OPTIONAL}.items():
        item = _lookup(value, key)
        if item is _MISSING:
            if key in _REQUIRED:
                raise PretrainedError(f"model card {source}: missing key {key!r}")
            continue
        # JSON true/false are Python bools, which are also ints: only a boolean key takes them.
        if not isinstance(item, types) or (isinstance(item, bool) and types != (bool,)):
            raise PretrainedError(f"model card {source}: {key!r} must be {_TYPE_NAMES[types]}, "
                                  f"got {item!r}")
        if types in (_NUMBER, (int,)) and not (math.isfinite(item) and item >= 0):
            raise PretrainedError(f"model card {source}: {key!r} must be a finite number "
                                  f">= 0, got {item!r}")
    for key in ("name", "architecture", "training.config", "training.data", "licence.weights"):
        if not _lookup(value, key).strip():
            raise PretrainedError(f"model card {source}: {key!r} must not be empty")
    data = value["licence"]["data"]
    if not data or not all(isinstance(d, str) and d.strip() for d in data):
        raise PretrainedError(f"model card {source}: 'licence.data' must list the licence of "
                              f"every data set used (non-empty strings), got {data!r}")
    if name is not None and value["name"] != name:
        raise PretrainedError(f"model card {source}: 'name' must be {name!r} (the file's name), "
                              f"got {value['name']!r}")
    return value


def _scan(folder: str) -> list[str]:
    if not os.path.isdir(folder):
        if folder == PACKAGE_DIR:
            return []
        raise PretrainedError(f"pretrained model folder {folder} does not exist "
                              f"(from the directory argument or ${ENV_VAR})")
    # Hidden files are skipped: temporary files of an atomic write, editor backups.
    files = {f for f in os.listdir(folder) if not f.startswith(".")}
    stems = {f[:-len(ext)] for f in files for ext in (".keras", ".json") if f.endswith(ext)}
    names = []
    for stem in sorted(stems):
        for ext, other in ((".keras", ".json"), (".json", ".keras")):
            if stem + ext in files and stem + other not in files:
                raise PretrainedError(f"bundled model {os.path.join(folder, stem + ext)} has no "
                                      f"{other} file beside it (a bundled model is the pair "
                                      f"{stem}.keras + {stem}.json)")
        names.append(stem)
    return names


def available(directory: str | os.PathLike | None = None) -> list[str]:
    """Names of the bundled models, sorted; every card is checked.

    Raises:
        PretrainedError: naming the file when a model lacks its card (or a card its model),
            or a card is invalid.
    """
    folder = search_dir(directory)
    names = _scan(folder)
    for n in names:
        card(n, folder)
    return names


def _unknown(name: str, folder: str) -> PretrainedError:
    names = _scan(folder)
    listed = ", ".join(names) if names else "none (no trained model is bundled yet)"
    return PretrainedError(f"no bundled model named {name!r} in {folder}; bundled: {listed}")


def card(name: str, directory: str | os.PathLike | None = None) -> dict:
    """The model card of bundled model ``name`` (a dict, checked by :func:`validate_card`).

    Raises:
        PretrainedError: an unknown ``name`` (the message lists the bundled names), or an
            unreadable / invalid card (naming the file).
    """
    folder = search_dir(directory)
    source = os.path.join(folder, f"{name}.json")
    if os.sep in name or not os.path.isfile(source) or not os.path.isfile(
            os.path.join(folder, f"{name}.keras")):
        raise _unknown(name, folder)
    try:
        with open(source, encoding="utf-8") as f:
            value = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise PretrainedError(f"model card {source} cannot be read as JSON: {e}") from None
    return validate_card(value, source, name)


def path(name: str, directory: str | os.PathLike | None = None) -> str:
    """The ``.keras`` file of bundled model ``name`` (its card is checked first).

    Raises:
        PretrainedError: as :func:`card`.
    """
    folder = search_dir(directory)
    card(name, folder)
    return os.path.join(folder, f"{name}.keras")


def best(directory: str | os.PathLike | None = None) -> str:
    """The recommended bundled model: the one marked ``"default": true``, else the highest
    ``validation.gopro_patches.psnr`` (ties: the first name).

    Raises:
        PretrainedError: when no model is bundled, or more than one card is the default.
    """
    folder = search_dir(directory)
    names = available(folder)
    if not names:
        raise PretrainedError(
            f"no trained model is bundled yet (looked in {folder}); give a trained model file "
            f"instead (tfdeblur.load('model.keras'), --model model.keras), or set ${ENV_VAR} "
            f"to a folder of NAME.keras + NAME.json pairs")
    cards = {n: card(n, folder) for n in names}
    defaults = [n for n, c in cards.items() if c.get("default")]
    if len(defaults) > 1:
        raise PretrainedError(f"more than one bundled model in {folder} is marked "
                              f"\"default\": true: {', '.join(defaults)}")
    if defaults:
        return defaults[0]
    return max(names, key=lambda n: cards[n]["validation"]["gopro_patches"]["psnr"])
