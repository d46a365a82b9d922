# SPDX-License-Identifier: GPL-3.0-or-later
"""Inversion benchmark on held-out synthetic heads (ground-truth views and depth known).

    python benchmarks/inversion.py --model runs/heads64/latest.safetensors --test-data data/heads64_test.zip \
        --heads 8 --threads 1 --out benchmarks/results/inversion_cpu.json

For each of ``--heads`` held-out heads, the input is the ground-truth view at (``--input-yaw``, 0°). Shared by
both methods: the pose estimate (render-and-compare + probe fits; scored against the known pose) and the W+
pivot (with joint camera refinement). Then

* ``single_view``: PTI-like tuning of the original generator on the input alone, as many steps as stage 2;
* ``full``: HFGI3D-style stage 1 (short single-view tuning → depth) → pseudo views around the input's pose
  by visibility analysis → stage 2 from the original generator on input + pseudo views;
* ``pivot``: the pivot with the untuned generator (reference).

Scores (final images, exact sampling): input-view PSNR/SSIM; novel-view PSNR/SSIM against the ground truth at
yaw ±15°, ±30°, ±45° relative to the input (rendered relative to the *estimated* pose, i.e. the error of the
pose estimate counts); depth error (raw render at the image resolution, distance along unit rays, inside the
ground-truth mask) at the input view and at ±30°; pose error; seconds per stage. ``--space-ablation`` also fits a
W pivot and scores both pivots (the evidence for the W+ default). The first head also runs the outputs a user
gets (renders, orbit video, mesh), for the end-to-end time of one photo; ``--photo`` runs the composed
photograph-like picture (backend/invert/demo_photo.py) through the whole path and checks a mesh comes out.

The model file is copied to a temporary path first (a training run rewrites it atomically). Prints and writes
one JSON object.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from backend.devices import hardware_description, resolve_device
from backend.invert.geometry import orbit_labels
from backend.invert.losses import downsample, psnr, ssim
from backend.invert.pipeline import Inversion, find_pose, input_metrics, preset, run_stage2
from backend.invert.project import latent_stats, project_latent
from backend.invert.pseudo import build_pseudo_views
from backend.invert.render import render_views
from backend.invert.tuning import Target, tune_generator
from benchmarks.record import Run

NOVEL = (-45.0, -30.0, -15.0, 15.0, 30.0, 45.0)


def gt_view(ds: Any, head: int, yaw: float, pitch: float = 0.0) -> dict[str, torch.Tensor]:
    it = ds[ds.test_view(head, yaw, pitch)]
    return {"image": it["image"][None].float() / 127.5 - 1, "depth": it["depth"][None, None],
            "mask": it["mask"][None, None]}


def depth_error(G: Any, ws: torch.Tensor, yaw: float, pitch: float, gt: dict[str, torch.Tensor]) -> dict[str, float]:
    """Mean absolute and relative depth error inside the ground-truth mask (raw render at the GT size)."""
    res = gt["depth"].shape[-1]
    out = render_views(G, ws, orbit_labels(G.cfg, yaw, pitch), grad=False, exact=True, resolution=res,
                       run_sr=False)
    d = out["image_depth"]
    m = gt["mask"] & torch.isfinite(gt["depth"])
    err = (d - gt["depth"]).abs()[m]
    return {"mae": round(float(err.mean()), 5), "abs_rel": round(float((err / gt["depth"][m]).mean()), 5)}


def score(G: Any, ws: torch.Tensor, yaw: float, pitch: float, ds: Any, head: int, input_yaw: float) -> dict:
    """Input-view and novel-view PSNR/SSIM and depth errors of (G, ws) seen from the estimated pose."""
    res: dict[str, Any] = {}
    gin = gt_view(ds, head, input_yaw)
    out = render_views(G, ws, orbit_labels(G.cfg, yaw, pitch), grad=False, exact=True)["image"]
    res["input"] = {"psnr": round(psnr(out, downsample(gin["image"], out.shape[-1])), 3),
                    "ssim": round(ssim(out, downsample(gin["image"], out.shape[-1])), 4)}
    res["depth_input"] = depth_error(G, ws, yaw, pitch, gin)
    novel = {}
    for dy in NOVEL:
        try:
            gt = gt_view(ds, head, input_yaw + dy)
        except KeyError:
            continue
        img = render_views(G, ws, orbit_labels(G.cfg, yaw + dy, pitch), grad=False, exact=True)["image"]
        t = downsample(gt["image"], img.shape[-1])
        novel[f"{dy:+g}"] = {"psnr": round(psnr(img, t), 3), "ssim": round(ssim(img, t), 4)}
        if abs(dy) == 30:
            res[f"depth_{dy:+g}"] = depth_error(G, ws, yaw + dy, pitch, gt)
    res["novel"] = novel
    return res


def run_head(G: Any, ds: Any, head: int, args: argparse.Namespace, settings: Any) -> dict[str, Any]:
    gin = gt_view(ds, head, args.input_yaw)
    target = gin["image"]
    rec: dict[str, Any] = {"head": head, "input_yaw": args.input_yaw, "seconds": {}}
    sec = rec["seconds"]
    t = time.perf_counter()
    stats = latent_stats(G, settings.project.w_avg_samples)
    pose = find_pose(G, target, settings, stats)
    sec["pose"] = time.perf_counter() - t
    t = time.perf_counter()
    start = (args.input_yaw, 0.0) if args.given_pose else (pose.yaw, pose.pitch)
    proj = replace(settings.project, refine_camera=not args.given_pose)
    piv = project_latent(G, target, start[0], start[1], proj, stats, seed=settings.seed)
    sec["project"] = time.perf_counter() - t
    yaw, pitch = piv.yaw, piv.pitch
    if args.given_pose:  # the estimate is still scored, with its joint refinement
        est = project_latent(G, target, pose.yaw, pose.pitch, replace(settings.project, steps=40), stats,
                             seed=settings.seed)
        ey, ep = est.yaw, est.pitch
    else:
        ey, ep = yaw, pitch
    rec["pose"] = {"search_yaw": pose.yaw, "search_pitch": pose.pitch, "yaw": round(ey, 2), "pitch": round(ep, 2),
                   "yaw_error": round(abs(ey - args.input_yaw), 2), "pitch_error": round(abs(ep), 2),
                   "search_yaw_error": round(abs(pose.yaw - args.input_yaw), 2), "given": bool(args.given_pose)}
    label = orbit_labels(G.cfg, yaw, pitch)
    rec["pivot"] = score(G, piv.ws, yaw, pitch, ds, head, args.input_yaw)
    if args.space_ablation:
        t = time.perf_counter()
        piv_w = project_latent(G, target, start[0], start[1], replace(proj, space="w"), stats, seed=settings.seed)
        sec["project_w"] = time.perf_counter() - t
        rec["pivot_w"] = score(G, piv_w.ws, piv_w.yaw, piv_w.pitch, ds, head, args.input_yaw)
    inp = Target(target, label)
    if not args.skip_single_view:
        t = time.perf_counter()
        G_sv, _ = tune_generator(G, piv.ws, inp, None, settings.stage2, None, "stage2", settings.seed)
        sec["single_view_tuning"] = time.perf_counter() - t
        rec["single_view"] = score(G_sv, piv.ws, yaw, pitch, ds, head, args.input_yaw)
        del G_sv
    t = time.perf_counter()
    G1, _ = tune_generator(G, piv.ws, inp, None, settings.stage1, None, "stage1", settings.seed)
    sec["stage1"] = time.perf_counter() - t
    rec["stage1"] = {"input": input_metrics(G1, piv.ws, label, target)}
    t = time.perf_counter()
    views, d_in = build_pseudo_views(G1, piv.ws, target, label, yaw, pitch, settings.pseudo)
    sec["pseudo"] = time.perf_counter() - t
    rec["pseudo_mask_mean"] = round(float(torch.cat([v.mask for v in views]).mean()), 4)
    inv = Inversion(G, piv.ws, label, replace(pose, yaw=yaw, pitch=pitch), target, settings, d_in, views,
                    timings={})
    G2, _ = run_stage2(G, inv, None)
    sec["stage2"] = inv.timings["stage2"]
    rec["full"] = score(G2, piv.ws, yaw, pitch, ds, head, args.input_yaw)
    sec["full_pipeline"] = sec["pose"] + sec["project"] + sec["stage1"] + sec["pseudo"] + sec["stage2"]
    if "single_view_tuning" in sec:
        sec["single_view_pipeline"] = sec["pose"] + sec["project"] + sec["single_view_tuning"]
    rec["seconds"] = {k: round(v, 2) for k, v in sec.items()}
    if args.outputs and head == args._first_head:
        rec["end_to_end"] = end_to_end(G, target, settings, args)
    return rec


def end_to_end(G: Any, target: torch.Tensor, settings: Any, args: argparse.Namespace) -> dict[str, Any]:
    """One photo as a user runs it: the whole pipeline plus renders, a 48-frame orbit and a 128³ mesh."""
    from backend.invert.pipeline import invert
    from backend.invert.results import OutputOptions, write_outputs

    base = {"name": Path(args.model).name, "note": "benchmark"}
    t = time.perf_counter()
    inv = invert(G, target, settings)
    t_inv = time.perf_counter() - t
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        w = write_outputs(Path(tmp), inv, G, base, OutputOptions(name="bench"))
        t_out = time.perf_counter() - t
        mesh = w.report.get("mesh", {})
    return {"inversion_s": round(t_inv, 2), "outputs_s": round(t_out, 2), "total_s": round(t_inv + t_out, 2),
            "stages_s": {k: round(v, 2) for k, v in inv.timings.items()},
            "outputs_detail_s": w.report["output_seconds"],
            "mesh": mesh, "under_90s": t_inv + t_out < 90.0}


def photo_check(G: Any, settings: Any, model_path: str) -> dict[str, Any]:
    """The composed photograph-like picture through crop → pose → inversion → mesh."""
    from backend.invert.avatar import base_identity
    from backend.invert.demo_photo import write_photo
    from backend.invert.image import frame_photo, load_photo
    from backend.invert.pipeline import invert
    from backend.invert.results import OutputOptions, write_outputs
    from backend.registry import load_generator

    with tempfile.TemporaryDirectory() as tmp:
        path = write_photo(Path(tmp) / "person.jpg")
        t = time.perf_counter()
        photo = load_photo(path)
        framed = frame_photo(photo, G.cfg.img_resolution, "auto")
        inv = invert(G, framed.image, settings)
        w = write_outputs(Path(tmp) / "out", inv, G, base_identity(load_generator(model_path)),
                          OutputOptions(name="person"))
        return {"photo": "backend/invert/demo_photo.py compose_photo(640, 480, seed 7), JPEG quality 72",
                "crop": framed.box.to_list(), "crop_method": framed.method, "pose": inv.pose.to_dict(),
                "input_view": inv.metrics.get("final"), "mesh": w.report.get("mesh"),
                "files": sorted(w.report["files"]), "seconds": round(time.perf_counter() - t, 2), "ok": True}


def _mean(values: list[float]) -> dict[str, float]:
    a = np.asarray(values, dtype=np.float64)
    return {"mean": round(float(a.mean()), 3), "std": round(float(a.std()), 3), "n": int(a.size)}


def aggregate(records: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    methods = [m for m in ("pivot", "pivot_w", "single_view", "full") if m in records[0]]
    for m in methods:
        agg: dict[str, Any] = {"input_psnr": _mean([r[m]["input"]["psnr"] for r in records]),
                               "input_ssim": _mean([r[m]["input"]["ssim"] for r in records]),
                               "depth_mae_input": _mean([r[m]["depth_input"]["mae"] for r in records])}
        for dy in ("15", "30", "45"):
            ps = [r[m]["novel"][k]["psnr"] for r in records for k in (f"+{dy}", f"-{dy}") if k in r[m]["novel"]]
            ss = [r[m]["novel"][k]["ssim"] for r in records for k in (f"+{dy}", f"-{dy}") if k in r[m]["novel"]]
            if ps:
                agg[f"novel_psnr_pm{dy}"], agg[f"novel_ssim_pm{dy}"] = _mean(ps), _mean(ss)
        d30 = [r[m][k]["mae"] for r in records for k in ("depth_+30", "depth_-30") if k in r[m]]
        if d30:
            agg["depth_mae_pm30"] = _mean(d30)
        out[m] = agg
    out["pose"] = {"yaw_error_deg": _mean([r["pose"]["yaw_error"] for r in records]),
                   "pitch_error_deg": _mean([r["pose"]["pitch_error"] for r in records]),
                   "search_yaw_error_deg": _mean([r["pose"]["search_yaw_error"] for r in records])}
    out["seconds"] = {k: _mean([r["seconds"][k] for r in records if k in r["seconds"]])
                      for k in records[0]["seconds"]}
    if "full" in out and "single_view" in out:
        def novel30(r: dict, m: str) -> float:
            return float(np.mean([r[m]["novel"][k]["psnr"] for k in ("+30", "-30") if k in r[m]["novel"]]))

        wins = sum(novel30(r, "full") > novel30(r, "single_view") for r in records)
        f, s = out["full"], out["single_view"]
        out["claim"] = {
            "novel_psnr_pm30_full_minus_single_view_db": round(f["novel_psnr_pm30"]["mean"]
                                                               - s["novel_psnr_pm30"]["mean"], 3),
            "heads_where_full_wins_at_pm30": f"{wins}/{len(records)}",
            "input_psnr_full_minus_single_view_db": round(f["input_psnr"]["mean"] - s["input_psnr"]["mean"], 3),
            "full_beats_single_view_at_pm30": bool(f["novel_psnr_pm30"]["mean"] > s["novel_psnr_pm30"]["mean"]),
        }
    if "pivot_w" in out:
        out["space_choice"] = {
            "w_plus_minus_w_input_psnr_db": round(out["pivot"]["input_psnr"]["mean"]
                                                  - out["pivot_w"]["input_psnr"]["mean"], 3),
            "w_plus_minus_w_novel_psnr_pm30_db": round(out["pivot"]["novel_psnr_pm30"]["mean"]
                                                       - out["pivot_w"]["novel_psnr_pm30"]["mean"], 3)}
    return out


def main(argv: list[str] | None = None) -> int:
    record = Run(__file__, argv)
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="runs/heads64/latest.safetensors")
    p.add_argument("--test-data", default="data/heads64_test.zip")
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--first-head", type=int, default=0, help="index into the test split's head list")
    p.add_argument("--input-yaw", type=float, default=0.0)
    p.add_argument("--preset", default="default")
    p.add_argument("--steps-stage2", type=int)
    p.add_argument("--tune-lr", type=float)
    p.add_argument("--views", type=int)
    p.add_argument("--pseudo-yaw", type=float)
    p.add_argument("--space-ablation", action="store_true")
    p.add_argument("--given-pose", action="store_true",
                   help="use the ground-truth pose after estimating it (isolates the methods from pose errors)")
    p.add_argument("--pseudo-weight", type=float)
    p.add_argument("--tolerance", type=float)
    p.add_argument("--skip-single-view", action="store_true")
    p.add_argument("--outputs", action="store_true", help="time the user-facing outputs on the first head")
    p.add_argument("--photo", action="store_true", help="also run the photograph-like picture to a mesh")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    from train.data.zip_dataset import ZipDataset

    device = resolve_device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        model_copy = Path(tmp) / Path(args.model).name
        shutil.copy2(args.model, model_copy)  # a training run may replace the file while we read it
        from backend.checkpoints.model_file import file_sha256, read_header
        from backend.registry import load_generator

        header = read_header(model_copy)
        loaded = load_generator(str(model_copy), device)
        G = loaded.generator
        s = preset(args.preset)
        if args.steps_stage2:
            s = replace(s, stage2=replace(s.stage2, steps=args.steps_stage2))
        if args.tune_lr:
            s = replace(s, stage1=replace(s.stage1, lr=args.tune_lr), stage2=replace(s.stage2, lr=args.tune_lr))
        if args.views:
            s = replace(s, pseudo=replace(s.pseudo, views=args.views))
        if args.pseudo_yaw:
            s = replace(s, pseudo=replace(s.pseudo, yaw_range=args.pseudo_yaw))
        if args.pseudo_weight is not None:
            s = replace(s, stage2=replace(s.stage2, pseudo_weight=args.pseudo_weight))
        if args.tolerance is not None:
            s = replace(s, pseudo=replace(s.pseudo, tolerance=args.tolerance))
        ds = ZipDataset(args.test_data, extras=True)
        heads = ds.test_heads[args.first_head : args.first_head + args.heads]
        args._first_head = heads[0]
        records = []
        t0 = time.perf_counter()
        for k, h in enumerate(heads):
            rec = run_head(G, ds, h, args, s)
            records.append(rec)
            sv = rec.get("single_view", rec["pivot"])
            print(f"head {h} ({k + 1}/{len(heads)}): pose err {rec['pose']['yaw_error']:.1f}°; input PSNR "
                  f"sv {sv['input']['psnr']:.2f} / full {rec['full']['input']['psnr']:.2f}; "
                  f"±30 PSNR sv {np.mean([sv['novel'][k]['psnr'] for k in ('+30', '-30')]):.2f}"
                  f" / full {np.mean([rec['full']['novel'][k]['psnr'] for k in ('+30', '-30')]):.2f}; "
                  f"{rec['seconds']['full_pipeline']:.0f} s", file=sys.stderr, flush=True)
        result: dict[str, Any] = {
            "benchmark": "single-image inversion on held-out synthetic heads (benchmarks/inversion.py)",
            "device": str(device), "hardware": hardware_description(device), "threads": args.threads,
            "model": {"path": args.model, "sha256": file_sha256(model_copy), "config": G.cfg.name,
                      "provenance": {k: header.provenance.get(k) for k in ("kimg", "source", "data", "hardware")
                                     if k in header.provenance}},
            "test_data": args.test_data, "heads": heads, "input_view": {"yaw": args.input_yaw, "pitch": 0.0},
            "settings": s.to_dict(), "summary": aggregate(records), "per_head": records,
            "wall_s": round(time.perf_counter() - t0, 1),
            "notes": "PSNR/SSIM on the final 64² images in [0, 1]; novel views rendered at the estimated pose plus "
                     "the ground-truth yaw offset; depth = distance along unit rays (world units) inside the GT mask; "
                     "CPU timings depend on what else ran (environment.load_average_1min_*).",
        }
        if args.photo:
            result["photo_check"] = photo_check(G, s, str(model_copy))
    result = record.finish(result, args.out, device)
    print(json.dumps(result["summary"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
