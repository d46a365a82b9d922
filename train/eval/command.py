"""``aware3d-train features``, ``features-check``, ``eval`` and ``card``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    f = sub.add_parser(
        "features", help="train the feature network used by eval (FID/KID without downloaded weights)",
        description="Train a small CNN to predict the synthetic heads' parameters (pose, colours, hair, "
                    "glasses, hat, beard, face shape) from their images. Its embedding replaces Inception for "
                    "FID/KID; the numbers compare Aware3D models with each other, not with published FIDs.")
    f.add_argument("--data", required=True, type=Path, help="synthetic-head zip with params.json")
    f.add_argument("--out", required=True, type=Path, help="output .safetensors")
    f.add_argument("--epochs", type=int, default=3)
    f.add_argument("--batch", type=int, default=64)
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--device", default="auto")
    f.set_defaults(func=run_features)

    k = sub.add_parser(
        "features-check", help="measure a feature network on heads it never saw; --record stores the result",
        description="Measure how well a feature network predicts the parameters of synthetic heads it never "
                    "trained on (make them with aware3d-train make-dataset and a --seed other than its training "
                    "data's). With --record the result becomes the network's held-out record, which eval "
                    "requires before it presents FID/KID as trustworthy.")
    k.add_argument("--features", required=True, type=Path, help="the feature network (.safetensors)")
    k.add_argument("--data", required=True, type=Path,
                   help="synthetic-head zip with params.json, of heads the network did not train on")
    k.add_argument("--record", action="store_true", help="write the result into the network's file")
    k.add_argument("--device", default="auto")
    k.set_defaults(func=run_features_check)

    e = sub.add_parser(
        "eval", help="evaluate a generator: FID/KID, 3D consistency, geometry (JSON report)",
        description="Print a JSON report on a generator: FID and KID in the feature network's space for the "
                    "final, raw and direct renders; the reprojection error between views for each; depth "
                    "statistics; how well meshes line up with renders; and, with --test-data, the same "
                    "consistency check on ground truth.")
    e.add_argument("--model", required=True, help="model name or path")
    e.add_argument("--data", required=True, type=Path, help="real images (EG3D-format zip)")
    e.add_argument("--features", type=Path,
                   help="feature network from aware3d-train features (default: the bundled aware3d-features64)")
    e.add_argument("--test-data", type=Path, help="a *_test.zip with ground-truth depth (dataset check)")
    e.add_argument("--count", type=int, default=2000, help="images per FID/KID estimate")
    e.add_argument("--latents", type=int, default=16, help="heads for the consistency measure")
    e.add_argument("--mesh-latents", type=int, default=4,
                   help="heads whose density-10 mesh is compared with their render (0: skip)")
    e.add_argument("--reconstruction-heads", type=int, metavar="N",
                   help="distilled models with --test-data: held-out heads rendered from their own latent and "
                        "compared with their true views (default: all)")
    e.add_argument("--reconstruction-meshes", type=int, default=4, metavar="N",
                   help="of those, heads whose density mesh is compared with the true surface (Chamfer)")
    e.add_argument("--mesh-levels", type=parse_levels, metavar="L[,L...]",
                   help="density levels those meshes are made at (default: the model's own, EG3D: 10); with "
                        "several, the report gives the Chamfer distance at each (chamfer_by_level)")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--device", default="auto")
    e.add_argument("--out", type=Path, help="also write the report here")
    e.set_defaults(func=run_eval)

    c = sub.add_parser("card", help="write a model card (samples, orbit, provenance, eval report) beside a model",
                       description="Render a sample grid and an orbit and write NAME.md beside the model file, "
                                   "with the provenance stored in the model and an eval report.")
    c.add_argument("model", type=Path, help="the model file (.safetensors), e.g. assets/models/NAME.safetensors")
    c.add_argument("--eval", type=Path, help="a report written by aware3d-train eval --out")
    c.add_argument("--notes", default="", help="a paragraph describing the model (markdown)")
    c.add_argument("--before-imitation", type=Path, metavar="EVAL",
                   help="eval report of the snapshot from before the imitation stage (OUT/before-imitation"
                        ".safetensors): adds Mimic3D's before/after comparison")
    c.add_argument("--before-distortion", type=Path, metavar="EVAL",
                   help="eval report of the model before the ray-distortion stage (--distortion-reg): adds its "
                        "before/after comparison, mesh alignment included")
    c.add_argument("--before-distillation", type=Path, metavar="EVAL",
                   help="eval report of the model a distilled one replaces: adds their before/after comparison")
    c.set_defaults(func=run_card)


def parse_levels(text: str) -> tuple[float, ...]:
    """``--mesh-levels``: positive densities, comma-separated (argparse prints the error line)."""
    try:
        levels = tuple(float(t) for t in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of numbers: {text!r} (e.g. 5,10,20)") from None
    if not levels or len(levels) > 16 or not all(0 < v < 1000 for v in levels):
        raise argparse.ArgumentTypeError(f"levels must be 1-16 densities between 0 and 1000, got {text!r}")
    return levels


def open_zip(path: Path, **kw):  # type: ignore[no-untyped-def]
    from backend.errors import Aware3DError
    from train.data.zip_dataset import ZipDataset, ZipDatasetError

    if not path.is_file():
        raise Aware3DError(f"data set not found: {path}", "check the path")
    try:
        return ZipDataset(path, **kw)
    except ZipDatasetError as exc:
        raise Aware3DError(str(exc), "pass an EG3D-format zip") from None


def run_features(args: argparse.Namespace) -> int:
    from backend.cli.common import progress
    from backend.devices import hardware_description, resolve_device
    from backend.validate import check_output_file
    from train.eval.features import save_feature_net, train_feature_net, trust

    check_output_file(args.out, (".safetensors",), kind="feature network")  # before minutes of training
    device = resolve_device(args.device)
    data = _params_zip(args.data)
    import math

    total = args.epochs * math.ceil(len(data) * 0.95 / args.batch)
    with progress(total, "features", "step") as bar:
        def tick(step: int, steps: int, loss: float) -> None:
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.3f}")

        net, held_out = train_feature_net(data, epochs=args.epochs, batch=args.batch, seed=args.seed,
                                          device=device, on_progress=tick)
    save_feature_net(args.out, net, {"source": "aware3d-train features", "command": " ".join(sys.argv),
                                     "data": str(args.data), "hardware": hardware_description(device),
                                     "held_out": held_out})
    print(json.dumps({"held_out": held_out, "trust": trust({"held_out": held_out})}, indent=2))
    return 0


def _params_zip(path: Path):  # type: ignore[no-untyped-def]
    from backend.errors import Aware3DError

    data = open_zip(path)
    try:
        data.params(0)
    except Exception:
        raise Aware3DError(f"{path.name} has no head parameters (params.json)",
                           "the feature network needs a synthetic-head zip from aware3d-train make-dataset") from None
    return data


def run_features_check(args: argparse.Namespace) -> int:
    import torch

    from backend.checkpoints.model_file import read_header
    from backend.devices import resolve_device
    from backend.errors import Aware3DError
    from train.cli import command_line
    from train.eval.features import held_out_metrics, held_out_record, load_feature_net, record_held_out, trust

    if not args.features.is_file():
        raise Aware3DError(f"feature network not found: {args.features}", "check the path")
    device = resolve_device(args.device)
    net = load_feature_net(args.features, device)
    data = _params_zip(args.data)
    images = torch.stack([data[i][0] for i in range(len(data))])
    metrics = held_out_metrics(net, images, [data.params(i) for i in range(len(data))], device)
    record = held_out_record(metrics, len(data), f"{args.data} (aware3d-train features-check)")
    verdict = trust({**read_header(args.features).provenance, "held_out": record})
    if args.record:
        record_held_out(args.features, record, " ".join(command_line(args, "features-check")))
        print(f"recorded in {args.features}", file=sys.stderr)
    print(json.dumps({"held_out": record, "trust": verdict}, indent=2))
    return 0


def run_eval(args: argparse.Namespace) -> int:
    import shlex

    from backend.checkpoints.model_file import read_header
    from backend.cli.common import progress
    from backend.devices import resolve_device
    from backend.registry import load_generator
    from backend.validate import check_output_file
    from train.cli import command_line

    if args.out:
        check_output_file(args.out)  # before the evaluation's renders
    from train.eval.features import load_feature_net, trust
    from train.eval.report import evaluate

    command = shlex.join(command_line(args, "eval"))  # as typed: the default feature network stays implicit
    device = resolve_device(args.device)
    model = load_generator(args.model, device)
    data = open_zip(args.data)
    test = open_zip(args.test_data, extras=True) if args.test_data else None
    if args.features is None:
        from backend.registry import bundled_models_dir

        args.features = bundled_models_dir() / "aware3d-features64.safetensors"
    net = load_feature_net(args.features, device)
    features_trust = trust(read_header(args.features).provenance)
    if not features_trust["trusted"]:
        print(f"aware3d-train: warning: FID/KID will not be trustworthy: {features_trust['reason']}",
              file=sys.stderr)
    bars: dict[str, object] = {}

    def on_progress(stage: str, done: int, total: int) -> None:
        bar = bars.get(stage)
        if bar is None:
            bar = bars[stage] = progress(total, stage)
        bar.n = done  # type: ignore[attr-defined]
        bar.refresh()  # type: ignore[attr-defined]

    report = evaluate(model.generator, data, net, count=args.count, latents=args.latents, seed=args.seed,
                      test_data=test, on_progress=on_progress, mesh_latents=args.mesh_latents)
    if test is not None:
        from train.eval.reconstruction import reconstruction

        report["reconstruction"] = reconstruction(model.generator, test, heads=args.reconstruction_heads,
                                                  meshes=args.reconstruction_meshes, on_progress=on_progress,
                                                  mesh_levels=args.mesh_levels)
    for bar in bars.values():
        bar.close()  # type: ignore[attr-defined]
    report = {"command": command, "model": model.name,
              "config": model.generator.cfg.name,
              "model_kimg": model.header.provenance.get("kimg"), "data": str(args.data),
              "features": str(args.features), "features_trust": features_trust, **report}
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        from backend.fileio import write_json

        write_json(args.out, report)
    return 0


def run_card(args: argparse.Namespace) -> int:
    from backend.errors import Aware3DError
    from train.eval.card import write_model_card

    if not args.model.is_file():
        raise Aware3DError(f"model file not found: {args.model}", "pass the .safetensors file")
    report = json.loads(args.eval.read_text()) if args.eval else None
    before = json.loads(args.before_imitation.read_text()) if args.before_imitation else None
    before_distortion = json.loads(args.before_distortion.read_text()) if args.before_distortion else None
    before_distillation = json.loads(args.before_distillation.read_text()) if args.before_distillation else None
    path = write_model_card(args.model, report, notes=args.notes, before_imitation=before,
                            before_distortion=before_distortion, before_distillation=before_distillation)
    print(f"wrote {path}", file=sys.stderr)
    return 0
