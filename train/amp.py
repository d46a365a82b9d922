"""Mixed precision for the trainers: bf16 autocast around forward passes, or nothing.

Why bf16 and no gradient scaler: bf16 keeps float32's exponent range, so gradients neither underflow nor
overflow the way fp16's do, and the loss needs no scaling. Parameters, optimiser state, EMA and losses stay
float32; only the layers autocast picks (convolutions, linear layers, matmuls) run in bf16. Wrap forward
passes and loss terms, never ``backward()`` (PyTorch's rule for autocast); outputs that feed a loss should be
cast back with ``.float()``.

Where it runs: CUDA devices with native bf16 (Ampere and newer, e.g. the H100) and the CPU, where PyTorch's
autocast supports bf16 on every x86/ARM build (fast only on CPUs with bf16 instructions, e.g. AVX512-BF16 or
AMX; elsewhere it is emulated and slower than float32 — useful for testing, not for speed).
"""

from __future__ import annotations

import contextlib

import torch

AMP_DTYPE = torch.bfloat16


def bf16_autocast_supported(device: torch.device | str) -> bool:
    """Whether ``torch.autocast`` can run bf16 on this device."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)
    if device.type == "cpu":
        return True
    return torch.amp.is_autocast_available(device.type)


def check_amp(device: torch.device | str) -> None:
    """Refuse ``--amp`` early, with a reason, where bf16 autocast cannot run."""
    device = torch.device(device)
    if not bf16_autocast_supported(device):
        raise ValueError(f"--amp needs bf16 autocast, which {device} does not support "
                         "(CUDA needs an Ampere or newer GPU); train without --amp")


def autocast(device: torch.device | str, enabled: bool = True) -> contextlib.AbstractContextManager[object]:
    """A context for one forward pass: bf16 autocast when ``enabled``, else a no-op.

    A fresh context per use (``with autocast(dev, amp): ...``) so it can be entered anywhere, nested and
    from several threads.
    """
    if not enabled:
        return contextlib.nullcontext()
    device = torch.device(device)
    check_amp(device)
    return torch.autocast(device_type=device.type, dtype=AMP_DTYPE)
