"""``aware3d sample``: images, raw renders, depth and cameras for a range of seeds (and orbit videos)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from backend.cli.common import add_device_arg, add_model_arg, add_threads_arg, progress, use_threads
from backend.validate import BOUNDS, check_output_dir, optional, within

MAX_SEEDS = int(BOUNDS["seeds_per_command"].hi)


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("sample", help="sample heads from seeds and save images, depth and cameras",
                       description="Sample heads from seeds. For each seed: NAME.png (final image), "
                                   "NAME_raw.png, NAME_depth.png (16-bit) and NAME_depth.npy (world units), "
                                   "NAME_camera.json; with --orbit, NAME_orbit.mp4 (or .gif).")
    add_model_arg(p)
    p.add_argument("--seeds", default="0-3",
                   help=f"seeds, e.g. 0-7 or 1,5,9, at most {MAX_SEEDS} (default 0-3)")
    p.add_argument("--avatar", type=Path,
                   help="render an avatar made by 'aware3d invert' instead of seeds (--model: its base model, "
                        "when it cannot be found by name)")
    p.add_argument("--truncation", type=float, default=0.7, help="truncation psi (default 0.7)")
    p.add_argument("--yaw", type=float, default=0.0, help="camera yaw in degrees, + moves the camera to +x")
    p.add_argument("--pitch", type=float, default=0.0, help="camera pitch in degrees, + moves the camera up")
    lens = p.add_mutually_exclusive_group()
    lens.add_argument("--focal", type=float, help="focal length in image widths (FFHQ: 4.2647)")
    lens.add_argument("--fov", type=float, help="horizontal field of view in degrees (exact pinhole)")
    p.add_argument("--resolution", type=int, help="neural rendering resolution (default: the model's)")
    p.add_argument("--noise-mode", choices=["const", "random", "none"], default="const")
    p.add_argument("--exact", action="store_true",
                   help="the official arithmetic op for op: no random depth jitter (the official sampler's "
                        "deterministic branch) and the reference kernels instead of the fast ones (slower; the "
                        "fast kernels agree with it to float rounding)")
    p.add_argument("--orbit", type=int, metavar="FRAMES", help="also write an orbit video of FRAMES frames")
    p.add_argument("--orbit-format", choices=["mp4", "gif"], default="mp4")
    p.add_argument("--orbit-yaw", type=float, default=30.0, help="orbit yaw amplitude in degrees")
    p.add_argument("--orbit-pitch", type=float, default=10.0, help="orbit pitch amplitude in degrees")
    add_device_arg(p)
    add_threads_arg(p)
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.set_defaults(func=run)


def check_args(args: argparse.Namespace) -> list[int]:
    """Every argument and the output folder, before the model is loaded; returns the seeds."""
    from backend.sampling import parse_seeds

    seeds = parse_seeds(args.seeds, MAX_SEEDS)
    within("truncation", args.truncation, "--truncation", "e.g. --truncation 0.7")
    within("yaw_deg", args.yaw, "--yaw", "e.g. --yaw 20")
    within("pitch_deg", args.pitch, "--pitch", "e.g. --pitch -5")
    optional("focal", args.focal, "--focal", "e.g. --focal 4.2647 (FFHQ)")
    optional("fov_deg", args.fov, "field of view (--fov)", "e.g. --fov 13.37 for the FFHQ camera")
    optional("render_resolution", args.resolution, "--resolution", "e.g. --resolution 128")
    if args.orbit:  # 0: no orbit
        within("orbit_frames", args.orbit, "--orbit", "an orbit needs at least 2 frames, e.g. --orbit 60")
        within("yaw_deg", args.orbit_yaw, "--orbit-yaw", "e.g. --orbit-yaw 30")
        within("pitch_deg", args.orbit_pitch, "--orbit-pitch", "e.g. --orbit-pitch 10")
    check_output_dir(args.out)
    use_threads(args)
    return seeds


def run(args: argparse.Namespace) -> int:
    from backend.devices import resolve_device
    from backend.outputs import save_view, write_video
    from backend.registry import load_generator
    from backend.render.renderer import SamplingSettings
    from backend.sampling import camera_label, make_latent, orbit_labels, render_view

    seeds = check_args(args)
    device = resolve_device(args.device)
    t0 = time.time()
    if args.avatar is not None:
        from backend.invert.avatar import avatar_latent

        G, avatar, _ = avatar_latent(args.avatar, device, args.model)
        name = args.avatar.name.removesuffix(".safetensors")
        items = [(name.removesuffix(".avatar"), 0, avatar, {"avatar": str(args.avatar)})]
    else:
        model = load_generator(args.model, device)
        G, name = model.generator, model.name
        items = [(f"seed{seed:04d}", seed, None, {"seed": seed, "truncation": args.truncation}) for seed in seeds]
    label = camera_label(G.cfg, args.yaw, args.pitch, focal=args.focal, fov=args.fov)
    orbit = (orbit_labels(G.cfg, args.orbit, args.orbit_yaw, args.orbit_pitch, args.focal, args.fov)
             if args.orbit else [])
    print(f"model {name} ({G.cfg.name}, {G.cfg.img_resolution}px) on {device}, "
          f"loaded in {time.time() - t0:.1f}s", file=sys.stderr)
    written = 0
    with progress(total=len(items) * (1 + len(orbit)), desc="sample", unit="view") as bar:
        for stem, seed, latent, what in items:
            if latent is None:
                latent = make_latent(G, seed, args.truncation, args.noise_mode,
                                     kernels="reference" if args.exact else "fast")
            sampling = SamplingSettings(exact=args.exact, seed=seed)
            view = render_view(G, latent, label, args.resolution, sampling)
            extra = {"model": name, "config": G.cfg.name, **what,
                     "yaw_deg": args.yaw, "pitch_deg": args.pitch, "noise_mode": args.noise_mode}
            written += len(save_view(view, args.out, stem, extra))
            bar.update(1)
            if orbit:
                frames = []
                for lab in orbit:
                    frames.append(render_view(G, latent, lab, args.resolution, sampling).image)
                    bar.update(1)
                write_video(args.out / f"{stem}_orbit.{args.orbit_format}", frames)
                written += 1
    print(f"wrote {written} files to {args.out}", file=sys.stderr)
    return 0
