# SPDX-License-Identifier: GPL-3.0-or-later
"""Writing the synthetic-head data set as EG3D zips, in resumable shards.

Layout of the training zip (what EG3D's ``dataset_tool.py`` writes, plus our extras):

* ``00000/img00000000.png`` ... - RGB PNGs, the folder is ``index // 1000`` as in EG3D;
* ``dataset.json`` - ``{"labels": [[name, [25 floats]], ...]}`` (cam2world row-major + intrinsics);
* ``00000/img00000000.depth.npy`` - float16 [R, R] depth: distance ``t`` along the unit ray of the pixel
  (EG3D ``image_depth`` convention), ``inf`` on the background;
* ``params.json`` - ``{name: {head attributes, scene, yaw, pitch, ...}}``;
* ``aware3d.json`` - what made the file (generator version, seed, counts, conventions).

EG3D's loader takes every file whose extension PIL knows as an image and ignores the rest, so the extras
use ``.npy`` / ``.json``. The held-out test heads go to a *second* zip (``*_test.zip``): inside the
training zip their PNGs would be picked up as training images. Its images are ``h00003/y+30_p-10.png``
(head 3, yaw +30°, pitch -10°) with the same extras and a ``test.json`` index.

Resuming: the images are rendered in units of ``UNIT`` images (test: ``TEST_UNIT`` heads); every unit is
written to a temporary folder inside ``<out>.parts/`` and renamed when complete, so a killed run leaves
only complete units (and a stray temporary folder, removed on resume). ``--resume`` skips the complete
units; the final zip is written to a temporary file in the output folder and renamed into place.
"""

from __future__ import annotations

import io
import json
import multiprocessing as mp
import os
import re
import shutil
import time
import zipfile
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .layout import features
from .params import (
    TEST_SPLIT,
    TRAIN_SPLIT,
    HeadParams,
    SceneParams,
    sample_head,
    sample_latent,
    sample_scene,
    sample_test_scene,
    test_views,
)

# Version 2: heads and lighting are functions of a standard-normal latent, written to params.json as "latent".
GENERATOR_VERSION = "aware3d-synthetic-heads/2"
UNIT = 100  # training images per resumable unit (small enough to keep both workers busy)
TEST_UNIT = 8  # test heads per unit
ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # fixed member timestamps: same inputs -> byte-identical zip
DEPTH_NOTE = ("float16 [R, R] .npy per image: distance t along the unit-length ray through the pixel centre "
              "(EG3D image_depth convention, world units), inf where the ray misses the head (background)")


class DatasetError(Exception):
    """Bad settings or an unusable output location (shown to the user as one line)."""


@dataclass(frozen=True)
class DatasetSpec:
    """Everything that determines the bytes of a data set (and must match for ``--resume``)."""

    count: int
    res: int
    seed: int = 0
    test_heads: int = 0
    version: str = GENERATOR_VERSION


@dataclass(frozen=True)
class Item:
    """One image to render: a training index, or a test head and view."""

    name: str
    split: int
    index: int  # training index, or test head number
    yaw: float = 0.0
    pitch: float = 0.0


def image_name(index: int) -> str:
    """EG3D dataset_tool name of training image ``index``: ``'00001/img00001234.png'``."""
    return f"{index // 1000:05d}/img{index:08d}.png"


def test_image_name(head: int, yaw: float, pitch: float) -> str:
    """Name of a test view: ``'h00003/y+30_p-10.png'`` (degrees, signed, at least two digits)."""
    return f"h{head:05d}/y{round(yaw):+03d}_p{round(pitch):+03d}.png"


def depth_name(name: str) -> str:
    """Depth member of an image member: ``'00000/img00000000.png'`` -> ``'00000/img00000000.depth.npy'``."""
    return name.rsplit(".", 1)[0] + ".depth.npy"


def train_units(spec: DatasetSpec) -> list[list[Item]]:
    return [[Item(image_name(i), TRAIN_SPLIT, i) for i in range(a, min(a + UNIT, spec.count))]
            for a in range(0, spec.count, UNIT)]


def test_units(spec: DatasetSpec) -> list[list[Item]]:
    views = test_views()
    return [[Item(test_image_name(h, y, p), TEST_SPLIT, h, y, p)
             for h in range(a, min(a + TEST_UNIT, spec.test_heads)) for (y, p) in views]
            for a in range(0, spec.test_heads, TEST_UNIT)]


def _item_params(spec: DatasetSpec, item: Item) -> tuple[HeadParams, SceneParams]:
    head = sample_head(spec.seed, item.index, item.split)
    if item.split == TRAIN_SPLIT:
        return head, sample_scene(spec.seed, item.index, TRAIN_SPLIT)
    return head, sample_test_scene(spec.seed, item.index, item.yaw, item.pitch)


def _png(img: np.ndarray) -> bytes:
    import cv2

    ok, buf = cv2.imencode(".png", np.ascontiguousarray(img[:, :, ::-1]))  # OpenCV wants BGR
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return buf.tobytes()


def _npy(a: np.ndarray) -> bytes:
    b = io.BytesIO()
    np.save(b, a, allow_pickle=False)
    return b.getvalue()


def render_items(spec: DatasetSpec, items: Sequence[Item], device: str = "cpu", batch: int = 16,
                 progress: Callable[[int], None] | None = None) -> tuple[dict[str, bytes], dict[str, Any]]:
    """Render ``items``: (member name -> bytes, {"labels": {name: label}, "params": {name: dict}}).

    Heads are grouped by their set of optional parts before batching, so a batch evaluates few parts; the
    grouping depends only on the items, so the output does not depend on how the work is scheduled.
    """
    from .tracer import render

    drawn = [(it, *_item_params(spec, it)) for it in items]
    order = sorted(range(len(drawn)), key=lambda k: (sorted(features(drawn[k][1])), k))
    files: dict[str, bytes] = {}
    labels: dict[str, list[float]] = {}
    params: dict[str, dict[str, Any]] = {}
    for a in range(0, len(order), batch):
        sel = [drawn[k] for k in order[a:a + batch]]
        out = render([s[1] for s in sel], [s[2] for s in sel], spec.res, device=device)
        for j, (it, head, scene) in enumerate(sel):
            files[it.name] = _png(out.images[j])
            files[depth_name(it.name)] = _npy(out.depth[j].astype(np.float16))
            labels[it.name] = [float(v) for v in out.labels[j]]
            p = head.to_json()
            p.update(scene.to_json())
            p.update(yaw=round(scene.yaw_deg, 4), pitch=round(scene.pitch_deg, 4),
                     latent=[round(float(x), 5) for x in sample_latent(spec.seed, it.index, it.split)],
                     split="train" if it.split == TRAIN_SPLIT else "test",
                     **({"index": it.index} if it.split == TRAIN_SPLIT else {"head": it.index}))
            params[it.name] = p
        if progress is not None:
            progress(len(sel))
    return files, {"labels": labels, "params": params}


# --------------------------------------------------------------------------------------------------------
# Units on disk
# --------------------------------------------------------------------------------------------------------


def _unit_dir(parts: Path, kind: str, k: int) -> Path:
    return parts / f"{kind}-{k:05d}"


def _write_unit(parts: Path, kind: str, k: int, files: dict[str, bytes], meta: dict[str, Any]) -> None:
    """Write a unit to a temporary folder, then rename it: a unit folder is either complete or absent."""
    final = _unit_dir(parts, kind, k)
    tmp = parts / f".tmp-{kind}-{k:05d}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    for name, data in files.items():
        f = tmp / name
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(data)
    (tmp / "unit.json").write_text(json.dumps(meta))
    os.replace(tmp, final)


def _unit_done(parts: Path, kind: str, k: int, n_items: int) -> bool:
    meta = _unit_dir(parts, kind, k) / "unit.json"
    try:
        return len(json.loads(meta.read_text())["labels"]) == n_items
    except (OSError, ValueError, KeyError):
        return False


# Worker processes: one torch thread each (small tensors parallelise poorly; processes scale and do not
# stall each other when the machine is busy).
_QUEUE: Any = None


def _worker_init(queue: Any) -> None:
    global _QUEUE
    import torch

    torch.set_num_threads(1)
    _QUEUE = queue


def _worker_unit(spec: DatasetSpec, parts: str, kind: str, k: int, items: list[Item], device: str,
                 batch: int) -> int:
    def progress(n: int) -> None:
        if _QUEUE is not None:
            _QUEUE.put(n)

    files, meta = render_items(spec, items, device, batch, progress)
    _write_unit(Path(parts), kind, k, files, meta)
    return len(items)


# --------------------------------------------------------------------------------------------------------
# Assembly
# --------------------------------------------------------------------------------------------------------


def _zinfo(name: str) -> zipfile.ZipInfo:
    zi = zipfile.ZipInfo(name, ZIP_TIME)
    zi.external_attr = 0o644 << 16
    zi.compress_type = zipfile.ZIP_STORED if name.endswith(".png") else zipfile.ZIP_DEFLATED
    return zi


def _json_bytes(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def _assemble(parts: Path, kind: str, units: list[list[Item]], out: Path, extra: dict[str, Any]) -> None:
    """Write the zip of ``kind`` from its unit folders, to a temporary file renamed into place."""
    labels: list[list[Any]] = []
    params: dict[str, Any] = {}
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for k, items in enumerate(units):
                d = _unit_dir(parts, kind, k)
                meta = json.loads((d / "unit.json").read_text())
                for it in items:
                    zf.writestr(_zinfo(it.name), (d / it.name).read_bytes())
                    dn = depth_name(it.name)
                    zf.writestr(_zinfo(dn), (d / dn).read_bytes())
                    labels.append([it.name, meta["labels"][it.name]])
                    params[it.name] = meta["params"][it.name]
            zf.writestr(_zinfo("dataset.json"), _json_bytes({"labels": labels}))
            zf.writestr(_zinfo("params.json"), _json_bytes(params))
            for name, obj in extra.items():
                zf.writestr(_zinfo(name), json.dumps(obj, indent=1).encode())
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            tmp.unlink()


def _test_index(spec: DatasetSpec) -> dict[str, Any]:
    views = test_views()
    return {
        "views": [{"yaw": y, "pitch": p, "key": test_image_name(0, y, p).split("/")[1][:-4]} for y, p in views],
        "heads": [{"head": h, "files": [test_image_name(h, y, p) for y, p in views]}
                  for h in range(spec.test_heads)],
        "name_pattern": "h{head:05d}/y{yaw:+03d}_p{pitch:+03d}.png",
    }


def _about(spec: DatasetSpec, kind: str) -> dict[str, Any]:
    from backend.cameras import FFHQ_FOCAL, FFHQ_PIVOT, FFHQ_RADIUS

    return {
        "generator": spec.version,
        "kind": kind,
        "spec": asdict(spec),
        "camera": {"convention": "EG3D FFHQ: OpenCV cam2world, world y up, face towards +z",
                   "radius": FFHQ_RADIUS, "pivot": list(FFHQ_PIVOT), "focal": FFHQ_FOCAL},
        "depth": DEPTH_NOTE,
        "params": "params.json: per image name, head attributes (sRGB colours 0-1, world units) and scene",
        "licence": "GPL-3.0-or-later (procedural data from Aware3D's own code)",
    }


# --------------------------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------------------------


def default_test_out(out: Path) -> Path:
    return out.with_name(out.stem + "_test.zip")


def check_settings(spec: DatasetSpec, out: Path, test_out: Path | None, device: str) -> None:
    """Raise DatasetError for settings that cannot work, before any rendering."""
    if spec.count < 1:
        raise DatasetError(f"--count must be at least 1, got {spec.count}")
    if spec.res < 8 or spec.res > 2048 or spec.res & (spec.res - 1):
        raise DatasetError(f"--res must be a power of two between 8 and 2048, got {spec.res}")
    if spec.test_heads < 0:
        raise DatasetError(f"--test-heads must be 0 or more, got {spec.test_heads}")
    if spec.seed < 0:
        raise DatasetError(f"--seed must be 0 or more, got {spec.seed}")
    if re.fullmatch(r"cuda(:\d+)?", device):
        import torch

        if not torch.cuda.is_available():
            raise DatasetError(f"--device {device}: no CUDA GPU is available (use --device cpu)")
    elif device != "cpu":
        raise DatasetError(f"--device must be cpu or cuda[:N], got {device}")
    for p in [out] + ([test_out] if test_out is not None else []):
        if p.suffix.lower() != ".zip":
            raise DatasetError(f"output must be a .zip file (EG3D's loader reads zips), got {p}")
        folder = p.parent
        if not folder.is_dir():
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise DatasetError(f"cannot create output folder {folder}: {exc.strerror or exc}") from exc
        if not os.access(folder, os.W_OK | os.X_OK):
            raise DatasetError(f"output folder is not writable: {folder}")
        if p.is_dir():
            raise DatasetError(f"output path is a folder: {p}")
    if test_out is not None and test_out.resolve() == out.resolve():
        raise DatasetError("--test-out must differ from --out")


def _complete(zip_path: Path, spec: DatasetSpec) -> bool:
    """True if ``zip_path`` is a finished data set made with ``spec`` (``--resume`` after the end)."""
    try:
        with zipfile.ZipFile(zip_path) as zf:
            return json.loads(zf.read("aware3d.json"))["spec"] == asdict(spec)
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return False


def _prepare_parts(parts: Path, spec: DatasetSpec, resume: bool) -> None:
    manifest = parts / "manifest.json"
    want = asdict(spec)
    if parts.exists():
        try:
            have = json.loads(manifest.read_text())
        except (OSError, ValueError):
            have = None
        if have is None:
            if any(parts.iterdir()):
                raise DatasetError(f"{parts} exists and is not an Aware3D work folder; move it away")
        elif resume and have != want:
            diff = ", ".join(f"{k} {have.get(k)} -> {v}" for k, v in want.items() if have.get(k) != v)
            raise DatasetError(f"--resume: {parts} was made with other settings ({diff}); "
                               "use the same settings or drop --resume")
        elif not resume:
            shutil.rmtree(parts)
    parts.mkdir(exist_ok=True)
    for stale in parts.glob(".tmp-*"):  # units a killed run left half-written
        shutil.rmtree(stale, ignore_errors=True)
    manifest.write_text(json.dumps(want))


def build_dataset(out: str | Path, count: int, res: int, seed: int = 0, test_heads: int = 0,
                  test_out: str | Path | None = None, device: str = "cpu", resume: bool = False,
                  workers: int | None = None, batch: int | None = None, progress: bool = True,
                  keep_parts: bool = False) -> dict[str, Any]:
    """Render and write the data set; returns a summary (paths, images, seconds, images/s).

    ``workers``: render processes for the CPU (default: one per core); on CUDA rendering stays in this
    process. Output bytes do not depend on ``workers``.
    """
    out = Path(out)
    spec = DatasetSpec(count=count, res=res, seed=seed, test_heads=test_heads)
    tout = (Path(test_out) if test_out is not None else default_test_out(out)) if test_heads > 0 else None
    check_settings(spec, out, tout, device)
    parts = out.with_name(out.name + ".parts")
    if resume and not parts.exists() and _complete(out, spec) and (tout is None or _complete(tout, spec)):
        total = spec.count + spec.test_heads * len(test_views())
        return {"out": str(out), "test_out": str(tout) if tout else None, "images": total, "rendered": 0,
                "seconds": 0.0, "render_seconds": 0.0, "images_per_s": 0.0, "workers": 0}
    try:
        _prepare_parts(parts, spec, resume)
    except PermissionError as exc:
        raise DatasetError(f"cannot write work folder {parts}: {exc.strerror}") from exc
    jobs: list[tuple[str, int, list[Item]]] = [("train", k, u) for k, u in enumerate(train_units(spec))]
    jobs += [("test", k, u) for k, u in enumerate(test_units(spec))]
    total = sum(len(u) for _, _, u in jobs)
    todo = [j for j in jobs if not (resume and _unit_done(parts, j[0], j[1], len(j[2])))]
    done_before = total - sum(len(u) for _, _, u in todo)
    if batch is None:
        batch = 64 if device.startswith("cuda") else 16
    if workers is None:
        workers = 1 if device.startswith("cuda") else max(1, min(os.cpu_count() or 1, len(todo)))
    t0 = time.perf_counter()
    _run_jobs(spec, parts, todo, device, batch, workers, total, done_before, progress)
    render_s = time.perf_counter() - t0
    _assemble(parts, "train", train_units(spec), out, {"aware3d.json": _about(spec, "train")})
    if tout is not None:
        _assemble(parts, "test", test_units(spec), tout,
                  {"aware3d.json": _about(spec, "test"), "test.json": _test_index(spec)})
    if not keep_parts:
        shutil.rmtree(parts, ignore_errors=True)
    seconds = time.perf_counter() - t0
    rendered = total - done_before
    return {"out": str(out), "test_out": str(tout) if tout else None, "images": total, "rendered": rendered,
            "seconds": round(seconds, 2), "render_seconds": round(render_s, 2),
            "images_per_s": round(rendered / max(render_s, 1e-9), 2), "workers": workers}


def _run_jobs(spec: DatasetSpec, parts: Path, todo: Iterable[tuple[str, int, list[Item]]], device: str,
              batch: int, workers: int, total: int, done_before: int, progress: bool) -> None:
    from tqdm import tqdm

    todo = list(todo)
    bar = tqdm(total=total, initial=done_before, unit="img", disable=not progress, smoothing=0.05,
               dynamic_ncols=True)
    try:
        if workers <= 1:
            for kind, k, items in todo:
                files, meta = render_items(spec, items, device, batch, bar.update)
                _write_unit(parts, kind, k, files, meta)
            return
        ctx = mp.get_context("spawn")  # fork after torch has started threads can deadlock
        queue = ctx.Queue()
        with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_worker_init,
                                 initargs=(queue,)) as pool:
            pending: set[Future[int]] = {pool.submit(_worker_unit, spec, str(parts), kind, k, items, device,
                                                     batch) for kind, k, items in todo}
            try:
                while pending:
                    finished, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
                    while not queue.empty():
                        bar.update(queue.get_nowait())
                    for f in finished:
                        f.result()  # re-raise a worker's error
            except BaseException:
                for f in pending:  # do not wait for the rest of the data set after a failure
                    f.cancel()
                raise
            while not queue.empty():
                bar.update(queue.get_nowait())
    finally:
        bar.close()
