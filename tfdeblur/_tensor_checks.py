"""Argument checks shared by the losses and the metrics: errors name the argument.

Static problems (known rank, shape or dtype) raise ``ValueError`` when the
tensors are built; what is only known at run time (shapes inside a
``tf.function`` with unknown sizes, NaN/Inf values) raises
``tf.errors.InvalidArgumentError`` with the same wording.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf


def dtype_name(value) -> str:
    """The dtype of a tensor, array, or of what ``np.asarray`` makes of a Python value."""
    dtype = getattr(value, "dtype", None)
    if dtype is None:
        try:
            dtype = np.asarray(value).dtype
        except (TypeError, ValueError):
            return type(value).__name__
    return tf.as_dtype(dtype).name if not isinstance(dtype, str) else dtype


def is_float(value) -> bool:
    """True for floating-point tensors/arrays and for Python floats/lists of floats."""
    dtype = getattr(value, "dtype", None)
    if dtype is None:
        try:
            dtype = np.asarray(value).dtype
        except (TypeError, ValueError):
            return False
    try:
        return tf.as_dtype(dtype).is_floating
    except TypeError:
        return False


def check_rank(t: tf.Tensor, rank: int, name: str, layout: str, owner: str) -> None:
    """ValueError naming ``name`` when ``t``'s static rank is not ``rank``."""
    if t.shape.rank is not None and t.shape.rank != rank:
        raise ValueError(f"{owner}: {name} must be a rank-{rank} {layout} tensor, "
                         f"got shape {t.shape}")


def check_last_dim(t: tf.Tensor, size: int, name: str, layout: str, owner: str) -> None:
    """ValueError naming ``name`` when ``t``'s static last dimension is not ``size``."""
    if t.shape.rank and t.shape[-1] is not None and t.shape[-1] != size:
        raise ValueError(f"{owner}: {name} must be {layout} with {size} values in its last "
                         f"axis, got shape {t.shape}")


def same_shape(a: tf.Tensor, b: tf.Tensor, name_a: str, name_b: str, owner: str) -> list:
    """ValueError when static shapes differ; else the run-time assertions still needed."""
    if not a.shape.is_compatible_with(b.shape):
        raise ValueError(f"{owner}: {name_a} and {name_b} must have the same shape, got "
                         f"{a.shape} and {b.shape}")
    if a.shape.is_fully_defined() and b.shape.is_fully_defined():
        return []
    return [tf.debugging.assert_equal(
        tf.shape(a), tf.shape(b),
        message=f"{owner}: {name_a} and {name_b} must have the same shape")]


def assert_finite(t: tf.Tensor, name: str, owner: str) -> tf.Tensor:
    """``t``, with an InvalidArgumentError naming ``name`` if it holds NaN or Inf."""
    return tf.debugging.assert_all_finite(t, f"{owner}: {name} has NaN or Inf values")
