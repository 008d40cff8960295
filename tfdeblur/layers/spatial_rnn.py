"""Keras layer for the four-direction spatially variant RNN."""

from __future__ import annotations

import keras

from tfdeblur import _validation as v
from tfdeblur.ops._loader import resolve_implementation
from tfdeblur.ops.gated_recurrence import spatial_rnn


@keras.saving.register_keras_serializable(package="tfdeblur")
class SpatialRNN(keras.layers.Layer):
    """Four-direction spatially variant RNN (Zhang et al. CVPR 2018, sec. 3.2).

    Runs ``h[t] = (1 - g[t]) x[t] + g[t] h[t-1]`` over the features along the
    four scan directions with per-pixel gates, and concatenates the outputs in
    the order ``left_to_right, right_to_left, top_to_bottom, bottom_to_top``.
    The gates are used as given: SVRNN's weight-generation network ends in a
    tanh, so they lie in (-1, 1). The layer has no weights.

    Args:
        implementation: ``"auto"`` (compiled op when available), ``"compiled"``
            or ``"portable"`` (stock TensorFlow ops, for export).
        **kwargs: standard ``keras.layers.Layer`` arguments.

    Input:
        A list ``[features, gates]``: features ``[N, H, W, C]``, gates
        ``[N, H, W, 4C]`` (direction k in channels ``[kC, (k+1)C)``).

    Output:
        ``[N, H, W, 4C]``.

    Example:
        >>> feats = keras.Input((None, None, 32))
        >>> gates = keras.Input((None, None, 128))
        >>> out = SpatialRNN()([feats, gates])  # (None, None, None, 128)
    """

    def __init__(self, implementation: str = "auto", **kwargs):
        super().__init__(**kwargs)
        v.check_tensorflow_backend("SpatialRNN")
        self.implementation = v.check_implementation(implementation, owner="SpatialRNN")
        # XLA cannot compile the custom op; Keras's jit_compile="auto" (XLA on
        # GPUs) then falls back to graph mode for models containing this layer.
        self.supports_jit = resolve_implementation(implementation) == "portable"

    def build(self, input_shape):
        if not isinstance(input_shape, (list, tuple)) or len(input_shape) != 2:
            raise ValueError("SpatialRNN expects a list [features, gates], "
                             f"got input shape {input_shape}")
        feat, gates = input_shape
        c, gc = feat[-1], gates[-1]
        if c is not None and gc is not None and gc != 4 * c:
            raise ValueError(f"SpatialRNN: gates must have 4 x {c} = {4 * c} channels "
                             f"(4 directions x feature channels), got {gc}")
        super().build(input_shape)

    def call(self, inputs):
        features, gates = inputs
        return spatial_rnn(features, gates, implementation=self.implementation)

    def compute_output_shape(self, input_shape):
        feat = input_shape[0]
        return (*feat[:-1], None if feat[-1] is None else 4 * feat[-1])

    def get_config(self):
        return {**super().get_config(), "implementation": self.implementation}
