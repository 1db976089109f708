"""Small helpers: the device and its name, the code's version, seeding, `denormalize`, Markdown tables."""
from __future__ import annotations

import os
import platform
import random
import subprocess
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

def default_device() -> torch.device:
    """CUDA when there is a GPU, else Apple's MPS, else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def resolve_device(name: str | None) -> torch.device:
    """The device a user named (None: the best available), refused in one line when it is unknown or absent."""
    if name is None:
        return default_device()
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"unknown device {name!r}: use cpu, cuda, cuda:N or mps, or leave it out for the best "
                         "available") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r}: this machine has no CUDA GPU that PyTorch can use; use cpu, or leave "
                         "the device out")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise ValueError(f"device {name!r}: there are only {torch.cuda.device_count()} CUDA GPUs (cuda:0 ...)")
    if device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError(f"device {name!r}: Apple's MPS is not available here; use cpu")
    if device.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"device {name!r}: training here runs on cpu, cuda or mps")
    return device


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity where the OS tells, else all)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def cpu_model() -> str:
    """The CPU's marketing name from /proc/cpuinfo (Linux), else what `platform` knows ("" if nothing)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def device_name(device: torch.device | str) -> str:
    """A human name for the device: the GPU model, or the CPU model with its core count."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = cpu_model()
    return f"CPU{': ' + model if model else ''} ({usable_cores()} cores, {torch.get_num_threads()} torch threads)"


def code_version(here: str | os.PathLike = Path(__file__).resolve().parent) -> str:
    """The commit a checkout (default: this package's) is at, for reports: git's short hash (marked when tracked
    files differ from it), or "unknown" outside a git checkout."""
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


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices) so model initialisation is reproducible."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def denormalize(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Undo normalization: (N,3,H,W) or (3,H,W) -> a new tensor in [0,1]."""
    shape = (-1, 1, 1)
    m = torch.tensor(mean, dtype=images.dtype, device=images.device).view(shape)
    s = torch.tensor(std, dtype=images.dtype, device=images.device).view(shape)
    return (images * s + m).clamp(0, 1)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence], align: str = "left") -> str:
    """A Markdown table from a header and rows of cells (anything str() turns into text); `align`: left/right."""
    rule = "---:" if align == "right" else "---"
    lines = ["| " + " | ".join(map(str, header)) + " |", "|" + "|".join(rule for _ in header) + "|"]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in rows]
    return "\n".join(lines)
