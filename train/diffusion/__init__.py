# SPDX-License-Identifier: GPL-3.0-or-later
"""Training IVID's RGBD diffusion models (G_u and G_c) on our synthetic heads."""
