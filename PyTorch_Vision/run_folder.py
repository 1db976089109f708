"""A run's folder: checkpoint.pt and history.json written as training goes (atomically), read back to resume,
and what a run says of them when it stops or diverges."""
from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .files import atomic_write
from .history import History
from .precision import Precision
from .schedule import warmup_and_peak
from .utils import device_name

CHECKPOINT_SECONDS = 600.0  # a mid-epoch checkpoint this often: an interruption loses at most that much


@dataclass
class EpochTally:
    """How far an epoch has got and what it has counted: what a mid-epoch checkpoint holds so that a resumed run
    goes on from there."""

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


def recorded_precision(run: dict | None, device: torch.device | str, config) -> Precision | None:
    """The precision a run (its History's `run` record) last trained in, where that was on this machine: resumed
    there, or evaluated there, it keeps it. None for a new run (`run` None), another machine or a precision set by
    hand."""
    last = ((run or {}).get("segments") or [{}])[-1]
    device = torch.device(device)
    if config.precision != "auto" or last.get("device") != device_name(device) or "precision" not in last:
        return None
    return Precision(last["precision"], device.type, tuple(last.get("precision_rates", {}).items()))


def check_resumable(ckpt: dict, config, fingerprint: dict, path: str | os.PathLike,
                    ignore: tuple[str, ...] = ("compile",)) -> None:
    """Refuse to resume `ckpt` with a different config (a dataclass; keys in `ignore` may differ) or data
    (`fingerprint`, e.g. CIFAR10Data.fingerprint())."""
    saved = ckpt.get("config", {})
    differ = [f"{k}: checkpoint {saved[k]!r} vs now {v!r}" for k, v in asdict(config).items()
              if k in saved and k not in ignore and saved[k] != v]
    if ckpt.get("data") != fingerprint:
        differ.append(f"data: checkpoint {ckpt.get('data')} vs now {fingerprint}")
    if differ:
        raise CheckpointError(f"checkpoint {path} is from a different run ({'; '.join(differ)}); "
                              "resume with the same settings and data, or start a new run in another --out")


class RunFolder:
    """Where a run keeps checkpoint.pt and history.json (out_dir None: nowhere). Refuses, before any work, a
    folder that cannot take the run: a file, another run's folder (unless resuming), nothing to resume."""

    def __init__(self, out_dir: str | os.PathLike | None, resume: bool = False,
                 checkpoint_seconds: float = CHECKPOINT_SECONDS):
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

    @property
    def saved_run(self) -> dict | None:
        """The `run` record of the history resumed from (None for a new run)."""
        return self.saved["history"].get("run", {}) if self.saved else None

    def start(self, trainer, config, data, precision: Precision, batches_per_epoch: int
              ) -> tuple[History, EpochTally | None]:
        """The run's History and, if it stopped mid-epoch, its tally: restored into `trainer` (train.Trainer) from
        the checkpoint when resuming, once shown to be this run's; else a new History recording the settings, the
        data and the LR's warm-up and peak. Appends where this stretch of the run trains (machine and `precision`,
        from which epoch; none for a finished run) and checks the folder can be written."""
        self.config, self.fingerprint = config, data.fingerprint()
        partial = None
        machine = machine_record(next(trainer.model.parameters()).device, precision)
        if self.saved is None:
            warmup, peak = warmup_and_peak(config, config.epochs * batches_per_epoch)
            history = History(run={"config": asdict(config), "data": data.source, **self.fingerprint,
                                   "peak_lr": peak, "warmup_steps": warmup, **machine})
        else:
            check_resumable(self.saved, config, self.fingerprint, self.path)
            trainer.load_state_dict(self.saved, self.path)
            history = History.from_dict(self.saved["history"])
            partial = EpochTally(**self.saved["partial"]) if self.saved.get("partial") else None
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

    def save(self, trainer, history: History, partial: EpochTally | None = None) -> None:
        """checkpoint.pt (what `start` reads back), and history.json after a whole epoch."""
        if self.out is None:
            return
        save_checkpoint(self.path, {**trainer.state_dict(), "history": history.to_dict(), "config": asdict(self.config),
                                    "data": self.fingerprint,
                                    "partial": asdict(partial) if partial is not None else None})
        if partial is None:
            history.save(self.out / "history.json")
        self.kept, self._last_save = str(partial) if partial else f"epoch {len(history)}", time.perf_counter()

    def save_due(self) -> bool:
        """Whether a mid-epoch checkpoint is due: checkpoint_seconds have passed since the last one."""
        return self.out is not None and time.perf_counter() - self._last_save >= self.checkpoint_seconds

    def stopped(self, trainer, history: History, partial: EpochTally, batches: int) -> KeyboardInterrupt:
        """Saves a run interrupted between two batches; the KeyboardInterrupt to raise, saying how to resume."""
        where = f"epoch {partial.epoch} at batch {partial.batches}/{batches}"
        if self.out is None:
            return KeyboardInterrupt(f"stopped in {where}; nothing was saved (no out_dir)")
        self.save(trainer, history, partial)
        return KeyboardInterrupt(f"stopped in {where}; its checkpoint is in {self.out}: resume with --resume "
                                 "(command line), resume=True (fit), or by running the notebook's training cell "
                                 "again")

    def diverged(self, what: str, epoch: int, precision: Precision, max_lr: float) -> FloatingPointError:
        """The FloatingPointError to raise when training diverged, saying what is kept on disk."""
        on_disk = f"the checkpoint of {self.kept} is kept in {self.out}" if self.kept else "no checkpoint was written"
        return FloatingPointError(f"{what} in epoch {epoch} ({precision}); {on_disk}. "
                                  f"Lower max_lr (now {max_lr}) or check the data.")

    def describe_resume(self, history: History, partial: EpochTally | None, epochs: int, batches: int) -> str:
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
