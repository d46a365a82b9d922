"""Every CUDA source must compile, so a broken kernel fails CI even on machines without a GPU.

nvcc checks the source offline (PTX for the default architecture and a cubin for sm_90, the H100/H200);
at run time the same text is compiled by NVRTC through CuPy, so the sources must stay NVRTC-compatible
(no host headers), which the last test checks when NVRTC is loadable.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CUDA_SOURCES = sorted((ROOT / "cuda").glob("*.cu"))
NVCC = shutil.which("nvcc") or next(
    (str(p) for p in (Path("/usr/local/cuda/bin/nvcc"),) if p.is_file()), None
)


def test_there_are_cuda_sources() -> None:
    assert CUDA_SOURCES, "cuda/*.cu not found"
    assert not (ROOT / "cuda" / "__init__.py").exists(), "cuda/ must stay a namespace package"


def _nvcc(args: list[str]) -> subprocess.CompletedProcess[str]:
    assert NVCC is not None
    return subprocess.run([NVCC, *args], capture_output=True, text=True, timeout=300)


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


@pytest.mark.parametrize("source", CUDA_SOURCES, ids=lambda p: p.name)
def test_nvrtc_compiles(source: Path) -> None:
    compiler = pytest.importorskip("cupy.cuda.compiler", reason="CuPy is not installed")
    try:
        compiler.compile_using_nvrtc(source.read_text(encoding="utf-8"), options=("--std=c++14",),
                                     arch="compute_90")
    except Exception as exc:  # no driver / no libnvrtc: nothing to test here
        if "nvrtc" in type(exc).__name__.lower() and "compil" in str(exc).lower():
            raise
        pytest.skip(f"NVRTC is not usable on this machine ({type(exc).__name__})")
