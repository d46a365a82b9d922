# SPDX-License-Identifier: GPL-3.0-or-later
"""RGBD diffusion models (IVID's G_u and G_c): the UNet, the noise schedule, samplers and model files."""
