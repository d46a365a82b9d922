# SPDX-License-Identifier: GPL-3.0-or-later
"""MiDaS-style scale-and-shift-invariant (SSI) disparity loss, with the background pinned to disparity 0.

The prediction ``p`` is disparity up to an unknown affine map, so every term first aligns it to the
ground-truth disparity ``g`` (``1/z`` on the head, 0 on the background) by a per-image least-squares scale and
shift, and measures residuals in units of the image's mean head disparity (they read as relative errors):

* ``data``: (s, t) fitted over the **head pixels**; mean L1 of the aligned residual over the head;
* ``gradient``: MiDaS's multi-scale gradient matching of that residual (x/y differences at 4 scales, over
  pixel pairs that both lie on the head);
* ``background``: (s, t) fitted over **all pixels**, head and background weighted equally; mean L1 of the
  residual over the head plus over the background (disparity 0, depth ``inf``), halved.

Why two fits: the head's disparity spans only ~15 % (z ≈ 2.35–2.7 for the FFHQ orbit) while the background
jumps to 0. A single fit over all pixels is dominated by that jump (the network learns a segmentation, the
head's shape is a small correction); a single fit over the head alone makes the background an
ill-conditioned extrapolation (tried: the background term dominated and barely fell). The head fit teaches
relative depth; the whole-image fit teaches where the background is and pins it to disparity 0, which is
what lets :func:`backend.depth.depth_for_view` recover metric disparity from percentiles of ``p``.

Every term is invariant to ``p -> a·p + b`` (any a ≠ 0): the fitted (s, t) absorb it exactly.
"""

from __future__ import annotations

import torch

SCALES = 4


def align(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image least-squares (s, t) [B] over ``mask`` (bool), or weighted by ``mask`` (float weights);
    differentiable; a flat prediction gets s = 0, t = the mean target."""
    m = mask.to(pred.dtype)
    n = m.sum(dim=(1, 2, 3)).clamp_min(1e-12)
    pm = (pred * m).sum(dim=(1, 2, 3)) / n
    gm = (target * m).sum(dim=(1, 2, 3)) / n
    dp = pred - pm[:, None, None, None]
    dg = target - gm[:, None, None, None]
    var = (dp * dp * m).sum(dim=(1, 2, 3)) / n
    cov = (dp * dg * m).sum(dim=(1, 2, 3)) / n
    s = cov / var.clamp_min(1e-12)
    return s, gm - s * pm


def gradient_matching(residual: torch.Tensor, mask: torch.Tensor, scales: int = SCALES) -> torch.Tensor:
    """Per-image multi-scale gradient-matching term [B] of a residual map [B, 1, H, W]: mean |x/y difference|
    over neighbouring pixel pairs that are both inside ``mask``, summed over scales."""
    total = residual.new_zeros(residual.shape[0])
    for k in range(scales):
        r = residual[:, :, :: 2**k, :: 2**k]
        m = mask[:, :, :: 2**k, :: 2**k].to(residual.dtype)
        if r.shape[-1] < 2 or r.shape[-2] < 2:
            break
        mx = m[..., :, 1:] * m[..., :, :-1]
        my = m[..., 1:, :] * m[..., :-1, :]
        gx = ((r[..., :, 1:] - r[..., :, :-1]).abs() * mx).sum(dim=(1, 2, 3))
        gy = ((r[..., 1:, :] - r[..., :-1, :]).abs() * my).sum(dim=(1, 2, 3))
        total = total + (gx + gy) / (mx.sum(dim=(1, 2, 3)) + my.sum(dim=(1, 2, 3))).clamp_min(1.0)
    return total


def balanced_weights(mask: torch.Tensor) -> torch.Tensor:
    """Per-pixel weights giving the head and the background equal total weight in each image."""
    m = mask.to(torch.float32)
    bg = 1.0 - m
    return (m / m.sum(dim=(1, 2, 3), keepdim=True).clamp_min(1.0)
            + bg / bg.sum(dim=(1, 2, 3), keepdim=True).clamp_min(1.0))


def orientation(pred: torch.Tensor, disparity: torch.Tensor, mask: torch.Tensor) -> float:
    """Majority sign of the per-image whole-image alignment scales: +1 when larger outputs mean nearer, -1 when the
    network learned the mirror image. The loss cannot tell them apart (it is invariant to a negative
    scale, too), so the trainer exports the network with its output negated when this is -1."""
    s, _ = align(pred, disparity, balanced_weights(mask).to(pred.dtype))
    return 1.0 if float(torch.sign(s).sum()) >= 0 else -1.0


def ssi_loss(pred: torch.Tensor, disparity: torch.Tensor, mask: torch.Tensor, background_weight: float = 1.0,
             gradient_weight: float = 0.5) -> tuple[torch.Tensor, dict[str, float]]:
    """Scale-and-shift-invariant loss of predictions [B, 1, H, W] against ground-truth disparity [B, 1, H, W]
    (1/z on the head, 0 on the background) with the head mask [B, 1, H, W]; returns (loss, parts)."""
    mask = mask.bool()
    m = mask.to(pred.dtype)
    bg = 1.0 - m
    n_head = m.sum(dim=(1, 2, 3))
    n_bg = bg.sum(dim=(1, 2, 3))
    scale = ((disparity * m).sum(dim=(1, 2, 3)) / n_head.clamp_min(1.0)).clamp_min(1e-6)[:, None, None, None]

    def residual(weights: torch.Tensor) -> torch.Tensor:
        s, t = align(pred, disparity, weights)
        return (s[:, None, None, None] * pred + t[:, None, None, None] - disparity) / scale

    r_head = residual(mask)
    data = (r_head.abs() * m).sum(dim=(1, 2, 3)) / n_head.clamp_min(1.0)
    grad = gradient_matching(r_head, mask)
    r_all = residual(balanced_weights(mask).to(pred.dtype)).abs()
    background = 0.5 * ((r_all * m).sum(dim=(1, 2, 3)) / n_head.clamp_min(1.0)
                        + (r_all * bg).sum(dim=(1, 2, 3)) / n_bg.clamp_min(1.0))
    valid = (n_head > 0).to(pred.dtype)  # an image without a head carries no depth information
    per_image = (data + background_weight * background + gradient_weight * grad) * valid
    loss = per_image.sum() / valid.sum().clamp_min(1.0)
    data, background, grad = data.detach(), background.detach(), grad.detach()
    parts = {"loss/data": float((data * valid).sum() / valid.sum().clamp_min(1.0)),
             "loss/background": float((background * valid).sum() / valid.sum().clamp_min(1.0)),
             "loss/gradient": float((grad * valid).sum() / valid.sum().clamp_min(1.0)),
             "loss/total": float(loss.detach())}
    return loss, parts
