"""Mixed precision by what the hardware really does: bf16 autocast where it runs natively (CUDA compute
capability >= 8.0, CPUs with AVX512-BF16/AMX), fp16 autocast with a GradScaler on CUDA GPUs with fp16 tensor
cores but no bf16 (Volta, Turing: Colab's T4 is 7.5), and fp32 where neither pays."""
from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

import torch

PRECISIONS = ("auto", "bf16", "fp16", "fp32")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}


def cpu_has_native_bf16() -> bool:
    """True where oneDNN runs bf16 natively (AVX512-BF16 or AMX); elsewhere bf16 autocast is far slower than fp32."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def cuda_capability(device: torch.device) -> tuple[int, int]:
    """The CUDA device's compute capability, e.g. (7, 5) for a T4, (9, 0) for an H100."""
    return torch.cuda.get_device_capability(device)


@dataclass(frozen=True)
class Precision:
    """How a device trains: the autocast dtype (None: plain fp32) and, for fp16, dynamic loss scaling."""

    name: str             # "bf16", "fp16" or "fp32"
    device_type: str      # "cuda", "cpu", "mps", ...

    @property
    def dtype(self) -> torch.dtype | None:
        return _DTYPES[self.name]

    def autocast(self):
        """A fresh autocast context for one forward pass (a no-op context in fp32)."""
        return torch.autocast(self.device_type, dtype=self.dtype) if self.dtype is not None else nullcontext()

    def grad_scaler(self) -> torch.amp.GradScaler | None:
        """A new GradScaler for fp16 (its gradients underflow without one), None otherwise."""
        return torch.amp.GradScaler(self.device_type) if self.name == "fp16" else None

    def __str__(self) -> str:
        return {"bf16": "bf16 autocast", "fp16": "fp16 autocast + GradScaler", "fp32": "fp32"}[self.name]


def choose_precision(device: torch.device | str, requested: str = "auto") -> Precision:
    """The precision to train in on `device`. "auto": bf16 on CUDA >= 8.0 and on CPUs with native bf16, fp16 on
    CUDA 7.x (tensor cores without bf16), fp32 elsewhere. "bf16", "fp16", "fp32" force one (bf16 is refused on
    a GPU that could only emulate it)."""
    device = torch.device(device)
    if requested not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {requested!r}")
    if device.type == "cuda":
        major, minor = cuda_capability(device)
        if requested == "bf16" and major < 8:
            raise ValueError(f"bf16 needs a GPU of compute capability 8.0 or newer; this one is {major}.{minor} and "
                             "would only emulate it, far slower: use precision 'fp16' or 'auto'")
        if requested == "auto":
            requested = "bf16" if major >= 8 else "fp16" if major >= 7 else "fp32"
    elif requested == "auto":
        requested = "bf16" if device.type == "cpu" and cpu_has_native_bf16() else "fp32"
    return Precision(requested, device.type)
