# SPDX-License-Identifier: GPL-3.0-or-later
"""EG3D-format zip reader: images, labels, x-flip with mirrored cameras, extras, test split, workers."""

from __future__ import annotations

import json
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from backend.cameras import make_label, orbit_camera
from train.data import ZipDataset, ZipDatasetError, mirror_label
from train.synthetic import build_dataset, render, sample_head, sample_scene

RES = 32


@pytest.fixture(scope="module")
def zips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("zipds")
    out = d / "ds.zip"
    build_dataset(out, count=12, res=RES, seed=11, test_heads=2, workers=1, progress=False)
    return {"train": out, "test": d / "ds_test.zip"}


def _eg3d_style_zip(path: Path, n: int = 5, labels: bool = True, res: int = 16) -> Path:
    """A zip as EG3D's dataset_tool writes it: PNGs in 00000/, dataset.json, no extras."""
    import cv2

    rng = np.random.default_rng(0)
    with zipfile.ZipFile(path, "w") as zf:
        entries = []
        for i in range(n):
            img = rng.integers(0, 255, (res, res, 3), dtype=np.uint8)
            name = f"00000/img{i:08d}.png"
            zf.writestr(name, cv2.imencode(".png", img[:, :, ::-1])[1].tobytes())
            entries.append([name, [float(v) for v in make_label(orbit_camera(10.0 * i, 0.0))]])
        zf.writestr("dataset.json", json.dumps({"labels": entries if labels else None}))
    return path


def test_reads_our_zip(zips: dict[str, Path]) -> None:
    ds = ZipDataset(zips["train"], resolution=RES)
    assert len(ds) == 12 and ds.resolution == RES and ds.num_channels == 3 and ds.has_depth
    img, label = ds[3]
    assert img.dtype == torch.uint8 and img.shape == (3, RES, RES)
    assert label.dtype == torch.float32 and label.shape == (25,)
    p = ds.params(3)
    assert np.allclose(label.numpy(), make_label(orbit_camera(p["yaw"], p["pitch"])), atol=1e-4)
    item = ZipDataset(zips["train"], extras=True)[3]
    assert torch.equal(item["image"], img) and item["name"] == "00000/img00000003.png"
    assert item["depth"].dtype == torch.float32 and item["depth"].shape == (RES, RES)
    assert torch.equal(item["mask"], torch.isfinite(item["depth"]))
    # background pixels (depth inf) have the background colour of params.json (vertical gradient)
    v = (np.arange(RES) + 0.5) / RES
    top, bot = np.array(p["bg_top"]), np.array(p["bg_bottom"])
    bg = np.clip((top[:, None] + (bot - top)[:, None] * v[None]) * 255 + 0.5, 0, 255).astype(int)  # [3, R]
    bg = np.broadcast_to(bg[:, :, None], (3, RES, RES))
    back = ~item["mask"].numpy()
    assert back.any() and np.abs(item["image"].numpy().astype(int) - bg)[:, back].max() <= 1
    with pytest.raises(ZipDatasetError, match="expected 64"):
        ZipDataset(zips["train"], resolution=64)


def test_max_size_is_a_fixed_subset(zips: dict[str, Path]) -> None:
    a = ZipDataset(zips["train"], max_size=5, random_seed=3)
    b = ZipDataset(zips["train"], max_size=5, random_seed=3)
    assert len(a) == 5 and [a.raw_index(i) for i in range(5)] == [b.raw_index(i) for i in range(5)]
    assert sorted(a.raw_index(i) for i in range(5)) == [a.raw_index(i) for i in range(5)]
    c = ZipDataset(zips["train"], max_size=100)
    assert len(c) == 12


def test_xflip_items(zips: dict[str, Path]) -> None:
    ds = ZipDataset(zips["train"], xflip=True, extras=True)
    assert len(ds) == 24
    a, b = ds[2], ds[2 + 12]
    assert not a["flipped"] and b["flipped"] and a["name"] == b["name"]
    assert torch.equal(b["image"], a["image"].flip(-1))
    assert torch.equal(b["depth"], a["depth"].flip(-1))
    assert torch.allclose(b["label"], torch.as_tensor(mirror_label(a["label"])))
    assert ds.params(14)["flipped"]


def test_mirror_label_formula() -> None:
    for yaw, pitch in [(0.0, 0.0), (25.0, 7.0), (-50.0, -12.0)]:
        lab = make_label(orbit_camera(yaw, pitch))
        assert np.allclose(mirror_label(lab), make_label(orbit_camera(-yaw, pitch)), atol=1e-6)
        assert np.allclose(mirror_label(mirror_label(lab)), lab)
        c2w = mirror_label(lab)[:16].reshape(4, 4)
        assert np.isclose(np.linalg.det(c2w[:3, :3]), 1.0, atol=1e-5)  # still a proper rotation
    t = torch.as_tensor(make_label(orbit_camera(20.0, 5.0))).repeat(3, 1)
    assert torch.allclose(mirror_label(t), torch.as_tensor(make_label(orbit_camera(-20.0, 5.0))), atol=1e-6)
    # a principal point off-centre moves to the mirrored position
    off = make_label(orbit_camera(0.0, 0.0), cx=0.4)
    assert np.isclose(mirror_label(off)[18], 0.6)


def test_mirrored_image_equals_render_from_mirrored_camera() -> None:
    """For a left-right symmetric head and light, flipping the image = rendering the mirrored camera."""
    head = replace(sample_head(5, 1), head_roll_deg=0.0)
    scene = replace(sample_scene(5, 1), light_dir=(0.0, 0.6, 0.8), yaw_deg=25.0, pitch_deg=6.0)
    res = 48
    a = render([head], [scene], res)
    label_m = mirror_label(a.labels[0])
    b = render([head], [scene], res, labels=label_m[None])
    flipped = a.images[0][:, ::-1].astype(int)
    diff = np.abs(flipped - b.images[0].astype(int))
    assert diff.max() <= 1 and diff.mean() < 0.01, (diff.max(), diff.mean())  # (rounding only)
    da, db = a.depth[0][:, ::-1], b.depth[0]
    assert np.array_equal(np.isfinite(da), np.isfinite(db))
    both = np.isfinite(da)
    assert both.mean() > 0.3 and np.abs(da[both] - db[both]).max() < 1e-4
    # and the mirrored label is the camera at -yaw (FFHQ orbit), as a data set would store it
    assert np.allclose(label_m, make_label(orbit_camera(-25.0, 6.0)), atol=1e-5)


def test_test_split_access(zips: dict[str, Path]) -> None:
    ds = ZipDataset(zips["test"], extras=True)
    assert ds.test_heads == [0, 1] and len(ds.test_views) == 27 and len(ds) == 54
    i = ds.test_view(1, -45, 10)
    item = ds[i]
    assert item["name"] == "h00001/y-45_p+10.png"
    p = ds.params(i)
    assert p["head"] == 1 and p["yaw"] == -45 and p["pitch"] == 10
    assert np.allclose(item["label"].numpy(), make_label(orbit_camera(-45.0, 10.0)), atol=1e-5)
    # same head and light in every view: the head parameters agree
    q = ds.params(ds.test_view(1, 0, 0))
    assert q["hair_style"] == p["hair_style"] and q["light_dir"] == p["light_dir"]
    with pytest.raises(KeyError):
        ds.test_view(1, 20, 0)
    with pytest.raises(ZipDatasetError):
        ZipDataset(zips["train"]).test_view(0, 0, 0)


def test_eg3d_dataset_tool_zip(tmp_path: Path) -> None:
    ds = ZipDataset(_eg3d_style_zip(tmp_path / "e.zip"), xflip=True)
    assert len(ds) == 10 and not ds.has_depth
    img, lab = ds[1]
    assert img.shape == (3, 16, 16)
    assert np.allclose(lab.numpy(), make_label(orbit_camera(10.0, 0.0)))
    assert np.allclose(ds[6][1].numpy(), make_label(orbit_camera(-10.0, 0.0)), atol=1e-6)
    unl = ZipDataset(_eg3d_style_zip(tmp_path / "u.zip", labels=False))
    assert unl.labels is None and unl[0][1].shape == (0,)
    with pytest.raises(ZipDatasetError, match="no depth"):
        unl.load_depth(0)


def test_bad_zips(tmp_path: Path) -> None:
    (tmp_path / "n.zip").write_bytes(b"not a zip")
    with pytest.raises(ZipDatasetError, match="not a zip"):
        ZipDataset(tmp_path / "n.zip")
    p = _eg3d_style_zip(tmp_path / "m.zip")
    with zipfile.ZipFile(p, "a") as zf:
        zf.writestr("00000/img00000099.png", zf.read("00000/img00000000.png"))
    with pytest.raises(ZipDatasetError, match=r"no label for 00000/img00000099\.png"):
        ZipDataset(p)


def test_dataloader_workers(zips: dict[str, Path]) -> None:
    ds = ZipDataset(zips["train"], xflip=True)
    ds[0]  # the parent has opened the zip: workers must not reuse its handle
    serial = torch.stack([ds[i][0] for i in range(len(ds))])
    loader = torch.utils.data.DataLoader(ds, batch_size=5, num_workers=2, shuffle=False)
    imgs = torch.cat([b[0] for b in loader])
    labels = torch.cat([b[1] for b in loader])
    assert torch.equal(imgs, serial) and labels.shape == (24, 25)
