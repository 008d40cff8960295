"""Checks every tfdeblur network must pass, shared by the model tests.

Each ``assert_*`` function takes a built ``keras.Model`` mapping ``[N, H, W,
C]`` images to images of the same shape, possibly followed by further outputs
with the same batch size (SVDN's sampling positions), or a builder where more
than one model is needed, and fails with a message saying what a user would
have hit. Keep the models small (tiny widths): these run on CPU in the test
suite, and keep to one ``fit`` per model (tracing a training step costs
seconds).

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


def _outputs(model: keras.Model, x, **kwargs) -> list[np.ndarray]:
    """All outputs of ``model(x)`` as arrays, the image first (SVDN can add positions)."""
    return [np.asarray(y) for y in keras.tree.flatten(model(x, **kwargs))]


def _dynamic(model: keras.Model) -> Callable:
    """``model`` traced once with unknown batch, height and width (how exports run it)."""
    channels = model.input_shape[-1]
    return tf.function(lambda x: keras.tree.flatten(model(x, training=False)),
                       input_signature=[tf.TensorSpec([None, None, None, channels], tf.float32)])


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
                          batch_sizes: Sequence[int] = (0, 1, 3), seed: int = 0) -> None:
    """Every (height, width) and batch size gives a finite output of the input's shape.

    Runs eagerly (how users call a model), through ``predict``, and through a
    ``tf.function`` with unknown batch, height and width (how exports run it),
    and checks the three agree, and that batch items are independent (the
    last item alone gives the same output). Extra outputs (SVDN's positions)
    must have the input's batch size and be finite, and agree as well.
    """
    channels = model.input_shape[-1]
    sizes = list(sizes)
    dynamic = _dynamic(model)
    for h, w in sizes:
        for n in batch_sizes:
            x = smooth_images(n, h, w, channels, seed)
            ys = _outputs(model, x, training=False)
            y = ys[0]
            assert y.shape == x.shape, f"{model.name}: input {x.shape} gave output {y.shape}"
            assert y.dtype == np.float32, f"{model.name}: output dtype {y.dtype}"
            for extra in ys:
                assert extra.shape[0] == n, f"{model.name}: an output has shape {extra.shape}"
                assert np.all(np.isfinite(extra)), f"{model.name}: non-finite output, {x.shape}"
            if n == 0:
                continue
            for got, want in zip(dynamic(x), ys, strict=True):
                np.testing.assert_allclose(got.numpy(), want, rtol=1e-5, atol=1e-5,
                                           err_msg=f"{model.name}: dynamic-shape run, {x.shape}")
            if n > 1:
                for alone, want in zip(_outputs(model, x[-1:], training=False), ys, strict=True):
                    np.testing.assert_allclose(alone[0], want[-1], rtol=1e-5, atol=1e-5,
                                               err_msg=f"{model.name}: batch items interact")
    h, w = sizes[-1]
    x = smooth_images(3, h, w, channels, seed)
    predicted = keras.tree.flatten(model.predict(x, batch_size=2, verbose=0))
    for got, want in zip(predicted, _outputs(model, x, training=False), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5,
                                   err_msg=f"{model.name}: predict() differs from a direct call")


def assert_rejects_small_input(model: keras.Model, min_size: int) -> None:
    """A side of ``min_size - 1`` fails with an error stating ``min_size``; ``min_size`` works.

    Eagerly the error is a ``ValueError``; with unknown shapes (a traced
    ``tf.function``) it is an ``InvalidArgumentError`` at run time.
    """
    channels = model.input_shape[-1]
    dynamic = _dynamic(model)
    for h, w in ((min_size - 1, min_size), (min_size, min_size - 1)):
        x = np.zeros((1, h, w, channels), "float32")
        with pytest.raises(ValueError, match=rf"at least {min_size}\b"):
            model(x)
        with pytest.raises(tf.errors.InvalidArgumentError, match=rf"at least {min_size}\b"):
            dynamic(x)
    x = np.zeros((1, min_size, min_size, channels), "float32")
    assert _outputs(model, x)[0].shape == x.shape
    assert dynamic(x)[0].shape == x.shape


def assert_fixed_input_shape(builder: Callable[..., keras.Model], min_size: int,
                             **config) -> None:
    """A model built for a fixed size works at that size; one below ``min_size`` is refused.

    The refusal comes at construction, as a ``ValueError`` stating the minimum.
    """
    model = builder(input_shape=(min_size, min_size + 3, 3), **config)
    assert tuple(model.outputs[0].shape) == (None, min_size, min_size + 3, 3)
    x = smooth_images(2, min_size, min_size + 3)
    assert _outputs(model, x)[0].shape == x.shape
    for shape in ((min_size - 1, 40, 3), (40, min_size - 1, 3)):
        with pytest.raises(ValueError, match=rf"at least {min_size}\b"):
            builder(input_shape=shape, **config)


def assert_rejects_bad_input(model: keras.Model, size: tuple[int, int]) -> None:
    """Wrong rank, wrong channel count, integer dtype, NaN or Inf give a clear error.

    Shape and dtype errors are ``ValueError`` naming the model and its input;
    NaN/Inf are an ``InvalidArgumentError`` (the check runs in the graph),
    eagerly and in a ``tf.function`` with unknown sizes. Never a crash, a
    hang or a silently wrong output.
    """
    channels = model.input_shape[-1]
    h, w = size
    good = smooth_images(1, h, w, channels)
    # Keras's own input check says "Input 0 with name 'blurry' of layer 'svrnn'".
    named = rf"(?s)(?=.*{model.name}\b)(?=.*'{model.inputs[0].name}')"
    bad_shapes = [good[0], good[None], good[..., :1], np.concatenate([good, good[..., :1]], -1)]
    if channels > 1:
        bad_shapes.append(good[..., :channels - 1])
    for x in bad_shapes:
        with pytest.raises(ValueError, match=named):
            model(x)
    with pytest.raises(ValueError, match=r"single image.*x\[None\]"):
        model(good[0])
    for dtype in ("uint8", "int32", "bool"):
        with pytest.raises(ValueError, match=rf"{model.name}.*float.*\[0, 1\].*{dtype}"):
            model(good.astype(dtype))
    dynamic = _dynamic(model)
    for value in (np.nan, np.inf, -np.inf):
        x = good.copy()
        x[0, h // 2, w // 3, channels - 1] = value
        with pytest.raises(tf.errors.InvalidArgumentError, match=rf"{model.name}.*NaN or Inf"):
            model(x)
        with pytest.raises(tf.errors.InvalidArgumentError, match=rf"{model.name}.*NaN or Inf"):
            dynamic(x)


def assert_accepts_out_of_range(model: keras.Model, size: tuple[int, int]) -> np.ndarray:
    """Finite values outside [0, 1] and any float dtype are processed as they are.

    (The documented choice: noise or an exposure change can push an image out
    of [0, 1]; the networks are continuous functions of their input, so
    nothing is clipped or rejected.) Returns the output for ``x * 2 - 0.5``.
    """
    h, w = size
    x = smooth_images(2, h, w, model.input_shape[-1]) * 2.0 - 0.5
    assert x.min() < 0.0 and x.max() > 1.0
    y = _outputs(model, x)[0]
    assert y.shape == x.shape and np.all(np.isfinite(y)), f"{model.name}: out-of-range input"
    # Any float dtype: the model computes in float32 on the values given.
    for dtype in ("float16", "float64"):
        given = x.astype(dtype)
        np.testing.assert_array_equal(_outputs(model, given)[0],
                                      _outputs(model, given.astype("float32"))[0],
                                      err_msg=f"{model.name}: {dtype} input")
    return y


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
    for got, want in zip(_outputs(loaded, x, training=False), _outputs(model, x, training=False),
                         strict=True):
        np.testing.assert_array_equal(got, want,
                                      err_msg=f"{model.name}: outputs differ after save/load")
    assert type(loaded) is type(model)
    return loaded


def assert_fit_lowers_loss(model: keras.Model, x: np.ndarray, y: np.ndarray, steps: int = 6,
                           learning_rate: float = 1e-3, loss: str = "mse",
                           compile: bool = True) -> tuple[float, float]:
    """A few ``model.fit`` steps on one small batch lower the training loss.

    Compiles ``model`` (Adam, ``loss``, Keras's default ``jit_compile``)
    unless ``compile`` is False (then it must be compiled with ``loss``
    already, and a second call with batches of the same shape reuses the
    traced training step), and returns the loss before and after, measured
    with direct calls so that only the training step is traced.
    """
    keras.utils.set_random_seed(0)
    loss_fn = keras.losses.get(loss)
    measure = lambda: float(np.mean(np.asarray(loss_fn(y, model(x, training=False)))))
    if compile:
        model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=loss)
    before = measure()
    history = model.fit(x, y, batch_size=len(x), epochs=steps, shuffle=False, verbose=0)
    after = measure()
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
    for got, want in zip(_outputs(portable, x, training=False),
                         _outputs(compiled, x, training=False), strict=True):
        np.testing.assert_allclose(got, want, rtol=atol, atol=atol,
                                   err_msg="compiled and portable implementations differ")


def assert_xla_policy(builder: Callable[..., keras.Model], uses_compiled_ops: bool,
                      size: tuple[int, int], **config) -> None:
    """Keras may compile the model with XLA exactly when it runs no compiled op.

    On a GPU, ``compile()``'s default ``jit_compile="auto"`` turns XLA on for
    models whose layers all allow it; XLA cannot compile the custom ops, so a
    model running them must refuse it, or ``fit`` fails there. The portable
    model must allow XLA, and give the same output under it.
    """
    from tfdeblur.ops import compiled_available

    portable = builder(implementation="portable", **config)
    portable.compile(loss="mse", jit_compile=True)
    assert portable.jit_compile, f"{portable.name}: the portable model refuses XLA"
    x = smooth_images(1, *size, portable.input_shape[-1])
    xla = tf.function(lambda t: keras.tree.flatten(portable(t, training=False)),
                      jit_compile=True)
    for got, want in zip(xla(x), _outputs(portable, x, training=False), strict=True):
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-4, atol=1e-4,
                                   err_msg=f"{portable.name}: XLA output differs")
    if not compiled_available():
        return
    for impl in ("compiled", "auto"):
        model = builder(implementation=impl, **config)
        if uses_compiled_ops:
            with pytest.warns(UserWarning, match="jit_compile"):
                model.compile(loss="mse", jit_compile=True)
        else:
            model.compile(loss="mse", jit_compile=True)
        assert model.jit_compile is not uses_compiled_ops, (
            f"{model.name} ({impl}): jit_compile={model.jit_compile}")
