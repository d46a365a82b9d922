# SPDX-License-Identifier: GPL-3.0-or-later
"""Training the monocular depth network (``aware3d-train depth``): loss, data, loop, evaluation."""
