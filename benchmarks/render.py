"""Rendering throughput: ms per image, images/s, time per stage and peak memory for a model, resolution, batch
and device, for either implementation, or both side by side.

    python benchmarks/render.py --model random:eg3d-ffhq512-128 --batch 1 --device cpu --threads 1
    python benchmarks/render.py --model random:eg3d-ffhq512-128 --batch 16 --device cuda --fp16-sr \
        --out /tmp/render_gpu.json
    python benchmarks/render.py --model random:eg3d-ffhq512-128 --device cpu --threads 2 --compare \
        --out benchmarks/results/render_speed_eg3d-ffhq512-128_cpu.json
    python benchmarks/render.py --threads 2 --iterations 1 --kernels reference --profile   # where time goes

Prints one JSON object (and writes it with --out). Each timed iteration samples new latents and renders them
(mapping, tri-planes, volume rendering, super-resolution), as ``aware3d sample`` does; ``stages`` splits the
time. Peak memory is the CUDA allocator's peak on GPUs and the process's peak resident set size on CPUs.

``--kernels reference`` times today's eager implementation (what ``--exact`` runs, kept as the baseline);
``--compare`` runs the reference and the fast kernels in turn, each in a fresh process (so each peak memory
is its own), ``--rounds`` times, on the same latents and the same seeded depth jitter, and reports the ratio
per round, its median, and how far the fast images are from the reference ones (PSNR over the last batch).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from backend.devices import hardware_description, resolve_device
from backend.registry import load_generator
from backend.render.renderer import DEFAULT_MEMORY_BUDGET, KERNELS, SamplingSettings
from backend.sampling import camera_label
from benchmarks.record import Run


def current_rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class RssSampler(threading.Thread):
    """Polls the resident set size every few milliseconds: the peak of one phase, not of the process."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak = current_rss_bytes()
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(0.005):
            self.peak = max(self.peak, current_rss_bytes())

    def stop(self) -> int:
        self._stop_event.set()
        self.join()
        return max(self.peak, current_rss_bytes())


def release_free_memory() -> None:
    """Return freed heap memory to the OS (glibc), making RSS track live allocations."""
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def peak_rss_bytes() -> int:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss if sys.platform == "darwin" else rss * 1024


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="random:eg3d-ffhq512-128")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--resolution", type=int, help="neural rendering resolution (default: the model's)")
    p.add_argument("--device", default="auto")
    p.add_argument("--iterations", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--fp16-sr", action="store_true", help="run the super-resolution in fp16 (CUDA only)")
    p.add_argument("--memory-budget", type=int, default=DEFAULT_MEMORY_BUDGET, help="bytes per ray chunk")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--kernels", choices=KERNELS, default="fast",
                   help="which implementation to time (reference: today's eager code, what --exact runs)")
    p.add_argument("--compare", action="store_true",
                   help="time the reference and the fast kernels in turn, each in its own process")
    p.add_argument("--rounds", type=int, default=2, help="with --compare: reference/fast pairs to run")
    p.add_argument("--profile", action="store_true",
                   help="also print (stderr) a torch.profiler table, by operator and input shape, of one image")
    p.add_argument("--save-images", type=Path, help=argparse.SUPPRESS)  # --compare's children: last batch
    p.add_argument("--out", type=Path, help="also write the JSON here")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    record = Run(__file__, argv)
    args = parse_args(argv)
    if args.compare:
        result, device = compare(args, argv if argv is not None else sys.argv[1:]), None
    else:
        result, device = measure(args)
    # Other work on the machine slows CPU runs down: the recorded load average says how busy it was.
    result = record.finish(result, args.out, device)
    print(json.dumps(result, indent=2))
    return result


def measure(args: argparse.Namespace) -> tuple[dict, torch.device]:
    """Time one implementation in this process."""
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    model = load_generator(args.model, device)
    G = model.generator
    cfg = G.cfg
    c = torch.from_numpy(camera_label(cfg, 15, 0))[None].repeat(args.batch, 1).to(device)
    sampling = SamplingSettings(seed=0, memory_budget=args.memory_budget, kernels=args.kernels)
    gen = torch.Generator(device="cpu").manual_seed(0)
    stage_names = ("mapping", "planes", "render", "superresolution")

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    def step() -> tuple[dict[str, float], dict[str, torch.Tensor]]:
        z = torch.randn(args.batch, cfg.z_dim, generator=gen).to(device)
        marks = [time.perf_counter()]
        with torch.no_grad():
            ws = G.mapping(z, c, truncation_psi=0.7)
            sync()
            marks.append(time.perf_counter())
            planes = G.synthesize_planes(ws, kernels=args.kernels)
            sync()
            marks.append(time.perf_counter())
            out = G.render(planes, ws, c, resolution=args.resolution, sampling=sampling, run_sr=False)
            sync()
            marks.append(time.perf_counter())
            res = out["image"].shape[-1]
            sr = G.superresolution
            if sr is not None and (cfg.family == "eg3d" or res <= sr.input_resolution):
                out["image"] = G.super_resolve(out["image_raw"], out["feature_image"], ws, fp16=args.fp16_sr,
                                               kernels=args.kernels)
            out["image"].float().sum().item()  # synchronise
            marks.append(time.perf_counter())
        return {k: b - a for k, a, b in zip(stage_names, marks[:-1], marks[1:], strict=True)}, out

    for _ in range(args.warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(device)
    times, stages = [], []
    out: dict[str, torch.Tensor] = {}
    for _ in range(args.iterations):
        t0 = time.perf_counter()
        split, out = step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
        stages.append(split)
    if args.profile:
        from torch import profiler

        with profiler.profile(record_shapes=True) as prof:
            step()
        print(prof.key_averages(group_by_input_shape=True).table(
            sort_by="self_cpu_time_total", row_limit=30, max_name_column_width=36, max_shapes_column_width=90),
            file=sys.stderr)
    if args.save_images is not None:
        np.savez(args.save_images, image=out["image"].float().cpu().numpy(),
                 image_raw=out["image_raw"].float().cpu().numpy())
    best, mean = min(times), sum(times) / len(times)
    # How much memory the volume rendering itself adds (tri-planes already computed), for the budget.
    render_increase = None  # not for --compare's children: their own peaks are what is compared
    if device.type == "cpu" and args.save_images is None and Path("/proc/self/statm").exists():
        z = torch.randn(args.batch, cfg.z_dim, generator=gen).to(device)
        with torch.no_grad():
            ws = G.mapping(z, c, truncation_psi=0.7)
            planes = G.synthesize_planes(ws, kernels=args.kernels)
            release_free_memory()  # so that memory freed earlier cannot hide the render's own allocations
            before = current_rss_bytes()
            sampler = RssSampler()
            sampler.start()
            G.render(planes, ws, c, resolution=args.resolution, sampling=sampling, fp16_sr=args.fp16_sr)
            render_increase = sampler.stop() - before
    result = {
        "benchmark": "render",
        "model": model.name,
        "config": cfg.name,
        "device": str(device),
        "hardware": hardware_description(device),
        "batch": args.batch,
        "kernels": args.kernels,
        "neural_rendering_resolution": args.resolution or cfg.neural_rendering_resolution,
        "output_resolution": cfg.img_resolution,
        "samples_per_ray": cfg.rendering.depth_resolution + cfg.rendering.depth_resolution_importance,
        "fp16_sr": bool(args.fp16_sr and device.type == "cuda"),
        "iterations": args.iterations,
        "ms_per_batch_mean": round(mean * 1000, 2),
        "ms_per_image_mean": round(mean * 1000 / args.batch, 2),
        "ms_per_image_best": round(best * 1000 / args.batch, 2),
        "images_per_s": round(args.batch / mean, 3),
        "stages_ms_mean": {k: round(1000 * sum(s[k] for s in stages) / len(stages), 1) for k in stage_names},
        "peak_memory_bytes": (torch.cuda.max_memory_allocated(device) if device.type == "cuda"
                              else peak_rss_bytes()),
        "memory_budget_bytes": args.memory_budget,
        "render_phase_rss_increase_bytes": render_increase,
        "threads": torch.get_num_threads(),
        "warmup": args.warmup,
    }
    return result, device


def _without(argv: list[str], flag: str, takes_value: bool) -> list[str]:
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a == flag:
            skip = takes_value
            continue
        if takes_value and a.startswith(flag + "="):
            continue
        out.append(a)
    return out


def psnr(a: np.ndarray, b: np.ndarray) -> float | None:
    """PSNR of images in [−1, 1] (peak-to-peak 2); None when they are identical."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return None if mse == 0 else round(10 * math.log10(4.0 / mse), 2)


def compare(args: argparse.Namespace, argv: list[str]) -> dict:
    """Reference and fast kernels in turn, each in a fresh process with the same arguments."""
    base = _without(_without(_without(_without(argv, "--compare", False), "--out", True), "--kernels", True),
                    "--rounds", True)
    runs: dict[str, list[dict]] = {k: [] for k in ("reference", "fast")}
    images: dict[str, dict[str, np.ndarray]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for kernels in ("reference", "fast"):
                saved = Path(tmp) / f"{kernels}-{r}.npz"
                cmd = [sys.executable, __file__, *base, "--kernels", kernels, "--save-images", str(saved)]
                done = subprocess.run(cmd, capture_output=True, text=True, check=False)
                if done.returncode != 0:
                    raise SystemExit(f"{kernels} run failed:\n{done.stderr[-2000:]}")
                child = json.loads(done.stdout)
                runs[kernels].append({k: child[k] for k in ("ms_per_image_mean", "ms_per_image_best",
                                                            "stages_ms_mean", "peak_memory_bytes")})
                print(f"round {r + 1}/{args.rounds} {kernels}: {child['ms_per_image_mean']:.0f} ms/image "
                      f"{child['stages_ms_mean']}", file=sys.stderr, flush=True)
                with np.load(saved) as data:
                    images[kernels] = {k: data[k] for k in data.files}
            ref_image, fast_image = images["reference"], images["fast"]
        child_info = child
    ratios = [round(a["ms_per_image_mean"] / b["ms_per_image_mean"], 3)
              for a, b in zip(runs["reference"], runs["fast"], strict=True)]
    stage_ratios = {k: round(statistics.median(a["stages_ms_mean"][k] / max(b["stages_ms_mean"][k], 1e-3)
                                               for a, b in zip(runs["reference"], runs["fast"], strict=True)), 2)
                    for k in runs["fast"][0]["stages_ms_mean"]}
    return {
        "benchmark": "render_compare",
        "model": child_info["model"],
        "config": child_info["config"],
        "device": child_info["device"],
        "hardware": child_info["hardware"],
        "batch": args.batch,
        "neural_rendering_resolution": child_info["neural_rendering_resolution"],
        "output_resolution": child_info["output_resolution"],
        "iterations_per_run": args.iterations,
        "rounds": args.rounds,
        "threads": child_info["threads"],
        "reference": runs["reference"],
        "fast": runs["fast"],
        "speedup_per_round": ratios,
        "speedup_median": round(statistics.median(ratios), 2),
        "stage_speedup_median": stage_ratios,
        "peak_memory_bytes": {k: max(r["peak_memory_bytes"] for r in v) for k, v in runs.items()},
        "psnr_fast_vs_reference_db": {"image": psnr(ref_image["image"], fast_image["image"]),
                                      "image_raw": psnr(ref_image["image_raw"], fast_image["image_raw"])},
    }


if __name__ == "__main__":
    main()
