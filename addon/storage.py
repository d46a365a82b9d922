# SPDX-License-Identifier: GPL-3.0-or-later
"""Where a head's files live: linked from the avatars folder, or packed into the .blend.

A Photo to 3D head needs files that Blender does not own: its avatar (``NAME.avatar.safetensors``; later
commands read it by the path in ``obj["aware3d"]["avatar"]``, through :func:`avatar_path`) and the images its
materials use (novel-view textures). The **Head files** preference picks how a new head keeps them, and the
Pack / Unpack operators (``api.pack_head`` / ``api.unpack_head``) switch an existing head:

* **Link** (default): files in the avatars folder (``prefs.avatars_dir``: ``avatars/`` next to the .blend);
  the head stores their paths relative to the .blend (``//avatars/...``) once it is saved, so moving the
  project folder keeps working. The save handlers keep those paths right when Save As moves the .blend, and
  the first save of a new file copies its avatars from the extension's user folder to ``avatars/`` next to it.
  Texture images are written there too, but only once the .blend is saved (an unsaved file has no folder to
  be relative to: its images stay packed until then, or until Unpack).
* **Pack**: everything inside the .blend. Images are packed (``Image.pack``). Blender cannot pack an
  arbitrary file, so the avatar goes into a Text datablock: a header line (``# aware3d-avatar {json}``, naming
  the file, its size and SHA-256) and the bytes in base64, 76 characters a line. The file on disk is then a
  cache: when a command needs the avatar and the file is missing (the .blend was sent elsewhere),
  :func:`avatar_path` writes it back to the avatars folder, checks its size and hash, and returns it.

Why a Text, not a bytes custom property: a user sees it (Text editor, Outliner, Blender File view), knows
what makes the .blend bigger and can delete it, and its header says what it is without decoding it. A head
finds its Text by the avatar's SHA-256 (``obj["aware3d"]["avatar_sha256"]``), not by name, so renaming
either breaks nothing and heads sharing one avatar share one Text. A Text has a fake user (it is kept with
no head using it): deleting a packed head leaves its Text until the user deletes it.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import bpy
from bpy.app.handlers import persistent

from . import prefs
from .client import BackendError

LINK, PACK = prefs.HEAD_LINK, prefs.HEAD_PACK
META = "aware3d"
HEADER = "# aware3d-avatar "
TEXT_PREFIX = "Aware3D avatar "
AVATAR_SUFFIX = ".avatar.safetensors"
FORMAT = 1


# ----------------------------------------------------------------------------------------------------------
# Paths
# ----------------------------------------------------------------------------------------------------------


def meta(obj: bpy.types.Object | None) -> Any:
    """The head's ``obj["aware3d"]`` group, or None (also for a value that is not a group)."""
    m = obj.get(META) if obj is not None else None
    return m if hasattr(m, "keys") else None


def has_avatar(obj: bpy.types.Object | None) -> bool:
    m = meta(obj)
    return m is not None and bool(m.get("avatar"))


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_digest(path: Path) -> tuple[int, str]:
    """(size, SHA-256) of a file, read in chunks."""
    h, n = hashlib.sha256(), 0
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
            n += len(chunk)
    return n, h.hexdigest()


def stored_path(path: Path | str, blend: str | None = None) -> str:
    """How a head stores a file's path: relative to the .blend (``//avatars/x``) when it has one (``blend``,
    default the open file's path), else absolute (also for a file on another drive)."""
    blend = bpy.data.filepath if blend is None else blend
    p = os.path.abspath(str(path))
    if not blend:
        return p
    try:
        rel = os.path.relpath(p, os.path.dirname(os.path.abspath(blend)))
    except ValueError:  # another drive (Windows): no relative path exists
        return p
    return "//" + rel.replace(os.sep, "/")


def absolute(path: str, blend: str | None = None) -> Path:
    """A stored path as an absolute one (``//`` is the folder of ``blend``, default the open file)."""
    blend = bpy.data.filepath if blend is None else blend
    if path.startswith("//"):
        base = os.path.dirname(os.path.abspath(blend)) if blend else ""
        return Path(os.path.normpath(os.path.join(base, path[2:])))
    return Path(path)


def unique_path(folder: Path, name: str, data: bytes | None = None) -> Path:
    """``folder/name``, else ``stem-1.suffix``, ``stem-2.suffix``… (the suffix is everything after the first
    dot, so ``me.avatar.safetensors`` becomes ``me-1.avatar.safetensors``). With ``data``, an existing file
    holding exactly those bytes is returned instead of a new name."""
    stem, dot, suffix = name.partition(".")
    dest, n = folder / name, 1
    while dest.exists():
        if data is not None and dest.is_file() and dest.stat().st_size == len(data) and dest.read_bytes() == data:
            return dest
        dest, n = folder / f"{stem}-{n}{dot}{suffix}", n + 1
    return dest


# ----------------------------------------------------------------------------------------------------------
# The avatar: a file, or a Text datablock in the .blend
# ----------------------------------------------------------------------------------------------------------


def text_header(text: bpy.types.Text) -> dict[str, Any] | None:
    """The header of a packed avatar Text (its first line), or None for any other Text."""
    if not len(text.lines):
        return None
    line = text.lines[0].body
    if not line.startswith(HEADER):
        return None
    try:
        head = json.loads(line[len(HEADER):])
    except ValueError:
        return None
    ok = isinstance(head, dict) and isinstance(head.get("sha256"), str) and isinstance(head.get("size"), int)
    return head if ok else None


def packed_text(sha256: str | None) -> bpy.types.Text | None:
    """The Text holding the avatar with this SHA-256, or None."""
    if not sha256:
        return None
    for text in bpy.data.texts:
        head = text_header(text)
        if head is not None and head["sha256"] == sha256:
            return text
    return None


def pack_bytes(name: str, data: bytes) -> bpy.types.Text:
    """A Text holding ``data`` (the avatar file ``name``), or the one already holding the same bytes."""
    sha = digest(data)
    text = packed_text(sha)
    if text is not None:
        return text
    head = {"format": FORMAT, "name": name, "size": len(data), "sha256": sha}
    text = bpy.data.texts.new(f"{TEXT_PREFIX}{name}"[:63])
    text.from_string(HEADER + json.dumps(head) + "\n" + base64.encodebytes(data).decode("ascii"))
    text.use_fake_user = True  # kept by the .blend whether or not a head refers to it
    return text


def read_packed(text: bpy.types.Text) -> tuple[dict[str, Any], bytes]:
    """The header and bytes of a packed avatar, checked against the header's size and SHA-256."""
    head = text_header(text)
    damaged = BackendError("AvatarDamaged", f"the packed avatar in the text {text.name!r} is damaged",
                           "pack the head again from its avatar file, or run Photo to 3D again")
    if head is None:
        raise damaged
    try:
        data = base64.b64decode(text.as_string().split("\n", 1)[1])
    except (IndexError, binascii.Error, ValueError):
        raise damaged from None
    if len(data) != head["size"] or digest(data) != head["sha256"]:
        raise damaged
    return head, data


def _avatar_name(name: str) -> str:
    """A safe file name for a restored avatar (a header's name is only a suggestion)."""
    base = Path(str(name)).name
    stem = "".join(c if c.isalnum() or c in "-_" else "_" for c in base.split(".")[0])[:60] or "avatar"
    return stem + AVATAR_SUFFIX


def restore_avatar(obj: bpy.types.Object, text: bpy.types.Text) -> Path:
    """Write a packed avatar back to the avatars folder (to a part file, checked for size and SHA-256, then
    renamed), point the head at it and return its path. An existing file with other bytes is never
    overwritten: the restored one takes the next free name."""
    head, data = read_packed(text)
    folder, _ = prefs.avatars_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        dest = unique_path(folder, _avatar_name(head.get("name", "")), data)
        if not dest.is_file():
            part = dest.with_name(dest.name + ".part")
            part.write_bytes(data)
            if file_digest(part) != (head["size"], head["sha256"]):
                part.unlink(missing_ok=True)
                raise BackendError("AvatarRestoreFailed", f"the avatar written to {part} does not match the "
                                   "packed one (size or SHA-256)", "check the disk, then try again")
            os.replace(part, dest)
    except OSError as exc:
        raise BackendError("AvatarRestoreFailed", f"could not write the packed avatar to {folder}: {exc}",
                           "choose a writable Avatars folder in the add-on preferences") from None
    meta(obj)["avatar"] = stored_path(dest)
    return dest


def avatar_path(obj: bpy.types.Object) -> Path:
    """The avatar file a command reads for ``obj``: its linked file; else (missing, or other bytes than the
    packed copy) the packed copy written back to the avatars folder, checked. Raises one clear
    :class:`BackendError` when it is neither on disk nor packed in this .blend."""
    m = meta(obj)
    if m is None or not m.get("avatar"):
        raise BackendError("NoAvatar", f"{obj.name!r} has no avatar", "make a head from a photo (Photo to 3D)")
    path = absolute(str(m["avatar"]))
    sha = m.get("avatar_sha256")
    text = packed_text(sha)
    if path.is_file() and (text is None or file_digest(path)[1] == sha):
        return path
    if text is None:
        raise BackendError("AvatarMissing", f"the avatar of {obj.name!r} is missing: {path} does not exist and "
                           "this .blend holds no packed copy",
                           "copy the avatars folder next to the .blend, or pack heads before sending a .blend")
    return restore_avatar(obj, text)


def pack_avatar(obj: bpy.types.Object) -> bpy.types.Text:
    """Put the head's avatar into the .blend (a Text; the one already there if the same bytes are)."""
    path = avatar_path(obj)
    data = path.read_bytes()
    text = pack_bytes(path.name, data)
    m = meta(obj)
    m["avatar"], m["avatar_sha256"] = stored_path(path), digest(data)
    return text


def unpack_avatar(obj: bpy.types.Object) -> Path:
    """Make the head's avatar a linked file again (written back when missing) and remove its Text unless
    another packed head uses it."""
    path = avatar_path(obj)
    m = meta(obj)
    m["avatar"] = stored_path(path)
    sha = m.get("avatar_sha256") or file_digest(path)[1]
    m["avatar_sha256"] = sha
    text = packed_text(sha)
    users = [o for o in bpy.data.objects if o != obj and storage_of(o) == PACK
             and meta(o).get("avatar_sha256") == sha]
    if text is not None and not users:
        bpy.data.texts.remove(text)
    return path


# ----------------------------------------------------------------------------------------------------------
# Images of the head's materials
# ----------------------------------------------------------------------------------------------------------


def head_images(obj: bpy.types.Object) -> list[bpy.types.Image]:
    """The file images of the object's materials' image nodes (local ones; not generated or library images)."""
    out: list[bpy.types.Image] = []
    for slot in obj.material_slots:
        mat = slot.material
        if mat is None or mat.node_tree is None:
            continue
        for node in mat.node_tree.nodes:
            img = getattr(node, "image", None) if node.type == "TEX_IMAGE" else None
            if img is not None and img not in out and img.source == "FILE" and img.library is None:
                out.append(img)
    return out


def pack_images(obj: bpy.types.Object) -> tuple[int, list[str]]:
    """Pack the head's linked images; returns (how many, the names of those whose file is missing)."""
    packed, missing = 0, []
    for img in head_images(obj):
        if img.packed_file is not None:
            continue
        if not Path(bpy.path.abspath(img.filepath)).is_file():
            missing.append(img.name)
            continue
        img.pack()
        packed += 1
    return packed, missing


def _image_suffix(data: bytes, img: bpy.types.Image) -> str:
    for magic, suffix in ((b"\x89PNG", ".png"), (b"\xff\xd8", ".jpg"), (b"\x76\x2f\x31\x01", ".exr")):
        if data.startswith(magic):
            return suffix
    return Path(img.filepath).suffix or ".png"


def unpack_images(obj: bpy.types.Object, folder: Path) -> int:
    """Write the head's packed images into ``folder`` (an identical file there is reused) and link them by
    :func:`stored_path`; returns how many."""
    n = 0
    for img in head_images(obj):
        pf = img.packed_file
        if pf is None:
            continue
        data = bytes(pf.data)
        folder.mkdir(parents=True, exist_ok=True)
        name = "".join(c if c.isalnum() or c in "-_" else "_" for c in img.name)[:60] or "image"
        dest = unique_path(folder, name + _image_suffix(data, img), data)
        if not dest.is_file():
            dest.write_bytes(data)
        img.unpack(method="REMOVE")  # drop the packed copy, keep the pixels in memory
        img.filepath = stored_path(dest)
        img.reload()
        n += 1
    return n


# ----------------------------------------------------------------------------------------------------------
# A head's storage
# ----------------------------------------------------------------------------------------------------------


def storage_of(obj: bpy.types.Object | None) -> str:
    """The head's recorded storage (``LINK``/``PACK``), or "" for a mesh the add-on never stored."""
    m = meta(obj)
    return str(m.get("storage", "")) if m is not None else ""


def _ensure_meta(obj: bpy.types.Object) -> Any:
    if meta(obj) is None:
        obj[META] = {}
    return meta(obj)


def pack_head(obj: bpy.types.Object) -> str:
    """Everything the head needs into the .blend: its avatar (a Text) and its images. Returns what was done,
    in words. Nothing changes when the avatar can be found nowhere (the error says so)."""
    parts = []
    if has_avatar(obj):
        text = pack_avatar(obj)
        parts.append(f"avatar in the text {text.name!r}")
    n, missing = pack_images(obj)
    if n:
        parts.append(f"{n} image(s)")
    _ensure_meta(obj)["storage"] = PACK
    note = f"; missing image file(s): {', '.join(missing)}" if missing else ""
    return f"{obj.name}: packed " + (", ".join(parts) or "nothing new") + note


def link_folder() -> Path | None:
    """Where Link writes images: the avatars folder when it is relative to a saved .blend or chosen by the
    user; None for an unsaved .blend without a chosen folder (its images stay packed until it is saved)."""
    folder, where = prefs.avatars_dir()
    return folder if bpy.data.filepath or "preference" in where else None


def unpack_head(obj: bpy.types.Object) -> str:
    """The head's files as linked files: the avatar (written back from the .blend when missing) and its packed
    images, in the avatars folder (:func:`link_folder`; an unsaved .blend's images stay packed until it is
    saved). Returns what was done, in words."""
    parts = []
    if has_avatar(obj):
        parts.append(f"avatar {stored_path(unpack_avatar(obj))}")
    folder = link_folder()
    n = unpack_images(obj, folder) if folder is not None else 0
    if n:
        parts.append(f"{n} image(s) in {folder}")
    elif folder is None and any(img.packed_file is not None for img in head_images(obj)):
        parts.append("images stay packed until the .blend is saved")
    _ensure_meta(obj)["storage"] = LINK
    return f"{obj.name}: linked " + (", ".join(parts) or "nothing new")


def store_new_head(obj: bpy.types.Object, mode: str | None = None) -> str:
    """Keep a newly made head's files as the Head files preference (or ``mode``) says: packed, or linked
    (images written out only once there is a folder for them, see :func:`link_folder`)."""
    mode = mode or prefs.head_files()
    return pack_head(obj) if mode == PACK else unpack_head(obj)


def store_new_images(obj: bpy.types.Object) -> int:
    """After a texture landed on a linked head: write its (packed) images out, when there is a folder."""
    if storage_of(obj) != LINK:
        return 0
    folder = link_folder()
    return unpack_images(obj, folder) if folder is not None else 0


def describe(obj: bpy.types.Object) -> str:
    """The head's storage in a few words, for the panel (cheap: no hashing)."""
    m = meta(obj)
    if m is None or not m.get("avatar"):
        return ""
    path = absolute(str(m["avatar"]))
    packed = packed_text(m.get("avatar_sha256")) is not None
    if storage_of(obj) == PACK and packed:
        return f"Avatar packed in the .blend ({path.name})"
    if path.is_file():
        return f"Avatar linked: {m['avatar']}"
    return f"Avatar packed, written back when needed ({path.name})" if packed else f"Avatar missing: {path}"


# ----------------------------------------------------------------------------------------------------------
# Keeping linked paths right across saves
# ----------------------------------------------------------------------------------------------------------


def _linked_heads() -> list[bpy.types.Object]:
    return [o for o in bpy.data.objects if has_avatar(o) and o.library is None]


def _adopt(path: Path, target: str) -> Path:
    """On the first save of a new file: an avatar in the extension's user folder is copied to ``avatars/``
    next to the new .blend (unless the user chose an avatars folder), so Link keeps the project together."""
    if bpy.data.filepath or "preference" in prefs.avatars_dir()[1] or not path.is_file():
        return path
    try:
        path.resolve().relative_to(prefs.user_dir("avatars").resolve())
    except ValueError:
        return path
    try:
        folder = Path(target).parent / "avatars"
        folder.mkdir(parents=True, exist_ok=True)
        data = path.read_bytes()
        dest = unique_path(folder, path.name, data)
        if not dest.is_file():
            dest.write_bytes(data)
    except OSError as exc:
        print(f"Aware3D: could not copy {path.name} next to the .blend: {exc}")
        return path
    return dest


@persistent
def _on_save_pre(target: Any = "", *_args: Any) -> None:
    """The file is about to be written to ``target``: store linked avatar paths relative to it (a Save As to
    another folder keeps them working); a new file first gets its avatars copied next to it."""
    if not isinstance(target, str) or not target:
        return
    for obj in _linked_heads():
        m = meta(obj)
        path = absolute(str(m["avatar"]))
        if storage_of(obj) != PACK:
            path = _adopt(path, target)
        m["avatar"] = stored_path(path, target)


@persistent
def _on_save_post(target: Any = "", *_args: Any) -> None:
    """After the save: paths relative to the open file again (they differ only after Save Copy)."""
    if not isinstance(target, str) or not target or target == bpy.data.filepath:
        return
    for obj in _linked_heads():
        m = meta(obj)
        m["avatar"] = stored_path(absolute(str(m["avatar"]), target))


def register() -> None:
    for handlers, fn in ((bpy.app.handlers.save_pre, _on_save_pre), (bpy.app.handlers.save_post, _on_save_post)):
        if fn not in handlers:
            handlers.append(fn)


def unregister() -> None:
    for handlers, fn in ((bpy.app.handlers.save_pre, _on_save_pre), (bpy.app.handlers.save_post, _on_save_post)):
        with contextlib.suppress(ValueError):
            handlers.remove(fn)
