"""SVDN model: paper size, reference forward, positions, the shared model checks."""

import collections
import functools
import inspect

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfdeblur.models
from tests.layers import nets_reference as ref
from tests.layers.test_svdn_blocks import dcn_implementations, sublayer_weights
from tests.models import model_checks as mc
from tfdeblur.models.svdn import MIN_SIZE, PAPER_PARAMETERS, svdn, with_positions

TINY = dict(width=2, dilation_rates=(1, 2), kernel_size=3, offset_hidden=2, head_width=2)
# Tests pick an implementation that exists (the compiled deformable op may not be built).
IMPL = dcn_implementations()[-1]


def build(**config):
    return tfdeblur.models.build("svdn", **{"implementation": IMPL, **config})


def tiny(**kw):
    keras.utils.set_random_seed(kw.pop("seed", 0))
    return build(**{**TINY, **kw})


def tiny_positions(**kw):
    return with_positions(tiny(**kw))


def _weights(model):
    return {part: sublayer_weights(model.get_layer(part)) for part in ("backbone", "neck", "head")}


def test_paper_configuration_parameter_count():
    model = build()
    n = mc.assert_param_count(model, PAPER_PARAMETERS)
    assert n == 828_572  # the count stated in the builder's docstring
    assert abs(4 * n / 2**20 - 3.1) / 3.1 < 0.10  # paper Table 1: 3.1 MB
    neck = model.get_layer("neck")
    assert neck.dcn1.kernel.shape == (5, 5, 64, 64) == neck.dcn2.kernel.shape  # 25 points
    assert neck.ow1_conv.kernel.shape[-1] == 3 * 25  # offsets (2 x 25) + masks (25)
    assert model.get_layer("backbone").dilation_rates == (1, 2, 4)
    assert model.get_layer("pad").multiple == 2 and model.get_layer("pad").min_size == MIN_SIZE


@pytest.mark.parametrize("impl", dcn_implementations())
@pytest.mark.parametrize("shape", [(1, 6, 5), (2, 4, 4), (1, 3, 2)])
def test_forward_matches_reference(rng, impl, shape):
    model = tiny_positions(implementation=impl)
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


def test_global_skip_identity_at_zero_head():
    model = tiny()
    head = model.get_layer("head")
    head.reconstruct.set_weights([np.zeros_like(w) for w in head.reconstruct.get_weights()])
    x = mc.smooth_images(2, 9, 7)
    np.testing.assert_array_equal(np.asarray(model(x)), x)
    # Out-of-range values go through unchanged: nothing is clipped.
    np.testing.assert_array_equal(mc.assert_accepts_out_of_range(model, (9, 7)),
                                  mc.smooth_images(2, 9, 7) * 2.0 - 0.5)


@pytest.mark.parametrize("return_positions", [False, True])
def test_identity_init_returns_the_input_exactly(return_positions):
    """identity_init: the head's last conv starts at zero, so input + residual = input."""
    x = mc.smooth_images(2, 37, 50)
    model = tiny(identity_init=True)
    if return_positions:
        model = with_positions(model)
    out = model(x)
    image = out[0] if return_positions else out
    np.testing.assert_array_equal(np.asarray(image), x)
    head = model.get_layer("head")
    assert head.zero_init and not np.any(head.reconstruct.kernel.numpy())
    assert not np.any(head.reconstruct.bias.numpy())
    # The rest is initialised as without the switch; only that conv differs.
    assert np.abs(head.upsample.kernel.numpy()).max() > 0
    plain = np.asarray(tiny()(x))
    assert np.abs(plain - x).max() > 1e-3
    # Trained from there: the zero conv gets a gradient, the output moves.
    with tf.GradientTape() as tape:
        image = model(x)[0] if return_positions else model(x)
        value = tf.reduce_mean(tf.square(image - 0.5))
    grad = tape.gradient(value, head.reconstruct.kernel)
    assert np.abs(grad.numpy()).max() > 0


def test_identity_init_is_a_builder_argument_that_serialises(tmp_path):
    assert "identity_init" in inspect.signature(svdn).parameters
    model = tiny(identity_init=True)
    loaded = mc.assert_save_load_identical(model, mc.smooth_images(1, 9, 8), tmp_path)
    assert loaded.get_layer("head").zero_init
    assert not tiny().get_layer("head").zero_init


def test_inference_model_has_one_output():
    model = tiny()
    assert len(model.outputs) == 1
    assert model(mc.smooth_images(2, 10, 9)).shape == (2, 10, 9, 3)
    assert "return_positions" not in inspect.signature(svdn).parameters


def test_positions_come_from_the_same_forward_pass():
    plain = tiny()
    both = with_positions(plain)
    # The training model shares the inference model's layers and variables.
    assert [v.path for v in both.variables] == [v.path for v in plain.variables]
    assert all(a is b for a, b in zip(both.variables, plain.variables, strict=True))
    x = mc.smooth_images(2, 10, 9)
    sharp, pos = both(x)
    np.testing.assert_array_equal(np.asarray(sharp), np.asarray(plain(x)))
    assert len(both.outputs) == 2 and pos.shape == (2, 5, 5, 9, 2)
    assert both.output_names == ["sharp", "positions"]
    # A loss on the positions reaches the offset branch (position loss training).
    with tf.GradientTape() as tape:
        _, pos = both(x, training=True)
        loss = tf.reduce_mean(tf.square(pos))
    neck = both.get_layer("neck")
    grads = tape.gradient(loss, [neck.ow1_conv.kernel, neck.dcn1.kernel])
    assert np.abs(np.asarray(grads[0])).sum() > 0
    assert grads[1] is None or not np.asarray(grads[1]).any()


def _op_counts(model) -> collections.Counter:
    """Op types in the graph of one forward pass, nested functions included."""
    fn = tf.function(lambda t: model(t, training=False))
    graph_def = fn.get_concrete_function(tf.TensorSpec([1, 12, 10, 3])).graph.as_graph_def()
    nodes = list(graph_def.node)
    for function in graph_def.library.function:
        nodes.extend(function.node_def)
    return collections.Counter(node.op for node in nodes)


@pytest.mark.parametrize("impl", dcn_implementations())
def test_positions_add_no_second_forward_pass(impl):
    plain = _op_counts(tiny(implementation=impl))
    both = _op_counts(tiny_positions(implementation=impl))
    heavy = [op for op in plain if "Conv" in op or op.startswith("TfDeblur") or
             op in ("MatMul", "BatchMatMulV2", "GatherV2", "GatherNd")]
    assert "Conv2D" in heavy
    # Backbone, offset convs, both DCNs and head appear once in either graph.
    assert {op: both[op] for op in heavy} == {op: plain[op] for op in heavy}


def test_any_input_size_and_batch():
    # 2 is the minimum; 3 is one over it; odd, tall and wide sides; with the positions.
    mc.assert_any_input_size(tiny_positions(), [(2, 2), (3, 5), (17, 10), (8, 33)])


def test_rejects_too_small_input():
    assert MIN_SIZE == 2
    mc.assert_rejects_small_input(tiny(), MIN_SIZE)
    mc.assert_rejects_small_input(tiny_positions(), MIN_SIZE)


def test_fixed_input_shape():
    mc.assert_fixed_input_shape(build, MIN_SIZE, **TINY)
    mc.assert_fixed_input_shape(lambda **kw: with_positions(build(**kw)), MIN_SIZE, **TINY)


def test_rejects_bad_input():
    mc.assert_rejects_bad_input(tiny_positions(), (6, 7))


def test_other_channel_counts():
    model = tiny(input_shape=(None, None, 1))
    assert model(np.zeros((2, 5, 4, 1), "float32")).shape == (2, 5, 4, 1)


@pytest.mark.parametrize("return_positions", [False, True])
def test_save_load_identical(tmp_path, return_positions):
    model = tiny()
    loaded = mc.assert_save_load_identical(model, mc.smooth_images(2, 7, 10), tmp_path)
    if return_positions:
        # The training model of a loaded SVDN gives the same positions.
        x = mc.smooth_images(2, 7, 10)
        np.testing.assert_allclose(np.asarray(with_positions(loaded)(x)[1]),
                                   np.asarray(with_positions(model)(x)[1]), atol=1e-6)


def test_with_positions_rejects_other_models():
    from tfdeblur.models.lmfn import lmfn

    with pytest.raises(ValueError, match="with_positions: model must be an SVDN"):
        with_positions(lmfn(width=4, num_blocks=1))


def test_fit_lowers_loss():
    blurry, sharp = mc.blur_pairs(4, 12, 12)
    # With the global skip the residual starts near 0, so the loss starts at the
    # blur's small error; a brightness shift gives the few steps something to
    # learn clearly.
    blurry += 0.05
    before, after = mc.assert_fit_lowers_loss(tiny(seed=1, width=4), blurry, sharp,
                                              learning_rate=3e-3)
    assert after < 0.9 * before, (before, after)


def test_compiled_and_portable_agree():
    if "compiled" not in dcn_implementations():
        pytest.skip("compiled deformable-convolution op not in the loaded library")
    mc.assert_implementations_agree(
        lambda **kw: with_positions(tfdeblur.models.build("svdn", **kw)),
        mc.smooth_images(2, 14, 11), atol=1e-4, **TINY)


def test_xla_only_without_compiled_ops():
    mc.assert_xla_policy(functools.partial(tfdeblur.models.build, "svdn"), True, (10, 9),
                         **TINY)
