# SPDX-License-Identifier: GPL-3.0-or-later
"""What every results file says about how it was made: the command that reproduces it and the machine state.

Why one helper: a number in ``benchmarks/results/`` is only evidence if rerunning the command stored next to
it rewrites that same file. Earlier results were hand-edited (a ``command`` typed in afterwards, an
``other_runs`` block pasted in) or written by older script versions, so the figures in the docs could not be
traced. Every benchmark script now builds its report, then calls :meth:`Run.finish`, which adds

* ``command``: ``python benchmarks/<script>.py <the arguments as given>``, the script path relative to the
  repository root, so it can be pasted into a shell at the root;
* ``environment``: interpreter, library versions, CPU, torch threads, the CUDA device when one was used,
  the 1-minute load average before and after (CPU timings on a shared machine scale with what else runs),
  relevant thread and device environment variables, the git commit and whether the tree had local changes,
  and the date;

and writes the file (atomically) when an output path was given. ``tests/test_benchmark_results.py`` checks
that every results file carries a command naming a script that exists.
"""

from __future__ import annotations

import os
import platform
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from backend.fileio import write_json

ROOT = Path(__file__).resolve().parents[1]

# Environment variables that change what a benchmark measures (thread pools, visible devices, model folders).
RELEVANT_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "CUDA_VISIBLE_DEVICES", "AWARE3D_MODELS",
                "AWARE3D_BACKEND_PYTHON", "PYTHONPATH")


def command_line(script: str | os.PathLike[str], argv: Sequence[str]) -> str:
    """The shell command that reruns ``script`` with ``argv`` from the repository root."""
    path = Path(script).resolve()
    try:
        shown = path.relative_to(ROOT).as_posix()
    except ValueError:  # a copy outside the repository: keep the absolute path
        shown = str(path)
    return shlex.join(["python", shown, *argv])


def load_average() -> float | None:
    """The 1-minute load average (None where the OS has none)."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git(*args: str) -> str | None:
    try:
        run = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return run.stdout.strip() if run.returncode == 0 else None


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in ("torch", "numpy"):
        module = sys.modules.get(name)
        if module is not None:
            out[name] = str(getattr(module, "__version__", "?"))
    return out


class Run:
    """One benchmark run: created when the script starts (load before), finished when its report is ready."""

    def __init__(self, script: str | os.PathLike[str], argv: Sequence[str] | None = None) -> None:
        self.argv = list(sys.argv[1:] if argv is None else argv)
        self.command = command_line(script, self.argv)
        self.load_before = load_average()
        self.started = time.time()

    def environment(self, device: Any = None) -> dict[str, Any]:
        """Facts about the machine and the software at the end of the run."""
        status = _git("status", "--porcelain", "--untracked-files=no")
        env: dict[str, Any] = {
            "interpreter": sys.executable,
            "versions": _versions(),
            "platform": platform.platform(),
            "cpu": cpu_model(),
            "cpu_count": os.cpu_count(),
            "load_average_1min_before": self.load_before,
            "load_average_1min_after": load_average(),
            "wall_s": round(time.time() - self.started, 2),
            "variables": {k: os.environ[k] for k in RELEVANT_ENV if k in os.environ},
            "git_commit": _git("rev-parse", "HEAD"),
            "git_local_changes": None if status is None else bool(status),
            "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        }
        torch = sys.modules.get("torch")
        if torch is not None:
            env["torch_threads"] = torch.get_num_threads()
            if device is not None and str(device).startswith("cuda") and torch.cuda.is_available():
                env["cuda_device"] = torch.cuda.get_device_name(device)
                env["cuda_runtime"] = torch.version.cuda
        return env

    def finish(self, result: dict[str, Any], out: str | os.PathLike[str] | None = None,
               device: Any = None) -> dict[str, Any]:
        """``result`` with ``command`` and ``environment`` added; written to ``out`` when given."""
        report = {**result, "command": self.command, "environment": self.environment(device)}
        if out is not None:
            write_json(out, report)
        return report
