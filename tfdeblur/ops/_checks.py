"""Argument checks shared by the op wrappers: errors name the argument."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

FLOAT_DTYPES = (tf.float16, tf.bfloat16, tf.float32, tf.float64)


def as_float_tensor(value, name: str, dtype: tf.DType | None = None) -> tf.Tensor:
    """Converts ``value`` to a tensor and checks it is floating point.

    Raises:
        ValueError: naming ``name`` when the dtype is not a float type or
            differs from ``dtype``.
    """
    try:
        if isinstance(value, (tf.Tensor, tf.Variable, np.ndarray, np.generic)):
            t = tf.convert_to_tensor(value)  # keep its dtype: a hint would cast float64 down
        else:
            t = tf.convert_to_tensor(value, dtype_hint=dtype or tf.float32)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name} must be a float tensor: {e}") from None
    if t.dtype not in FLOAT_DTYPES:
        raise ValueError(
            f"{name} must be float16, bfloat16, float32 or float64, got {t.dtype.name}")
    if dtype is not None:
        dtype = tf.as_dtype(dtype)
    if dtype is not None and t.dtype != dtype:
        raise ValueError(f"{name} must have the same dtype as x ({dtype.name}), got {t.dtype.name}")
    return t


def check_rank(t: tf.Tensor, rank: int, name: str, layout: str = "[N, H, W, C]") -> None:
    """Raises ValueError naming ``name`` if ``t``'s static rank is not ``rank``."""
    if t.shape.rank is not None and t.shape.rank != rank:
        raise ValueError(f"{name} must be a rank-{rank} {layout} tensor, got shape {t.shape}")


def check_dim(t: tf.Tensor, axis: int, expected: int | None, name: str, what: str) -> None:
    """Raises ValueError when a statically known dimension differs from ``expected``."""
    got = t.shape[axis] if t.shape.rank is not None else None
    if got is not None and expected is not None and got != expected:
        raise ValueError(f"{name} must have {what} {expected}, got {got} (shape {t.shape})")
