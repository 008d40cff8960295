"""Modulated deformable convolution: compiled and portable vs a float64 NumPy reference."""

import os

import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import implementations
from tests.ops.reference_deform_conv import (
    axis_geometry,
    random_case,
    ref_deform_conv,
    ref_deform_conv_backward,
)
from tfdeblur.ops import compiled_available, modulated_deform_conv2d
from tfdeblur.ops.deform_conv import deform_conv_sampling_positions

IMPLS = implementations()
needs_compiled = pytest.mark.skipif(not compiled_available(), reason="compiled library not built")


def op_padding(padding):
    """The reference's ((t, b), (l, r)) form in the op's argument form."""
    return padding if isinstance(padding, str) else tuple(tuple(p) for p in padding)


# The odd geometry: kernel (3, 2), stride (2, 1), padding (1, 0),
# dilation (2, 1), groups 2, deformable groups 3.
ODD = dict(ksize=(3, 2), strides=(2, 1), padding=((1, 1), (0, 0)), dilation=(2, 1), groups=2,
           dgroups=3)


@pytest.fixture
def dcn_limits(monkeypatch):
    """Sets the compiled kernels' scratch limits (``TFDEBLUR_DCN_*``).

    A kernel reads them once, when TensorFlow constructs it, and eager mode
    keeps kernels in a cache: the cache is emptied after setting the limits
    and again after the test, so that later tests get kernels with the
    defaults.
    """
    from tensorflow.python.eager import context

    def set_limits(tile_elements: int, scratch_bytes: int, ranges: int) -> None:
        monkeypatch.setenv("TFDEBLUR_DCN_TILE_ELEMENTS", str(tile_elements))
        monkeypatch.setenv("TFDEBLUR_DCN_SCRATCH_BYTES", str(scratch_bytes))
        monkeypatch.setenv("TFDEBLUR_DCN_RANGES", str(ranges))
        context.context().clear_kernel_cache()

    yield set_limits
    monkeypatch.undo()
    context.context().clear_kernel_cache()


@pytest.fixture
def small_tiles(dcn_limits):
    """Tiny tiles and gradient queues in the compiled CPU kernel: many tiles,
    ranges and rounds, as large images take."""
    dcn_limits(tile_elements=40, scratch_bytes=3000, ranges=5)


def run(case, impl, strides=(1, 1), padding="same", dilation=(1, 1), groups=1, dgroups=1,
        use_bias=True):
    return modulated_deform_conv2d(
        case["x"], case["offset"], case["mask"], case["kernel"],
        bias=case["bias"] if use_bias else None, strides=strides, padding=op_padding(padding),
        dilation_rate=dilation, groups=groups, deformable_groups=dgroups,
        implementation=impl).numpy()


def ref(case, strides=(1, 1), padding="same", dilation=(1, 1), groups=1, dgroups=1,
        use_bias=True):
    return ref_deform_conv(case["x"], case["offset"], case["mask"], case["kernel"],
                           case["bias"] if use_bias else None, strides, padding, dilation,
                           groups, dgroups)


# ----------------------------------------------------------------------------
# Forward
# ----------------------------------------------------------------------------

@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("ksize,strides,padding,dilation", [
    ((3, 3), (1, 1), "same", (1, 1)),
    ((3, 2), (2, 1), "same", (1, 1)),
    ((2, 2), (1, 1), "same", (1, 1)),       # even kernel: odd padding pixel at the bottom
    ((5, 3), (1, 1), "valid", (1, 2)),
    ((3, 3), (2, 2), ((1, 1), (1, 1)), (1, 1)),
    ((1, 4), (3, 2), "valid", (1, 1)),
])
def test_zero_offsets_unit_mask_equal_conv2d(impl, ksize, strides, padding, dilation):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 9, 11, 4))
    kernel = rng.normal(size=(*ksize, 4, 5))
    tf_pad = padding.upper() if isinstance(padding, str) else [[0, 0], *padding, [0, 0]]
    expected = tf.nn.conv2d(x, kernel, strides=strides, padding=tf_pad, dilations=dilation)
    n, ho, wo, _ = expected.shape
    taps = ksize[0] * ksize[1]
    y = modulated_deform_conv2d(x, np.zeros((n, ho, wo, 2 * taps)), np.ones((n, ho, wo, taps)),
                                kernel, strides=strides, padding=op_padding(padding),
                                dilation_rate=dilation, implementation=impl)
    assert y.shape == expected.shape and y.dtype == tf.float64
    np.testing.assert_allclose(y.numpy(), expected.numpy(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("use_bias", [True, False])
def test_matches_reference_on_odd_geometry(impl, use_bias, small_tiles):
    rng = np.random.default_rng(1)
    case = random_case(rng, n=3, h=9, w=5, cin=6, cout=4, ksize=ODD["ksize"],
                       strides=ODD["strides"], padding=ODD["padding"], dilation=ODD["dilation"],
                       groups=2, dgroups=3, spread=3.0)
    geo = dict(strides=ODD["strides"], padding=ODD["padding"], dilation=ODD["dilation"],
               groups=2, dgroups=3, use_bias=use_bias)
    y = run(case, impl, **geo)
    assert y.shape == (3, 4, 4, 4)
    np.testing.assert_allclose(y, ref(case, **geo), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("geo", [
    dict(ksize=(3, 3), padding="same", groups=1, dgroups=2),
    dict(ksize=(2, 3), padding="valid", groups=3, dgroups=1, dilation=(1, 2)),
    dict(ksize=(4, 4), padding="same", strides=(2, 3), groups=1, dgroups=6),
    dict(ksize=(1, 1), padding="same", groups=6, dgroups=3),
])
def test_matches_reference_more_geometries(impl, geo, small_tiles):
    rng = np.random.default_rng(2)
    args = dict(strides=geo.get("strides", (1, 1)), padding=geo["padding"],
                dilation=geo.get("dilation", (1, 1)), groups=geo["groups"],
                dgroups=geo["dgroups"])
    case = random_case(rng, n=2, h=8, w=7, cin=6, cout=6, ksize=geo["ksize"], **args)
    np.testing.assert_allclose(run(case, impl, **args), ref(case, **args), rtol=1e-10,
                               atol=1e-10)


@pytest.mark.parametrize("impl", IMPLS)
def test_batch_zero_and_one(impl):
    rng = np.random.default_rng(3)
    for n in (0, 1):
        case = random_case(rng, n=n, **ODD)
        geo = dict(strides=ODD["strides"], padding=ODD["padding"], dilation=ODD["dilation"],
                   groups=2, dgroups=3)
        y = run(case, impl, **geo)
        assert y.shape == (n, 3, 5, 4)
        np.testing.assert_allclose(y, ref(case, **geo), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("impl", IMPLS)
def test_integer_offsets_equal_shifted_convolution(impl):
    rng = np.random.default_rng(4)
    x = rng.normal(size=(2, 8, 9, 3))
    kernel = rng.normal(size=(3, 3, 3, 5))
    dy, dx = 2, -1
    # Every tap reads x[r + dy, c + dx] (r, c its grid position, padding
    # included), i.e. a 'valid' conv of x shifted by (dy, dx), zeros moving in.
    big = np.pad(x, [(0, 0), (4, 4), (4, 4), (0, 0)])
    window = big[:, 4 - 1 + dy:4 - 1 + dy + 8 + 2, 4 - 1 + dx:4 - 1 + dx + 9 + 2, :]
    expected = tf.nn.conv2d(window, kernel, 1, "VALID").numpy()
    offset = np.tile(np.array([dy, dx], np.float64), (2, 8, 9, 9))
    y = modulated_deform_conv2d(x, offset, np.ones((2, 8, 9, 9)), kernel, implementation=impl)
    np.testing.assert_allclose(y.numpy(), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("impl", IMPLS)
def test_samples_on_and_beyond_borders(impl):
    """Positions exactly on pixels and borders, just inside/outside, far away, 1-pixel images."""
    h, w = 4, 4
    rng = np.random.default_rng(5)
    x = rng.normal(size=(1, h, w, 2))
    kernel = rng.normal(size=(1, 1, 2, 3))
    # 1x1 kernel, 'valid': position = (i, j) + offset, so each output pixel
    # samples one chosen position.
    targets = [(0.0, 0.0), (h - 1.0, w - 1.0), (-1.0, 0.0), (0.0, -1.0), (h, 0.0), (0.0, w),
               (-0.5, 1.0), (1.0, -0.25), (h - 0.5, 2.0), (1.0, w - 0.01), (-1.0001, 1.0),
               (1e7, 2.0), (-1e7, -1e7), (1.5, 2.5), (h - 1.0, 0.5), (-0.999, w - 1.001)]
    grid = np.stack(np.meshgrid(np.arange(h), np.arange(w), indexing="ij"), -1).reshape(-1, 2)
    offset = (np.array(targets) - grid).reshape(1, h, w, 2)
    mask = np.ones((1, h, w, 1))
    y = modulated_deform_conv2d(x, offset, mask, kernel, padding="valid", implementation=impl)
    expected = ref_deform_conv(x, offset, mask, kernel, padding="valid")
    np.testing.assert_allclose(y.numpy(), expected, rtol=1e-12, atol=1e-12)
    outside = [t for t, (py, px) in enumerate(targets) if not (-1 < py < h and -1 < px < w)]
    assert len(outside) == 7
    assert not np.any(y.numpy().reshape(h * w, 3)[outside])

    # 1-pixel images, 3x3 kernel, offsets across the single pixel.
    rng = np.random.default_rng(6)
    for shape in [(2, 1, 1, 3), (1, 1, 5, 3), (1, 4, 1, 3)]:
        case = random_case(rng, n=shape[0], h=shape[1], w=shape[2], cin=3, cout=2,
                           spread=1.5)
        np.testing.assert_allclose(run(case, impl), ref(case), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("impl", IMPLS)
def test_mask_none_means_ones(impl):
    rng = np.random.default_rng(7)
    case = random_case(rng)
    case["mask"] = np.ones_like(case["mask"])
    y = modulated_deform_conv2d(case["x"], case["offset"], None, case["kernel"], case["bias"],
                                implementation=impl)
    np.testing.assert_allclose(y.numpy(), ref(case), rtol=1e-10, atol=1e-10)


def test_float32_compiled_matches_portable(small_tiles):
    if "compiled" not in IMPLS:
        pytest.skip("compiled library not built")
    rng = np.random.default_rng(8)
    case = {k: v.astype(np.float32) for k, v in random_case(
        rng, n=2, h=11, w=13, cin=8, cout=6, ksize=(3, 3), groups=2, dgroups=2).items()}
    a = run(case, "compiled", groups=2, dgroups=2)
    b = run(case, "portable", groups=2, dgroups=2)
    assert a.dtype == np.float32
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------
# Gradients
# ----------------------------------------------------------------------------

def _grad_fn(impl, geo, use_bias=True):
    def f(x, offset, mask, kernel, bias):
        return modulated_deform_conv2d(
            x, offset, mask, kernel, bias if use_bias else None, strides=geo["strides"],
            padding=op_padding(geo["padding"]), dilation_rate=geo["dilation"],
            groups=geo["groups"], deformable_groups=geo["dgroups"], implementation=impl)
    return f


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("which", ["odd", "plain"])
def test_gradients_numerical_float64(impl, which, small_tiles):
    rng = np.random.default_rng(9)
    if which == "odd":
        geo = dict(strides=ODD["strides"], padding=ODD["padding"], dilation=ODD["dilation"],
                   groups=2, dgroups=3)
        case = random_case(rng, n=2, h=7, w=4, cin=6, cout=4, ksize=ODD["ksize"],
                           away_from_integers=True, **{k: v for k, v in geo.items()})
    else:
        geo = dict(strides=(1, 1), padding="same", dilation=(1, 1), groups=1, dgroups=1)
        case = random_case(rng, n=1, h=4, w=5, cin=2, cout=3, ksize=(3, 3),
                           away_from_integers=True)
    inputs = [tf.constant(case[k]) for k in ("x", "offset", "mask", "kernel", "bias")]
    # Traced once: compute_gradient calls it twice per input element.
    theoretical, numerical = tf.test.compute_gradient(tf.function(_grad_fn(impl, geo)), inputs)
    names = ("x", "offset", "mask", "kernel", "bias")
    for name, t, n in zip(names, theoretical, numerical, strict=True):
        assert np.abs(t).max() > 0, name
        np.testing.assert_allclose(t, n, rtol=1e-6, atol=1e-6, err_msg=f"gradient of {name}")


def _all_grads(impl, case, geo, use_bias=True):
    inputs = [tf.constant(case[k]) for k in ("x", "offset", "mask", "kernel", "bias")]
    upstream = tf.constant(np.random.default_rng(10).normal(size=run(
        case, "portable", **geo, use_bias=use_bias).shape), inputs[0].dtype)
    with tf.GradientTape() as tape:
        tape.watch(inputs)
        y = _grad_fn(impl, geo, use_bias)(*inputs)
        loss = tf.reduce_sum(y * upstream)
    return tape.gradient(loss, inputs)


@needs_compiled
@pytest.mark.parametrize("use_bias", [True, False])
def test_compiled_gradients_match_portable(use_bias, small_tiles):
    rng = np.random.default_rng(11)
    geo = dict(strides=ODD["strides"], padding=ODD["padding"], dilation=ODD["dilation"],
               groups=2, dgroups=3)
    case = random_case(rng, n=3, h=9, w=5, cin=6, cout=4, ksize=ODD["ksize"], spread=3.0, **geo)
    got = _all_grads("compiled", case, geo, use_bias)
    want = _all_grads("portable", case, geo, use_bias)
    for name, a, b in zip(("x", "offset", "mask", "kernel", "bias"), got, want, strict=True):
        if not use_bias and name == "bias":
            assert a is None and b is None
            continue
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-9, atol=1e-9, err_msg=name)


@pytest.mark.parametrize("impl", IMPLS)
def test_gradients_batch_zero(impl):
    rng = np.random.default_rng(12)
    geo = dict(strides=(1, 1), padding="same", dilation=(1, 1), groups=1, dgroups=1)
    case = random_case(rng, n=0, h=4, w=5, cin=2, cout=3)
    grads = _all_grads(impl, case, geo)
    for name, g in zip(("x", "offset", "mask", "kernel", "bias"), grads, strict=True):
        assert g.shape == case[name].shape, name
        assert not np.any(g.numpy()), name


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("which,use_bias", [("odd", True), ("odd", False), ("valid", True),
                                            ("one_pixel", False)])
def test_reference_backward_matches_op_gradients(impl, which, use_bias, small_tiles):
    """The NumPy reference backward (what tests/gpu checks the CUDA kernels with) equals
    the op's registered gradients, samples beyond the borders included."""
    rng = np.random.default_rng(18)
    if which == "odd":
        geo = dict(strides=ODD["strides"], padding=ODD["padding"], dilation=ODD["dilation"],
                   groups=2, dgroups=3)
        case = random_case(rng, n=2, h=9, w=5, cin=6, cout=4, ksize=ODD["ksize"], spread=3.0,
                           **geo)
    elif which == "valid":
        geo = dict(strides=(1, 2), padding="valid", dilation=(1, 2), groups=3, dgroups=1)
        case = random_case(rng, n=1, h=5, w=8, cin=3, cout=6, ksize=(2, 3), spread=2.0, **geo)
    else:
        geo = dict(strides=(1, 1), padding="same", dilation=(1, 1), groups=1, dgroups=2)
        case = random_case(rng, n=1, h=1, w=1, cin=4, cout=3, ksize=(3, 3), spread=1.5, **geo)
    inputs = [tf.constant(case[k]) for k in ("x", "offset", "mask", "kernel", "bias")]
    dy = rng.normal(size=ref(case, **geo, use_bias=use_bias).shape)
    with tf.GradientTape() as tape:
        tape.watch(inputs)
        loss = tf.reduce_sum(_grad_fn(impl, geo, use_bias)(*inputs) * dy)
    got = tape.gradient(loss, inputs)
    want = ref_deform_conv_backward(case["x"], case["offset"], case["mask"], case["kernel"], dy,
                                    use_bias, geo["strides"], geo["padding"], geo["dilation"],
                                    geo["groups"], geo["dgroups"])
    for name, a, b in zip(("x", "offset", "mask", "kernel", "bias"), got, want, strict=True):
        if name == "bias" and not use_bias:
            assert a is None and b is None
            continue
        assert np.abs(b).max() > 0, name
        np.testing.assert_allclose(a.numpy(), b, rtol=1e-9, atol=1e-9, err_msg=name)


@pytest.mark.parametrize("impl", IMPLS)
def test_offset_gradient_at_exactly_minus_one(impl):
    """Zero offsets (the layer's initial state) with a 3x3 'same' kernel put the top row
    and left column taps of the border pixels exactly at -1."""
    rng = np.random.default_rng(19)
    case = random_case(rng, n=1, h=4, w=5, cin=2, cout=3)
    case["offset"] = np.zeros_like(case["offset"])
    geo = dict(strides=(1, 1), padding="same", dilation=(1, 1), groups=1, dgroups=1)
    inputs = [tf.constant(case[k]) for k in ("x", "offset", "mask", "kernel", "bias")]
    dy = rng.normal(size=(1, 4, 5, 3))
    with tf.GradientTape() as tape:
        tape.watch(inputs)
        loss = tf.reduce_sum(_grad_fn(impl, geo)(*inputs) * dy)
    doffset = tape.gradient(loss, inputs[1]).numpy()
    want = ref_deform_conv_backward(case["x"], case["offset"], case["mask"], case["kernel"],
                                    dy)[1]
    np.testing.assert_allclose(doffset, want, rtol=1e-12, atol=1e-12)


@needs_compiled
@pytest.mark.parametrize("ranges", [1, 3, 7])
def test_compiled_backward_with_many_ranges(ranges, dcn_limits):
    """Input-gradient corners in other ranges' bands (queued, added after each round)."""
    dcn_limits(tile_elements=200, scratch_bytes=20000, ranges=ranges)
    rng = np.random.default_rng(16)
    geo = dict(strides=(1, 2), padding="same", dilation=(2, 1), groups=1, dgroups=2)
    case = random_case(rng, n=2, h=13, w=9, cin=4, cout=3, ksize=(3, 3), spread=6.0, **geo)
    got = _all_grads("compiled", case, geo)
    want = _all_grads("portable", case, geo)
    for name, a, b in zip(("x", "offset", "mask", "kernel", "bias"), got, want, strict=True):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-9, atol=1e-9, err_msg=name)


@needs_compiled
def test_compiled_is_deterministic():
    rng = np.random.default_rng(13)
    case = {k: v.astype(np.float32) for k, v in random_case(
        rng, n=3, h=20, w=24, cin=16, cout=16, ksize=(3, 3), dgroups=2, spread=4.0).items()}
    geo = dict(strides=(1, 1), padding="same", dilation=(1, 1), groups=1, dgroups=2)
    first = _all_grads("compiled", case, geo)
    for _ in range(2):
        again = _all_grads("compiled", case, geo)
        for a, b in zip(first, again, strict=True):
            np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_default_scratch_limits_on_a_larger_image():
    """Several default-size tiles, and the chunked backward, against the portable twin."""
    if "compiled" not in IMPLS:
        pytest.skip("compiled library not built")
    assert "TFDEBLUR_DCN_TILE_ELEMENTS" not in os.environ
    rng = np.random.default_rng(14)
    case = {k: v.astype(np.float32) for k, v in random_case(
        rng, n=2, h=24, w=40, cin=32, cout=8, ksize=(3, 3), spread=3.0).items()}
    geo = dict(strides=(1, 1), padding="same", dilation=(1, 1), groups=1, dgroups=1)
    np.testing.assert_allclose(run(case, "compiled"), run(case, "portable"), rtol=1e-4,
                               atol=1e-4)
    for a, b in zip(_all_grads("compiled", case, geo), _all_grads("portable", case, geo),
                    strict=True):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=2e-4, atol=2e-3)


# ----------------------------------------------------------------------------
# Sampling positions
# ----------------------------------------------------------------------------

def test_sampling_positions_are_grid_plus_offset():
    rng = np.random.default_rng(15)
    kh, kw, sh, sw, dh, dw, g = 3, 2, 2, 1, 2, 1, 3
    h, w = 9, 5
    ho, pt = axis_geometry(h, kh, sh, dh, (1, 1))
    wo, pl = axis_geometry(w, kw, sw, dw, (0, 0))
    offset = rng.normal(size=(2, ho, wo, 2 * g * kh * kw))
    pos = deform_conv_sampling_positions(offset, (h, w), (kh, kw), strides=(sh, sw),
                                         padding=(1, 0), dilation_rate=(dh, dw),
                                         deformable_groups=g).numpy()
    assert pos.shape == (2, ho, wo, g * kh * kw, 2)
    for i, j, s in [(0, 0, 0), (3, 3, 7), (3, 2, 17), (1, 1, 11)]:
        ky, kx = divmod(s % (kh * kw), kw)
        want = (i * sh - pt + ky * dh + offset[1, i, j, 2 * s],
                j * sw - pl + kx * dw + offset[1, i, j, 2 * s + 1])
        np.testing.assert_allclose(pos[1, i, j, s], want, rtol=1e-12)


# ----------------------------------------------------------------------------
# Bad inputs
# ----------------------------------------------------------------------------

def _good(n=1, h=6, w=6, cin=4, cout=4, k=3, dg=1, groups=1):
    return dict(x=np.zeros((n, h, w, cin), np.float32),
                offset=np.zeros((n, h, w, 2 * dg * k * k), np.float32),
                mask=np.zeros((n, h, w, dg * k * k), np.float32),
                kernel=np.zeros((k, k, cin // groups, cout), np.float32))


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("change,kwargs,word", [
    (dict(offset=np.zeros((1, 6, 6, 17), np.float32)), {}, "offset"),
    (dict(mask=np.zeros((1, 6, 6, 8), np.float32)), {}, "mask"),
    (dict(offset=np.zeros((1, 6, 6, 18), np.float32)), dict(deformable_groups=2), "offset"),
    (dict(offset=np.zeros((1, 5, 6, 18), np.float32)), {}, "offset"),
    (dict(mask=np.zeros((1, 6, 7, 9), np.float32)), {}, "mask"),
    (dict(offset=np.zeros((2, 6, 6, 18), np.float32)), {}, "offset"),
    ({}, dict(groups=3), "groups"),
    ({}, dict(deformable_groups=3), "deformable_groups"),
    (dict(kernel=np.zeros((3, 3, 3, 4), np.float32)), {}, "kernel"),
    ({}, dict(padding="full"), "padding"),
    ({}, dict(padding=(-1, 0)), "padding"),
    ({}, dict(padding=(1, 2, 3)), "padding"),
    ({}, dict(strides=0), "strides"),
    ({}, dict(dilation_rate=(1, 0)), "dilation_rate"),
    (dict(x=np.zeros((1, 6, 6), np.float32)), {}, "x"),
    (dict(mask=np.zeros((1, 6, 6, 9), np.float64)), {}, "mask"),
    ({}, dict(bias=np.zeros(3, np.float32)), "bias"),
])
def test_bad_inputs_raise_value_error_naming_argument(impl, change, kwargs, word):
    args = {**_good(), **change}
    kwargs = {"implementation": impl, **kwargs}
    with pytest.raises(ValueError, match=word):
        modulated_deform_conv2d(args["x"], args["offset"], args["mask"], args["kernel"],
                                **kwargs)


def test_unknown_implementation():
    a = _good()
    with pytest.raises(ValueError, match="implementation"):
        modulated_deform_conv2d(a["x"], a["offset"], a["mask"], a["kernel"],
                                implementation="fast")


def test_too_small_input_for_valid_padding():
    args = _good(h=2, w=6)
    args["offset"] = np.zeros((1, 1, 4, 18), np.float32)
    args["mask"] = np.zeros((1, 1, 4, 9), np.float32)
    with pytest.raises(ValueError, match="height"):
        modulated_deform_conv2d(args["x"], args["offset"], args["mask"], args["kernel"],
                                padding="valid")


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("change,word", [
    (dict(offset=np.zeros((1, 5, 6, 18), np.float32)), "offset"),
    (dict(mask=np.zeros((1, 6, 5, 9), np.float32)), "mask"),
    (dict(x=np.zeros((1, 6, 6, 5), np.float32)), "Cin|channels|kernel"),
])
def test_runtime_shape_errors_name_argument(impl, change, word):
    """Shapes unknown at trace time: the kernel (or the portable checks) reject them."""
    args = {**_good(), **change}
    spec = tf.TensorSpec([None, None, None, None], tf.float32)

    @tf.function(input_signature=[spec, spec, spec])
    def f(x, offset, mask):
        return modulated_deform_conv2d(x, offset, mask, args["kernel"], implementation=impl)

    with pytest.raises(tf.errors.InvalidArgumentError, match=word):
        f(args["x"], args["offset"], args["mask"])


@needs_compiled
def test_raw_op_rejects_bad_attributes_and_shapes():
    from tfdeblur.ops._loader import load_library

    lib = load_library()
    a = _good()
    base = dict(x=a["x"], offset=a["offset"], mask=a["mask"], kernel=a["kernel"],
                bias=np.zeros([0], np.float32))
    with pytest.raises((tf.errors.InvalidArgumentError, ValueError), match="explicit_paddings"):
        lib.tf_deblur_modulated_deform_conv2d(**base, padding="EXPLICIT",
                                              explicit_paddings=[1, 1])
    with pytest.raises((tf.errors.InvalidArgumentError, ValueError), match="strides"):
        lib.tf_deblur_modulated_deform_conv2d(**base, strides=[1, 1, 1])
    with pytest.raises((tf.errors.InvalidArgumentError, ValueError), match="bias"):
        lib.tf_deblur_modulated_deform_conv2d(**{**base, "bias": np.zeros([3], np.float32)})
    with pytest.raises((tf.errors.InvalidArgumentError, ValueError), match="dy"):
        lib.tf_deblur_modulated_deform_conv2d_grad(**base, dy=np.zeros((1, 6, 5, 4), np.float32))
    with pytest.raises((tf.errors.InvalidArgumentError, ValueError), match="x"):
        lib.tf_deblur_modulated_deform_conv2d(**{**base, "x": np.zeros((1, 0, 6, 4), np.float32)})


@pytest.mark.parametrize("dtype", [np.float16, "bfloat16"])
@pytest.mark.parametrize("implementation", ["auto", "compiled"])
def test_half_precision_runs_on_cpu(dtype, implementation):
    """Half-precision kernels exist on GPU only: on CPU the compiled op runs in float32 and
    the result (and its gradients) come back in the input's dtype (mixed precision)."""
    if tf.config.list_physical_devices("GPU"):
        pytest.skip("a GPU is present")
    if implementation == "compiled" and "compiled" not in implementations():
        pytest.skip("compiled library unavailable")
    rng = np.random.default_rng(17)
    case = random_case(rng, n=1, h=6, w=7, cin=4, cout=3)
    args = [tf.cast(case[k], dtype) for k in ("x", "offset", "mask", "kernel", "bias")]
    with tf.GradientTape() as tape:
        tape.watch(args)
        y = modulated_deform_conv2d(*args, implementation=implementation)
        total = tf.reduce_sum(tf.cast(y, tf.float32))
    assert y.dtype == args[0].dtype
    tol = 0.02 if dtype is np.float16 else 0.1
    np.testing.assert_allclose(tf.cast(y, tf.float64).numpy(), ref(case), rtol=tol, atol=5 * tol)
    grads = tape.gradient(total, args)
    assert all(g is not None and g.dtype == a.dtype for g, a in zip(grads, args, strict=True))


# ----------------------------------------------------------------------------
# One output-size rule (C++ deform_conv_shape.h, Python _output_size_and_pad)
# ----------------------------------------------------------------------------

def _axis_cases():
    """(size, kernel, stride, dilation, padding) along one axis, padding as the reference's."""
    for size in (0, 1, 2, 3, 5, 8):
        for k in (1, 2, 3, 5):
            for stride in (1, 2, 3):
                for dilation in (1, 2):
                    for padding in ("same", "valid", (0, 0), (1, 0), (2, 3)):
                        yield size, k, stride, dilation, padding


def _attrs(pad_h, pad_w):
    """The op's padding attributes for per-axis paddings (both strings or both pairs)."""
    if isinstance(pad_h, str):
        return pad_h.upper(), []
    return "EXPLICIT", [*pad_h, *pad_w]


@needs_compiled
def test_output_size_one_rule_in_python_shape_function_and_kernel():
    """Python's rule, the C++ shape function and the C++ kernel agree on every output size,
    padding and error (an empty input or an empty output), and equal tf.nn.conv2d's."""
    from tfdeblur.ops._loader import load_library
    from tfdeblur.ops.deform_conv import _Geometry

    lib = load_library()
    rows = list(_axis_cases())
    # Pair every height case with a width case of the same padding kind.
    cols = {kind: [c for c in rows if isinstance(c[4], str) == kind] for kind in (True, False)}
    checked = errors = 0
    for i, (h, kh, sh, dh, pad_h) in enumerate(rows):
        candidates = cols[isinstance(pad_h, str)]
        w, kw, sw, dw, pad_w = candidates[(7 * i + 3) % len(candidates)]
        if isinstance(pad_h, str):
            pad_w = pad_h
        mode, explicit = _attrs(pad_h, pad_w)
        op_padding_arg = pad_h if isinstance(pad_h, str) else (tuple(pad_h), tuple(pad_w))
        geo = _Geometry((kh, kw, 1, 1), (sh, sw), op_padding_arg, (dh, dw), 1, 1)
        want = [axis_geometry(h, kh, sh, dh, pad_h), axis_geometry(w, kw, sw, dw, pad_w)]
        ok = h > 0 and w > 0 and want[0][0] >= 1 and want[1][0] >= 1
        attrs = dict(strides=[sh, sw], dilations=[dh, dw], padding=mode,
                     explicit_paddings=explicit)
        # An axis that is fine gets its true size: the first error is about the other.
        ho, wo = (out if size > 0 and out >= 1 else 1
                  for size, (out, _) in zip((h, w), want, strict=True))
        taps = kh * kw
        args = dict(x=np.zeros((1, h, w, 1), np.float32),
                    offset=np.zeros((1, ho, wo, 2 * taps), np.float32),
                    mask=np.ones((1, ho, wo, taps), np.float32),
                    kernel=np.ones((kh, kw, 1, 1), np.float32), bias=np.zeros([0], np.float32))
        if h > 0 and w > 0:
            assert [geo.rows(h), geo.cols(w)] == want, (h, w, attrs)
        if not ok:
            errors += 1
            with pytest.raises(tf.errors.InvalidArgumentError, match="non-empty|too small"):
                lib.tf_deblur_modulated_deform_conv2d(**args, **attrs)  # eager: the kernel
            with tf.Graph().as_default():  # graph construction: the shape function
                with pytest.raises(ValueError, match="non-empty|too small"):
                    lib.tf_deblur_modulated_deform_conv2d(**args, **attrs)
            with pytest.raises(ValueError, match="non-empty|too small"):
                modulated_deform_conv2d(args["x"], args["offset"], args["mask"],
                                        args["kernel"], strides=(sh, sw),
                                        padding=op_padding_arg, dilation_rate=(dh, dw))
            continue
        checked += 1
        y = lib.tf_deblur_modulated_deform_conv2d(**args, **attrs)
        assert y.shape == (1, ho, wo, 1), (h, w, attrs)
        with tf.Graph().as_default():
            inferred = lib.tf_deblur_modulated_deform_conv2d(**args, **attrs)
            assert inferred.shape.as_list() == [1, ho, wo, 1], (h, w, attrs)
        tf_pad = mode if mode != "EXPLICIT" else [[0, 0], list(pad_h), list(pad_w), [0, 0]]
        conv = tf.nn.conv2d(args["x"], args["kernel"], strides=(sh, sw), padding=tf_pad,
                            dilations=(dh, dw))
        assert conv.shape == y.shape, (h, w, attrs)
        # Zero offsets and a mask of ones: the same numbers as conv2d, so the
        # padding before (top / left) agrees too.
        x = np.arange(h * w, dtype=np.float32).reshape(1, h, w, 1) + 1
        kernel = np.arange(taps, dtype=np.float32).reshape(kh, kw, 1, 1) + 1
        y = lib.tf_deblur_modulated_deform_conv2d(**{**args, "x": x, "kernel": kernel}, **attrs)
        if dh == 1 and dw == 1 or sh == 1 and sw == 1:  # conv2d: dilations need strides 1
            conv = tf.nn.conv2d(x, kernel, strides=(sh, sw), padding=tf_pad, dilations=(dh, dw))
            np.testing.assert_allclose(y.numpy(), conv.numpy(), rtol=1e-6, err_msg=str(attrs))
    assert checked > 100 and errors > 20


@needs_compiled
def test_scratch_limits_are_read_when_the_kernel_is_made(dcn_limits, monkeypatch):
    """TFDEBLUR_DCN_* take effect for kernels made after they are set, and a kernel
    keeps the limits it was made with (the environment is not read on every call)."""
    rng = np.random.default_rng(20)
    case = {k: v.astype(np.float32) for k, v in random_case(
        rng, n=2, h=24, w=9, cin=4, cout=3, ksize=(3, 3), spread=2.0).items()}
    geo = dict(strides=(1, 1), padding="same", dilation=(1, 1), groups=1, dgroups=1)

    def dkernel():
        return _all_grads("compiled", case, geo)[3].numpy()

    dcn_limits(tile_elements=40, scratch_bytes=100000, ranges=1)
    one = dkernel()
    dcn_limits(tile_elements=40, scratch_bytes=100000, ranges=6)
    six = dkernel()
    np.testing.assert_allclose(one, six, rtol=1e-5, atol=1e-5)
    # Six ranges sum the kernel gradient in another order than one range.
    assert not np.array_equal(one, six)
    monkeypatch.setenv("TFDEBLUR_DCN_RANGES", "1")  # no new kernel: still six ranges
    np.testing.assert_array_equal(dkernel(), six)


@pytest.mark.parametrize("op", ["deform_conv", "gated_recurrence"])
@needs_compiled
def test_gradient_ops_are_not_differentiable(op):
    """The gradient ops are registered with tf.no_gradient: a second derivative through
    the compiled op is None (TensorFlow's answer for a non-differentiable op), not a
    LookupError from the gradient registry."""
    from tfdeblur.ops import gated_recurrence

    rng = np.random.default_rng(21)
    if op == "deform_conv":
        case = random_case(rng, n=1, h=4, w=5, cin=2, cout=2)
        x = tf.constant(case["x"])

        def f(x):
            return modulated_deform_conv2d(x, case["offset"], case["mask"], case["kernel"],
                                           implementation="compiled")
    else:
        x = tf.constant(rng.normal(size=(1, 3, 4, 2)))
        gate = tf.constant(rng.uniform(-0.9, 0.9, size=(1, 3, 4, 2)))

        def f(x):
            return gated_recurrence(x, gate, "left_to_right", implementation="compiled")

    with tf.GradientTape() as outer:
        outer.watch(x)
        with tf.GradientTape() as inner:
            inner.watch(x)
            y = tf.reduce_sum(f(x) ** 2)
        dx = inner.gradient(y, x)  # computed by the gradient op
        assert np.abs(dx.numpy()).max() > 0
        total = tf.reduce_sum(dx)
    assert outer.gradient(total, x) is None


@pytest.mark.parametrize("tiles", ["unrolled", "loop", "loop_dynamic"])
def test_portable_tiles_match_reference(tiles, monkeypatch):
    """The portable convolution cut into one-row tiles: unrolled (static size), in a while
    loop (many tiles or a size known at run time, last tile padded): outputs and gradients
    equal the float64 reference on the odd geometry."""
    from tfdeblur.ops import deform_conv

    monkeypatch.setattr(deform_conv, "_TILE_BYTES", 1)  # one output row per tile
    if tiles != "unrolled":
        monkeypatch.setattr(deform_conv, "_MAX_UNROLLED_TILES", 1)
    rng = np.random.default_rng(22)
    geo = dict(strides=ODD["strides"], padding=ODD["padding"], dilation=ODD["dilation"],
               groups=2, dgroups=3)
    case = random_case(rng, n=2, h=11, w=5, cin=6, cout=4, ksize=ODD["ksize"], spread=3.0,
                       **geo)
    inputs = [tf.constant(case[k]) for k in ("x", "offset", "mask", "kernel", "bias")]
    fn = _grad_fn("portable", geo)
    if tiles == "loop_dynamic":
        spec = tf.TensorSpec([None, None, None, None], tf.float64)
        fn = tf.function(fn, input_signature=[spec, spec, spec,
                                              tf.TensorSpec(case["kernel"].shape, tf.float64),
                                              tf.TensorSpec([4], tf.float64)])
    dy = rng.normal(size=ref(case, **geo).shape)
    with tf.GradientTape() as tape:
        tape.watch(inputs)
        y = fn(*inputs)
        loss = tf.reduce_sum(y * dy)
    grads = tape.gradient(loss, inputs)
    np.testing.assert_allclose(y.numpy(), ref(case, **geo), rtol=1e-10, atol=1e-10)
    want = ref_deform_conv_backward(case["x"], case["offset"], case["mask"], case["kernel"], dy,
                                    strides=geo["strides"], padding=geo["padding"],
                                    dilation=geo["dilation"], groups=2, dgroups=3)
    for name, got, exp in zip(("x", "offset", "mask", "kernel", "bias"), grads, want,
                              strict=True):
        np.testing.assert_allclose(got.numpy(), exp, rtol=1e-9, atol=1e-9, err_msg=name)


# ----------------------------------------------------------------------------
# The portable float32 sampler: crop_and_resize, or gathers under builtin_sampling
# ----------------------------------------------------------------------------

def _graph_op_types(concrete) -> set:
    graph = concrete.graph.as_graph_def()
    ops = {node.op for node in graph.node}
    for fn in graph.library.function:
        ops |= {node.op for node in fn.node_def}
    return ops


def _float32(case):
    return {k: v.astype(np.float32) for k, v in case.items()}


@pytest.mark.parametrize("tiles", ["unrolled", "loop_dynamic"])
@pytest.mark.parametrize("n,h,w,which", [
    (2, 11, 5, "odd"), (1, 15, 16, "plain"), (1, 1, 1, "plain"), (3, 3, 2, "odd"),
    (0, 4, 6, "plain")])
def test_float32_sampler_matches_reference_and_gathers(tiles, n, h, w, which, monkeypatch):
    """float32 samples with crop_and_resize (sides 2^k - 1, 2^k, 1 pixel, batch 0 and 1,
    one-row tiles in a while loop at unknown sizes); under builtin_sampling with gathers
    only; both equal the float64 reference within float32 round-off."""
    from tfdeblur.ops import deform_conv

    monkeypatch.setattr(deform_conv, "_TILE_BYTES", 1)  # one output row per tile
    if tiles != "unrolled":
        monkeypatch.setattr(deform_conv, "_MAX_UNROLLED_TILES", 1)
    geo = (dict(strides=ODD["strides"], padding=ODD["padding"], dilation=ODD["dilation"],
                groups=2, dgroups=3) if which == "odd" else
           dict(strides=(1, 1), padding="same", dilation=(1, 1), groups=1, dgroups=1))
    ksize = ODD["ksize"] if which == "odd" else (3, 3)
    case = random_case(np.random.default_rng(23), n=n, h=h, w=w, cin=6, cout=4, ksize=ksize,
                       spread=3.0, **geo)
    inputs = [tf.constant(v) for v in _float32(case).values()]
    spec = (tf.TensorSpec([None, None, None, None], tf.float32) if tiles == "loop_dynamic"
            else None)
    fn = _grad_fn("portable", geo)

    def traced(builtin):
        def f(*args):
            if builtin:
                with deform_conv.builtin_sampling():
                    return fn(*args)
            return fn(*args)
        sig = None if spec is None else [spec, spec, spec, tf.TensorSpec(case["kernel"].shape),
                                         tf.TensorSpec([4])]
        return tf.function(f, input_signature=sig).get_concrete_function(
            *(inputs if sig is None else sig))

    fast, gathers = traced(False), traced(True)
    assert "CropAndResize" in _graph_op_types(fast)
    assert "CropAndResize" not in _graph_op_types(gathers)
    want = ref(case, **geo)
    scale = max(1.0, np.abs(want).max()) if want.size else 1.0
    for got in (fast(*inputs), gathers(*inputs)):
        assert got.dtype == tf.float32 and got.shape == want.shape
        np.testing.assert_allclose(got.numpy(), want, rtol=0, atol=2e-6 * scale)


def test_float32_sampler_gradients_at_whole_pixels():
    """crop_and_resize's own position gradient is 0 at whole-pixel positions (zero
    offsets, where training starts); the portable op's is the contract's there too."""
    rng = np.random.default_rng(24)
    geo = dict(strides=(1, 1), padding="same", dilation=(1, 1), groups=1, dgroups=1)
    case = random_case(rng, n=1, h=6, w=7, cin=3, cout=2, ksize=(3, 3), **geo)
    case["offset"] = np.round(case["offset"]) * (rng.uniform(size=case["offset"].shape) < 0.5)
    case32 = _float32(case)
    inputs = [tf.constant(v) for v in case32.values()]
    dy = rng.normal(size=ref(case, **geo).shape).astype(np.float32)
    with tf.GradientTape() as tape:
        tape.watch(inputs)
        loss = tf.reduce_sum(_grad_fn("portable", geo)(*inputs) * dy)
    grads = tape.gradient(loss, inputs)
    want = ref_deform_conv_backward(*(case32[k].astype(np.float64) for k in
                                      ("x", "offset", "mask", "kernel")), dy.astype(np.float64),
                                    strides=(1, 1), padding="same", dilation=(1, 1))
    assert np.abs(want[1]).max() > 0.1
    for name, got, exp in zip(("x", "offset", "mask", "kernel", "bias"), grads, want,
                              strict=True):
        np.testing.assert_allclose(got.numpy(), exp, rtol=1e-5, atol=1e-4, err_msg=name)


@pytest.mark.parametrize("where", ["x_inf", "x_nan", "mask_inf"])
def test_float32_sampler_non_finite_inputs_take_the_gathers(where):
    """With an infinity or NaN in x or the mask the float32 result is the gathers'
    bit for bit (crop_and_resize's a + (b - a) t would turn inf into NaN)."""
    from tfdeblur.ops import deform_conv

    geo = dict(strides=(1, 1), padding="same", dilation=(1, 1), groups=1, dgroups=1)
    case = _float32(random_case(np.random.default_rng(25), n=1, h=5, w=6, cin=3, cout=2,
                                ksize=(3, 3), **geo))
    case["offset"][...] = 0.0   # whole pixels: weight-0 corners meet the infinity
    if where == "mask_inf":
        case["mask"][0, 2, 3, 4] = np.inf
    else:
        case["x"][0, 2, 3, 1] = np.inf if where == "x_inf" else np.nan
    fast = run(case, "portable")
    with deform_conv.builtin_sampling():
        gathers = run(case, "portable")
    assert not np.isfinite(fast).all()
    np.testing.assert_array_equal(fast, gathers)


def test_float32_portable_compiles_with_xla():
    """XLA has no CropAndResize kernel: under jit_compile the portable op samples with
    the gathers (Keras's jit_compile="auto" picks XLA for portable layers on GPUs)."""
    geo = dict(strides=(1, 1), padding="same", dilation=(1, 1), groups=1, dgroups=1)
    case = _float32(random_case(np.random.default_rng(26), n=1, h=5, w=6, cin=3, cout=2,
                                ksize=(3, 3), **geo))
    inputs = [tf.constant(v) for v in case.values()]
    xla = tf.function(_grad_fn("portable", geo), jit_compile=True)
    np.testing.assert_allclose(xla(*inputs).numpy(), ref(case, **geo), rtol=0, atol=1e-5)
