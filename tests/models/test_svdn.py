"""SVDN model: paper size, reference forward, positions, any size, Keras behaviour."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfdeblur.models
from tests.layers import nets_reference as ref
from tests.layers.test_svdn_blocks import dcn_implementations, sublayer_weights
from tfdeblur.models.svdn import MIN_SIZE

TINY = dict(width=2, dilation_rates=(1, 2), kernel_size=3, offset_hidden=2, head_width=2)
# Tests pick an implementation that exists (the compiled deformable op may not be built).
IMPL = dcn_implementations()[-1]


def tiny(**kw):
    keras.utils.set_random_seed(kw.pop("seed", 0))
    return tfdeblur.models.build("svdn", **{**TINY, "implementation": IMPL, **kw})


def _weights(model):
    return {part: sublayer_weights(model.get_layer(part)) for part in ("backbone", "neck", "head")}


def test_registry_builds_svdn():
    assert "svdn" in tfdeblur.models.available()
    model = tiny(name="small_svdn")
    assert isinstance(model, keras.Model) and model.name == "small_svdn"


def test_paper_configuration_parameter_count():
    model = tfdeblur.models.build("svdn", implementation=IMPL)
    n = model.count_params()
    assert abs(n - 0.8e6) / 0.8e6 < 0.10, n
    assert abs(4 * n / 2**20 - 3.1) / 3.1 < 0.10  # paper Table 1: 3.1 MB
    neck = model.get_layer("neck")
    assert neck.dcn1.kernel.shape == (5, 5, 64, 64) == neck.dcn2.kernel.shape  # 25 points
    assert neck.ow1_conv.kernel.shape[-1] == 3 * 25  # offsets (2 x 25) + masks (25)


@pytest.mark.parametrize("impl", dcn_implementations())
@pytest.mark.parametrize("shape", [(1, 6, 5), (2, 4, 4), (1, 3, 2)])
def test_forward_matches_reference(rng, impl, shape):
    model = tiny(implementation=impl, return_positions=True)
    for v in model.weights:
        v.assign(rng.normal(0, 0.4, v.shape).astype("float32"))
    image = rng.uniform(0, 1, (*shape, 3)).astype("float32")
    got, pos = (np.asarray(t) for t in model(image))
    want, want_pos = ref.svdn(image, _weights(model), width=2, rates=(1, 2), taps=9)
    n, h, w = shape
    assert got.shape == image.shape
    assert pos.shape == want_pos.shape == (n, -(-h // 2), -(-w // 2), 9, 2)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(pos, want_pos, rtol=1e-4, atol=1e-4)


def test_global_skip_identity_at_zero_head(rng):
    model = tiny()
    head = model.get_layer("head")
    head.reconstruct.set_weights([np.zeros_like(w) for w in head.reconstruct.get_weights()])
    x = rng.uniform(0, 1, (2, 9, 7, 3)).astype("float32")
    np.testing.assert_array_equal(np.asarray(model(x)), x)


def test_positions_come_from_the_same_forward_pass(rng):
    plain = tiny()
    both = tiny(return_positions=True, seed=3)
    both.set_weights(plain.get_weights())
    x = rng.uniform(0, 1, (2, 10, 9, 3)).astype("float32")
    sharp, pos = both(x)
    np.testing.assert_array_equal(np.asarray(sharp), np.asarray(plain(x)))
    assert len(both.outputs) == 2 and pos.shape == (2, 5, 5, 9, 2)
    # A loss on the positions reaches the offset branch (position loss training).
    with tf.GradientTape() as tape:
        _, pos = both(x, training=True)
        loss = tf.reduce_mean(tf.square(pos))
    neck = both.get_layer("neck")
    grads = tape.gradient(loss, [neck.ow1_conv.kernel, neck.dcn1.kernel])
    assert np.abs(np.asarray(grads[0])).sum() > 0
    assert grads[1] is None or not np.asarray(grads[1]).any()


@pytest.mark.parametrize("h,w", [(2, 2), (3, 5), (17, 10), (8, 33)])
def test_any_size_gives_input_shape(rng, h, w):
    model = tiny(return_positions=True)
    x = rng.uniform(0, 1, (1, h, w, 3)).astype("float32")
    sharp, pos = model(x)
    assert sharp.shape == (1, h, w, 3) and pos.shape == (1, -(-h // 2), -(-w // 2), 9, 2)


@pytest.mark.parametrize("n", [0, 1, 3])
def test_any_batch_size(rng, n):
    model = tiny(return_positions=True)
    x = rng.uniform(0, 1, (n, 6, 7, 3)).astype("float32")
    sharp, pos = (np.asarray(t) for t in model(x))
    assert sharp.shape == (n, 6, 7, 3) and pos.shape == (n, 3, 4, 9, 2)
    if n > 1:
        np.testing.assert_allclose(sharp[2], np.asarray(model(x[2:3])[0])[0],
                                   rtol=1e-5, atol=1e-6)


def test_too_small_is_a_clear_error():
    model = tiny()
    with pytest.raises(ValueError, match=f"at least {MIN_SIZE} pixels"):
        model(np.zeros((1, 1, 20, 3), "float32"))
    fn = tf.function(model, input_signature=[tf.TensorSpec([None, None, None, 3])])
    with pytest.raises(tf.errors.InvalidArgumentError, match=f"at least {MIN_SIZE} pixels"):
        fn(tf.zeros([1, 9, 1, 3]))


def test_bad_arguments():
    with pytest.raises(ValueError, match="width"):
        tfdeblur.models.build("svdn", width=0)
    with pytest.raises(ValueError, match="input_shape"):
        tfdeblur.models.build("svdn", input_shape=(None, None, 4))
    with pytest.raises(ValueError, match="implementation"):
        tfdeblur.models.build("svdn", implementation="cuda")


@pytest.mark.parametrize("return_positions", [False, True])
def test_save_load_roundtrip_is_exact(rng, tmp_path, return_positions):
    model = tiny(return_positions=return_positions)
    x = rng.uniform(0, 1, (2, 7, 10, 3)).astype("float32")
    path = str(tmp_path / "svdn.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    want, got = model(x), loaded(x)
    if not return_positions:
        want, got = [want], [got]
    for a, b in zip(want, got, strict=True):
        np.testing.assert_array_equal(np.asarray(b), np.asarray(a))


def test_fit_lowers_loss(rng):
    model = tiny(seed=1, width=4)
    sharp = rng.uniform(0, 1, (4, 12, 12, 3)).astype("float32")
    sharp = np.asarray(tf.image.resize(tf.image.resize(sharp, (4, 4)), (12, 12)))
    blurry = np.asarray(tf.nn.avg_pool2d(np.pad(sharp, [(0, 0), (1, 1), (1, 1), (0, 0)],
                                                mode="reflect"), 3, 1, "VALID")) + 0.05
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="mse", jit_compile=False)
    before = model.evaluate(blurry, sharp, verbose=0)
    model.fit(blurry, sharp, batch_size=4, epochs=8, verbose=0)
    after = model.evaluate(blurry, sharp, verbose=0)
    assert after < 0.7 * before, (before, after)


def test_compiled_and_portable_agree(rng):
    if "compiled" not in dcn_implementations():
        pytest.skip("compiled deformable-convolution op not in the loaded library")
    compiled = tiny(implementation="compiled", return_positions=True)
    portable = tiny(implementation="portable", return_positions=True, seed=4)
    portable.set_weights(compiled.get_weights())
    x = rng.uniform(0, 1, (2, 14, 11, 3)).astype("float32")
    for a, b in zip(compiled(x), portable(x), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5)
