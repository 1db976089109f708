"""A run's folder: checkpoint.pt and history.json written as training goes (atomically), read back to resume,
and what a run says of them when it stops or diverges."""
from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from .checkpoint import CheckpointError, check_resumable, load_checkpoint, save_checkpoint
from .files import atomic_write
from .history import History
from .precision import Precision
from .utils import device_name


@dataclass
class EpochProgress:
    """How far an epoch has got: what a mid-epoch checkpoint holds so that a resumed run goes on from there."""

    epoch: int
    batches: int = 0        # training batches done
    loss_sum: float = 0.0   # sum of per-sample losses so far
    correct: int = 0
    seen: int = 0           # images counted in loss_sum and correct
    skipped: int = 0        # steps GradScaler skipped (fp16 overflow)
    lr: float = 0.0         # lr of the last batch done
    seconds: float = 0.0    # wall time spent in this epoch so far

    def __str__(self) -> str:
        return f"epoch {self.epoch} at batch {self.batches}"


def machine_record(device: torch.device, precision: Precision) -> dict:
    """What a run records of the machine it trains on: device, precision (with the rates it was chosen by), torch."""
    return {"device": device_name(device), "precision": precision.name, "precision_rates": dict(precision.rates),
            "torch": str(torch.__version__)}


def recorded_precision(run: dict, device: torch.device | str, config) -> Precision | None:
    """The precision a run (its History's `run` record) last trained in, where that was on this machine: resumed
    there, or evaluated there, it keeps it. None for a new run, another machine or a precision set by hand."""
    last = (run.get("segments") or [{}])[-1]
    device = torch.device(device)
    if config.precision != "auto" or last.get("device") != device_name(device) or "precision" not in last:
        return None
    return Precision(last["precision"], device.type, tuple(last.get("precision_rates", {}).items()))


class RunFolder:
    """Where a run keeps checkpoint.pt and history.json (out_dir None: nowhere). Refuses, before any work, a
    folder that cannot take the run: a file, another run's folder (unless resuming), nothing to resume."""

    def __init__(self, out_dir: str | os.PathLike | None, resume: bool = False, checkpoint_seconds: float = 600.0):
        if not checkpoint_seconds >= 0:
            raise ValueError(f"checkpoint_seconds must be >= 0 (0: after every batch), got {checkpoint_seconds!r}")
        self.out = output_folder(out_dir, resume)
        self.checkpoint_seconds = checkpoint_seconds
        self.saved = load_checkpoint(self.path) if resume else None  # the checkpoint resumed from
        self.kept: str | None = None  # what the checkpoint on disk holds, in words
        self.config = self.fingerprint = None
        self.finished = False  # set by `start`: a finished run resumed, nothing left to train
        self._last_save = time.perf_counter()

    @property
    def path(self) -> Path | None:
        return self.out / "checkpoint.pt" if self.out is not None else None

    def recorded_precision(self, device: torch.device, config) -> Precision | None:
        return recorded_precision(self.saved["history"].get("run", {}), device, config) if self.saved else None

    def start(self, state, config, data, run: dict, machine: dict) -> tuple[History, EpochProgress | None]:
        """The run's History and, if it stopped mid-epoch, its progress: restored into `state` (a TrainState) from
        the checkpoint when resuming, once shown to be this run's; else a new History recording `run`. Appends
        where this stretch of the run trains (`machine`, from which epoch; none for a finished run) and checks the
        folder can be written."""
        self.config, self.fingerprint = config, data.fingerprint()
        partial = None
        if self.saved is None:
            history = History(run={**run, **machine})
        else:
            check_resumable(self.saved, config, self.fingerprint, self.path)
            state.load_state_dict(self.saved, self.path)
            history = History.from_dict(self.saved["history"])
            partial = EpochProgress(**self.saved["partial"]) if self.saved.get("partial") else None
            self.kept = str(partial) if partial else f"epoch {len(history)}"
        self.finished = partial is None and len(history) >= config.epochs  # resumed with nothing left to train
        if not self.finished:  # a stretch of training, and where it ran
            first = {"from_epoch": partial.epoch, "from_batch": partial.batches} if partial else \
                {"from_epoch": len(history) + 1}
            history.run["segments"] = history.run.get("segments", []) + [{**first, **machine}]
        if self.out is not None:  # find a full disk or a read-only folder now, not after the first epoch
            self.out.mkdir(parents=True, exist_ok=True)
            atomic_write(self.out / ".write-test", b"")
            (self.out / ".write-test").unlink()
        return history, partial

    def save(self, state, history: History, partial: EpochProgress | None = None) -> None:
        """checkpoint.pt (what `start` reads back), and history.json after a whole epoch."""
        if self.out is None:
            return
        save_checkpoint(self.path, {**state.state_dict(), "history": history.to_dict(), "config": asdict(self.config),
                                    "data": self.fingerprint,
                                    "partial": asdict(partial) if partial is not None else None})
        if partial is None:
            history.save(self.out / "history.json")
        self.kept, self._last_save = str(partial) if partial else f"epoch {len(history)}", time.perf_counter()

    def save_if_due(self, state, history: History, partial: EpochProgress) -> None:
        """A mid-epoch checkpoint when checkpoint_seconds have passed since the last one."""
        if time.perf_counter() - self._last_save >= self.checkpoint_seconds:
            self.save(state, history, partial)

    def stopped(self, state, history: History, partial: EpochProgress, batches: int) -> KeyboardInterrupt:
        """Saves a run interrupted between two batches; the KeyboardInterrupt to raise, saying how to resume."""
        where = f"epoch {partial.epoch} at batch {partial.batches}/{batches}"
        if self.out is None:
            return KeyboardInterrupt(f"stopped in {where}; nothing was saved (no out_dir)")
        self.save(state, history, partial)
        return KeyboardInterrupt(f"stopped in {where}; its checkpoint is in {self.out}: resume with --resume "
                                 "(command line), resume=True (fit), or by running the notebook's training cell "
                                 "again")

    def diverged(self, what: str, epoch: int, precision: Precision, max_lr: float) -> FloatingPointError:
        """The FloatingPointError to raise when training diverged, saying what is kept on disk."""
        on_disk = f"the checkpoint of {self.kept} is kept in {self.out}" if self.kept else "no checkpoint was written"
        return FloatingPointError(f"{what} in epoch {epoch} ({precision}); {on_disk}. "
                                  f"Lower max_lr (now {max_lr}) or check the data.")

    def describe_resume(self, history: History, partial: EpochProgress | None, epochs: int, batches: int) -> str:
        where = f"in epoch {partial.epoch}/{epochs} at batch {partial.batches}/{batches}" if partial \
            else f"after epoch {len(history)}/{epochs}" + (": finished, nothing left to train" if self.finished else "")
        return f"resumed {self.path} {where}"


def output_folder(out_dir: str | os.PathLike | None, resume: bool) -> Path | None:
    """The run's folder as a Path, refused before any work when it cannot take this run: a file, another run's
    folder (unless resuming), or no folder to resume from."""
    if out_dir is None:
        if resume:
            raise ValueError("resume needs out_dir: the folder holding checkpoint.pt")
        return None
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out} is a file, not a folder: choose a folder for the run's outputs")
    if not resume and (out / "checkpoint.pt").exists():
        raise CheckpointError(f"{out} already holds a run (checkpoint.pt); resume it (--resume / resume=True) "
                              "or choose another output folder: nothing was overwritten")
    return out
