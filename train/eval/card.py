"""Model cards for bundled models: what the model is, how exactly it was made, and what it measures.

``write_model_card`` renders a sample grid (seeds × yaws) and an orbit, and writes ``NAME.md`` beside the model
with the provenance stored in the model file (data, command, kimg, wall time, hardware) and an evaluation
report from ``aware3d-train eval``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from backend.checkpoints.model_file import read_header
from backend.fileio import write_bytes, write_png
from backend.outputs import write_video
from backend.registry import load_generator
from backend.sampling import camera_label, make_latent, orbit_labels, render_view

GRID_YAWS = (-45.0, -20.0, 0.0, 20.0, 45.0)


def sample_grid(G: Any, seeds: list[int], yaws: tuple[float, ...] = GRID_YAWS, truncation: float = 0.7) -> np.ndarray:
    rows = []
    for seed in seeds:
        latent = make_latent(G, seed, truncation)
        rows.append(np.concatenate([render_view(G, latent, camera_label(G.cfg, y, 0.0)).image for y in yaws], axis=1))
    return np.concatenate(rows, axis=0)


def _format_metrics(report: dict[str, Any], has_sr: bool = True) -> str:
    """The report as a table; ``has_sr`` False (a model whose image is its render) gives its image one row
    instead of three identical ones (final, raw and direct are the same picture)."""
    lines = ["| measure | value |", "|---|---|"]
    q = report.get("quality", {})
    verdict = report.get("features_trust")
    if verdict is not None and not verdict.get("trusted"):
        lines.append(f"| **FID / KID below are not trustworthy** | {verdict.get('reason')} |")
    kinds = ((("image", "final image (SR)"), ("raw", "raw render"), ("direct", "direct render")) if has_sr
             else (("image", "the image (the volume render itself, no SR)"),))
    for kind, label in kinds:
        if f"fid_{kind}" in q:
            lines.append(f"| FID / KID, {label} (feature-net space, {q.get('count')} images) | "
                         f"{q[f'fid_{kind}']:.3f} / {q[f'kid_{kind}']:.4f} |")
    c = report.get("consistency", {})
    for kind in (("raw", "sr", "direct") if has_sr else ("direct",)):
        v = c.get(f"reprojection_error_{kind}")
        if v is not None:
            lines.append(f"| reprojection error ±{c.get('yaw_deg')}°, {kind} (mean abs, 0–1) | {v:.4f} |")
    g = c.get("geometry", {})
    if g:
        lines.append(f"| frontal depth range over the head (p5–p95, world units) | {g.get('depth_range', 0):.3f} |")
    m = report.get("mesh", {})
    if "iou_mean" in m:
        lines.append(f"| mesh (density {m.get('level', 10):g}) vs render, {m['latents']} heads × front and 30°: "
                     f"silhouette IoU mean / min "
                     f"| {m['iou_mean']:.3f} / {m['iou_min']:.3f} |")
        lines.append(f"| mesh vs render depth, median error (world units): mean / worst view "
                     f"| {m['depth_error_mean']:.4f} / {m['depth_error_max']:.4f} |")
    r = report.get("reconstruction", {})
    if "psnr_mean" in r:
        what = f"held-out heads from their own latent ({r['heads']} heads × {r['views_per_head']} views, |yaw| ≤ " \
               f"{r['max_yaw']:g}°)"
        lines.append(f"| {what}: PSNR whole image / head region (dB) | {r['psnr_mean']:.2f} / "
                     f"{r['psnr_head_mean']:.2f} |")
        lines.append(f"| same: SSIM whole image / head region | {r['ssim_mean']:.3f} / {r['ssim_head_mean']:.3f} |")
        lines.append(f"| same: median depth error (world units) | {r['depth_error_median']:.4f} |")
        lines.append(f"| density-{r.get('chamfer_level', 10):g} mesh vs true surface, Chamfer ({r['chamfer_heads']} "
                     f"heads, world units) | "
                     f"{r['chamfer_mean']:.4f} |")
        lines.append(f"| head seen from behind vs the truth: PSNR of the head region (dB) | "
                     f"{r['back_psnr_head_mean']:.2f} |")
    d = report.get("dataset", {})
    if d.get("reprojection_error_ground_truth") is not None:
        lines.append(f"| same reprojection check on the data's ground truth ±{d['yaw_deg']}° | "
                     f"{d['reprojection_error_ground_truth']:.4f} |")
    return "\n".join(lines)


IMITATION_ROWS = [("FID, final image (SR)", "quality", "fid_image"), ("FID, raw render", "quality", "fid_raw"),
                  ("FID, direct render", "quality", "fid_direct"), ("KID, direct render", "quality", "kid_direct"),
                  ("reprojection error, SR", "consistency", "reprojection_error_sr"),
                  ("reprojection error, direct", "consistency", "reprojection_error_direct")]
DISTORTION_ROWS = [*IMITATION_ROWS[:4], ("reprojection error, raw", "consistency", "reprojection_error_raw"),
                   *IMITATION_ROWS[4:],
                   ("mesh vs render silhouette IoU, mean", "mesh", "iou_mean"),
                   ("mesh vs render silhouette IoU, worst view", "mesh", "iou_min"),
                   ("mesh vs render depth error, mean (world units)", "mesh", "depth_error_mean"),
                   ("mesh vs render depth error, worst view", "mesh", "depth_error_max")]


def _format_comparison(before: dict[str, Any], after: dict[str, Any], stage: str = "imitation",
                       rows: list[tuple[str, str, str]] = IMITATION_ROWS) -> str:
    """A training stage's effect in numbers, e.g. Mimic3D's claim: the direct render's quality moves towards
    the SR image's while consistency stays."""
    lines = [f"| measure | before {stage} | after {stage} | change |", "|---|---|---|---|"]
    for label, group, key in rows:
        b, a = before.get(group, {}).get(key), after.get(group, {}).get(key)
        if b is not None and a is not None:
            lines.append(f"| {label} | {b:.4f} | {a:.4f} | {a - b:+.4f} |")
    for name, report in (("before", before), ("after", after)):
        q = report.get("quality", {})
        if "fid_direct" in q and "fid_image" in q:
            lines.append(f"| FID gap direct − SR ({name}) | | | {q['fid_direct'] - q['fid_image']:+.3f} |")
    return "\n".join(lines)


def write_model_card(model_path: str | Path, eval_report: dict[str, Any] | None, notes: str = "",
                     seeds: int = 6, orbit_frames: int = 48,
                     before_imitation: dict[str, Any] | None = None,
                     before_distortion: dict[str, Any] | None = None,
                     before_distillation: dict[str, Any] | None = None) -> Path:
    model_path = Path(model_path)
    name = model_path.name.removesuffix(".safetensors")
    folder = model_path.parent
    header = read_header(model_path)
    G = load_generator(str(model_path)).generator
    grid = sample_grid(G, list(range(seeds)))
    write_png(folder / f"{name}_samples.png", grid)
    latent = make_latent(G, 0, 0.7)
    frames = [render_view(G, latent, lab).image for lab in orbit_labels(G.cfg, orbit_frames, 45.0, 10.0)]
    write_video(folder / f"{name}_orbit.gif", frames, fps=16)
    p = header.provenance
    cfg = header.config
    size_mb = model_path.stat().st_size / 2**20
    has_sr = cfg.get("superresolution", "none") != "none"
    comparison = ""
    if before_imitation and eval_report:
        kimg = before_imitation.get("model_kimg", "?")
        comparison = (f"\n### Before and after the 3D-to-2D imitation stage\n\nThe same evaluation on the snapshot "
                      f"exported when the imitation stage started ({kimg} kimg) and on this model:\n\n"
                      f"{_format_comparison(before_imitation, eval_report)}\n")
    if before_distortion and eval_report:
        kimg = before_distortion.get("model_kimg", "?")
        comparison += (f"\n### Before and after the ray-distortion stage\n\nThe same evaluation on the model "
                       f"before `--distortion-reg` ({kimg} kimg) and on this model:\n\n"
                       f"{_format_comparison(before_distortion, eval_report, 'distortion', DISTORTION_ROWS)}\n")
    if before_distillation and eval_report:
        what = f"{before_distillation.get('model', '?')} ({before_distillation.get('model_kimg', '?')} kimg)"
        comparison += (f"\n### Before and after distillation\n\nThe same evaluation on the model this one replaces, "
                       f"{what}, and on this model:\n\n"
                       f"{_format_comparison(before_distillation, eval_report, 'distillation', DISTORTION_ROWS)}\n")
    text = f"""# Model card: {name}

{notes}

| | |
|---|---|
| architecture | `{cfg.get('name')}` ({cfg.get('family')}, {cfg.get('img_resolution')}² images from a \
{cfg.get('neural_rendering_resolution')}² neural render, {cfg.get('triplane_resolution')}² tri-planes, projection \
{cfg.get('projection')}) |
| file | `{model_path.name}`, {size_mb:.2f} MB |
| training data | `{p.get('data', '?')}` (synthetic heads made by `aware3d-train make-dataset`, see the README) |
| command | `{p.get('command', '?')}` |
| length | {p.get('kimg', '?')} kimg |
| wall time | {float(p.get('wall_time_s', 0)) / 3600:.2f} h |
| hardware | {p.get('hardware', '?')}, {p.get('processes', 1)} process(es) |

Samples (seeds 0–{seeds - 1}, truncation 0.7, yaw −45°, −20°, 0°, 20°, 45°):

![samples]({name}_samples.png)

Orbit (seed 0, yaw ±45°, pitch ±10°): [{name}_orbit.gif]({name}_orbit.gif)

## Evaluation (`aware3d-train eval`)

{_format_metrics(eval_report, has_sr) if eval_report else 'Not evaluated.'}
{comparison}

<details><summary>Full report</summary>

```json
{json.dumps(eval_report, indent=2) if eval_report else '{}'}
```
</details>
"""
    path = folder / f"{name}.md"
    write_bytes(path, text.encode())
    return path
