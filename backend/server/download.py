# SPDX-License-Identifier: GPL-3.0-or-later
"""Adding models: from a file (``add_model``) or a URL (``download_model``), into the user models folder.

Downloads stream into a hidden ``.NAME.part`` file next to the destination. An interrupted transfer is resumed
with an HTTP ``Range`` request, both within one job (a few automatic retries) and by a later request for the
same URL (the part file is kept, also on cancel). The SHA-256 is checked when given, and the finished file is
validated in full (header limits, config types and ranges, tensor shapes, no NaN/inf) or, for an official
``.pkl``, converted through the safe converter, before it is moved into place, so the models folder never
holds a half-written, unreadable or damaged model.

Network use is the client's decision (Blender's "Allow Online Access"): the request must say
``online_access: true`` or it is refused.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from backend.errors import Aware3DError
from backend.server.jobs import JobContext, JobResult

log = logging.getLogger("aware3d.server")

CHUNK = 1 << 16
CONNECT_TIMEOUT_S = 15
READ_TIMEOUT_S = 60
MODEL_SUFFIXES = (".safetensors", ".pkl")


class NetworkError(Aware3DError):
    """The transfer failed (connection, HTTP status); the part file is kept for a resume."""


class HashMismatch(Aware3DError):
    """The downloaded bytes do not have the expected SHA-256; the part file is deleted."""


class OnlineAccessDisabled(Aware3DError):
    """The client did not allow network access."""


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def model_name(name: str | None, source: str) -> str:
    """The file name a model gets in the models folder: no folders, a model suffix (taken from the source
    when ``name`` has none).

    A ``name`` the user gave must already be a plain file name (``../x`` is refused, not quietly turned into
    ``x``: see :mod:`backend.validate`); one taken from the source's path or URL is reduced to its last part.
    """
    from backend.validate import safe_stem

    src = Path(urllib.parse.unquote(urllib.parse.urlparse(source).path)).name
    raw = safe_stem(name, "model name") if name is not None else src
    base = Path(raw).name
    if not base or base != raw.replace("\\", "/").split("/")[-1] or base.startswith("."):
        raise Aware3DError(f"bad model file name {raw!r}", "give a plain name such as heads.safetensors")
    if name and not base.endswith(MODEL_SUFFIXES) and src.endswith(MODEL_SUFFIXES):
        base += Path(src).suffix
    if not base.endswith(MODEL_SUFFIXES):
        raise Aware3DError(f"{base!r} is not a model file", "model files end in .safetensors or .pkl")
    return base


def _final_path(models_dir: Path, name: str) -> Path:
    """Where a model ends up: official pickles are stored converted, as .safetensors."""
    stem = name.removesuffix(Path(name).suffix)
    return models_dir / f"{stem}.safetensors"


def _check_dest(dest: Path, overwrite: bool) -> None:
    if dest.exists() and not overwrite:
        raise Aware3DError(f"a model named {dest.stem!r} already exists in {dest.parent}",
                           "pick another name, or allow overwriting")


def install_model_file(src: Path, dest: Path, original_name: str,
                       progress: Callable[..., None] | None = None) -> dict[str, Any]:
    """Validate ``src`` fully (or convert an official pickle) and only then place it at ``dest`` atomically.

    Validation is everything a loader relies on (``model_file.validate_model_file``: header limits, the config
    through its dataclass, tensor names and shapes, no NaN/inf unless ``AWARE3D_ALLOW_NONFINITE=1``), so a
    refused file leaves nothing in the models folder. ``progress(stage, step, total, message="")`` reports.
    """
    from backend.checkpoints.model_file import validate_model_file
    from backend.fileio import atomic_path

    report = progress or (lambda *args, **kwargs: None)
    if original_name.endswith(".pkl"):
        report("convert", 0, 1, f"converting {original_name} (safe unpickler)")
        from backend.checkpoints.convert import convert_to_file

        dest.parent.mkdir(parents=True, exist_ok=True)
        convert_to_file(src, dest, name=dest.stem)  # never runs code from the file; validates before writing
        report("convert", 1, 1)
    else:
        report("verify", 0, 1, "validating the model file")
        header = validate_model_file(src)  # one Aware3DError line for anything a loader would trip over
        report("verify", 1, 1)
        dest.parent.mkdir(parents=True, exist_ok=True)
        if src.parent == dest.parent:
            os.replace(src, dest)
        else:
            total = src.stat().st_size
            with atomic_path(dest, suffix=".safetensors") as tmp, open(src, "rb") as fi, open(tmp, "wb") as fo:
                done = 0
                for block in iter(lambda: fi.read(1 << 22), b""):
                    fo.write(block)
                    done += len(block)
                    report("copy", done, total)
        if header.kind != "gan":
            log.warning("%s is a %s model; the generator picker only uses GAN models", dest.name, header.kind)
    from backend.checkpoints.model_file import read_header

    header = read_header(dest)
    return {"name": dest.stem, "path": str(dest), "kind": header.kind, "config": header.config.get("name"),
            "bytes": dest.stat().st_size}


def add_model_file(src: Path, name: str | None, overwrite: bool,
                   progress: Callable[..., None] | None = None) -> dict[str, Any]:
    """Add a model file to the user models folder (the server's ``add_model`` and ``aware3d models add``)."""
    from backend.registry import user_models_dir

    try:
        found = src.is_file()
    except OSError as exc:  # e.g. a name longer than the file system allows
        raise Aware3DError(f"cannot read the model file {str(src)[:200]!r}: {exc.strerror}",
                           "pick an existing .safetensors or .pkl file") from None
    if not found:
        raise Aware3DError(f"model file not found: {src}", "pick an existing .safetensors or .pkl file")
    base = model_name(name, src.name)
    dest = _final_path(user_models_dir(), base)
    _check_dest(dest, overwrite)
    if src.resolve() == dest.resolve():
        raise Aware3DError(f"{src.name} is already in the models folder", "it is listed already")
    return install_model_file(src, dest, base, progress)


def op_add_model(ctx: JobContext) -> JobResult:
    ctx.plan({"verify": 1, "copy": 3, "convert": 6})
    src = Path(ctx.args["path"]).expanduser()
    return JobResult(data=add_model_file(src, ctx.args["name"], ctx.args["overwrite"], ctx.progress))


# --------------------------------------------------------------------------------------------------------
# Downloads
# --------------------------------------------------------------------------------------------------------


def _open(url: str, offset: int) -> Any:
    import requests

    headers = {"User-Agent": "aware3d-backend", "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    return requests.get(url, stream=True, headers=headers, timeout=(CONNECT_TIMEOUT_S, READ_TIMEOUT_S),
                        allow_redirects=True)


def _transfer(ctx: JobContext, url: str, part: Path) -> tuple[bool, bool]:
    """One attempt: append to ``part``. Returns ``(complete, used_range)``; raises on network errors."""
    have = part.stat().st_size if part.exists() else 0
    with _open(url, have) as r:
        if r.status_code == 416 and have:  # nothing left to send: the part file is complete
            return True, True
        if r.status_code not in (200, 206):
            raise NetworkError(f"HTTP {r.status_code} {r.reason} for {url}",
                               "check the URL (and that the file is public)")
        ranged = r.status_code == 206
        if not ranged and have:
            log.info("server ignored the Range request; starting %s again", part.name)
            have = 0
        if ranged:
            start = _content_range_start(r.headers.get("Content-Range", ""))
            if start != have:
                raise NetworkError(f"the server resumed at byte {start}, expected {have}",
                                   "delete the partial download and try again")
        length = r.headers.get("Content-Length")
        total = have + int(length) if length and length.isdigit() else 0
        done = have
        with open(part, "ab" if ranged else "wb") as f:
            for block in r.iter_content(CHUNK):
                f.write(block)
                done += len(block)
                ctx.progress("download", done, max(total, done), f"{done >> 20} MiB")
        return (not total or done >= total), ranged


def _content_range_start(value: str) -> int:
    # "bytes START-END/TOTAL"
    try:
        return int(value.split()[1].split("-")[0])
    except (IndexError, ValueError):
        return -1


def op_download_model(ctx: JobContext) -> JobResult:
    import requests

    from backend.registry import user_models_dir

    a = ctx.args
    if not a["online_access"]:
        raise OnlineAccessDisabled("downloading needs online access, which the client did not allow",
                                   "Blender: Preferences > System > Network > Allow Online Access")
    url = a["url"]
    if urllib.parse.urlparse(url).scheme not in ("http", "https"):
        raise Aware3DError(f"only http(s) URLs can be downloaded, got {url!r}", "e.g. https://host/model.safetensors")
    name = model_name(a["name"], url)
    models = user_models_dir()
    models.mkdir(parents=True, exist_ok=True)
    dest = _final_path(models, name)
    _check_dest(dest, a["overwrite"])
    part = models / f".{name}.part"
    ctx.plan({"download": 10, "verify": 1, "convert": 2})
    resumed = part.exists() and part.stat().st_size > 0
    attempts = max(1, int(a["retries"]) + 1)
    complete = False
    for attempt in range(attempts):
        try:
            complete, ranged = _transfer(ctx, url, part)
            resumed = resumed or ranged
        except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as exc:
            size = part.stat().st_size if part.exists() else 0
            log.warning("download interrupted at %d bytes (attempt %d/%d): %s", size, attempt + 1, attempts, exc)
            if attempt + 1 == attempts:
                raise NetworkError(f"download interrupted after {size} bytes ({type(exc).__name__})",
                                   "run the download again: it resumes where it stopped") from None
            time.sleep(min(2.0, 0.25 * (attempt + 1)))
            ctx.check_cancel()
            continue
        if complete:
            break
    if not complete:
        raise NetworkError("the download ended early too many times", "run it again: it resumes")
    ctx.progress("verify", 0, 1, "checking SHA-256")
    digest = sha256_file(part)
    expected = (a["sha256"] or "").strip().lower()
    if expected and digest != expected:
        part.unlink(missing_ok=True)
        raise HashMismatch(f"SHA-256 of {name} is {digest[:16]}…, expected {expected[:16]}…",
                           "the file is corrupt or not the one published; the partial file was deleted")
    ctx.progress("verify", 1, 1)
    try:
        info = install_model_file(part, dest, name, ctx.progress)
    except Aware3DError:
        part.unlink(missing_ok=True)
        raise
    finally:
        if name.endswith(".pkl"):
            part.unlink(missing_ok=True)
    return JobResult(data={**info, "sha256": digest, "resumed": resumed, "url": url})
