"""Rendering throughput: ms per image, images/s and peak memory for a model, resolution, batch and device.

    python benchmarks/render.py --model random:eg3d-ffhq512-128 --batch 1 --device cpu --threads 1
    python benchmarks/render.py --model random:eg3d-ffhq512-128 --batch 16 --device cuda --fp16-sr \
        --out /tmp/render_gpu.json

Prints one JSON object (and writes it with --out). Each timed iteration samples new latents and renders them
(mapping, tri-planes, volume rendering, super-resolution), as ``aware3d sample`` does. Peak memory is the CUDA
allocator's peak on GPUs and the process's peak resident set size on CPUs.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import resource
import sys
import threading
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from backend.devices import hardware_description, resolve_device
from backend.registry import load_generator
from backend.render.renderer import DEFAULT_MEMORY_BUDGET, SamplingSettings
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


def main(argv: list[str] | None = None) -> dict:
    record = Run(__file__, argv)
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
    p.add_argument("--out", type=Path, help="also write the JSON here")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    model = load_generator(args.model, device)
    G = model.generator
    cfg = G.cfg
    c = torch.from_numpy(camera_label(cfg, 15, 0))[None].repeat(args.batch, 1).to(device)
    sampling = SamplingSettings(seed=0, memory_budget=args.memory_budget)
    gen = torch.Generator(device="cpu").manual_seed(0)

    def step() -> None:
        z = torch.randn(args.batch, cfg.z_dim, generator=gen).to(device)
        with torch.no_grad():
            ws = G.mapping(z, c, truncation_psi=0.7)
            planes = G.synthesize_planes(ws)
            out = G.render(planes, ws, c, resolution=args.resolution, sampling=sampling, fp16_sr=args.fp16_sr)
            out["image"].float().sum().item()  # synchronise

    for _ in range(args.warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(args.iterations):
        t0 = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    best, mean = min(times), sum(times) / len(times)
    # How much memory the volume rendering itself adds (tri-planes already computed), for the budget.
    render_increase = None
    if device.type == "cpu" and Path("/proc/self/statm").exists():
        z = torch.randn(args.batch, cfg.z_dim, generator=gen).to(device)
        with torch.no_grad():
            ws = G.mapping(z, c, truncation_psi=0.7)
            planes = G.synthesize_planes(ws)
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
        "neural_rendering_resolution": args.resolution or cfg.neural_rendering_resolution,
        "output_resolution": cfg.img_resolution,
        "samples_per_ray": cfg.rendering.depth_resolution + cfg.rendering.depth_resolution_importance,
        "fp16_sr": bool(args.fp16_sr and device.type == "cuda"),
        "iterations": args.iterations,
        "ms_per_batch_mean": round(mean * 1000, 2),
        "ms_per_image_mean": round(mean * 1000 / args.batch, 2),
        "ms_per_image_best": round(best * 1000 / args.batch, 2),
        "images_per_s": round(args.batch / mean, 3),
        "peak_memory_bytes": (torch.cuda.max_memory_allocated(device) if device.type == "cuda"
                              else peak_rss_bytes()),
        "memory_budget_bytes": args.memory_budget,
        "render_phase_rss_increase_bytes": render_increase,
        "threads": torch.get_num_threads(),
        "warmup": args.warmup,
    }
    # Other work on the machine slows CPU runs down: the recorded load average says how busy it was.
    result = record.finish(result, args.out, device)
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
