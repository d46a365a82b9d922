# SPDX-License-Identifier: GPL-3.0-or-later
"""``aware3d-train encoder``: train the feed-forward photo encoder for one generator."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from train.cli import command_line


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "encoder", help="train a feed-forward photo encoder (photo -> latent and camera) for a generator",
        description="Train a CNN that maps a framed photo to the generator's latent and the camera's yaw and "
                    "pitch in one forward pass, the start that aware3d invert refines. For a model that takes "
                    "head latents (distilled) the examples are synthetic heads with their true latent z (from "
                    "--data zips, rendered now, or both), and the encoder fits every such model, whatever its "
                    "weights; for a GAN, the generator's own renders (target w), and the encoder fits those "
                    "weights only. Snapshots in --out every --snap steps, exact --resume, Ctrl-C/SIGTERM saves "
                    "one; torchrun for data-parallel training.")
    p.add_argument("--model", default="random:aware3d-heads64-distilled",
                   help="the generator (name or path; default random:aware3d-heads64-distilled: for head latents "
                        "only the config matters)")
    p.add_argument("--out", required=True, type=Path, help="run folder (OUT/latest.safetensors is the encoder)")
    p.add_argument("--steps", type=int, help="training steps (default 20000)")
    p.add_argument("--batch", type=int, help="global batch (default 32)")
    p.add_argument("--lr", type=float, help="peak learning rate (default 0.001)")
    p.add_argument("--snap", type=int, help="snapshot interval in steps (default 500)")
    p.add_argument("--seed", type=int)
    p.add_argument("--data", metavar="ZIP[,ZIP...]",
                   help="synthetic-head zips of aware3d-train make-dataset (with latents) to draw heads from, "
                        "comma-separated (default: every head rendered now)")
    p.add_argument("--fresh", type=float, help="with --data: the share of each batch rendered now (default 0)")
    p.add_argument("--mirror", type=float, help="the chance a data head is shown mirrored (default 0.5)")
    p.add_argument("--augment", type=float,
                   help="strength of the photo augmentation: crop shift/zoom, colour, blur, noise (default 0: none; "
                        "1: shifts up to 3 %%, zoom up to 5 %%, see train/encoder/data.py)")
    p.add_argument("--regress-choices", action="store_true",
                   help="distilled models: regress discrete choices (hair style, glasses, ...) as numbers, as encoders "
                        "before 2026-12-07 did, instead of class logits over their bins")
    p.add_argument("--class-weight", type=float, help="weight of the choices' cross-entropy (default 1)")
    p.add_argument("--channels", help="the network's stage widths, comma-separated (default 32,64,128,256)")
    p.add_argument("--embedding", type=int, help="the network's embedding size (default 512)")
    p.add_argument("--thumbnail", type=int,
                   help="side of the photo's own RGB thumbnail fed to the embedding beside the network's features "
                        "(default 8; 0: none, as encoders before 2026-12-07)")
    p.add_argument("--init-from", type=Path, metavar="FILE",
                   help="start from this encoder's weights (an uncalibrated export of the same network, with or "
                        "without the thumbnail)")
    p.add_argument("--resume", action="store_true", help="continue from the newest snapshot in --out")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--render-workers", type=int, default=1, metavar="N",
                   help="processes rendering the next batches (distilled models; default 1, 0: none)")
    p.add_argument("--device", default="auto")
    p.add_argument("--export", type=Path, help="also write the final encoder here (.safetensors)")
    p.set_defaults(func=run)

    c = sub.add_parser(
        "encoder-check", help="held-out figures of a photo encoder of head latents (latent, pose, time)",
        description="Measure an encoder of head latents on a held-out test zip (aware3d-train make-dataset "
                    "--test-heads): latent RMSE per coordinate and discrete accuracy, yaw and pitch errors in "
                    "degrees (median absolute, mean signed), the same on perturbed photos, and the time of one "
                    "forward pass per photo. Writes the figures to --out and, with --record, into the encoder "
                    "file's provenance (the model card quotes them from there).")
    c.add_argument("--encoder", required=True, type=Path, help="the encoder (.safetensors)")
    c.add_argument("--test-data", required=True, type=Path, metavar="ZIP", help="a *_test.zip with head latents")
    c.add_argument("--heads", type=int, help="only the first N test heads")
    c.add_argument("--seen-data", type=Path, metavar="ZIP",
                   help="also measure on the first --seen images of a zip it was trained on (the gap to held-out "
                        "heads says whether more training heads would help)")
    c.add_argument("--seen", type=int, default=1000, help="images of --seen-data (default 1000)")
    c.add_argument("--out", type=Path, help="write the figures here (.json)")
    c.add_argument("--record", action="store_true", help="also store them in the encoder file's provenance")
    c.add_argument("--threads", type=int, help="torch CPU threads (default 1)")
    c.set_defaults(func=run_check)

    k = sub.add_parser(
        "encoder-calibrate", help="shrink an encoder's uncertain latent coordinates (least squares on unseen heads)",
        description="Scale each latent coordinate of an encoder of head latents by its least-squares factor on a "
                    "zip of heads it was not trained on (make one with aware3d-train make-dataset and another "
                    "--seed; never the test zip): coordinates it cannot read move towards the median head. "
                    "Rewrites the file, the factors and their data in its provenance.")
    k.add_argument("--encoder", required=True, type=Path, help="the encoder (.safetensors), rewritten")
    k.add_argument("--data", required=True, type=Path, metavar="ZIP", help="heads it has not seen, with latents")
    k.add_argument("--threads", type=int, help="torch CPU threads (default 1)")
    k.set_defaults(func=run_calibrate)


def run_calibrate(args: argparse.Namespace) -> int:
    import torch

    from backend.checkpoints.model_file import read_header
    from backend.errors import Aware3DError
    from backend.invert.encoder import load_encoder, save_encoder
    from train.encoder.check import calibrate

    torch.set_num_threads(args.threads or 1)
    if not args.data.is_file():
        raise Aware3DError(f"data set not found: {args.data}", "make it with aware3d-train make-dataset")
    header = read_header(args.encoder)
    enc = load_encoder(args.encoder)
    if "calibration" in header.provenance:
        raise Aware3DError(f"{args.encoder} is calibrated already", "calibrate the uncalibrated export")
    used = {str(Path(p).resolve()) for p in header.provenance.get("options", {}).get("data", [])}
    if str(args.data.resolve()) in used:
        raise Aware3DError(f"{args.data} is one of the encoder's training sets", "calibrate on heads it has not seen")
    try:
        result = calibrate(enc, args.data)
    except ValueError as exc:
        raise Aware3DError(str(exc)) from None
    result["command"] = " ".join(command_line(args, "encoder-calibrate"))
    provenance = {k: v for k, v in header.provenance.items() if k != "check"}
    if "check" in header.provenance:  # measured before: kept under its own name, no longer the file's figures
        provenance["check_before_calibration"] = header.provenance["check"]
    save_encoder(args.encoder, enc, {**provenance, "calibration": result})
    print(f"calibrated {args.encoder} on {result['images']} heads: latent RMSE there {result['rmse_before']} -> "
          f"{result['rmse_after']}")
    return 0


def run_check(args: argparse.Namespace) -> int:
    import json

    import torch

    from backend.checkpoints.model_file import load_tensors, read_header, save_model
    from backend.errors import Aware3DError
    from backend.invert.encoder import load_encoder
    from train.encoder.check import check

    torch.set_num_threads(args.threads or 1)
    if args.heads is not None and args.heads <= 0:
        raise Aware3DError(f"--heads must be positive, got {args.heads}")
    for given in (args.test_data, args.seen_data):
        if given is not None and not given.is_file():
            raise Aware3DError(f"data set not found: {given}", "make it with aware3d-train make-dataset")
    if args.seen <= 0:
        raise Aware3DError(f"--seen must be positive, got {args.seen}")
    enc = load_encoder(args.encoder)
    try:
        result = check(enc, args.test_data, args.heads, progress=lambda m: print(m, file=sys.stderr, flush=True),
                       seen=args.seen_data, seen_count=args.seen)
    except ValueError as exc:
        raise Aware3DError(str(exc)) from None
    result = {"command": " ".join(command_line(args, "encoder-check")), "encoder": str(args.encoder), **result}
    if args.out:
        from backend.fileio import write_json

        write_json(args.out, result)
    if args.record:
        header = read_header(args.encoder)
        save_model(args.encoder, load_tensors(args.encoder), kind="encoder", config=header.config,
                   provenance={**header.provenance, "check": result})
    c = result["clean"]
    print(f"latent RMSE {c['latent']['rmse']} (median head {c['latent']['rmse_median_head']}); "
          f"yaw median |err| {c['yaw']['median_abs']}°, mean {c['yaw']['mean_signed']:+}°; pitch median |err| "
          f"{c['pitch']['median_abs']}°, mean {c['pitch']['mean_signed']:+}°; "
          f"{result['time_per_photo']['median_s'] * 1000:.1f} ms per photo")
    if not args.out:
        print(json.dumps(result, indent=1))
    return 0


def run(args: argparse.Namespace) -> int:
    import torch

    from backend.devices import resolve_device
    from backend.errors import Aware3DError
    from backend.invert.avatar import base_identity
    from backend.registry import load_generator
    from train.encoder.loop import EncoderOptions, EncoderTrainer
    from train.gan import distributed
    from train.gan.snapshot import list_snapshots

    changes: dict[str, object] = {"steps": args.steps, "batch": args.batch, "lr": args.lr, "snap_steps": args.snap,
                                  "seed": args.seed, "embedding": args.embedding}
    for key, value in changes.items():
        if value is not None and value <= 0 and key != "seed":  # type: ignore[operator]
            raise Aware3DError(f"--{key.split('_')[0]} must be positive, got {value}")
    for key in ("fresh", "mirror", "augment"):
        value = getattr(args, key)
        if value is not None and (value < 0 or (key != "augment" and value > 1)):
            raise Aware3DError(f"--{key} must be {'at least 0' if key == 'augment' else 'in [0, 1]'}, got {value}")
        changes[key] = value
    if args.data:
        paths = tuple(p for p in args.data.split(",") if p)
        missing = [p for p in paths if not Path(p).is_file()]
        if missing or not paths:
            raise Aware3DError(f"data set not found: {missing[0] if missing else args.data!r}",
                               "make one with aware3d-train make-dataset")
        changes["data"] = paths
    if args.thumbnail is not None:
        if not 0 <= args.thumbnail <= 32:
            raise Aware3DError(f"--thumbnail must be 0-32, got {args.thumbnail}")
        changes["thumbnail"] = args.thumbnail
    if args.init_from is not None:
        if not args.init_from.is_file():
            raise Aware3DError(f"encoder file not found: {args.init_from}", "give a trained encoder's export")
        changes["init_from"] = str(args.init_from)
    if args.regress_choices:
        changes["classes"] = False
    if args.class_weight is not None:
        if args.class_weight < 0:
            raise Aware3DError(f"--class-weight must be at least 0, got {args.class_weight}")
        changes["class_weight"] = args.class_weight
    if args.fresh and not args.data:
        raise Aware3DError("--fresh is the share of fresh heads beside --data", "add --data ZIP, or leave --fresh out")
    if args.channels:
        try:
            changes["channels"] = tuple(int(c) for c in args.channels.split(","))
        except ValueError:
            raise Aware3DError(f"--channels takes comma-separated integers, got {args.channels!r}") from None
        if any(c <= 0 or c % 8 for c in changes["channels"]):  # type: ignore[attr-defined]
            raise Aware3DError(f"--channels must be positive multiples of 8 (GroupNorm), got {args.channels}")
    opts = dataclasses.replace(EncoderOptions(), **{k: v for k, v in changes.items() if v is not None})
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    info = distributed.init_from_env(device.type)
    from train.gan.distributed import check_run_folder

    check_run_folder(args.out)  # a file, a read-only folder: one line now, not after the first snapshot's work
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
