"""Every CUDA source must compile, so a broken kernel fails CI even on machines without a GPU.

nvcc checks the source offline (PTX for the default architecture and a cubin for sm_90, the H100/H200);
at run time the same text is compiled by NVRTC through CuPy, so the sources must stay NVRTC-compatible
(no host headers), which the last test checks by calling NVRTC itself (no CuPy, no GPU; the dev extra
installs it). Both compile tests carry the ``cuda_compile`` marker: they may skip only where their compiler
is missing, and never in CI (``conftest.py``).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.support.cuda_toolchain import find_nvcc, load_nvrtc, nvrtc_compile, nvrtc_version

ROOT = Path(__file__).resolve().parents[1]
CUDA_SOURCES = sorted((ROOT / "cuda").glob("*.cu"))
NVCC = find_nvcc()


def test_there_are_cuda_sources() -> None:
    assert CUDA_SOURCES, "cuda/*.cu not found"
    assert not (ROOT / "cuda" / "__init__.py").exists(), "cuda/ must stay a namespace package"


def _nvcc(args: list[str]) -> subprocess.CompletedProcess[str]:
    assert NVCC is not None
    return subprocess.run([NVCC, *args], capture_output=True, text=True, timeout=300)


@pytest.mark.cuda_compile("nvcc")
@pytest.mark.skipif(NVCC is None, reason="nvcc (CUDA toolkit) is not installed on this machine")
@pytest.mark.parametrize("source", CUDA_SOURCES, ids=lambda p: p.name)
@pytest.mark.parametrize("target", ["ptx", "cubin-sm90"])
def test_nvcc_compiles(source: Path, target: str, tmp_path: Path) -> None:
    if target == "ptx":
        args = ["--ptx", str(source), "-o", str(tmp_path / (source.stem + ".ptx"))]
    else:
        args = ["-cubin", "-arch=sm_90", str(source), "-o", str(tmp_path / (source.stem + ".cubin"))]
    result = _nvcc(["-std=c++14", "-Werror", "all-warnings", *args])
    assert result.returncode == 0, f"nvcc failed on {source.name}:\n{result.stdout}\n{result.stderr}"
    assert any(tmp_path.iterdir())


@pytest.mark.parametrize("source", CUDA_SOURCES, ids=lambda p: p.name)
def test_sources_are_nvrtc_friendly(source: Path) -> None:
    """NVRTC has no host headers; kernels are looked up by unmangled name."""
    text = source.read_text(encoding="utf-8")
    assert "#include <" not in text and '#include "' not in text
    assert 'extern "C" __global__' in text


@pytest.mark.cuda_compile("nvrtc")
@pytest.mark.skipif(load_nvrtc() is None, reason="no NVRTC library (pip install nvidia-cuda-nvrtc)")
@pytest.mark.parametrize("source", CUDA_SOURCES, ids=lambda p: p.name)
def test_nvrtc_compiles(source: Path) -> None:
    """The run-time compile, with the loader's own options, for the H100/H200's compute_90."""
    from cuda.aware3d_mc import NVRTC_OPTIONS

    ok, log, ptx_bytes = nvrtc_compile(source.read_text(encoding="utf-8"), source.name,
                                       [*NVRTC_OPTIONS, "--gpu-architecture=compute_90"])
    assert ok, f"NVRTC {nvrtc_version()} failed on {source.name}:\n{log}"
    assert ptx_bytes > 0
