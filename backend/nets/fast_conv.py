"""Inference kernels for the StyleGAN2 layers: the same functions as ``ops``, arranged for speed.

The reference layers (``ops.modulated_conv2d`` then ``ops.bias_act``) follow the official operator order op
for op, which the parity tests pin bit for bit. Measured on 2 CPU cores (docs/speed.md), most of their time is
not the convolutions' arithmetic but how they are laid out around it:

- oneDNN runs convolutions, transposed convolutions and the depthwise FIR filters much faster on
  channels-last tensors (NHWC; ×2.7 for the stride-2 transposed convolution and the FIR filter at 512²) than
  on the NCHW tensors the reference code passes, which it reorders on every call;
- the bias, activation gain and clamp are four separate passes over each activation, each allocating a new
  tensor, and the FIR filter pads into a fresh copy first.

Here the activation gain is folded into the (already per-sample) convolution weights and the bias
(``lrelu(g·z) = g·lrelu(z)`` for ``g > 0``), the bias rides in the convolution (or in the FIR filter after an
up-sampling convolution), noise, activation and clamp are applied in place, the FIR filter pads inside the
convolution, and a single sample's activations stay channels-last between layers (a batch of per-sample
weights stays NCHW: ``_layout``). Only float32 tensors, with no autograd recording and no autocast, take this
path (``applies``); everything else, and ``--exact``, runs the reference code. The results equal the
reference within float rounding (tests/test_fast_paths.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

CHANNELS_LAST = torch.channels_last


def _layout(n: int) -> torch.memory_format:
    """Channels-last for one sample; NCHW for a batch of per-sample weights. A grouped convolution over N
    samples sees one [1, N·C, H, W] tensor, which is a view of an NCHW batch but a copy of a channels-last one
    (Mimic3D's roll-outs run the three planes as a batch of 3: +176 MB and no speed-up at 512²)."""
    return CHANNELS_LAST if n == 1 else torch.contiguous_format


def applies(kernels: str, fused: bool, x: torch.Tensor) -> bool:
    """Whether the fast kernels may run: asked for, inference-shaped (per-sample fused weights), float32, with
    no gradient being recorded (in-place activations would break autograd) and no autocast (which would
    change the arithmetic under them)."""
    return (kernels == "fast" and fused and x.dtype == torch.float32 and not torch.is_grad_enabled()
            and not torch.is_autocast_enabled(x.device.type))


def _demodulated_weights(weight: torch.Tensor, styles: torch.Tensor, demodulate: bool,
                         scale: float) -> torch.Tensor:
    """Per-sample weights [N·K, C, kh, kw]: modulated, demodulated (as the reference computes the
    coefficients: ``rsqrt(Σ w² + 1e-8)``) and multiplied by the folded activation gain ``scale``."""
    n = styles.shape[0]
    k, c, kh, kw = weight.shape
    w = weight.unsqueeze(0) * styles.reshape(n, 1, -1, 1, 1)
    if demodulate:
        d = (w.square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt()
        w = w * (d * scale).reshape(n, -1, 1, 1, 1)
    elif scale != 1:
        w = w * scale
    return w.reshape(n * k, c, kh, kw)


def _fir_weights(f: torch.Tensor, channels: int, gain: float, dtype: torch.dtype) -> torch.Tensor:
    """A depthwise convolution kernel [channels, 1, fh, fw] applying the FIR ``f`` as a true convolution."""
    return (f * gain).to(dtype).flip([0, 1])[None, None].expand(channels, 1, *f.shape).contiguous()


def upsample2d(x: torch.Tensor, f: torch.Tensor, up: int = 2) -> torch.Tensor:
    """``ops.upsample2d`` (zero insertion, pad, FIR with gain up²) as one depthwise transposed convolution.

    Zero insertion followed by a correlation with the flipped filter is a stride-``up`` transposed
    convolution with the filter itself; the reference's padding (``p0 = (fw + up - 1) // 2`` before,
    ``p1 = (fw - up) // 2`` after) becomes a crop of ``fw - 1 - p0`` rows and columns on each side.
    """
    _, c, h, w = x.shape
    fw = f.shape[-1]
    p0 = (fw + up - 1) // 2
    crop = fw - 1 - p0
    kernel = (f * (up * up)).to(x.dtype)[None, None].expand(c, 1, *f.shape).contiguous()
    y = F.conv_transpose2d(x.contiguous(memory_format=_layout(x.shape[0])), kernel, stride=up, groups=c)
    return y[:, :, crop : crop + h * up, crop : crop + w * up]


def synthesis_layer(
    x: torch.Tensor,
    weight: torch.Tensor,
    styles: torch.Tensor,
    bias: torch.Tensor,
    noise: torch.Tensor | None,
    up: int,
    padding: int,
    resample_filter: torch.Tensor,
    act: str,
    gain: float,
    clamp: float | None,
) -> torch.Tensor:
    """``bias_act(modulated_conv2d(x, …, noise), bias, act, gain, clamp)`` for float32 inference.

    ``gain`` is the total gain the reference applies after the activation (the activation's own times the
    caller's); it must be positive, which it always is here.
    """
    n = x.shape[0]
    k = weight.shape[0]
    layout = _layout(n)
    w = _demodulated_weights(weight, styles, True, gain).contiguous(memory_format=layout)
    b = (bias * gain).to(x.dtype).repeat(n)
    xg = x.contiguous(memory_format=layout).reshape(1, -1, *x.shape[2:])
    if up == 1:
        y = F.conv2d(xg, w, bias=b if noise is None else None, padding=padding, groups=n)
    else:
        y = _conv_up(xg, w, resample_filter, up, padding, n, bias=b if noise is None else None, layout=layout)
    y = y.reshape(n, k, *y.shape[2:])
    if noise is not None:
        y.add_((noise * gain).to(y.dtype))
        y.add_(b.reshape(n, k, 1, 1))
    if act == "lrelu":
        F.leaky_relu_(y, 0.2)
    elif act == "relu":
        F.relu_(y)
    elif act != "linear":
        raise ValueError(f"unsupported activation {act!r}")
    if clamp is not None and clamp >= 0:
        y.clamp_(-clamp, clamp)
    return y


def _conv_up(x: torch.Tensor, w: torch.Tensor, f: torch.Tensor, up: int, padding: int, groups: int,
             bias: torch.Tensor | None, layout: torch.memory_format = CHANNELS_LAST) -> torch.Tensor:
    """``ops.conv2d_resample`` with ``up``: stride-``up`` transposed convolution, then the FIR filter (gain
    up²), whose padding the convolution does itself when it is the same on both sides (it is for the 3×3
    layers; otherwise an explicit pad)."""
    out_ch, in_per_group, kh, kw = w.shape
    fw = f.shape[-1]
    px0 = padding + (fw + up - 1) // 2 - (kw - 1)
    px1 = padding + (fw - up) // 2 - (kw - up)
    wt = w.reshape(groups, out_ch // groups, in_per_group, kh, kw).transpose(1, 2)
    wt = wt.reshape(groups * in_per_group, out_ch // groups, kh, kw).contiguous(memory_format=layout)
    y = F.conv_transpose2d(x, wt, stride=up, groups=groups)
    fir = _fir_weights(f, out_ch, up * up, y.dtype)
    if px0 == px1 and px0 >= 0:
        return F.conv2d(y, fir, bias=bias, padding=px0, groups=out_ch)
    y = F.pad(y, [max(px0, 0), max(px1, 0), max(px0, 0), max(px1, 0)])
    y = y[:, :, max(-px0, 0) : y.shape[2] - max(-px1, 0), max(-px0, 0) : y.shape[3] - max(-px1, 0)]
    return F.conv2d(y, fir, bias=bias, groups=out_ch)


def to_rgb(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor, bias: torch.Tensor,
           clamp: float | None) -> torch.Tensor:
    """ToRGB: modulated 1×1 convolution without demodulation, bias, clamp (``ToRGBLayer`` in inference).

    A 1×1 convolution of a channels-last activation is a matrix product of its [H·W, C] pixels: done as one,
    because oneDNN, given a 1×1 weight that is both NCHW- and NHWC-contiguous, picks NCHW and first copies the
    whole activation (a third of the SR module's time at 512²).
    """
    n, c, h, w = x.shape
    k = weight.shape[0]
    if n > 1:  # a batch of per-sample weights: one grouped convolution over the NCHW batch (see _layout)
        wg = _demodulated_weights(weight, styles, False, 1.0)
        y = F.conv2d(x.contiguous().reshape(1, -1, h, w), wg, bias=bias.to(x.dtype).repeat(n), groups=n)
        y = y.reshape(n, k, h, w)
    else:
        wm = _demodulated_weights(weight, styles, False, 1.0).reshape(1, k, c)
        pixels = x.contiguous(memory_format=CHANNELS_LAST).permute(0, 2, 3, 1).reshape(1, h * w, c)  # a view
        y = torch.baddbmm(bias.to(x.dtype).reshape(1, 1, k), pixels, wm.transpose(1, 2))
        y = y.reshape(1, h, w, k).permute(0, 3, 1, 2)
    if clamp is not None and clamp >= 0:
        y.clamp_(-clamp, clamp)
    return y
