"""Model registry: ``tfdeblur.models.build("svrnn" | "svdn" | "lmfn", **config)``.

Each network module registers a builder with :func:`register` (in
:data:`tfdeblur.registry.MODELS`, imported lazily on the first lookup); ``build``
looks it up by name and passes the configuration through (paper
configuration by default, ``width=``/depth arguments for small variants).
Every network is a :class:`DeblurModel`, a functional ``keras.Model`` that
checks its input image.
"""

from __future__ import annotations

from collections.abc import Callable

from tfdeblur.models._base import DeblurModel
from tfdeblur.registry import MODELS

__all__ = ["DeblurModel", "available", "build", "register"]


def register(name: str) -> Callable[[Callable], Callable]:
    """Decorator adding a model builder to :data:`tfdeblur.registry.MODELS` under ``name``."""
    return MODELS.register(name)


def available() -> list[str]:
    """Names accepted by :func:`build`."""
    return MODELS.names()


def build(name: str, /, **config):
    """Builds a registered network (a ``keras.Model``) by name.

    ``name`` is positional-only so that ``config`` may hold the builder's own
    ``name=`` (the model's name).

    Raises:
        tfdeblur.registry.RegistryError: an unknown name (a ValueError listing the known ones).
    """
    return MODELS.get(name)(**config)
