# SPDX-License-Identifier: GPL-3.0-or-later
"""Everything that needs a GPU, in one run: tests, kernel check, benchmarks, a DDP + ``--amp`` training smoke run.

    python3 benchmarks/gpu_suite.py --wheels .whl --archive "$OUT/gpu_results.tar.gz"   # on a GPU machine
    python benchmarks/gpu_suite.py --dry-run                                            # here / in CI (CPU)
    python benchmarks/gpu_suite.py --fetch-wheels .whl    # here: wheels the GPU machine's image lacks

Why one script: the CUDA kernel, the GPU benchmarks and GPU training had never run on a GPU, and a GPU is lent
rarely and briefly (one machine, minutes, no network). So every GPU check is one command that sets itself up
from what the machine has, gives each step its own time limit inside an overall budget (8 minutes on one
H100 by default), keeps going when a step fails, and writes every result as JSON to one folder,
``benchmarks/results/gpu/<device>/``: one file per benchmark, written by the benchmark script itself (with the
command that reproduces it), plus ``suite.json`` with each step's status, time, commands and log tail. And
because such a script rots when it only runs on the rare GPU day, ``--dry-run`` runs the same steps in the
same order on the CPU at tiny sizes, with the gloo backend instead of NCCL, skipping only what truly needs
CUDA (and saying so in ``suite.json``); ``tests/test_gpu_suite.py`` runs it in CI.

Steps (``--only`` picks some; each step's JSON records ``--only <step>`` as the command that remakes it):

    setup           import what the suite needs; install missing packages from --wheels (or with pip)
    gpu_tests       every test marked ``gpu`` or ``cuda_compile``; on a GPU a skipped one is a failure
    marching_cubes  the CUDA kernel against the CPU path (same mesh) and the libraries, 256³ and 512³
    render_*        benchmarks/render.py: EG3D 512² batch 1 and batch 16 with fp16 SR, Mimic3D 512² direct
    mesh_*          benchmarks/mesh.py: analytic field 128³–1024³, the bundled model 128³–512³
    views           benchmarks/views.py: novel views with the bundled view models
    inversion       benchmarks/inversion.py on freshly rendered held-out heads (+ user outputs and the photo)
    collectives     all_reduce across torchrun processes (NCCL on GPUs, gloo in the dry run)
    train_smoke     aware3d-train gan --preset tiny --amp under torchrun: runs, finite losses, exported model
    dataset         benchmarks/dataset.py: synthetic-head rendering on the device

One GPU cannot hold two NCCL ranks (NCCL refuses a duplicate GPU), so on a one-GPU machine the collectives and
the training run have a single process, and ``suite.json`` says that the multi-rank path was not exercised
there; the dry run's two gloo processes exercise it on the CPU.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
import tomllib
import traceback
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.record import ROOT, Run

SCRIPT = Path(__file__).resolve()
RESULTS_GPU = ROOT / "benchmarks" / "results" / "gpu"
DEFAULT_BUDGET_S = 450  # 8 minutes on one H100, less a margin for the machine's own start and copy-back
# The dry run checks that every step works, not how fast: it shares CI's two cores with the rest of the test
# suite (two pytest workers), so its steps and budget get this many times the GPU run's limits.
DRY_RUN_SLACK = 4

# What the suite imports, by import name -> distribution name in pyproject.toml (versions are read there).
NEEDED_MODULES = {
    "torch": "torch", "numpy": "numpy", "scipy": "scipy", "safetensors": "safetensors", "skimage": "scikit-image",
    "mcubes": "PyMCubes", "fast_simplification": "fast-simplification", "xatlas": "xatlas", "cv2": "opencv-python",
    "imageio": "imageio", "PIL": "pillow", "tqdm": "tqdm", "requests": "requests", "pytest": "pytest",
}
CUDA_MODULES = {"cupy": "cupy"}  # the CUDA marching-cubes kernel runs through CuPy (the gpu extra's cupy-cudaXX)
# Project dependencies the lent GPU machines' image does not have (its package list is in the device tool's
# notes); --fetch-wheels downloads these for its Python so that --wheels can install them without a network.
DEVICE_IMAGE_LACKS = ("PyMCubes", "fast-simplification", "xatlas")


@dataclass
class Outcome:
    """What one step did, as ``suite.json`` records it."""

    name: str
    status: str = "passed"  # passed | failed | timeout | skipped | not_run
    seconds: float = 0.0
    commands: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    log_tail: str = ""


class StepFailed(Exception):
    """A step's check failed (its command ran but the result is wrong)."""


class StepTimeout(Exception):
    """A step's command ran past its time limit and was killed."""


@dataclass(frozen=True)
class Step:
    name: str
    timeout_s: int
    run: Callable[[Suite, Outcome], None]


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "unknown"


def shown(path: Path) -> str:
    """A path as commands should show it: relative to the repository root when inside it."""
    try:
        return path.resolve().relative_to(ROOT).as_posix()
    except ValueError:
        return str(path)


def pyproject_requirements() -> dict[str, str]:
    """Pinned requirement strings of pyproject.toml (dependencies and extras) by lower-case distribution name."""
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    reqs = list(data["project"]["dependencies"])
    for extra in data["project"].get("optional-dependencies", {}).values():
        reqs += extra
    out = {}
    for req in reqs:
        name = re.split(r"[=<>!~;\[ ]", req, maxsplit=1)[0].strip().lower()
        if name and name != "aware3d":
            out.setdefault(name, req)
    return out


def requirement(reqs: dict[str, str], dist: str) -> str:
    """The pinned requirement for ``dist``; a bare family name (``cupy``) picks the extra's variant."""
    return reqs.get(dist.lower()) or next((r for n, r in reqs.items() if n.startswith(dist.lower() + "-")), dist)


class Suite:
    """Runs the steps in order within the budget; knows whether this is the GPU run or the CPU dry run."""

    def __init__(self, args: argparse.Namespace, out_dir: Path, work: Path) -> None:
        self.args = args
        self.dry = bool(args.dry_run)
        self.out_dir = out_dir
        self.work = work
        self.logs = out_dir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.python = sys.executable
        self.deadline = time.monotonic() + args.budget_s
        self.step_deadline = self.deadline  # set by the driver from each step's own limit
        self.env = dict(os.environ, PYTHONUNBUFFERED="1",
                        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
        self.device = "cpu" if self.dry else "cuda"
        self.gpus = 0 if self.dry else cuda_device_count()

    # -- helpers for steps ------------------------------------------------------------------------------------

    def remaining(self) -> float:
        """Seconds left for the current step: its own limit, capped by the suite's budget."""
        return min(self.step_deadline, self.deadline) - time.monotonic()

    def json_path(self, name: str) -> Path:
        return self.out_dir / f"{name}.json"

    def remake(self, step: str) -> list[str]:
        """The suite arguments that remake one step's JSON (recorded as that JSON's command)."""
        return [*(["--dry-run"] if self.dry else []), "--only", step, "--out", shown(self.out_dir)]

    def bench(self, script: str, *args: str) -> list[str]:
        return [self.python, f"benchmarks/{script}", *args]

    def cpu_threads(self) -> list[str]:
        """The dry run shares CI's few cores: one torch thread, like the committed CPU results."""
        return ["--threads", "1"] if self.dry else []

    def run(self, outcome: Outcome, cmd: Sequence[str], label: str | None = None) -> str:
        """Run ``cmd`` at the repository root, its output to a log; return the output; raise on failure."""
        limit = self.remaining()
        if limit < 5:
            raise StepTimeout(f"no time left for {label or outcome.name} (step limit or suite budget)")
        shown_cmd = shlex.join([("python" if c == self.python else c) for c in cmd])
        outcome.commands.append(shown_cmd)
        log = self.logs / f"{label or outcome.name}.log"
        with open(log, "w") as f:
            f.write(f"$ {shown_cmd}\n")
            f.flush()
            proc = subprocess.Popen(list(cmd), cwd=ROOT, env=self.env, stdout=f, stderr=subprocess.STDOUT,
                                    start_new_session=True)  # its own process group: a timeout kills it all
            try:
                rc = proc.wait(timeout=limit)
            except subprocess.TimeoutExpired:
                kill_group(proc)
                rc = None
        text = log.read_text(errors="replace")
        outcome.log_tail = text[-3000:]
        if rc is None:
            raise StepTimeout(f"{label or outcome.name}: killed after {limit:.0f} s")
        if rc != 0:
            raise StepFailed(f"{label or outcome.name}: exit status {rc}")
        return text

    def write_step_json(self, outcome: Outcome, name: str, report: dict[str, Any]) -> None:
        """A JSON the suite itself makes (not a benchmark script), with the command that remakes it."""
        path = self.json_path(name)
        Run(SCRIPT, self.remake(outcome.name)).finish(report, path, self.device)
        outcome.files.append(shown(path))

    def benchmark(self, outcome: Outcome, name: str, cmd: list[str]) -> dict[str, Any]:
        """Run a benchmark script with ``--out`` in the results folder; return what it wrote."""
        path = self.json_path(name)
        self.run(outcome, [*cmd, "--out", shown(path)], label=name)
        outcome.files.append(shown(path))
        return json.loads(path.read_text())


def kill_group(proc: subprocess.Popen[Any]) -> None:
    """SIGTERM the process group (torchrun forwards it; trainers snapshot), SIGKILL what is left after 10 s."""
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def cuda_device_count() -> int:
    try:
        import torch
    except ImportError:
        return 0
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


# ------------------------------------------------------------------------------------------------------------
# Steps
# ------------------------------------------------------------------------------------------------------------

PROBE = """
import importlib, json, sys
missing, versions = {}, {}
for name in sys.argv[1:]:
    try:
        module = importlib.import_module(name)
        versions[name] = str(getattr(module, "__version__", "?"))
    except Exception as exc:  # an ABI mismatch is as fatal as a missing package
        missing[name] = f"{type(exc).__name__}: {exc}"[:300]
print(json.dumps({"missing": missing, "versions": versions}))
"""


def probe_imports(suite: Suite, outcome: Outcome, modules: Sequence[str], label: str) -> dict[str, Any]:
    text = suite.run(outcome, [suite.python, "-c", PROBE, *modules], label=label)
    return json.loads(text.strip().splitlines()[-1])


def step_setup(suite: Suite, outcome: Outcome) -> None:
    """Check the imports; install what is missing (wheels first, then pip when --pip is given); record versions."""
    modules = {**NEEDED_MODULES, **({} if suite.dry else CUDA_MODULES)}
    found = probe_imports(suite, outcome, list(modules), "setup_probe")
    installed: list[str] = []
    if found["missing"] and not suite.dry:
        wheels = sorted(Path(suite.args.wheels).glob("*.whl")) if suite.args.wheels else []
        if wheels:
            suite.run(outcome, [suite.python, "-m", "pip", "install", "-q", "--no-index", "--no-deps",
                                *map(str, wheels)], label="setup_wheels")
            installed += [w.name for w in wheels]
        elif suite.args.pip:
            reqs = pyproject_requirements()
            wanted = [requirement(reqs, modules[m]) for m in found["missing"]]
            suite.run(outcome, [suite.python, "-m", "pip", "install", "-q", *wanted], label="setup_pip")
            installed += wanted
        if installed:
            found = probe_imports(suite, outcome, list(modules), "setup_probe_after")
    report: dict[str, Any] = {"modules": found, "installed": installed, "dry_run": suite.dry,
                              "cuda_devices": suite.gpus, "tools": tool_versions()}
    if suite.dry:
        outcome.notes.append(f"dry run: nothing installed; CUDA-only modules not checked ({', '.join(CUDA_MODULES)})")
    suite.write_step_json(outcome, "setup", report)
    if found["missing"]:
        raise StepFailed("cannot import: " + ", ".join(f"{k} ({v})" for k, v in found["missing"].items())
                         + "; carry wheels (--fetch-wheels here, --wheels there) or pass --pip where pip can fetch")


def tool_versions() -> dict[str, str | None]:
    def first_line(cmd: list[str]) -> str | None:
        try:
            run = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            return None
        lines = [ln for ln in run.stdout.splitlines() if ln.strip()]
        return lines[-1].strip() if run.returncode == 0 and lines else None

    return {"nvidia-smi": first_line(["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                                      "--format=csv,noheader"]),
            "nvcc": first_line(["nvcc", "--version"])}


def step_gpu_tests(suite: Suite, outcome: Outcome) -> None:
    """pytest on every test marked gpu or cuda_compile; a skip fails the step on a GPU (nothing may hide)."""
    files = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests").glob("test_*.py")
                   if re.search(r"mark\.gpu\b|cuda_compile", p.read_text()))
    junit = suite.work / "gpu_tests.xml"
    # One process: the GPU image has no pytest-xdist, and two workers would share the one GPU anyway; so
    # pyproject's addopts (which ask for two workers) are replaced by their other options.
    cmd = [suite.python, "-m", "pytest", "-q", "-o", "addopts=-ra --strict-markers", "-p", "no:cacheprovider",
           "-m", "gpu or cuda_compile", f"--junitxml={junit}", *files]
    failed: StepFailed | None = None
    try:
        suite.run(outcome, cmd)
    except StepFailed as exc:
        failed = exc
    if not junit.exists():
        raise failed or StepFailed("pytest wrote no report")
    cases = junit_cases(junit)
    counts = {s: sum(c["status"] == s for c in cases) for s in ("passed", "failed", "error", "skipped")}
    skipped = [c for c in cases if c["status"] == "skipped"]
    report = {"files": files, "marker_expression": "gpu or cuda_compile", "counts": counts, "tests": cases}
    suite.write_step_json(outcome, "gpu_tests", report)
    outcome.notes.append(", ".join(f"{v} {k}" for k, v in counts.items() if v))
    if counts["failed"] or counts["error"]:
        raise StepFailed(f"{counts['failed']} failed, {counts['error']} errors")
    if failed:  # pytest itself failed (nothing collected, a usage error): its log tail says why
        raise failed
    if skipped and not suite.dry:
        raise StepFailed(f"{len(skipped)} skipped on a GPU machine: " + "; ".join(
            f"{c['id']}: {c['message']}" for c in skipped[:5]))
    if skipped:
        outcome.notes.append("dry run: the gpu tests skip without CUDA, as expected")


def junit_cases(path: Path) -> list[dict[str, str]]:
    cases = []
    for case in ET.parse(path).getroot().iter("testcase"):
        status, message = "passed", ""
        for tag in ("failure", "error", "skipped"):
            node = case.find(tag)
            if node is not None:
                status = {"failure": "failed"}.get(tag, tag)
                message = (node.get("message") or "")[:300]
                break
        cases.append({"id": f"{case.get('classname')}::{case.get('name')}", "status": status,
                      "seconds": case.get("time", ""), "message": message})
    return cases


def step_marching_cubes(suite: Suite, outcome: Outcome) -> None:
    """The kernel's mesh must equal the CPU path's (``--check-cuda``); the libraries are timed beside it."""
    if suite.dry:
        args = ["--mc-res", "24", "--repeat", "1", "--device", "cpu", *suite.cpu_threads()]
        outcome.notes.append("dry run: no CUDA, so the kernel half is skipped (--check-cuda not passed)")
    else:
        args = ["--mc-res", "256", "512", "--repeat", "3", "--device", "cuda", "--check-cuda"]
    suite.benchmark(outcome, "marching_cubes", suite.bench("mesh.py", "--res", *args))


def render_step(name: str, gpu_args: list[str], dry_model: str) -> Callable[[Suite, Outcome], None]:
    def step(suite: Suite, outcome: Outcome) -> None:
        if suite.dry:
            args = ["--model", dry_model, "--batch", "1", "--iterations", "1", "--warmup", "0", "--device", "cpu",
                    *suite.cpu_threads()]
            if "--fp16-sr" in gpu_args:
                outcome.notes.append("dry run: --fp16-sr is CUDA only (the CPU renders in fp32)")
                args.append("--fp16-sr")
        else:
            args = [*gpu_args, "--device", "cuda"]
        result = suite.benchmark(outcome, name, suite.bench("render.py", *args))
        outcome.notes.append(f"{result['ms_per_image_mean']} ms/image at batch {result['batch']}")

    step.__doc__ = f"benchmarks/render.py {' '.join(gpu_args)}"
    return step


def mesh_step(name: str, gpu_args: list[str], dry_args: list[str]) -> Callable[[Suite, Outcome], None]:
    def step(suite: Suite, outcome: Outcome) -> None:
        args = ([*dry_args, "--repeat", "1", "--device", "cpu", *suite.cpu_threads()] if suite.dry
                else [*gpu_args, "--repeat", "2", "--device", "cuda"])
        suite.benchmark(outcome, name, suite.bench("mesh.py", *args, "--mc-res"))

    step.__doc__ = f"benchmarks/mesh.py {' '.join(gpu_args)}"
    return step


def step_views(suite: Suite, outcome: Outcome) -> None:
    args = (["--steps", "2", "--views", "1", "--repeat", "1", "--device", "cpu", *suite.cpu_threads()]
            if suite.dry else ["--repeat", "3", "--device", "cuda"])
    result = suite.benchmark(outcome, "views", suite.bench("views.py", *args))
    outcome.notes.append(f"next view {result['next_view_s']['median']} s (median)")


def step_dataset(suite: Suite, outcome: Outcome) -> None:
    args = (["--device", "cpu", "--count64", "4", "--count128", "2", "--workers", "1"] if suite.dry
            else ["--device", "cuda", "--count64", "256", "--count128", "128"])
    suite.benchmark(outcome, "dataset", suite.bench("dataset.py", *args))


def make_dataset(suite: Suite, outcome: Outcome, name: str, count: int, test_heads: int = 0) -> Path:
    """A small synthetic-head zip in the work folder (CPU workers: the suite measures rendering elsewhere)."""
    out = suite.work / f"{name}.zip"
    if not out.exists():
        suite.run(outcome, [suite.python, "-m", "train.cli", "make-dataset", "--count", str(count), "--res", "64",
                            "--seed", "1", "--test-heads", str(test_heads), "--quiet", "--out", str(out)],
                  label=f"{outcome.name}_make_dataset")
    return out


def step_inversion(suite: Suite, outcome: Outcome) -> None:
    """Held-out heads rendered here; with imageio-ffmpeg also the user outputs (orbit .mp4) and the photo."""
    heads = 1 if suite.dry else 2
    data = make_dataset(suite, outcome, "heads64", 1, test_heads=heads)
    args = ["--model", "assets/models/aware3d-heads.safetensors", "--test-data", shown(data.with_name(
        "heads64_test.zip")), "--heads", str(heads)]
    if suite.dry:
        args += ["--preset", "fast", "--skip-single-view", "--device", "cpu", *suite.cpu_threads()]
        outcome.notes.append("dry run: --preset fast, one head, no single-view baseline, no user outputs")
    elif probe_imports(suite, outcome, ["imageio_ffmpeg"], "inversion_probe")["missing"]:
        args += ["--device", "cuda"]
        outcome.notes.append("user outputs and photo skipped: imageio-ffmpeg (the orbit .mp4) is not installed")
    else:
        args += ["--device", "cuda", "--outputs", "--photo"]
    result = suite.benchmark(outcome, "inversion", suite.bench("inversion.py", *args))
    outcome.notes.append(f"full pipeline {result['summary']['seconds']['full_pipeline']['mean']} s per head")


def torchrun(suite: Suite, procs: int, *args: str) -> list[str]:
    return [suite.python, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(procs), *args]


def world(suite: Suite, outcome: Outcome) -> int:
    """Processes for the distributed steps: one per GPU, two gloo processes in the dry run."""
    if suite.dry:
        return 2
    if suite.gpus < 2:
        outcome.notes.append(f"{suite.gpus} GPU: one process (NCCL refuses two ranks on one GPU), so the "
                             "multi-rank path ran only in the dry run's gloo processes")
    return max(suite.gpus, 1)


def step_collectives(suite: Suite, outcome: Outcome) -> None:
    procs = world(suite, outcome)
    path = suite.work / "collectives.json"
    suite.run(outcome, torchrun(suite, procs, str(SCRIPT), "--probe-collectives", str(path),
                                "--backend", "gloo" if suite.dry else "nccl"))
    report = json.loads(path.read_text())
    suite.write_step_json(outcome, "collectives", report)
    if not report["correct"]:
        raise StepFailed(f"all_reduce gave {report['sum']} instead of {report['expected']}")
    outcome.notes.append(f"{report['backend']}, world size {report['world_size']}, all_reduce correct")


def probe_collectives(path: Path, backend: str) -> int:
    """Run under torchrun: all_reduce a known tensor (and time a 64 MiB one on GPUs); rank 0 writes JSON."""
    import torch
    import torch.distributed as dist

    local = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device("cuda", local) if backend == "nccl" else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend=backend)
    rank, size = dist.get_rank(), dist.get_world_size()
    t = torch.full((1024,), float(rank + 1), device=device)
    dist.all_reduce(t)
    expected = size * (size + 1) / 2
    report: dict[str, Any] = {"backend": backend, "world_size": size, "device": str(device),
                              "sum": float(t[0]), "expected": expected, "correct": bool((t == expected).all())}
    if device.type == "cuda":
        big = torch.ones(16 * 2**20, device=device)  # 64 MiB of float32
        dist.all_reduce(big)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(10):
            dist.all_reduce(big)
        torch.cuda.synchronize()
        report["all_reduce_64MiB_ms"] = round((time.perf_counter() - t0) * 100, 3)
        report["nccl_version"] = ".".join(map(str, torch.cuda.nccl.version()))
    dist.barrier()
    if rank == 0:
        path.write_text(json.dumps(report))
    dist.destroy_process_group()
    return 0


def step_train_smoke(suite: Suite, outcome: Outcome) -> None:
    """A short tiny-preset GAN run under torchrun with --amp: it must finish, log finite losses and export."""
    procs = world(suite, outcome)
    data = make_dataset(suite, outcome, "train64", 16)
    run_dir = suite.work / "gan_run"
    kimg = "0.008" if suite.dry else "0.2"
    suite.run(outcome, torchrun(suite, procs, "-m", "train.cli", "gan", "--data", str(data), "--preset", "tiny",
                                "--out", str(run_dir), "--kimg", kimg, "--batch", "4", "--amp",
                                "--device", suite.device, "--export", str(run_dir / "final.safetensors")))
    log = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines() if line.strip()]
    losses = {k: v for entry in log for k, v in entry.items() if k.startswith("loss/")}
    finite = all(isinstance(v, (int, float)) and v == v and abs(v) != float("inf")
                 for entry in log for k, v in entry.items() if k.startswith("loss/"))
    done = json.loads((run_dir / "done.json").read_text()) if (run_dir / "done.json").exists() else None
    report = {"processes": procs, "backend": "gloo" if suite.dry else "nccl", "device": suite.device, "amp": True,
              "kimg": float(kimg), "done": done, "log_entries": len(log), "last_losses": losses,
              "losses_finite": finite, "exported": (run_dir / "final.safetensors").is_file(),
              "kimg_per_s": log[-1].get("progress/kimg_per_s") if log else None}
    suite.write_step_json(outcome, "train_smoke", report)
    if not (log and finite and done and report["exported"]):
        raise StepFailed(f"log entries {len(log)}, finite losses {finite}, done {bool(done)}, "
                         f"exported {report['exported']}")


# Limits are caps for the slowest plausible run of each step; the suite budget is what keeps the whole in 8 min.
STEPS: tuple[Step, ...] = (
    Step("setup", 150, step_setup),
    Step("gpu_tests", 150, step_gpu_tests),
    Step("marching_cubes", 90, step_marching_cubes),
    Step("render_eg3d_b1", 60, render_step("render_eg3d_b1", [
        "--model", "random:eg3d-ffhq512-128", "--batch", "1", "--iterations", "20", "--warmup", "3"], "random:tiny")),
    Step("render_eg3d_b16_fp16sr", 60, render_step("render_eg3d_b16_fp16sr", [
        "--model", "random:eg3d-ffhq512-128", "--batch", "16", "--fp16-sr", "--iterations", "10", "--warmup", "2"],
        "random:tiny")),
    Step("render_mimic3d_512direct", 90, render_step("render_mimic3d_512direct", [
        "--model", "random:mimic3d-ffhq512-3d", "--resolution", "512", "--iterations", "5", "--warmup", "1"],
        "random:tiny-mimic3d")),
    Step("mesh_analytic", 120, mesh_step("mesh_analytic", ["--res", "128", "256", "512", "--c2f-res", "1024"],
                                         ["--res", "32"])),
    Step("mesh_model", 90, mesh_step("mesh_model", ["--model", "aware3d-heads", "--res", "128", "256", "512"],
                                     ["--model", "aware3d-heads", "--res", "32"])),
    Step("views", 60, step_views),
    Step("inversion", 150, step_inversion),
    Step("collectives", 60, step_collectives),
    Step("train_smoke", 150, step_train_smoke),
    Step("dataset", 90, step_dataset),  # last: the only step no claim is waiting for
)


# ------------------------------------------------------------------------------------------------------------
# Driver
# ------------------------------------------------------------------------------------------------------------


def run_suite(args: argparse.Namespace, argv: list[str]) -> int:
    record = Run(SCRIPT, argv)
    names = [s.name for s in STEPS]
    only = [n for part in args.only for n in part.split(",")] if args.only else names
    unknown = sorted(set(only) - set(names))
    if unknown:
        raise SystemExit(f"unknown step(s) {', '.join(unknown)}; the steps are: {', '.join(names)}")
    if not args.dry_run and cuda_device_count() == 0:
        raise SystemExit("no CUDA GPU here: run with --dry-run on a CPU machine")
    if args.out:
        out_dir = Path(args.out)
    elif args.dry_run:
        out_dir = Path(tempfile.mkdtemp(prefix="aware3d-gpu-suite-dry-"))
    else:
        import torch

        out_dir = RESULTS_GPU / slug(torch.cuda.get_device_name(0))
    out_dir.mkdir(parents=True, exist_ok=True)
    t_start = time.monotonic()
    outcomes: list[Outcome] = []
    with tempfile.TemporaryDirectory(prefix="aware3d-gpu-suite-") as tmp:
        suite = Suite(args, out_dir, Path(tmp))
        print(f"GPU suite{' (dry run, CPU)' if suite.dry else ''}: {len(only)} steps -> {shown(out_dir)}",
              flush=True)
        for step in STEPS:
            if step.name not in only:
                continue
            outcome = Outcome(step.name)
            t0 = time.monotonic()
            suite.step_deadline = t0 + step.timeout_s * (DRY_RUN_SLACK if suite.dry else 1)
            if suite.remaining() < 5:
                outcome.status, outcome.notes = "not_run", [f"suite budget of {args.budget_s} s spent"]
            else:
                try:
                    step.run(suite, outcome)
                except StepTimeout as exc:
                    outcome.status = "timeout"
                    outcome.notes.append(str(exc))
                except StepFailed as exc:
                    outcome.status = "failed"
                    outcome.notes.append(str(exc))
                except Exception as exc:  # a bug in one step must not cost the other steps' results
                    outcome.status = "failed"
                    outcome.notes.append(f"{type(exc).__name__}: {exc}")
                    outcome.log_tail = traceback.format_exc()[-3000:]
            outcome.seconds = round(time.monotonic() - t0, 2)
            outcomes.append(outcome)
            print(f"  {outcome.name:26s} {outcome.status:8s} {outcome.seconds:7.1f} s  {'; '.join(outcome.notes)}",
                  flush=True)
    failed = [o.name for o in outcomes if o.status in ("failed", "timeout", "not_run")]
    summary = {"benchmark": "gpu_suite", "dry_run": bool(args.dry_run), "budget_s": args.budget_s,
               "wall_s": round(time.monotonic() - t_start, 1), "passed": not failed, "failed_steps": failed,
               "steps": [asdict(o) for o in outcomes]}
    record.finish(summary, out_dir / ("suite.json" if not args.only else f"suite_{'_'.join(only)}.json"),
                  "cpu" if args.dry_run else "cuda")
    if args.archive:
        with tarfile.open(args.archive, "w:gz") as tar:
            tar.add(out_dir, arcname=out_dir.name)
    print(f"{'passed' if not failed else 'FAILED: ' + ', '.join(failed)} in {summary['wall_s']} s; "
          f"results in {shown(out_dir)}" + (f", archive {args.archive}" if args.archive else ""), flush=True)
    return 0 if not failed else 1


def fetch_wheels(folder: Path, dists: Sequence[str], python_version: str) -> int:
    """Here (with a network): download wheels for the GPU machine's Python, for --wheels there."""
    reqs = pyproject_requirements()
    wanted = [requirement(reqs, d).split(";")[0].strip() for d in dists]
    platforms = [f"--platform={p}" for p in ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64",
                                             "manylinux_2_17_x86_64", "manylinux2014_x86_64")]
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--implementation", "cp",
           "--python-version", python_version, *platforms, "-d", str(folder), *wanted]
    print("$", shlex.join(cmd), flush=True)
    return subprocess.run(cmd).returncode


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog="See the module docstring and README.")
    p.add_argument("--dry-run", action="store_true", help="CPU and gloo, tiny sizes (CI): the plumbing, not speed")
    p.add_argument("--out", help="results folder (default: benchmarks/results/gpu/<device>/; dry run: a temp dir)")
    p.add_argument("--only", action="append", help="run only these steps (comma-separated or repeated)")
    p.add_argument("--budget-s", type=float, default=None,
                   help=f"the whole suite's wall-time limit (default {DEFAULT_BUDGET_S} s; x{DRY_RUN_SLACK} with "
                        "--dry-run)")
    p.add_argument("--wheels", help="folder of wheels to install when an import is missing (no network there)")
    p.add_argument("--pip", action="store_true", help="install missing packages with pip from the registry")
    p.add_argument("--archive", help="also pack the results folder into this .tar.gz (e.g. $OUT/gpu_results.tar.gz)")
    p.add_argument("--fetch-wheels", metavar="FOLDER", help="download the wheels the GPU image lacks, then exit")
    p.add_argument("--dists", nargs="*", default=list(DEVICE_IMAGE_LACKS), help="with --fetch-wheels")
    p.add_argument("--wheel-python", default="3.12", help="with --fetch-wheels: the GPU machine's Python")
    p.add_argument("--probe-collectives", metavar="JSON", help=argparse.SUPPRESS)
    p.add_argument("--backend", default="nccl", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.budget_s is None:
        args.budget_s = DEFAULT_BUDGET_S * (DRY_RUN_SLACK if args.dry_run else 1)
    if args.probe_collectives:
        return probe_collectives(Path(args.probe_collectives), args.backend)
    if args.fetch_wheels:
        return fetch_wheels(Path(args.fetch_wheels), args.dists, args.wheel_python)
    return run_suite(args, argv)


if __name__ == "__main__":
    sys.exit(main())
