"""Pad-to-multiple and crop-back, so every network accepts any image size."""

from __future__ import annotations

import keras
import tensorflow as tf


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


def _reflect_pad_end(x: tf.Tensor, pad, axis: int) -> tf.Tensor:
    """Reflect-pads ``pad`` (< side) entries after the end of ``axis``.

    Written with slices rather than ``tf.pad(mode="REFLECT")``, whose kernel
    rejects an empty batch (it requires every padding, even 0, to be smaller
    than its dimension).
    """
    n = tf.shape(x)[axis]
    begin = [0, 0, 0, 0]
    size = [-1, -1, -1, -1]
    begin[axis] = n - 1 - pad
    size[axis] = pad
    return tf.concat([x, tf.reverse(tf.slice(x, begin, size), [axis])], axis=axis)


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
      (``jit_compile=True``) drops run-time checks, so there non-finite
      values propagate to the output.

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
        >>> pad(tf.zeros([2, 9, 16, 3])).shape
        TensorShape([2, 16, 16, 3])
    """

    def __init__(self, multiple: int, min_size: int, model_name: str = "model", **kwargs):
        super().__init__(**kwargs)
        if multiple < 1 or min_size < 1:
            raise ValueError(f"multiple and min_size must be >= 1, got {multiple}, {min_size}")
        self.multiple = int(multiple)
        self.min_size = int(max(min_size, multiple))
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
        shape = tf.shape(x)
        h, w = shape[1], shape[2]
        checks = []
        if x.shape[1] is None or x.shape[2] is None:
            checks.append(tf.debugging.assert_greater_equal(
                tf.minimum(h, w), self.min_size,
                message=f"{self.model_name}: image height and width must be at least "
                        f"{self.min_size} pixels"))
        if channels is not None and x.shape[-1] is None:
            checks.append(tf.debugging.assert_equal(
                shape[3], channels,
                message=f"{self.model_name}: input image must have {channels} channels"))
        x = tf.debugging.check_numerics(
            x, f"{self.model_name}: input image has NaN or Inf values")
        with tf.control_dependencies(checks):
            m = self.multiple
            ph = (m - h % m) % m
            pw = (m - w % m) % m
            x = _reflect_pad_end(_reflect_pad_end(x, ph, axis=1), pw, axis=2)
        if x.shape[0] is not None and x.shape[0] > 0:
            return x
        n = tf.shape(x)[0]
        dummy = tf.zeros(tf.concat([[tf.maximum(1 - n, 0)], tf.shape(x)[1:]], 0), x.dtype)
        return tf.concat([x, dummy], axis=0)

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
        >>> CropTo()([tf.zeros([1, 16, 16, 3]), tf.zeros([0, 9, 13, 3])]).shape
        TensorShape([0, 9, 13, 3])
    """

    def call(self, inputs):
        x, reference = inputs
        shape = tf.shape(reference)
        return x[: shape[0], : shape[1], : shape[2], :]

    def compute_output_shape(self, input_shape):
        x, ref = input_shape
        return (ref[0], ref[1], ref[2], x[3])
