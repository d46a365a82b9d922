"""``aware3d views``: novel views of a head with the diffusion models (IVID), along a trajectory."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from backend.cli.common import add_device_arg, add_threads_arg, progress, use_threads


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "views", help="generate 3D-consistent novel views with the RGBD diffusion models",
        description="Generate RGBD views along a trajectory: the first view rendered by a GAN (--first gan "
                    "--model M --seed S, the default) or sampled by the unconditional model (--first uncond), every "
                    "further view from the warp-conditioned model given all previous views. Writes "
                    "view_NN.png, view_NN_depth.npy, sheet.png and views.json.")
    p.add_argument("--seed", type=int, default=0, help="seed of the first view and of the sampling noise")
    p.add_argument("--trajectory", default="yaw:-60:60:15",
                   help="3x9, yaw:A:B:STEP, ring:N or 'yaw,pitch;...' (degrees; default yaw:-60:60:15)")
    p.add_argument("--first", choices=("uncond", "gan"), default="gan",
                   help="where the first view comes from: the GAN (--model, default) or the unconditional "
                        "diffusion model (IVID's G_u; the bundled one is not yet at its FID goal: its card)")
    p.add_argument("--model", default=None, help="GAN for --first gan (default: the bundled default model)")
    p.add_argument("--truncation", type=float, default=0.7, help="GAN truncation for --first gan")
    p.add_argument("--views-model", default=None,
                   help="conditional model name or file (default: aware3d-views-cond)")
    p.add_argument("--first-model", default=None,
                   help="unconditional model name or file (default: aware3d-views-uncond)")
    p.add_argument("--steps", type=int, default=25, help="DDIM steps per view (default 25)")
    p.add_argument("--ddpm", action="store_true", help="first view by the full 1000-step DDPM (IVID's G_u sampler)")
    p.add_argument("--first-eta", type=float, default=None, metavar="ETA",
                   help="DDIM noise of G_u's first view, 0 (deterministic) to 1 (stochastic, like DDPM); "
                        "default 0, which measured the better FID (docs/views.md)")
    p.add_argument("--no-refine", action="store_true", help="no per-step pull towards the warped condition")
    p.add_argument("--no-shape", action="store_true",
                   help="with --first gan: do not give a shape-aware conditional model the GAN's geometry of each "
                        "view (it then guesses the silhouette from the previous views, as IVID)")
    # Default 1,1, not IVID's 0.1,0.2: with the bundled G_c it was better on every measure of eval-views, with
    # and without the view's geometry (docs/views.md, "Sampling G_c").
    p.add_argument("--pull", default="1,1", metavar="RGB,DEPTH",
                   help="share of the warped colour and depth mixed into every step's clean estimate inside "
                        "their masks (default 1,1: copy what earlier views saw; IVID: 0.1,0.2)")
    add_device_arg(p)
    add_threads_arg(p)
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from backend.devices import resolve_device
    from backend.errors import Aware3DError
    from backend.validate import check_output_dir, optional, within
    from backend.views import rgbd, trajectories
    from backend.views.generate import generate_views, load_view_models, parse_pull
    from backend.views.outputs import save_views

    within("diffusion_steps", args.steps, "--steps", "e.g. --steps 25")
    within("seed", args.seed, "--seed", "e.g. --seed 0")
    within("truncation", args.truncation, "--truncation", "e.g. --truncation 0.7")
    optional("ddim_eta", args.first_eta, "--first-eta")
    if args.first_eta is not None and (args.first != "uncond" or args.ddpm):
        raise Aware3DError("--first-eta sets G_u's DDIM sampling: it needs --first uncond and no --ddpm",
                           "drop --first-eta, or add --first uncond")
    angles = trajectories.parse(args.trajectory)
    pull = parse_pull(args.pull)
    check_output_dir(args.out)
    use_threads(args)
    device = resolve_device(args.device)
    t0 = time.time()
    models = load_view_models(args.views_model, args.first_model, args.steps, device,
                              need_uncond=args.first == "uncond")
    models.refine = not args.no_refine
    if args.first_eta is not None:
        models.first_eta = args.first_eta
    models.rgb_pull, models.depth_pull = pull
    size = models.resolution
    cams = [rgbd.orbit(y, p, size) for y, p in angles]
    first = None
    shapes = None
    extra: dict[str, object] = {"seed": args.seed, "trajectory": args.trajectory, "steps": args.steps,
                                "first": args.first, "pull": args.pull}
    if args.first == "uncond" and not args.ddpm:
        extra["first_eta"] = models.first_eta
    if args.first == "gan":
        from backend.registry import load_generator
        from backend.sampling import make_latent
        from backend.views.from_gan import gan_view

        model = load_generator(args.model, device)
        latent = make_latent(model.generator, args.seed, args.truncation)
        first = gan_view(model.generator, latent, angles[0][0], angles[0][1], size)
        extra["model"] = model.name
        if models.cond.cfg.shape and not args.no_shape:  # the GAN's head is the one being turned: its depth
            def shapes(i: int, cam: rgbd.Camera) -> np.ndarray:
                return gan_view(model.generator, latent, angles[i][0], angles[i][1], size).z
        extra["shape"] = shapes is not None
    elif args.ddpm:
        first = models.first_view(cams[0], args.seed, ddpm=True)
    print(f"{len(cams)} views at {size}px, {args.steps} DDIM steps, on {device} (loaded in "
          f"{time.time() - t0:.1f}s)", file=sys.stderr)
    with progress(total=len(cams), desc="views", unit="view") as bar:
        views = generate_views(models, cams, args.seed, first, progress=lambda *_: bar.update(1), shapes=shapes)
    extra["seconds"] = round(time.time() - t0, 2)
    paths = save_views(views, angles, args.out, extra)
    print(f"wrote {len(paths)} files to {args.out}", file=sys.stderr)
    return 0
