# SPDX-License-Identifier: GPL-3.0-or-later
"""Time from Generate to the head in the scene, in real Blender (bpy), through the installed extension.

    .venv/bin/python benchmarks/blender_generate.py [--resolution 128] [--faces 30000] [--runs 3]

Builds the extension zip, installs it into a temporary Blender user folder, and uses this Python as the
backend interpreter. Uses the bundled default model when present, else ``random:small`` (the bundled models'
architecture with random weights; random weights have no surface at EG3D's density level 10, so the mesh is
taken at level 0: same grid and decoder cost, an arbitrary shape). ``cold`` includes starting the backend
and loading the model; ``warm`` runs reuse the running backend and its cached model. The poller is driven
at the timer's 0.1 s, so the figures include the latency a user sees. Writes JSON to benchmarks/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.record import ROOT, Run


def pick_model() -> tuple[str, float | None, str]:
    from backend.registry import DEFAULT_MODEL, bundled_models_dir

    if (bundled_models_dir() / f"{DEFAULT_MODEL}.safetensors").is_file():
        return DEFAULT_MODEL, None, "bundled default model"
    return "random:small", 0.0, "random:small (no bundled model yet; random weights meshed at level 0)"


def timed_generate(api: Any, session: Any, **kw: Any) -> dict[str, Any]:
    t0 = time.perf_counter()
    fut = api.generate_async(**kw)
    ticks = []
    while not fut.done():
        time.sleep(session.TICK_S)
        t = time.perf_counter()
        session.tick()
        ticks.append(time.perf_counter() - t)
    total = time.perf_counter() - t0
    if fut.error is not None:
        raise SystemExit(f"generation failed: {fut.error}")
    obj = fut.object
    return {"seconds": round(total, 3), "backend_stages_s": fut.handle.data.get("seconds", {}),
            "backend_job_s": fut.handle.result.get("elapsed_s") if fut.handle.result else None,
            "vertices": len(obj.data.vertices), "faces": len(obj.data.polygons),
            "max_tick_ms": round(1000 * max(ticks), 2), "import_tick_ms": round(1000 * ticks[-1], 2)}


def main(argv: list[str] | None = None) -> int:
    record = Run(__file__, argv)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="model name or path (default: bundled default, else random:small)")
    p.add_argument("--level", type=float, default=None, help="surface density level (default: see above)")
    p.add_argument("--resolution", type=int, default=128)
    p.add_argument("--faces", type=int, default=30000)
    p.add_argument("--runs", type=int, default=3, help="warm runs after the cold one")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "blender_generate.json")
    args = p.parse_args(argv)

    from backend.cli.extension_cmd import build

    model, level, note = pick_model()
    if args.model:
        model, level, note = args.model, args.level, f"{args.model} (given)"
    elif args.level is not None:
        level = args.level
    tmp = Path(tempfile.mkdtemp(prefix="aware3d-bench-"))
    zip_path = build(tmp / "dist")
    os.environ["BLENDER_USER_RESOURCES"] = str(tmp / "blender")
    os.environ["AWARE3D_BACKEND_PYTHON"] = sys.executable
    import importlib

    import bpy

    bpy.ops.extensions.package_install_files(filepath=str(zip_path), repo="user_default", enable_on_install=True)
    api = importlib.import_module("bl_ext.user_default.aware3d.api")
    session = importlib.import_module("bl_ext.user_default.aware3d.session")
    kw = {"model": model, "resolution": args.resolution, "faces": args.faces, "camera": True, "level": level}
    cold = timed_generate(api, session, seed=0, **kw)
    print(f"cold: {cold['seconds']:.2f} s", file=sys.stderr)
    warm = []
    for i in range(args.runs):
        warm.append(timed_generate(api, session, seed=i + 1, **kw))
        print(f"warm {i + 1}: {warm[-1]['seconds']:.2f} s", file=sys.stderr)
    import torch

    result = {
        "benchmark": "blender_generate", "what": "Generate → head object in the scene (bpy 5.0.1, extension installed)",
        "model": model, "model_note": note, "level": level, "mesh_resolution": args.resolution,
        "target_faces": args.faces, "cold": cold, "warm": warm,
        "warm_median_s": sorted(r["seconds"] for r in warm)[len(warm) // 2] if warm else None,
        "target_s": 10.0, "blender": bpy.app.version_string, "torch_threads": torch.get_num_threads(),
    }
    api.free()
    print(json.dumps(record.finish(result, args.out), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
