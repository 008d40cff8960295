"""Adam with the papers' weight decay, and the learning-rate schedules of the recipes."""

from __future__ import annotations

import math

import keras
import numpy as np

from tfdeblur.training.config import ConfigError


@keras.saving.register_keras_serializable(package="tfdeblur")
class AdamL2(keras.optimizers.Adam):
    """Adam whose weight decay is an L2 term added to the gradient, as Caffe and PyTorch do it.

    SVRNN (Zhang et al. CVPR 2018, sec. 3.3, Caffe: ``weight_decay 1e-6``) and
    LMFN (PyTorch ``Adam(weight_decay=1e-4)``) regularise by adding
    ``l2 * w`` to each gradient before Adam's moment estimates, so the decay
    is rescaled per weight by Adam's normalisation. Keras's ``weight_decay``
    is the decoupled form of AdamW (``w -= lr * wd * w`` after the step),
    a different regulariser; this class gives the coupled one. Gradient
    clipping (``clipnorm`` ...) applies to the loss gradient before the L2
    term is added, as in PyTorch. Variables excluded with
    ``exclude_from_weight_decay`` get no L2 term either.

    Keras's Adam puts ``epsilon`` outside the bias correction (Kingma and
    Ba's "epsilon hat", as Caffe does); PyTorch adds it to the corrected
    ``sqrt(v_hat)``. The two differ only while ``sqrt(v)`` is near epsilon.

    Args:
        l2: coefficient of the L2 term, >= 0.
        **kwargs: ``keras.optimizers.Adam`` arguments (``weight_decay`` must
            stay unset: use :class:`keras.optimizers.Adam` for the decoupled
            form).

    Example:
        >>> model.compile(optimizer=AdamL2(l2=1e-6, learning_rate=1e-4), loss=PixelLoss())
    """

    def __init__(self, l2: float = 0.0, name: str = "adam_l2", **kwargs):
        if kwargs.get("weight_decay") not in (None, 0, 0.0):
            raise ValueError(f"AdamL2: weight_decay (decoupled) must stay unset, got "
                             f"{kwargs['weight_decay']!r}; give the coupled coefficient as l2")
        kwargs.pop("weight_decay", None)
        super().__init__(name=name, **kwargs)
        if isinstance(l2, bool) or not isinstance(l2, (int, float)) or not math.isfinite(l2) \
                or l2 < 0:
            raise ValueError(f"AdamL2: l2 must be a finite number >= 0, got {l2!r}")
        self.l2 = float(l2)

    def update_step(self, gradient, variable, learning_rate):
        if self.l2 and self._use_weight_decay(variable):
            gradient = keras.ops.add(keras.ops.cast(gradient, variable.dtype),
                                     keras.ops.multiply(variable, self.l2))
        super().update_step(gradient, variable, learning_rate)

    def get_config(self) -> dict:
        config = super().get_config()
        config.pop("weight_decay", None)
        return {**config, "l2": self.l2}


def constant_schedule(learning_rate: float, schedule: dict) -> float:
    """``constant``: the learning rate itself."""
    return learning_rate


def polynomial_schedule(learning_rate: float, schedule: dict):
    """``polynomial``: ``(lr - end) (1 - step / decay_steps) ** power + end``, then ``end``
    (SVDN: 1e-3 -> 1e-6, power 0.9)."""
    return keras.optimizers.schedules.PolynomialDecay(
        learning_rate, decay_steps=int(schedule["decay_steps"]),
        end_learning_rate=float(schedule["end_learning_rate"]), power=float(schedule["power"]))


def step_schedule(learning_rate: float, schedule: dict):
    """``step``: ``lr * factor ** floor(step / every)`` (LMFN: / 10 every 5e5)."""
    return keras.optimizers.schedules.ExponentialDecay(
        learning_rate, decay_steps=int(schedule["every"]), decay_rate=float(schedule["factor"]),
        staircase=True)


def multistep_schedule(learning_rate: float, schedule: dict):
    """``multistep``: ``lr * factor ** k`` from the ``k``-th step of ``milestones`` on
    (``[20000, 40000, 50000]``: halved at 20k, 40k and 50k)."""
    milestones = [int(m) for m in schedule["milestones"]]
    factor = float(schedule["factor"])
    # PiecewiseConstantDecay switches after a boundary: boundary m - 1 means "from step m on".
    values = [learning_rate * factor ** k for k in range(len(milestones) + 1)]
    return keras.optimizers.schedules.PiecewiseConstantDecay([m - 1 for m in milestones], values)


def learning_rates(opt: dict, steps) -> np.ndarray:
    """The learning rate of a resolved ``optimizer`` section at each of ``steps`` (float64)."""
    schedule = learning_rate_schedule(opt)
    steps = np.asarray(steps, dtype=np.int64)
    if not callable(schedule):
        return np.full(steps.shape, float(schedule))
    values = keras.ops.convert_to_numpy(schedule(steps))
    return np.asarray(values, dtype=np.float64).reshape(steps.shape)


def learning_rate_schedule(opt: dict):
    """A float or Keras schedule from a resolved ``optimizer`` section.

    The schedule is looked up in :data:`tfdeblur.registry.SCHEDULES`
    (:func:`constant_schedule`, :func:`polynomial_schedule`, :func:`step_schedule`,
    :func:`multistep_schedule`).
    """
    from tfdeblur.registry import SCHEDULES, RegistryError

    name = opt["schedule"]["name"]
    try:
        build = SCHEDULES.get(name)
    except RegistryError as e:
        raise ConfigError(f"config key 'optimizer.schedule.name': {e}") from None
    return build(float(opt["learning_rate"]), opt["schedule"])


def adam(opt: dict, learning_rate) -> keras.optimizers.Optimizer:
    """``adam``: :class:`AdamL2` (``weight_decay_mode`` ``"l2"``) or Keras's AdamW-style Adam."""
    common = {"learning_rate": learning_rate, "beta_1": float(opt["beta_1"]),
              "beta_2": float(opt["beta_2"]), "epsilon": float(opt["epsilon"])}
    if opt["clipnorm"] is not None:
        common["clipnorm"] = float(opt["clipnorm"])
    wd = float(opt["weight_decay"])
    if opt["weight_decay_mode"] == "l2":
        return AdamL2(l2=wd, **common)
    return keras.optimizers.Adam(weight_decay=wd or None, **common)


def build_optimizer(opt: dict) -> keras.optimizers.Optimizer:
    """The optimizer of a resolved ``optimizer`` config section (from
    :data:`tfdeblur.registry.OPTIMIZERS`)."""
    from tfdeblur.registry import OPTIMIZERS

    return OPTIMIZERS.get(opt.get("name", "adam"))(opt, learning_rate_schedule(opt))
