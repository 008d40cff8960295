"""The model class the three networks share: a functional model that checks its input."""

from __future__ import annotations

import keras


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
