"""Checkpoints: written atomically, read safely (weights only), and refused with a message that says what to do
when they are missing or corrupt."""
from __future__ import annotations

import io
import os
from pathlib import Path

import torch

from .files import atomic_write


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable or belongs to another run; the message says what to do."""


def save_checkpoint(path: str | os.PathLike, state: dict) -> None:
    """torch.save `state` (tensors, numbers, strings, lists and dicts of them) to `path` atomically."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write(path, buffer.getvalue())


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Read a checkpoint safely (weights_only); a clear CheckpointError if it is missing or corrupt."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}: nothing to resume; start without --resume")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"checkpoint {path} cannot be read ({type(e).__name__}); it is corrupt or not a "
                              "checkpoint of this package: delete it, or start a new run in another --out") from None
    if not isinstance(ckpt, dict) or "model" not in ckpt or "history" not in ckpt:
        raise CheckpointError(f"{path} is not a checkpoint of this package; start a new run in another --out")
    return ckpt
