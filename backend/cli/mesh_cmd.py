"""``aware3d mesh``: a coloured (or textured) mesh of a generated head, as GLB, OBJ or PLY.

Thin front end over ``backend.mesh.extract_mesh`` (which the Blender server calls too): it validates the
arguments before loading anything, loads the model, computes the latent's tri-planes once, runs the stage
pipeline with one progress bar per stage, and writes the file atomically.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from backend.cli.common import add_device_arg, add_model_arg, add_threads_arg, check_threads, progress, use_threads
from backend.errors import Aware3DError
from backend.validate import check_output_file, within

MESH_SUFFIXES = (".glb", ".obj", ".ply")
AXES_CHOICES = ("blender", "eg3d")
MC_CHOICES = ("auto", "reference", "cuda", "pymcubes", "skimage")


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "mesh",
        help="extract a coloured mesh (GLB/OBJ/PLY) of a generated head",
        description="Extract the density level set of a generated head as a coloured mesh. The density "
                    "is sampled on a RES³ grid (EG3D's border trim), meshed by marching cubes at --level, "
                    "cleaned (largest component, Taubin smoothing), decimated to --faces and coloured from "
                    "the generator's colour field.",
    )
    add_model_arg(p)
    p.add_argument("--seed", type=int, default=0, help="latent seed (default 0)")
    p.add_argument("--avatar", type=Path,
                   help="mesh an avatar made by 'aware3d invert' instead of a seed (--model: its base model, "
                        "when it cannot be found by name)")
    p.add_argument("--truncation", type=float, default=0.7, help="truncation psi (default 0.7)")
    p.add_argument("--res", type=int, default=256, help="grid resolution per axis, 64-1024 (default 256)")
    p.add_argument("--level", type=float, help="density level of the surface, -1000 to 1000 (default: the model's "
                                               "own, which aware3d models record; EG3D: 10)")
    p.add_argument("--faces", type=int, default=50_000, help="target face count; 0 keeps all (default 50000)")
    p.add_argument("--smooth", type=int, default=10, help="Taubin smoothing iterations (default 10)")
    p.add_argument("--keep", type=float, default=1.0, metavar="RATIO",
                   help="keep components with at least RATIO x the largest one's faces (1: largest only)")
    p.add_argument("--texture", action="store_true",
                   help="UV-unwrap (xatlas) and bake a texture instead of vertex colours (slow, and slower than "
                        "linear in the face count: consider --faces 20000)")
    p.add_argument("--texture-size", type=int, default=1024, help="texture size in pixels (default 1024)")
    p.add_argument("--axes", choices=AXES_CHOICES, default="blender",
                   help="blender: metres, imports upright facing -Y with Blender's default importers; "
                        "eg3d: generator units and axes (Y up, face +Z)")
    add_device_arg(p)
    add_threads_arg(p)
    grid = p.add_mutually_exclusive_group()
    grid.add_argument("--coarse-to-fine", dest="coarse_to_fine", action="store_true", default=True,
                      help="query the network only near the surface (the default: ~10x fewer queries at 512³, "
                           "the same mesh)")
    grid.add_argument("--full-grid", dest="coarse_to_fine", action="store_false",
                      help="query every grid point (for comparison; much slower)")
    p.add_argument("--mc", choices=MC_CHOICES, default="auto", help=argparse.SUPPRESS)
    p.add_argument("--out", required=True, help="output file: .glb, .obj (+.mtl/.png) or .ply")
    p.set_defaults(func=run)


class StageBars:
    """One progress bar per pipeline stage (closed when the next stage starts)."""

    def __init__(self) -> None:
        self.stage: str | None = None
        self.bar: Any = None

    def __call__(self, stage: str, fraction: float) -> None:
        if stage != self.stage:
            self.close()
            self.stage = stage
            self.bar = progress(100, stage.replace("_", " "), unit="%")
        target = round(100 * min(max(fraction, 0.0), 1.0))
        self.bar.update(max(0, target - self.bar.n))

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _check_output(out: str, texture: bool) -> Path:
    path = check_output_file(out, MESH_SUFFIXES, kind="mesh")
    if texture and path.suffix.lower() == ".ply":
        raise Aware3DError("PLY files cannot carry a texture", "write .glb or .obj, or drop --texture")
    return path


def _check_args(args: argparse.Namespace) -> None:
    """The numbers, before the output is checked and long before anything is loaded."""
    within("cli_mesh_resolution", args.res, "--res", "e.g. --res 256 (512 for detail; 1024 uses a float16 grid, ~4 GB)")
    if args.level is not None:
        within("mesh_level", args.level, "--level", "the density of the surface; EG3D's is 10")
    within("faces", args.faces, "--faces (the target face count)", "0 keeps every face, e.g. --faces 50000")
    within("smooth_iterations", args.smooth, "--smooth", "e.g. --smooth 10")
    within("seed", args.seed, "--seed", "e.g. --seed 3")
    within("truncation", args.truncation, "--truncation", "e.g. --truncation 0.7")
    if args.texture:
        within("mesh_texture_size", args.texture_size, "--texture-size", "e.g. --texture-size 1024")
    check_threads(args.threads)


def run(args: argparse.Namespace) -> int:
    from backend.mesh.pipeline import MeshSettings

    _check_args(args)
    out = _check_output(args.out, args.texture)
    settings = MeshSettings(
        resolution=args.res, level=args.level, coarse_to_fine=args.coarse_to_fine, mc_method=args.mc,
        component_min_ratio=args.keep, smooth_iterations=args.smooth,
        target_faces=args.faces, texture=args.texture, texture_size=args.texture_size,
    ).validate()
    use_threads(args)

    from backend.devices import resolve_device
    from backend.mesh.export import save_mesh
    from backend.mesh.field import GeneratorField
    from backend.mesh.pipeline import extract_mesh
    from backend.registry import load_generator
    from backend.sampling import make_latent

    device = resolve_device(args.device)
    if args.avatar is not None:
        from backend.invert.avatar import avatar_latent

        G, latent, _ = avatar_latent(args.avatar, device, args.model)
        name, what = args.avatar.name.removesuffix(".safetensors"), "avatar"
    else:
        loaded = load_generator(args.model, device)
        G = loaded.generator
        latent = make_latent(G, args.seed, args.truncation)
        name, what = loaded.name, f"seed {args.seed}"
    field = GeneratorField(G, latent.planes)
    bars = StageBars()
    try:
        mesh = extract_mesh(field, settings, progress=bars)
        bars("export", 0.0)
        written = save_mesh(mesh, out, axes=args.axes)
        bars("export", 1.0)
    finally:
        bars.close()
    secs = mesh.stats.get("seconds", {})
    timing = ", ".join(f"{k} {v:.2f}s" for k, v in secs.items())
    level = mesh.stats["settings"]["level"]
    print(f"{name} {what}: {mesh.num_vertices} vertices, {mesh.num_faces} faces at density level {level:g} "
          f"({timing}) -> {', '.join(str(p) for p in written)}", file=sys.stdout)
    return 0
