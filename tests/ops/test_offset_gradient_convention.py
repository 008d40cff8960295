"""The offset gradient of a sample exactly on -1 (or exactly on H / W) is 0 (docs/ops.md section 2).

The output is continuous there (the inside corner's bilinear weight is 0) but
not differentiable: the derivative from outside the image is 0, the one from
inside is the inside corners' difference. Ours (the compiled kernel, the
portable implementation and the NumPy reference) and mmcv take the sample as
outside, so its offset gradient is 0; torchvision's backward takes the inside
derivative at -1. A 3x3 "same" kernel with zero offsets (the layer's initial
state) puts the top taps of the first row exactly on py = -1 and the bottom
taps of the last row exactly on py = H.
"""

import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import implementations
from tests.ops.reference_deform_conv import random_case, ref_deform_conv_backward
from tfdeblur.ops import modulated_deform_conv2d

H, W, KW = 4, 5, 3


def _case(axis: int):
    """float64 inputs; offsets 0 along ``axis`` (0: dy, 1: dx), 0.3 along the other."""
    rng = np.random.default_rng(23)
    case = random_case(rng, n=1, h=H, w=W, cin=2, cout=3)
    case["offset"] = np.zeros_like(case["offset"])
    case["offset"][..., 1 - axis::2] = 0.3       # the other coordinate off the integers
    case["mask"] = rng.uniform(0.5, 1.0, case["mask"].shape)
    case["dy"] = rng.normal(size=(1, H, W, 3))
    return case


def _edge_channels(axis: int):
    """(index of a doffset entry at -1, index of one at H or W), for the taps of one row/column."""
    size = H if axis == 0 else W
    at_minus_one, at_size = [], []
    for k in range(9):
        ky, kx = divmod(k, KW)
        tap = ky if axis == 0 else kx
        first = (0, 0, slice(None)) if axis == 0 else (0, slice(None), 0)
        last = (0, size - 1, slice(None)) if axis == 0 else (0, slice(None), size - 1)
        if tap == 0:                                 # position = 0 - 1 + 0 = -1
            at_minus_one.append((*first, 2 * k + axis))
        if tap == 2:                                 # position = size - 1 - 1 + 2 = size
            at_size.append((*last, 2 * k + axis))
    return at_minus_one, at_size


def _inside_derivative(case, axis: int):
    """doffset with the samples on -1 moved just inside: the derivative from inside.

    The derivative of a bilinear sample along one axis does not depend on where
    between two grid lines the sample lies, so 1e-9 inside gives it exactly.
    """
    moved = dict(case)
    moved["offset"] = case["offset"].copy()
    for index in _edge_channels(axis)[0]:
        moved["offset"][index] += 1e-9
    return ref_deform_conv_backward(moved["x"], moved["offset"], moved["mask"],
                                    moved["kernel"], case["dy"])[1]


def _our_doffset(impl: str, case) -> np.ndarray:
    offset = tf.constant(case["offset"])
    with tf.GradientTape() as tape:
        tape.watch(offset)
        y = modulated_deform_conv2d(case["x"], offset, case["mask"], case["kernel"],
                                    case["bias"], implementation=impl)
    return tape.gradient(y, offset, output_gradients=tf.constant(case["dy"])).numpy()


@pytest.mark.parametrize("axis", [0, 1], ids=["py", "px"])
@pytest.mark.parametrize("impl", implementations())
def test_offset_gradient_on_minus_one_and_on_the_far_border_is_zero(impl, axis):
    case = _case(axis)
    got = _our_doffset(impl, case)
    want = ref_deform_conv_backward(case["x"], case["offset"], case["mask"], case["kernel"],
                                    case["dy"])[1]
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    at_minus_one, at_size = _edge_channels(axis)
    inside = _inside_derivative(case, axis)
    for index in at_minus_one:
        assert np.all(got[index] == 0.0)
        # What the other convention gives here is far from 0, so this test can tell.
        assert np.abs(inside[index]).max() > 1e-2
    for index in at_size:
        assert np.all(got[index] == 0.0)
    # Everywhere else our value is the inside derivative the moved samples give.
    rest = np.ones(got.shape, bool)
    for index in at_minus_one:
        rest[index] = False
    np.testing.assert_allclose(got[rest], inside[rest], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("axis", [0, 1], ids=["py", "px"])
def test_torchvision_takes_the_inside_derivative_on_minus_one(axis):
    torch = pytest.importorskip("torch")
    tv_ops = pytest.importorskip("torchvision.ops")
    case = _case(axis)

    def nchw(a, perm=(0, 3, 1, 2)):
        return torch.from_numpy(np.ascontiguousarray(np.transpose(a, perm)))

    offset = nchw(case["offset"]).requires_grad_(True)
    y = tv_ops.deform_conv2d(nchw(case["x"]), offset, nchw(case["kernel"], (3, 2, 0, 1)),
                             torch.from_numpy(case["bias"]), padding=(1, 1),
                             mask=nchw(case["mask"]))
    (doffset,) = torch.autograd.grad(y, offset, nchw(case["dy"]))
    theirs = doffset.numpy().transpose(0, 2, 3, 1)
    ours = ref_deform_conv_backward(case["x"], case["offset"], case["mask"], case["kernel"],
                                    case["dy"])[1]
    inside = _inside_derivative(case, axis)
    at_minus_one, at_size = _edge_channels(axis)
    for index in at_minus_one:
        np.testing.assert_allclose(theirs[index], inside[index], rtol=1e-9, atol=1e-12)
        assert np.abs(theirs[index]).max() > 1e-2 and np.all(ours[index] == 0.0)
    for index in at_size:  # on H (or W) torchvision gives 0 too
        np.testing.assert_array_equal(theirs[index], 0.0)
    rest = np.ones(ours.shape, bool)
    for index in at_minus_one:
        rest[index] = False
    np.testing.assert_allclose(theirs[rest], ours[rest], rtol=1e-9, atol=1e-12)
