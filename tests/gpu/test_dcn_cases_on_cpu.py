"""The GPU checks' deformable-convolution cases through the compiled CPU op (float32).

Checks the cases themselves where there is no GPU: valid geometries, the 17
geometry values (padding resolved as the op resolves it), and tolerances the
CPU kernels meet with a wide margin. Needs TensorFlow and the compiled library;
skipped on GPU hosts without them.
"""

import numpy as np
import pytest

from tests.gpu.dcn_cases import (
    DCN_CASES,
    DCN_DTYPES,
    DCN_NAMES,
    assert_close_scaled,
    dcn_case,
    dcn_geometry,
    reference_dcn,
)

tf = pytest.importorskip("tensorflow")


@pytest.mark.parametrize("name", list(DCN_CASES))
def test_gpu_case_on_the_compiled_cpu_op(name):
    from tfdeblur.ops import compiled_available, modulated_deform_conv2d

    if not compiled_available():
        pytest.skip("compiled library not built")
    dtype, tol = DCN_DTYPES[0]
    assert dtype == np.float32
    case, geo = dcn_case(name, dtype)
    _, y_shape = dcn_geometry(case["x"].shape, case["kernel"].shape, geo)
    dy = np.random.default_rng(1).normal(size=y_shape).astype(dtype).astype(np.float64)
    inputs = [tf.constant(case[k].astype(dtype)) for k in DCN_NAMES]
    padding = geo["padding"] if isinstance(geo["padding"], str) else tuple(
        tuple(p) for p in geo["padding"])
    with tf.GradientTape() as tape:
        tape.watch(inputs)
        y = modulated_deform_conv2d(*inputs, strides=geo["strides"], padding=padding,
                                    dilation_rate=geo["dilation"], groups=geo["groups"],
                                    deformable_groups=geo["dgroups"],
                                    implementation="compiled")
        loss = tf.reduce_sum(y * dy.astype(dtype))
    grads = tape.gradient(loss, inputs)
    want_y, want_grads = reference_dcn(case, dy, geo, True)
    assert tuple(y.shape) == y_shape
    # A tenth of the GPU tolerance: the margin the GPU checks rely on.
    assert_close_scaled(y.numpy(), want_y, tol / 10, "y")
    for k, a, b in zip(DCN_NAMES, grads, want_grads, strict=True):
        assert_close_scaled(a.numpy(), b, tol / 10, f"d{k}")
