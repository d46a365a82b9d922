# SPDX-License-Identifier: GPL-3.0-or-later
"""Procedural "synthetic heads": the training and evaluation data every Aware3D model is made from.

No pretrained weights or photo collections can be downloaded, so the data come from our own code: heads
built as signed distance fields from parameterised parts (:mod:`.sdf`, :mod:`.layout`, colours in
:mod:`.albedo`, public per-head functions in :mod:`.heads`), sampled
deterministically per (seed, index) (:mod:`.params`), rendered by a batched torch sphere tracer in EG3D's
FFHQ camera convention (:mod:`.tracer`) and written as EG3D-format zips with depth and parameters
(:mod:`.writer`).

Public API::

    head_sdf(params, points[N, 3]) -> Tensor[N]       # ground-truth geometry, world units, < 0 inside
    head_albedo(params, points[N, 3]) -> Tensor[N, 3]  # linear RGB albedo at (surface) points
    sample_head(seed, index, split=0) -> HeadParams
    render(heads, scenes, res, device="cpu", labels=None) -> Rendered
    build_dataset(out, count, res, seed=0, test_heads=0, ...) -> summary dict
"""

from .heads import head_albedo, head_sdf
from .params import HeadParams, SceneParams, sample_head, sample_scene, sample_test_scene, test_views
from .tracer import Rendered, render, scene_label
from .writer import DatasetError, build_dataset, depth_name, image_name, test_image_name

__all__ = [
    "DatasetError",
    "HeadParams",
    "Rendered",
    "SceneParams",
    "build_dataset",
    "depth_name",
    "head_albedo",
    "head_sdf",
    "image_name",
    "render",
    "sample_head",
    "sample_scene",
    "sample_test_scene",
    "scene_label",
    "test_image_name",
    "test_views",
]
