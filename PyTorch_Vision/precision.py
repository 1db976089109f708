"""Mixed precision by what the hardware really does: bf16 autocast on GPUs that have it (CUDA compute capability
>= 8.0), fp16 autocast with a GradScaler on CUDA GPUs with fp16 tensor cores but no bf16 (Volta, Turing: Colab's
T4 is 7.5); on a CPU with native bf16 (AVX512-BF16, AMX), whichever of bf16 and fp32 trains the model faster
there, by a few timed steps; fp32 elsewhere."""
from __future__ import annotations

import copy
import time
from contextlib import nullcontext
from dataclasses import dataclass, field

import torch
from torch import nn

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
    rates: tuple[tuple[str, float], ...] = field(default=(), compare=False)  # (name, img/s) timed to choose it

    def __post_init__(self):
        if self.name not in _DTYPES:  # what choose_precision is asked for: "auto" or one of these
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.name!r}")

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
        text = {"bf16": "bf16 autocast", "fp16": "fp16 autocast + GradScaler", "fp32": "fp32"}[self.name]
        if self.rates:
            text += " (faster here: " + ", ".join(f"{name} {rate:.0f} img/s" for name, rate in self.rates) + ")"
        return text


FP32 = Precision("fp32", "cpu")  # autocast off; the device type does not matter then


def training_rate(model: nn.Module, precision: Precision, batch_size: int, channels_last: bool = True,
                  steps: int = 2, image_shape: tuple[int, ...] = (3, 32, 32)) -> float:
    """Images per second of forward and backward passes of a copy of `model` on a random batch of `batch_size`, in
    `precision`: the fastest of `steps` timed passes, after one untimed. The model and the global RNG are
    untouched."""
    trial = copy.deepcopy(model).train()
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(batch_size, *image_shape, generator=torch.Generator().manual_seed(0))
    x = x.to(next(trial.parameters()).device, memory_format=memory_format)
    seconds = []
    for _ in range(steps + 1):
        wait_for(x.device)
        start = time.perf_counter()
        with precision.autocast():
            out = trial(x)
        out.float().square().mean().backward()
        wait_for(x.device)  # a GPU returns before its work is done: the clock would time the launches only
        seconds.append(time.perf_counter() - start)
    return batch_size / min(seconds[1:])


def wait_for(device: torch.device) -> None:
    """Block until `device` has done the work queued on it (torch.cuda.synchronize on a GPU; a no-op on the CPU)."""
    backend = getattr(torch, device.type, None)
    if backend is not None and hasattr(backend, "synchronize"):
        backend.synchronize()


def faster_cpu_precision(model: nn.Module, batch_size: int, channels_last: bool = True, margin: float = 1.2,
                         steps: int = 2) -> Precision:
    """bf16 or fp32, whichever trains `model` faster on this CPU at `batch_size`; bf16, which rounds, must win by
    `margin`. Measured for ResNet18 at batch 128: AMX and Zen 4 run bf16 2-2.5x faster; a Xeon with AVX512-BF16
    but no AMX runs fp32 1.25x faster."""
    rates = {name: training_rate(model, Precision(name, "cpu"), batch_size, channels_last, steps)
             for name in ("bf16", "fp32")}
    name = "bf16" if rates["bf16"] > margin * rates["fp32"] else "fp32"
    return Precision(name, "cpu", tuple(rates.items()))


def choose_precision(device: torch.device | str, requested: str = "auto", model: nn.Module | None = None,
                     batch_size: int = 128, channels_last: bool = True) -> Precision:
    """The precision to train in on `device`. "auto": bf16 on CUDA >= 8.0, fp16 on CUDA 7.x (tensor cores without
    bf16); on a CPU with native bf16, the faster of bf16 and fp32 for `model` at `batch_size` when a model is
    given (bf16 without one); fp32 elsewhere. "bf16", "fp16", "fp32" force one (bf16 is refused on a GPU that
    could only emulate it)."""
    device = torch.device(device)
    if device.type == "cuda":
        major, minor = cuda_capability(device)
        if requested == "bf16" and major < 8:
            raise ValueError(f"bf16 needs a GPU of compute capability 8.0 or newer; this one is {major}.{minor} and "
                             "would only emulate it, far slower: use precision 'fp16' or 'auto'")
        if requested == "auto":
            requested = "bf16" if major >= 8 else "fp16" if major >= 7 else "fp32"
    elif requested == "auto":
        if device.type == "cpu" and cpu_has_native_bf16() and model is not None:
            return faster_cpu_precision(model, batch_size, channels_last)
        requested = "bf16" if device.type == "cpu" and cpu_has_native_bf16() else "fp32"
    return Precision(requested, device.type)
