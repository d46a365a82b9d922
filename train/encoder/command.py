# SPDX-License-Identifier: GPL-3.0-or-later
"""``aware3d-train encoder``: train the feed-forward photo encoder for one generator."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from train.cli import command_line


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "encoder", help="train a feed-forward photo encoder (photo -> latent and camera) for a generator",
        description="Train a CNN that maps a framed photo to the generator's latent and the camera's yaw and "
                    "pitch in one forward pass, the start that aware3d invert refines. For a distilled model "
                    "the examples are synthetic heads of random latents (z) rendered from the data's cameras; "
                    "for a GAN, the generator's own renders (target w). Snapshots in --out every --snap steps, "
                    "exact --resume, Ctrl-C/SIGTERM saves one; torchrun for data-parallel training.")
    p.add_argument("--model", required=True, help="the generator (name or path)")
    p.add_argument("--out", required=True, type=Path, help="run folder (OUT/latest.safetensors is the encoder)")
    p.add_argument("--steps", type=int, help="training steps (default 20000)")
    p.add_argument("--batch", type=int, help="global batch (default 32)")
    p.add_argument("--lr", type=float, help="peak learning rate (default 0.001)")
    p.add_argument("--snap", type=int, help="snapshot interval in steps (default 500)")
    p.add_argument("--seed", type=int)
    p.add_argument("--resume", action="store_true", help="continue from the newest snapshot in --out")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--render-workers", type=int, default=1, metavar="N",
                   help="processes rendering the next batches (distilled models; default 1, 0: none)")
    p.add_argument("--device", default="auto")
    p.add_argument("--export", type=Path, help="also write the final encoder here (.safetensors)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from backend.devices import resolve_device
    from backend.errors import Aware3DError
    from backend.invert.avatar import base_identity
    from backend.registry import load_generator
    from train.encoder.loop import EncoderOptions, EncoderTrainer
    from train.gan import distributed
    from train.gan.snapshot import list_snapshots

    changes = {"steps": args.steps, "batch": args.batch, "lr": args.lr, "snap_steps": args.snap, "seed": args.seed}
    for key, value in changes.items():
        if value is not None and value <= 0 and key != "seed":
            raise Aware3DError(f"--{key.split('_')[0]} must be positive, got {value}")
    opts = dataclasses.replace(EncoderOptions(), **{k: v for k, v in changes.items() if v is not None})
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    info = distributed.init_from_env(device.type)
    if list_snapshots(args.out) and not args.resume:
        raise Aware3DError(f"{args.out} already holds a training run", "add --resume, or choose another --out")
    model = load_generator(args.model, device)
    ident = {k: v for k, v in base_identity(model).items() if k in ("name", "state_sha256", "config")}
    args.out.mkdir(parents=True, exist_ok=True)
    try:
        trainer = EncoderTrainer(opts, model.generator, ident, args.out, device=device, dist=info,
                                 command=command_line(args, "encoder"), render_workers=max(args.render_workers, 0))
    except ValueError as exc:
        raise Aware3DError(str(exc)) from None
    return distributed.train_command(trainer, info, args.out, args.resume, args.export, lambda: f"step {trainer.step}")
