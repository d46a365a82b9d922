# SPDX-License-Identifier: GPL-3.0-or-later
"""A head's files in real Blender (bpy 5.0.1): linked from ``avatars/`` by paths relative to the .blend, or
packed into it (images packed, the avatar in a Text), and switched both ways.

The scenario needs no backend: a head is a mesh with ``obj["aware3d"]["avatar"]`` (random bytes in an
``.avatar.safetensors``: only the bytes matter here) and a material with a packed image, as Photo to 3D and a
novel-view texture leave them. It checks that a packed head survives its avatars folder being deleted (the
avatar is written back byte-identical, checked, when a command asks for its path), that a linked head survives
its project folder being moved, that a head with no avatar anywhere gives one clear line, that Save As and Save
Copy keep linked paths right, and that the first save of a new file brings its avatars next to it.

Like tests/test_invert_blender.py, the scenario runs in a fresh Python process (this file is also the script:
``python tests/test_head_files_blender.py files ZIP TMP OUT.json``); the second runs Photo to 3D for real with the
tiny head model and the Pack preference in a saved .blend.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the scenario also runs as a script in Blender

from tests.support.blender_session import install_extension, photo_to_3d_setup, run_scenario
from tests.support.fake_layout import draw_panel

PKG = "bl_ext.user_default.aware3d"


def _head(bpy: Any, name: str, avatar: Path, data: bytes, job: Path) -> Any:
    """A head as Photo to 3D + a texture leave it: the avatar's path on the object, a packed image."""
    avatar.parent.mkdir(parents=True, exist_ok=True)
    avatar.write_bytes(data)
    me = bpy.data.meshes.new(name)
    me.from_pydata([(0, 0, 0), (1, 0, 0), (0, 1, 0)], [], [(0, 1, 2)])
    obj = bpy.data.objects.new(name, me)
    bpy.context.scene.collection.objects.link(obj)
    obj["aware3d"] = {"model": "head-tiny", "avatar": str(avatar)}
    src = bpy.data.images.new(f"{name} src", 4, 4)
    src.pixels.foreach_set([0.25, 0.5, 0.75, 1.0] * 16)
    job.mkdir(parents=True, exist_ok=True)
    src.filepath_raw, src.file_format = str(job / f"{name}.png"), "PNG"
    src.save()
    bpy.data.images.remove(src)
    img = bpy.data.images.load(str(job / f"{name}.png"), check_existing=False)
    img.name = f"A3D {name} baked"
    img.pack()
    (job / f"{name}.png").unlink()  # the job folder goes; the .blend keeps the pixels
    mat = bpy.data.materials.new(name)
    if mat.node_tree is None:
        mat.use_nodes = True
    mat.node_tree.nodes.new("ShaderNodeTexImage").image = img
    me.materials.append(mat)
    return obj


def _pixel(img: Any) -> list[float]:
    return [round(v, 3) for v in img.pixels[:4]]


def _draw(bpy: Any) -> list[str]:
    return draw_panel("VIEW3D_PT_aware3d_photo")


def scenario(zip_path: str, tmp: str) -> dict[str, Any]:
    import importlib

    import bpy

    install_extension(zip_path)
    api = importlib.import_module(f"{PKG}.api")
    storage = importlib.import_module(f"{PKG}.storage")
    prefs_mod = importlib.import_module(f"{PKG}.prefs")
    prefs = bpy.context.preferences.addons[PKG].preferences
    assert prefs.head_files == "LINK"  # the default
    root, job = Path(tmp), Path(tmp) / "job"
    data = os.urandom(300_000)
    out: dict[str, Any] = {}

    # 1. An unsaved file: the avatar lives in the extension's user folder; the first save brings it next to
    #    the .blend and stores it relative; images of a linked head then go to avatars/ too.
    user_avatar = prefs_mod.user_dir("avatars") / "me.avatar.safetensors"
    head = _head(bpy, "Head", user_avatar, data, job)
    storage.store_new_head(head)
    assert head["aware3d"]["storage"] == "LINK" and head["aware3d"]["avatar"] == str(user_avatar)
    img = head.data.materials[0].node_tree.nodes["Image Texture"].image
    assert img.packed_file is not None  # an unsaved file: no folder to link images from yet
    proj = root / "proj"
    blend = proj / "scene.blend"
    proj.mkdir()
    bpy.ops.wm.save_as_mainfile(filepath=str(blend))
    assert head["aware3d"]["avatar"] == "//avatars/me.avatar.safetensors", head["aware3d"]["avatar"]
    assert (proj / "avatars" / "me.avatar.safetensors").read_bytes() == data
    bpy.context.view_layer.objects.active = head
    bpy.ops.aware3d.unpack_head()  # now there is a folder: the packed image becomes a linked file
    assert img.packed_file is None and img.filepath.startswith("//avatars/"), img.filepath
    assert Path(bpy.path.abspath(img.filepath)).is_file()
    pixel = _pixel(img)
    calls = _draw(bpy)
    assert "prop:head_files" in calls and "op:aware3d.pack_head" in calls and "op:aware3d.unpack_head" in calls
    assert any(c.startswith("label:Avatar linked: //avatars/") for c in calls), calls
    bpy.ops.wm.save_mainfile()

    # 2. Link: moving the project folder keeps the head working.
    moved = root / "moved"
    shutil.move(str(proj), moved)
    bpy.ops.wm.open_mainfile(filepath=str(moved / "scene.blend"))
    head = bpy.data.objects["Head"]
    img = head.data.materials[0].node_tree.nodes["Image Texture"].image
    assert api.avatar_path(head) == str(moved / "avatars" / "me.avatar.safetensors")
    assert img.packed_file is None and _pixel(img) == pixel and img.has_data
    out["linked"] = {"avatar": head["aware3d"]["avatar"], "image": img.filepath}

    # 3. Save As to another folder and Save Copy: linked paths follow the file that is written.
    other = root / "elsewhere" / "deep"
    other.mkdir(parents=True)
    bpy.ops.wm.save_as_mainfile(filepath=str(other / "copy.blend"), copy=True)
    assert head["aware3d"]["avatar"] == "//avatars/me.avatar.safetensors"  # the open file did not move
    bpy.ops.wm.save_as_mainfile(filepath=str(other / "saved-as.blend"))
    assert head["aware3d"]["avatar"] == "//../../moved/avatars/me.avatar.safetensors", head["aware3d"]["avatar"]
    assert api.avatar_path(head) == str(moved / "avatars" / "me.avatar.safetensors")
    linked_image = Path(os.path.normpath(bpy.path.abspath(img.filepath)))  # Blender remapped the image's path
    assert linked_image == moved / "avatars" / "A3D_Head_baked.png" and linked_image.is_file(), img.filepath
    bpy.ops.wm.open_mainfile(filepath=str(other / "copy.blend"))
    assert bpy.data.objects["Head"]["aware3d"]["avatar"] == "//../../moved/avatars/me.avatar.safetensors"
    bpy.ops.wm.open_mainfile(filepath=str(moved / "scene.blend"))
    head = bpy.data.objects["Head"]

    # 4. Pack: avatar and image inside the .blend; the avatars folder can go.
    bpy.context.view_layer.objects.active = head
    assert bpy.ops.aware3d.pack_head() == {"FINISHED"}
    img = head.data.materials[0].node_tree.nodes["Image Texture"].image
    texts = [t.name for t in bpy.data.texts if t.name.startswith("Aware3D avatar")]
    assert head["aware3d"]["storage"] == "PACK" and img.packed_file is not None and len(texts) == 1, texts
    assert any(c.startswith("label:Avatar packed in the .blend") for c in _draw(bpy))
    bpy.ops.wm.save_mainfile()
    shutil.rmtree(moved / "avatars")
    sent = root / "sent"
    shutil.move(str(moved), sent)  # "another machine": a new place, no avatars folder
    bpy.ops.wm.open_mainfile(filepath=str(sent / "scene.blend"))
    head = bpy.data.objects["Head"]
    img = head.data.materials[0].node_tree.nodes["Image Texture"].image
    assert img.packed_file is not None and _pixel(img) == pixel
    restored = Path(api.avatar_path(head))  # written back from the .blend, checked
    assert restored == sent / "avatars" / "me.avatar.safetensors" and restored.read_bytes() == data
    assert head["aware3d"]["avatar"] == "//avatars/me.avatar.safetensors"
    out["restored"] = str(restored)

    # 5. A file with other bytes under that name is never overwritten: the packed copy wins, beside it.
    restored.write_bytes(b"not this avatar")
    again = Path(api.avatar_path(head))
    assert again.name == "me-1.avatar.safetensors" and again.read_bytes() == data
    assert restored.read_bytes() == b"not this avatar"

    # 6. A damaged packed copy and a missing avatar: one clear line each, never a traceback.
    shutil.rmtree(sent / "avatars")
    text = bpy.data.texts[texts[0]]
    original = text.as_string()
    lines = original.split("\n")
    lines[5] = lines[5][:-4] + ("AAAA" if not lines[5].endswith("AAAA") else "BBBB")
    text.from_string("\n".join(lines))
    try:
        api.avatar_path(head)
        raise AssertionError("expected AvatarDamaged")
    except api.BackendError as exc:
        assert exc.type == "AvatarDamaged" and "\n" not in str(exc), exc
        out["damaged"] = str(exc)
    assert not (sent / "avatars").exists() or not any((sent / "avatars").iterdir())  # nothing half-written
    text.from_string(original)

    # 7. Unpack: the avatar is written back, its Text removed, the image becomes a file; then back again.
    summary = api.unpack_head(head)
    assert head["aware3d"]["storage"] == "LINK" and "Aware3D avatar me.avatar.safetensors" not in bpy.data.texts
    assert (sent / "avatars" / "me.avatar.safetensors").read_bytes() == data and img.packed_file is None, summary
    assert img.filepath.startswith("//avatars/") and _pixel(img) == pixel
    out["unpack"] = summary
    out["pack"] = api.pack_head(head)
    assert img.packed_file is not None and len([t for t in bpy.data.texts if t.name.startswith("Aware3D")]) == 1
    api.unpack_head(head)

    # 8. Neither on disk nor packed: one line, from the API and from the operator.
    shutil.rmtree(sent / "avatars")
    try:
        api.avatar_path(head)
        raise AssertionError("expected AvatarMissing")
    except api.BackendError as exc:
        assert exc.type == "AvatarMissing" and "\n" not in str(exc), exc
        out["missing"] = str(exc)
    try:
        bpy.ops.aware3d.pack_head()
        raise AssertionError("expected the operator to fail")
    except RuntimeError as exc:  # an operator's ERROR report raises in background mode
        assert "is missing" in str(exc), exc
    assert head["aware3d"]["storage"] == "LINK"  # a failed pack changes nothing
    assert any(c.startswith("label:Avatar missing") for c in _draw(bpy))

    # 9. The Pack preference: a new head is packed at once.
    prefs.head_files = "PACK"
    second = _head(bpy, "Second", sent / "avatars" / "you.avatar.safetensors", data[::-1], job)
    storage.store_new_head(second)
    assert second["aware3d"]["storage"] == "PACK" and len(storage.head_images(second)) == 1
    assert storage.packed_text(second["aware3d"]["avatar_sha256"]) is not None
    bpy.ops.preferences.addon_disable(module=PKG)
    assert _on_save_handlers(bpy) == 0  # the save handlers went with the add-on
    return out


def scenario_photo(zip_path: str, tmp: str, photo: str) -> dict[str, Any]:
    """The real Photo to 3D flow with the Pack preference in a saved .blend: the head arrives packed, and after
    its avatars folder is deleted the reopened .blend gives the avatar back byte-identical."""
    import importlib

    import bpy

    install_extension(zip_path)
    api = importlib.import_module(f"{PKG}.api")
    panel = importlib.import_module(f"{PKG}.panel_invert")
    bpy.context.preferences.addons[PKG].preferences.head_files = "PACK"
    bpy.context.scene.aware3d.model = "head-tiny"
    proj = Path(tmp) / "photo"
    proj.mkdir()
    bpy.ops.wm.save_as_mainfile(filepath=str(proj / "scene.blend"))
    obj = panel.invert(photo, preset="fast", mode="single-view", pose=[0.0, 0.0], encoder="none",
                       resolution=48, faces=2000)
    m = obj["aware3d"]
    assert m["storage"] == "PACK" and m["avatar"] == "//avatars/person.avatar.safetensors", dict(m)
    data = (proj / "avatars" / "person.avatar.safetensors").read_bytes()
    texts = [t.name for t in bpy.data.texts if t.name.startswith("Aware3D avatar")]
    assert texts == ["Aware3D avatar person.avatar.safetensors"], texts
    status = bpy.context.window_manager.aware3d.last_result
    assert "; avatar saved next to the .blend: " in status and status.endswith("(packed into the .blend)"), status
    name = obj.name
    bpy.ops.wm.save_mainfile()
    api.free()
    shutil.rmtree(proj / "avatars")
    bpy.ops.wm.open_mainfile(filepath=str(proj / "scene.blend"))
    restored = Path(api.avatar_path(bpy.data.objects[name]))
    assert restored == proj / "avatars" / "person.avatar.safetensors" and restored.read_bytes() == data
    return {"status": status, "avatar_bytes": len(data), "texts": texts}


def _on_save_handlers(bpy: Any) -> int:
    return sum(1 for h in (*bpy.app.handlers.save_pre, *bpy.app.handlers.save_post)
               if getattr(h, "__module__", "").startswith(PKG))


if __name__ != "__main__":
    import pytest

    pytestmark = pytest.mark.blender

    def test_head_files_link_pack_and_switch(tmp_path: Path) -> None:
        from backend.cli.extension_cmd import build

        zip_path = build(tmp_path / "ext", with_models=False)
        work = tmp_path / "work"
        work.mkdir()
        out = json.loads(run_scenario(__file__, ["files", str(zip_path), str(work)], tmp_path,
                                      tmp_path / "models"))
        print(json.dumps(out, indent=2))
        assert out["linked"]["avatar"] == "//avatars/me.avatar.safetensors"

    def test_photo_to_3d_head_packed(tmp_path: Path) -> None:
        zip_path, models, photo = photo_to_3d_setup(tmp_path)
        work = tmp_path / "work"
        work.mkdir()
        out = json.loads(run_scenario(__file__, ["photo", str(zip_path), str(work), str(photo)], tmp_path, models))
        print(json.dumps(out, indent=2))
        assert out["avatar_bytes"] > 0
else:
    _name, *_args, _out = sys.argv[1:]
    result = {"files": scenario, "photo": scenario_photo}[_name](*_args)
    Path(_out).write_text(json.dumps(result, indent=2, default=str))
