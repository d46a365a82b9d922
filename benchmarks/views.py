"""Novel-view benchmark: seconds per 64-px view (aggregation + DDIM sampling) with the view models.

    python benchmarks/views.py --threads 1 --out benchmarks/results/views_cpu.json   # bundled models
    python benchmarks/views.py --device cuda --out /tmp/views_gpu.json                # on a GPU

For each of ``--repeat`` runs: a first view (G_u, DDIM) and ``--views`` further views along a yaw sweep
(G_c, each conditioned on all previous ones). Reported: seconds for the first view, per further view
(split into aggregation and sampling), and per network evaluation. The issue's goal: < 5 s per view
with 25 steps on a 2-core CPU, < 0.3 s on an H100/H200. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from backend.devices import hardware_description, resolve_device
from backend.views import rgbd
from backend.views.backdrop import fit_backdrop
from backend.views.generate import condition_for, load_view_models, resolve_view_model
from benchmarks.record import Run


def main(argv: list[str] | None = None) -> int:
    record = Run(__file__, argv)
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--views-model", default=None)
    ap.add_argument("--first-model", default=None)
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--views", type=int, default=4, help="further views after the first")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    models = load_view_models(args.views_model, args.first_model, args.steps, device, need_uncond=True)
    size = models.resolution
    yaws = [15.0 * ((k + 2) // 2) * (1 if k % 2 == 0 else -1) for k in range(args.views)]

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    evals = {"n": 0}
    inner = models.cond.forward

    def counted(*a, **k):  # type: ignore[no-untyped-def]
        evals["n"] += 1
        return inner(*a, **k)

    models.cond.forward = counted  # type: ignore[method-assign]
    first_s, agg_s, sample_s = [], [], []
    for r in range(args.repeat):
        sync()
        t0 = time.perf_counter()
        views = [models.first_view(rgbd.orbit(0, 0, size), seed=r)]
        sync()
        first_s.append(time.perf_counter() - t0)
        carried = fit_backdrop(views[0])
        for i, yaw in enumerate(yaws):
            t0 = time.perf_counter()
            cond = condition_for(views, rgbd.orbit(yaw, 0, size), carried)
            t1 = time.perf_counter()
            views.append(models.next_view(cond, seed=r * 100 + i))
            sync()
            agg_s.append(t1 - t0)
            sample_s.append(time.perf_counter() - t1)
    per_view = [a + s for a, s in zip(agg_s, sample_s)]
    result = {
        "benchmark": "views", "device": hardware_description(device), "threads": torch.get_num_threads(),
        "resolution": size, "steps": args.steps, "views_per_run": 1 + args.views, "repeat": args.repeat,
        "cond_model": str(resolve_view_model("cond", args.views_model)),
        "first_view_s": round(float(np.median(first_s)), 3),
        "next_view_s": {"median": round(float(np.median(per_view)), 3), "max": round(float(np.max(per_view)), 3)},
        "aggregation_s_median": round(float(np.median(agg_s)), 3),
        "sampling_s_median": round(float(np.median(sample_s)), 3),
        "network_eval_ms": round(1000 * float(np.sum(sample_s)) / max(evals["n"], 1), 2),
        "goal": "< 5 s per 64-px view with 25 DDIM steps on a 2-core CPU; < 0.3 s on an H100/H200",
    }
    result["meets_goal"] = result["next_view_s"]["median"] < (0.3 if device.type == "cuda" else 5.0)
    print(json.dumps(record.finish(result, args.out, device), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
