# SPDX-License-Identifier: GPL-3.0-or-later
"""Distillation: train the tri-plane generator from the ground truth of our synthetic heads.

``z`` is the head's calibrated latent (:mod:`train.synthetic.latent`), so every training example is
``G(z, camera)`` against the true image, depth and signed distance of that very head. See
:mod:`train.distill.loop` for the losses and ``aware3d-train distill`` for the command.
"""
