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
from backend.validate import BOUNDS, optional, within

MIN_CHUNKS = 8
MAX_SEEDS = int(BOUNDS["seeds_per_request"].hi)


def seeds_from_arg(value: Any) -> list[int]:
    """The request's ``seeds`` (a list, a single int or a text like "0-7"), at most :data:`MAX_SEEDS`.

    The count is checked before anything of that size exists: a text range by ``parse_seeds`` before it is
    expanded, a list before its values are read.
    """
    from backend.sampling import parse_seeds

    if isinstance(value, bool):
        raise Aware3DError(f"seeds must be numbers, got {value!r}", "e.g. [0, 1, 2] or \"0-7\"")
    if isinstance(value, int):
        value = [value]
    if isinstance(value, str):
        return parse_seeds(value, MAX_SEEDS)
    if len(value) > MAX_SEEDS:
        raise Aware3DError(f"too many seeds in one request ({len(value)}): the limit is {MAX_SEEDS}",
                           "split the request")
    if not value or not all(isinstance(s, int) and not isinstance(s, bool) for s in value):
        raise Aware3DError(f"seeds must be a non-empty list of integers, got {_short(value)}", "e.g. [0, 1, 2]")
    return [within("seed", s, "seed", "seeds are between 0 and 2^32-1, e.g. [0, 1, 2]") for s in value]


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def check_truncation(t: Any) -> float:
    return float(within("truncation", t))


def check_sample_args(a: dict[str, Any]) -> list[int]:
    """Every argument of ``sample`` checked before the model is loaded; returns the seeds."""
    seeds = seeds_from_arg(a["seeds"])
    check_truncation(a["truncation"])
    within("yaw_deg", a["yaw"], "yaw")
    within("pitch_deg", a["pitch"], "pitch")
    optional("render_resolution", a["resolution"], "resolution")
    return seeds


def chunked(resolution: int, seed: int, exact: bool = False) -> Any:
    from backend.render.renderer import SamplingSettings

    rays = resolution * resolution
    return SamplingSettings(exact=exact, seed=seed, ray_chunk=max(64, -(-rays // MIN_CHUNKS)))


def op_sample(ctx: JobContext) -> JobResult:
    from backend.outputs import save_view
    from backend.sampling import camera_label, make_latent, render_view

    a = ctx.args
    seeds = check_sample_args(a)
    truncation = check_truncation(a["truncation"])
    res = a["resolution"]
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
