"""Argument and tensor checks for the whole package: one bad value, one error.

Every layer, model builder, op wrapper, loss and metric validates through
these functions (as Keras's layers go through ``keras.src.utils.argument_validation``),
so the same bad value gets the same error wherever it is passed: a
``ValueError`` naming the argument (prefixed by its owner, ``"DownBlock: "``,
when there is one), what it must be and the value given (its ``repr``)::

    DownBlock: filters must be an integer >= 1, got 3.7
    WeightGenerationNetwork: width must be an integer >= 1, got 3.7

Integers are Python or NumPy integers (``numbers.Integral``); ``bool`` is not
one, and a float, even ``8.0``, is never truncated. Static problems of tensors
(known rank, shape or dtype) raise ``ValueError`` when the graph is built;
what is only known at run time (sizes inside a TensorFlow graph with unknown
shapes, NaN/Inf values) raises ``tf.errors.InvalidArgumentError`` with the
same wording.

The argument checks are pure Python and the tensor checks import TensorFlow
only when called, so layers that run on any Keras backend (LMFN's) use this
module too.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable, Sequence

import numpy as np

IMPLEMENTATIONS = ("auto", "compiled", "portable")
FLOAT_DTYPES = ("float16", "bfloat16", "float32", "float64")


def _prefix(owner: str | None) -> str:
    return f"{owner}: " if owner else ""


def is_int(value) -> bool:
    """True for Python and NumPy integers; False for bools and everything else."""
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


# ---------------------------------------------------------------------------
# Constructor arguments


def check_int(value, name: str, *, minimum: int | None = 1, owner: str | None = None,
              allow_none: bool = False) -> int | None:
    """``value`` as a Python int ``>= minimum`` (or None when ``allow_none``).

    ``minimum=None`` accepts any integer (a seed).

    Raises:
        ValueError: ``"{owner}: {name} must be an integer >= {minimum}, got {value!r}"``
            (``"... >= {minimum} or None, ..."`` when None is allowed, ``"an integer"``
            without a minimum).
    """
    if value is None and allow_none:
        return None
    if not is_int(value) or (minimum is not None and value < minimum):
        none = " or None" if allow_none else ""
        bound = "" if minimum is None else f" >= {minimum}"
        raise ValueError(f"{_prefix(owner)}{name} must be an integer{bound}{none}, "
                         f"got {value!r}")
    return int(value)


def check_bool_or_int(value, name: str, *, minimum: int = 1,
                      owner: str | None = None) -> bool | int:
    """``value`` if it is True or False, else as a Python int ``>= minimum``.

    For switches that also take a size (``shuffle=True`` or a buffer size).

    Raises:
        ValueError: ``"{owner}: {name} must be True, False or an integer >= {minimum},
            got {value!r}"``.
    """
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if not is_int(value) or value < minimum:
        raise ValueError(f"{_prefix(owner)}{name} must be True, False or an integer >= "
                         f"{minimum}, got {value!r}")
    return int(value)


def check_size(value, name: str = "input_size", *, minimum: int = 1,
               owner: str | None = None) -> tuple[int, int]:
    """An image size ``(H, W)``: two integers ``>= minimum``, as a tuple of Python ints.

    Unlike :func:`standardize_tuple`, one integer is not a size: the package
    calls an image size ``input_size=(H, W)`` everywhere (``--input-size HxW``
    on the command line).

    Raises:
        ValueError: ``"{owner}: {name} must be (H, W), two integers >= {minimum},
            got {value!r}"``.
    """
    ok = (isinstance(value, (tuple, list)) and len(value) == 2
          and all(is_int(d) and d >= minimum for d in value))
    if not ok:
        raise ValueError(f"{_prefix(owner)}{name} must be (H, W), two integers >= {minimum}, "
                         f"got {value!r}")
    return int(value[0]), int(value[1])


def standardize_tuple(value, n: int, name: str, *, minimum: int = 1,
                      owner: str | None = None) -> tuple[int, ...]:
    """An integer or ``n`` integers, each ``>= minimum``, as a tuple of ``n`` Python ints.

    ``3`` becomes ``(3, 3)`` for ``n=2``; a list or tuple of ``n`` integers is
    kept (as a tuple). Used for kernel sizes, strides and dilation rates.

    Raises:
        ValueError: ``"{owner}: {name} must be an integer >= {minimum} or a tuple of
            {n} of them, got {value!r}"``.
    """
    if is_int(value):
        values = (value,) * n
    elif isinstance(value, (tuple, list)) and len(value) == n and all(is_int(v) for v in value):
        values = tuple(value)
    else:
        values = None
    if values is None or min(values) < minimum:
        raise ValueError(f"{_prefix(owner)}{name} must be an integer >= {minimum} or a tuple "
                         f"of {n} of them, got {value!r}")
    return tuple(int(v) for v in values)


def check_int_sequence(value, name: str, *, minimum: int = 1,
                       owner: str | None = None) -> tuple[int, ...]:
    """A non-empty sequence of integers ``>= minimum``, as a tuple of Python ints.

    Raises:
        ValueError: ``"{owner}: {name} must be a non-empty sequence of integers >=
            {minimum}, got {value!r}"``.
    """
    ok = (isinstance(value, Sequence) and not isinstance(value, str) and len(value) > 0
          and all(is_int(v) and v >= minimum for v in value))
    if not ok:
        raise ValueError(f"{_prefix(owner)}{name} must be a non-empty sequence of integers "
                         f">= {minimum}, got {value!r}")
    return tuple(int(v) for v in value)


def check_number(value, name: str, *, minimum: float | None = None,
                 maximum: float | None = None, owner: str | None = None) -> float:
    """``value`` as a Python float: a finite real number (not a bool) within the bounds.

    Raises:
        ValueError: ``"{owner}: {name} must be a number in [{minimum}, {maximum}], got
            {value!r}"`` (``"a number >= {minimum}"``, ``"a number <= {maximum}"`` or
            ``"a finite number"`` when only one or no bound is given).
    """
    if minimum is not None and maximum is not None:
        want = f"a number in [{minimum}, {maximum}]"
    elif minimum is not None:
        want = f"a number >= {minimum}"
    elif maximum is not None:
        want = f"a number <= {maximum}"
    else:
        want = "a finite number"
    ok = (isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))
          and np.isfinite(value)
          and (minimum is None or value >= minimum) and (maximum is None or value <= maximum))
    if not ok:
        raise ValueError(f"{_prefix(owner)}{name} must be {want}, got {value!r}")
    return float(value)


def check_bool(value, name: str, *, owner: str | None = None) -> bool:
    """``value`` if it is ``True`` or ``False`` (NumPy bools too); 0, 1 and strings are not.

    Raises:
        ValueError: ``"{owner}: {name} must be True or False, got {value!r}"``.
    """
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{_prefix(owner)}{name} must be True or False, got {value!r}")
    return bool(value)


def check_choice(value, choices: Iterable[str], name: str, *, owner: str | None = None) -> str:
    """``value`` if it is one of the strings ``choices``.

    Raises:
        ValueError: ``"{owner}: {name} must be one of ('a', 'b'), got {value!r}"``.
    """
    choices = tuple(choices)
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{_prefix(owner)}{name} must be one of {choices}, got {value!r}")
    return value


def check_implementation(value, *, owner: str | None = None) -> str:
    """``"auto"``, ``"compiled"`` or ``"portable"``: the op implementation argument."""
    return check_choice(value, IMPLEMENTATIONS, "implementation", owner=owner)


def check_input_shape(value, *, owner: str | None = None, known_channels: bool = True) -> tuple:
    """A model's ``input_shape`` argument: ``(H, W, C)``, each an integer >= 1 or None.

    Args:
        known_channels: whether C must be given (a model builder needs it; an
            export takes None as "the model's own").

    Raises:
        ValueError: naming ``input_shape``.
    """
    try:
        shape = tuple(value)
    except TypeError:
        shape = None
    if (shape is None or len(shape) != 3 or (known_channels and shape[-1] is None)
            or not all(d is None or (is_int(d) and d >= 1) for d in shape)):
        channels = "C a known channel count and H, W" if known_channels else "H, W and C"
        raise ValueError(f"{_prefix(owner)}input_shape must be (H, W, C) with {channels} "
                         f"positive ints or None, got {value!r}")
    return tuple(None if d is None else int(d) for d in shape)


# ---------------------------------------------------------------------------
# Keras backend


def tensorflow_backend() -> bool:
    """True when Keras runs on its TensorFlow backend."""
    import keras

    return keras.backend.backend() == "tensorflow"


def check_tensorflow_backend(owner: str) -> None:
    """Raises RuntimeError unless Keras runs on TensorFlow (``owner`` needs TensorFlow ops).

    The layers around tfdeblur's compiled ops (SVRNN's and SVDN's) are written
    in TensorFlow; LMFN's layers use ``keras.ops`` and run on any backend.
    """
    import keras

    backend = keras.backend.backend()
    if backend != "tensorflow":
        raise RuntimeError(
            f"{owner} is built on TensorFlow ops (tfdeblur's compiled ops and their portable "
            f"twins) and needs Keras's TensorFlow backend, but Keras runs on {backend!r}: set "
            "KERAS_BACKEND=tensorflow before Keras is first imported (LMFN runs on any backend)")


# ---------------------------------------------------------------------------
# Shapes and tensors


def _shape_of(x) -> tuple:
    shape = getattr(x, "shape", x)
    if getattr(shape, "rank", 0) is None:  # a tf.TensorShape of unknown rank
        return None
    return tuple(shape)


def check_rank(x, rank: int, name: str, layout: str = "[N, H, W, C]",
               owner: str | None = None) -> None:
    """ValueError naming ``name`` when the static rank of ``x`` (tensor or shape) is not ``rank``.

    ``"{owner}: {name} must be a rank-{rank} {layout} tensor, got shape {shape}"``;
    an unknown rank passes.
    """
    shape = _shape_of(x)
    if shape is not None and len(shape) != rank:
        raise ValueError(f"{_prefix(owner)}{name} must be a rank-{rank} {layout} tensor, "
                         f"got shape {getattr(x, 'shape', shape)}")


def check_image_input(input_shape, owner: str, *, name: str = "input",
                      channels: int | None = None, known_channels: bool = True) -> int | None:
    """Checks a layer input's shape ``[N, H, W, C]`` and returns C (None when unknown).

    Args:
        input_shape: the shape given to ``build``.
        owner: the layer, for the message.
        name: what the input is called in the message.
        channels: the channel count the input must have, if fixed.
        known_channels: whether C must be statically known.

    Raises:
        ValueError: wrong rank, unknown C when it must be known, or C other than ``channels``.
    """
    shape = tuple(input_shape)
    check_rank(shape, 4, name, owner=owner)
    c = shape[-1]
    if c is None and known_channels:
        raise ValueError(f"{owner}: the channel dimension (last axis) of {name} must be known, "
                         f"got shape {shape}")
    if channels is not None and c is not None and c != channels:
        raise ValueError(f"{owner}: {name} must have {channels} channels (last axis), "
                         f"got shape {shape}")
    return None if c is None else int(c)


def check_last_dim(t, size: int, name: str, layout: str, owner: str | None = None) -> None:
    """ValueError naming ``name`` when ``t``'s static last dimension is not ``size``."""
    shape = _shape_of(t)
    if shape and shape[-1] is not None and shape[-1] != size:
        raise ValueError(f"{_prefix(owner)}{name} must be {layout} with {size} values in its "
                         f"last axis, got shape {t.shape}")


def check_dim(t, axis: int, expected: int | None, name: str, what: str) -> None:
    """ValueError when a statically known dimension of ``t`` differs from ``expected``.

    ``"{name} must have {what} {expected}, got {got} (shape {t.shape})"``.
    """
    shape = _shape_of(t)
    got = shape[axis] if shape is not None else None
    if got is not None and expected is not None and got != expected:
        raise ValueError(f"{name} must have {what} {expected}, got {got} (shape {t.shape})")


def _dtype_of(value):
    """The dtype of a tensor or array, or of what ``np.asarray`` makes of a Python value
    (None when it makes nothing)."""
    dtype = getattr(value, "dtype", None)
    if dtype is None:
        try:
            dtype = np.asarray(value).dtype
        except (TypeError, ValueError):
            return None
    return dtype


def dtype_name(value) -> str:
    """The dtype of a tensor, array, or of what ``np.asarray`` makes of a Python value."""
    import tensorflow as tf

    dtype = _dtype_of(value)
    if dtype is None:
        return type(value).__name__
    return tf.as_dtype(dtype).name if not isinstance(dtype, str) else dtype


def is_float(value) -> bool:
    """True for floating-point tensors/arrays and for Python floats/lists of floats."""
    import tensorflow as tf

    dtype = _dtype_of(value)
    if dtype is None:
        return False
    try:
        return tf.as_dtype(dtype).is_floating
    except TypeError:
        return False


def as_float_tensor(value, name: str, dtype=None):
    """``value`` as a floating-point ``tf.Tensor`` (its own dtype kept for tensors and arrays).

    Raises:
        ValueError: naming ``name`` when the dtype is not a float type or
            differs from ``dtype``.
    """
    import tensorflow as tf

    try:
        if isinstance(value, (tf.Tensor, tf.Variable, np.ndarray, np.generic)):
            t = tf.convert_to_tensor(value)  # keep its dtype: a hint would cast float64 down
        else:
            t = tf.convert_to_tensor(value, dtype_hint=dtype or tf.float32)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name} must be a float tensor: {e}") from None
    if t.dtype.name not in FLOAT_DTYPES:
        raise ValueError(
            f"{name} must be float16, bfloat16, float32 or float64, got {t.dtype.name}")
    if dtype is not None:
        dtype = tf.as_dtype(dtype)
    if dtype is not None and t.dtype != dtype:
        raise ValueError(f"{name} must have the same dtype as x ({dtype.name}), got {t.dtype.name}")
    return t


def same_shape(a, b, name_a: str, name_b: str, owner: str) -> list:
    """ValueError when static shapes differ; else the run-time assertions still needed."""
    import tensorflow as tf

    if not a.shape.is_compatible_with(b.shape):
        raise ValueError(f"{owner}: {name_a} and {name_b} must have the same shape, got "
                         f"{a.shape} and {b.shape}")
    if a.shape.is_fully_defined() and b.shape.is_fully_defined():
        return []
    return [tf.debugging.assert_equal(
        tf.shape(a), tf.shape(b),
        message=f"{owner}: {name_a} and {name_b} must have the same shape")]


def assert_finite(t, name: str, owner: str):
    """``t``, with an InvalidArgumentError naming ``name`` if it holds NaN or Inf."""
    import tensorflow as tf

    return tf.debugging.assert_all_finite(t, f"{owner}: {name} has NaN or Inf values")


def with_dependencies(x, checks: list):
    """``x``, computed after the run-time ``checks`` (TensorFlow assertions); ``x`` if none."""
    if not checks:
        return x
    import tensorflow as tf

    with tf.control_dependencies(checks):
        return tf.identity(x)
