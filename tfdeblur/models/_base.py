"""What the three networks share: the model class with checked input, argument checks."""

from __future__ import annotations

import numbers

import keras

from tfdeblur.ops._loader import IMPLEMENTATIONS


def check_int(value, name: str, model: str, minimum: int = 1) -> int:
    """``value`` as an int, or a ValueError naming ``name`` (bools and floats rejected)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{model}: {name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_implementation(implementation, model: str) -> str:
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(f"{model}: implementation must be one of {IMPLEMENTATIONS}, "
                         f"got {implementation!r}")
    return implementation


def check_input_shape(input_shape, model: str) -> tuple:
    """``(H, W, C)`` with ``C`` a known positive int and ``H, W`` None or positive ints."""
    try:
        shape = tuple(input_shape)
    except TypeError:
        shape = None
    if shape is None or len(shape) != 3 or not all(
            d is None or (isinstance(d, int) and not isinstance(d, bool) and d >= 1)
            for d in shape) or shape[-1] is None:
        raise ValueError(f"{model}: input_shape must be (H, W, C) with C a known channel count "
                         f"and H, W positive ints or None, got {input_shape!r}")
    return shape


def _describe(x) -> str:
    return f"shape {tuple(x.shape)}, dtype {getattr(x.dtype, 'name', x.dtype)}"


@keras.saving.register_keras_serializable(package="tfdeblur")
class DeblurModel(keras.Model):
    """A functional ``keras.Model`` from blurry to sharp images that checks its input.

    Built, called, trained, saved and loaded like any functional model
    (``DeblurModel(inputs, outputs, name=...)``); every network of
    :func:`tfdeblur.models.build` is one. Before the graph runs, the image is
    checked for what Keras would otherwise convert silently or let fail deep
    inside the network, with an error naming the input:

    - rank: a batch ``[N, H, W, C]`` (a single ``[H, W, C]`` image gets a hint
      to add the batch axis);
    - channels: ``C`` must be the model's;
    - dtype: floating point. Keras would cast an integer image (e.g.
      ``uint8`` from an image reader) to float with values in [0, 255] and
      the network would return a meaningless result; such input is rejected
      with a hint to scale it to [0, 1].

    The height/width minimum and NaN/Inf values are checked inside the graph
    by the model's :class:`~tfdeblur.models._padding.PadToMultiple` layer, so
    those checks also hold in a ``tf.function`` with unknown sizes.

    Example:
        >>> inputs = keras.Input((None, None, 3), name="blurry")
        >>> outputs = keras.layers.Conv2D(3, 3, padding="same")(inputs)
        >>> model = DeblurModel(inputs, outputs, name="tiny")
        >>> model(np.zeros((1, 64, 64, 3), "uint8"))
        ValueError: tiny: input 'blurry' must be a float image with values in [0, 1], ...
    """

    def call(self, inputs, training=None, mask=None, **kwargs):
        flat = keras.tree.flatten(inputs)
        if len(flat) == 1 and len(self.inputs) == 1 and hasattr(flat[0], "shape"):
            self._check_image(flat[0])
        return super().call(inputs, training=training, mask=mask, **kwargs)

    def _check_image(self, x) -> None:
        spec = self.inputs[0]
        channels = spec.shape[-1]
        where = f"{self.name}: input {spec.name!r}"
        shape = tuple(x.shape)
        if len(shape) != 4:
            hint = " (a single image: add the batch axis, x[None])" if len(shape) == 3 else ""
            raise ValueError(f"{where} must be a batch of images [N, H, W, {channels}], "
                             f"got {_describe(x)}{hint}")
        if shape[-1] is not None and channels is not None and shape[-1] != channels:
            raise ValueError(f"{where} must have {channels} channels (last axis), "
                             f"got {_describe(x)}")
        if not keras.backend.is_float_dtype(keras.backend.standardize_dtype(x.dtype)):
            raise ValueError(f"{where} must be a float image with values in [0, 1], got "
                             f"{_describe(x)} (convert with x.astype('float32') / 255 for "
                             "8-bit images)")
