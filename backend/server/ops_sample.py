# SPDX-License-Identifier: GPL-3.0-or-later
"""The ``sample`` operation: images, depth and cameras for seeds, rendered seed by seed.

Rays are rendered in at least :data:`MIN_CHUNKS` chunks so that progress (and therefore cancel) comes at a
steady beat even when the whole image would fit in one chunk.
"""

from __future__ import annotations

from typing import Any

from backend.errors import Aware3DError
from backend.server.jobs import JobContext, JobResult
from backend.server.ops_core import load_model

MIN_CHUNKS = 8
MAX_SEEDS = 1024


def seeds_from_arg(value: Any) -> list[int]:
    from backend.sampling import parse_seeds

    if isinstance(value, bool):
        raise Aware3DError(f"seeds must be numbers, got {value!r}", "e.g. [0, 1, 2] or \"0-7\"")
    if isinstance(value, int):
        value = [value]
    if isinstance(value, str):
        seeds = parse_seeds(value)
    else:
        if not value or not all(isinstance(s, int) and not isinstance(s, bool) for s in value):
            raise Aware3DError(f"seeds must be a non-empty list of integers, got {value!r}", "e.g. [0, 1, 2]")
        seeds = list(value)
    if any(s < 0 or s >= 2**32 for s in seeds):
        raise Aware3DError("seeds must be between 0 and 2^32-1", "e.g. [0, 1, 2]")
    if len(seeds) > MAX_SEEDS:
        raise Aware3DError(f"{len(seeds)} seeds in one request; the limit is {MAX_SEEDS}", "split the request")
    return seeds


def check_truncation(t: float) -> float:
    if not 0.0 <= float(t) <= 2.0:
        raise Aware3DError(f"truncation must be between 0 and 2, got {t}", "e.g. 0.7")
    return float(t)


def chunked(resolution: int, seed: int, exact: bool = False) -> Any:
    from backend.render.renderer import SamplingSettings

    rays = resolution * resolution
    return SamplingSettings(exact=exact, seed=seed, ray_chunk=max(64, -(-rays // MIN_CHUNKS)))


def op_sample(ctx: JobContext) -> JobResult:
    from backend.outputs import save_view
    from backend.sampling import camera_label, make_latent, render_view

    a = ctx.args
    seeds = seeds_from_arg(a["seeds"])
    truncation = check_truncation(a["truncation"])
    res = a["resolution"]
    if res is not None and not 8 <= res <= 1024:
        raise Aware3DError(f"resolution must be between 8 and 1024, got {res}", "e.g. 128")
    ctx.plan({"load": 1, "render": 6 * len(seeds)})
    model, _ = load_model(ctx, a["model"], a["device"])
    G = model.generator
    label = camera_label(G.cfg, float(a["yaw"]), float(a["pitch"]))
    res_eff = res or G.cfg.neural_rendering_resolution
    files = {}
    n = len(seeds)
    for k, seed in enumerate(seeds):
        msg = f"seed {seed} ({k + 1}/{n})"

        def step(i: int, chunks: int, k: int = k, msg: str = msg) -> None:
            ctx.progress("render", k * (chunks + 1) + i, n * (chunks + 1), msg)

        latent = make_latent(G, seed, truncation)
        view = render_view(G, latent, label, res, chunked(res_eff, seed, a["exact"]), on_progress=step)
        stem = f"seed{seed:04d}"
        paths = save_view(view, ctx.job_dir, stem, {"model": model.name, "config": G.cfg.name, "seed": seed,
                                                     "truncation": truncation, "yaw_deg": a["yaw"],
                                                     "pitch_deg": a["pitch"]})
        files.update({p.name: p for p in paths})
        chunks = -(-res_eff * res_eff // chunked(res_eff, seed).ray_chunk)
        ctx.progress("render", (k + 1) * (chunks + 1), n * (chunks + 1), msg, preview=paths[0])
    return JobResult(data={"model": model.name, "seeds": seeds, "resolution": res_eff}, files=files)
