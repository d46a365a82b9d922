"""The GPU suite's dry run: every step of ``benchmarks/gpu_suite.py`` in order on the CPU, so it cannot rot.

A GPU is lent rarely; a suite that only runs then breaks unnoticed. The dry run uses the same code paths at
tiny sizes with the gloo backend (two processes) and skips only the CUDA-only parts, which it must say.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import gpu_suite

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_dry_run_runs_every_step_on_the_cpu(tmp_path: Path) -> None:
    out = tmp_path / "results"
    run = subprocess.run([sys.executable, "benchmarks/gpu_suite.py", "--dry-run", "--out", str(out)], cwd=ROOT,
                         capture_output=True, text=True,
                         timeout=gpu_suite.DEFAULT_BUDGET_S * gpu_suite.DRY_RUN_SLACK + 120)
    suite = json.loads((out / "suite.json").read_text())
    steps = {s["name"]: s for s in suite["steps"]}
    failed = {n: s["notes"] + [s["log_tail"][-1500:]] for n, s in steps.items() if s["status"] != "passed"}
    assert run.returncode == 0 and not failed, failed or run.stdout[-3000:]
    assert list(steps) == [s.name for s in gpu_suite.STEPS]
    assert suite["dry_run"] and suite["command"].startswith("python benchmarks/gpu_suite.py --dry-run")
    # what needs CUDA is skipped with a reason, not silently
    assert any("no CUDA" in n for n in steps["marching_cubes"]["notes"])
    assert any("skip without CUDA" in n for n in steps["gpu_tests"]["notes"])
    assert "gloo, world size 2" in " ".join(steps["collectives"]["notes"])
    # each step's JSON says how to remake it
    for name in [f for s in steps.values() for f in s["files"]]:
        report = json.loads(Path(name if Path(name).is_absolute() else ROOT / name).read_text())
        assert report["command"].startswith("python benchmarks/"), name
    train = json.loads((out / "train_smoke.json").read_text())
    assert train["processes"] == 2 and train["amp"] and train["losses_finite"] and train["exported"]


def test_unknown_step_and_missing_gpu_are_refused(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="unknown step"):
        gpu_suite.main(["--dry-run", "--only", "nope", "--out", str(tmp_path)])
    if not gpu_suite.cuda_device_count():
        with pytest.raises(SystemExit, match="--dry-run"):
            gpu_suite.main(["--out", str(tmp_path)])


def test_requirements_come_from_pyproject() -> None:
    reqs = gpu_suite.pyproject_requirements()
    for dist in (*gpu_suite.NEEDED_MODULES.values(), *gpu_suite.DEVICE_IMAGE_LACKS):
        assert dist.lower() in reqs, f"{dist} is not a dependency in pyproject.toml"
    assert any(name.startswith("cupy") for name in reqs), "the gpu extra names CuPy"


def test_a_step_past_its_limit_is_killed_with_its_children(tmp_path: Path) -> None:
    import argparse
    import time

    suite = gpu_suite.Suite(argparse.Namespace(dry_run=True, budget_s=100), tmp_path / "out", tmp_path)
    suite.step_deadline = time.monotonic() + 5.5
    outcome = gpu_suite.Outcome("sleeper")
    child = "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); " \
            "print('started', flush=True); time.sleep(60)"
    t0 = time.monotonic()
    with pytest.raises(gpu_suite.StepTimeout, match="killed after"):
        suite.run(outcome, [sys.executable, "-c", child])
    assert time.monotonic() - t0 < 20 and "started" in outcome.log_tail
    with pytest.raises(gpu_suite.StepTimeout, match="no time left"):
        suite.run(outcome, [sys.executable, "-c", "pass"])
