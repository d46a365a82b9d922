"""``aware3d-train gan``: train a 3D-aware GAN on an EG3D-format zip (one process or under torchrun)."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from train.cli import command_line


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "gan", help="train a 3D-aware GAN (EG3D recipe + Mimic3D imitation stage)",
        description="Train a tri-plane GAN on an EG3D-format zip (PNGs + dataset.json with 25-value labels). "
                    "Run it under `torchrun --nproc-per-node N` for data-parallel training (gloo on CPU, NCCL "
                    "on GPU); --batch is the global batch. Snapshots are written atomically to --out every "
                    "--snap kimg; --resume continues from the newest one. The EMA generator is exported to "
                    "OUT/latest.safetensors at every snapshot (and to --export at the end).")
    p.add_argument("--data", required=True, type=Path, help="training zip (EG3D dataset format)")
    p.add_argument("--preset", default=None, help="training recipe (tiny, heads64); default: by --config")
    p.add_argument("--config", default=None, help="generator config name (default: the preset's)")
    p.add_argument("--out", required=True, type=Path, help="run folder")
    p.add_argument("--resume", action="store_true", help="continue from the newest snapshot in --out")
    p.add_argument("--kimg", type=float, help="total training length in thousands of images")
    p.add_argument("--batch", type=int, help="global batch size")
    p.add_argument("--gamma", type=float, help="R1 regularisation weight")
    p.add_argument("--opacity-reg", type=float, metavar="W",
                   help="empty-space prior weight for models with a learned backdrop (0: off; default: preset's)")
    p.add_argument("--opacity-entropy", type=float, metavar="W",
                   help="binary-entropy share of the empty-space prior (sharp surfaces; start it once the volume "
                        "has cleared)")
    p.add_argument("--distortion-reg", type=float, metavar="W",
                   help="weight of the ray-distortion loss (one surface per ray, so meshes line up with the "
                        "render's depth; 0: off)")
    p.add_argument("--lr-g", type=float)
    p.add_argument("--lr-d", type=float)
    p.add_argument("--snap", type=float, help="snapshot interval in kimg")
    p.add_argument("--seed", type=int)
    p.add_argument("--xflip", action="store_true", help="add mirrored copies of the data (labels mirrored)")
    p.add_argument("--imitation-start", type=float, metavar="KIMG",
                   help="start Mimic3D's 3D-to-2D imitation stage at this kimg (default: the preset's)")
    p.add_argument("--no-imitation", action="store_true", help="never run the imitation stage")
    p.add_argument("--lpips-weights", type=Path,
                   help="LPIPS(VGG16) weights (.safetensors) for the imitation loss instead of D features + L1")
    p.add_argument("--amp", action="store_true",
                   help="bf16 autocast for the forward passes (CUDA GPUs with bf16, e.g. the H100; or the CPU)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--export", type=Path, help="write the final EMA generator here (.safetensors)")
    p.set_defaults(func=run)


def build_options(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from backend.configs import get_config
    from backend.errors import Aware3DError
    from train.gan.options import PRESETS, GanOptions
    from train.gan.snapshot import stored_options

    preset_name = args.preset or ("heads64" if args.config in (None, "aware3d-heads64") else "tiny")
    if preset_name not in PRESETS:
        raise Aware3DError(f"unknown preset {preset_name!r}", f"choose one of: {', '.join(PRESETS)}")
    opts = PRESETS[preset_name]
    stored = stored_options(args.out) if getattr(args, "resume", False) else None
    if stored is not None:  # a resumed run keeps its own recipe; only explicit flags change it
        opts = GanOptions.from_dict(stored)
    if args.config:
        get_config(args.config)  # validates the name
        opts = dataclasses.replace(opts, config=args.config)
    changes = {k: v for k, v in {"kimg": args.kimg, "batch": args.batch, "r1_gamma": args.gamma,
                                  "lr_g": args.lr_g, "lr_d": args.lr_d, "snap_kimg": args.snap,
                                  "opacity_reg": args.opacity_reg, "opacity_entropy": args.opacity_entropy,
                                  "distortion_reg": args.distortion_reg,
                                  "image_kimg": args.snap, "seed": args.seed, "amp": args.amp or None}.items()
               if v is not None}
    opts = dataclasses.replace(opts, **changes)
    im = opts.imitation
    if args.no_imitation:
        im = dataclasses.replace(im, start_kimg=None)
    elif args.imitation_start is not None:
        im = dataclasses.replace(im, start_kimg=args.imitation_start)
    if args.lpips_weights is not None:
        im = dataclasses.replace(im, lpips_weights=str(args.lpips_weights))
    return dataclasses.replace(opts, imitation=im)


def run(args: argparse.Namespace) -> int:
    import torch

    from backend.devices import resolve_device
    from backend.errors import Aware3DError
    from train.amp import check_amp
    from train.data.zip_dataset import ZipDataset, ZipDatasetError
    from train.gan import distributed
    from train.gan.loop import GanTrainer
    from train.gan.snapshot import list_snapshots

    opts = build_options(args)
    device = resolve_device(args.device)
    info = distributed.init_from_env(device.type)
    if device.type == "cuda":
        device = torch.device("cuda", info.local_rank)
        torch.cuda.set_device(device)
    if not args.data.is_file():
        raise Aware3DError(f"data set not found: {args.data}",
                           "check the path, or make one with aware3d-train make-dataset")
    from train.gan.distributed import check_run_folder

    check_run_folder(args.out)  # a file, a read-only folder: one line now, not after the first snapshot's work
    if list_snapshots(args.out) and not args.resume:
        raise Aware3DError(f"{args.out} already holds a training run", "add --resume, or choose another --out")
    try:
        data = ZipDataset(args.data, xflip=args.xflip)
    except ZipDatasetError as exc:
        raise Aware3DError(str(exc), "pass an EG3D-format zip (aware3d-train make-dataset makes one)") from None
    except FileNotFoundError:
        raise Aware3DError(f"data set not found: {args.data}", "check the path") from None
    if opts.amp:
        try:
            check_amp(device)
        except ValueError as exc:
            raise Aware3DError(str(exc), "train without --amp") from None
    args.out.mkdir(parents=True, exist_ok=True)
    try:
        trainer = GanTrainer(opts, data, args.out, device=device, dist=info, command=command_line(args, "gan"),
                             data_path=str(args.data))
    except ValueError as exc:
        raise Aware3DError(str(exc), "pick a --config whose image size matches the data set") from None
    return distributed.train_command(trainer, info, args.out, args.resume, args.export,
                                     lambda: f"{trainer.kimg:.3f} kimg")
