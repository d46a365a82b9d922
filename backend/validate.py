# SPDX-License-Identifier: GPL-3.0-or-later
"""One validation layer for everything that crosses the boundary: the CLI's arguments and the server's requests.

Threat model
------------
The backend server takes requests from the Blender add-on, from scripts, and (with ``serve --tcp``) from any
client that holds the token. The add-on is well behaved, but the protocol is the boundary: a request is data
from outside, written by a hostile or buggy client as easily as by the add-on. The CLI is driven by the user
who owns the machine, yet its arguments come from shell history, scripts and copy-paste, and a wrong one must
fail at once, in one line, before minutes of rendering. So at both front ends, before any model is loaded or
any memory is allocated:

* a *name* that becomes part of a file name (``invert``'s ``name``, ``--name``) must be a plain file stem:
  no path separators, no ``..``, not absolute, no control characters, not a Windows device name, at most
  :data:`MAX_STEM_CHARS` characters (:func:`safe_stem`);
* every output path built from a request is proven to lie inside its job folder, symlinks resolved
  (:func:`path_inside`): a second line of defence should a future name slip past the first;
* an output given on the command line is checked to be writable, and to be a folder or a file as needed, by
  really creating and removing a file there (:func:`check_output_dir`, :func:`check_output_file`);
  ``os.access`` is not enough: it ignores read-only mounts and answers yes to root for a read-only folder;
* every number is finite and inside the documented bounds of :data:`BOUNDS` (:func:`bounded_int`,
  :func:`bounded_float`, :func:`within`), and a count (seeds, views, frames) is checked *before* a list of
  that size is built, so one small request cannot take the machine's memory.

Refuse, don't sanitise
----------------------
A name the user *typed* that is not a safe stem is refused with one line, not silently rewritten: a rewrite
would hand back files under a name nobody asked for (``../../x`` quietly becoming ``x``), hide a client bug,
and make two different names land on the same file. The add-on already offers only clean names, so a refusal
costs a well-behaved client nothing. A name the backend *derives* itself (from a photo's file name, when no
name is given) is sanitised instead (:func:`sanitise_stem`): there the user asked for nothing in particular,
and refusing a photo for its file name would be unhelpful.

What is not in scope here: reading inputs. A request may name any file the backend's user can read (a photo,
a mesh, a model): that is the operation's purpose, and it is why TCP requires a token.
"""

from __future__ import annotations

import contextlib
import math
import os
import stat
import tempfile
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from backend.errors import Aware3DError

SEED_MAX = 2**32 - 1


@dataclass(frozen=True)
class Bound:
    """An inclusive range for one kind of argument, with an example value and where it applies."""

    lo: float
    hi: float
    integer: bool
    example: str
    applies_to: str


# The documented bounds of every numeric argument, in one place (README "Limits" quotes this table;
# ``python -m backend.validate`` prints it as Markdown). Where the add-on's panels have a range, the bound
# contains it; numbers kept from earlier checks: 1024 seeds per request, 2^32 seeds, resolutions 8-1024.
BOUNDS: dict[str, Bound] = {
    "seed": Bound(0, SEED_MAX, True, "3", "every seed (sample, mesh, views, texture, invert)"),
    "seeds_per_request": Bound(1, 1024, True, "8", "server sample: seeds in one request"),
    "seeds_per_command": Bound(1, 65_536, True, "8", "aware3d sample --seeds: seeds in one command"),
    "gallery_thumbnails": Bound(1, 64, True, "8", "server thumbnails: seeds on one gallery page"),
    "truncation": Bound(0.0, 2.0, False, "0.7", "truncation psi"),
    "yaw_deg": Bound(-180.0, 180.0, False, "20", "camera yaw and orbit yaw amplitude (degrees)"),
    "pitch_deg": Bound(-89.0, 89.0, False, "-5", "camera pitch and orbit pitch amplitude (degrees)"),
    "focal": Bound(0.01, 1000.0, False, "4.2647", "focal length in image widths"),
    "fov_deg": Bound(0.01, 179.0, False, "13.37", "horizontal field of view (degrees)"),
    "render_resolution": Bound(8, 1024, True, "128", "neural rendering resolution (sample)"),
    "orbit_frames": Bound(2, 3600, True, "48", "orbit video frames (0: none, where allowed)"),
    "mesh_resolution": Bound(32, 1024, True, "128", "server mesh/invert: grid resolution per axis"),
    "cli_mesh_resolution": Bound(64, 1024, True, "256", "aware3d mesh --res, invert/edit --mesh-res"),
    "mesh_level": Bound(-1000.0, 1000.0, False, "10", "mesh density level (default: the model's own; EG3D: 10)"),
    "faces": Bound(0, 10_000_000, True, "50000", "target mesh faces (0 keeps all)"),
    "smooth_iterations": Bound(0, 1000, True, "10", "Taubin smoothing iterations"),
    "mesh_texture_size": Bound(64, 8192, True, "1024", "baked mesh texture (pixels)"),
    "texture_size": Bound(16, 8192, True, "1024", "texture command's atlas (pixels)"),
    "view_size": Bound(16, 4096, True, "64", "texture command's view size (pixels)"),
    "texture_exponent": Bound(0.1, 64.0, False, "3", "cos^p view weight exponent"),
    "max_angle_deg": Bound(1.0, 89.0, False, "70", "most oblique view used for texturing (degrees)"),
    "diffusion_steps": Bound(1, 1000, True, "25", "diffusion sampling steps"),
    "ddim_eta": Bound(0.0, 1.0, False, "1", "DDIM noise of G_u's first view (0: deterministic, 1: DDPM-like)"),
    "views_per_trajectory": Bound(1, 360, True, "9", "views of one trajectory (views)"),
    "invert_steps": Bound(0, 5000, True, "100", "invert/edit optimisation steps per stage"),
    "pseudo_views": Bound(2, 360, True, "12", "invert pseudo views"),
    "pseudo_yaw_deg": Bound(0.0, 90.0, False, "30", "invert pseudo views' yaw half-range (degrees)"),
    "pseudo_weight": Bound(0.0, 100.0, False, "0.5", "invert pseudo-view loss weight"),
    "locality_weight": Bound(0.0, 1000.0, False, "0", "invert locality regulariser weight"),
    "learning_rate": Bound(1e-8, 1.0, False, "3e-4", "invert tuning learning rate"),
    "edit_amount": Bound(-10.0, 10.0, False, "1", "edit strength (standard deviations)"),
    "threads": Bound(1, 1024, True, "2", "CPU threads: --threads of sample, mesh, views, texture, invert, edit, serve"),
    "crop_coordinate": Bound(-1e6, 1e6, False, "120", "crop X, Y and SIZE (photo pixels)"),
    "dataset_images": Bound(1, 10_000_000, True, "20000", "make-dataset --count"),
}

MAX_STEM_CHARS = 100
_WINDOWS_DEVICES = frozenset({"CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$",
                              *(f"COM{i}" for i in range(10)), *(f"LPT{i}" for i in range(10))})
_WINDOWS_RESERVED_CHARS = frozenset('<>:"|?*')
_NAME_HINT = "use letters, digits, spaces, '-' or '_', e.g. 'my-head'"


# --------------------------------------------------------------------------------------------------------
# Numbers
# --------------------------------------------------------------------------------------------------------


def _fmt(x: float) -> str:
    return f"{int(x)}" if float(x).is_integer() and abs(x) < 1e15 else f"{x:g}"


def _short(value: Any, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _range_error(what: str, value: Any, lo: float, hi: float, hint: str) -> Aware3DError:
    return Aware3DError(f"{what} must be between {_fmt(lo)} and {_fmt(hi)}, got {_short(value)}", hint)


def bounded_int(value: Any, lo: int, hi: int, what: str, hint: str = "") -> int:
    """``value`` as an int in [lo, hi]; a bool, a fraction or anything else is refused with one line.

    Why bools are refused: ``True`` is an int in Python, and ``"faces": true`` is a client bug, not 1 face.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise Aware3DError(f"{what} must be a whole number, got {_short(value)}", hint)
    if isinstance(value, float) and not (math.isfinite(value) and value.is_integer()):
        raise Aware3DError(f"{what} must be a whole number, got {_short(value)}", hint)
    if not lo <= value <= hi:
        raise _range_error(what, value, lo, hi, hint)
    return int(value)


def bounded_float(value: Any, lo: float, hi: float, what: str, hint: str = "") -> float:
    """``value`` as a finite float in [lo, hi]; NaN and infinities are refused (they pass ``<`` checks)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise Aware3DError(f"{what} must be a number, got {_short(value)}", hint)
    if isinstance(value, int) and abs(value) > 1e300:  # float() of a huge int would raise OverflowError
        raise _range_error(what, value, lo, hi, hint)
    x = float(value)
    if not math.isfinite(x):
        raise Aware3DError(f"{what} must be a finite number, got {x}", hint or
                           f"between {_fmt(lo)} and {_fmt(hi)}")
    if not lo <= x <= hi:
        raise _range_error(what, value, lo, hi, hint)
    return x


def within(key: str, value: Any, what: str | None = None, hint: str | None = None) -> Any:
    """``value`` checked against ``BOUNDS[key]`` (an int or a float, as the bound says)."""
    b = BOUNDS[key]
    what = what or key.replace("_", " ")
    hint = f"e.g. {b.example}" if hint is None else hint
    if b.integer:
        return bounded_int(value, int(b.lo), int(b.hi), what, hint)
    return bounded_float(value, b.lo, b.hi, what, hint)


def optional(key: str, value: Any, what: str | None = None, hint: str | None = None) -> Any:
    """:func:`within`, letting ``None`` (the argument's "use the default") through."""
    return None if value is None else within(key, value, what, hint)


def count_within(key: str, count: int, what: str, hint: str = "") -> int:
    """A count (of seeds, views, frames) checked before a list of that size is built."""
    b = BOUNDS[key]
    if count > b.hi:
        raise Aware3DError(f"{count} {what} is too many; the limit is {_fmt(b.hi)}", hint or "split the work")
    if count < b.lo:
        raise Aware3DError(f"{count} {what} is too few; at least {_fmt(b.lo)}", hint)
    return count


def bounds_markdown() -> str:
    """:data:`BOUNDS` as a Markdown table (what the README quotes)."""
    rows = ["| argument | range | example | applies to |", "|---|---|---|---|"]
    for key, b in BOUNDS.items():
        rows.append(f"| `{key}` | {_fmt(b.lo)} … {_fmt(b.hi)} | {b.example} | {b.applies_to} |")
    return "\n".join(rows)


# --------------------------------------------------------------------------------------------------------
# Names
# --------------------------------------------------------------------------------------------------------


def _stem_problem(name: str) -> str | None:
    """Why ``name`` is not a safe file stem, or None."""
    if not name:
        return "it is empty"
    if len(name) > MAX_STEM_CHARS:
        return f"it is longer than {MAX_STEM_CHARS} characters"
    if "/" in name or "\\" in name:
        return "it contains a path separator"
    if name.startswith("."):
        return "it starts with a dot (a hidden file, '.' or '..')"
    if name != name.strip() or name.endswith("."):
        return "it starts or ends with a space, or ends with a dot"
    for ch in name:
        if unicodedata.category(ch)[0] in "CZ" and ch != " ":  # control, format, separators but space
            return f"it contains the control or invisible character U+{ord(ch):04X}"
        if ch in _WINDOWS_RESERVED_CHARS:
            return f"it contains {ch!r}, which Windows does not allow in file names"
    if name.split(".")[0].rstrip().upper() in _WINDOWS_DEVICES:
        return "it is a reserved device name on Windows"
    return None


def safe_stem(name: Any, what: str = "name") -> str:
    """A user-given name as a file stem (``NAME.avatar.safetensors``), or one line saying why it cannot be.

    Refused rather than sanitised: see the module docstring.
    """
    if not isinstance(name, str):
        raise Aware3DError(f"{what} must be text, got {_short(name)}", _NAME_HINT)
    problem = _stem_problem(name)
    if problem is not None:
        raise Aware3DError(f"{what} {_short(name)} cannot be used as a file name: {problem}", _NAME_HINT)
    return name


def sanitise_stem(text: str, default: str = "output") -> str:
    """A stem made from a name the backend derived itself (e.g. a photo's file name): unsafe characters
    become ``_``, the result is trimmed to :data:`MAX_STEM_CHARS`, and ``default`` replaces an empty one."""
    chars = ["_" if ch in "/\\" or ch in _WINDOWS_RESERVED_CHARS or
             (unicodedata.category(ch)[0] in "CZ" and ch != " ") else ch for ch in text]
    stem = "".join(chars)[:MAX_STEM_CHARS].strip(" .")
    if not stem:
        return default
    if _stem_problem(stem) is not None:  # a device name: keep it recognisable, but safe
        stem = f"_{stem}"[:MAX_STEM_CHARS]
    return stem if _stem_problem(stem) is None else default


# --------------------------------------------------------------------------------------------------------
# Paths
# --------------------------------------------------------------------------------------------------------


def path_inside(folder: str | os.PathLike[str], path: str | os.PathLike[str], what: str = "output") -> Path:
    """``path`` (relative to ``folder``, or absolute) resolved, symlinks included, and proven to lie inside
    ``folder``; else one line. The second line of defence behind :func:`safe_stem`."""
    try:
        base = Path(folder).resolve()
        target = (base / path).resolve()
    except (OSError, ValueError, RuntimeError) as exc:  # NUL bytes, symlink loops
        raise Aware3DError(f"{what} path {_short(str(path))} cannot be used: {exc}", _NAME_HINT) from None
    if target != base and base not in target.parents:
        raise Aware3DError(f"{what} {_short(str(path))} would be written outside its folder {_show(base)}",
                           "give a plain name, without folders")
    return target


def _reason(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


def _as_path(path: str | os.PathLike[str], what: str) -> Path:
    text = os.fspath(path)
    if not text:
        raise Aware3DError(f"{what} is empty", f"give a path for {what}")
    if "\0" in text:
        raise Aware3DError(f"{what} contains a NUL character", f"give a path for {what}")
    return Path(text).expanduser()


def _probe(folder: Path, label: str, hint: str) -> None:
    """Create and remove a file in ``folder``: the only test of writability that is always right."""
    try:
        fd, name = tempfile.mkstemp(prefix=".aware3d-probe-", dir=folder)
    except OSError as exc:
        raise Aware3DError(f"cannot write to {label}: {_reason(exc)}", hint) from None
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(name)


def _not_a_folder(path: Path) -> bool:
    """``path`` exists and is not a folder, in one ``stat`` (``exists() and not is_dir()`` would say so of a
    folder another process removes between the two calls)."""
    try:
        return not stat.S_ISDIR(path.stat().st_mode)
    except (FileNotFoundError, NotADirectoryError):
        return False


def _writable_folder(folder: Path, label: str, hint: str) -> None:
    """Prove that files can be written in ``folder``, creating it (and its missing parents) for the test and
    removing what was created, so a refused command leaves nothing behind and the writers create it later."""
    missing: list[Path] = []
    q = folder
    while not q.exists() and not q.is_symlink() and q.parent != q:
        missing.append(q)
        q = q.parent
    if _not_a_folder(q):
        raise Aware3DError(f"cannot create {label}: {q} is a file, not a folder", hint)
    try:
        for attempt in range(5):
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except (FileNotFoundError, FileExistsError) as exc:
                if attempt < 4:  # a folder on the way appeared or vanished meanwhile: see below
                    continue
                raise Aware3DError(f"cannot create {label}: {_reason(exc)}", hint) from None
            except OSError as exc:
                raise Aware3DError(f"cannot create {label}: {_reason(exc)}", hint) from None
            try:
                _probe(folder, label, hint)
                break
            except Aware3DError:
                # Another process checking the same new folder (torchrun's ranks) may remove what it made
                # between our mkdir and our probe: a folder fails the test only when it fails every time.
                if attempt == 4:
                    raise
    finally:
        for m in missing:  # deepest first
            with contextlib.suppress(OSError):
                m.rmdir()


def _show(path: Path, limit: int = 120) -> str:
    """A path for a message: whole when short, its two ends when long (a message stays one readable line)."""
    text = str(path)
    return text if len(text) <= limit else f"{text[: limit // 2 - 2]}...{text[-(limit // 2 - 1):]}"


def check_output_dir(path: str | os.PathLike[str], what: str = "--out") -> Path:
    """An output folder, checked before any work: not a file, creatable, writable. Returns the path."""
    p = _as_path(path, what)
    try:
        if _not_a_folder(p):
            raise Aware3DError(f"{what} {_show(p)} is a file, not a folder",
                               f"give {what} a folder; it is created if needed")
        _writable_folder(p, f"{what} {_show(p)}", f"give {what} a folder you can write to")
    except OSError as exc:  # stat itself failed: a name too long, a folder we may not enter
        raise Aware3DError(f"cannot use {what} {_show(p)}: {_reason(exc)}", f"choose another {what}") from None
    return p


def check_output_file(path: str | os.PathLike[str], suffixes: tuple[str, ...] = (), what: str = "--out",
                      kind: str = "file") -> Path:
    """An output file, checked before any work: not a folder, a known suffix (when ``suffixes`` are given),
    and its folder writable (files are written atomically: a temporary file there, then a rename)."""
    p = _as_path(path, what)
    try:
        if p.is_dir():
            example = p / ("out" + (suffixes[0] if suffixes else ""))
            raise Aware3DError(f"{what} {_show(p)} is a folder, not a file",
                               f"give {what} a file name, e.g. {_show(example)}")
        if suffixes and p.suffix.lower() not in suffixes:
            raise Aware3DError(f"cannot write {_show(Path(p.name))!r}: unknown {kind} format",
                               f"use {what} with one of {', '.join(suffixes)}")
        _writable_folder(p.parent, f"the folder of {what} {_show(p)}",
                         f"give {what} a file in a folder you can write to")
    except OSError as exc:
        raise Aware3DError(f"cannot use {what} {_show(p)}: {_reason(exc)}", f"choose another {what}") from None
    return p


if __name__ == "__main__":
    print(bounds_markdown())
