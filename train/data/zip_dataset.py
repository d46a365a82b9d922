# SPDX-License-Identifier: GPL-3.0-or-later
"""Reading EG3D-format zips (ours, or ones made by EG3D's ``dataset_tool.py``) for training and evaluation.

Format: image files (every extension PIL knows, as in EG3D's loader) and ``dataset.json`` =
``{"labels": [[name, [25 floats]], ...]}`` (or ``null``). Our synthetic-head zips add per-image depth
(``<image>.depth.npy``, float16, distance along the unit ray, ``inf`` = background), ``params.json``
(head attributes per image name) and, in ``*_test.zip``, ``test.json`` (head/view index).

The zip is opened lazily, once per process: a ``ZipFile`` handle must not be shared across DataLoader
worker processes (each would move the same file position), so a pickled or forked dataset reopens it.

X-flip: index ``i + N`` is image ``i`` mirrored left-right, with its camera mirrored across the x = 0
plane (the head's symmetry plane) - see :func:`mirror_label`.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

LABEL_DIM = 25
# cam2world entries that change sign when the world is mirrored by S = diag(-1, 1, 1) and the camera's
# own x axis is flipped (F = diag(-1, 1, 1)): R' = S R F negates R[0,1], R[0,2], R[1,0], R[2,0]; t' = S t
# negates t_x. Row-major positions in the 25-value label: 1, 2, 3 (row 0), 4 (row 1), 8 (row 2).
_MIRROR_NEGATE = (1, 2, 3, 4, 8)
_SKEW, _CX = 17, 18


def mirror_label(label: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """The label of the left-right mirrored image: same camera reflected in the plane x = 0.

    Derivation: a world point P seen at pixel u by camera (R, t, K) is seen at 1 - u (same v) by the camera
    whose cam2world is S·[R | t]·F (S = diag(-1, 1, 1) mirrors the world, F = diag(-1, 1, 1, 1) flips the
    camera's x axis so the rotation stays proper), with intrinsics cx' = 1 - cx and skew' = -skew. For
    cx = 0.5 and no skew (every FFHQ label) the intrinsics are unchanged, which is what EG3D's own
    flip does. Works on [..., 25] arrays/tensors.
    """
    out = label.clone() if isinstance(label, torch.Tensor) else np.array(label, copy=True)
    for i in _MIRROR_NEGATE:
        out[..., i] = -out[..., i]
    out[..., _SKEW] = -out[..., _SKEW]
    out[..., _CX] = 1.0 - out[..., _CX]
    return out


def _image_extensions() -> set[str]:
    try:
        import PIL.Image

        PIL.Image.init()
        return {e.lower() for e in PIL.Image.EXTENSION}
    except ImportError:  # pragma: no cover - Pillow comes with imageio
        return {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}


def _depth_name(name: str) -> str:
    return name.rsplit(".", 1)[0] + ".depth.npy"


class ZipDatasetError(Exception):
    """The zip is not a usable EG3D data set (message says why)."""


class ZipDataset(torch.utils.data.Dataset):
    """EG3D-format data set in a zip: ``dataset[i]`` -> (image uint8 [C, H, W], label float32 [25]).

    ``resolution``: expected image size (checked against the first image). ``max_size``: keep a random
    subset of that many images (fixed by ``random_seed``, in file order). ``xflip``: append mirrored
    copies (length doubles). ``extras``: items become dicts with ``image``, ``label``, ``name``,
    ``flipped`` and, when the zip has depth, ``depth`` (float32 [H, W], inf = background) and ``mask``.
    """

    def __init__(self, path: str | os.PathLike[str], resolution: int | None = None,
                 max_size: int | None = None, xflip: bool = False, use_labels: bool = True,
                 extras: bool = False, random_seed: int = 0) -> None:
        self.path = str(path)
        self._zip: zipfile.ZipFile | None = None
        self._zip_pid = -1
        if not zipfile.is_zipfile(self.path):
            raise ZipDatasetError(f"not a zip file: {self.path}")
        names = set(self._get_zip().namelist())
        exts = _image_extensions()
        self.image_names = sorted(n for n in names if os.path.splitext(n)[1].lower() in exts)
        if not self.image_names:
            raise ZipDatasetError(f"no images in {self.path}")
        self._names = names
        self.has_depth = all(_depth_name(n) in names for n in self.image_names)
        self.labels = self._load_labels() if use_labels else None
        self.extras = extras
        self._params: dict[str, Any] | None = None
        self.test_index: dict[str, Any] | None = self._read_json("test.json") if "test.json" in names else None
        img = self._load_raw_image(0)
        self.num_channels, self.resolution = img.shape[0], img.shape[1]
        if img.shape[1] != img.shape[2]:
            raise ZipDatasetError(f"images must be square, {self.image_names[0]} is {img.shape[2]}x{img.shape[1]}")
        if resolution is not None and self.resolution != resolution:
            raise ZipDatasetError(f"images are {self.resolution}x{self.resolution}, expected {resolution}")
        raw = np.arange(len(self.image_names), dtype=np.int64)
        if max_size is not None and max_size < raw.size:
            np.random.RandomState(random_seed).shuffle(raw)
            raw = np.sort(raw[:max_size])
        self._raw_idx = np.concatenate([raw, raw]) if xflip else raw
        self._flip = np.zeros(self._raw_idx.size, dtype=bool)
        if xflip:
            self._flip[raw.size:] = True

    # -- zip handling ----------------------------------------------------------------------------------
    def _get_zip(self) -> zipfile.ZipFile:
        if self._zip is None or self._zip_pid != os.getpid():
            self._zip = zipfile.ZipFile(self.path)
            self._zip_pid = os.getpid()
        return self._zip

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_zip"] = None
        return state

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()
            self._zip = None

    def _read(self, name: str) -> bytes:
        return self._get_zip().read(name)

    def _read_json(self, name: str) -> Any:
        try:
            return json.loads(self._read(name))
        except ValueError as exc:
            raise ZipDatasetError(f"{name} in {self.path} is not valid JSON: {exc}") from exc

    # -- raw access ------------------------------------------------------------------------------------
    def _load_labels(self) -> np.ndarray | None:
        if "dataset.json" not in self._names:
            return None
        entries = self._read_json("dataset.json").get("labels")
        if entries is None:
            return None
        table = {str(n).replace("\\", "/"): v for n, v in entries}
        missing = [n for n in self.image_names if n not in table]
        if missing:
            raise ZipDatasetError(f"dataset.json has no label for {missing[0]} ({len(missing)} images)")
        labels = np.array([table[n] for n in self.image_names], dtype=np.float32)
        if labels.ndim != 2 or labels.shape[1] != LABEL_DIM:
            raise ZipDatasetError(f"labels must have {LABEL_DIM} values, got shape {labels.shape}")
        return labels

    def _load_raw_image(self, raw: int) -> np.ndarray:
        import cv2

        name = self.image_names[raw]
        buf = np.frombuffer(self._read(name), dtype=np.uint8)
        img = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
        if img is None:
            raise ZipDatasetError(f"cannot decode {name}")
        if img.ndim == 2:
            img = img[:, :, None]
        elif img.shape[2] == 3:
            img = img[:, :, ::-1]  # BGR -> RGB
        elif img.shape[2] == 4:
            img = img[:, :, [2, 1, 0, 3]]
        return np.ascontiguousarray(img.transpose(2, 0, 1))

    def load_depth(self, raw: int) -> np.ndarray:
        """Depth [H, W] float32 of raw image ``raw`` (not flipped); inf on the background."""
        if not self.has_depth:
            raise ZipDatasetError(f"{self.path} has no depth maps")
        d = np.load(io.BytesIO(self._read(_depth_name(self.image_names[raw]))), allow_pickle=False)
        return d.astype(np.float32)

    # -- Dataset protocol ------------------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self._raw_idx.size)

    def raw_index(self, idx: int) -> int:
        return int(self._raw_idx[idx])

    def is_flipped(self, idx: int) -> bool:
        return bool(self._flip[idx])

    def get_label(self, idx: int) -> np.ndarray:
        """Label float32 [25] of item ``idx`` (mirrored for flipped items); zeros [0] without labels."""
        if self.labels is None:
            return np.zeros(0, dtype=np.float32)
        label = self.labels[self._raw_idx[idx]].copy()
        return mirror_label(label) if self._flip[idx] else label  # type: ignore[return-value]

    def __getitem__(self, idx: int) -> Any:
        raw = int(self._raw_idx[idx])
        flip = bool(self._flip[idx])
        img = self._load_raw_image(raw)
        if flip:
            img = np.ascontiguousarray(img[:, :, ::-1])
        image = torch.from_numpy(img)
        label = torch.from_numpy(self.get_label(idx))
        if not self.extras:
            return image, label
        item: dict[str, Any] = {"image": image, "label": label, "name": self.image_names[raw], "flipped": flip}
        if self.has_depth:
            d = self.load_depth(raw)
            if flip:
                d = np.ascontiguousarray(d[:, ::-1])
            item["depth"] = torch.from_numpy(d)
            item["mask"] = torch.from_numpy(np.isfinite(d))
        return item

    # -- extras ----------------------------------------------------------------------------------------
    def params(self, idx: int) -> dict[str, Any]:
        """Head parameters and scene of item ``idx`` (from params.json), with ``flipped`` added."""
        if self._params is None:
            if "params.json" not in self._names:
                raise ZipDatasetError(f"{self.path} has no params.json")
            self._params = self._read_json("params.json")
        raw = int(self._raw_idx[idx])
        p = dict(self._params[self.image_names[raw]])
        p["flipped"] = bool(self._flip[idx])
        return p

    def index_of(self, name: str) -> int:
        """Dataset index of an image name (un-flipped copy)."""
        raw = self.image_names.index(name)
        hits = np.nonzero((self._raw_idx == raw) & ~self._flip)[0]
        if hits.size == 0:
            raise KeyError(f"{name} is not in this subset")
        return int(hits[0])

    @property
    def test_heads(self) -> list[int]:
        """Test heads of a ``*_test.zip`` (empty for a training zip)."""
        return [h["head"] for h in self.test_index["heads"]] if self.test_index else []

    @property
    def test_views(self) -> list[tuple[float, float]]:
        """(yaw, pitch) in degrees of the views every test head has."""
        return [(v["yaw"], v["pitch"]) for v in self.test_index["views"]] if self.test_index else []

    def test_view(self, head: int, yaw: float, pitch: float = 0.0) -> int:
        """Dataset index of test head ``head`` seen from (yaw, pitch) degrees."""
        if not self.test_index:
            raise ZipDatasetError(f"{self.path} has no test.json (not a test split)")
        name = self.test_index["name_pattern"].format(head=head, yaw=round(yaw), pitch=round(pitch))
        try:
            return self.index_of(name)
        except ValueError:
            raise KeyError(f"no test view {name} in {self.path}") from None


def open_dataset(path: str | Path, **kw: Any) -> ZipDataset:
    """Open an EG3D zip (``ZipDataset(path, **kw)``), for symmetry with future folder readers."""
    return ZipDataset(path, **kw)
