"""The extern "C" interface of the TF-free CUDA test library, as ctypes sees it.

``custom_ops/*/cuda_standalone/*.cu`` declare the entry points; the table here
repeats each one (parameter names and C types, in order) so that the GPU
checks can set exact ``argtypes`` and pass arguments by name.
``tests/gpu/test_standalone_abi.py`` compares the table with the sources on
any machine, GPU or not.
"""

import ctypes
import glob
import os
import re

from tests.conftest import ROOT

C_TYPES = {
    "int": ctypes.c_int,
    "int64_t": ctypes.c_int64,
    "const int*": ctypes.POINTER(ctypes.c_int),
    "const int64_t*": ctypes.POINTER(ctypes.c_int64),
    "const void*": ctypes.c_void_p,
    "void*": ctypes.c_void_p,
}

_DCN_INPUTS = [("x", "const void*"), ("offset", "const void*"), ("mask", "const void*"),
               ("kernel", "const void*")]
_GATED_HEAD = [("dtype", "int"), ("n", "int64_t"), ("h", "int64_t"), ("w", "int64_t"),
               ("c", "int64_t"), ("slots", "int"), ("directions", "const int*"),
               ("x", "const void*"), ("g", "const void*")]

# name -> (return C type, [(parameter, C type), ...])
SIGNATURES = {
    "tfdeblur_gated_recurrence_forward": ("int", [
        *_GATED_HEAD, ("y", "void*"), ("stream", "void*")]),
    "tfdeblur_gated_recurrence_backward": ("int", [
        *_GATED_HEAD, ("y", "const void*"), ("dy", "const void*"), ("dx", "void*"),
        ("dg", "void*"), ("stream", "void*")]),
    "tfdeblur_deform_conv_forward": ("int", [
        ("dtype", "int"), ("geometry", "const int64_t*"), *_DCN_INPUTS,
        ("bias", "const void*"), ("y", "void*"), ("stream", "void*")]),
    "tfdeblur_deform_conv_backward": ("int", [
        ("dtype", "int"), ("geometry", "const int64_t*"), *_DCN_INPUTS,
        ("dy", "const void*"), ("dx", "void*"), ("doffset", "void*"), ("dmask", "void*"),
        ("dkernel", "void*"), ("dbias", "void*"), ("stream", "void*")]),
}

# The deformable convolution's `geometry` argument: 17 int64 values, in
# DeformConvGeometry's field names (deform_conv_standalone.cu, MakeGeometry).
DCN_GEOMETRY = ("n", "h", "w", "cin", "ho", "wo", "cout", "kh", "kw", "sh", "sw", "dh", "dw",
                "pad_top", "pad_left", "groups", "dgroups")

# Entry points' dtype codes.
DTYPE_CODES = {"float32": 0, "float16": 1}


def bind(lib: ctypes.CDLL) -> ctypes.CDLL:
    """Sets restype and argtypes of every entry point from SIGNATURES."""
    for name, (ret, params) in SIGNATURES.items():
        fn = getattr(lib, name)
        fn.restype = C_TYPES[ret]
        fn.argtypes = [C_TYPES[t] for _, t in params]
    return lib


def call(lib: ctypes.CDLL, name: str, **kwargs) -> int:
    """Calls entry point `name` with its parameters given by name (all of them)."""
    params = [p for p, _ in SIGNATURES[name][1]]
    if set(kwargs) != set(params):
        raise TypeError(f"{name} takes {params}, got {sorted(kwargs)}")
    return getattr(lib, name)(*(kwargs[p] for p in params))


def _normalise_type(text: str) -> str:
    return re.sub(r"\s*\*", "*", " ".join(text.split()))


def declared_signatures(source: str) -> dict:
    """{name: (return type, [(parameter, C type), ...])} of the extern "C" functions in `source`."""
    block = source.split('extern "C"', 1)
    if len(block) < 2:
        return {}
    found = {}
    for m in re.finditer(r"\b([A-Za-z_]\w*)\s+(\w+)\s*\(([^)]*)\)\s*\{", block[1]):
        params = []
        for p in m.group(3).split(","):
            pm = re.fullmatch(r"\s*(.*?[\s*])([A-Za-z_]\w*)\s*", p)
            assert pm is not None, f"cannot parse parameter {p!r} of {m.group(2)}"
            params.append((pm.group(2), _normalise_type(pm.group(1))))
        found[m.group(2)] = (m.group(1), params)
    return found


def standalone_sources() -> list[str]:
    return sorted(glob.glob(os.path.join(ROOT, "custom_ops", "*", "cuda_standalone", "*.cu")))


def declared_dcn_geometry(source: str) -> list[tuple[int, str]]:
    """[(index into geometry, DeformConvGeometry field)] from MakeGeometry, by index."""
    pairs = re.findall(r"\bg\.(\w+)\s*=\s*(?:static_cast<\w+>\()?v\[(\d+)\]", source)
    return sorted((int(i), field) for field, i in pairs)
