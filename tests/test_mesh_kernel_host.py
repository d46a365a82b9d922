"""The CUDA kernel source, executed on the CPU: compiled as plain C++ and driven by the loader's host code.

No GPU is needed: CUDA's qualifiers become plain C++, each "thread" is one step of a loop, and
``cuda.aware3d_mc.run_passes`` (the same host code the GPU path runs: allocation, torch.cumsum scans,
kernel order and arguments) drives it. Its raw output must equal the numpy twin's array for array, so the
kernel's index arithmetic and tables are checked on every CI run, not only on GPU machines.
"""

from __future__ import annotations

import ctypes
import shutil
import subprocess
from typing import Any

import numpy as np
import pytest
import torch
from test_mesh_mc import GRIDS, assert_same_mesh

from backend.mesh.marching_cubes import marching_cubes, weld_and_clean
from backend.mesh.mc_reference import marching_cubes_reference
from cuda import aware3d_mc

CXX = shutil.which("g++") or shutil.which("clang++")

HARNESS = r"""
#define __global__
#define __device__
#define __forceinline__ inline
#define __restrict__ __restrict
#define __constant__ static const
struct a3d_dim3 { unsigned int x; };
static a3d_dim3 blockIdx, threadIdx, blockDim;
static inline int __popc(unsigned int v) { return __builtin_popcount(v); }
#include "SOURCE"

#define A3D_LOOP(call) blockDim.x = 1; threadIdx.x = 0; \
    for (long long t = 0; t < threads; ++t) { blockIdx.x = (unsigned int)t; call; }

extern "C" {
void host_classify(long long threads, const float* g, long long nx, long long ny, long long nz, float thr,
                   unsigned char* em, unsigned char* cc, int* vc, int* tc) {
    A3D_LOOP(a3d_mc_classify(g, nx, ny, nz, thr, em, cc, vc, tc))
}
void host_vertices(long long threads, const float* g, long long nx, long long ny, long long nz,
                   double level, const unsigned char* em, const int* vb, float* v, long long* k) {
    A3D_LOOP(a3d_mc_vertices(g, nx, ny, nz, level, em, vb, v, k))
}
void host_faces(long long threads, long long nx, long long ny, long long nz, const unsigned char* cc,
                const int* tb, const unsigned char* em, const int* vb, long long* f) {
    A3D_LOOP(a3d_mc_faces(nx, ny, nz, cc, tb, em, vb, f))
}
}
"""


@pytest.fixture(scope="module")
def host_kernels(tmp_path_factory: pytest.TempPathFactory) -> ctypes.CDLL:
    if CXX is None:
        pytest.skip("no C++ compiler to build the kernel source for the CPU")
    work = tmp_path_factory.mktemp("kernel_host")
    harness = work / "harness.cpp"
    harness.write_text(HARNESS.replace("SOURCE", str(aware3d_mc.SOURCE)), encoding="utf-8")
    lib = work / "libmc_host.so"
    result = subprocess.run([CXX, "-O2", "-std=c++14", "-shared", "-fPIC", str(harness), "-o", str(lib)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return ctypes.CDLL(str(lib))


def _launcher(lib: ctypes.CDLL) -> Any:
    def launch(name: str, threads: int, args: tuple[Any, ...]) -> None:
        converted: list[Any] = [ctypes.c_longlong(threads)]
        for a in args:
            if isinstance(a, torch.Tensor):
                assert a.is_contiguous() and a.device.type == "cpu"
                converted.append(ctypes.c_void_p(a.data_ptr()))
            elif isinstance(a, np.int64):
                converted.append(ctypes.c_longlong(int(a)))
            elif isinstance(a, np.float32):
                converted.append(ctypes.c_float(float(a)))
            elif isinstance(a, np.float64):
                converted.append(ctypes.c_double(float(a)))
            else:
                raise TypeError(f"unexpected kernel argument {type(a)}")
        getattr(lib, "host_" + name.removeprefix("a3d_mc_"))(*converted)

    return launch


@pytest.mark.parametrize("name", sorted(GRIDS))
def test_kernel_source_equals_the_numpy_twin(host_kernels: ctypes.CDLL, name: str) -> None:
    grid, level = GRIDS[name]()
    v, f, k = aware3d_mc.run_passes(torch.from_numpy(np.ascontiguousarray(grid)), level, _launcher(host_kernels))
    ref = marching_cubes_reference(grid, level)
    np.testing.assert_array_equal(f.numpy(), ref.faces)
    np.testing.assert_array_equal(k.numpy(), ref.weld_key)
    np.testing.assert_array_equal(v.numpy(), ref.verts.astype(np.float32))
    # and after the shared weld, the CPU library path's mesh
    assert_same_mesh(weld_and_clean(v, f, k), marching_cubes(grid, level, "pymcubes"))


def test_kernel_source_on_an_empty_and_a_flat_grid(host_kernels: ctypes.CDLL) -> None:
    launch = _launcher(host_kernels)
    v, f, k = aware3d_mc.run_passes(torch.zeros((5, 6, 7)), 1.0, launch)
    assert v.shape == (0, 3) and f.shape == (0, 3) and k.shape == (0,)
    g = torch.zeros((6, 6, 6))
    g[:, :3] = 2.0  # a plane at the level between y = 2 and 3
    v, f, _ = aware3d_mc.run_passes(g, 1.0, launch)
    np.testing.assert_allclose(v[:, 1].numpy(), 2.5)
    assert len(f) == 2 * 5 * 5
