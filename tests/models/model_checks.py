"""Checks every tfdeblur network must pass (issue #4), shared by the model tests.

Each ``assert_*`` function takes a built ``keras.Model`` mapping ``[N, H, W,
C]`` images to images of the same shape (or a builder, where two models are
needed) and fails with a message saying what a user would have hit. Keep the
models small (tiny widths): these run on CPU in the test suite.

Usage from a model's test file::

    from tests.models import model_checks as mc

    def test_any_size():
        mc.assert_any_input_size(build("svdn", width=8), [(17, 17), (33, 20)])
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Sequence

import keras
import numpy as np
import pytest
import tensorflow as tf


def smooth_images(n: int, height: int, width: int, channels: int = 3,
                  seed: int = 0) -> np.ndarray:
    """Random images in [0, 1] with structure at several scales (float32)."""
    rng = np.random.default_rng(seed)
    out = np.zeros((n, height, width, channels))
    for cell in (2, 5, 11):
        coarse = rng.random((n, -(-height // cell), -(-width // cell), channels))
        out += np.repeat(np.repeat(coarse, cell, axis=1), cell, axis=2)[:, :height, :width]
    return (out / 3.0).astype("float32")


def blur_pairs(n: int, height: int, width: int, channels: int = 3, length: int = 7,
               seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(blurry, sharp)``: :func:`smooth_images` and their horizontal box blur."""
    sharp = smooth_images(n, height, width, channels, seed)
    half = length // 2
    padded = np.pad(sharp, [(0, 0), (0, 0), (half, half), (0, 0)], mode="reflect")
    blurry = np.mean([padded[:, :, i:i + width] for i in range(length)], axis=0)
    return blurry.astype("float32"), sharp


def assert_param_count(model: keras.Model, expected: float, rel_tol: float = 0.10) -> int:
    """The parameter count lies within ``rel_tol`` of the paper's ``expected``."""
    n = model.count_params()
    assert abs(n - expected) <= rel_tol * expected, (
        f"{model.name}: {n:,} parameters, not within {rel_tol:.0%} of the paper's "
        f"{expected:,.0f}")
    return n


def assert_any_input_size(model: keras.Model, sizes: Iterable[tuple[int, int]],
                          batch_sizes: Sequence[int] = (0, 1, 2), seed: int = 0) -> None:
    """Every (height, width) and batch size gives a finite output of the input's shape.

    Runs eagerly (how users call a model), through ``predict``, and through a
    ``tf.function`` with unknown height and width (how exports run it), and
    checks the three agree.
    """
    channels = model.input_shape[-1]
    sizes = list(sizes)
    dynamic = tf.function(model, input_signature=[
        tf.TensorSpec([None, None, None, channels], tf.float32)])
    for h, w in sizes:
        for n in batch_sizes:
            x = smooth_images(n, h, w, channels, seed)
            y = np.asarray(model(x, training=False))
            assert y.shape == x.shape, (f"{model.name}: input {x.shape} gave output {y.shape}")
            assert y.dtype == np.float32, f"{model.name}: output dtype {y.dtype}"
            assert np.all(np.isfinite(y)), f"{model.name}: non-finite output for {x.shape}"
            if n == 0:
                continue
            np.testing.assert_allclose(dynamic(x).numpy(), y, rtol=1e-5, atol=1e-5,
                                       err_msg=f"{model.name}: dynamic-shape run, {x.shape}")
    h, w = sizes[-1]
    x = smooth_images(3, h, w, channels, seed)
    np.testing.assert_allclose(model.predict(x, batch_size=2, verbose=0),
                               np.asarray(model(x, training=False)), rtol=1e-5, atol=1e-5,
                               err_msg=f"{model.name}: predict() differs from a direct call")


def assert_rejects_small_input(model: keras.Model, min_size: int) -> None:
    """A side of ``min_size - 1`` fails with an error stating ``min_size``; ``min_size`` works.

    Eagerly the error is a ``ValueError``; with unknown shapes (a traced
    ``tf.function``) it is an ``InvalidArgumentError`` at run time.
    """
    channels = model.input_shape[-1]
    dynamic = tf.function(model, input_signature=[
        tf.TensorSpec([None, None, None, channels], tf.float32)])
    for h, w in ((min_size - 1, min_size), (min_size, min_size - 1)):
        x = np.zeros((1, h, w, channels), "float32")
        with pytest.raises(ValueError, match=rf"\b{min_size}\b"):
            model(x)
        with pytest.raises(tf.errors.InvalidArgumentError, match=rf"\b{min_size}\b"):
            dynamic(x)
    y = model(np.zeros((1, min_size, min_size, channels), "float32"))
    assert tuple(y.shape) == (1, min_size, min_size, channels)


def assert_save_load_identical(model: keras.Model, x: np.ndarray, directory: str | os.PathLike
                               ) -> keras.Model:
    """``model.save(... .keras)`` then ``keras.models.load_model`` gives identical outputs."""
    path = os.path.join(os.fspath(directory), f"{model.name}.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    # Through JSON, as in the file: tuples come back as lists.
    normalise = lambda config: json.loads(json.dumps(config, sort_keys=True))
    assert normalise(loaded.get_config()) == normalise(model.get_config()), (
        f"{model.name}: config changed on load")
    assert len(loaded.weights) == len(model.weights)
    for a, b in zip(model.weights, loaded.weights, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=f"weight {a.path}")
    np.testing.assert_array_equal(np.asarray(loaded(x, training=False)),
                                  np.asarray(model(x, training=False)),
                                  err_msg=f"{model.name}: outputs differ after save/load")
    return loaded


def assert_fit_lowers_loss(model: keras.Model, x: np.ndarray, y: np.ndarray, steps: int = 6,
                           learning_rate: float = 1e-3, loss: str = "mse") -> tuple[float, float]:
    """A few ``model.fit`` steps on one small batch lower the training loss.

    Compiles ``model`` (Adam, ``loss``) and returns the loss before and after.
    """
    keras.utils.set_random_seed(0)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=loss)
    before = float(model.evaluate(x, y, batch_size=len(x), verbose=0))
    history = model.fit(x, y, batch_size=len(x), epochs=steps, shuffle=False, verbose=0)
    after = float(model.evaluate(x, y, batch_size=len(x), verbose=0))
    assert np.isfinite(history.history["loss"]).all(), f"{model.name}: non-finite loss in fit"
    assert after < before, f"{model.name}: loss went from {before:.6g} to {after:.6g} in fit"
    return before, after


def assert_implementations_agree(builder: Callable[..., keras.Model], x: np.ndarray,
                                 atol: float = 1e-4, **config) -> None:
    """The model built with ``implementation="compiled"`` and ``"portable"`` agree.

    Both are built from ``config``; the portable one gets the compiled one's
    weights. Skips (with the loader's reason) when the compiled library is
    not available.
    """
    from tfdeblur.ops import compiled_available, compiled_unavailable_reason

    if not compiled_available():
        pytest.skip(f"compiled ops unavailable: {compiled_unavailable_reason()}")
    compiled = builder(implementation="compiled", **config)
    portable = builder(implementation="portable", **config)
    portable.set_weights(compiled.get_weights())
    np.testing.assert_allclose(np.asarray(compiled(x, training=False)),
                               np.asarray(portable(x, training=False)), rtol=atol, atol=atol,
                               err_msg="compiled and portable implementations differ")
