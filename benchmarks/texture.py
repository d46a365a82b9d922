# SPDX-License-Identifier: GPL-3.0-or-later
"""Novel-view texturing benchmark: seconds per stage of ``texture_mesh`` on a generated head mesh.

    python benchmarks/texture.py --threads 1 --out benchmarks/results/texture_cpu.json
    python benchmarks/texture.py --generator diffusion --threads 1 --out /tmp/texture_diffusion.json

The mesh is what ``aware3d mesh`` makes of ``--model`` at ``--seed`` (``--res``³ coarse-to-fine, decimated to
``--faces``, vertex colours); ``--cameras`` ring cameras at ``--size`` px paint a ``--texture-size``² atlas
with the ``projection`` baseline (the mesh's own colours, no model) or the ``diffusion`` view model. Reported:
the pipeline's own seconds per stage (unwrap, texel geometry, render, generate, project, total), the
coverage counts, and the mean PSNR of the textured renders against the views over well-seen pixels.

``back_of_head``: does the textured head, seen from behind, show the back of the head or a face? The GAN's
own render from behind is the reference for what is there (the distilled model's
back of the head is measured against the truth in docs/distill.md), its render from the front, mirrored, is
what a face painted on the back would look like; PSNR of the textured mesh's render from behind against
each, on the pixels that are head in both. ``back_minus_face_db`` > 0: closer to the back than to a face.
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


def back_of_head(G, latent, textured, size: int = 128) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """The textured mesh seen from behind against the GAN's back and its mirrored front (module docstring)."""
    from backend.texture.project import render_texture
    from backend.views.from_gan import gan_view
    from backend.views.mesh_render import render_mesh

    back = gan_view(G, latent, 180.0, 0.0, size)
    front = gan_view(G, latent, 0.0, 0.0, size)
    m = textured.mesh
    raster = render_mesh(m.vertices, m.faces, None, back.camera)
    rgb = render_texture(raster, m.vertices, m.faces, m.uvs, m.texture.astype(np.float32) / 255.0, back.camera)
    head = (back.z < back.camera.depth_range()[1] - 1e-3) & (raster.coverage > 0.99)

    def psnr(a: np.ndarray, b: np.ndarray) -> float:
        return float(10 * np.log10(1.0 / max(float(((a - b) ** 2)[head].mean()), 1e-12)))

    to_back, to_face = psnr(rgb, back.rgb), psnr(rgb, front.rgb[:, ::-1])
    return {"psnr_to_gan_back_db": round(to_back, 2), "psnr_to_mirrored_front_db": round(to_face, 2),
            "back_minus_face_db": round(to_back - to_face, 2), "head_pixels": int(head.sum()), "size": size}


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
        "back_of_head": back_of_head(G, make_latent(G, args.seed, 0.7), result),
    }
    print(json.dumps(record.finish(report, args.out), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
