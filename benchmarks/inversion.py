# SPDX-License-Identifier: GPL-3.0-or-later
"""Inversion benchmark on held-out synthetic heads (ground-truth views and depth known).

    python benchmarks/inversion.py --model runs/heads64/latest.safetensors --test-data data/heads64_test.zip \
        --heads 8 --threads 1 --out benchmarks/results/inversion_cpu.json
    python benchmarks/inversion.py --model runs/interim-distill.safetensors --test-data data/heads64v2_test.zip \
        --heads 6 --framing face --encoder auto --threads 1 --out benchmarks/results/inversion_encoder_cpu.json

For each of ``--heads`` held-out heads, the input is the ground-truth view at (``--input-yaw``, 0°); with
``--framing face`` it is first framed by the face front end as ``aware3d invert`` frames a photo
(``frontend.prepare_photo``: detection, landmark crop, the landmarks' pose prior; a head whose face is not
found is taken as already framed, and the report says so). Shared by the optimisation methods: the pose
estimate (the landmarks' prior when there is one, else render-and-compare + probe fits; scored against the
known pose) and the W+ pivot (with joint camera refinement). Then

* ``single_view``: PTI-like tuning of the original generator on the input alone, as many steps as stage 2;
* ``full``: HFGI3D-style stage 1 (short single-view tuning → depth) → pseudo views around the input's pose
  by visibility analysis → stage 2 from the original generator on input + pseudo views (today's pipeline
  without an encoder);
* ``pivot``: the pivot with the untuned generator (reference).

With a photo encoder (``--encoder auto|FILE``, :mod:`backend.invert.start`; skipped when none fits):

* ``encoder``: its answer alone (``--refine none``: one forward pass);
* ``encoder_fast`` / ``encoder_full``: the pipeline refining from it (``--refine fast`` / ``full``);
* ``own_latent`` (distilled models and test data with head latents): the head rendered from its true latent
  at the true camera — what a perfect encoder would give (reference).

``--camera-ablation`` (the evidence for keeping the encoder's camera, docs/invert.md): each refinement level
again with the camera refined jointly with the latent (``encoder_fast_camera``, ``encoder_full_camera``), and
the pitch at which the head's own latent best matches the framed input under the pivot's loss
(pose method ``own_latent_photometric``, a 1° grid over ±8°) — how far from the truth a photometric camera fit
lands even with a perfect latent on this model.

``--window-ablation``: the fast refinement again with whole views in every step (``encoder_fast_whole``),
against its default 32² windows (``backend.invert.render.Window``): what the windows cost in quality.

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
from backend.invert.pipeline import Inversion, find_pose, input_metrics, invert, preset, refine_budget, run_stage2
from backend.invert.project import latent_stats, project_latent
from backend.invert.pseudo import build_pseudo_views
from backend.invert.render import render_views
from backend.invert.start import encoder_start
from backend.invert.tuning import Target, tune_generator
from benchmarks.record import Run

NOVEL = (-45.0, -30.0, -15.0, 15.0, 30.0, 45.0)
METHODS = ("pivot", "pivot_w", "single_view", "full", "encoder", "encoder_fast", "encoder_full", "own_latent",
           "encoder_fast_camera", "encoder_full_camera", "encoder_fast_whole")
PHOTOMETRIC_PITCHES = tuple(float(p) for p in range(-8, 9))
# Seconds per photo of each method (the stages it runs; the front end is shared and reported on its own).
METHOD_SECONDS = {"single_view": "single_view_pipeline", "full": "full_pipeline", "encoder": "encoder",
                  "encoder_fast": "encoder_fast_pipeline", "encoder_full": "encoder_full_pipeline",
                  "encoder_fast_whole": "encoder_fast_whole_pipeline"}


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


def frame_input(G: Any, image: torch.Tensor, name: str) -> tuple[torch.Tensor, dict[str, Any], Any]:
    """The ground-truth view framed by the face front end as the CLI frames a photo: (framed image, what the
    front end found, the landmarks' pose prior or None). No face found: the view as it is (already framed)."""
    from backend.invert.frontend import NoFaceError, prepare_photo
    from backend.invert.image import load_photo
    from backend.sampling import to_uint8

    photo = load_photo(to_uint8(image[0]), name)
    t = time.perf_counter()
    try:
        fe = prepare_photo(photo, G.cfg, "auto", "auto")
        found = fe.face is not None
    except NoFaceError:
        fe = prepare_photo(photo, G.cfg, "full", "auto")
        found = False
    box = fe.framed.box
    info = {"face_found": found, "seconds": round(time.perf_counter() - t, 3), "crop_method": fe.framed.method,
            "crop": [round(v, 2) for v in box.to_list()], "crop_angle_deg": round(box.angle, 2),
            "confidence": None if fe.face is None else round(fe.face.confidence, 3), "notice": fe.notice,
            "prior": None if fe.prior is None else [round(fe.prior.yaw, 2), round(fe.prior.pitch, 2)]}
    return fe.framed.image, info, fe.pose_prior


def _pose_error(yaw: float, pitch: float, true_yaw: float) -> dict[str, float]:
    return {"yaw": round(yaw, 2), "pitch": round(pitch, 2), "yaw_error": round(yaw - true_yaw, 2),
            "pitch_error": round(pitch, 2)}


def run_encoder(G: Any, ds: Any, head: int, target: torch.Tensor, args: argparse.Namespace, settings: Any,
                choice: Any, rec: dict[str, Any], stats: Any) -> None:
    """The encoder alone and refined from it (fast, full); the head from its own latent as a reference."""
    sec = rec["seconds"]
    start = encoder_start(choice.encoder, G, target, choice.info)
    sec["encoder"] = start.seconds
    rec["encoder"] = score(G, start.ws, start.yaw, start.pitch, ds, head, args.input_yaw)
    rec["pose"]["methods"]["encoder"] = _pose_error(start.yaw, start.pitch, args.input_yaw)
    truth = own_latent_ws(G, ds, head, args.input_yaw)
    if truth is not None:
        dist = float((start.ws - truth).norm(dim=-1).mean())  # in units of W's spread (0: one w for all)
        rec["encoder"]["ws_error"] = round(dist / stats.w_std, 4) if stats.w_std > 0 else None
        rec["own_latent"] = score(G, truth, args.input_yaw, 0.0, ds, head, args.input_yaw)
        if args.camera_ablation:
            pitch = photometric_pitch(G, truth, args.input_yaw, target, settings)
            rec["pose"]["methods"]["own_latent_photometric"] = _pose_error(args.input_yaw, pitch, args.input_yaw)
    variants = [(level, "") for level in args.refine]
    if args.camera_ablation:
        variants += [(level, "_camera") for level in args.refine]
    if args.window_ablation and "fast" in args.refine:
        variants.append(("fast", "_whole"))
    for level, suffix in variants:
        s = replace(refine_budget(settings, level), refine_given_pose=suffix == "_camera")
        if suffix == "_whole":  # every step renders the whole views, as before fast refinement used windows
            s = replace(s, project=replace(s.project, patch=0), stage2=replace(s.stage2, patch=0))
        inv = invert(G, target, s, start=start)
        name = f"encoder_{level}{suffix}"
        sec[f"{name}_pipeline"] = sum(inv.timings.values())
        rec[name] = score(inv.G, inv.ws, inv.yaw, inv.pitch, ds, head, args.input_yaw)
        rec[name]["stages_s"] = {k: round(v, 3) for k, v in inv.timings.items()}
        rec["pose"]["methods"][name] = _pose_error(inv.yaw, inv.pitch, args.input_yaw)
        del inv


def photometric_pitch(G: Any, ws: torch.Tensor, yaw: float, target: torch.Tensor, settings: Any) -> float:
    """The pitch (of ``PHOTOMETRIC_PITCHES``) at which ``ws`` seen from ``yaw`` best matches ``target`` under
    the pivot's loss: where a photometric camera fit is pulled to, with this latent, on this model."""
    from backend.invert.project import image_loss

    losses = []
    for p in PHOTOMETRIC_PITCHES:
        out = render_views(G, ws, orbit_labels(G.cfg, yaw, p), seed=0, grad=False, exact=True)
        losses.append(float(image_loss(out, target, settings.project.loss, settings.project.raw_weight)))
    return PHOTOMETRIC_PITCHES[int(np.argmin(losses))]


def own_latent_ws(G: Any, ds: Any, head: int, input_yaw: float) -> torch.Tensor | None:
    """ws of the head's own latent (distilled models and test data with head latents), else None."""
    from backend.config import takes_head_latents
    from train.synthetic.latent import LATENT_DIMS

    if not takes_head_latents(G.cfg):
        return None
    params = ds.params(ds.test_view(head, input_yaw))
    if "latent" not in params:
        return None
    device = next(G.parameters()).device
    z = torch.zeros(1, G.cfg.z_dim, device=device)
    z[0, :LATENT_DIMS] = torch.tensor(params["latent"][:LATENT_DIMS], device=device)
    with torch.no_grad():
        return G.mapping(z, torch.zeros(1, G.cfg.c_dim, device=device))


def run_head(G: Any, ds: Any, head: int, args: argparse.Namespace, settings: Any,
             choice: Any = None) -> dict[str, Any]:
    gin = gt_view(ds, head, args.input_yaw)
    target = gin["image"]
    rec: dict[str, Any] = {"head": head, "input_yaw": args.input_yaw, "seconds": {}}
    sec = rec["seconds"]
    if args.framing == "face":
        target, rec["front_end"], prior = frame_input(G, target, f"head{head}")
        sec["front_end"] = rec["front_end"]["seconds"]
        if prior is not None and not args.given_pose:
            settings = replace(settings, pose_prior=prior)
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
                   "search_yaw_error": round(abs(pose.yaw - args.input_yaw), 2), "given": bool(args.given_pose),
                   "source": pose.source,
                   "methods": {"start": _pose_error(pose.yaw, pose.pitch, args.input_yaw),
                               "pivot": _pose_error(ey, ep, args.input_yaw)}}
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
    if choice is not None and choice.encoder is not None:
        run_encoder(G, ds, head, target, args, settings, choice, rec, stats)
    rec["seconds"] = {k: round(v, 4 if k == "encoder" else 2) for k, v in sec.items()}
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


def photo_check(G: Any, settings: Any, model_path: str, args: argparse.Namespace, choice: Any = None
                ) -> dict[str, Any]:
    """The composed photograph-like picture through the CLI's path: crop (the face front end with
    ``--framing face``) → the encoder's start and the default refinement when an encoder fits, else pose →
    inversion; then avatar, renders, orbit and mesh. ``seconds`` is photo → avatar + mesh."""
    from backend.invert.avatar import base_identity
    from backend.invert.demo_photo import write_photo
    from backend.invert.frontend import prepare_photo
    from backend.invert.image import frame_photo, load_photo
    from backend.invert.results import OutputOptions, write_outputs
    from backend.registry import load_generator

    with tempfile.TemporaryDirectory() as tmp:
        path = write_photo(Path(tmp) / "person.jpg")
        t = time.perf_counter()
        photo = load_photo(path)
        start = None
        if args.framing == "face":
            fe = prepare_photo(photo, G.cfg, "auto", "auto")
            framed = fe.framed
            if fe.pose_prior is not None:
                settings = replace(settings, pose_prior=fe.pose_prior)
        else:
            framed = frame_photo(photo, G.cfg.img_resolution, "auto")
        if choice is not None and choice.encoder is not None:
            from backend.cli.invert_cmd import DEFAULT_REFINE

            settings = refine_budget(settings, DEFAULT_REFINE)
            start = encoder_start(choice.encoder, G, framed.image, choice.info)
        inv = invert(G, framed.image, settings, start=start)
        w = write_outputs(Path(tmp) / "out", inv, G, base_identity(load_generator(model_path)),
                          OutputOptions(name="person"))
        return {"photo": "backend/invert/demo_photo.py compose_photo(640, 480, seed 7), JPEG quality 72",
                "crop": framed.box.to_list(), "crop_method": framed.method, "pose": inv.pose.to_dict(),
                "refine": inv.settings.refine, "stages_s": {k: round(v, 3) for k, v in inv.timings.items()},
                "input_view": inv.metrics.get("final"), "mesh": w.report.get("mesh"),
                "output_seconds": w.report.get("output_seconds"),
                "files": sorted(w.report["files"]), "seconds": round(time.perf_counter() - t, 2), "ok": True}


def _mean(values: list[float]) -> dict[str, float]:
    a = np.asarray(values, dtype=np.float64)
    return {"mean": round(float(a.mean()), 3), "std": round(float(a.std()), 3), "n": int(a.size)}


def aggregate(records: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    methods = [m for m in METHODS if m in records[0]]
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
                   "search_yaw_error_deg": _mean([r["pose"]["search_yaw_error"] for r in records]),
                   "by_method": pose_errors(records)}
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
    if "encoder" in out:
        out["encoder_claims"] = encoder_claims(out, records)
    if "front_end" in records[0]:
        out["front_end"] = {"faces_found": f"{sum(r['front_end']['face_found'] for r in records)}/{len(records)}",
                            "seconds": _mean([r["front_end"]["seconds"] for r in records])}
    if "pivot_w" in out:
        out["space_choice"] = {
            "w_plus_minus_w_input_psnr_db": round(out["pivot"]["input_psnr"]["mean"]
                                                  - out["pivot_w"]["input_psnr"]["mean"], 3),
            "w_plus_minus_w_novel_psnr_pm30_db": round(out["pivot"]["novel_psnr_pm30"]["mean"]
                                                       - out["pivot_w"]["novel_psnr_pm30"]["mean"], 3)}
    return out


def pose_errors(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Per pose source (the start: prior or search; the pivot's refinement; the encoder and its refinements):
    median |error| and mean signed error (a shared bias) of yaw and pitch, in degrees."""
    out: dict[str, Any] = {}
    for m in records[0]["pose"].get("methods", {}):
        rows = [r["pose"]["methods"][m] for r in records if m in r["pose"].get("methods", {})]
        out[m] = {}
        for axis in ("yaw", "pitch"):
            e = np.asarray([row[f"{axis}_error"] for row in rows], dtype=np.float64)
            out[m][axis] = {"median_abs": round(float(np.median(np.abs(e))), 2),
                            "mean_signed": round(float(e.mean()), 2)}
    return out


def _pm30(r: dict[str, Any], m: str) -> float:
    return float(np.mean([r[m]["novel"][k]["psnr"] for k in ("+30", "-30") if k in r[m]["novel"]]))


def encoder_claims(out: dict[str, Any], records: list[dict[str, Any]]) -> dict[str, Any]:
    """The issue's comparisons at ±30°: the encoder alone against PTI-like tuning, the refinements against
    today's full pipeline, and each method's ±30° PSNR with its seconds per photo."""
    def gap(a: str, b: str) -> dict[str, Any] | None:
        if a not in out or b not in out:
            return None
        wins = sum(_pm30(r, a) >= _pm30(r, b) for r in records)
        return {"psnr_pm30_db": round(out[a]["novel_psnr_pm30"]["mean"] - out[b]["novel_psnr_pm30"]["mean"], 3),
                "heads_at_least_as_good": f"{wins}/{len(records)}"}

    table = {m: {"psnr_pm30": out[m]["novel_psnr_pm30"]["mean"],
                 "seconds": out["seconds"][METHOD_SECONDS[m]]["mean"]}
             for m in METHOD_SECONDS if m in out and METHOD_SECONDS[m] in out["seconds"]}
    return {"encoder_minus_single_view": gap("encoder", "single_view"),
            "encoder_fast_minus_full": gap("encoder_fast", "full"),
            "encoder_full_minus_full": gap("encoder_full", "full"),
            "encoder_fast_windows_minus_whole": gap("encoder_fast", "encoder_fast_whole"),
            "own_latent_minus_encoder": gap("own_latent", "encoder"),
            **({"camera_ablation": {f"encoder_{lv}_minus_camera_refined": gap(f"encoder_{lv}",
                                                                             f"encoder_{lv}_camera")
                                    for lv in ("fast", "full") if f"encoder_{lv}_camera" in out}}
               if any(f"encoder_{lv}_camera" in out for lv in ("fast", "full")) else {}),
            "per_method": table}


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
    p.add_argument("--framing", choices=["none", "face"], default="none",
                   help="face: frame each input with the face front end as 'aware3d invert' does (its pose prior "
                        "starts the pose); none: the ground-truth view as it is (default; the older results)")
    p.add_argument("--encoder", default="none", metavar="auto|none|FILE",
                   help="photo encoder for the encoder methods (default none: skip them)")
    p.add_argument("--refine", nargs="*", default=["fast", "full"], choices=["fast", "full"],
                   help="refinement levels to run from the encoder's start (default: fast full)")
    p.add_argument("--camera-ablation", action="store_true",
                   help="also refine the encoder's camera jointly with the latent, and find the pitch at which "
                        "each head's own latent best matches its input (the evidence for keeping the camera)")
    p.add_argument("--window-ablation", action="store_true",
                   help="also run the fast refinement with whole views in every step (encoder_fast_whole) instead "
                        "of its 32² windows")
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
        from backend.invert.avatar import base_identity
        from backend.invert.start import choose_encoder

        choice = choose_encoder(args.encoder, G, base_identity(loaded), device)
        ds = ZipDataset(args.test_data, extras=True)
        heads = ds.test_heads[args.first_head : args.first_head + args.heads]
        args._first_head = heads[0]
        records = []
        t0 = time.perf_counter()
        for k, h in enumerate(heads):
            rec = run_head(G, ds, h, args, s, choice)
            records.append(rec)
            sv = rec.get("single_view", rec["pivot"])
            enc = "".join(f" / {m} {_pm30(rec, m):.2f}" for m in ("encoder", "encoder_fast", "encoder_full")
                          if m in rec)
            print(f"head {h} ({k + 1}/{len(heads)}): pose err {rec['pose']['yaw_error']:.1f}°; input PSNR "
                  f"sv {sv['input']['psnr']:.2f} / full {rec['full']['input']['psnr']:.2f}; "
                  f"±30 PSNR sv {np.mean([sv['novel'][k]['psnr'] for k in ('+30', '-30')]):.2f}"
                  f" / full {np.mean([rec['full']['novel'][k]['psnr'] for k in ('+30', '-30')]):.2f}{enc}; "
                  f"{rec['seconds']['full_pipeline']:.0f} s", file=sys.stderr, flush=True)
        result: dict[str, Any] = {
            "benchmark": "single-image inversion on held-out synthetic heads (benchmarks/inversion.py)",
            "device": str(device), "hardware": hardware_description(device), "threads": args.threads,
            "model": {"path": args.model, "sha256": file_sha256(model_copy), "config": G.cfg.name,
                      "provenance": {k: header.provenance.get(k) for k in ("kimg", "source", "data", "hardware")
                                     if k in header.provenance}},
            "test_data": args.test_data, "heads": heads, "input_view": {"yaw": args.input_yaw, "pitch": 0.0},
            "framing": args.framing,
            "encoder": ({**choice.info, "sha256": file_sha256(choice.info["path"])} if choice.encoder is not None
                        else {"used": None, "notice": choice.notice or f"--encoder {args.encoder}"}),
            "settings": s.to_dict(), "summary": aggregate(records), "per_head": records,
            "wall_s": round(time.perf_counter() - t0, 1),
            "notes": "PSNR/SSIM on the final 64² images in [0, 1]; novel views rendered at the estimated pose plus "
                     "the ground-truth yaw offset; depth = distance along unit rays (world units) inside the GT mask; "
                     "CPU timings depend on what else ran (environment.load_average_1min_*).",
        }
        if args.photo:
            result["photo_check"] = photo_check(G, s, str(model_copy), args, choice)
    result = record.finish(result, args.out, device)
    print(json.dumps(result["summary"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
