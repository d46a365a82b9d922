# SPDX-License-Identifier: GPL-3.0-or-later
"""Measure the face front end on renders of held-out synthetic heads at known camera poses.

For each head and view it renders the head with the data set's own tracer (``train.synthetic.render``) at
``--res`` pixels, runs :func:`backend.invert.frontend.prepare_photo` (detector → landmark crop → PnP pose
prior, the bundled model's framing) and compares with the truth:

* detection rate (the stylised heads are not photographs: dlib may not fire, especially at 64 px);
* yaw / pitch error of the pose prior against the rendering camera (median of |error|, and the mean signed
  error: a shared bias). The heads' own nod (σ 4°, part of the data) is not part of the camera, so it is
  an error the landmarks cannot remove;
* the crop against the render's own frame (the training framing): centre offset and size, in crop widths.

With ``--refine STEPS`` it also runs the pivot projection with joint camera refinement (the pipeline's next
stage) from the prior on the bundled model, and reports the error after it; with ``--compare`` it runs the
render-and-compare search that the prior replaces (grid + probe fits, default settings) on the same framed
images.

Writes a JSON report (the command is recorded in it)::

    .venv/bin/python tools/face_pose_check.py --heads 8 --res 64 --out tools/results/face_pose_64.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

YAWS = (0.0, -15.0, 15.0, -30.0, 30.0, -45.0, 45.0)
PITCHES = (0.0, -10.0, 10.0)


def stats(errors: list[float]) -> dict[str, float | int | None]:
    if not errors:
        return {"n": 0, "median_abs": None, "mean_signed": None, "max_abs": None}
    e = np.asarray(errors)
    return {"n": len(e), "median_abs": round(float(np.median(np.abs(e))), 2),
            "mean_signed": round(float(e.mean()), 2), "max_abs": round(float(np.abs(e).max()), 2)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--seed", type=int, default=1, help="data set seed (held-out split)")
    ap.add_argument("--res", type=int, default=64, help="render resolution (the bundled model's data: 64)")
    ap.add_argument("--landmarks", type=int, default=5, choices=(5, 68))
    ap.add_argument("--refine", type=int, default=0, metavar="STEPS",
                    help="also run the pivot's joint camera refinement from the prior (bundled model)")
    ap.add_argument("--compare", action="store_true", help="also run the render-and-compare search (bundled model)")
    ap.add_argument("--model", default="aware3d-heads")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)

    import torch

    from backend.configs import get_config
    from backend.invert.face import FaceSettings
    from backend.invert.frontend import NoFaceError, prepare_photo
    from backend.invert.image import load_photo
    from train.synthetic import render, sample_head, sample_test_scene
    from train.synthetic.params import TEST_SPLIT

    torch.set_num_threads(1)
    cfg = get_config("aware3d-heads64")
    G = stats_w = None
    if args.refine or args.compare:
        from backend.invert.pose import PoseSettings, estimate_pose
        from backend.invert.project import ProjectSettings, latent_stats
        from backend.registry import load_generator

        G = load_generator(args.model, "cpu").generator
        cfg = G.cfg
        stats_w = latent_stats(G, 256)
    settings = FaceSettings(landmarks=args.landmarks)
    rows: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    for i in range(args.heads):
        head = sample_head(args.seed, i, TEST_SPLIT)
        scenes = [sample_test_scene(args.seed, i, y, p) for p in PITCHES for y in YAWS]
        images = render([head] * len(scenes), scenes, args.res).images
        for sc, img in zip(scenes, images):
            row: dict[str, Any] = {"head": i, "yaw": sc.yaw_deg, "pitch": sc.pitch_deg, "nod": head.head_nod_deg}
            t1 = time.perf_counter()
            try:
                fe = prepare_photo(load_photo(img, f"head{i}"), cfg, "auto", "heads", settings=settings)
            except NoFaceError:
                row["seconds"] = round(time.perf_counter() - t1, 2)
                row["detected"] = False
                rows.append(row)
                continue
            row["detected"] = True
            row["seconds"] = round(time.perf_counter() - t1, 2)
            row["confidence"] = round(fe.face.confidence, 3) if fe.face else None
            b = fe.framed.box
            cx, cy = b.centre
            half = args.res / 2
            row["crop"] = {"dx": round((cx - half) / args.res, 4), "dy": round((cy - half) / args.res, 4),
                           "size": round(b.size / args.res, 4), "angle": round(b.angle, 2)}
            if fe.prior is not None:
                row["prior"] = [round(fe.prior.yaw, 2), round(fe.prior.pitch, 2)]
            if G is not None and fe.prior is not None and args.refine:
                from backend.invert.project import project_latent

                ps = ProjectSettings(steps=args.refine)
                r = project_latent(G, fe.framed.image, fe.prior.yaw, fe.prior.pitch, ps, stats_w)
                row["refined"] = [round(r.yaw, 2), round(r.pitch, 2)]
            if G is not None and args.compare:
                t1 = time.perf_counter()
                est = estimate_pose(G, fe.framed.image, stats_w, PoseSettings())
                row["search"] = [round(est.yaw, 2), round(est.pitch, 2), round(time.perf_counter() - t1, 2)]
            rows.append(row)
        print(f"head {i + 1}/{args.heads}: {time.perf_counter() - t0:.0f} s", file=sys.stderr)

    found = [r for r in rows if r["detected"]]
    with_prior = [r for r in found if "prior" in r]
    report: dict[str, Any] = {
        "command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *(argv if argv is not None else sys.argv[1:])]),
        "what": "face front end on held-out synthetic heads (train.synthetic.render), bundled model's framing",
        "heads": args.heads, "seed": args.seed, "resolution": args.res, "landmarks": args.landmarks,
        "views": len(rows), "detected": len(found), "detection_rate": round(len(found) / max(1, len(rows)), 3),
        "detected_by_yaw": {f"{y:+g}": sum(r["detected"] for r in rows if r["yaw"] == y) for y in YAWS},
        "views_per_yaw": len(PITCHES) * args.heads,
        "prior": {"n": len(with_prior), "yaw": stats([r["prior"][0] - r["yaw"] for r in with_prior]),
                  "pitch": stats([r["prior"][1] - r["pitch"] for r in with_prior])},
        "crop": {"centre_offset_median": round(float(np.median([np.hypot(r["crop"]["dx"], r["crop"]["dy"])
                                                               for r in found])), 4) if found else None,
                 "size_median": round(float(np.median([r["crop"]["size"] for r in found])), 4) if found else None,
                 "angle_median_abs": round(float(np.median([abs(r["crop"]["angle"]) for r in found])), 2)
                 if found else None},
        "front_end_seconds_median": round(float(np.median([r["seconds"] for r in found])), 2) if found else None,
        "seconds": round(time.perf_counter() - t0, 1),
        "rows": rows,
    }
    for key, extra in (("refined", {"steps": args.refine}), ("search", {})):
        done = [r for r in found if key in r]
        if done:
            report[key] = {**extra, "n": len(done), "yaw": stats([r[key][0] - r["yaw"] for r in done]),
                           "pitch": stats([r[key][1] - r["pitch"] for r in done])}
            if key == "search":
                report[key]["seconds_median"] = round(float(np.median([r[key][2] for r in done])), 2)
    summary = {k: v for k, v in report.items() if k != "rows"}
    print(json.dumps(summary, indent=1))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
