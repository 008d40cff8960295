"""Empty-batch guard for layers built on convolutions.

TensorFlow 2.21's oneDNN CPU convolution (on by default on x86) returns its
*input* unchanged for a batch of 0, so a Keras ``Conv2D`` on ``[0, H, W, C]``
gives ``[0, H, W, C]`` instead of ``[0, H', W', filters]`` and the bias add
then fails. Layers pad an empty batch to one zero item and slice the result
back; for non-empty batches both steps forward their input without copying.
"""

from __future__ import annotations

import tensorflow as tf


def pad_empty_batch(x: tf.Tensor) -> tf.Tensor:
    """``x`` with one zero item appended when its batch is empty (else ``x``)."""
    extra = tf.cast(tf.equal(tf.shape(x)[0], 0), tf.int32)
    paddings = tf.concat([[[0, extra]], tf.zeros([x.shape.rank - 1, 2], tf.int32)], axis=0)
    y = tf.pad(x, paddings)
    y.set_shape([None, *x.shape[1:]])
    return y


def take_batch(y: tf.Tensor, n) -> tf.Tensor:
    """The first ``n`` items of ``y`` (undoes :func:`pad_empty_batch`)."""
    out = y[:n]
    out.set_shape([None, *y.shape[1:]])
    return out
