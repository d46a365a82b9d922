"""``aware3d texture``: camera-aligned texture for a mesh from generated views (docs/texture.md).

Thin front end over ``backend.texture``: validates the arguments and reads the mesh and cameras before
loading any model, picks the view generator (diffusion when its model is there, else the projection
baseline — and says which), shows one progress bar over the views, and writes the output folder.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from backend.cli.common import add_device_arg, add_threads_arg, progress, use_threads
from backend.validate import check_output_dir, within

AXES_CHOICES = ("blender", "eg3d")
GENERATOR_CHOICES = ("auto", "projection", "diffusion")


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "texture",
        help="texture a mesh from generated views around it (camera-aligned projection)",
        description="For each camera in order: render the mesh's current colours and depth, generate the "
                    "view conditioned on them, and project it back onto the mesh where it sees the surface "
                    "well (visibility, cos^p weight, frame feather, silhouette erosion). Writes a textured "
                    "GLB, the generated views, per-camera projected UVs and weights, and a report.",
    )
    p.add_argument("--mesh", required=True, type=Path, help="input mesh: a .glb written by 'aware3d mesh'")
    p.add_argument("--axes", choices=AXES_CHOICES, default="blender",
                   help="axes the input GLB was written with and the output GLB is written in "
                        "(as 'aware3d mesh --axes'; default blender)")
    p.add_argument("--cameras", required=True, metavar="FILE|ring:N",
                   help="a cameras.json (generator or Blender form, see docs/texture.md) or ring:N for N "
                        "orbit cameras around the head, frontal first")
    p.add_argument("--pitch", type=float, default=0.0, help="pitch of the ring cameras in degrees (default 0)")
    p.add_argument("--size", type=int, default=64, help="view size in pixels, longer side (default 64)")
    p.add_argument("--texture-size", type=int, default=1024, help="texture atlas size in pixels (default 1024)")
    p.add_argument("--exponent", type=float, default=3.0, help="p of the cos^p view weight (default 3)")
    p.add_argument("--max-angle", type=float, default=70.0,
                   help="ignore surface seen more obliquely than this, in degrees (default 70)")
    p.add_argument("--generator", choices=GENERATOR_CHOICES, default="auto",
                   help="diffusion: the conditional view model; projection: re-project the mesh's own colours "
                        "(baseline); auto (default): diffusion if its model file exists, else projection")
    p.add_argument("--diffusion-model", type=Path, default=None,
                   help="the conditional view model (default assets/models/aware3d-views-cond.safetensors)")
    p.add_argument("--steps", type=int, default=25, help="diffusion sampling steps (default 25)")
    p.add_argument("--pull", default="1,1", metavar="RGB,DEPTH",
                   help="diffusion: share of the mesh's colour and depth mixed into every sampling step where they "
                        "are known (default 1,1: keep the mesh's colours where it is seen well; IVID: 0.1,0.2)")
    p.add_argument("--seed", type=int, default=0, help="diffusion seed (default 0)")
    add_device_arg(p)
    add_threads_arg(p)
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.set_defaults(func=run)


def _check_args(args: argparse.Namespace) -> None:
    within("view_size", args.size, "--size", "e.g. --size 64")
    within("texture_size", args.texture_size, "--texture-size", "e.g. --texture-size 1024")
    within("texture_exponent", args.exponent, "--exponent", "e.g. --exponent 3")
    within("max_angle_deg", args.max_angle, "--max-angle (degrees)", "e.g. --max-angle 70")
    within("diffusion_steps", args.steps, "--steps", "e.g. --steps 25")
    within("pitch_deg", args.pitch, "--pitch", "e.g. --pitch 0")
    within("seed", args.seed, "--seed", "e.g. --seed 0")
    check_output_dir(args.out)
    use_threads(args)


def run(args: argparse.Namespace) -> int:
    _check_args(args)
    from backend.texture.cameras_io import parse_camera_arg
    from backend.texture.generators import choose_generator
    from backend.texture.glb_read import read_glb

    mesh = read_glb(args.mesh, axes=args.axes)
    named = parse_camera_arg(args.cameras, args.pitch, args.size)
    kind, model = choose_generator(args.generator, args.diffusion_model)

    from backend.devices import resolve_device
    from backend.texture.generators import describe_generator, load_generator
    from backend.texture.pipeline import TextureOptions, texture_mesh, write_outputs

    device = str(resolve_device(args.device)) if kind == "diffusion" else "cpu"
    from backend.views.generate import parse_pull

    _, generator = load_generator(kind, model, steps=args.steps, seed=args.seed, device=device,
                                  pull=parse_pull(args.pull))
    label, note = describe_generator(args.generator, kind, model)
    print(f"view generator: {label}" + (f" ({model})" if model else "") + (f" - {note}" if note else ""),
          file=sys.stderr)
    bar = progress(len(named), "views", unit="view")

    def on_progress(done: int, total: int, message: str, preview: Path | None) -> None:
        bar.set_postfix_str(message, refresh=False)
        bar.update(max(0, done - bar.n))

    try:
        result = texture_mesh(mesh, [c for _, c in named], generator, size=args.size,
                              texture_size=args.texture_size, exponent=args.exponent, progress=on_progress,
                              names=[n for n, _ in named], options=TextureOptions(max_angle=args.max_angle),
                              view_dir=args.out / "views")
    finally:
        bar.close()
    extra = {"mesh": str(args.mesh), "generator": kind, "generator_label": label, "generator_note": note,
             "diffusion_model": str(model) if model else None,
             "seed": args.seed, "steps": args.steps if kind == "diffusion" else None}
    write_outputs(result, args.out, axes=args.axes, extra=extra)
    rep = result.report
    psnrs = [c["psnr_seen"] for c in rep["cameras"] if c.get("psnr_seen") is not None]
    mean_psnr = f"{sum(psnrs) / len(psnrs):.2f} dB" if psnrs else "n/a"
    print(f"{args.mesh.name}: {len(named)} views ({kind}), {rep['faces']} faces, texture "
          f"{rep['texture_size']}px, mean PSNR (seen) {mean_psnr}, {rep['faces_seen_untextured']} seen faces "
          f"untextured ({rep['seconds']['total']:.1f}s) -> {args.out}", file=sys.stdout)
    return 0
