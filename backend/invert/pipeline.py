# SPDX-License-Identifier: GPL-3.0-or-later
"""The photo-to-3D pipeline: pose → pivot → stage 1 → pseudo views → stage 2 (HFGI3D), or PTI.

``invert(G, target, settings)`` runs every stage on a framed target image and returns an
:class:`Inversion`: the tuned generator, the pivot ws, the camera, the stage-1 geometry and the pseudo views,
timings per stage and input-view metrics per stage. Progress goes through ``progress(stage, step, total,
message)`` — the CLI draws one bar per stage, the server turns it into events (and cancels by raising from
it). Each stage is also a function of its own, so the benchmark can share a pivot between methods.

Modes: ``full`` is HFGI3D's order (stage 2 restarts from the original generator; stage 1 only supplies the
depth and the fill images); ``single-view`` is PTI-like: the pivot, then tuning on the input view alone for
as many steps as stage 2 would take.

Start: from the average head and a searched (or landmark) pose, or from a photo encoder's answer
(``start=``, :mod:`backend.invert.start`): its latent starts the pivot and its camera is kept (the photometric
camera refinement moved it away from the truth; ``refine_given_pose`` refines it anyway). How much is refined
from there (``settings.refine``): ``none`` (the encoder's avatar as it is), ``fast`` (:func:`refine_budget`: a
short pivot, no stage 1 — the pseudo views take their geometry from the untuned generator at the pivot — a few
pseudo views and a short stage 2) or ``full`` (every stage at the preset's budgets).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from backend.generator import TriPlaneGenerator
from backend.invert.geometry import orbit_labels
from backend.invert.losses import downsample, psnr, ssim
from backend.invert.pose import PoseEstimate, PoseSettings, estimate_pose
from backend.invert.project import LatentStats, ProjectSettings, latent_stats, project_latent
from backend.invert.pseudo import PseudoSettings, PseudoView, build_pseudo_views, make_view
from backend.invert.refine import REFINES
from backend.invert.render import render_views
from backend.invert.tuning import Target, TuneReport, TuneSettings, tune_generator

Progress = Callable[[str, int, int, str], None]
MODES = ("full", "single-view")
STAGES = ("encoder", "pose", "project", "stage1", "pseudo", "stage2")


@dataclass(frozen=True)
class InvertSettings:
    """Everything the pipeline can be told. Defaults: < 90 s per photo at 64² on a busy 2-core CPU."""

    pose: tuple[float, float] | None = None  # (yaw, pitch) in degrees; None: estimate it
    # (yaw, pitch) from facial landmarks (backend.invert.frontend): replaces the grid search as the start of
    # the joint camera refinement. Ignored when ``pose`` is given.
    pose_prior: tuple[float, float] | None = None
    refine_given_pose: bool = False  # also refine a given pose (or the encoder's) jointly with the latent
    pose_search: PoseSettings = field(default_factory=PoseSettings)
    project: ProjectSettings = field(default_factory=ProjectSettings)
    stage1: TuneSettings = field(default_factory=lambda: TuneSettings(steps=30))
    pseudo: PseudoSettings = field(default_factory=PseudoSettings)
    # Pseudo views weigh half the photo: measured on held-out heads, 0.5 kept 0.3 dB more input-view PSNR
    # than HFGI3D's 1.0 at the same novel-view PSNR (docs/invert.md).
    stage2: TuneSettings = field(default_factory=lambda: TuneSettings(steps=100, pseudo_weight=0.5))
    mode: str = "full"
    seed: int = 0
    # From an encoder start: none (its avatar as it is), fast or full (refine_budget). Without one: full.
    refine: str = "full"

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)


def preset(name: str, **overrides: Any) -> InvertSettings:
    """Named step budgets: 'fast' (tests, previews), 'default' (< 90 s at 64² on 2 CPU cores), 'quality'
    (HFGI3D's step counts: 500 pivot steps, ≤ 500 stage-1 and 1000 stage-2 steps, 30 pseudo views)."""
    s = InvertSettings()
    if name == "fast":
        s = replace(s, project=replace(s.project, steps=20, w_avg_samples=128),
                    pose_search=replace(s.pose_search, probe_steps=4, yaw_step=15.0, pitch_step=7.5),
                    stage1=replace(s.stage1, steps=6), pseudo=replace(s.pseudo, views=4),
                    stage2=replace(s.stage2, steps=10))
    elif name == "quality":
        s = replace(s, project=replace(s.project, steps=500), stage1=replace(s.stage1, steps=500),
                    pseudo=replace(s.pseudo, views=30), stage2=replace(s.stage2, steps=1000),
                    pose_search=replace(s.pose_search, probe_steps=40, candidates=3))
    elif name != "default":
        raise ValueError(f"unknown preset {name!r}: use fast, default or quality")
    return replace(s, **overrides) if overrides else s


FAST_PATCH = 32  # window side of a fast refinement's steps (render.window_size: whole views when it cannot)


def refine_budget(s: InvertSettings, refine: str) -> InvertSettings:
    """``s`` with the budgets of a refinement level from an encoder start.

    ``fast``: at most 30 pivot steps, no stage 1 (an encoder's start is close enough that the untuned
    generator at the pivot supplies the pseudo views' geometry and fills), at most 4 pseudo views and 30
    stage-2 steps — about a quarter of the default pipeline's renders — and, for models that render their
    image directly, each step renders a random 32² window of its views (``FAST_PATCH``: 2.3× faster for
    0.03 dB at ±30° on 8 held-out heads with the bundled model, docs/invert.md). ``full`` and ``none`` keep
    ``s``'s budgets (``none`` runs none of them)."""
    if refine not in REFINES:
        raise ValueError(f"refine must be one of {REFINES}, got {refine!r}")
    if refine == "fast":
        s = replace(s, project=replace(s.project, steps=min(s.project.steps, 30), patch=FAST_PATCH),
                    stage1=replace(s.stage1, steps=0), pseudo=replace(s.pseudo, views=min(s.pseudo.views, 4)),
                    stage2=replace(s.stage2, steps=min(s.stage2.steps, 30), patch=FAST_PATCH))
    return replace(s, refine=refine)


@dataclass
class Inversion:
    """What the pipeline produced (tensors on the generator's device)."""

    G: TriPlaneGenerator
    ws: torch.Tensor
    label: torch.Tensor  # [1, 25] the input camera
    pose: PoseEstimate
    target: torch.Tensor
    settings: InvertSettings
    input_depth: torch.Tensor | None = None  # stage-1 depth at the input view, R²
    pseudo: list[PseudoView] = field(default_factory=list)
    G_stage1: TriPlaneGenerator | None = None
    reports: dict[str, TuneReport] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    start: Any = None  # backend.invert.start.Start when an encoder gave the first avatar

    @property
    def yaw(self) -> float:
        return self.pose.yaw

    @property
    def pitch(self) -> float:
        return self.pose.pitch

    def summary(self) -> dict[str, Any]:
        return {"pose": self.pose.to_dict(), "mode": self.settings.mode,
                "latent_space": self.settings.project.space,
                "start": self.start.to_dict() if self.start is not None else {"encoder": None},
                "refine": self.settings.refine, "stages": list(self.timings),
                "timings_s": {k: round(v, 4 if k == "encoder" else 2) for k, v in self.timings.items()},
                "total_s": round(sum(self.timings.values()), 2), "input_view": self.metrics,
                "pseudo_views": len(self.pseudo),
                "stage_steps": {k: r.steps for k, r in self.reports.items()},
                "early_stop": {k: r.stopped_early for k, r in self.reports.items()}}


def input_metrics(G: TriPlaneGenerator, ws: torch.Tensor, label: torch.Tensor, target: torch.Tensor) -> dict:
    """Input-view PSNR/SSIM of G at the pivot (final image, exact sampling)."""
    out = render_views(G, ws, label, seed=0, grad=False, exact=True)
    img = out["image"]
    t = downsample(target, img.shape[-1])
    return {"psnr": round(psnr(img, t), 3), "ssim": round(ssim(img, t), 4)}


def _timed(timings: dict[str, float], stage: str, t0: float) -> None:
    timings[stage] = timings.get(stage, 0.0) + time.perf_counter() - t0


def find_pose(G: TriPlaneGenerator, target: torch.Tensor, settings: InvertSettings, stats: LatentStats,
              weight: torch.Tensor | None = None, progress: Progress | None = None) -> PoseEstimate:
    if settings.pose is not None:
        if progress is not None:
            progress("pose", 1, 1, f"given: yaw {settings.pose[0]:+.1f}°, pitch {settings.pose[1]:+.1f}°")
        return PoseEstimate(float(settings.pose[0]), float(settings.pose[1]), "given")
    if settings.pose_prior is not None:
        yaw, pitch = (float(v) for v in settings.pose_prior)
        if progress is not None:
            progress("pose", 1, 1, f"from landmarks: yaw {yaw:+.1f}°, pitch {pitch:+.1f}°")
        return PoseEstimate(yaw, pitch, "landmarks")
    return estimate_pose(G, target, stats, settings.pose_search, weight, progress, settings.seed)


def invert(
    G: TriPlaneGenerator,
    target: torch.Tensor,
    settings: InvertSettings | None = None,
    weight: torch.Tensor | None = None,
    progress: Progress | None = None,
    keep_stage1: bool = False,
    start: Any = None,
) -> Inversion:
    """Run the pipeline on a framed target [1, 3, R, R] in [−1, 1] (R = the model's image size).

    ``start`` (:class:`backend.invert.start.Start`): an encoder's latent and camera to begin from, refined as
    ``settings.refine`` says (module docstring); a given ``settings.pose`` still wins over its camera."""
    s = settings or InvertSettings()
    if s.mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {s.mode!r}")
    if s.refine not in REFINES:
        raise ValueError(f"refine must be one of {REFINES}, got {s.refine!r}")
    if start is None and s.refine != "full":
        raise ValueError(f"refine {s.refine!r} needs an encoder start")
    device = next(G.parameters()).device
    target = target.to(device)
    weight = None if weight is None else weight.to(device)
    timings: dict[str, float] = {}
    G.eval()

    if start is not None:
        timings["encoder"] = start.seconds
        if s.pose is not None:
            pose = PoseEstimate(float(s.pose[0]), float(s.pose[1]), "given")
            if progress is not None:
                progress("pose", 1, 1, f"given: yaw {pose.yaw:+.1f}°, pitch {pose.pitch:+.1f}°")
        else:
            pose = PoseEstimate(start.yaw, start.pitch, "encoder")
            if progress is not None:
                progress("encoder", 1, 1, f"first avatar: yaw {start.yaw:+.1f}°, pitch {start.pitch:+.1f}°")
        label = orbit_labels(G.cfg, pose.yaw, pose.pitch).to(device)
        first = input_metrics(G, start.ws, label, target)
        if s.refine == "none":
            inv = Inversion(G, start.ws.to(device), label, pose, target, s, timings=timings, start=start)
            inv.metrics["encoder"] = inv.metrics["final"] = first
            return inv
        t0 = time.perf_counter()
        stats = latent_stats(G, s.project.w_avg_samples)
        init_ws = start.ws.to(device)
    else:
        t0 = time.perf_counter()
        stats = latent_stats(G, s.project.w_avg_samples)
        pose = find_pose(G, target, s, stats, weight, progress)
        _timed(timings, "pose", t0)
        t0 = time.perf_counter()
        init_ws, first = None, None

    # The encoder's camera is kept (unless asked): measured on held-out heads (docs/invert.md), the photometric
    # fit moved its pitch away from the truth (fast: median 1.46° -> 2.22° off), because the model's imperfect
    # renders (and the crop) put the photometric optimum up to 4° from the true pitch even at the head's own
    # latent; a smaller camera step still drifted, and the input view gained 0.05 dB. The landmarks' prior and
    # the grid search are coarser than that bias, so they are still refined.
    refine = s.project.refine_camera and (pose.source in ("estimated", "landmarks") or s.refine_given_pose)
    pivot = project_latent(G, target, pose.yaw, pose.pitch, replace(s.project, refine_camera=refine), stats,
                           weight, init_ws=init_ws, progress=progress, seed=s.seed)
    if refine:
        pose = replace(pose, yaw=pivot.yaw, pitch=pivot.pitch)
    label = orbit_labels(G.cfg, pose.yaw, pose.pitch).to(device)
    _timed(timings, "project", t0)
    inv = Inversion(G, pivot.ws, label, pose, target, s, timings=timings, start=start)
    if first is not None:
        inv.metrics["encoder"] = first
    inv.metrics["pivot"] = input_metrics(G, pivot.ws, label, target)
    input_view = Target(target, label, weight)

    if s.mode == "single-view":
        t0 = time.perf_counter()
        inv.G, inv.reports["stage2"] = tune_generator(G, pivot.ws, input_view, None, s.stage2, progress,
                                                      "stage2", s.seed, stats.w_std)
        _timed(timings, "stage2", t0)
    else:
        if s.stage1.steps > 0:
            t0 = time.perf_counter()
            G1, inv.reports["stage1"] = tune_generator(G, pivot.ws, input_view, None, s.stage1, progress,
                                                       "stage1", s.seed, stats.w_std)
            _timed(timings, "stage1", t0)
            inv.metrics["stage1"] = input_metrics(G1, pivot.ws, label, target)
        else:  # fast refinement: the untuned generator at the pivot gives the pseudo views' geometry
            G1 = G
        t0 = time.perf_counter()
        inv.pseudo, inv.input_depth = build_pseudo_views(G1, pivot.ws, target, label, pose.yaw, pose.pitch,
                                                         s.pseudo, progress=progress)
        _timed(timings, "pseudo", t0)
        if keep_stage1:
            inv.G_stage1 = G1
        del G1
        inv.G, inv.reports["stage2"] = run_stage2(G, inv, progress)
    inv.metrics["final"] = input_metrics(inv.G, pivot.ws, label, target)
    return inv


def run_stage2(G: TriPlaneGenerator, inv: Inversion, progress: Progress | None = None,
               target: torch.Tensor | None = None) -> tuple[TriPlaneGenerator, TuneReport]:
    """Stage 2 from the original generator on the input view (or ``target``) plus the pseudo views."""
    s = inv.settings
    t0 = time.perf_counter()
    fw = s.pseudo.fill_weight
    pseudo = [Target(v.image, v.label, v.weight(fw)) for v in inv.pseudo]
    inp = Target(inv.target if target is None else target, inv.label, None)
    w_spread = latent_stats(G, 64).w_std if s.stage2.locality_weight > 0 else 1.0
    out = tune_generator(G, inv.ws, inp, pseudo, s.stage2, progress, "stage2", s.seed, w_spread)
    _timed(inv.timings, "stage2", t0)
    return out


def retexture(G: TriPlaneGenerator, inv: Inversion, edited: torch.Tensor,
              progress: Progress | None = None) -> tuple[TriPlaneGenerator, list[PseudoView]]:
    """HFGI3D's texture editing: warp an edited input image through the stored stage-1 geometry into the
    same pseudo views (same visibility, same fills) and re-run stage 2 only."""
    if inv.input_depth is None or not inv.pseudo:
        raise ValueError("texture editing needs the stage-1 geometry (an avatar made in 'full' mode)")
    edited = downsample(edited.to(inv.target.device), inv.target.shape[-1])
    views = [make_view((v.yaw, v.pitch), v.label, v.depth, v.fill, edited, inv.label, inv.input_depth,
                       inv.settings.pseudo.tolerance,
                       inv.settings.pseudo) for v in inv.pseudo]
    if progress is not None:
        progress("pseudo", 1, 1, f"{len(views)} pseudo views from the edited image")
    edited_inv = replace(inv, pseudo=views, target=edited)
    G2, report = run_stage2(G, edited_inv, progress)
    inv.reports["retexture"] = report
    return G2, views

