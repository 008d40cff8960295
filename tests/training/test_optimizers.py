"""AdamL2 against a float64 NumPy Adam with coupled L2; the recipes' learning-rate schedules."""

import keras
import numpy as np
import pytest

from tfdeblur.training import AdamL2, build_optimizer, learning_rate_schedule


def adam_reference(w0, grads, lr, beta_1, beta_2, eps, l2=0.0, decoupled=0.0):
    """float64 Adam as Kingma & Ba's "epsilon hat" form (Caffe, Keras), optional decay terms.

    ``l2``: added to the gradient (Caffe / PyTorch weight decay);
    ``decoupled``: ``w -= lr * decoupled * w`` before the step (AdamW, Keras).
    """
    w = np.asarray(w0, np.float64).copy()
    m = np.zeros_like(w)
    v = np.zeros_like(w)
    for t, g in enumerate(grads, 1):
        w = w - lr * decoupled * w
        g = np.asarray(g, np.float64) + l2 * w
        m = beta_1 * m + (1 - beta_1) * g
        v = beta_2 * v + (1 - beta_2) * g * g
        alpha = lr * np.sqrt(1 - beta_2 ** t) / (1 - beta_1 ** t)
        w = w - alpha * m / (np.sqrt(v) + eps)
    return w


def _run(optimizer, w0, grads):
    w = keras.Variable(np.asarray(w0, np.float64), dtype="float64")
    for g in grads:
        optimizer.apply_gradients([(keras.ops.convert_to_tensor(g, "float64"), w)])
    return np.asarray(w.numpy())


# Keras keeps the learning rate in a float32 variable and rounds some hyper-parameters to
# float32, so its float64 Adam agrees with the float64 reference to ~1e-5 of a step; the L2
# terms tested below move the weights by more than 1e-3.
ATOL = 2e-6


@pytest.mark.parametrize("l2", [0.0, 0.3])
def test_adam_l2_matches_reference(rng, l2):
    w0 = rng.normal(size=(3, 5))
    grads = [rng.normal(size=(3, 5)) * s for s in (1.0, 0.01, 3.0, 0.5)]
    got = _run(AdamL2(l2=l2, learning_rate=0.05, beta_1=0.8, beta_2=0.95, epsilon=1e-3),
               w0, grads)
    want = adam_reference(w0, grads, 0.05, 0.8, 0.95, 1e-3, l2=l2)
    np.testing.assert_allclose(got, want, rtol=0, atol=ATOL)
    if l2:
        # The coupled term must matter here, or the test would not tell the forms apart.
        assert np.abs(want - adam_reference(w0, grads, 0.05, 0.8, 0.95, 1e-3)).max() > 1e-3
        decoupled = adam_reference(w0, grads, 0.05, 0.8, 0.95, 1e-3, decoupled=l2)
        assert np.abs(want - decoupled).max() > 1e-3


def test_adam_l2_is_keras_adam_on_the_coupled_gradient(rng):
    """Bit-for-bit: AdamL2 equals Keras's Adam given ``g + l2 * w`` (same float rounding)."""
    w0 = rng.normal(size=(6,))
    grads = [rng.normal(size=(6,)) for _ in range(3)]
    got = _run(AdamL2(l2=0.25, learning_rate=0.01), w0, grads)
    w = keras.Variable(w0, dtype="float64")
    plain = keras.optimizers.Adam(learning_rate=0.01)
    for g in grads:
        coupled = keras.ops.convert_to_tensor(g, "float64") + 0.25 * w.value
        plain.apply_gradients([(coupled, w)])
    np.testing.assert_array_equal(got, w.numpy())


def test_decoupled_mode_is_keras_adam_weight_decay(rng):
    w0 = rng.normal(size=(4,))
    grads = [rng.normal(size=(4,)) for _ in range(3)]
    opt = build_optimizer({"learning_rate": 0.1, "beta_1": 0.9, "beta_2": 0.99, "epsilon": 1e-7,
                           "weight_decay": 0.2, "weight_decay_mode": "decoupled",
                           "clipnorm": None, "schedule": {"name": "constant"}})
    assert type(opt) is keras.optimizers.Adam
    want = adam_reference(w0, grads, 0.1, 0.9, 0.99, 1e-7, decoupled=0.2)
    np.testing.assert_allclose(_run(opt, w0, grads), want, rtol=0, atol=ATOL)
    coupled = build_optimizer({"learning_rate": 0.1, "beta_1": 0.9, "beta_2": 0.99,
                               "epsilon": 1e-7, "weight_decay": 0.2, "weight_decay_mode": "l2",
                               "clipnorm": None, "schedule": {"name": "constant"}})
    assert isinstance(coupled, AdamL2) and coupled.l2 == 0.2


def test_adam_l2_excluded_variables_get_no_l2(rng):
    w0 = rng.normal(size=(3,))
    grads = [rng.normal(size=(3,)) for _ in range(2)]
    opt = AdamL2(l2=0.5, learning_rate=0.1)
    w = keras.Variable(w0, dtype="float64", name="bias")
    opt.exclude_from_weight_decay(var_names=["bias"])
    for g in grads:
        opt.apply_gradients([(keras.ops.convert_to_tensor(g, "float64"), w)])
    np.testing.assert_allclose(w.numpy(), adam_reference(w0, grads, 0.1, 0.9, 0.999, 1e-7),
                               rtol=0, atol=ATOL)


def test_adam_l2_config_round_trip_and_errors():
    opt = AdamL2(l2=1e-4, learning_rate=2e-4, beta_2=0.9)
    again = keras.optimizers.deserialize(keras.optimizers.serialize(opt))
    assert isinstance(again, AdamL2)
    assert (again.l2, again.beta_2) == (1e-4, 0.9)
    assert float(again.learning_rate) == pytest.approx(2e-4)
    assert "weight_decay" not in again.get_config()
    with pytest.raises(ValueError, match="weight_decay .*must stay unset"):
        AdamL2(l2=0.1, weight_decay=0.1)
    with pytest.raises(ValueError, match="l2 must be a finite number >= 0"):
        AdamL2(l2=-1.0)


def _lr(schedule, step):
    return float(schedule(step)) if callable(schedule) else schedule


def test_polynomial_schedule_svdn():
    sched = learning_rate_schedule({"learning_rate": 1e-3, "schedule": {
        "name": "polynomial", "end_learning_rate": 1e-6, "power": 0.9, "decay_steps": 1000}})
    for step in (0, 1, 250, 999, 1000):
        want = (1e-3 - 1e-6) * (1 - step / 1000) ** 0.9 + 1e-6
        assert _lr(sched, step) == pytest.approx(want, rel=1e-5)
    assert _lr(sched, 5000) == pytest.approx(1e-6, rel=1e-5)


def test_step_schedule_lmfn():
    sched = learning_rate_schedule({"learning_rate": 1e-4, "schedule": {
        "name": "step", "every": 500000, "factor": 0.1}})
    for step, want in ((0, 1e-4), (499999, 1e-4), (500000, 1e-5), (999999, 1e-5),
                       (1000000, 1e-6)):
        assert _lr(sched, step) == pytest.approx(want, rel=1e-5)
    assert learning_rate_schedule({"learning_rate": 3e-4, "schedule": {"name": "constant"}}) \
        == 3e-4


def test_multistep_schedule_matches_a_step_schedule_then_goes_its_own_way():
    """Milestones [20000, 40000, 50000] x 0.5: the bundled LMFN's schedule, equal to
    "halve every 20k" before step 50,000 (where its run switched) and 6.25e-5 from there."""
    from tfdeblur.training.optimizers import learning_rates

    multi = {"learning_rate": 5e-4, "schedule": {
        "name": "multistep", "milestones": [20000, 40000, 50000], "factor": 0.5}}
    every = {"learning_rate": 5e-4, "schedule": {"name": "step", "every": 20000, "factor": 0.5}}
    sched = learning_rate_schedule(multi)
    for step, want in ((0, 5e-4), (19999, 5e-4), (20000, 2.5e-4), (39999, 2.5e-4),
                       (40000, 1.25e-4), (49999, 1.25e-4), (50000, 6.25e-5), (10 ** 6, 6.25e-5)):
        assert _lr(sched, step) == pytest.approx(want, rel=1e-6), step
    steps = np.arange(0, 60000, 7)
    a, b = learning_rates(multi, steps), learning_rates(every, steps)
    want_every = 5e-4 * 0.5 ** (steps // 20000)
    np.testing.assert_allclose(b, want_every, rtol=1e-6)
    np.testing.assert_allclose(a[steps < 50000], want_every[steps < 50000], rtol=1e-6)
    np.testing.assert_allclose(a[steps >= 50000], 6.25e-5, rtol=1e-6)
    np.testing.assert_allclose(learning_rates({"learning_rate": 3e-4, "schedule": {
        "name": "constant"}}, [0, 5]), [3e-4, 3e-4])
