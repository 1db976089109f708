"""Small helpers: the device and its name, the precision to train in, seeding, atomic file writes, the code's
version, `denormalize`, Markdown tables."""
from __future__ import annotations

import contextlib
import copy
import os
import platform
import random
import subprocess
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

PRECISIONS = ("auto", "bf16", "fp16", "fp32")
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def default_device() -> torch.device:
    """CUDA when there is a GPU, else Apple's MPS, else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def resolve_device(name: str | None) -> torch.device:
    """The device a user named (None: the best available), refused in one line when it is unknown or absent."""
    if name is None:
        return default_device()
    try:
        device = torch.device(name)
    except RuntimeError:
        device = torch.device("meta")
    if device.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"unknown device {name!r}: use cpu, cuda, cuda:N or mps, or leave it out for the best one")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise ValueError(f"device {name!r}: this machine has no CUDA GPU of that number for PyTorch "
                         f"({torch.cuda.device_count()} found); use cpu, or leave the device out")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {name!r}: Apple's MPS is not available here; use cpu")
    return device


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity where the OS tells, else all)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def device_name(device: torch.device | str) -> str:
    """A human name for the device: the GPU model, or the CPU model (from /proc/cpuinfo on Linux) with its cores."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = platform.processor()
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), model)
    return f"CPU{': ' + model if model else ''} ({usable_cores()} cores, {torch.get_num_threads()} torch threads)"


def autocast(device: torch.device | str, precision: str):
    """torch.autocast in `precision` ("bf16", "fp16"); a context that changes nothing for "fp32"."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=DTYPES[precision])


def cpu_has_native_bf16() -> bool:
    """True where oneDNN runs bf16 natively (AVX512-BF16 or AMX); elsewhere bf16 is emulated, far slower."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def wait_for(device: torch.device) -> None:
    """Block until `device` has done its queued work (a GPU returns before; the CPU has nothing queued)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def training_rate(model: nn.Module, precision: str, batch_size: int, channels_last: bool = True,
                  steps: int = 2) -> float:
    """Images per second of forward and backward passes of a copy of `model` on a random batch, in `precision`:
    the fastest of `steps` timed passes after an untimed one. The model and the global RNG are untouched."""
    trial = copy.deepcopy(model).train()
    device = next(trial.parameters()).device
    x = torch.randn(batch_size, 3, 32, 32, generator=torch.Generator().manual_seed(0)).to(device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    seconds = []
    for _ in range(steps + 1):
        wait_for(device)
        start = time.perf_counter()
        with autocast(device, precision):
            out = trial(x)
        out.float().square().mean().backward()
        wait_for(device)
        seconds.append(time.perf_counter() - start)
    return batch_size / min(seconds[1:])


def choose_precision(device: torch.device | str, requested: str = "auto", model: nn.Module | None = None,
                     batch_size: int = 128, channels_last: bool = True) -> tuple[str, dict[str, float]]:
    """(precision, img/s it was chosen by). auto: bf16 on CUDA >= 8.0, fp16 on 7.x; on a CPU with native bf16 the
    faster for `model` (bf16 by 1.2x); else fp32. bf16 is refused on a GPU that would only emulate it."""
    if requested not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {requested!r}")
    device = torch.device(device)
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        if requested == "bf16" and major < 8:
            raise ValueError(f"bf16 needs a GPU of compute capability 8.0 or newer; this one is {major}.{minor} and "
                             "would only emulate it, far slower: use precision 'fp16' or 'auto'")
        if requested == "auto":
            requested = "bf16" if major >= 8 else "fp16" if major >= 7 else "fp32"
    if requested != "auto":
        return requested, {}
    if device.type != "cpu" or not cpu_has_native_bf16():
        return "fp32", {}
    if model is None:
        return "bf16", {}
    rates = {p: training_rate(model, p, batch_size, channels_last) for p in ("bf16", "fp32")}
    return ("bf16" if rates["bf16"] > 1.2 * rates["fp32"] else "fp32"), rates


def precision_text(precision: str, rates: dict[str, float] | None = None) -> str:
    """A precision in words, with the rates it was chosen by: "bf16 autocast (faster here: bf16 165 img/s, ...)"."""
    text = {"bf16": "bf16 autocast", "fp16": "fp16 autocast + GradScaler", "fp32": "fp32"}[precision]
    if rates:
        text += " (faster here: " + ", ".join(f"{name} {rate:.0f} img/s" for name, rate in rates.items()) + ")"
    return text


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices) so model initialisation is reproducible."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class OutputError(OSError):
    """A file could not be written (disk full, read-only folder, ...); the message says what is still on disk."""


def atomic_write(path: str | os.PathLike, payload: bytes) -> None:
    """Write via a temporary file and rename, so that a crash or a full disk never leaves a half-written file:
    the previous version stays whole, and OutputError says so."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        with contextlib.suppress(OSError):
            tmp.unlink()
        kept = f"the previous {path.name} there is intact" if path.exists() else f"no {path.name} was written"
        raise OutputError(e.errno, f"could not write {path} ({e.strerror or e}); {kept}. Free some space or "
                                   "choose a folder you can write to (--out)") from None


def code_version(here: str | os.PathLike = Path(__file__).resolve().parent) -> str:
    """The commit a checkout (default: this package's) is at: git's short hash, marked when tracked files differ
    from it, or "unknown" outside a git checkout."""
    try:
        head = subprocess.run(["git", "-C", str(here), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=30)
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    if head.returncode != 0:
        return "unknown"
    return head.stdout.strip() + (" with local changes" if dirty else "")


def denormalize(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Undo normalization: (N,3,H,W) or (3,H,W) -> a new tensor in [0,1]."""
    m = torch.tensor(mean, dtype=images.dtype, device=images.device).view(-1, 1, 1)
    s = torch.tensor(std, dtype=images.dtype, device=images.device).view(-1, 1, 1)
    return (images * s + m).clamp(0, 1)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence], align: str = "left") -> str:
    """A Markdown table from a header and rows of cells (anything str() turns into text); `align`: left/right."""
    rule = "---:" if align == "right" else "---"
    lines = ["| " + " | ".join(map(str, header)) + " |", "|" + "|".join(rule for _ in header) + "|"]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in rows]
    return "\n".join(lines)
