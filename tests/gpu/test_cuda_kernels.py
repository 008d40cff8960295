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
    return ctypes.CDLL(str(out / "libtfdeblur_cuda_standalone.so"))


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
