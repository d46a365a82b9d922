# SPDX-License-Identifier: GPL-3.0-or-later
"""``aware3d-train distill``: train the generator from the synthetic heads' ground truth (one process or
under torchrun)."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path

from train.cli import command_line


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "distill", help="train the generator from synthetic heads' ground truth (z = the head's latent)",
        description="Distil the procedural synthetic heads into a tri-plane generator: z is each head's "
                    "calibrated latent (train/synthetic/latent.py), and G(z, camera) is trained against the "
                    "true image, raw render, opacity, depth and signed distance of that head. Heads are "
                    "rendered on the fly (default) or read from a zip made by aware3d-train make-dataset "
                    "(--data). Run it under `torchrun --nproc-per-node N` for data-parallel training; "
                    "--batch is the global batch. Snapshots are written atomically to --out every --snap "
                    "kimg, with OUT/latest.safetensors; --resume continues exactly; Ctrl-C or SIGTERM stops "
                    "with a snapshot; a resumed run keeps its stored options unless flags override them.")
    p.add_argument("--out", required=True, type=Path, help="run folder")
    p.add_argument("--preset", default="heads64", help="recipe: heads64 (the bundled model) or tiny (tests)")
    p.add_argument("--config", default=None, help="generator config name (default: the preset's)")
    p.add_argument("--data", type=Path, help="synthetic-head zip with latents instead of rendering on the fly")
    p.add_argument("--init-from", type=Path, metavar="MODEL",
                   help="start from this model's weights where names and shapes match (e.g. a trained GAN)")
    p.add_argument("--features", type=Path,
                   help="feature network for the perceptual loss (default: the bundled aware3d-features64)")
    p.add_argument("--resume", action="store_true", help="continue from the newest snapshot in --out")
    p.add_argument("--kimg", type=float, help="total training length in thousands of images")
    p.add_argument("--batch", type=int, help="global batch size")
    p.add_argument("--lr", type=float, help="Adam learning rate")
    p.add_argument("--around", type=float, help="share of cameras from anywhere around the head (0-1)")
    p.add_argument("--balance", type=float,
                   help="share of each discrete choice (hat, beard, glasses, hair) drawn from a uniformly chosen "
                        "bin instead of its data frequency (0-1; heads64: 0.3)")
    p.add_argument("--perceptual", type=float, help="weight of the perceptual loss (0: off)")
    p.add_argument("--density", type=float, help="weight of the density loss against the true surface (0: off)")
    p.add_argument("--depth", type=float, dest="depth_l1", help="weight of the depth loss")
    p.add_argument("--colour", type=float, dest="colour_l1",
                   help="weight of the colour loss at points of the true surface (0: off)")
    p.add_argument("--alpha", type=float, dest="alpha_l1", help="weight of the opacity loss")
    p.add_argument("--rays", type=int, metavar="N",
                   help="render only N random pixels of each image and train on those (configs without SR, e.g. "
                        "aware3d-heads64-direct; no perceptual term); lets a step afford more heads")
    p.add_argument("--fixed-heads", type=int, metavar="N",
                   help="over-fitting test: train on N fixed heads only (new cameras every step) and log their "
                        "head PSNR at each snapshot (fit/head_psnr): the ceiling of a config or recipe in "
                        "minutes (0: new heads every step, the default)")
    p.add_argument("--snap", type=float, help="snapshot interval in kimg")
    p.add_argument("--seed", type=int)
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    p.add_argument("--render-workers", type=int, default=1, metavar="N",
                   help="processes rendering the next batches while one trains (default 1; 0: render in the "
                        "training process); the numbers do not depend on it")
    p.add_argument("--amp", action="store_true", help="bf16 autocast (CUDA, or CPUs with bf16 support)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--export", type=Path, help="write the final EMA generator here (.safetensors)")
    p.set_defaults(func=run)


def build_options(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from backend.configs import get_config
    from backend.errors import Aware3DError
    from train.distill.options import PRESETS, DistillOptions
    from train.gan.snapshot import stored_options

    if args.preset not in PRESETS:
        raise Aware3DError(f"unknown preset {args.preset!r}", f"choose one of: {', '.join(PRESETS)}")
    opts = PRESETS[args.preset]
    stored = stored_options(args.out) if args.resume else None
    if stored is not None:  # a resumed run keeps its own recipe; only explicit flags change it
        opts = DistillOptions.from_dict(stored)
    if args.config:
        get_config(args.config)
        opts = dataclasses.replace(opts, config=args.config)
    changes = {"kimg": args.kimg, "batch": args.batch, "lr": args.lr, "around": args.around, "balance": args.balance,
               "perceptual": args.perceptual, "density": args.density, "depth_l1": args.depth_l1,
               "colour_l1": args.colour_l1, "alpha_l1": args.alpha_l1,
               "snap_kimg": args.snap, "image_kimg": args.snap, "seed": args.seed, "amp": args.amp or None,
               "fixed_heads": args.fixed_heads, "rays": args.rays}
    for key, value in changes.items():
        if value is None:
            continue
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value < 0:
            raise Aware3DError(f"--{key.split('_')[0]} must not be negative, got {value}")
        opts = dataclasses.replace(opts, **{key: value})
    if stored is not None:
        before = DistillOptions.from_dict(stored).to_dict()
        changed = [f"{k} {before[k]} -> {v}" for k, v in opts.to_dict().items() if before[k] != v]
        if changed and os.environ.get("RANK", "0") == "0":  # once under torchrun
            print(f"resuming with changed options: {', '.join(changed)}", file=sys.stderr)
    for key in ("around", "balance"):
        if not 0 <= getattr(opts, key) <= 1:
            raise Aware3DError(f"--{key} must be between 0 and 1, got {getattr(opts, key)}")
    if opts.batch < 1:
        raise Aware3DError(f"--batch must be at least 1, got {opts.batch}")
    return opts


def run(args: argparse.Namespace) -> int:
    import torch

    from backend.checkpoints.model_file import load_tensors, read_header
    from backend.devices import resolve_device
    from backend.errors import Aware3DError
    from backend.registry import bundled_models_dir, resolve_model
    from train.distill.loop import DistillTrainer
    from train.distill.targets import ZipTargets
    from train.eval.features import load_feature_net
    from train.gan import distributed
    from train.gan.snapshot import list_snapshots

    opts = build_options(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    info = distributed.init_from_env(device.type)
    if device.type == "cuda":
        device = torch.device("cuda", info.local_rank)
        torch.cuda.set_device(device)
    from train.gan.distributed import check_run_folder

    check_run_folder(args.out)  # a file, a read-only folder: one line now, not after the first snapshot's work
    if list_snapshots(args.out) and not args.resume:
        raise Aware3DError(f"{args.out} already holds a training run", "add --resume, or choose another --out")
    from backend.configs import get_config

    source = None
    if args.data is not None:
        if not args.data.is_file():
            raise Aware3DError(f"data set not found: {args.data}", "make one with aware3d-train make-dataset")
        try:
            source = ZipTargets(args.data, get_config(opts.config).z_dim, opts.seed)
        except ValueError as exc:
            raise Aware3DError(str(exc)) from None
    features = None
    if opts.perceptual > 0 and opts.rays == 0:  # the rays-only recipe has no whole image to compare
        path = args.features or bundled_models_dir() / "aware3d-features64.safetensors"
        if not Path(path).is_file():
            raise Aware3DError(f"feature network not found: {path}", "pass --features, or --perceptual 0")
        features = load_feature_net(path, device)
    init = init_config = None
    if args.init_from is not None and not args.resume:
        init_path = resolve_model(str(args.init_from))
        init, init_config = load_tensors(init_path), read_header(init_path).config
    args.out.mkdir(parents=True, exist_ok=True)
    try:
        trainer = DistillTrainer(opts, args.out, source=source, device=device, dist=info,
                                 command=command_line(args, "distill"), features=features,
                                 init_tensors=init, init_config=init_config,
                                 data_path=str(args.data) if args.data else "",
                                 render_workers=max(args.render_workers, 0) if args.data is None else 0)
    except ValueError as exc:
        raise Aware3DError(str(exc)) from None
    if trainer.init_skipped is not None and info.is_main:
        print(f"initialised from {args.init_from}; built fresh: {', '.join(trainer.init_skipped) or 'nothing'}",
              file=sys.stderr)
    return distributed.train_command(trainer, info, args.out, args.resume, args.export,
                                     lambda: f"{trainer.kimg:.3f} kimg")
