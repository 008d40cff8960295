"""Pad-to-multiple and crop-back, so every network accepts any image size.

Written with ``keras.ops``, so they run on every Keras backend (LMFN does);
the run-time checks for sizes and values only known while a TensorFlow graph
runs are TensorFlow's.
"""

from __future__ import annotations

import keras
from keras import ops

from tfdeblur import _validation as v


def check_min_size(x, min_size: int, model: str) -> None:
    """Raises ValueError when a statically known side is below ``min_size``.

    ``x`` is a tensor or a shape.
    """
    shape = tuple(getattr(x, "shape", x))
    h, w = shape[1], shape[2]
    for side, n in (("height", h), ("width", w)):
        if n is not None and n < min_size:
            raise ValueError(f"{model}: image {side} must be at least {min_size} pixels, "
                             f"got {n} (input shape {shape})")


def _reflect_pad_end(x, pad, axis: int):
    """Reflect-pads ``pad`` (< side) entries after the end of ``axis``.

    Written with slices rather than ``ops.pad(mode="reflect")``, whose
    TensorFlow kernel rejects an empty batch (it requires every padding, even
    0, to be smaller than its dimension).
    """
    n = ops.shape(x)[axis]
    index = [slice(None)] * 4
    index[axis] = slice(n - 1 - pad, n - 1)
    return ops.concatenate([x, ops.flip(x[tuple(index)], axis=axis)], axis=axis)


@keras.saving.register_keras_serializable(package="tfdeblur")
class PadToMultiple(keras.layers.Layer):
    """Checks the image and reflect-pads height and width up to a multiple of ``multiple``.

    The first layer of every tfdeblur network, so these checks hold however
    the model runs (eagerly, in ``fit``/``predict``, in a ``tf.function`` or
    SavedModel with unknown sizes):

    - sides below ``min_size`` are rejected with a message stating the
      minimum (a ValueError when the size is known while tracing, else an
      InvalidArgumentError at run time). Reflect padding needs
      ``pad < side``, which ``min_size >= multiple`` guarantees;
    - the channel count must be the one the layer was built for (checked at
      run time too when the traced shape leaves it open);
    - NaN or Inf values raise an InvalidArgumentError naming the input
      (``tf.debugging.check_numerics``, one pass over the image). XLA
      (``jit_compile=True``) drops run-time checks, and Keras's other
      backends have none, so there non-finite values propagate to the output.

    An empty batch (``N = 0``) gets one zero image appended: TensorFlow's
    oneDNN convolutions return a wrongly shaped result for an empty batch, so
    the network must not see one. :class:`CropTo` removes it again.

    Args:
        multiple: height and width are padded up to a multiple of this.
        min_size: smallest accepted height and width (raised to
            ``multiple`` if below it).
        model_name: the network's name, used in error messages.
        **kwargs: standard ``keras.layers.Layer`` arguments.

    Input: ``[N, H, W, C]``. Output: ``[max(N, 1), H', W', C]`` with ``H' =
    ceil(H / multiple) * multiple`` (same for W). Pair with :class:`CropTo`.

    Example:
        >>> pad = PadToMultiple(8, 8, model_name="svrnn")
        >>> pad(np.zeros([2, 9, 16, 3], "float32")).shape
        (2, 16, 16, 3)
    """

    def __init__(self, multiple: int, min_size: int, model_name: str = "model", **kwargs):
        super().__init__(**kwargs)
        self.multiple = v.check_int(multiple, "multiple", owner="PadToMultiple")
        self.min_size = max(v.check_int(min_size, "min_size", owner="PadToMultiple"),
                            self.multiple)
        if not isinstance(model_name, str):
            raise ValueError(f"PadToMultiple: model_name must be a string, got {model_name!r}")
        self.model_name = model_name

    def build(self, input_shape):
        # A model built for a fixed too-small size fails here, at construction.
        check_min_size(input_shape, self.min_size, self.model_name)
        self.channels = input_shape[-1]
        super().build(input_shape)

    def call(self, x):
        check_min_size(x, self.min_size, self.model_name)
        channels = getattr(self, "channels", None)
        if channels is not None and x.shape[-1] is not None and x.shape[-1] != channels:
            raise ValueError(f"{self.model_name}: input image must have {channels} channels, "
                             f"got shape {tuple(x.shape)}")
        if v.tensorflow_backend():
            x = self._tensorflow_checks(x, channels)
        n, h, w, _ = ops.shape(x)
        m = self.multiple
        ph = (m - h % m) % m
        pw = (m - w % m) % m
        x = _reflect_pad_end(_reflect_pad_end(x, ph, axis=1), pw, axis=2)
        if v.is_int(n):
            if n > 0:
                return x
            extra = 1
        else:  # a batch size known only at run time (TensorFlow graphs)
            extra = ops.maximum(1 - n, 0)
        # An empty batch gets one zero image.
        return ops.pad(x, ((0, extra), (0, 0), (0, 0), (0, 0)))

    def _tensorflow_checks(self, x, channels):
        """``x`` after the checks of what a TensorFlow graph knows only at run time.

        Sizes unknown while tracing and NaN/Inf values. Other backends trace
        with static shapes (checked in :meth:`call`) and have no run-time
        assertions, so there non-finite values propagate, as under XLA.
        """
        import tensorflow as tf

        shape = tf.shape(x)
        checks = []
        if x.shape[1] is None or x.shape[2] is None:
            checks.append(tf.debugging.assert_greater_equal(
                tf.minimum(shape[1], shape[2]), self.min_size,
                message=f"{self.model_name}: image height and width must be at least "
                        f"{self.min_size} pixels"))
        if channels is not None and x.shape[-1] is None:
            checks.append(tf.debugging.assert_equal(
                shape[3], channels,
                message=f"{self.model_name}: input image must have {channels} channels"))
        x = tf.debugging.check_numerics(
            x, f"{self.model_name}: input image has NaN or Inf values")
        return v.with_dependencies(x, checks)

    def compute_output_shape(self, input_shape):
        def up(n):
            return None if n is None else -(-n // self.multiple) * self.multiple
        n = input_shape[0]
        return (None if n is None else max(n, 1), up(input_shape[1]), up(input_shape[2]),
                input_shape[3])

    def get_config(self):
        return {**super().get_config(), "multiple": self.multiple, "min_size": self.min_size,
                "model_name": self.model_name}


@keras.saving.register_keras_serializable(package="tfdeblur")
class CropTo(keras.layers.Layer):
    """Crops ``inputs[0]`` to the batch, height and width of ``inputs[1]`` (top-left).

    Undoes :class:`PadToMultiple` (its bottom/right padding and the dummy item
    of an empty batch) on the network's output.

    Input: ``[output [M, H', W', C'], reference [N, H, W, C]]``. Output:
    ``[N, H, W, C']``.

    Example:
        >>> CropTo()([np.zeros([1, 16, 16, 3]), np.zeros([0, 9, 13, 3])]).shape
        (0, 9, 13, 3)
    """

    def call(self, inputs):
        x, reference = inputs
        n, h, w, _ = ops.shape(reference)
        return x[:n, :h, :w, :]

    def compute_output_shape(self, input_shape):
        x, ref = input_shape
        return (ref[0], ref[1], ref[2], x[3])
