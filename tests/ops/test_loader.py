"""The op-library loader: one warning and the portable path on any problem."""

import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest

from tests.conftest import ROOT

SCRIPT = textwrap.dedent("""
    import warnings
    warnings.simplefilter("always")
    with warnings.catch_warnings(record=True) as caught:
        import numpy as np
        from tfdeblur import ops
        available = ops.compiled_available()
        y = ops.gated_recurrence(np.ones((1, 2, 3, 1), np.float32),
                                 np.full((1, 2, 3, 1), 0.5, np.float32), "left_to_right")
        ops.spatial_rnn(np.ones((1, 2, 3, 1), np.float32), np.zeros((1, 2, 3, 4), np.float32))
    msgs = [str(w.message) for w in caught if "tfdeblur" in str(w.message)]
    print("AVAILABLE", available)
    print("WARNINGS", len(msgs))
    for m in msgs:
        print("MSG", m)
    print("VALUES", [round(float(v), 4) for v in y.numpy().ravel()])
    try:
        ops.gated_recurrence(np.ones((1, 2, 3, 1), np.float32),
                             np.ones((1, 2, 3, 1), np.float32), "left_to_right",
                             implementation="compiled")
    except RuntimeError as e:
        print("COMPILED_ERROR", e)
""")


def _copy_package(tmp_path):
    dst = tmp_path / "tfdeblur"
    shutil.copytree(os.path.join(ROOT, "tfdeblur"), dst,
                    ignore=shutil.ignore_patterns("__pycache__"))
    return dst


def _run(tmp_path, env_extra=None):
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "TF_CPP_MIN_LOG_LEVEL": "3",
           **(env_extra or {})}
    out = subprocess.run([sys.executable, "-c", SCRIPT], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def test_missing_library_warns_once_and_falls_back(tmp_path):
    pkg = _copy_package(tmp_path)
    for f in (pkg / "ops").glob("_tfdeblur_ops*.so"):
        f.unlink()
    out = _run(tmp_path)
    assert "AVAILABLE False" in out
    assert "WARNINGS 1" in out
    assert "not found" in out and "portable" in out
    assert "VALUES [0.5, 0.75, 0.875, 0.5, 0.75, 0.875]" in out
    assert "COMPILED_ERROR implementation='compiled' requested but" in out


def test_tensorflow_version_mismatch_warns_once_and_falls_back(tmp_path):
    pkg = _copy_package(tmp_path)
    info_path = pkg / "ops" / "_build_info.json"
    if not info_path.exists() or not list((pkg / "ops").glob("_tfdeblur_ops*.so")):
        pytest.skip("compiled op library not built in this checkout")
    info = json.loads(info_path.read_text())
    info["tensorflow_version"] = "2.0.0"
    info_path.write_text(json.dumps(info))
    out = _run(tmp_path)
    assert "AVAILABLE False" in out
    assert "WARNINGS 1" in out
    assert "built for TensorFlow 2.0.0" in out
    assert "VALUES [0.5, 0.75, 0.875, 0.5, 0.75, 0.875]" in out


def test_disabled_by_environment_is_silent(tmp_path):
    _copy_package(tmp_path)
    out = _run(tmp_path, {"TFDEBLUR_DISABLE_COMPILED": "1"})
    assert "AVAILABLE False" in out
    assert "WARNINGS 0" in out


def test_stale_library_missing_an_op_is_not_used(tmp_path):
    pkg = _copy_package(tmp_path)
    if not list((pkg / "ops").glob("_tfdeblur_ops*.so")):
        pytest.skip("compiled op library not built in this checkout")
    loader = pkg / "ops" / "_loader.py"
    # Pretend the sources now define one more op than the built library has.
    first = '"tf_deblur_gated_recurrence",'
    loader.write_text(loader.read_text().replace(
        first, first + ' "tf_deblur_op_from_the_future",', 1))
    out = _run(tmp_path)
    assert "AVAILABLE False" in out
    assert "WARNINGS 1" in out
    assert "is stale" in out and "tf_deblur_op_from_the_future" in out
    assert "VALUES [0.5, 0.75, 0.875, 0.5, 0.75, 0.875]" in out


def test_auto_prefers_portable_on_a_gpu_when_the_library_has_no_cuda(monkeypatch):
    from tfdeblur.ops import _loader

    if not _loader.compiled_available():
        pytest.skip("compiled op library not built in this checkout")
    monkeypatch.setattr(_loader.tf.config, "list_physical_devices",
                        lambda kind=None: ["GPU:0"] if kind == "GPU" else [])
    info = _loader._STATE["info"]
    try:
        for cuda, want in ((False, "portable"), (True, "compiled")):
            _loader._STATE["info"] = {**info, "cuda": cuda}
            _loader._STATE.pop("gpu_without_cuda", None)
            assert _loader.resolve_implementation("auto") == want
            assert _loader.resolve_implementation("compiled") == "compiled"
    finally:
        _loader._STATE["info"] = info
        _loader._STATE.pop("gpu_without_cuda", None)  # recomputed from the real devices
