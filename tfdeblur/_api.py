"""The top-level API, ``tfdeblur.load`` and ``tfdeblur.deblur``, on bundled or given models.

``import tfdeblur`` stays light: TensorFlow, Keras and OpenCV are imported
inside the functions, the first time one is called.
"""

from __future__ import annotations

import functools
import os
from typing import TYPE_CHECKING

from tfdeblur import pretrained

if TYPE_CHECKING:
    import keras
    import numpy as np


def _is_path_like(text: str) -> bool:
    return text.endswith(".keras") or os.sep in text or "/" in text or os.path.isfile(text)


def model_file(name_or_path: str | os.PathLike, directory: str | os.PathLike | None = None
               ) -> tuple[str, str | None]:
    """The ``.keras`` file a model argument means, and its bundled name (None for a file).

    A value ending in ``.keras``, holding a path separator or naming an existing
    file is a file; anything else is a bundled name.

    Raises:
        FileNotFoundError: a file that does not exist (the bundled names are listed).
        tfdeblur.pretrained.PretrainedError: an unknown bundled name (the bundled names are
            listed) or an invalid card.
    """
    text = os.fspath(name_or_path)
    if _is_path_like(text):
        if not os.path.isfile(text):
            try:
                names = ", ".join(pretrained.available(directory)) or "none yet"
            except pretrained.PretrainedError as e:
                names = f"unknown ({e})"
            raise FileNotFoundError(f"model file {text} does not exist (and it is not a bundled "
                                    f"model name; bundled models: {names})")
        return text, None
    return pretrained.path(text, directory), text


def _check_against_card(model: keras.Model, name: str, directory) -> None:
    expected = pretrained.card(name, directory)["parameters"]
    if model.count_params() != expected:
        raise pretrained.PretrainedError(
            f"bundled model {pretrained.path(name, directory)} has {model.count_params():,} "
            f"parameters but its card {name}.json says {expected:,}: the two files do not belong "
            f"together")


def load(name_or_path: str | os.PathLike, *, directory: str | os.PathLike | None = None
         ) -> keras.Model:
    """Loads a bundled model by name, or a ``.keras`` model file.

    Each call returns a new model (yours to change or fine-tune);
    :func:`deblur` keeps its own cache.

    Args:
        name_or_path: a name of :func:`tfdeblur.pretrained.available`, or a ``.keras`` path.
        directory: the bundled-model folder (default: ``$TFDEBLUR_PRETRAINED_DIR``, else the
            package's).

    Returns:
        The uncompiled ``keras.Model``.

    Raises:
        FileNotFoundError, tfdeblur.pretrained.PretrainedError: see :func:`model_file`.
        ValueError: a file that is not a loadable Keras model.

    Example:
        >>> model = tfdeblur.load(tfdeblur.pretrained.best())
        >>> model = tfdeblur.load("runs/lmfn/best.keras")
    """
    from tfdeblur.inference import load_model

    path, name = model_file(name_or_path, directory)
    model = load_model(path)
    if name is not None:
        _check_against_card(model, name, directory)
    return model


@functools.lru_cache(maxsize=4)
def _load_cached(path: str, stamp: tuple) -> keras.Model:
    # ``stamp`` (mtime, size) is part of the key: a file replaced on disk is loaded again.
    from tfdeblur.inference import load_model

    return load_model(path)


def resolve_model(model: str | os.PathLike | keras.Model | None = None, *,
                  directory: str | os.PathLike | None = None) -> tuple[keras.Model, str]:
    """The model :func:`deblur` uses for ``model``, and a line saying which it is.

    ``None`` is the best bundled model (:func:`tfdeblur.pretrained.best`), a
    string a bundled name or a file, a ``keras.Model`` itself. Models loaded
    from files are cached (the four most recent, reloaded when the file changes).
    """
    if model is not None and not isinstance(model, (str, os.PathLike)):
        return model, f"the given keras.Model {getattr(model, 'name', '')!r}"
    if model is None:
        model = pretrained.best(directory)
    path, name = model_file(model, directory)
    path = os.path.abspath(path)
    st = os.stat(path)
    loaded = _load_cached(path, (st.st_mtime_ns, st.st_size))
    if name is None:
        return loaded, f"model file {path}"
    _check_against_card(loaded, name, directory)
    c = pretrained.card(name, directory)
    return loaded, (f"bundled model {name} ({c['architecture']}, {c['parameters']:,} parameters, "
                    f"{path})")


def deblur(image_or_path, model: str | os.PathLike | keras.Model | None = None, *,
           tile: int | None = None, overlap: int | None = None, batch_size: int = 4,
           self_ensemble: bool = False, directory: str | os.PathLike | None = None) -> np.ndarray:
    """Deblurs one photo.

    Args:
        image_or_path: an image array (uint8, uint16, or float in [0, 1]): RGB
            ``[H, W, 3]``, RGBA ``[H, W, 4]``, grey ``[H, W]`` or ``[H, W, 1]``; or an
            image file (read as RGB, see :func:`tfdeblur.data.read_image`).
        model: None (the best bundled model), a bundled name, a ``.keras`` path, or a
            ``keras.Model``. Models loaded by name or path are cached between calls.
        tile, overlap, batch_size: tiled processing for large images, as
            :func:`tfdeblur.inference.deblur_image` (``overlap=None``: the model's
            default; LMFN and SVRNN are not local and need large tiles).
        self_ensemble: the mean over the image's 8 orientations (8x the time; see
            :func:`tfdeblur.inference.deblur_image`).
        directory: the bundled-model folder (default: ``$TFDEBLUR_PRETRAINED_DIR``, else the
            package's).

    Returns:
        float32 in [0, 1], laid out as the array given: ``[H, W, 3]`` for RGB (and for a
        file); ``[H, W, 4]`` for RGBA, the colour deblurred and the alpha channel returned
        unchanged (scaled to [0, 1] like the colour); ``[H, W]`` or ``[H, W, 1]`` for grey,
        deblurred as RGB with the grey repeated and returned as the mean of the three
        channels (a model with one input channel gets the grey image itself).

    Raises:
        tfdeblur.pretrained.PretrainedError: ``model=None`` and no model is bundled, or an
            unknown name.
        FileNotFoundError, ValueError: a missing file, a bad image or model file.

    Example:
        >>> sharp = tfdeblur.deblur("photo.png")            # best bundled model
        >>> sharp = tfdeblur.deblur(img_uint8, model="runs/lmfn/best.keras", tile=512)
    """
    from tfdeblur.data.io import read_image
    from tfdeblur.inference import deblur_image

    net, _ = resolve_model(model, directory=directory)
    if isinstance(image_or_path, (str, bytes, os.PathLike)):
        image_or_path = read_image(image_or_path)
    return deblur_image(net, image_or_path, tile=tile, overlap=overlap, batch_size=batch_size,
                        self_ensemble=self_ensemble)
