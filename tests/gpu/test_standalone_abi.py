"""The ctypes table of tests/gpu/standalone_abi.py against the .cu sources (no GPU needed).

A wrong argument order or type in ctypes does not fail loudly on the GPU: it
passes garbage pointers or sizes. These checks read the declarations instead.
"""

import ctypes
import importlib.util
import os
import re
import subprocess
import sys

import pytest

from tests.conftest import ROOT
from tests.gpu.standalone_abi import (
    C_TYPES,
    DCN_GEOMETRY,
    DTYPE_CODES,
    SIGNATURES,
    bind,
    call,
    declared_dcn_geometry,
    declared_signatures,
    standalone_sources,
)


def _read(path):
    with open(path) as f:
        return f.read()


def test_ctypes_table_matches_extern_c_declarations():
    declared = {}
    for path in standalone_sources():
        for name, sig in declared_signatures(_read(path)).items():
            assert name not in declared, f"{name} declared twice"
            declared[name] = sig
    assert set(declared) == set(SIGNATURES)
    for name, (ret, params) in SIGNATURES.items():
        assert declared[name] == (ret, params), name
        assert all(t in C_TYPES for _, t in params), name


def test_parser_reads_types_and_order():
    """The parser itself: pointer spellings, line breaks, const."""
    src = 'namespace {}\nextern "C" {\nint f(int a, const int64_t *g,\n      void* p, ' \
          'const void * q) {\n  return 0;\n}\n}'
    assert declared_signatures(src) == {"f": ("int", [
        ("a", "int"), ("g", "const int64_t*"), ("p", "void*"), ("q", "const void*")])}


def test_dcn_geometry_order_matches_make_geometry():
    path = [p for p in standalone_sources() if p.endswith("deform_conv_standalone.cu")]
    assert len(path) == 1
    src = _read(path[0])
    assert declared_dcn_geometry(src) == list(enumerate(DCN_GEOMETRY))
    # The struct really has these fields (a renamed field would not compile, but
    # a stale table entry would still read here).
    header = _read(os.path.join(os.path.dirname(os.path.dirname(path[0])), "kernels",
                                "deform_conv_geometry.h"))
    for field in DCN_GEOMETRY:
        assert re.search(rf"\b{field}\b\s*=", header), field


def test_dtype_codes_match_sources():
    for path in standalone_sources():
        src = _read(path)
        assert "dtype: 0 float32, 1 float16" in src, path
        assert "if (dtype == 0)" in src and "if (dtype == 1)" in src, path
    assert DTYPE_CODES == {"float32": 0, "float16": 1}


def test_bias_and_dbias_may_be_null():
    """The DCN entry points take a null bias / dbias (None in ctypes) as "no bias"."""
    src = _read([p for p in standalone_sources() if p.endswith("deform_conv_standalone.cu")][0])
    assert "MakeGeometry(geometry, bias != nullptr)" in src
    assert "MakeGeometry(geometry, dbias != nullptr)" in src


def test_bind_and_call_by_name():
    """bind() sets argtypes from the table; call() orders keyword arguments by it."""
    class Fake:
        pass

    lib = Fake()
    seen = {}
    for name in SIGNATURES:
        def fn(*args, _name=name):
            seen[_name] = args
            return 0
        setattr(lib, name, fn)
    bind(lib)
    assert lib.tfdeblur_deform_conv_forward.argtypes[1] is C_TYPES["const int64_t*"]
    params = [p for p, _ in SIGNATURES["tfdeblur_deform_conv_backward"][1]]
    kwargs = {p: i for i, p in enumerate(params)}
    assert call(lib, "tfdeblur_deform_conv_backward", **dict(reversed(kwargs.items()))) == 0
    assert seen["tfdeblur_deform_conv_backward"] == tuple(range(len(params)))
    try:
        call(lib, "tfdeblur_deform_conv_forward", dtype=0)
    except TypeError as e:
        assert "geometry" in str(e)
    else:
        raise AssertionError("call() accepted missing arguments")


def test_built_library_exports_the_table_and_rejects_bad_dtype(tmp_path):
    """Builds the library (nvcc only; no GPU): each entry point resolves through the
    table's argtypes and answers -1 to an unknown dtype before touching the device."""
    spec = importlib.util.spec_from_file_location(
        "_tfdeblur_build", os.path.join(ROOT, "custom_ops", "build.py"))
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    if build.find_nvcc() is None:
        pytest.skip("no nvcc: cannot build the standalone CUDA library")
    subprocess.run([sys.executable, os.path.join(ROOT, "custom_ops", "build.py"),
                    "--standalone-cuda", str(tmp_path)], check=True, capture_output=True,
                   timeout=600)
    lib = bind(ctypes.CDLL(str(tmp_path / "libtfdeblur_cuda_standalone.so")))
    geometry = (ctypes.c_int64 * len(DCN_GEOMETRY))(*([1] * len(DCN_GEOMETRY)))
    directions = (ctypes.c_int * 4)(0, 1, 2, 3)
    for name, (_, params) in SIGNATURES.items():
        args = {p: None for p, _ in params}
        args.update(dtype=7)
        if "geometry" in args:
            args["geometry"] = geometry
        if "directions" in args:
            args.update(n=1, h=1, w=1, c=1, slots=4, directions=directions)
        assert call(lib, name, **args) == -1, name
