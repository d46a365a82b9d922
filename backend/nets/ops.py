"""Pure-PyTorch versions of the StyleGAN2 operators the official checkpoints were trained with.

The official code compiles custom CUDA ops (``bias_act``, ``upfirdn2d``) and falls back to reference maths
only off CUDA; builds of those ops are a common failure. Here there is one implementation, written from the
operators' definitions with plain ``conv2d`` / ``conv_transpose2d``, used on every device.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

SQRT2 = math.sqrt(2.0)

# Activation -> default gain (the gain that keeps the signal's second moment for unit-variance inputs).
ACTIVATION_GAIN = {"linear": 1.0, "lrelu": SQRT2, "relu": SQRT2}


def bias_act(
    x: torch.Tensor,
    b: torch.Tensor | None = None,
    act: str = "linear",
    gain: float | None = None,
    clamp: float | None = None,
    dim: int = 1,
) -> torch.Tensor:
    """Add a bias along ``dim``, apply an activation, scale by ``gain`` and clamp to ±``clamp``.

    ``gain=None`` means the activation's default gain; an explicit gain replaces it (as the official op does).
    """
    if b is not None:
        shape = [1] * x.ndim
        shape[dim] = -1
        x = x + b.reshape(shape).to(x.dtype)
    if act == "lrelu":
        x = F.leaky_relu(x, 0.2)
    elif act == "relu":
        x = F.relu(x)
    elif act != "linear":
        raise ValueError(f"unsupported activation {act!r}")
    g = ACTIVATION_GAIN[act] if gain is None else float(gain)
    if g != 1:
        x = x * g
    if clamp is not None and clamp >= 0:
        x = x.clamp(-clamp, clamp)
    return x


def setup_filter(taps: list[float] | tuple[float, ...] = (1, 3, 3, 1)) -> torch.Tensor:
    """The 2D low-pass filter the checkpoints store as ``resample_filter``: outer product, sum 1."""
    f = torch.as_tensor(taps, dtype=torch.float32)
    f = torch.outer(f, f)
    return f / f.sum()


def upfirdn2d(
    x: torch.Tensor,
    f: torch.Tensor,
    up: int = 1,
    down: int = 1,
    padding: tuple[int, int, int, int] = (0, 0, 0, 0),
    gain: float = 1.0,
) -> torch.Tensor:
    """Upsample by zero insertion, pad (x0, x1, y0, y1), convolve with the 2D FIR ``f``, downsample.

    The filter is applied as a true convolution (flipped), scaled by ``gain``; the filters used here are
    symmetric, so the flip only matters for generality.
    """
    n, c, h, w = x.shape
    if up > 1:
        x = x.reshape(n, c, h, 1, w, 1)
        x = F.pad(x, [0, up - 1, 0, 0, 0, up - 1])
        x = x.reshape(n, c, h * up, w * up)
    px0, px1, py0, py1 = padding
    x = F.pad(x, [max(px0, 0), max(px1, 0), max(py0, 0), max(py1, 0)])
    x = x[:, :, max(-py0, 0) : x.shape[2] - max(-py1, 0), max(-px0, 0) : x.shape[3] - max(-px1, 0)]
    weight = (f * gain).to(x.dtype).flip([0, 1])
    weight = weight[None, None].expand(c, 1, *f.shape)
    x = F.conv2d(x, weight, groups=c)
    if down > 1:
        x = x[:, :, ::down, ::down]
    return x


def upsample2d(x: torch.Tensor, f: torch.Tensor, up: int = 2) -> torch.Tensor:
    """Up-sample an image by ``up`` with the FIR filter (zero insertion, pad, filter with gain up²)."""
    fw = f.shape[-1]
    p0 = (fw + up - 1) // 2
    p1 = (fw - up) // 2
    return upfirdn2d(x, f, up=up, padding=(p0, p1, p0, p1), gain=up * up)


def downsample2d(x: torch.Tensor, f: torch.Tensor, down: int = 2) -> torch.Tensor:
    """Low-pass with the FIR filter, then keep every ``down``-th pixel."""
    fw = f.shape[-1]
    p0 = (fw - down + 1) // 2
    p1 = (fw - down) // 2
    return upfirdn2d(x, f, down=down, padding=(p0, p1, p0, p1))


def conv2d_resample(
    x: torch.Tensor,
    w: torch.Tensor,
    f: torch.Tensor | None = None,
    up: int = 1,
    down: int = 1,
    padding: int = 0,
    groups: int = 1,
) -> torch.Tensor:
    """2D convolution (cross-correlation with ``w``) with optional ×2 FIR up- or down-sampling.

    Up-sampling uses a stride-2 transposed convolution followed by the FIR filter, the decomposition the
    official checkpoints were trained with (``w`` is not flipped for the transposed convolution).
    Down-sampling low-passes with the FIR filter, then convolves with stride 2.
    """
    if up > 1 and down > 1:
        raise ValueError("up- and down-sampling at once is not supported")
    if down > 1:
        if f is None:
            raise ValueError("down-sampling needs a resample filter")
        kh, kw = w.shape[-2:]
        fw = f.shape[-1]
        if kw == 1 and kh == 1:
            return F.conv2d(downsample2d(x, f, down), w.to(x.dtype), groups=groups)
        p0 = padding + (fw - down + 1) // 2
        p1 = padding + (fw - down) // 2
        x = upfirdn2d(x, f, padding=(p0, p1, p0, p1))
        return F.conv2d(x, w.to(x.dtype), stride=down, groups=groups)
    if up == 1:
        return F.conv2d(x, w.to(x.dtype), padding=padding, groups=groups)
    if f is None:
        raise ValueError("up-sampling needs a resample filter")
    out_ch, in_per_group, kh, kw = w.shape
    fw = f.shape[-1]
    px0 = padding + (fw + up - 1) // 2 - (kw - 1)
    px1 = padding + (fw - up) // 2 - (kw - up)
    py0 = padding + (fw + up - 1) // 2 - (kh - 1)
    py1 = padding + (fw - up) // 2 - (kh - up)
    # conv_transpose2d wants [in, out/groups, kh, kw]; swap in/out inside every group.
    wt = w.reshape(groups, out_ch // groups, in_per_group, kh, kw).transpose(1, 2)
    wt = wt.reshape(groups * in_per_group, out_ch // groups, kh, kw)
    x = F.conv_transpose2d(x, wt.to(x.dtype), stride=up, groups=groups)
    return upfirdn2d(x, f, padding=(px0, px1, py0, py1), gain=up * up)


def modulated_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    styles: torch.Tensor,
    noise: torch.Tensor | None = None,
    up: int = 1,
    padding: int = 0,
    resample_filter: torch.Tensor | None = None,
    demodulate: bool = True,
    fused: bool = True,
) -> torch.Tensor:
    """StyleGAN2's modulated (and optionally demodulated) convolution.

    ``fused`` runs one grouped convolution with per-sample weights (best for small batches and inference);
    otherwise the input is scaled by the styles and a shared convolution runs (best for training batches).
    Both compute the same function. Noise is added after demodulation, before the bias.
    """
    batch = x.shape[0]
    _, in_ch, kh, kw = weight.shape
    if x.dtype == torch.float16 and demodulate:
        # Keep fp16 activations in range; a no-op apart from the 1e-8 in the demodulation.
        weight = weight * (1 / math.sqrt(in_ch * kh * kw) / weight.norm(float("inf"), dim=[1, 2, 3],
                                                                           keepdim=True))
        styles = styles / styles.norm(float("inf"), dim=1, keepdim=True)
    dcoefs = None
    if demodulate or fused:
        w = weight.unsqueeze(0) * styles.reshape(batch, 1, -1, 1, 1)
        if demodulate:
            dcoefs = (w.square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt()
    if not fused:
        x = x * styles.to(x.dtype).reshape(batch, -1, 1, 1)
        x = conv2d_resample(x, weight, f=resample_filter, up=up, padding=padding)
        if dcoefs is not None:
            x = x * dcoefs.to(x.dtype).reshape(batch, -1, 1, 1)
        if noise is not None:
            x = x + noise.to(x.dtype)
        return x
    if dcoefs is not None:
        w = w * dcoefs.reshape(batch, -1, 1, 1, 1)
    x = x.reshape(1, -1, *x.shape[2:])
    w = w.reshape(-1, in_ch, kh, kw)
    x = conv2d_resample(x, w, f=resample_filter, up=up, padding=padding, groups=batch)
    x = x.reshape(batch, -1, *x.shape[2:])
    if noise is not None:
        x = x + noise.to(x.dtype)
    return x


def normalize_2nd_moment(x: torch.Tensor, dim: int = 1, eps: float = 1e-8) -> torch.Tensor:
    return x * (x.square().mean(dim=dim, keepdim=True) + eps).rsqrt()
