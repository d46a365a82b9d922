# SPDX-License-Identifier: GPL-3.0-or-later
"""``aware3d-train depth`` (train the monocular depth network) and ``aware3d-train depth-eval``."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

from train.cli import command_line


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {v}")
    return v


def _positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not v > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {v}")
    return v


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "depth", help="train the monocular depth network (IVID's MiDaS replacement)",
        description="Train a small UNet regressing relative disparity from RGB on a synthetic-head zip with "
                    "per-image depth (aware3d-train make-dataset), with a scale-and-shift-invariant loss. Run it "
                    "under `torchrun --nproc-per-node N` for data-parallel training; --batch is the global batch. "
                    "Snapshots are written atomically to --out; --resume continues from the newest one. The EMA "
                    "network is exported to OUT/depth-latest.safetensors at every snapshot and at the end.")
    p.add_argument("--data", required=True, type=Path, help="training zip with .depth.npy per image")
    p.add_argument("--out", required=True, type=Path, help="run folder")
    p.add_argument("--preset", default="small", help="network and recipe: small (64 px, bundled) or tiny (tests)")
    p.add_argument("--steps", type=_positive_int, help="total optimiser steps (default: the preset's)")
    p.add_argument("--batch", type=_positive_int, help="global batch size")
    p.add_argument("--lr", type=_positive_float, help="peak AdamW learning rate")
    p.add_argument("--snap", type=_positive_int, help="snapshot/export interval in steps")
    p.add_argument("--seed", type=int)
    p.add_argument("--resume", action="store_true", help="continue from the newest snapshot in --out")
    p.add_argument("--test-data", type=Path, help="held-out zip (*_test.zip) evaluated at the end")
    p.add_argument("--no-xflip", action="store_true", help="no mirrored copies of the training data")
    p.add_argument("--threads", type=_positive_int, help="CPU threads per process (torch.set_num_threads)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.set_defaults(func=run)

    e = sub.add_parser(
        "depth-eval", help="evaluate a depth network on a held-out zip (AbsRel, δ after alignment)",
        description="AbsRel and δ<1.25 (and the stricter δ<1.05, δ<1.02) of a depth model file on a *_test.zip, "
                    "after per-image least-squares scale-and-shift alignment of disparity, beside the constant-"
                    "disparity baseline and the unaligned metric depth of depth_for_view. Prints JSON.")
    e.add_argument("--model", required=True, type=Path, help="depth model file (.safetensors)")
    e.add_argument("--data", required=True, type=Path, help="held-out zip with .depth.npy per image")
    e.add_argument("--max-images", type=_positive_int, help="evaluate only the first N images")
    e.add_argument("--json", type=Path, help="also write the report here")
    e.add_argument("--threads", type=_positive_int, help="CPU threads (torch.set_num_threads)")
    e.set_defaults(func=run_eval)


def _open_data(path: Path, what: str, **kw: Any):  # type: ignore[no-untyped-def]
    from backend.errors import Aware3DError
    from train.data.zip_dataset import ZipDatasetError
    from train.depth.data import DepthData

    if not path.is_file():
        raise Aware3DError(f"{what} not found: {path}", "check the path, or make one with aware3d-train make-dataset")
    try:
        return DepthData(path, **kw)
    except ZipDatasetError as exc:
        raise Aware3DError(str(exc), "pass a zip made by aware3d-train make-dataset (it has depth)") from None


def build_options(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from backend.errors import Aware3DError
    from train.depth.loop import PRESET_OPTIONS

    if args.preset not in PRESET_OPTIONS:
        raise Aware3DError(f"unknown preset {args.preset!r}", f"choose one of: {', '.join(PRESET_OPTIONS)}")
    changes = {k: v for k, v in {"steps": args.steps, "batch": args.batch, "lr": args.lr, "snap_steps": args.snap,
                                  "seed": args.seed}.items() if v is not None}
    return dataclasses.replace(PRESET_OPTIONS[args.preset], **changes)


def run(args: argparse.Namespace) -> int:
    import torch

    from backend.depth.estimate import depth_config
    from backend.devices import resolve_device
    from backend.errors import Aware3DError
    from train.depth.loop import EXPORT_NAME, DepthTrainer
    from train.gan import distributed
    from train.gan.snapshot import list_snapshots

    opts = build_options(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    data = _open_data(args.data, "data set", xflip=not args.no_xflip)
    test = _open_data(args.test_data, "test data set") if args.test_data is not None else None
    if test is not None and test.resolution != data.resolution:
        raise Aware3DError(f"test images are {test.resolution}px but training images {data.resolution}px",
                           "pass the *_test.zip made with the training zip")
    try:
        cfg = depth_config(opts.preset, data.resolution)
    except ValueError as exc:
        raise Aware3DError(f"the {opts.preset} network cannot take {data.resolution}px images: {exc}",
                           "use images whose size is a multiple of 8") from None
    from train.gan.distributed import check_run_folder

    check_run_folder(args.out)  # a file, a read-only folder: one line now, not after the first snapshot's work
    if list_snapshots(args.out) and not args.resume:
        raise Aware3DError(f"{args.out} already holds a training run", "add --resume, or choose another --out")
    device = resolve_device(args.device)
    info = distributed.init_from_env(device.type)
    if device.type == "cuda":
        device = torch.device("cuda", info.local_rank)
        torch.cuda.set_device(device)
    if opts.batch % info.world_size:
        distributed.shutdown(info, synchronize=False)
        raise Aware3DError(f"--batch {opts.batch} is not divisible by {info.world_size} processes",
                           "choose a global batch that is a multiple of the process count")
    args.out.mkdir(parents=True, exist_ok=True)
    trainer = DepthTrainer(opts, cfg, data, args.out, device=device, dist=info,
                           command=command_line(args, "depth"),
                           data_path=str(args.data), test_data=test)
    if args.resume:
        try:
            resumed = trainer.resume()
        except ValueError as exc:
            raise Aware3DError(str(exc), "resume with the same --preset and data resolution") from None
        if resumed and info.is_main:
            print(f"resumed {args.out} at step {trainer.progress.step}", file=sys.stderr)
    if not distributed.run_to_completion(trainer.run, trainer.save_snapshot, info,
                                         lambda: f"step {trainer.progress.step}"):
        return 130
    if info.is_main:
        print(f"exported {args.out / EXPORT_NAME}", file=sys.stderr)
        if trainer.metrics:
            print(json.dumps(trainer.metrics, indent=1))
    return 0


def run_eval(args: argparse.Namespace) -> int:
    import torch

    from backend.diffusion.model_file import load_net
    from backend.fileio import write_json
    from train.depth.eval import evaluate

    if args.threads:
        torch.set_num_threads(args.threads)
    loaded = load_net(args.model, expect="depth")
    data = _open_data(args.data, "test data set")
    report = evaluate(loaded.net, data, max_images=args.max_images, data_path=str(args.data))
    report["model_file"] = str(args.model)
    if args.json:
        write_json(args.json, report)
    print(json.dumps(report, indent=1))
    return 0
