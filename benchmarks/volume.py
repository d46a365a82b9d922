"""Volume rendering alone (rays → features, depth, opacity; no mapping, tri-planes or SR): reference vs fast.

    OMP_WAIT_POLICY=passive python benchmarks/volume.py --model random:eg3d-ffhq512-128 --res 128 \
        --threads 2 --repeat 5 --out benchmarks/results/volume_eg3d-ffhq512-128_cpu.json
    python benchmarks/volume.py --model random:eg3d-ffhq512-128 --thumbnails 8 --res 64   # preview grid
    python benchmarks/volume.py --profile fast --repeat 1     # + torch.profiler table of one render (stderr)

The tri-planes are computed once (not timed); each timed iteration renders the same latent from the same
camera with the reference kernels and with the fast ones, interleaved (reference, fast, reference, …) so that
load from other processes hits both alike; the figures are the best and the median of ``--repeat``. Peak
memory is each kernel's peak resident set size above the process's size before it (Linux VmHWM, reset per
render through /proc/self/clear_refs), measured after the timings, and on GPUs the CUDA allocator's peak.
The outputs are compared: PSNR of the [−1, 1] features and of the colour, max abs error of depth/opacity.

``--thumbnails N`` also times N preview renders (``G.render(..., run_sr=False, resolution=--res)``) of N
latents whose planes are already computed (a gallery page after its tri-planes), per kernel.
``--pose-previews N`` times the preview path of one latent from scratch: its tri-planes once, then N preview
renders from N yaws spread over ±45° (a turntable or a pose search), per kernel.

``volume_stage(G, planes, ws, c, resolution, kernels)`` is the function other benchmarks call to time this
stage (``benchmarks/render.py`` for the whole pipeline).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from backend.devices import hardware_description, resolve_device
from backend.generator import TriPlaneGenerator
from backend.registry import load_generator
from backend.render.rays import pixel_uv
from backend.render.renderer import KERNELS, RenderResult, SamplingSettings
from backend.sampling import camera_label, make_latent
from benchmarks.record import Run


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def volume_stage(
    G: TriPlaneGenerator, planes: list[torch.Tensor], ws: torch.Tensor, c: torch.Tensor, resolution: int,
    kernels: str, seed: int = 0,
) -> tuple[float, RenderResult]:
    """Seconds for one volume render of ``planes`` from cameras ``c`` at ``resolution``² with ``kernels``
    ('reference' or 'fast'), and its result: the render stage of ``G.render`` without the SR module."""
    uv = pixel_uv(resolution, c.device)
    sampling = SamplingSettings(seed=seed, kernels=kernels)  # type: ignore[arg-type]
    _sync(c.device)
    t = time.perf_counter()
    with torch.no_grad():
        result = G.render_rays(planes, c, uv, sampling, ws=ws)
    _sync(c.device)
    return time.perf_counter() - t, result


def _status_bytes(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(field)


def peak_above_current(fn: Any, device: torch.device) -> int:
    """Peak memory ``fn()`` needs above what the process holds before it (CPU: RSS high-water mark)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        fn()
        return torch.cuda.max_memory_allocated(device) - before
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)  # freed heap back to the OS: RSS then tracks live memory
    except OSError:
        pass
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM to the current RSS
    before = _status_bytes("VmRSS")
    fn()
    return _status_bytes("VmHWM") - before


def psnr(a: torch.Tensor, b: torch.Tensor, peak: float = 2.0) -> float:
    mse = float(((a.float() - b.float()) ** 2).mean())
    return math.inf if mse == 0 else 10 * math.log10(peak**2 / mse)


def compare(ref: RenderResult, fast: RenderResult) -> dict[str, float]:
    finite = torch.isfinite(ref.depth) & torch.isfinite(fast.depth)
    return {
        "psnr_features_db": round(psnr(ref.features, fast.features), 2),
        "psnr_rgb_db": round(psnr(ref.features[:, :3], fast.features[:, :3]), 2),
        "max_abs_features": float((ref.features - fast.features).abs().max()),
        "max_abs_depth": float((ref.depth - fast.depth)[finite].abs().max()),
        "max_abs_opacity": float((ref.weight_sum - fast.weight_sum).abs().max()),
    }


def summary(times: list[float]) -> dict[str, float]:
    return {"best_s": round(min(times), 4), "median_s": round(statistics.median(times), 4)}


def thumbnails(G: TriPlaneGenerator, latents: list[Any], c: torch.Tensor, res: int, kernels: str) -> float:
    """Seconds for one preview render per latent (planes ready, no SR), as a gallery page renders them."""
    _sync(c.device)
    t = time.perf_counter()
    with torch.no_grad():
        for i, lat in enumerate(latents):
            G.render(lat.planes, lat.ws, c, resolution=res, run_sr=False,
                     sampling=SamplingSettings(seed=i, kernels=kernels))  # type: ignore[arg-type]
    _sync(c.device)
    return time.perf_counter() - t


def pose_previews(G: TriPlaneGenerator, lat: Any, cams: list[torch.Tensor], res: int, kernels: str) -> float:
    """Seconds for one latent's tri-planes and one preview render per camera (no SR)."""
    _sync(cams[0].device)
    t = time.perf_counter()
    with torch.no_grad():
        planes = G.synthesize_planes(lat.ws, kernels=kernels)  # type: ignore[arg-type]
        for i, c in enumerate(cams):
            G.render(planes, lat.ws, c, resolution=res, run_sr=False,
                     sampling=SamplingSettings(seed=i, kernels=kernels))  # type: ignore[arg-type]
    _sync(cams[0].device)
    return time.perf_counter() - t


def main(argv: list[str] | None = None) -> dict[str, Any]:
    record = Run(__file__, argv)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="random:eg3d-ffhq512-128")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--res", type=int, help="render resolution (default: the model's neural rendering one)")
    p.add_argument("--yaw", type=float, default=20.0)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--thumbnails", type=int, default=0, help="also time this many preview renders")
    p.add_argument("--pose-previews", type=int, default=0,
                   help="also time one latent's tri-planes plus this many preview renders from different yaws")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int)
    p.add_argument("--profile", choices=list(KERNELS), help="print a torch.profiler table of one render")
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    G = load_generator(args.model, device).generator
    res = args.res or G.cfg.neural_rendering_resolution
    lat = make_latent(G, args.seed, 0.7)
    c = torch.from_numpy(camera_label(G.cfg, args.yaw, 5.0))[None].to(device)
    kernels = list(KERNELS[::-1])  # reference first
    for k in kernels:  # warm-up (first-call allocations, thread pools)
        volume_stage(G, lat.planes, lat.ws, c, res, k, args.seed)
    times: dict[str, list[float]] = {k: [] for k in kernels}
    results: dict[str, RenderResult] = {}
    for _ in range(args.repeat):
        for k in kernels:
            secs, results[k] = volume_stage(G, lat.planes, lat.ws, c, res, k, args.seed)
            times[k].append(secs)
    peaks = {k: peak_above_current(lambda k=k: volume_stage(G, lat.planes, lat.ws, c, res, k, args.seed),
                                   device) for k in kernels}
    if args.profile:
        from torch import profiler

        with profiler.profile() as prof:
            volume_stage(G, lat.planes, lat.ws, c, res, args.profile, args.seed)
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25), file=sys.stderr)
    result: dict[str, Any] = {
        "benchmark": "volume",
        "hardware": hardware_description(device),
        "device": str(device),
        "threads": torch.get_num_threads(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "model": args.model,
        "resolution": res,
        "samples_per_ray": [G.cfg.rendering.depth_resolution, G.cfg.rendering.depth_resolution_importance],
        "repeat": args.repeat,
        "seconds": {k: summary(times[k]) for k in kernels},
        "speedup_best": round(min(times["reference"]) / min(times["fast"]), 2),
        "speedup_median": round(statistics.median(times["reference"]) / statistics.median(times["fast"]), 2),
        "peak_bytes_above_inputs": peaks,
        "fast_vs_reference": compare(results["reference"], results["fast"]),
        "versions": {"torch": torch.__version__, "python": sys.version.split()[0]},
    }
    if args.thumbnails:
        latents = [make_latent(G, args.seed + i, 0.7) for i in range(args.thumbnails)]
        for k in kernels:
            thumbnails(G, latents[:1], c, res, k)  # warm-up
        thumbs: dict[str, list[float]] = {k: [] for k in kernels}
        for _ in range(args.repeat):
            for k in kernels:
                thumbs[k].append(thumbnails(G, latents, c, res, k))
        result["thumbnails"] = {"count": args.thumbnails, "resolution": res,
                                "seconds": {k: summary(thumbs[k]) for k in kernels},
                                "speedup_best": round(min(thumbs["reference"]) / min(thumbs["fast"]), 2)}
    if args.pose_previews:
        n = args.pose_previews
        yaws = [-45.0 + 90.0 * i / (n - 1) for i in range(n)] if n > 1 else [0.0]
        cams = [torch.from_numpy(camera_label(G.cfg, y, 0.0))[None].to(device) for y in yaws]
        for k in kernels:
            pose_previews(G, lat, cams[:1], res, k)  # warm-up
        poses: dict[str, list[float]] = {k: [] for k in kernels}
        for _ in range(args.repeat):
            for k in kernels:
                poses[k].append(pose_previews(G, lat, cams, res, k))
        result["pose_previews"] = {"count": args.pose_previews, "resolution": res, "planes_included": True,
                                   "seconds": {k: summary(poses[k]) for k in kernels},
                                   "speedup_best": round(min(poses["reference"]) / min(poses["fast"]), 2)}
    result = record.finish(result, args.out, device)
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
