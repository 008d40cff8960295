"""CUDA kernels checked without TensorFlow, through PyTorch or CuPy, on a GPU host.

The raw-pointer kernels (``custom_ops/*/kernels/*.cu.h``) are built into a
small TF-free library (``python custom_ops/build.py --standalone-cuda DIR``)
and driven with device buffers from PyTorch or CuPy, then compared with the
float64 NumPy references. Skipped (with the reason) where there is no GPU.
"""

import ctypes
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import ROOT
from tests.gpu.dcn_cases import (
    DCN_CASES,
    DCN_DTYPES,
    DCN_NAMES,
    assert_close_scaled,
    dcn_case,
    dcn_geometry,
    reference_dcn,
)
from tests.gpu.standalone_abi import DTYPE_CODES, bind, call
from tests.ops.reference_gated_recurrence import DIRECTIONS, ref_backward, ref_forward


def _backend():
    try:
        import torch

        if torch.cuda.is_available():
            return "torch"
    except ImportError:
        pass
    try:
        import cupy

        if cupy.cuda.runtime.getDeviceCount() > 0:
            return "cupy"
    except Exception:  # noqa: BLE001 - no CuPy or no device
        pass
    return None


BACKEND = _backend()
pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(BACKEND is None, reason="no CUDA device with PyTorch or CuPy")]


@pytest.fixture(scope="module")
def lib(tmp_path_factory):
    out = tmp_path_factory.mktemp("cuda")
    subprocess.run([sys.executable, os.path.join(ROOT, "custom_ops", "build.py"),
                    "--standalone-cuda", str(out)], check=True)
    return bind(ctypes.CDLL(str(out / "libtfdeblur_cuda_standalone.so")))


class Device:
    """Minimal device-buffer helper over PyTorch or CuPy."""

    def __init__(self):
        if BACKEND == "torch":
            import torch

            self.torch = torch
        else:
            import cupy

            self.cupy = cupy

    def put(self, a):
        if BACKEND == "torch":
            return self.torch.from_numpy(np.ascontiguousarray(a)).cuda()
        return self.cupy.asarray(np.ascontiguousarray(a))

    def full_nan(self, shape, dtype):
        """A buffer the kernel must overwrite entirely (any NaN left fails the check)."""
        if BACKEND == "torch":
            return self.torch.full(tuple(shape), float("nan"), device="cuda",
                                   dtype={np.float32: self.torch.float32,
                                          np.float16: self.torch.float16}[dtype])
        return self.cupy.full(tuple(shape), np.nan, dtype=dtype)

    def empty_like(self, d):
        return self.torch.empty_like(d) if BACKEND == "torch" else self.cupy.empty_like(d)

    def ptr(self, d):
        return ctypes.c_void_p(d.data_ptr() if BACKEND == "torch" else d.data.ptr)

    def stream(self):
        if BACKEND == "torch":
            return ctypes.c_void_p(self.torch.cuda.current_stream().cuda_stream)
        return ctypes.c_void_p(self.cupy.cuda.get_current_stream().ptr)

    def get(self, d):
        if BACKEND == "torch":
            self.torch.cuda.synchronize()
            return d.cpu().numpy()
        return self.cupy.asnumpy(d)


@pytest.mark.parametrize("dtype,code,tol", [(np.float32, 0, 1e-5), (np.float16, 1, 2e-2)])
@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (2, 7, 13, 3), (1, 33, 5, 32)])
def test_gated_recurrence_fused_forward_backward(lib, dtype, code, tol, shape):
    dev = Device()
    rng = np.random.default_rng(0)
    n, h, w, c = shape
    x = rng.standard_normal(shape).astype(dtype)
    g = np.tanh(rng.standard_normal((n, h, w, 4 * c))).astype(dtype)
    dy = rng.standard_normal((n, h, w, 4 * c)).astype(dtype)
    dirs = (ctypes.c_int * 4)(0, 1, 2, 3)
    dx_, g_, dy_ = dev.put(x), dev.put(g), dev.put(dy)
    y_ = dev.empty_like(g_)
    i64 = ctypes.c_int64
    assert lib.tfdeblur_gated_recurrence_forward(
        code, i64(n), i64(h), i64(w), i64(c), 4, dirs, dev.ptr(dx_), dev.ptr(g_), dev.ptr(y_),
        dev.stream()) == 0
    ddx, ddg = dev.empty_like(dx_), dev.empty_like(g_)
    assert lib.tfdeblur_gated_recurrence_backward(
        code, i64(n), i64(h), i64(w), i64(c), 4, dirs, dev.ptr(dx_), dev.ptr(g_), dev.ptr(y_),
        dev.ptr(dy_), dev.ptr(ddx), dev.ptr(ddg), dev.stream()) == 0
    y, gx, gg = dev.get(y_), dev.get(ddx), dev.get(ddg)
    want_dx = np.zeros(shape)
    for k, d in enumerate(DIRECTIONS):
        sl = slice(k * c, (k + 1) * c)
        np.testing.assert_allclose(y[..., sl].astype(np.float64), ref_forward(x, g[..., sl], d),
                                   rtol=tol, atol=tol)
        a, b = ref_backward(x, g[..., sl], dy[..., sl], d)
        want_dx += a
        np.testing.assert_allclose(gg[..., sl].astype(np.float64), b, rtol=tol, atol=tol * 10)
    np.testing.assert_allclose(gx.astype(np.float64), want_dx, rtol=tol, atol=tol * 10)


# ----------------------------------------------------------------------------
# Modulated deformable convolution (docs/ops.md section 2)
# ----------------------------------------------------------------------------

def run_dcn(lib, dev, dtype, case, dy, geo, use_bias):
    """y and (dx, doffset, dmask, dkernel, dbias or None) from the CUDA kernels."""
    code = DTYPE_CODES[np.dtype(dtype).name]
    geometry, y_shape = dcn_geometry(case["x"].shape, case["kernel"].shape, geo)
    d = {k: dev.put(case[k].astype(dtype)) for k in DCN_NAMES}
    y = dev.full_nan(y_shape, dtype)
    bias = dev.ptr(d["bias"]) if use_bias else None
    assert call(lib, "tfdeblur_deform_conv_forward", dtype=code, geometry=geometry,
                x=dev.ptr(d["x"]), offset=dev.ptr(d["offset"]), mask=dev.ptr(d["mask"]),
                kernel=dev.ptr(d["kernel"]), bias=bias, y=dev.ptr(y),
                stream=dev.stream()) == 0
    dy_ = dev.put(dy.astype(dtype))
    grads = {k: dev.full_nan(case[k].shape, dtype) for k in DCN_NAMES}
    dbias = dev.ptr(grads["bias"]) if use_bias else None
    assert call(lib, "tfdeblur_deform_conv_backward", dtype=code, geometry=geometry,
                x=dev.ptr(d["x"]), offset=dev.ptr(d["offset"]), mask=dev.ptr(d["mask"]),
                kernel=dev.ptr(d["kernel"]), dy=dev.ptr(dy_), dx=dev.ptr(grads["x"]),
                doffset=dev.ptr(grads["offset"]), dmask=dev.ptr(grads["mask"]),
                dkernel=dev.ptr(grads["kernel"]), dbias=dbias, stream=dev.stream()) == 0
    got = [dev.get(grads[k]) for k in DCN_NAMES]
    if not use_bias:
        got[-1] = None
    return dev.get(y), got


@pytest.mark.parametrize("use_bias", [True, False])
@pytest.mark.parametrize("dtype,tol", DCN_DTYPES)
@pytest.mark.parametrize("name", list(DCN_CASES))
def test_deform_conv_forward_backward(lib, name, dtype, tol, use_bias):
    """The GPU input gradient (and bias gradient) add with atomics in varying order, so
    everything is compared with tolerances, never bit for bit."""
    dev = Device()
    case, geo = dcn_case(name, dtype)
    y_ref_shape = dcn_geometry(case["x"].shape, case["kernel"].shape, geo)[1]
    dy = np.random.default_rng(1).normal(size=y_ref_shape).astype(dtype).astype(np.float64)
    y, grads = run_dcn(lib, dev, dtype, case, dy, geo, use_bias)
    want_y, want_grads = reference_dcn(case, dy, geo, use_bias)
    assert_close_scaled(y, want_y, tol, "y")
    for k, a, b in zip(DCN_NAMES, grads, want_grads, strict=True):
        if k == "bias" and not use_bias:
            assert a is None and b is None
            continue
        assert np.abs(b).max() > 0, k
        assert_close_scaled(a, b, tol, f"d{k}")


@pytest.mark.parametrize("chunk_pixels", [1, 7])
def test_deform_conv_several_chunks(lib, monkeypatch, chunk_pixels):
    """A column buffer of a few pixels (TFDEBLUR_DCN_SCRATCH_BYTES): the forward GEMMs,
    the per-chunk input gradient and the accumulated kernel/bias gradients chunk by chunk."""
    dev = Device()
    case, geo = dcn_case("odd_batch2", np.float32, seed=2)
    kh, kw, _, _ = case["kernel"].shape
    col_bytes = kh * kw * case["x"].shape[3] * 4  # one pixel's column-buffer row, float
    monkeypatch.setenv("TFDEBLUR_DCN_SCRATCH_BYTES", str(chunk_pixels * col_bytes))
    y_shape = dcn_geometry(case["x"].shape, case["kernel"].shape, geo)[1]
    assert np.prod(y_shape[:3]) % 7, "the last chunk should be a partial one"
    dy = np.random.default_rng(3).normal(size=y_shape).astype(np.float32).astype(np.float64)
    y, grads = run_dcn(lib, dev, np.float32, case, dy, geo, True)
    want_y, want_grads = reference_dcn(case, dy, geo, True)
    assert_close_scaled(y, want_y, 1e-4, "y")
    for k, a, b in zip(DCN_NAMES, grads, want_grads, strict=True):
        assert_close_scaled(a, b, 1e-4, f"d{k}")


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_deform_conv_batch_zero(lib, dtype):
    """No pixels: empty y, dx, doffset, dmask; the kernel and bias gradients are zeros."""
    dev = Device()
    case, geo = dcn_case("odd_batch1", dtype)
    case = {k: (v[:0] if k in ("x", "offset", "mask") else v) for k, v in case.items()}
    y_shape = dcn_geometry(case["x"].shape, case["kernel"].shape, geo)[1]
    y, grads = run_dcn(lib, dev, dtype, case, np.zeros(y_shape), geo, True)
    assert y.shape == y_shape and y.size == 0
    for k, g in zip(DCN_NAMES, grads, strict=True):
        assert g.shape == case[k].shape, k
        np.testing.assert_array_equal(g, 0, err_msg=k)


def test_deform_conv_bad_dtype(lib):
    geometry, _ = dcn_geometry((1, 2, 2, 1), (1, 1, 1, 1), dict(
        strides=(1, 1), padding="valid", dilation=(1, 1), groups=1, dgroups=1))
    assert call(lib, "tfdeblur_deform_conv_forward", dtype=2, geometry=geometry, x=None,
                offset=None, mask=None, kernel=None, bias=None, y=None, stream=None) == -1


# ----------------------------------------------------------------------------
# Non-finite inputs (docs/ops_nonfinite.md): the CUDA kernels give the CPU's
# results, NaN and +-inf at the same places.
# ----------------------------------------------------------------------------

def test_gated_recurrence_non_finite(lib):
    """An infinite first gate gives -inf (no g[0] * h[-1] term); NaN, inf and overflow
    propagate step by step as in the float32 reference."""
    dev = Device()
    lines = [([1, 2, 3, 4], [np.inf, 0.5, 0.5, 0.5]), ([1, 2, 3, 4], [0.5, 1e30, 1e30, 0.5]),
             ([1, np.inf, 3, 4], [0.5, 0.5, 0.0, 0.5]), ([1, np.nan, 3, 4], [0.5, 0.5, 0.5, 0.5])]
    x = np.array([v for v, _ in lines], np.float32).reshape(1, 4, 4, 1)
    g1 = np.array([v for _, v in lines], np.float32).reshape(1, 4, 4, 1)
    # The lines run horizontally; the vertical scans get plain gates (a column
    # mixing 1e30 with other lines' gates cancels ~1e30 terms, where FMA or not
    # decides the rounding).
    half = np.full_like(g1, 0.5)
    g = np.concatenate([g1, g1, half, half], axis=-1)
    dirs = (ctypes.c_int * 4)(0, 1, 2, 3)
    x_, g_ = dev.put(x), dev.put(g)
    y_ = dev.empty_like(g_)
    i64 = ctypes.c_int64
    assert lib.tfdeblur_gated_recurrence_forward(
        0, i64(1), i64(4), i64(4), i64(1), 4, dirs, dev.ptr(x_), dev.ptr(g_), dev.ptr(y_),
        dev.stream()) == 0
    y = dev.get(y_)
    for k, d in enumerate(DIRECTIONS):
        want = ref_forward(x, g[..., k:k + 1], d, np.float32)
        np.testing.assert_allclose(y[..., k:k + 1], want, rtol=1e-6, equal_nan=True, err_msg=d)
    assert np.isneginf(y[0, 0, :, 0]).all()


def test_deform_conv_non_finite(lib):
    """NaN / infinite positions read nothing whatever the mask; an infinite mask scales
    each corner's weight, NaN in x propagates, as in the reference."""
    dev = Device()
    case, geo = dcn_case("odd_batch1", np.float32)
    case["offset"][0, 1, 1, :6] = [np.nan, 0.3, np.inf, -np.inf, 1e30, np.nan]
    case["mask"][0, 1, 1, :3] = np.nan
    case["mask"][0, 2, 2, 0] = np.inf
    case["offset"][0, 2, 2, :2] = np.round(case["offset"][0, 2, 2, :2])
    case["x"][0, 8, 4, 1] = np.nan  # not read by output pixel (1, 1)
    y_shape = dcn_geometry(case["x"].shape, case["kernel"].shape, geo)[1]
    dy = np.random.default_rng(1).normal(size=y_shape).astype(np.float32).astype(np.float64)
    y, _ = run_dcn(lib, dev, np.float32, case, dy, geo, True)
    with np.errstate(all="ignore"):
        want, _ = reference_dcn(case, dy, geo, True)
    assert not np.isfinite(want).all() and np.isfinite(want[0, 1, 1]).all()
    np.testing.assert_allclose(y, want, rtol=1e-4, atol=1e-4, equal_nan=True)
