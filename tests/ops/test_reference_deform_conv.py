"""The float64 NumPy deformable-convolution reference checks itself (no TensorFlow).

Its hand-derived backward against central differences of its forward, so the
GPU checks (tests/gpu), which compare kernels with it on hosts without
TensorFlow, rest on a reference that was itself verified.
"""

import numpy as np
import pytest

from tests.ops.reference_deform_conv import (
    axis_geometry,
    random_case,
    ref_deform_conv,
    ref_deform_conv_backward,
)

NAMES = ("x", "offset", "mask", "kernel", "bias")


def _numerical_gradients(case, dy, geo, use_bias, eps=1e-6):
    """d sum(y * dy) / d input by central differences, input by input, element by element."""
    def loss(c):
        y = ref_deform_conv(c["x"], c["offset"], c["mask"], c["kernel"],
                            c["bias"] if use_bias else None, **geo)
        return float(np.sum(y * dy))

    grads = []
    for name in NAMES:
        g = np.zeros_like(case[name])
        for idx in np.ndindex(*case[name].shape):
            c = {k: v.copy() for k, v in case.items()}
            c[name][idx] += eps
            up = loss(c)
            c[name][idx] -= 2 * eps
            g[idx] = (up - loss(c)) / (2 * eps)
        grads.append(g)
    return grads


@pytest.mark.parametrize("which,use_bias", [("odd", True), ("odd", False), ("same", True)])
def test_reference_backward_matches_finite_differences(which, use_bias):
    rng = np.random.default_rng(20)
    if which == "odd":  # kernel (3, 2), stride (2, 1), pad (1, 0), dilation (2, 1), groups 2, G 3
        geo = dict(strides=(2, 1), padding=((1, 1), (0, 0)), dilation=(2, 1), groups=2,
                   dgroups=3)
        ksize, shape = (3, 2), dict(n=1, h=5, w=3, cin=6, cout=2)
    else:
        geo = dict(strides=(1, 1), padding="same", dilation=(1, 1), groups=1, dgroups=2)
        ksize, shape = (2, 2), dict(n=2, h=2, w=3, cin=2, cout=2)
    # Off the bilinear kinks (integer positions), where the one-sided
    # derivatives differ and central differences average them.
    case = random_case(rng, ksize=ksize, away_from_integers=True, **shape, **geo)
    y = ref_deform_conv(case["x"], case["offset"], case["mask"], case["kernel"],
                        case["bias"] if use_bias else None, **geo)
    dy = rng.normal(size=y.shape)
    got = ref_deform_conv_backward(case["x"], case["offset"], case["mask"], case["kernel"], dy,
                                   use_bias, **geo)
    want = _numerical_gradients(case, dy, geo, use_bias)
    for name, a, b in zip(NAMES, got, want, strict=True):
        if name == "bias" and not use_bias:
            assert a is None
            assert not np.any(b)
            continue
        assert a.shape == case[name].shape, name
        assert np.abs(b).max() > 0, name
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7, err_msg=f"gradient of {name}")


@pytest.mark.parametrize("py,want", [
    # py: value, d/dpy, d/dpx, sum of dx (the corner weights that lie inside)
    (-0.25, (1.5, 2.0, 0.75, 0.75)),  # row -1 is padding: row 0 alone, weight 0.75
    (0.0, (2.0, 3.0, 1.0, 1.0)),      # on a pixel: the slopes of the cell below/right
    (1.0, (5.0, -5.0, 1.0, 1.0)),     # last row: the cell below is padding
    (1.5, (2.5, -5.0, 0.5, 0.5)),     # half-way into the padding row
    (-1.0, (0.0, 0.0, 0.0, 0.0)),     # py <= -1: zero, with zero gradient
    (-3.0, (0.0, 0.0, 0.0, 0.0)),
    (2.0, (0.0, 0.0, 0.0, 0.0)),      # py >= H
])
def test_reference_on_and_beyond_the_border(py, want):
    """Hand-computed samples of x = [[1, 2, 3], [4, 5, 6]] at (py, 1): the corner rule."""
    x = np.arange(1.0, 7.0).reshape(1, 2, 3, 1)
    kernel, mask, dy = np.ones((1, 1, 1, 1)), np.ones((1, 1, 1, 1)), np.ones((1, 1, 1, 1))
    offset = np.array([py, 1.0]).reshape(1, 1, 1, 2)
    # 1x1 kernel, 'valid', strides (2, 3): one output pixel, sampling at offset itself.
    geo = dict(padding="valid", strides=(2, 3))
    assert axis_geometry(2, 1, 2, 1, "valid") == (1, 0)
    y = ref_deform_conv(x, offset, mask, kernel, **geo)
    dx, doffset, dmask, dkernel, dbias = ref_deform_conv_backward(x, offset, mask, kernel, dy,
                                                                  False, **geo)
    value, dpy, dpx, dx_sum = want
    assert dbias is None
    np.testing.assert_allclose(y.ravel(), [value], rtol=1e-15)
    np.testing.assert_allclose(dmask.ravel(), [value], rtol=1e-15)
    np.testing.assert_allclose(dkernel.ravel(), [value], rtol=1e-15)
    np.testing.assert_allclose(doffset.ravel(), [dpy, dpx], rtol=1e-15, atol=1e-15)
    np.testing.assert_allclose(dx.sum(), dx_sum, rtol=1e-15)
