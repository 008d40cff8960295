"""The benchmarks' forward + backward functions keep the forward op in the graph TensorFlow runs.

A ``tf.function`` runs only the ops its outputs depend on (TensorFlow prunes
the rest of the traced graph before running it). The backward of a
convolution does not read its output, so a function returning only
``tape.gradient(...)`` would time the backward alone; these tests walk the
traced graph back from the function's outputs, as the pruning does.
"""

import importlib.util
import os
import sys

import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import ROOT
from tfdeblur.ops import compiled_available, spatial_rnn

needs_compiled = pytest.mark.skipif(not compiled_available(), reason="compiled library not built")


def _bench(name):
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            name, os.path.join(ROOT, "benchmarks", f"{name}.py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def _kept_op_types(fn, *args) -> set[str]:
    """Types of the ops the traced ``fn`` runs: those its outputs depend on."""
    concrete = fn.get_concrete_function(*args)
    seen, stack = set(), [t.op for t in concrete.outputs]
    while stack:
        op = stack.pop()
        if op.name not in seen:
            seen.add(op.name)
            stack.extend(t.op for t in op.inputs)
            stack.extend(op.control_inputs)
    return {concrete.graph.get_operation_by_name(name).type for name in seen}


def _inputs(k=3):
    return _bench("bench_deform_conv")._inputs((1, 5, 6, 4), k, np.random.default_rng(0))


def test_the_check_sees_a_pruned_forward():
    # What the benchmarks did before: only the gradients leave the function.
    a = _inputs()

    @tf.function
    def gradients_only():
        with tf.GradientTape() as tape:
            tape.watch(a["x"])
            y = tf.nn.conv2d(a["x"], a["kernel"], 1, "SAME")
        return tape.gradient(y, a["x"], output_gradients=a["dy"])

    kept = _kept_op_types(gradients_only)
    assert "Conv2DBackpropInput" in kept and "Conv2D" not in kept


def test_dense_forward_backward_keeps_conv2d_and_returns_the_forward_output():
    a = _inputs()
    forward, forward_backward = _bench("bench_deform_conv")._dense_fns(a)
    kept = _kept_op_types(forward_backward)
    assert {"Conv2D", "Conv2DBackpropInput", "Conv2DBackpropFilter"} <= kept
    y, grads = forward_backward()
    np.testing.assert_allclose(y.numpy(), forward().numpy(), rtol=1e-6, atol=1e-6)
    assert len(grads) == 3


@needs_compiled
def test_deform_conv_forward_backward_keeps_the_forward_op():
    a = _inputs()
    forward, forward_backward = _bench("bench_deform_conv")._deform_fns("compiled", a)
    kept = _kept_op_types(forward_backward)
    assert {"TfDeblur>ModulatedDeformConv2D", "TfDeblur>ModulatedDeformConv2DGrad"} <= kept
    y, grads = forward_backward()
    np.testing.assert_allclose(y.numpy(), forward().numpy(), rtol=1e-6, atol=1e-6)
    assert len(grads) == 5


@needs_compiled
def test_spatial_rnn_forward_backward_keeps_the_forward_op():
    fwd, fwd_bwd = _bench("bench_spatial_rnn").make_fns(
        lambda x, g: spatial_rnn(x, g, "compiled"))
    x = tf.random.stateless_normal((1, 3, 4, 2), (0, 1))
    g = tf.tanh(tf.random.stateless_normal((1, 3, 4, 8), (0, 2)))
    dy = tf.random.stateless_normal((1, 3, 4, 8), (0, 3))
    kept = _kept_op_types(fwd_bwd, x, g, dy)
    assert {"TfDeblur>GatedRecurrence", "TfDeblur>GatedRecurrenceGrad"} <= kept
    y, _ = fwd_bwd(x, g, dy)
    np.testing.assert_allclose(y.numpy(), fwd(x, g).numpy(), rtol=1e-6, atol=1e-6)


@needs_compiled
def test_torchvision_peer_computes_the_same_forward_and_gradients():
    torch = pytest.importorskip("torch")
    tv_ops = pytest.importorskip("torchvision.ops")
    bench = _bench("bench_deform_conv")
    a = _inputs(k=3)
    _, ours = bench._deform_fns("compiled", a)
    tv_forward, tv_forward_backward = bench._torchvision_fns(torch, tv_ops.deform_conv2d, a, 3)
    y, grads = ours()
    theirs = [t.numpy() for t in tv_forward_backward()]  # y, dx, doffset, dmask, dkernel, dbias
    np.testing.assert_allclose(tv_forward().numpy(), theirs[0], rtol=1e-6, atol=1e-6)
    nchw_to_nhwc, oihw_to_hwio = (0, 2, 3, 1), (2, 3, 1, 0)
    pairs = [(theirs[0].transpose(nchw_to_nhwc), y)]
    pairs += [(t.transpose(nchw_to_nhwc), g) for t, g in zip(theirs[1:4], grads[:3], strict=True)]
    pairs += [(theirs[4].transpose(oihw_to_hwio), grads[3]), (theirs[5], grads[4])]
    for got, want in pairs:
        np.testing.assert_allclose(got, want.numpy(), rtol=1e-4, atol=1e-4)


def test_quick_table_prints_every_row(monkeypatch, capsys):
    if not compiled_available():
        pytest.skip("compiled library not built")
    bench = _bench("bench_deform_conv")
    monkeypatch.setattr(bench, "QUICK_SHAPES", [(1, 5, 6, 4)])
    assert bench.main(["--quick", "--reps", "1", "--warmup", "0"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| [1, 5, 6, 4]")]
    assert len(rows) == 4  # two kernels x (forward, fwd+bwd)
    torch_ok = bench._torchvision()[0] is not None
    assert ("torchvision row skipped" in out) != torch_ok
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert (cells[6] != "-") == torch_ok   # "-": the torchvision column left out
