# SPDX-License-Identifier: GPL-3.0-or-later
"""``aware3d invert`` (photo → avatar, renders, orbit, mesh) and ``aware3d edit`` (attribute or texture edits).

Thin front ends over :mod:`backend.invert`: arguments are checked before anything heavy is loaded, each
pipeline stage gets its own progress bar, and every user error is one line (``Aware3DError``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from backend.cli.common import add_device_arg, add_model_arg, add_threads_arg, check_threads, progress, use_threads
from backend.errors import Aware3DError
from backend.invert.refine import DEFAULT_REFINE, REFINES, check_refine, refine_ignored_note
from backend.validate import check_output_dir, optional, safe_stem, sanitise_stem, within

MESH_FORMATS = ("glb", "obj", "ply")


def _pair(text: str, what: str) -> tuple[float, float]:
    try:
        a, b = (float(v) for v in text.split(","))
    except ValueError:
        raise Aware3DError(f"cannot read {what} {text!r}", f"use two numbers, e.g. --{what} 15,-5") from None
    return a, b


def _add_output_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--name", help="avatar name, a plain file name without folders (default: the photo's file name)")
    p.add_argument("--orbit", type=int, default=48, metavar="FRAMES", help="orbit video frames (0: none)")
    p.add_argument("--orbit-format", choices=["mp4", "gif"], default="mp4")
    p.add_argument("--no-mesh", action="store_true", help="skip the mesh")
    p.add_argument("--mesh-format", choices=MESH_FORMATS, default="glb")
    p.add_argument("--mesh-res", type=int, default=128, help="mesh grid resolution per axis (default 128)")
    p.add_argument("--faces", type=int, default=20_000, help="target mesh faces; 0 keeps all (default 20000)")
    p.add_argument("--level", type=float, help="mesh density level (default: the model's own; EG3D: 10)")
    add_threads_arg(p)
    add_device_arg(p)


def register(sub: Any) -> None:
    p = sub.add_parser(
        "invert", help="turn a photo into an avatar (3D head): pose, pivot, pseudo-multi-view tuning",
        description="Invert a photo into the generator: a photo encoder that fits the model gives the first "
                    "avatar (latent and camera) in one forward pass, then the HFGI3D-style optimisation refines "
                    "it (--refine): a W+ pivot fitted jointly with the camera, a copy of the generator tuned on "
                    "the photo for a depth map, pseudo views around the photo's pose by visibility analysis, and "
                    "the original generator tuned on the photo plus the pseudo views. Without an encoder the "
                    "optimisation starts from the average head at the landmarks' (or a searched) pose. Writes "
                    "NAME.avatar.safetensors, renders, pseudo_views.png, an orbit video, a mesh and report.json "
                    "to --out.")
    p.add_argument("photo", type=Path, help="image file (PNG, JPEG, WebP, ...; any size; RGB or RGBA)")
    add_model_arg(p)
    p.add_argument("--encoder", default="auto", metavar="auto|none|FILE",
                   help="photo encoder for the first avatar: auto (the first encoder in the model folders that "
                        "fits the model; none fits: optimise from the average head, with a note), none, or a "
                        ".safetensors file or model name (default auto)")
    p.add_argument("--refine", choices=list(REFINES), default=None,
                   help="refinement after the encoder: none (its avatar as it is), fast (a short pivot, a few "
                        "pseudo views, a short stage 2), full (every stage at the preset's budgets) (default "
                        f"{DEFAULT_REFINE}); without an encoder every stage runs: none or fast with --encoder none "
                        "is an error, and with auto finding no encoder a note says it is ignored")
    p.add_argument("--pose", help="camera YAW,PITCH in degrees (default: estimated)")
    p.add_argument("--refine-pose", action="store_true",
                   help="also refine a given --pose, or the encoder's camera, jointly with the latent")
    p.add_argument("--crop", default="auto",
                   help="auto (from the detected face; a photo without one is refused), full (already framed: "
                        "centred square) or X,Y,SIZE in photo pixels (default auto)")
    p.add_argument("--align", choices=["auto", "heads", "ffhq", "none"], default="auto",
                   help="how --crop auto frames the face: heads (like the synthetic training heads), ffhq (EG3D's "
                        "FFHQ recipe, for official FFHQ checkpoints; uses the 68-point landmarks), none (no face "
                        "detection: skin colour or mask); auto picks by the model (default)")
    p.add_argument("--landmarks", type=int, choices=[5, 68], default=5,
                   help="landmark model: 5 (public domain, default) or 68 (more accurate pose prior; trained on "
                        "iBUG 300-W, non-commercial terms: see docs/invert.md)")
    p.add_argument("--no-pose-prior", action="store_true",
                   help="ignore the landmarks' pose and search yaw and pitch by render-and-compare")
    p.add_argument("--mask", type=Path, help="foreground mask image (white = head) for framing and --matte")
    p.add_argument("--auto-mask", action="store_true", help="estimate a foreground mask (GrabCut) for --matte")
    p.add_argument("--matte", help="replace the background outside the mask by this colour R,G,B (0-1)")
    p.add_argument("--preset", choices=["fast", "default", "quality"], default="default",
                   help="step budget: fast (previews), default (< 90 s at 64² on 2 CPU cores), quality "
                        "(HFGI3D's counts)")
    p.add_argument("--mode", choices=["full", "single-view"], default="full",
                   help="full: pseudo-multi-view (HFGI3D); single-view: PTI-like tuning on the photo only")
    p.add_argument("--space", choices=["w", "w+"], help="latent space of the pivot (default w+)")
    p.add_argument("--steps-project", type=int, help="pivot optimisation steps")
    p.add_argument("--steps-stage1", type=int, help="stage-1 tuning steps (depth for the pseudo views)")
    p.add_argument("--steps-stage2", type=int, help="stage-2 tuning steps")
    p.add_argument("--views", type=int, help="number of pseudo views")
    p.add_argument("--pseudo-yaw", type=float, help="yaw half-range of the pseudo views around the photo's pose")
    p.add_argument("--pseudo-weight", type=float,
                   help="loss weight of a pseudo view relative to the photo (default 0.5)")
    p.add_argument("--locality", type=float, default=0.0, help="PTI locality regulariser weight (default off)")
    p.add_argument("--tune-lr", type=float, help="learning rate of the generator tuning (3e-4)")
    p.add_argument("--store", choices=["delta", "full"], default="delta",
                   help="store tuned parameters as differences to the base model (default) or as values")
    p.add_argument("--no-geometry", action="store_true",
                   help="do not keep the stage-1 geometry in the avatar (smaller; no texture edits)")
    p.add_argument("--seed", type=int, default=0)
    _add_output_args(p)
    p.set_defaults(func=run_invert)

    e = sub.add_parser(
        "edit", help="edit an avatar: move along an attribute direction, or re-texture from an edited photo",
        description="Latent edit: --direction NAME --amount X moves the avatar's latent X standard deviations "
                    "along a learned attribute direction (see --list). Texture edit: --image EDITED.png (an "
                    "edited copy of the avatar's input.png) is warped into the stored pseudo views and stage 2 "
                    "is re-run. Writes a new avatar, renders, an orbit video and a mesh to --out.")
    e.add_argument("--avatar", required=True, type=Path, help="a .avatar.safetensors made by 'aware3d invert'")
    e.add_argument("--direction", help="attribute direction name (see --list)")
    e.add_argument("--amount", type=float, default=1.0, help="edit strength in standard deviations (default 1)")
    e.add_argument("--directions", type=Path, help="directions file (default: beside the base model)")
    e.add_argument("--list", action="store_true", help="list the available directions and exit")
    e.add_argument("--image", type=Path, help="edited input image (texture edit: re-runs stage 2)")
    e.add_argument("--steps-stage2", type=int, help="stage-2 steps for a texture edit")
    e.add_argument("--model", help="the avatar's base model, when it cannot be found by name")
    e.add_argument("--out", type=Path, help="output folder")
    e.add_argument("--name", help="name of the edited avatar, a plain file name (default: AVATAR-edit)")
    e.add_argument("--orbit", type=int, default=48, metavar="FRAMES", help="orbit video frames (0: none)")
    e.add_argument("--orbit-format", choices=["mp4", "gif"], default="mp4")
    e.add_argument("--no-mesh", action="store_true", help="skip the mesh")
    e.add_argument("--mesh-format", choices=MESH_FORMATS, default="glb")
    e.add_argument("--mesh-res", type=int, default=128)
    e.add_argument("--faces", type=int, default=20_000)
    e.add_argument("--level", type=float, help="mesh density level (default: the model's own; EG3D: 10)")
    add_threads_arg(e)
    add_device_arg(e)
    e.set_defaults(func=run_edit)


class StageBars:
    """One tqdm bar per stage: ``__call__(stage, step, total, message)`` is the pipeline's progress hook."""

    def __init__(self) -> None:
        self.stage: str | None = None
        self.bar: Any = None

    def __call__(self, stage: str, step: int, total: int, message: str = "") -> None:
        if stage != self.stage or self.bar is None or self.bar.total != total:
            self.close()
            self.stage = stage
            self.bar = progress(total, stage)
        self.bar.update(max(0, step - self.bar.n))
        if message:
            self.bar.set_postfix_str(message, refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _check_common(args: argparse.Namespace) -> None:
    """The output arguments shared by invert and edit, then the output folder itself: before anything loads."""
    within("cli_mesh_resolution", args.mesh_res, "--mesh-res", "e.g. --mesh-res 128")
    if args.orbit != 0:
        within("orbit_frames", args.orbit, "--orbit (frames)", "0 for none, or at least 2, e.g. --orbit 48")
    within("faces", args.faces, "--faces", "0 keeps every face, e.g. --faces 20000")
    if args.level is not None:
        within("mesh_level", args.level, "--level", "the density of the surface; EG3D's is 10")
    check_threads(args.threads)
    if args.name is not None:
        safe_stem(args.name, "--name")
    check_output_dir(args.out)
    use_threads(args)


def _avatar_name(args: argparse.Namespace, derived: str) -> str:
    """``--name`` (checked by :func:`_check_common`), else a stem made from an input file's name."""
    return args.name if args.name is not None else sanitise_stem(derived, "avatar")


def build_settings(args: argparse.Namespace, refine: str = "full") -> Any:
    """InvertSettings from the command line (preset, then the refinement level's budgets, then the explicit
    overrides)."""
    from dataclasses import replace

    from backend.invert.pipeline import preset, refine_budget

    s = refine_budget(preset(args.preset), refine)
    pose = _pair(args.pose, "pose") if args.pose else None
    if pose is not None and not (-90 < pose[0] < 90 and -60 < pose[1] < 60):
        raise Aware3DError(f"pose {pose} is outside the generator's range", "yaw within ±90°, pitch within ±60°")
    for name in ("steps_project", "steps_stage1", "steps_stage2"):
        optional("invert_steps", getattr(args, name), f"--{name.replace('_', '-')}", "e.g. 100")
    optional("pseudo_views", args.views, "--views", "e.g. --views 12")
    optional("pseudo_yaw_deg", args.pseudo_yaw, "--pseudo-yaw", "e.g. --pseudo-yaw 30")
    optional("pseudo_weight", args.pseudo_weight, "--pseudo-weight", "e.g. --pseudo-weight 0.5")
    within("locality_weight", args.locality, "--locality", "0 (off) or e.g. --locality 1")
    optional("learning_rate", args.tune_lr, "--tune-lr", "e.g. --tune-lr 3e-4")
    within("seed", args.seed, "--seed", "e.g. --seed 0")
    proj = s.project
    if args.space:
        proj = replace(proj, space=args.space)
    if args.steps_project is not None:
        proj = replace(proj, steps=args.steps_project)
    st1, st2, ps = s.stage1, s.stage2, s.pseudo
    if args.steps_stage1 is not None:
        st1 = replace(st1, steps=args.steps_stage1)
    if args.steps_stage2 is not None:
        st2 = replace(st2, steps=args.steps_stage2)
    if args.tune_lr is not None:
        st1, st2 = replace(st1, lr=args.tune_lr), replace(st2, lr=args.tune_lr)
    if args.pseudo_weight is not None:
        st2 = replace(st2, pseudo_weight=args.pseudo_weight)
    if args.locality:
        st2 = replace(st2, locality_weight=args.locality)
    if args.views is not None:
        ps = replace(ps, views=args.views)
    if args.pseudo_yaw is not None:
        ps = replace(ps, yaw_range=args.pseudo_yaw)
    return replace(s, pose=pose, refine_given_pose=args.refine_pose, project=proj, stage1=st1, stage2=st2,
                   pseudo=ps, mode=args.mode, seed=args.seed)


def _check_encoder_arg(spec: str) -> None:
    """A missing encoder file is reported before the model is loaded (names are resolved later)."""
    if spec in ("auto", "none"):
        return
    path = Path(spec).expanduser()
    if (path.suffix or "/" in spec or "\\" in spec) and not path.is_file():
        raise Aware3DError(f"encoder file not found: {path}", "check the path, or use --encoder auto")


def output_options(args: argparse.Namespace, name: str) -> Any:
    from backend.invert.results import OutputOptions

    return OutputOptions(name=name, orbit_frames=args.orbit, orbit_format=args.orbit_format,
                         mesh=not args.no_mesh, mesh_format=args.mesh_format, mesh_resolution=args.mesh_res,
                         mesh_faces=args.faces, mesh_level=args.level,
                         store=getattr(args, "store", "delta"), keep_geometry=not getattr(args, "no_geometry", False))


def _matte(text: str | None) -> tuple[float, float, float] | None:
    if not text or text == "none":
        return None
    try:
        rgb = tuple(float(v) for v in text.split(","))
    except ValueError:
        rgb = ()
    if len(rgb) != 3 or not all(0 <= v <= 1 for v in rgb):
        raise Aware3DError(f"cannot read --matte {text!r}", "use R,G,B between 0 and 1, e.g. --matte 0.6,0.6,0.6")
    return rgb  # type: ignore[return-value]


def run_invert(args: argparse.Namespace) -> int:
    import time
    from dataclasses import replace

    from backend.invert.face import FaceSettings
    from backend.invert.frontend import prepare_photo
    from backend.invert.image import CropBox, crop_preview, load_mask, load_photo

    settings = build_settings(args)
    _check_common(args)
    _check_encoder_arg(args.encoder)
    check_refine(args.refine, args.encoder)
    matte = _matte(args.matte)
    crop: str | CropBox = args.crop if args.crop in ("auto", "full") else CropBox.parse(args.crop)
    photo = load_photo(args.photo)
    mask = load_mask(args.mask, photo) if args.mask else None
    name = _avatar_name(args, args.photo.name.split(".")[0])

    from backend.checkpoints.model_file import file_sha256
    from backend.devices import resolve_device
    from backend.invert.avatar import base_identity
    from backend.invert.pipeline import invert
    from backend.invert.results import write_outputs
    from backend.invert.start import choose_encoder, encoder_start
    from backend.registry import load_generator

    device = resolve_device(args.device)
    t0 = time.perf_counter()
    loaded = load_generator(args.model, device)
    G = loaded.generator
    res = G.cfg.img_resolution
    fe = prepare_photo(photo, G.cfg, crop, args.align, mask, args.auto_mask, matte,
                       FaceSettings(landmarks=args.landmarks))
    framed = fe.framed
    if fe.notice:
        print(f"note: {fe.notice}", file=sys.stderr)
    face = fe.face
    preview = crop_preview(photo, framed, landmarks=None if face is None else face.landmarks,
                           face_box=None if face is None else face.box)
    print(f"model {loaded.name} ({G.cfg.name}, {res}px) on {device}; {fe.summary()}", file=sys.stderr)
    base = base_identity(loaded)
    choice = choose_encoder(args.encoder, G, base, device)
    start = None
    if choice.encoder is None:
        if choice.notice:
            print(f"note: {refine_ignored_note(choice.notice, args.refine)}", file=sys.stderr)
        if fe.pose_prior is not None and not args.no_pose_prior:
            settings = replace(settings, pose_prior=fe.pose_prior)
    else:
        refine = args.refine or DEFAULT_REFINE
        settings = build_settings(args, refine)
        start = encoder_start(choice.encoder, G, framed.image, choice.info)
        print(f"first avatar from {choice.info['name']} in {start.seconds:.3f} s: yaw {start.yaw:+.1f}°, pitch "
              f"{start.pitch:+.1f}°; refinement {refine}", file=sys.stderr)
    bars = StageBars()
    try:
        inv = invert(G, framed.image, settings, progress=bars, start=start)
        source = {"photo": args.photo.name, "sha256": file_sha256(args.photo), "size": list(photo.size),
                  "crop": framed.box.to_list(), "crop_method": framed.method, "crop_note": framed.note,
                  "crop_angle_deg": round(framed.box.angle, 3), "crop_stretch": framed.box.stretch,
                  "face": fe.to_dict(),
                  "mask": str(args.mask) if args.mask else ("alpha" if photo.alpha is not None else None)}
        written = write_outputs(args.out, inv, G, base, output_options(args, name), source, preview, bars)
    finally:
        bars.close()
    total = time.perf_counter() - t0
    pose = inv.pose
    m = inv.metrics.get("final", {})
    stages = ", ".join(f"{k} {v:.2f} s" for k, v in inv.timings.items())
    print(f"pose: yaw {pose.yaw:+.1f}°, pitch {pose.pitch:+.1f}° ({pose.source}); input view PSNR "
          f"{m.get('psnr', float('nan')):.2f} dB, SSIM {m.get('ssim', float('nan')):.3f}; "
          f"{total:.1f} s in all (stages: {stages})", file=sys.stderr)
    for role, path in written.files.items():
        print(f"{role}: {path}")
    return 0


def run_edit(args: argparse.Namespace) -> int:
    from backend.devices import resolve_device
    from backend.invert.avatar import read_avatar
    from backend.invert.directions import find_directions

    if args.list:
        data = read_avatar(args.avatar)
        ds = find_directions(args.directions, data.base)
        for n in ds.names():
            d = ds.directions[n]
            q = ", ".join(f"{k} {v:.3g}" for k, v in d.quality.items())
            print(f"{n}: {d.description}" + (f" ({q})" if q else ""))
        return 0
    if args.out is None:
        raise Aware3DError("--out is required", "e.g. --out edited/")
    if (args.direction is None) == (args.image is None):
        raise Aware3DError("give either --direction NAME (latent edit) or --image EDITED.png (texture edit)",
                           "list the directions with --list")
    if args.direction is not None:
        within("edit_amount", args.amount, "--amount", "use -3 to 3 standard deviations")
    optional("invert_steps", args.steps_stage2, "--steps-stage2", "e.g. --steps-stage2 100")
    _check_common(args)
    device = resolve_device(args.device)

    from backend.invert.edit import edit_latent, edit_texture, open_avatar
    from backend.invert.image import frame_photo, load_photo
    from backend.invert.results import write_outputs

    av = open_avatar(str(args.avatar), device, args.model)
    name = _avatar_name(args, args.avatar.name.split(".")[0] + "-edit")
    bars = StageBars()
    try:
        if args.direction is not None:
            info = edit_latent(av, args.direction, args.amount, args.directions)
        else:
            photo = load_photo(args.image)
            img = frame_photo(photo, av.inv.G.cfg.img_resolution, "full").image.to(device)
            info = edit_texture(av, img, args.steps_stage2, bars)
        from backend.invert.avatar import base_identity

        source = {**av.data.header.provenance.get("source", {}), "edited_from": args.avatar.name, "edit": info}
        written = write_outputs(args.out, av.inv, av.base.generator, base_identity(av.base),
                                output_options(args, name), source, None, bars)
    finally:
        bars.close()
    for role, path in written.files.items():
        print(f"{role}: {path}")
    return 0
