# SPDX-License-Identifier: GPL-3.0-or-later
"""``aware3d-train diffusion``: train IVID's unconditional (G_u) or warp-conditioned (G_c) RGBD model."""

from __future__ import annotations

import argparse
import json
import shlex
from pathlib import Path

from backend.diffusion.config import HOLE_FILLS


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "diffusion", help="train an RGBD diffusion model (IVID G_u: --kind uncond, G_c: --kind cond)",
        description="Train an RGBD diffusion UNet on an EG3D-format zip with depth (our synthetic heads) or, "
                    "with --depth-model, on any EG3D zip. --kind cond trains on forward-backward-warped "
                    "conditions. Runs alone or under torchrun (--batch is global). Snapshots are atomic; "
                    "--resume continues the newest one; the EMA net is exported to OUT/<kind>-latest.safetensors "
                    "at every snapshot (and to --export at the end).")
    p.add_argument("--data", required=True, type=Path, help="training zip (EG3D format)")
    p.add_argument("--kind", required=True, choices=("uncond", "cond"))
    p.add_argument("--out", required=True, type=Path, help="run folder")
    p.add_argument("--preset", default="views64", help="network size: views64 (default) or tiny")
    p.add_argument("--steps", type=int, default=20000, help="total optimiser steps")
    p.add_argument("--batch", type=int, default=16, help="global batch size")
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--ema", type=float, default=0.999, help="EMA decay per step")
    p.add_argument("--snap", type=int, default=100, help="steps between snapshots")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-xflip", action="store_true", help="do not add mirrored copies of the data")
    p.add_argument("--init-from", type=Path,
                   help="start from a trained model file's weights (a new run): G_u from a G_u; G_c from a G_u or "
                        "G_c with no more inputs (new input channels start at zero weight)")
    p.add_argument("--true-pairs", type=float, default=0.0, metavar="P",
                   help="cond only: share of examples that are true multi-view pairs of newly rendered synthetic "
                        "heads (the rest: IVID's forward-backward warps of the zip's images); default 0")
    p.add_argument("--backdrop", action="store_true",
                   help="cond only: give the model the first view's backdrop (3 more input channels)")
    p.add_argument("--hole-fill", choices=HOLE_FILLS, default="noise",
                   help="cond only: what fills the condition's holes: noise (IVID) or nearest (the nearest known "
                        "colour and depth; the masks still say what is known); stored in the model")
    p.add_argument("--shape", action="store_true",
                   help="cond only: give the model the target view's own geometry when it is known (a mesh being "
                        "textured, the GAN head being turned; 3 more input channels; trained with the true depth)")
    p.add_argument("--depth-model", type=Path, help="monocular depth model for zips without depth maps")
    p.add_argument("--threads", type=int, help="torch CPU threads per process")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--resume", action="store_true", help="continue from the newest snapshot in --out")
    p.add_argument("--export", type=Path, help="also write the final EMA net here (.safetensors)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(func=run)
    register_eval(sub)


def run(args: argparse.Namespace) -> int:
    from backend.errors import Aware3DError
    from train.diffusion.loop import DiffusionTrainer
    from train.diffusion.options import DiffusionOptions

    if not args.data.is_file():
        raise Aware3DError(f"data set not found: {args.data}", "make one with aware3d-train make-dataset")
    for name in ("init_from", "depth_model"):
        path = getattr(args, name)
        if path is not None and not path.is_file():
            raise Aware3DError(f"--{name.replace('_', '-')}: file not found: {path}")
    if args.steps < 1 or args.batch < 1 or args.snap < 1:
        raise Aware3DError("--steps, --batch and --snap must be positive")
    if not 0.0 <= args.true_pairs <= 1.0:
        raise Aware3DError(f"--true-pairs must be between 0 and 1, got {args.true_pairs}")
    if args.kind != "cond" and (args.true_pairs > 0 or args.backdrop or args.hole_fill != "noise" or args.shape):
        raise Aware3DError("--true-pairs, --backdrop, --hole-fill and --shape are for --kind cond")
    from train.gan.distributed import check_run_folder

    check_run_folder(args.out)  # a file, a read-only folder: one line now, not after the first snapshot's work
    words = ["aware3d-train", "diffusion"] + [
        w for k, v in vars(args).items() if k not in ("func", "command") and v not in (None, False)
        for w in (["--" + k.replace("_", "-")] if v is True else ["--" + k.replace("_", "-"), str(v)])]
    opts = DiffusionOptions(
        data=str(args.data), out=str(args.out), kind=args.kind, preset=args.preset, steps=args.steps,
        batch=args.batch, lr=args.lr, ema=args.ema, seed=args.seed, xflip=not args.no_xflip,
        snap_every=args.snap, init_from=str(args.init_from) if args.init_from else None,
        depth_model=str(args.depth_model) if args.depth_model else None, threads=args.threads,
        device=args.device, true_pairs=args.true_pairs, backdrop=args.backdrop,
        hole_fill=args.hole_fill, shape=args.shape, command=words)
    trainer = DiffusionTrainer(opts, resume=args.resume)
    summary = trainer.train(progress=not args.quiet)
    if args.export and trainer.info.is_main:
        trainer.export(args.export)
        summary["export"] = str(args.export)
    if trainer.info.is_main:
        print(json.dumps(summary))
    return 0


def register_eval(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "eval-views", help="measure generated novel views against ground truth on held-out heads",
        description="Given each held-out head's true frontal view, generate yaw ±15…±60 with the conditional "
                    "model and compare ±30°/±60° with the true views (PSNR/SSIM, seen/unseen parts, depth "
                    "AbsRel), against warping + nearest-colour fill (and the same fill inside the true silhouette); "
                    "plus reprojection consistency between neighbouring generated views. A model trained with "
                    "--shape is given each view's true geometry unless --no-shape. JSON to --out.")
    p.add_argument("--test-data", required=True, type=Path, help="held-out test zip (*_test.zip)")
    p.add_argument("--views-model", default=None, help="conditional model (default: aware3d-views-cond)")
    p.add_argument("--heads", type=int, default=10, help="number of test heads (default 10)")
    p.add_argument("--steps", type=int, default=25, help="DDIM steps per view")
    p.add_argument("--pull", default="0.1,0.2", metavar="RGB,DEPTH", help="per-step pull (see aware3d views)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-shape", action="store_true",
                   help="do not give a G_c with shape channels the true geometry of each view (IVID's setting)")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--fid", type=int, default=0, metavar="N",
                   help="also sample N first views with G_u and report their FID against --fid-data (default 0: off)")
    p.add_argument("--fid-data", type=Path, help="zip of real images for --fid (e.g. data/heads64v2_val.zip)")
    p.add_argument("--first-model", default=None, help="unconditional model for --fid (default: aware3d-views-uncond)")
    p.add_argument("--first-eta", type=float, default=None, metavar="ETA",
                   help="DDIM noise of G_u's first views for --fid (default: that of aware3d views)")
    p.add_argument("--fid-sheet", type=Path, metavar="PNG",
                   help="also write the first 16 of the --fid views (colour, depth below) as a contact sheet")
    p.add_argument("--features", type=Path,
                   help="feature network for --fid (default: the bundled aware3d-features64)")
    p.add_argument("--out", required=True, type=Path, help="report .json")
    p.set_defaults(func=run_eval)


def run_eval(args: argparse.Namespace) -> int:
    import sys

    import torch

    from backend.cli.common import progress
    from backend.errors import Aware3DError
    from backend.fileio import write_json
    from backend.validate import optional
    from backend.views.generate import load_view_models, parse_pull, resolve_view_model
    from train.cli import command_line
    from train.data.zip_dataset import ZipDataset, ZipDatasetError
    from train.diffusion.evaluate import evaluate_views

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        test = ZipDataset(args.test_data, extras=True)
    except ZipDatasetError as exc:
        raise Aware3DError(str(exc)) from None
    if not test.test_heads:
        raise Aware3DError(f"{args.test_data} is not a test split (no test.json)",
                           "use the *_test.zip that make-dataset --test-heads writes")
    if args.heads < 1:
        raise Aware3DError("--heads must be at least 1")
    if args.fid < 0 or (args.fid > 0 and args.fid_data is None):
        raise Aware3DError("--fid N needs N >= 0 and --fid-data ZIP (real images to compare with)")
    if args.fid > 0 and not args.fid_data.is_file():
        raise Aware3DError(f"--fid-data: file not found: {args.fid_data}")
    optional("ddim_eta", args.first_eta, "--first-eta")
    if args.first_eta is not None and args.fid < 1:
        raise Aware3DError("--first-eta sets how G_u's first views are sampled: it needs --fid N",
                           "e.g. --fid 500 --fid-data data/heads64v2_val.zip --first-eta 0")
    if args.fid_sheet is not None and (args.fid < 1 or args.fid_sheet.suffix.lower() != ".png"):
        raise Aware3DError(f"--fid-sheet {args.fid_sheet}: needs --fid N and a .png path",
                           "e.g. --fid 500 --fid-data data/heads64v2_val.zip --fid-sheet fid.png")
    models = load_view_models(args.views_model, args.first_model, steps=args.steps, need_uncond=args.fid > 0)
    models.rgb_pull, models.depth_pull = parse_pull(args.pull)
    if args.first_eta is not None:
        models.first_eta = args.first_eta
    with progress(total=min(args.heads, len(test.test_heads)), desc="eval-views", unit="head") as bar:
        report = evaluate_views(models, test, args.heads, args.seed, progress=lambda *_: bar.update(1),
                                shape=not args.no_shape)
    report["model"] = str(resolve_view_model("cond", args.views_model))
    if args.fid > 0:
        from backend.registry import bundled_models_dir
        from train.diffusion.evaluate import unconditional_fid
        from train.eval.features import load_feature_net

        net = load_feature_net(args.features or bundled_models_dir() / "aware3d-features64.safetensors")
        shown: list = []
        with progress(total=args.fid, desc="G_u FID", unit="view") as bar:
            report["uncond_fid"] = unconditional_fid(models, ZipDataset(args.fid_data), net, args.fid, args.seed,
                                                     progress=lambda *_: bar.update(1),
                                                     on_view=lambda k, v: shown.append(v) if k < 16 else None)
        report["uncond_fid"]["model"] = str(resolve_view_model("uncond", args.first_model))
        report["uncond_fid"]["real"] = args.fid_data.name
        report["uncond_fid"]["eta"] = models.first_eta
        if args.fid_sheet is not None:
            from backend.fileio import write_png
            from backend.views.outputs import contact_sheet

            write_png(args.fid_sheet, contact_sheet(shown, cols=8))
            report["uncond_fid"]["sheet"] = args.fid_sheet.name
    report["pull"] = {"rgb": models.rgb_pull, "depth": models.depth_pull}
    report["test_data"] = args.test_data.name
    report["command"] = shlex.join(command_line(args, "eval-views"))  # benchmarks/results cite it
    write_json(args.out, report)
    print(json.dumps(report["summary"], indent=1), file=sys.stderr)
    return 0
