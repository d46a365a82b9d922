# SPDX-License-Identifier: GPL-3.0-or-later
"""The Photo to 3D panel with a photo encoder, in real Blender (bpy 5.0.1): the preview's pose is the
encoder's, the encoder's head appears in the scene before the refinement ends, the refined head replaces it
where the user moved it, and a cancelled refinement keeps the encoder's head.

Like tests/test_invert_blender.py the scenario runs in a fresh Python process (this file is also the script:
``python tests/test_invert_encoder_blender.py ZIP PHOTO OUT.json``); the models folder holds a distilled head
model and a tiny encoder made for it (tests/support/encoder_models.py).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the scenario also runs as a script in Blender

from tests.support.blender_session import install_extension, pump_until, run_scenario
from tests.support.fake_layout import draw_panel

PKG = "bl_ext.user_default.aware3d"
MODEL = "head-tiny-distilled"
ENCODER = "enc-heads"
QUICK = {"steps_project": 4, "steps_stage2": 3, "views": 2}


def _draw(bpy: Any) -> list[str]:
    return draw_panel("VIEW3D_PT_aware3d_photo")


def _heads(bpy: Any) -> list[str]:
    return sorted(o.name for o in bpy.data.objects if o.type == "MESH")


def scenario(zip_path: str, photo: str) -> dict[str, Any]:
    import importlib

    import bpy

    install_extension(zip_path)
    panel = importlib.import_module(f"{PKG}.panel_invert")
    session = importlib.import_module(f"{PKG}.session")
    out: dict[str, Any] = {}
    scene, wm = bpy.context.scene, bpy.context.window_manager
    s, st = scene.aware3d_invert, wm.aware3d_invert
    scene.aware3d.model = MODEL
    s.filepath, s.preset, s.resolution, s.faces = photo, "FAST", 64, 3000
    assert s.use_encoder and s.refine == "FAST"  # the defaults
    calls = _draw(bpy)
    assert "prop:use_encoder" in calls and "prop:refine" in calls
    s.use_encoder = False
    assert "prop:refine" not in _draw(bpy)
    s.use_encoder = True

    # 1. The preview's pose is the encoder's (immediate: no search).
    assert bpy.ops.aware3d.invert_preview() == {"FINISHED"}
    assert st.pose_text.startswith("Pose (encoder)"), st.pose_text
    assert st.encoder_text.startswith(f"Encoder {ENCODER}"), st.encoder_text
    out["preview"] = {"pose": st.pose_text, "encoder": st.encoder_text}
    shown = bpy.data.images[panel.PREVIEW_IMAGE]
    assert shown.packed_file is not None and shown.size[0] > 0  # kept in the .blend
    jobs = importlib.import_module(f"{PKG}.prefs").user_dir("jobs")
    assert not [p for p in jobs.iterdir() if p.is_dir() and p.name != "remote"]  # its job folder is gone

    # 2. The encoder's head first, then the refined head in its place (where the user moved it).
    before = _heads(bpy)
    fut = panel.invert_async(**QUICK)
    pump_until(session, lambda: fut.first_object is not None or fut.done(), timeout=600)
    first = fut.first_object
    assert first is not None and not fut.done(), "the encoder's head should arrive before the refined one"
    assert first["aware3d"]["refine"] == "none (first head)" and Path(first["aware3d"]["avatar"]).is_file()
    assert len(first.data.vertices) > 100 and [c.type for c in first.children] == ["CAMERA"]
    assert st.metrics_text.startswith("First head: PSNR") and "refining" in st.metrics_text
    first_name, first_avatar = first.name, first["aware3d"]["avatar"]
    first.location = (2.0, 0.0, 0.0)  # the user moves it while the refinement runs
    obj = fut.result(600)
    assert fut.first_object is None and obj.name == first_name  # replaced, under the same name
    assert obj["aware3d"]["refine"] == "fast" and obj["aware3d"]["avatar"] != first_avatar
    assert tuple(round(v, 4) for v in obj.location) == (2.0, 0.0, 0.0)
    lowest = min((obj.matrix_world @ v.co).z for v in obj.data.vertices)
    assert abs(lowest) <= 1e-3, lowest  # a head from a photo also stands where its origin is (default)
    assert _heads(bpy) == sorted([*before, obj.name]), _heads(bpy)
    assert [c.parent.name for c in bpy.data.objects if c.type == "CAMERA" and c.parent] == [obj.name]
    assert st.metrics_text.startswith("Photo view: PSNR") and st.encoder_text == f"Encoder {ENCODER}: refine fast"
    out["replaced"] = {"name": obj.name, "vertices": len(obj.data.vertices)}

    # 3. Cancel the refinement: the encoder's head stays, with its avatar.
    fut = panel.invert_async(name="Kept", preset="default", refine="full")
    pump_until(session, lambda: fut.first_object is not None or fut.done(), timeout=600)
    assert fut.first_object is not None
    fut.cancel()
    pump_until(session, fut.done)
    kept = bpy.data.objects.get("Kept")
    assert fut.handle.state == "cancelled" and kept is not None and Path(kept["aware3d"]["avatar"]).is_file()
    assert "Kept: the encoder's head (refinement cancelled)" in wm.aware3d.last_result
    out["cancelled"] = {"kept": kept.name}

    heavy = sorted(m for m in sys.modules if m == "torch" or m.startswith(("torch.", "backend")))
    assert not heavy, heavy[:5]
    session.free()
    bpy.ops.preferences.addon_disable(module=PKG)
    return out


if __name__ != "__main__":
    import pytest

    pytestmark = [pytest.mark.blender, pytest.mark.slow]

    def test_photo_panel_shows_the_encoders_head_then_the_refined_one(tmp_path: Path) -> None:
        from backend.cli.extension_cmd import build
        from backend.invert.demo_photo import write_photo
        from backend.registry import load_generator
        from tests.support.encoder_models import distilled_head_model, tiny_encoder

        models = tmp_path / "models"
        dist = distilled_head_model(models)
        tiny_encoder(models / f"{ENCODER}.safetensors", load_generator(str(dist)).generator, MODEL, pose=(5.0, 0.0))
        zip_path = build(tmp_path / "ext", with_models=False)
        photo = write_photo(tmp_path / "person.jpg")
        print(run_scenario(__file__, [str(zip_path), str(photo)], tmp_path, models))
else:
    result = scenario(sys.argv[1], sys.argv[2])
    Path(sys.argv[3]).write_text(json.dumps(result, indent=2, default=str))
