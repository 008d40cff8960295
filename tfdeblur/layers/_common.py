"""Small helpers the layer files share."""

from __future__ import annotations

import keras


def halved(n: int | None) -> int | None:
    """Length after a stride-2 ``"same"`` convolution, ``ceil(n / 2)``; None (unknown) stays."""
    return None if n is None else -(-n // 2)


def fresh_initializer(initializer):
    """A new initializer object with ``initializer``'s configuration.

    One per sub-layer: a shared object would carry its state (e.g. a seed
    generator) from one sub-layer's weights to the next.
    """
    return keras.initializers.get(keras.initializers.serialize(initializer))
