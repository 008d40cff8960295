"""Pad-to-multiple and crop-back, so every network accepts any image size."""

from __future__ import annotations

import keras
import tensorflow as tf

from tfdeblur.layers._empty_batch import pad_empty_batch


def check_min_size(x: tf.Tensor, min_size: int, model: str) -> None:
    """Raises ValueError when a statically known side is below ``min_size``."""
    h, w = x.shape[1], x.shape[2]
    for side, n in (("height", h), ("width", w)):
        if n is not None and n < min_size:
            raise ValueError(f"{model}: image {side} must be at least {min_size} pixels, "
                             f"got {n} (input shape {tuple(x.shape)})")


@keras.saving.register_keras_serializable(package="tfdeblur")
class PadToMultiple(keras.layers.Layer):
    """Reflect-pads height and width up to a multiple of ``multiple``.

    Sides below ``min_size`` are rejected (statically when known, otherwise at
    run time) with a message stating the minimum. Reflect padding needs
    ``pad < side``, which ``min_size >= multiple`` guarantees.

    Input: ``[N, H, W, C]``. Output: ``[N, H', W', C]`` with ``H' = ceil(H /
    multiple) * multiple`` (same for W). Pair with :class:`CropTo`.
    """

    def __init__(self, multiple: int, min_size: int, model_name: str = "model", **kwargs):
        super().__init__(**kwargs)
        if multiple < 1 or min_size < 1:
            raise ValueError(f"multiple and min_size must be >= 1, got {multiple}, {min_size}")
        self.multiple = int(multiple)
        self.min_size = int(max(min_size, multiple))
        self.model_name = model_name

    def call(self, x):
        check_min_size(x, self.min_size, self.model_name)
        shape = tf.shape(x)
        h, w = shape[1], shape[2]
        checks = []
        if x.shape[1] is None or x.shape[2] is None:
            checks.append(tf.debugging.assert_greater_equal(
                tf.minimum(h, w), self.min_size,
                message=f"{self.model_name}: image height and width must be at least "
                        f"{self.min_size} pixels"))
        with tf.control_dependencies(checks):
            m = self.multiple
            ph = (m - h % m) % m
            pw = (m - w % m) % m
            # (MirrorPad rejects an empty batch, so the batch is padded first.)
            return tf.pad(pad_empty_batch(x), [[0, 0], [0, ph], [0, pw], [0, 0]],
                          mode="REFLECT")

    def compute_output_shape(self, input_shape):
        def up(n):
            return None if n is None else -(-n // self.multiple) * self.multiple
        return (input_shape[0], up(input_shape[1]), up(input_shape[2]), input_shape[3])

    def get_config(self):
        return {**super().get_config(), "multiple": self.multiple, "min_size": self.min_size,
                "model_name": self.model_name}


@keras.saving.register_keras_serializable(package="tfdeblur")
class CropTo(keras.layers.Layer):
    """Crops ``inputs[0]`` to the batch, height and width of ``inputs[1]`` (top-left)."""

    def call(self, inputs):
        x, reference = inputs
        shape = tf.shape(reference)
        return x[: shape[0], : shape[1], : shape[2]]

    def compute_output_shape(self, input_shape):
        x, ref = input_shape
        return (ref[0], ref[1], ref[2], *x[3:])
