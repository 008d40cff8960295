"""Model registry: ``tfdeblur.models.build("svrnn" | "svdn" | "lmfn", **config)``.

Each network module registers a builder with :func:`register`; ``build``
looks it up by name and passes the configuration through (paper
configuration by default, ``width=``/depth arguments for small variants).
Every network is a :class:`DeblurModel`, a functional ``keras.Model`` that
checks its input image.
"""

from __future__ import annotations

from collections.abc import Callable

from tfdeblur.models._base import DeblurModel

__all__ = ["DeblurModel", "available", "build", "register"]

_REGISTRY: dict[str, Callable] = {}


def register(name: str) -> Callable[[Callable], Callable]:
    """Decorator adding a model builder to the registry under ``name``."""

    def wrap(fn: Callable) -> Callable:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is already registered")
        _REGISTRY[name] = fn
        return fn

    return wrap


def available() -> list[str]:
    """Names accepted by :func:`build`."""
    _import_all()
    return sorted(_REGISTRY)


def build(name: str, /, **config):
    """Builds a registered network (a ``keras.Model``) by name.

    ``name`` is positional-only so that ``config`` may hold the builder's own
    ``name=`` (the model's name).
    """
    _import_all()
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; available: {sorted(_REGISTRY)}")
    return _REGISTRY[name](**config)


def _import_all() -> None:
    # Network modules register themselves on import; imported lazily so that
    # `import tfdeblur.models` stays cheap.
    import importlib

    for module in ("lmfn", "svrnn", "svdn"):
        try:
            importlib.import_module(f"tfdeblur.models.{module}")
        except ModuleNotFoundError as e:
            if e.name != f"tfdeblur.models.{module}":
                raise
