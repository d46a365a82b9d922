# SPDX-License-Identifier: GPL-3.0-or-later
"""Monocular depth for Aware3D: our own small network in place of IVID's MiDaS (spec §4.1, §12.1)."""

from .estimate import (
    NEAREST_OFFSET,
    PRESETS,
    align_scale_shift,
    depth_config,
    depth_for_view,
    estimate_disparity,
    metric_disparity,
    nearest_distance,
)

__all__ = ["NEAREST_OFFSET", "PRESETS", "align_scale_shift", "depth_config", "depth_for_view",
           "estimate_disparity", "metric_disparity", "nearest_distance"]
