"""Deformable-convolution cases of the GPU checks, and how to compare with the reference.

TF-free (tests/gpu/test_cuda_kernels.py runs them on GPU hosts without
TensorFlow); tests/gpu/test_dcn_cases_on_cpu.py runs the same cases through
the compiled CPU op where TensorFlow is installed, so the geometry values and
tolerances are known to be right before a GPU sees them.
"""

import ctypes

import numpy as np

from tests.gpu.standalone_abi import DCN_GEOMETRY
from tests.ops.reference_deform_conv import (
    axis_geometry,
    random_case,
    ref_deform_conv,
    ref_deform_conv_backward,
)

DCN_NAMES = ("x", "offset", "mask", "kernel", "bias")
# Kernel (3, 2), stride (2, 1), padding (1, 0), dilation (2, 1), groups 2,
# deformable groups 3 (the op tests' odd geometry).
ODD = dict(strides=(2, 1), padding=((1, 1), (0, 0)), dilation=(2, 1), groups=2, dgroups=3)
DCN_CASES = {
    "odd_batch1": (dict(n=1, h=9, w=5, cin=6, cout=4, ksize=(3, 2), spread=3.0), ODD),
    "odd_batch2": (dict(n=2, h=9, w=5, cin=6, cout=4, ksize=(3, 2), spread=3.0), ODD),
    # Several GEMM tiles in every product (312 pixels, Cout 70, KH*KW*Cin 72)
    # and several blocks of the bias reduction.
    "tiles": (dict(n=2, h=12, w=13, cin=8, cout=70, ksize=(3, 3), spread=4.0),
              dict(strides=(1, 1), padding="same", dilation=(1, 1), groups=1, dgroups=2)),
    # 66 channels per offset group: each lane of the sample warp loops over
    # channels, two lanes once more than the others.
    "wide_group": (dict(n=1, h=5, w=4, cin=66, cout=5, ksize=(2, 2), spread=2.0),
                   dict(strides=(1, 1), padding="same", dilation=(1, 1), groups=1, dgroups=1)),
    # 1-pixel image: every tap but the centre samples the zero padding.
    "one_pixel": (dict(n=2, h=1, w=1, cin=4, cout=3, ksize=(3, 3), spread=1.5),
                  dict(strides=(1, 1), padding="same", dilation=(1, 1), groups=1, dgroups=2)),
    "valid_grouped": (dict(n=1, h=6, w=9, cin=6, cout=6, ksize=(2, 3), spread=2.5),
                      dict(strides=(1, 2), padding="valid", dilation=(1, 2), groups=3,
                           dgroups=2)),
    # Offsets rounded to integers: samples exactly on pixels, on the last row and
    # column, exactly at -1 and at H / W (outside, zero gradient).
    "integer_offsets": (dict(n=2, h=5, w=4, cin=4, cout=6, ksize=(3, 3), spread=3.0),
                        dict(strides=(1, 1), padding="same", dilation=(1, 1), groups=2,
                             dgroups=2)),
}
# float32 in, float32 accumulation; float16 in/out, float32 accumulation.
# Tolerances relative to the largest magnitude of each reference tensor.
# float32 positions are rounded to float in the kernels (~1e-6 here), which
# moves values by about that much; real indexing errors are O(1).
DCN_DTYPES = [(np.float32, 1e-4), (np.float16, 1e-2)]


def dcn_geometry(x_shape, kernel_shape, geo):
    """The entry points' 17 int64 geometry values (padding resolved) and the output shape."""
    n, h, w, cin = x_shape
    kh, kw, _, cout = kernel_shape
    pads = (geo["padding"],) * 2 if isinstance(geo["padding"], str) else geo["padding"]
    ho, pad_top = axis_geometry(h, kh, geo["strides"][0], geo["dilation"][0], pads[0])
    wo, pad_left = axis_geometry(w, kw, geo["strides"][1], geo["dilation"][1], pads[1])
    values = dict(n=n, h=h, w=w, cin=cin, ho=ho, wo=wo, cout=cout, kh=kh, kw=kw,
                  sh=geo["strides"][0], sw=geo["strides"][1], dh=geo["dilation"][0],
                  dw=geo["dilation"][1], pad_top=pad_top, pad_left=pad_left,
                  groups=geo["groups"], dgroups=geo["dgroups"])
    return (ctypes.c_int64 * len(DCN_GEOMETRY))(*(values[k] for k in DCN_GEOMETRY)), (
        n, ho, wo, cout)


def reference_dcn(case, dy, geo, use_bias):
    """Float64 reference on the inputs as the kernels see them (already cast)."""
    args = (geo["strides"], geo["padding"], geo["dilation"], geo["groups"], geo["dgroups"])
    y = ref_deform_conv(case["x"], case["offset"], case["mask"], case["kernel"],
                        case["bias"] if use_bias else None, *args)
    grads = ref_deform_conv_backward(case["x"], case["offset"], case["mask"], case["kernel"],
                                     dy, use_bias, *args)
    return y, grads


def assert_close_scaled(got, want, tol, name):
    """|got - want| <= tol * (|want| + max(1, max |want|)): relative to the tensor's scale."""
    got = np.asarray(got, np.float64)
    assert got.shape == want.shape, (name, got.shape, want.shape)
    scale = max(1.0, float(np.abs(want).max(initial=0.0)))
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol * scale, err_msg=name)


def same_cells_in_float(case, geo):
    """Whether the kernels' float positions fall in the same bilinear cells (and the same
    inside/outside class) as the reference's exact ones. Near a cell boundary a rounding
    would flip the one-sided offset gradient by O(1): the seeds are chosen to avoid that."""
    n, h, w, _ = case["x"].shape
    kh, kw, _, _ = case["kernel"].shape
    geometry, (_, ho, wo, _) = dcn_geometry(case["x"].shape, case["kernel"].shape, geo)
    v = dict(zip(DCN_GEOMETRY, geometry, strict=True))
    k = np.arange(kh * kw)
    off = case["offset"].reshape(n, ho, wo, geo["dgroups"], kh * kw, 2)
    for axis, size, grid, tap, pad, stride, dil in (
            (0, h, np.arange(ho)[:, None], k // kw, v["pad_top"], v["sh"], v["dh"]),
            (1, w, np.arange(wo)[None, :], k % kw, v["pad_left"], v["sw"], v["dw"])):
        base = (grid[..., None] * stride - pad + tap * dil)[None, :, :, None, :]
        exact = base + off[..., axis]
        with np.errstate(invalid="ignore"):
            in32 = np.float32(base) + off[..., axis].astype(np.float32)
            cell32 = np.trunc(in32 + np.float32(1)).astype(np.int64) - 1
        inside = (exact > -1) & (exact < size)
        if np.any(inside != ((in32 > -1) & (in32 < size))):
            return False
        if np.any(np.where(inside, cell32 != np.floor(exact), False)):
            return False
    return True


def dcn_case(name, dtype, seed=0):
    shape, geo = DCN_CASES[name]
    # The entry points check nothing (the TensorFlow op does): keep the cases valid.
    assert shape["cin"] % geo["groups"] == 0 and shape["cout"] % geo["groups"] == 0, name
    assert shape["cin"] % geo["dgroups"] == 0, name
    case = random_case(np.random.default_rng(seed), **shape, **geo)
    if name == "integer_offsets":
        case["offset"] = np.round(case["offset"])
    # The reference sees exactly the values the kernels get.
    case = {k: v.astype(dtype).astype(np.float64) for k, v in case.items()}
    assert same_cells_in_float(case, geo), f"seed {seed} puts a {name} sample on a cell edge"
    return case, geo
