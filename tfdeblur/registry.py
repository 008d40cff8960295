"""One registry per kind of named thing a configuration can ask for.

In the spirit of BasicSR's ``Registry`` (``basicsr/utils/registry.py``): every
model, loss, metric, dataset, learning-rate schedule and optimizer a training
configuration names is an entry here, and the configuration checker
(:mod:`tfdeblur.training.config`), the trainer and :func:`tfdeblur.models.build`
all look it up here; no other name table exists.

An entry is registered with a decorator where it is defined
(``@MODELS.register("lmfn")``), or here by ``"module:attribute"`` so that
listing the names imports nothing (``tfdeblur train``'s configuration errors
come without TensorFlow); the attribute is imported on the first :meth:`get`.
An entry may carry ``defaults`` (a schedule's keys and their default values).

Example:
    >>> from tfdeblur.registry import LOSSES
    >>> LOSSES.names()
    ['charbonnier', 'pixel', 'svdn']
    >>> LOSSES.get("pixel")(normalization="mse")
"""

from __future__ import annotations

import importlib
import types
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["DATASETS", "LOSSES", "METRICS", "MODELS", "OPTIMIZERS", "SCHEDULES", "Registry",
           "RegistryError"]


class RegistryError(ValueError):
    """An unknown name (the message lists the known ones) or a name registered twice."""


class Registry:
    """Names -> objects (classes, builder functions) of one kind.

    Args:
        kind: what the entries are, for messages ("model", "loss", ...).
        modules: modules imported before the first lookup; they register
            their entries on import (decorators).
    """

    def __init__(self, kind: str, modules: Sequence[str] = ()):
        self.kind = kind
        self._modules = tuple(modules)
        self._imported = not self._modules
        self._entries: dict[str, Any] = {}
        self._defaults: dict[str, types.MappingProxyType] = {}

    def register(self, name: str, obj: Any = None, *,
                 defaults: Mapping[str, Any] | None = None) -> Any:
        """Adds ``obj`` (an object or a ``"module:attribute"`` string) under ``name``.

        Without ``obj``, returns a decorator that registers what it decorates.

        Raises:
            RegistryError: ``name`` is already registered.
        """
        if not isinstance(name, str) or not name:
            raise RegistryError(f"{self.kind} registry: name must be a non-empty string, "
                                f"got {name!r}")
        if obj is None:
            def wrap(target: Any) -> Any:
                self.register(name, target, defaults=defaults)
                return target

            return wrap
        if name in self._entries:
            raise RegistryError(f"{self.kind} {name!r} is already registered")
        self._entries[name] = obj
        self._defaults[name] = types.MappingProxyType(dict(defaults or {}))
        return obj

    def _import_modules(self) -> None:
        if self._imported:
            return
        self._imported = True  # a lookup while the modules import sees what is there so far
        try:
            for module in self._modules:
                try:
                    importlib.import_module(module)
                except ModuleNotFoundError as e:
                    if e.name != module:  # a missing dependency, not an absent module
                        raise
        except BaseException:
            self._imported = False  # the next lookup tries again and raises the error again
            raise

    def names(self) -> list[str]:
        """The registered names, sorted."""
        self._import_modules()
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        self._import_modules()
        return name in self._entries

    def _check(self, name: str) -> None:
        if name not in self:
            raise RegistryError(f"unknown {self.kind} {name!r}; known {self.kind} names: "
                                f"{self.names()}")

    def get(self, name: str) -> Any:
        """The object registered as ``name`` (a lazy entry is imported now).

        Raises:
            RegistryError: ``name`` is unknown; the message lists the known names.
        """
        self._check(name)
        obj = self._entries[name]
        if isinstance(obj, str):
            module, _, attribute = obj.partition(":")
            obj = getattr(importlib.import_module(module), attribute)
            self._entries[name] = obj
        return obj

    def defaults(self, name: str) -> Mapping[str, Any]:
        """The ``defaults`` given with ``name`` (read-only; empty when none were)."""
        self._check(name)
        return self._defaults[name]

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, names={sorted(self._entries)})"


#: Network builders (``tfdeblur.models.build``); each network module registers its own.
MODELS = Registry("model", modules=("tfdeblur.models.lmfn", "tfdeblur.models.svrnn",
                                    "tfdeblur.models.svdn"))
#: Loss classes; a class with ``compile_arguments()`` gives ``model.compile``'s arguments itself.
LOSSES = Registry("loss")
LOSSES.register("pixel", "tfdeblur.losses:PixelLoss")
LOSSES.register("charbonnier", "tfdeblur.losses:CharbonnierLoss")
LOSSES.register("svdn", "tfdeblur.losses:SVDNLoss")
#: Keras metric classes on training batches (the config's ``metrics``).
METRICS = Registry("metric")
METRICS.register("psnr", "tfdeblur.metrics:PSNR")
METRICS.register("ssim", "tfdeblur.metrics:SSIM")
#: Dataset functions (the ``type`` of a config's data section); first argument ``root``.
DATASETS = Registry("dataset")
DATASETS.register("synthetic", "tfdeblur.data.synthetic:synthetic_dataset")
DATASETS.register("paired", "tfdeblur.data.paired:paired_dataset")
#: Learning-rate schedule builders ``fn(learning_rate, schedule_section)``; ``defaults``
#: are the schedule's keys (None: required or filled in by the checker).
SCHEDULES = Registry("schedule")
SCHEDULES.register("constant", "tfdeblur.training.optimizers:constant_schedule")
SCHEDULES.register("polynomial", "tfdeblur.training.optimizers:polynomial_schedule",
                   defaults={"end_learning_rate": 1e-6, "power": 0.9, "decay_steps": None})
SCHEDULES.register("step", "tfdeblur.training.optimizers:step_schedule",
                   defaults={"every": None, "factor": 0.1})
SCHEDULES.register("multistep", "tfdeblur.training.optimizers:multistep_schedule",
                   defaults={"milestones": None, "factor": 0.1})
#: Optimizer builders ``fn(optimizer_section, learning_rate)``; ``defaults`` are the keys.
OPTIMIZERS = Registry("optimizer")
OPTIMIZERS.register("adam", "tfdeblur.training.optimizers:adam",
                    defaults={"learning_rate": 1e-4, "beta_1": 0.9, "beta_2": 0.999,
                              "epsilon": 1e-8, "weight_decay": 0.0, "weight_decay_mode": "l2",
                              "clipnorm": None, "schedule": {"name": "constant"}})


def _registries() -> dict[str, Registry]:
    return {r.kind: r for r in (MODELS, LOSSES, METRICS, DATASETS, SCHEDULES, OPTIMIZERS)}


def registry(kind: str) -> Registry:
    """The registry of ``kind`` ("model", "loss", "metric", "dataset", "schedule", "optimizer")."""
    known = _registries()
    if kind not in known:
        raise RegistryError(f"unknown registry kind {kind!r}; known: {sorted(known)}")
    return known[kind]

