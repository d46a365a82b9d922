# SPDX-License-Identifier: GPL-3.0-or-later
"""Benchmark: synthetic-head data set build speed (images/s) at 64² and 128².

Runs the real ``make-dataset`` path (``build_dataset``: worker processes, PNG/depth encoding, zip
assembly) into a temporary folder and reports, per resolution, the end-to-end rate (count / wall time,
worker start-up and zip writing included), the rendering-only rate, and the CPU seconds per image (all
processes), which does not depend on what else runs on the machine. The load average before and after is
recorded because other jobs on a shared 2-core machine change the wall-clock figures a lot.

    python benchmarks/dataset.py --workers 1 --out benchmarks/results/dataset_cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.record import Run

TARGET_IMAGES_PER_S = 30000 / (30 * 60)  # the issue: 30k images at 128² in under 30 minutes


def _cpu_seconds() -> float:
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def run(res: int, count: int, device: str, workers: int | None) -> dict[str, object]:
    from train.synthetic import build_dataset

    with tempfile.TemporaryDirectory() as tmp:
        load0 = os.getloadavg()[0]
        cpu0, t0 = _cpu_seconds(), time.perf_counter()
        summary = build_dataset(Path(tmp) / "bench.zip", count=count, res=res, seed=123, device=device,
                                workers=workers, progress=False)
        wall = time.perf_counter() - t0
        cpu = _cpu_seconds() - cpu0
        size = (Path(tmp) / "bench.zip").stat().st_size
    return {
        "res": res,
        "count": count,
        "images_per_s": round(count / wall, 2),
        "render_images_per_s": summary["images_per_s"],
        "wall_s": round(wall, 2),
        "cpu_s_per_image": round(cpu / count, 4),
        "workers": summary["workers"],
        "zip_mb": round(size / 2**20, 2),
        "loadavg_before": round(load0, 2),
        "loadavg_after": round(os.getloadavg()[0], 2),
    }


def main(argv: list[str] | None = None) -> int:
    record = Run(__file__, argv)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--count64", type=int, default=800)
    ap.add_argument("--count128", type=int, default=600)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--out", default=None, help="write the JSON here too")
    ap.add_argument("--note", default="", help="free text stored with the results (e.g. machine state)")
    args = ap.parse_args(argv)
    import torch

    results = [run(64, args.count64, args.device, args.workers),
               run(128, args.count128, args.device, args.workers)]
    r128 = results[1]
    report = {
        "benchmark": "synthetic-head data set build (aware3d-train make-dataset)",
        "device": args.device if args.device == "cpu" else torch.cuda.get_device_name(),
        "results": results,
        "target_images_per_s_128": round(TARGET_IMAGES_PER_S, 2),
        "meets_target_128": r128["images_per_s"] >= TARGET_IMAGES_PER_S,
        "estimated_minutes_30k_128": round(30000 / r128["images_per_s"] / 60, 1),
        "note": args.note,
    }
    print(json.dumps(record.finish(report, args.out, args.device), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
