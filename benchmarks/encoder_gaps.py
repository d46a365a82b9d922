# SPDX-License-Identifier: GPL-3.0-or-later
"""Where a photo encoder of head latents loses: its latent against the truth, one group of coordinates at a time.

    python benchmarks/encoder_gaps.py --encoder assets/models/aware3d-encoder64.safetensors \
        --model assets/models/aware3d-heads.safetensors --test-data data/heads64v2_test.zip --heads 16 \
        --framing-heads 6 --out benchmarks/results/encoder_gaps_cpu.json

For each held-out head (``--test-data``, a ``make-dataset --test-heads`` zip with latents), the frontal view is
the photo. The model renders, at the true camera, yaw ±30° from the input, and the PSNR against the true views
is averaged (the inversion benchmark's ±30° measure, without pose error):

* ``encoder``: the encoder's latent for the unframed photo; ``own_latent``: the head's identifiable latent
  (the ceiling); ``median_head``: z = 0; ``encoder_params``: the encoder's latent through its head parameters
  and back (what every swap below starts from; it differs from ``encoder`` where a value lies beyond its
  clipping bound);
* ``encoder+GROUP``: the encoder's head with one group of its parameters (the discrete choices with the sizes
  that belong to them, the colours, the backdrop colours, skin, hair colour, clothes, lighting, face shape)
  replaced by the truth's,
  in parameter space (a choice keeps its meaning whatever the other coordinates): what reading that group
  right is worth.

With ``--framing-heads K`` (the face extra installed) the first K heads are also framed by the face front end as
``aware3d invert`` frames a photo: ``framed`` is the encoder's latent for the framed photo, ``framed+roll`` and
``framed+roll+size`` with the head's true roll and size put back — the front end levels the eyes and sizes the
crop by the landmarks, which removes what the synthetic heads vary there.

Why: an encoder's one number (PSNR at ±30°) does not say what to train next; this does (docs/invert.md).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from backend.invert.geometry import orbit_labels
from backend.invert.losses import downsample, psnr
from backend.invert.render import render_views
from benchmarks.record import Run

FACE = ("masculinity", "head_scale", "face_width", "face_length", "jaw_width", "chin_size", "cheek_fullness",
        "brow_ridge", "eye_size", "eye_spacing", "nose_length", "nose_width", "nose_projection", "mouth_width",
        "lip_thickness", "smile", "ear_size", "ear_angle_deg", "neck_width", "shoulder_width", "head_roll_deg",
        "head_nod_deg", "brow_thickness")
# Groups of head parameters (HeadParams fields; "scene." for SceneParams), swapped in parameter space so that a
# choice keeps its meaning whatever the other coordinates (hair style's bins move with masculinity, a hair
# volume is measured from its style's base).
GROUPS: dict[str, tuple[str, ...]] = {
    # a style's own sizes go with it (a hair length or volume is measured from its style's base), and a colour
    # choice with its colour (the colour is stored as a jitter around the choice's)
    "choices": ("hair_style", "hair_volume", "hair_length", "fringe", "glasses", "hat", "beard", "beard_length",
                "scene.plain"),
    "eye_colour": ("iris_colour", "iris_rgb"),
    "backdrop": ("scene.bg_top", "scene.bg_bottom"),
    "skin": ("skin_tone", "skin_rgb", "lip_dark", "lip_rgb"),
    "hair_colour": ("hair_colour", "hair_rgb"),
    "clothes": ("clothes_rgb", "neckline"),
    "lighting": ("scene.light_dir", "scene.light_rgb", "scene.key", "scene.ambient"),
    "face_shape": FACE,
}
COLOURS = (*GROUPS["backdrop"], *GROUPS["skin"], *GROUPS["hair_colour"], *GROUPS["clothes"], *GROUPS["lighting"],
           "iris_colour", "iris_rgb", "glasses_base", "glasses_rgb", "hat_rgb")
OFFSETS = (-30.0, 30.0)


def main(argv: list[str] | None = None) -> int:
    record = Run(__file__, argv)
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--encoder", required=True, help="an encoder of head latents (.safetensors)")
    p.add_argument("--model", default="assets/models/aware3d-heads.safetensors",
                   help="a model that takes head latents (default: the bundled aware3d-heads)")
    p.add_argument("--test-data", default="data/heads64v2_test.zip")
    p.add_argument("--heads", type=int, default=16)
    p.add_argument("--framing-heads", type=int, default=0, help="also frame the first K heads (face extra)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    from backend.checkpoints.model_file import file_sha256
    from backend.config import takes_head_latents
    from backend.invert.encoder import load_encoder
    from backend.registry import load_generator
    from train.data.zip_dataset import ZipDataset
    from train.encoder.data import identifiable_latents
    from train.synthetic.latent import INDEX, LATENT_DIMS, head_from_latent, latent_from_params, lighting_from_latent

    G = load_generator(args.model).generator
    if not takes_head_latents(G.cfg):
        print(f"error: {args.model} does not take head latents (a distilled model is needed)", file=sys.stderr)
        return 2
    enc = load_encoder(args.encoder)
    ds = ZipDataset(args.test_data, extras=True)
    heads = ds.test_heads[: args.heads]

    def ws_of(z: np.ndarray) -> torch.Tensor:
        full = torch.zeros(1, G.cfg.z_dim)
        full[0, :LATENT_DIMS] = torch.as_tensor(z[:LATENT_DIMS], dtype=torch.float32)
        with torch.no_grad():
            return G.mapping(full, torch.zeros(1, G.cfg.c_dim))

    def pm30(head: int, z: np.ndarray) -> float:
        ws, scores = ws_of(z), []
        for dy in OFFSETS:
            truth = ds[ds.test_view(head, dy, 0.0)]["image"][None].float() / 127.5 - 1
            img = render_views(G, ws, orbit_labels(G.cfg, dy, 0.0), grad=False, exact=True)["image"]
            scores.append(psnr(img, downsample(truth, img.shape[-1])))
        return float(np.mean(scores))

    def swapped(z: np.ndarray, truth: np.ndarray, fields: tuple[str, ...]) -> np.ndarray:
        """The latent of z's head and lighting with ``fields`` taken from the truth's."""
        head, scene = head_from_latent(z), lighting_from_latent(z)
        true_head, true_scene = head_from_latent(truth), lighting_from_latent(truth)
        for f in fields:
            if f == "scene.plain":  # a plain backdrop is bottom = top
                plain = true_scene.bg_bottom == true_scene.bg_top
                scene.bg_bottom = scene.bg_top if plain else (true_scene.bg_bottom if scene.bg_bottom == scene.bg_top
                                                              else scene.bg_bottom)
            elif f.startswith("scene."):
                setattr(scene, f[6:], getattr(true_scene, f[6:]))
            else:
                setattr(head, f, getattr(true_head, f))
        return latent_from_params(head, scene)

    def encode(image: torch.Tensor) -> np.ndarray:
        with torch.no_grad():
            return enc(image)[0][0].double().numpy()

    t0 = time.perf_counter()
    rows: list[dict[str, Any]] = []
    for k, h in enumerate(heads):
        view = ds.test_view(h, 0.0, 0.0)
        truth = identifiable_latents(np.asarray(ds.params(view)["latent"], dtype=np.float64)[None])[0]
        photo = ds[view]["image"][None].float() / 127.5 - 1
        z = encode(photo)
        row: dict[str, Any] = {"head": h, "own_latent": pm30(h, truth), "encoder": pm30(h, z),
                               "median_head": pm30(h, np.zeros(LATENT_DIMS)),
                               "encoder_params": pm30(h, swapped(z, truth, ()))}
        for name, fields in (*GROUPS.items(), ("colours", COLOURS)):
            row[f"encoder+{name}"] = pm30(h, swapped(z, truth, fields))
        if k < args.framing_heads:
            from benchmarks.inversion import frame_input

            framed, info, _ = frame_input(G, photo, f"head{h}")
            zf = encode(framed)
            row["framed"] = pm30(h, zf)
            zf[INDEX["head_roll_deg"]] = truth[INDEX["head_roll_deg"]]
            row["framed+roll"] = pm30(h, zf)
            zf[INDEX["head_scale"]] = truth[INDEX["head_scale"]]
            row["framed+roll+size"] = pm30(h, zf)
            row["crop"] = {"box": info["crop"], "angle_deg": info["crop_angle_deg"]}
        rows.append({k2: round(v, 3) if isinstance(v, float) else v for k2, v in row.items()})
        print(f"head {h} ({k + 1}/{len(heads)}): encoder {row['encoder']:.2f} dB, own latent "
              f"{row['own_latent']:.2f} dB", file=sys.stderr, flush=True)

    keys = [key for key in rows[0] if key not in ("head", "crop")]
    summary: dict[str, Any] = {}
    for key in keys:
        values = [r[key] for r in rows if key in r]
        summary[key] = {"mean": round(float(np.mean(values)), 3), "n": len(values)}
    base = summary["encoder_params"]["mean"]  # the same round trip through the parameters as every swap
    summary["gain_over_encoder_db"] = {key[len("encoder+"):]: round(summary[key]["mean"] - base, 3)
                                       for key in keys if key.startswith("encoder+")}
    if args.framing_heads:
        same = [r for r in rows if "framed" in r]
        summary["framing"] = {"heads": len(same),
                              "unframed": round(float(np.mean([r["encoder"] for r in same])), 3),
                              **{key: round(float(np.mean([r[key] for r in same])), 3)
                                 for key in ("framed", "framed+roll", "framed+roll+size")}}
    result = {"benchmark": "where a head-latent encoder loses, PSNR at ±30° (benchmarks/encoder_gaps.py)",
              "encoder": {"path": args.encoder, "sha256": file_sha256(args.encoder)},
              "model": {"path": args.model, "sha256": file_sha256(args.model), "config": G.cfg.name},
              "test_data": args.test_data, "heads": heads, "groups": {**GROUPS, "colours": COLOURS},
              "summary": summary, "per_head": rows, "wall_s": round(time.perf_counter() - t0, 1),
              "notes": "PSNR of the 64² render against the true view at yaw ±30° from a frontal photo, at the true "
                       "camera (no pose error), averaged over both sides; 'encoder+G' is the encoder's head with the "
                       "parameters of group G (see groups) taken from the truth's."}
    result = record.finish(result, args.out)
    print(json.dumps(result["summary"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
