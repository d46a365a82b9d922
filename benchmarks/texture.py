# SPDX-License-Identifier: GPL-3.0-or-later
"""Novel-view texturing benchmark: seconds per stage of ``texture_mesh`` on a generated head mesh.

    python benchmarks/texture.py --threads 1 --out benchmarks/results/texture_cpu.json
    python benchmarks/texture.py --generator diffusion --threads 1 --out /tmp/texture_diffusion.json

The mesh is what ``aware3d mesh`` makes of ``--model`` at ``--seed`` (``--res``³ coarse-to-fine, decimated to
``--faces``, vertex colours); ``--cameras`` ring cameras at ``--size`` px paint a ``--texture-size``² atlas
with the ``projection`` baseline (the mesh's own colours, no model) or the ``diffusion`` view model. Reported:
the pipeline's own seconds per stage (unwrap, texel geometry, render, generate, project, total), the
coverage counts, and the mean PSNR of the textured renders against the views over well-seen pixels.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from backend.devices import hardware_description
from backend.mesh.field import GeneratorField
from backend.mesh.pipeline import MeshSettings, extract_mesh
from backend.registry import load_generator as load_model
from backend.sampling import make_latent
from backend.texture import load_generator, ring, texture_mesh
from benchmarks.record import Run


def main(argv: list[str] | None = None) -> int:
    record = Run(__file__, argv)
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="aware3d-heads")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--res", type=int, default=128, help="mesh grid resolution")
    ap.add_argument("--faces", type=int, default=20000)
    ap.add_argument("--generator", default="projection", choices=("projection", "diffusion"))
    ap.add_argument("--cameras", type=int, default=8)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--texture-size", type=int, default=1024)
    ap.add_argument("--threads", type=int)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    G = load_model(args.model, torch.device("cpu")).generator
    field = GeneratorField(G, make_latent(G, args.seed, 0.7).planes)
    mesh = extract_mesh(field, MeshSettings(resolution=args.res, target_faces=args.faces))
    kind, generator = load_generator(args.generator)
    named = ring(args.cameras, pitch=0.0, size=args.size)
    result = texture_mesh(mesh, [c for _, c in named], generator, size=args.size, texture_size=args.texture_size,
                          names=[n for n, _ in named])
    rep: dict[str, Any] = result.report
    psnrs = [c["psnr_seen"] for c in rep["cameras"] if c.get("psnr_seen") is not None]
    report = {
        "benchmark": "texture", "hardware": hardware_description(torch.device("cpu")),
        "threads": torch.get_num_threads(), "model": args.model, "seed": args.seed, "mesh_resolution": args.res,
        "generator": kind, "cameras": args.cameras, "view_size": args.size,
        "texture_size": args.texture_size, "faces": rep["faces"], "seconds": rep["seconds"],
        "faces_seen": rep["faces_seen"], "faces_seen_untextured": rep["faces_seen_untextured"],
        "psnr_seen_mean_db": round(float(np.mean(psnrs)), 2) if psnrs else None,
    }
    print(json.dumps(record.finish(report, args.out), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
