# SPDX-License-Identifier: GPL-3.0-or-later
"""Diffusion novel views (IVID): RGBD views, their warps and aggregation, and the view-generation loop."""
