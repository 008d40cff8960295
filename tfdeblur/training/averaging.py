"""Weight averaging over a run's checkpoints (stochastic weight averaging).

The mean of the model weights of checkpoints taken along a plateau of the
learning rate is usually a better model than any one of them (Izmailov et
al., "Averaging Weights Leads to Wider Optima and Better Generalization",
UAI 2018). A run keeps only its newest checkpoints, so the mean is kept as a
running sum in one file, ``RUN/average.npz``: checkpoints are folded into it
as they appear (``training/long_run.py --average-from STEP``) and the file
travels with the run, so averaging resumes with the training.

The networks have no batch normalisation, so the averaged weights need no
statistics recomputed.

    >>> folded = fold_checkpoints("runs/lmfn/average.npz", ["runs/lmfn/checkpoints"],
    ...                           from_step=27000, every=250)
    >>> model = averaged_model(keras.models.load_model("runs/lmfn/best.keras"),
    ...                        "runs/lmfn/average.npz")
"""

from __future__ import annotations

import io
import json
import os
import re
import zipfile
from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf

from tfdeblur import _validation as checks
from tfdeblur.training.checkpoint import (
    CheckpointError,
    list_checkpoints,
    read_checkpoint,
    read_file,
    write_file_atomically,
)

FORMAT_VERSION = 1
_META = "__meta__"


def read_average(path: str | os.PathLike) -> tuple[dict, list[np.ndarray]] | None:
    """(meta, float64 sums of the model variables) of an average file; None when absent.

    ``meta``: ``from_step``, ``every``, ``steps`` (the checkpoints folded in)
    and ``variables`` (path and shape of each, in the model's order).

    Raises:
        CheckpointError: the file is damaged or of another format.
    """
    path = os.fspath(path)
    if not tf.io.gfile.exists(path):
        return None
    try:
        with np.load(io.BytesIO(read_file(path)), allow_pickle=False) as data:
            meta = json.loads(bytes(data[_META]).decode("utf-8"))
            if meta.get("format") != FORMAT_VERSION:
                raise CheckpointError(f"average file {path} has format {meta.get('format')!r}, "
                                      f"this version reads {FORMAT_VERSION}")
            sums = [data[f"sum/{i:06d}"] for i in range(len(meta["variables"]))]
    except CheckpointError:
        raise
    except (OSError, ValueError, KeyError, EOFError, json.JSONDecodeError,
            zipfile.BadZipFile) as e:
        raise CheckpointError(f"average file {path} is damaged: {type(e).__name__}: {e}") from None
    return meta, sums


def _write_average(path: str, meta: dict, sums: list[np.ndarray]) -> None:
    arrays = {f"sum/{i:06d}": s for i, s in enumerate(sums)}
    arrays[_META] = np.frombuffer(json.dumps(meta).encode("utf-8"), np.uint8)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    write_file_atomically(path, buf.getvalue())


def fold_checkpoints(path: str | os.PathLike, sources: Sequence[str | os.PathLike], *,
                     from_step: int | None = None, every: int | None = None) -> list[int]:
    """Adds the checkpoints in ``sources`` (folders or files) to the average in ``path``.

    A checkpoint is folded in when its step is ``>= from_step``, a multiple of
    ``every`` and not folded in yet. ``from_step`` and ``every`` are stored in
    the file on the first call; later calls may omit them and must not
    change them. The file is rewritten (atomically) only when something was
    added.

    Returns:
        The steps added by this call, ascending.

    Raises:
        ValueError: ``from_step``/``every`` missing for a new file, or
            different from the file's.
        CheckpointError: a damaged file, or a checkpoint of another model.
    """
    path = os.fspath(path)
    existing = read_average(path)
    if existing is None:
        if from_step is None:
            raise ValueError(f"from_step is needed to start the average file {path}")
        from_step = checks.check_int(from_step, "from_step", minimum=0)
        every = checks.check_int(every if every is not None else 1, "every", minimum=1)
        meta: dict = {"format": FORMAT_VERSION, "from_step": from_step, "every": every,
                      "steps": [], "variables": None}
        sums: list[np.ndarray] | None = None
    else:
        meta, sums = existing
        for name, value in (("from_step", from_step), ("every", every)):
            if value is not None and value != meta[name]:
                raise ValueError(f"{name}={value} differs from the average file's "
                                 f"{meta[name]} ({path}): start a new file to change it")
    candidates: dict[int, str] = {}
    for source in sources:
        source = os.fspath(source)
        if tf.io.gfile.isdir(source):
            candidates.update(dict(list_checkpoints(source)))
        else:
            m = re.fullmatch(r"ckpt-(\d+)\.npz", os.path.basename(source))
            if m is None:
                raise ValueError(f"sources: {source} is neither a folder nor a checkpoint file "
                                 "(ckpt-STEP.npz)")
            candidates[int(m.group(1))] = source
    done = set(meta["steps"])
    added = []
    for step in sorted(candidates):
        if step < meta["from_step"] or step % meta["every"] or step in done:
            continue
        ckpt_meta, groups = read_checkpoint(candidates[step])
        described = [{"path": d["path"], "shape": d["shape"]}
                     for d in ckpt_meta["variables"]["model"]]
        if meta["variables"] is None:
            meta["variables"] = described
        elif described != meta["variables"]:
            raise CheckpointError(f"checkpoint {candidates[step]} holds other model variables "
                                  f"than the average file {path}")
        values = [np.asarray(a, np.float64) for a in groups["model"]]
        sums = values if sums is None else [s + v for s, v in zip(sums, values, strict=True)]
        added.append(step)
    if added:
        meta["steps"] = sorted(done | set(added))
        _write_average(path, meta, sums)
    return added


def averaged_model(model: keras.Model, path: str | os.PathLike) -> keras.Model:
    """Assigns the mean weights of the average file ``path`` to ``model`` (returned).

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: an empty average, or one of another model.
    """
    path = os.fspath(path)
    existing = read_average(path)
    if existing is None:
        raise FileNotFoundError(f"no average file {path}")
    meta, sums = existing
    count = len(meta["steps"])
    if count == 0:
        raise CheckpointError(f"the average file {path} holds no checkpoint yet")
    variables = list(model.variables)
    described = [{"path": v.path, "shape": list(v.shape)} for v in variables]
    if described != meta["variables"]:
        raise CheckpointError(f"the average file {path} was made for another model "
                              f"({len(meta['variables'])} variables, this one has "
                              f"{len(variables)})")
    for v, s in zip(variables, sums, strict=True):
        v.assign((s / count).astype(v.dtype))
    return model
