"""Find the CUDA compilers the compile tests use, without CuPy and without a GPU.

Why not CuPy: the kernels are compiled at run time by NVRTC (through CuPy on a GPU machine), but NVRTC itself
is a plain shared library that needs neither a driver nor a device. Calling it through ``ctypes`` lets CI
check that every ``.cu`` source compiles exactly as it will at run time on a machine without a GPU; the dev
extra installs NVIDIA's ``nvidia-cuda-nvrtc`` wheel for that (Linux x86_64), the same NVRTC a CUDA build of
torch brings. ``conftest.py`` uses :func:`find_nvcc` and :func:`load_nvrtc` to decide whether a skip of the
compile tests is allowed (only where the compiler is missing, and never in CI).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import importlib.util
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path

NVRTC_SUCCESS = 0


def find_nvcc() -> str | None:
    """nvcc on PATH, else the conventional toolkit location."""
    found = shutil.which("nvcc")
    if found:
        return found
    default = Path("/usr/local/cuda/bin/nvcc")
    return str(default) if default.is_file() else None


def _nvrtc_candidates() -> Iterator[str]:
    spec = importlib.util.find_spec("nvidia")  # NVIDIA's wheels: nvidia/cu13/lib (13.x), nvidia/cuda_nvrtc/lib (12.x)
    for root in (spec.submodule_search_locations or []) if spec else []:
        for lib_dir in ("cu13/lib", "cuda_nvrtc/lib"):
            yield from (str(p) for p in sorted(Path(root, lib_dir).glob("libnvrtc.so.*")))
    nvcc = find_nvcc()
    if nvcc:  # a full toolkit keeps NVRTC beside nvcc's lib64
        toolkit = Path(nvcc).resolve().parents[1]
        yield from (str(p) for p in sorted(toolkit.glob("lib64/libnvrtc.so*")))
    name = ctypes.util.find_library("nvrtc")
    if name:
        yield name


@functools.cache
def load_nvrtc() -> ctypes.CDLL | None:
    """The first NVRTC library that loads, or None."""
    for candidate in _nvrtc_candidates():
        try:
            # NVRTC dlopens its builtins by soname; from a wheel's folder that only resolves when they are
            # already loaded (torch and CuPy preload them the same way).
            folder = Path(candidate).parent if Path(candidate).is_absolute() else None
            for builtins in sorted(folder.glob("libnvrtc-builtins.so.*")) if folder else []:
                if ".alt." not in builtins.name:
                    ctypes.CDLL(str(builtins), mode=ctypes.RTLD_GLOBAL)
            lib = ctypes.CDLL(candidate)
        except OSError:
            continue
        lib.nvrtcGetErrorString.restype = ctypes.c_char_p
        return lib
    return None


def nvrtc_version() -> tuple[int, int]:
    lib = load_nvrtc()
    assert lib is not None
    major, minor = ctypes.c_int(), ctypes.c_int()
    _check(lib, lib.nvrtcVersion(ctypes.byref(major), ctypes.byref(minor)), "nvrtcVersion")
    return major.value, minor.value


def _check(lib: ctypes.CDLL, result: int, call: str) -> None:
    if result != NVRTC_SUCCESS:
        raise RuntimeError(f"{call} failed: {lib.nvrtcGetErrorString(result).decode()}")


def nvrtc_compile(source: str, name: str, options: Sequence[str]) -> tuple[bool, str, int]:
    """Compile ``source`` with NVRTC: (compiled, compiler log, PTX size in bytes)."""
    lib = load_nvrtc()
    assert lib is not None, "NVRTC is not available"
    prog = ctypes.c_void_p()
    _check(lib, lib.nvrtcCreateProgram(ctypes.byref(prog), source.encode(), name.encode(), 0, None, None),
           "nvrtcCreateProgram")
    try:
        opts = (ctypes.c_char_p * len(options))(*(o.encode() for o in options))
        result = lib.nvrtcCompileProgram(prog, len(options), opts)
        size = ctypes.c_size_t()
        _check(lib, lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size)), "nvrtcGetProgramLogSize")
        log = ctypes.create_string_buffer(size.value)
        _check(lib, lib.nvrtcGetProgramLog(prog, log), "nvrtcGetProgramLog")
        ptx_size = ctypes.c_size_t()
        if result == NVRTC_SUCCESS:
            _check(lib, lib.nvrtcGetPTXSize(prog, ctypes.byref(ptx_size)), "nvrtcGetPTXSize")
        return result == NVRTC_SUCCESS, log.value.decode(errors="replace"), ptx_size.value
    finally:
        lib.nvrtcDestroyProgram(ctypes.byref(prog))
