"""Builds the tfdeblur compiled op library against the installed TensorFlow.

One shared library, ``_tfdeblur_ops.so``, holds every op under
``custom_ops/<op>/``: the schemas (``ops/*.cc``), the CPU kernels
(``kernels/*.cc``) and, when CUDA is enabled, the GPU kernels
(``kernels/*.cu.cc``). Next to it goes ``_build_info.json`` recording the
TensorFlow version it was compiled for, which the loader checks before
loading (a mismatch would otherwise be an undefined-symbol crash).

Usage::

    python custom_ops/build.py [--out DIR] [--cuda auto|0|1] [--jobs N]
    python custom_ops/build.py --standalone-cuda DIR   # TF-free CUDA test library

``TFDEBLUR_CUDA`` (``auto`` | ``0`` | ``1``) sets the default of ``--cuda``:
``auto`` builds the CUDA kernels when this machine has an NVIDIA GPU
(``/dev/nvidia0`` exists or ``nvidia-smi -L`` lists one), ``nvcc`` is found and
TensorFlow is a CUDA build; ``1`` requires them (an error if they cannot be
built; CI uses it to compile the CUDA code on a machine without a GPU).

A build whose inputs are unchanged is skipped: the sources (and this
script), the TensorFlow version and the CUDA choice are recorded in
``.build_fingerprint.json`` beside the library; ``--force`` rebuilds anyway.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import glob
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
LIB_NAME = "_tfdeblur_ops.so"
STANDALONE_NAME = "libtfdeblur_cuda_standalone.so"
FINGERPRINT_NAME = ".build_fingerprint.json"

# Optimisation flags shared by every C++ translation unit. Not -march=native
# (the library must run on other machines than the one that built it), but
# AVX2 + FMA (every x86-64 server CPU since 2013): the GEMM-heavy kernels are
# about twice as fast with them. The loader checks the running CPU for these
# features before loading, so an older CPU gets the portable path, not SIGILL.
REQUIRED_CPU_FEATURES = ["avx2", "fma"]
CXX_FLAGS = ["-O3", "-fPIC", "-shared", "-mavx2", "-mfma",
             "-Wno-deprecated-declarations", "-Wno-ignored-attributes"]


def _log(msg: str) -> None:
    print(f"[tfdeblur build] {msg}", flush=True)


def _sources(pattern: str) -> list[str]:
    return sorted(glob.glob(os.path.join(HERE, "*", pattern)))


def find_nvcc() -> str | None:
    """Returns the CUDA compiler to use, or None."""
    candidates = [os.environ.get("NVCC"), shutil.which("nvcc"), "/usr/local/cuda/bin/nvcc"]
    try:  # nvidia-cuda-nvcc-cu12 wheel (matches TF's CUDA 12 build)
        import nvidia.cuda_nvcc  # type: ignore

        candidates.insert(1, os.path.join(list(nvidia.cuda_nvcc.__path__)[0], "bin", "nvcc"))
    except ImportError:
        pass
    for c in candidates:
        if c and os.path.isfile(c) and os.access(c, os.X_OK):
            return c
    return None


def nvcc_version(nvcc: str) -> tuple[int, int]:
    out = subprocess.run([nvcc, "--version"], capture_output=True, text=True, check=True).stdout
    m = re.search(r"release (\d+)\.(\d+)", out)
    if not m:
        raise RuntimeError(f"cannot parse nvcc version from: {out!r}")
    return int(m.group(1)), int(m.group(2))


def cuda_arch_flags(version: tuple[int, int]) -> list[str]:
    """SASS for the GPUs TensorFlow's wheel supports, plus PTX for newer ones.

    CUDA 13 dropped sm_60/sm_70 (Pascal, Volta); CUDA 12 still has them.
    """
    archs = ["75", "80", "86", "89", "90"]
    if version[0] < 13:
        archs = ["60", "70"] + archs
    flags = []
    for a in archs:
        flags += ["-gencode", f"arch=compute_{a},code=sm_{a}"]
    flags += ["-gencode", "arch=compute_90,code=compute_90"]
    return flags


def cuda_lib_dirs(nvcc: str) -> list[str]:
    """Folders that may hold libcudart_static.a for this nvcc."""
    homes = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"),
             os.path.dirname(os.path.dirname(os.path.realpath(nvcc))), "/usr/local/cuda"]
    dirs = []
    for home in filter(None, homes):
        for sub in ("lib64", "lib", "targets/x86_64-linux/lib"):
            d = os.path.join(home, sub)
            if os.path.isfile(os.path.join(d, "libcudart_static.a")) and d not in dirs:
                dirs.append(d)
    if not dirs:
        raise RuntimeError(f"libcudart_static.a not found for {nvcc} (set CUDA_HOME)")
    return dirs


def _run(cmd: list[str]) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout + proc.stderr)
        raise RuntimeError(f"command failed ({proc.returncode}): {' '.join(cmd[:3])} ...")


def _tf_flags() -> tuple[list[str], list[str], dict]:
    import tensorflow as tf

    return tf.sysconfig.get_compile_flags(), tf.sysconfig.get_link_flags(), {
        "tensorflow_version": tf.__version__,
        "is_cuda_build": bool(tf.sysconfig.get_build_info().get("is_cuda_build", False)),
        "tf_cuda_version": tf.sysconfig.get_build_info().get("cuda_version"),
    }


def gpu_present() -> bool:
    """True when there is an NVIDIA GPU (``/dev/nvidia0``, or ``nvidia-smi -L`` lists one)."""
    if os.path.exists("/dev/nvidia0"):
        return True
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return False
    try:
        proc = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return False
    return proc.returncode == 0 and "GPU" in proc.stdout


def _check_mode(mode: str) -> None:
    if mode not in ("auto", "0", "1"):
        raise ValueError(f"TFDEBLUR_CUDA / --cuda must be auto, 0 or 1, got {mode!r}")


def _want_cuda(mode: str, tf_is_cuda: bool) -> tuple[bool, str | None, str]:
    """Whether to build the CUDA kernels, with which nvcc, and why (for the log)."""
    _check_mode(mode)
    if mode == "0":
        return False, None, "TFDEBLUR_CUDA=0"
    nvcc = find_nvcc()
    if mode == "1":
        if nvcc is None:
            raise RuntimeError("TFDEBLUR_CUDA=1 but no nvcc was found (set NVCC or PATH)")
        return True, nvcc, "TFDEBLUR_CUDA=1"
    if not gpu_present():
        # Compiling the kernels for every GPU architecture takes minutes; without a
        # GPU they would never run.
        return False, None, "auto: no GPU on this machine (TFDEBLUR_CUDA=1 builds them anyway)"
    if nvcc is None:
        return False, None, "auto: a GPU but no nvcc (set NVCC or PATH)"
    if not tf_is_cuda:
        return False, None, "auto: TensorFlow is not a CUDA build"
    return True, nvcc, "auto: GPU, nvcc and a CUDA build of TensorFlow"


def _build_inputs() -> list[str]:
    """Every file the library is compiled from, and this script (its flags)."""
    files = [p for p in _sources("ops/*") + _sources("kernels/*") if os.path.isfile(p)]
    return sorted(files) + [os.path.abspath(__file__)]


def fingerprint(cuda: str) -> dict:
    """What a build depends on, found without importing TensorFlow.

    The sources' hash, the installed TensorFlow's version, and the CUDA choice's
    inputs (the mode; for ``auto`` whether a GPU and an nvcc are present).
    """
    from importlib import metadata

    _check_mode(cuda)
    digest = hashlib.sha256()
    for path in _build_inputs():
        digest.update(os.path.relpath(path, HERE).encode() + b"\0")
        with open(path, "rb") as f:
            digest.update(hashlib.sha256(f.read()).digest())
    try:
        tf_version = metadata.version("tensorflow")
    except metadata.PackageNotFoundError:
        tf_version = None
    key = {"sources_sha256": digest.hexdigest(), "tensorflow_version": tf_version,
           "cuda": cuda}
    if cuda == "auto":
        key["gpu_present"] = gpu_present()
    if cuda != "0":
        key["nvcc"] = find_nvcc()
    return key


def _fingerprint_path(out_dir: str) -> str:
    return os.path.join(out_dir, FINGERPRINT_NAME)


def up_to_date(out_dir: str, key: dict) -> bool:
    """True when ``out_dir`` holds a library built from exactly ``key``'s inputs."""
    try:
        with open(_fingerprint_path(out_dir)) as f:
            recorded = json.load(f)
    except (OSError, ValueError):
        return False
    return recorded == key and all(os.path.isfile(os.path.join(out_dir, name))
                                   for name in (LIB_NAME, "_build_info.json"))


def _replace_file(target: str, *, source: str | None = None, text: str | None = None) -> None:
    """Writes ``target`` atomically from the file ``source`` or from ``text``."""
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(target) + ".",
                               dir=os.path.dirname(target) or ".")
    try:
        with os.fdopen(fd, "wb") as f:
            if source is not None:
                with open(source, "rb") as src:
                    shutil.copyfileobj(src, f)
            else:
                f.write(text.encode())
        os.chmod(tmp, 0o755 if source is not None else 0o644)  # mkstemp makes it 0600
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def build(out_dir: str, cuda: str = "auto", jobs: int | None = None, force: bool = False) -> str:
    """Compiles the op library into ``out_dir`` and returns its path.

    Skipped (the existing library returned) when :func:`fingerprint` matches
    the one recorded by the last build into ``out_dir``, unless ``force``.
    """
    os.makedirs(out_dir, exist_ok=True)
    target = os.path.join(out_dir, LIB_NAME)
    key = fingerprint(cuda)
    if not force and up_to_date(out_dir, key):
        _log(f"{target} is up to date (sources, TensorFlow {key['tensorflow_version']} and "
             f"CUDA choice unchanged); not rebuilt")
        return target
    cflags, lflags, info = _tf_flags()
    use_cuda, nvcc, why = _want_cuda(cuda, info["is_cuda_build"])
    cc_sources = [s for s in _sources("ops/*.cc") + _sources("kernels/*.cc")
                  if not s.endswith(".cu.cc")]
    cu_sources = _sources("kernels/*.cu.cc") if use_cuda else []
    jobs = jobs or max(1, os.cpu_count() or 1)
    _log(f"TensorFlow {info['tensorflow_version']}; {len(cc_sources)} C++ sources; "
         f"CUDA {'on (' + nvcc + ')' if use_cuda else 'off'} ({why})")

    tmp = tempfile.mkdtemp(prefix="tfdeblur_build_")
    try:
        defines = ["-DGOOGLE_CUDA=1"] if use_cuda else []
        include = [f"-I{HERE}"]
        jobs_list = []
        objects = []
        for src in cc_sources:
            obj = os.path.join(tmp, hashlib.md5(src.encode()).hexdigest()[:10]
                               + "_" + os.path.basename(src) + ".o")
            cmd = ["g++", "-c", src, "-o", obj, *CXX_FLAGS, *cflags, *include, *defines]
            jobs_list.append((src, cmd))
            objects.append(obj)
        extra_link: list[str] = []
        if use_cuda:
            version = nvcc_version(nvcc)
            arch = cuda_arch_flags(version)
            # TF's headers are written for clang/nvcc in C++17 and need these.
            nvflags = ["-x", "cu", "-std=c++17", "-O3", "-DGOOGLE_CUDA=1", "-DNDEBUG",
                       "--expt-relaxed-constexpr", "--expt-extended-lambda",
                       "-Xcompiler", "-fPIC", "-Wno-deprecated-gpu-targets",
                       "-diag-suppress", "20012,20014,20015,20236,177,550,611,2417",
                       *[f for f in cflags if f.startswith(("-I", "-D"))], *include, *arch]
            for src in cu_sources:
                obj = os.path.join(tmp, os.path.basename(src) + ".cu.o")
                jobs_list.append((src, [nvcc, "-c", src, "-o", obj, *nvflags]))
                objects.append(obj)
            extra_link = [f"-L{d}" for d in cuda_lib_dirs(nvcc)]
            # Static runtime: the library then loads on machines without a CUDA
            # toolkit, and the GPU code talks to the driver directly.
            extra_link += ["-lcudart_static", "-ldl", "-lrt", "-lpthread"]
            info["cuda_compiler_version"] = ".".join(map(str, version))

        with concurrent.futures.ThreadPoolExecutor(jobs) as pool:
            futures = {pool.submit(_run, cmd): src for src, cmd in jobs_list}
            for fut in concurrent.futures.as_completed(futures):
                fut.result()
                _log(f"compiled {os.path.relpath(futures[fut], HERE)}")

        tmp_lib = os.path.join(tmp, LIB_NAME)
        _run(["g++", *CXX_FLAGS, "-o", tmp_lib, *objects, *lflags, *extra_link])
        info["cuda"] = use_cuda
        info["cpu_features"] = REQUIRED_CPU_FEATURES
        # Each file is copied next to its destination under a unique name and
        # renamed into place: a process loading the library meanwhile sees
        # the old file or the new one, never half of one.
        _replace_file(target, source=tmp_lib)
        _replace_file(os.path.join(out_dir, "_build_info.json"), text=json.dumps(info, indent=2))
        _replace_file(_fingerprint_path(out_dir), text=json.dumps(key, indent=2))
        _log(f"wrote {target}")
        return target
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def build_standalone_cuda(out_dir: str) -> str:
    """Builds the TensorFlow-free CUDA test library (for CuPy / PyTorch checks).

    Compiles ``custom_ops/*/cuda_standalone/*.cu`` which include the same
    raw-pointer kernels (``kernels/*.cu.h``) that the TensorFlow op uses.
    """
    nvcc = find_nvcc()
    if nvcc is None:
        raise RuntimeError("no nvcc found: cannot build the standalone CUDA library")
    sources = _sources("cuda_standalone/*.cu")
    if not sources:
        raise RuntimeError("no custom_ops/*/cuda_standalone/*.cu sources found")
    os.makedirs(out_dir, exist_ok=True)
    target = os.path.join(out_dir, STANDALONE_NAME)
    tmp = tempfile.mkdtemp(prefix="tfdeblur_standalone_")
    try:
        tmp_lib = os.path.join(tmp, STANDALONE_NAME)
        _run([nvcc, "-shared", "-std=c++17", "-O3", "-Xcompiler", "-fPIC",
              "-Wno-deprecated-gpu-targets", f"-I{HERE}",
              *cuda_arch_flags(nvcc_version(nvcc)), "-o", tmp_lib, *sources])
        _replace_file(target, source=tmp_lib)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    _log(f"wrote {target}")
    return target


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    default_out = os.path.join(os.path.dirname(HERE), "tfdeblur", "ops")
    p.add_argument("--out", default=default_out, help="output folder (default: tfdeblur/ops)")
    p.add_argument("--cuda", default=os.environ.get("TFDEBLUR_CUDA", "auto"),
                   help="auto | 0 | 1 (default: $TFDEBLUR_CUDA or auto)")
    p.add_argument("--jobs", type=int, default=None)
    p.add_argument("--force", action="store_true",
                   help="rebuild even when the sources, TensorFlow and CUDA choice are unchanged")
    p.add_argument("--standalone-cuda", metavar="DIR", default=None,
                   help="build the TF-free CUDA test library into DIR instead")
    args = p.parse_args(argv)
    if args.standalone_cuda:
        build_standalone_cuda(args.standalone_cuda)
    else:
        build(args.out, cuda=args.cuda, jobs=args.jobs, force=args.force)
    return 0


if __name__ == "__main__":
    sys.exit(main())
