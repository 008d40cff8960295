"""Pieces shared by the paired and synthetic tf.data pipelines."""

from __future__ import annotations

import secrets

import numpy as np
import tensorflow as tf

from tfdeblur.data.augment import _size


def resolve_seed(seed: int | None) -> int:
    """The given seed, or a fresh random one when ``None``."""
    if seed is None:
        return secrets.randbits(31)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"seed must be an int or None, got {seed!r}")
    return int(seed)


def seed_stream(seed: int, rerandomize: bool) -> tf.data.Dataset:
    """An endless dataset of ``[2]`` int64 stateless seeds drawn from ``seed``.

    With ``rerandomize`` every new iteration (epoch) draws a different but
    reproducible sequence; without, every iteration repeats the first one.
    """
    return tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=rerandomize).batch(2)


def check_patch_size(patch_size) -> tuple[int, int] | None:
    return None if patch_size is None else _size(patch_size)


def check_batch_size(batch_size) -> None:
    if batch_size is None:
        return
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) \
            or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int or None, got {batch_size!r}")


def check_skip(skip) -> int:
    if isinstance(skip, bool) or not isinstance(skip, (int, np.integer)) or skip < 0:
        raise ValueError(f"skip must be an int >= 0, got {skip!r}")
    return int(skip)


def check_shuffle(shuffle) -> int | None:
    """``False`` -> None, ``True`` -> 0 (whole dataset), an int -> that buffer size."""
    if shuffle is False or shuffle is None:
        return None
    if shuffle is True:
        return 0
    if isinstance(shuffle, (int, np.integer)) and shuffle >= 1:
        return int(shuffle)
    raise ValueError(f"shuffle must be a bool or a positive buffer size, got {shuffle!r}")


def center_crop(parts: list[tf.Tensor], patch_size: tuple[int, int]) -> list[tf.Tensor]:
    """The same central ``patch_size`` window of each ``[H, W, C]`` tensor."""
    ph, pw = patch_size
    shape = tf.shape(parts[0])
    top, left = (shape[0] - ph) // 2, (shape[1] - pw) // 2
    return [tf.ensure_shape(p[top:top + ph, left:left + pw], [ph, pw, p.shape[-1]])
            for p in parts]


def finish(ds: tf.data.Dataset, *, batch_size: int | None, drop_remainder: bool) -> tf.data.Dataset:
    """Batches, prefetches and pins the element order (results do not depend on timing)."""
    if batch_size is not None:
        ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    options = tf.data.Options()
    options.deterministic = True
    return ds.with_options(options).prefetch(tf.data.AUTOTUNE)


def numpy_errors_as_value_errors(fn):
    """Wraps a ``tf.numpy_function`` body so that OSErrors surface as InvalidArgumentError.

    ``tf.numpy_function`` maps ValueError to InvalidArgumentError but other
    exceptions to UnknownError; the messages (which name the file) are kept.
    """
    def wrapped(*args):
        try:
            return fn(*args)
        except OSError as e:
            raise ValueError(str(e)) from None

    return wrapped
