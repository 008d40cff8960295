"""Loads the compiled op library once, lazily, and picks an implementation.

The library is tied to the TensorFlow version it was compiled against. Loading
it into another TensorFlow would at best fail with an undefined symbol, so the
version recorded at build time (``_build_info.json``) is checked first; any
problem gives one warning naming the cause, and the portable (pure TensorFlow)
implementations are used instead.
"""

from __future__ import annotations

import glob
import json
import os
import threading
import warnings

import tensorflow as tf

from tfdeblur import _validation as checks

_HERE = os.path.dirname(os.path.abspath(__file__))
_LOCK = threading.Lock()
_STATE: dict = {"attempted": False, "lib": None, "reason": None, "info": {}}

# Python functions the library must provide; a library built from older
# sources (a stale in-place build) lacks some and is not used.
EXPECTED_OPS = (
    "tf_deblur_gated_recurrence",
    "tf_deblur_gated_recurrence_grad",
    "tf_deblur_modulated_deform_conv2d",
    "tf_deblur_modulated_deform_conv2d_grad",
)


def _major_minor(version: str) -> tuple[str, ...]:
    return tuple(version.split(".")[:2])


def _find_library() -> str | None:
    candidates = glob.glob(os.path.join(_HERE, "_tfdeblur_ops*.so"))
    return max(candidates, key=os.path.getmtime) if candidates else None


def _missing_cpu_features(required: list[str]) -> list[str]:
    """Features the build assumed that this CPU lacks (empty when unknown)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    have = set(line.split(":", 1)[1].split())
                    return [r for r in required if r not in have]
    except OSError:
        pass
    return []


def _disabled_by_env() -> bool:
    return os.environ.get("TFDEBLUR_DISABLE_COMPILED", "") not in ("", "0")


def _load() -> None:
    if _disabled_by_env():
        _STATE["reason"] = "disabled by TFDEBLUR_DISABLE_COMPILED"
        return
    path = _find_library()
    if path is None:
        _STATE["reason"] = (f"compiled op library not found in {_HERE} "
                            "(build it with `make build` or `pip install .`)")
        return
    info_path = os.path.join(_HERE, "_build_info.json")
    info = {}
    if os.path.exists(info_path):
        with open(info_path) as f:
            info = json.load(f)
    built_for = info.get("tensorflow_version")
    if built_for is None:
        _STATE["reason"] = f"{info_path} is missing: cannot tell which TensorFlow {path} is for"
        return
    if _major_minor(built_for) != _major_minor(tf.__version__):
        _STATE["reason"] = (f"compiled op library was built for TensorFlow {built_for} but "
                            f"TensorFlow {tf.__version__} is installed (rebuild with `make build`)")
        return
    missing = _missing_cpu_features(info.get("cpu_features", []))
    if missing:
        _STATE["reason"] = (f"compiled op library needs CPU features {missing} that this CPU "
                            "lacks")
        return
    try:
        lib = tf.load_op_library(path)
    except (tf.errors.NotFoundError, OSError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        _STATE["reason"] = f"compiled op library {path} failed to load: {first}"
        return
    missing = [name for name in EXPECTED_OPS if not hasattr(lib, name)]
    if missing:
        _STATE["reason"] = (f"compiled op library {path} is stale: it lacks {missing} "
                            "(rebuild with `make build`)")
        return
    _STATE["lib"] = lib
    _STATE["info"] = info


def load_library():
    """Returns the loaded op module, or None (warning once with the cause)."""
    if not _STATE["attempted"]:
        with _LOCK:
            if not _STATE["attempted"]:
                _load()
                _STATE["attempted"] = True
                if _STATE["lib"] is None and not _disabled_by_env():
                    warnings.warn(f"tfdeblur: {_STATE['reason']}; using the portable "
                                  "pure-TensorFlow implementations.", RuntimeWarning,
                                  stacklevel=3)
    return _STATE["lib"]


def compiled_available() -> bool:
    """Whether the compiled op library is loaded (loading it if needed)."""
    return load_library() is not None


def compiled_unavailable_reason() -> str | None:
    """Why the compiled library is not in use, or None when it is."""
    load_library()
    return _STATE["reason"]


def build_info() -> dict:
    """What the loaded library was built with (TF version, CUDA on/off)."""
    load_library()
    return dict(_STATE["info"])


def _gpu_without_cuda_kernels() -> bool:
    """True when TensorFlow sees a GPU but the library has no CUDA kernels."""
    if "gpu_without_cuda" not in _STATE:
        _STATE["gpu_without_cuda"] = (not _STATE["info"].get("cuda", False)
                                      and bool(tf.config.list_physical_devices("GPU")))
    return _STATE["gpu_without_cuda"]


def resolve_implementation(implementation: str) -> str:
    """Maps ``"auto" | "compiled" | "portable"`` to the one that will run."""
    checks.check_implementation(implementation)
    if implementation == "portable":
        return "portable"
    if load_library() is not None:
        if implementation == "auto" and _gpu_without_cuda_kernels():
            # A library built without CUDA would run on the CPU, copying every
            # tensor off the GPU; the portable ops stay on the GPU.
            return "portable"
        return "compiled"
    if implementation == "compiled":
        raise RuntimeError(f"implementation='compiled' requested but {_STATE['reason']}")
    return "portable"
