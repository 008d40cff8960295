"""custom_ops/build.py: CUDA kernels only where they can run, no rebuild of an unchanged library."""

import importlib.util
import json
import os

import pytest

from tests.conftest import ROOT


@pytest.fixture
def build(monkeypatch, tmp_path):
    """custom_ops/build.py as a module, over a copy of the op sources in tmp_path."""
    spec = importlib.util.spec_from_file_location(
        "tfdeblur_build_under_test", os.path.join(ROOT, "custom_ops", "build.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for rel in ("op_a/ops/a_ops.cc", "op_a/kernels/a_kernels.cc", "op_a/kernels/a.cu.cc"):
        (tmp_path / "src" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "src" / rel).write_text(f"// {rel}\n")
    monkeypatch.setattr(module, "HERE", str(tmp_path / "src"))
    return module


def test_auto_builds_cuda_only_with_a_gpu(build, monkeypatch):
    monkeypatch.setattr(build, "find_nvcc", lambda: "/usr/local/cuda/bin/nvcc")
    monkeypatch.setattr(build, "gpu_present", lambda: False)
    use, nvcc, why = build._want_cuda("auto", tf_is_cuda=True)
    assert not use and nvcc is None and "no GPU" in why
    use, nvcc, _ = build._want_cuda("1", tf_is_cuda=True)  # CI: compile them anyway
    assert use and nvcc == "/usr/local/cuda/bin/nvcc"
    monkeypatch.setattr(build, "gpu_present", lambda: True)
    assert build._want_cuda("auto", tf_is_cuda=True)[0]
    assert not build._want_cuda("auto", tf_is_cuda=False)[0]
    assert not build._want_cuda("0", tf_is_cuda=True)[0]
    monkeypatch.setattr(build, "find_nvcc", lambda: None)
    assert not build._want_cuda("auto", tf_is_cuda=True)[0]
    with pytest.raises(RuntimeError, match="no nvcc"):
        build._want_cuda("1", tf_is_cuda=True)
    with pytest.raises(ValueError, match="must be auto, 0 or 1"):
        build._want_cuda("yes", tf_is_cuda=True)


def test_gpu_present_asks_nvidia_smi(build, monkeypatch, tmp_path):
    monkeypatch.setattr(build.os.path, "exists", lambda p: False if p == "/dev/nvidia0" else
                        os.path.lexists(p))
    fake = tmp_path / "bin"
    fake.mkdir()
    smi = fake / "nvidia-smi"
    monkeypatch.setenv("PATH", str(fake))
    assert not build.gpu_present()  # no nvidia-smi at all
    smi.write_text("#!/bin/sh\necho 'No devices were found'; exit 6\n")
    smi.chmod(0o755)
    assert not build.gpu_present()
    smi.write_text("#!/bin/sh\necho 'GPU 0: NVIDIA H200 (UUID: GPU-1)'\n")
    assert build.gpu_present()


def _pretend_built(build, out, key):
    out.mkdir(exist_ok=True)
    (out / build.LIB_NAME).write_bytes(b"\x7fELF")
    (out / "_build_info.json").write_text("{}")
    (out / build.FINGERPRINT_NAME).write_text(json.dumps(key))


def test_unchanged_inputs_are_not_rebuilt(build, monkeypatch, tmp_path):
    monkeypatch.setattr(build, "gpu_present", lambda: False)
    out = tmp_path / "out"
    key = build.fingerprint("auto")
    assert not build.up_to_date(str(out), key)
    _pretend_built(build, out, key)
    assert build.up_to_date(str(out), key)

    def no_tensorflow():
        raise AssertionError("an up-to-date build must not even import TensorFlow")

    monkeypatch.setattr(build, "_tf_flags", no_tensorflow)
    assert build.build(str(out), cuda="auto") == str(out / build.LIB_NAME)
    # Whatever the build depends on changes the fingerprint.
    assert build.fingerprint("1") != key and build.fingerprint("0") != key
    monkeypatch.setattr(build, "gpu_present", lambda: True)
    assert build.fingerprint("auto") != key
    monkeypatch.setattr(build, "gpu_present", lambda: False)
    (tmp_path / "src" / "op_a" / "kernels" / "a_kernels.cc").write_text("// edited\n")
    changed = build.fingerprint("auto")
    assert changed != key and not build.up_to_date(str(out), changed)
    with pytest.raises(AssertionError, match="must not even import"):
        build.build(str(out), cuda="auto")  # it does rebuild (here: reaches the TF flags)
    (out / build.LIB_NAME).unlink()
    assert not build.up_to_date(str(out), key)
    with pytest.raises(AssertionError, match="must not even import"):
        build.build(str(out), cuda="auto", force=True)


def test_tensorflow_version_is_part_of_the_fingerprint(build, monkeypatch):
    from importlib import metadata

    monkeypatch.setattr(build, "gpu_present", lambda: False)
    key = build.fingerprint("auto")
    real = metadata.version
    monkeypatch.setattr(metadata, "version",
                        lambda name: "9.9.9" if name == "tensorflow" else real(name))
    assert build.fingerprint("auto")["tensorflow_version"] == "9.9.9" != key["tensorflow_version"]
