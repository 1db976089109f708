"""Training: SGD + Nesterov with a per-batch OneCycle schedule, mixed precision, channels_last, and
checkpoints during and after every epoch so that an interrupted run resumes to the same result."""
from __future__ import annotations

import io
import itertools
import json
import math
import os
import random
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from .data import CIFAR10Data, make_batches
from .utils import markdown_table


@dataclass
class TrainConfig:
    """The recipe. Defaults are the 20-epoch ResNet18 recipe (see README: "Recipe")."""

    epochs: int = 20
    batch_size: int = 512
    max_lr: float = 0.4
    momentum: float = 0.9
    weight_decay: float = 5e-4      # not applied to BatchNorm weights or biases
    label_smoothing: float = 0.1
    pct_start: float = 0.25         # share of the steps spent warming up to max_lr
    div_factor: float = 25.0        # initial lr = max_lr / div_factor
    final_div_factor: float = 1e4   # final lr = initial lr / final_div_factor
    flip: bool = True
    cutout: bool = True             # the 16x16 CutOut hole; off only for ablations
    seed: int = 0
    amp: bool | None = None         # mixed precision; None: where it pays off (CUDA; CPUs with native bf16)
    channels_last: bool = True
    compile: bool = False           # torch.compile: on an H100 <= 8% faster per step, 22-25 s to compile
    on_device_data: bool | None = None  # data held and augmented on the device; None: on CUDA only

    def __post_init__(self):
        for name in ("epochs", "batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not (isinstance(self.max_lr, (int, float)) and math.isfinite(self.max_lr) and self.max_lr > 0):
            raise ValueError(f"max_lr must be a positive number, got {self.max_lr!r}")
        if self.weight_decay < 0 or not 0 <= self.label_smoothing < 1 or not 0 < self.pct_start < 1:
            raise ValueError("weight_decay must be >= 0, label_smoothing in [0, 1), pct_start in (0, 1)")


HISTORY_KEYS = ("epoch", "train_loss", "train_acc", "test_loss", "test_acc", "lr", "epoch_seconds")


@dataclass
class History:
    """Per-epoch metrics; accuracies in percent, losses per-sample means over the whole epoch, lr as used by
    the epoch's last batch."""

    epoch: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    train_acc: list[float] = field(default_factory=list)
    test_loss: list[float] = field(default_factory=list)
    test_acc: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    epoch_seconds: list[float] = field(default_factory=list)

    def append(self, **row: float) -> None:
        for key in HISTORY_KEYS:
            getattr(self, key).append(row[key])

    def __len__(self) -> int:
        return len(self.epoch)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "History":
        missing = [k for k in HISTORY_KEYS if k not in d]
        if missing:
            raise ValueError(f"not a training history: keys {missing} are missing")
        return cls(**{k: list(d[k]) for k in HISTORY_KEYS})

    def save(self, path: str | os.PathLike) -> None:
        atomic_write(path, json.dumps(self.to_dict(), indent=1).encode())

    @classmethod
    def load(cls, path: str | os.PathLike) -> "History":
        try:
            with open(path) as f:
                d = json.load(f)
        except FileNotFoundError:
            raise ValueError(f"no history at {path}: give the history.json that a run wrote") from None
        except json.JSONDecodeError as e:
            raise ValueError(f"{path} is not JSON ({e}): give the history.json that a run wrote") from None
        if not isinstance(d, dict):
            raise ValueError(f"{path} is not a training history (a JSON object of per-epoch lists)")
        return cls.from_dict(d)

    def table(self) -> str:
        """The history as a Markdown table, one row per epoch."""
        rows = [(e, f"{tl:.4f}", f"{ta:.2f}", f"{vl:.4f}", f"{va:.2f}", f"{lr:.4g}", f"{sec:.1f}")
                for e, tl, ta, vl, va, lr, sec in zip(*(getattr(self, k) for k in HISTORY_KEYS))]
        return markdown_table(("epoch", "train loss", "train acc %", "test loss", "test acc %", "lr", "seconds"),
                              rows, align="right")

    def summary(self) -> list[tuple[str, str]]:
        """The headline figures as (what, value) rows: final and best test accuracy, time per epoch and in all."""
        if not len(self):
            raise ValueError("an empty history has no results: train at least one epoch")
        best = max(range(len(self)), key=self.test_acc.__getitem__)
        total = sum(self.epoch_seconds)
        return [(f"final test accuracy (epoch {self.epoch[-1]})", f"**{self.test_acc[-1]:.2f}%**"),
                ("best test accuracy", f"{self.test_acc[best]:.2f}% (epoch {self.epoch[best]})"),
                ("mean time per epoch (train + test)", f"{total / len(self):.1f} s"),
                ("total training time", f"{total / 60:.1f} min")]


def atomic_write(path: str | os.PathLike, payload: bytes) -> None:
    """Write via a temporary file and rename, so a crash never leaves a half-written file."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(payload)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable or belongs to another run; the message says what to do."""


def cpu_has_native_bf16() -> bool:
    """True where oneDNN runs bf16 natively (AVX512-BF16 or AMX); elsewhere bf16 autocast is far slower than fp32."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def amp_dtype(device: torch.device, amp: bool | None) -> torch.dtype | None:
    """The autocast dtype for `device`, or None for fp32. `amp=None` picks what pays off on this hardware."""
    if amp is None:
        amp = device.type == "cuda" or (device.type == "cpu" and cpu_has_native_bf16())
    if not amp:
        return None
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return torch.float16
    return torch.bfloat16


def autocast_for(device: torch.device, dtype: torch.dtype | None):
    """A factory of autocast contexts for `device` and `dtype` (None: plain fp32)."""
    return (lambda: torch.autocast(device.type, dtype=dtype)) if dtype is not None else nullcontext


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """SGD with Nesterov momentum; weight decay on conv/linear weights only, not on BatchNorm or biases."""
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.SGD(groups, lr=config.max_lr, momentum=config.momentum, nesterov=True)


def make_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig, steps_per_epoch: int):
    """OneCycleLR over every batch of every epoch (stepped once per batch)."""
    total = config.epochs * steps_per_epoch
    if total < 3:
        raise ValueError(f"a OneCycle schedule needs at least 3 training batches in all, this run has {total}: "
                         "use more epochs, more images or a smaller batch size")
    pct_start = min(max(config.pct_start, 2 / total), 1 - 1 / total)  # both phases at least one step long
    return torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=config.max_lr, total_steps=total, pct_start=pct_start, div_factor=config.div_factor,
        final_div_factor=config.final_div_factor)


def _rng_state() -> dict:
    np_state = np.random.get_state()
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": [np_state[0], torch.from_numpy(np_state[1].copy()), *np_state[2:]],
            "python": random.getstate()}


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    np_state = state["numpy"]
    np.random.set_state((np_state[0], np_state[1].numpy(), *np_state[2:]))
    random.setstate((state["python"][0], tuple(state["python"][1]), state["python"][2]))


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


def _check_resumable(ckpt: dict, config: TrainConfig, data: CIFAR10Data, path: Path) -> None:
    saved = ckpt.get("config", {})
    differ = [f"{k}: checkpoint {saved[k]!r} vs now {v!r}" for k, v in asdict(config).items()
              if k in saved and k != "compile" and saved[k] != v]
    if ckpt.get("data") != data.fingerprint():
        differ.append(f"data: checkpoint {ckpt.get('data')} vs now {data.fingerprint()}")
    if differ:
        raise CheckpointError(f"checkpoint {path} is from a different run ({'; '.join(differ)}); "
                              "resume with the same settings and data, or start a new run in another --out")


def make_step(model: nn.Module, optimizer: torch.optim.Optimizer, criterion: nn.Module, autocast=nullcontext,
              channels_last: bool = False, scaler: torch.amp.GradScaler | None = None):
    """The training step: forward (under `autocast`), loss in fp32, backward, optimizer step.
    Returns step(x, y) -> (loss, logits), both detached."""
    def step(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast():
            logits = model(x)
        loss = criterion(logits.float(), y)
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        return loss.detach(), logits.detach()
    return step


def _full_batches_through(full_step, other_step, batch_size: int):
    """A step that sends batches of `batch_size` images to `full_step` and any other size to `other_step`."""
    def step(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return (full_step if len(y) == batch_size else other_step)(x, y)
    return step


@dataclass
class EpochProgress:
    """How far an epoch has got: what a mid-epoch checkpoint holds so that a resumed run goes on from there."""

    epoch: int
    batches: int = 0        # training batches done
    loss_sum: float = 0.0   # sum of per-sample losses so far
    correct: int = 0
    seen: int = 0
    lr: float = 0.0         # lr of the last batch done
    seconds: float = 0.0    # wall time spent in this epoch so far


def _train_epoch(model, batches, step, optimizer, scheduler, bar, progress: EpochProgress,
                 save=None, save_every_s: float = math.inf) -> EpochProgress:
    """Train on `batches` from batch `progress.batches` on (earlier ones are drawn and skipped, which replays the
    augmentation's random stream); calls `save(progress)` every `save_every_s` seconds while the loss is finite."""
    model.train()
    start = time.perf_counter() - progress.seconds
    loss_sum = torch.tensor(progress.loss_sum, device=next(model.parameters()).device)
    correct = torch.tensor(progress.correct, device=loss_sum.device)
    p, last_save = progress, time.perf_counter()
    if bar is not None:
        bar.update(p.batches)
    for x, y in itertools.islice(batches, p.batches, None):
        loss, logits = step(x, y)
        lr = optimizer.param_groups[0]["lr"]
        scheduler.step()
        loss_sum += loss * len(y)
        correct += (logits.argmax(1) == y).sum()
        p = replace(p, batches=p.batches + 1, seen=p.seen + len(y), lr=lr)
        if bar is not None:
            bar.update(1)
            if p.batches % 10 == 1:
                bar.set_postfix(loss=f"{loss_sum.item() / p.seen:.3f}", acc=f"{100 * correct.item() / p.seen:.1f}%")
        if save is not None and time.perf_counter() - last_save >= save_every_s and p.batches < len(batches) \
                and math.isfinite(loss_sum.item()):
            save(replace(p, loss_sum=loss_sum.item(), correct=int(correct.item()),
                         seconds=time.perf_counter() - start))
            last_save = time.perf_counter()
    return replace(p, loss_sum=loss_sum.item(), correct=int(correct.item()), seconds=time.perf_counter() - start)


@torch.no_grad()
def evaluate(model: nn.Module, batches, criterion=None, autocast=nullcontext,
             channels_last: bool = False) -> tuple[float, float]:
    """Mean loss and accuracy (%) of `model` over `batches` of (x, y), in eval mode; restores the mode."""
    criterion = criterion or nn.CrossEntropyLoss()
    was_training = model.training
    model.eval()
    loss_sum, correct, seen = 0.0, 0, 0
    for x, y in batches:
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast():
            logits = model(x)
        loss_sum += criterion(logits.float(), y).item() * len(y)
        correct += (logits.argmax(1) == y).sum().item()
        seen += len(y)
    model.train(was_training)
    return loss_sum / seen, 100 * correct / seen


def fit(model: nn.Module, data: CIFAR10Data, config: TrainConfig = TrainConfig(), device: str | None = None,
        out_dir: str | os.PathLike | None = None, resume: bool = False, progress: str = "bar",
        checkpoint_seconds: float = 600.0) -> History:
    """Train `model` on `data` with `config`; returns the History.

    With `out_dir`, writes history.json and checkpoint.pt there after every epoch, and checkpoint.pt also every
    `checkpoint_seconds` within an epoch (atomically); with `resume`, continues from the checkpoint to the same
    result as an uninterrupted run. `progress`: "bar" (a bar per epoch and a line per epoch), "epoch" (the line
    only) or "none".
    """
    if progress not in ("bar", "epoch", "none"):
        raise ValueError(f"progress must be 'bar', 'epoch' or 'none', got {progress!r}")
    if not checkpoint_seconds >= 0:
        raise ValueError(f"checkpoint_seconds must be >= 0 (0: after every batch), got {checkpoint_seconds!r}")
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    out = Path(out_dir) if out_dir is not None else None
    ckpt_path = out / "checkpoint.pt" if out else None
    if resume and out is None:
        raise ValueError("resume needs out_dir: the folder holding checkpoint.pt")
    if out is not None and not resume and ckpt_path.exists():
        raise CheckpointError(f"{out} already holds a run (checkpoint.pt); resume it (--resume / resume=True) "
                              "or choose another output folder: nothing was overwritten")

    model.to(device)
    if config.channels_last:
        model.to(memory_format=torch.channels_last)
    train_batches, test_batches = make_batches(data, config.batch_size, device, config.flip, config.seed,
                                               config.on_device_data, cutout=config.cutout)
    optimizer = make_optimizer(model, config)
    scheduler = make_scheduler(optimizer, config, len(train_batches))
    dtype = amp_dtype(device, config.amp)
    scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
    autocast = autocast_for(device, dtype)
    criterion = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    step = make_step(model, optimizer, criterion, autocast, config.channels_last, scaler)
    if config.compile:
        # only full batches run compiled: the epoch's smaller last batch and evaluation would each cost a
        # recompilation that takes longer than running them eagerly
        compiled = make_step(torch.compile(model), optimizer, criterion, autocast, config.channels_last, scaler)
        step = _full_batches_through(compiled, step, config.batch_size)

    history, partial = History(), None
    if resume:
        ckpt = load_checkpoint(ckpt_path)
        _check_resumable(ckpt, config, data, ckpt_path)
        try:
            model.load_state_dict(ckpt["model"])
        except RuntimeError as e:
            raise CheckpointError(f"checkpoint {ckpt_path} does not fit this model ({str(e).splitlines()[0]}); "
                                  "resume with the model it was trained with") from None
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        if scaler is not None and ckpt.get("scaler"):
            scaler.load_state_dict(ckpt["scaler"])
        _set_rng_state(ckpt["rng"])
        history = History.from_dict(ckpt["history"])
        partial = EpochProgress(**ckpt["partial"]) if ckpt.get("partial") else None
        if progress != "none":
            for i in range(len(history)):  # so that a resumed run's output still has every epoch's line
                tqdm.write(_epoch_line(history, i, config.epochs), file=sys.stdout)
            where = f"in epoch {partial.epoch}/{config.epochs} at batch {partial.batches}/{len(train_batches)}" \
                if partial else f"after epoch {len(history)}/{config.epochs}"
            tqdm.write(f"resumed {ckpt_path} {where}", file=sys.stdout)
    elif out is not None:
        out.mkdir(parents=True, exist_ok=True)

    kept = (f"epoch {partial.epoch} at batch {partial.batches}" if partial else f"epoch {len(history)}") \
        if resume else None  # what the checkpoint on disk holds

    def save_partial(p: EpochProgress) -> None:
        nonlocal kept
        _save_checkpoint(ckpt_path, model, optimizer, scheduler, scaler, history, config, data, p)
        kept = f"epoch {p.epoch} at batch {p.batches}"

    for epoch in range(len(history) + 1, config.epochs + 1):
        train_batches.set_epoch(epoch)
        bar = tqdm(total=len(train_batches), desc=f"epoch {epoch}/{config.epochs}", leave=False,
                   file=sys.stdout, dynamic_ncols=True) if progress == "bar" else None
        done = _train_epoch(model, train_batches, step, optimizer, scheduler, bar,
                            partial if partial and partial.epoch == epoch else EpochProgress(epoch),
                            save_partial if out is not None else None, checkpoint_seconds)
        train_loss, train_acc = done.loss_sum / done.seen, 100 * done.correct / done.seen
        if bar is not None:
            bar.close()
        if not math.isfinite(train_loss):
            on_disk = f"the checkpoint of {kept} is kept in {out}" if kept else "no checkpoint was written"
            raise FloatingPointError(f"training loss became {train_loss} in epoch {epoch}; {on_disk}. "
                                     f"Lower max_lr (now {config.max_lr}) or check the data.")
        start = time.perf_counter()
        test_loss, test_acc = evaluate(model, test_batches, criterion, autocast, config.channels_last)
        history.append(epoch=epoch, train_loss=train_loss, train_acc=train_acc, test_loss=test_loss,
                       test_acc=test_acc, lr=done.lr, epoch_seconds=done.seconds + time.perf_counter() - start)
        if progress != "none":
            tqdm.write(_epoch_line(history, -1, config.epochs), file=sys.stdout)
        if out is not None:
            _save_checkpoint(ckpt_path, model, optimizer, scheduler, scaler, history, config, data)
            history.save(out / "history.json")
            kept = f"epoch {epoch}"
    return history


def _epoch_line(history: History, i: int, epochs: int) -> str:
    return (f"epoch {history.epoch[i]:2d}/{epochs}  train loss {history.train_loss[i]:.4f} "
            f"acc {history.train_acc[i]:5.2f}%  test loss {history.test_loss[i]:.4f} acc {history.test_acc[i]:5.2f}%  "
            f"lr {history.lr[i]:.4f}  {history.epoch_seconds[i]:.1f} s")


def _save_checkpoint(path: Path, model, optimizer, scheduler, scaler, history: History, config: TrainConfig,
                     data: CIFAR10Data, partial: EpochProgress | None = None) -> None:
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
             "scaler": scaler.state_dict() if scaler is not None else None, "rng": _rng_state(),
             "history": history.to_dict(), "config": asdict(config), "data": data.fingerprint(),
             "partial": asdict(partial) if partial is not None else None}
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write(path, buffer.getvalue())


@dataclass
class LRFinderResult:
    """Learning rates tried (one per batch, growing exponentially) and the smoothed training loss at each."""

    lrs: list[float]
    losses: list[float]

    def suggestion(self) -> float:
        """The learning rate where the smoothed loss falls fastest (steepest negative slope in log-lr),
        looking only up to the lowest loss: what follows a blow-up is not learning."""
        end = int(np.argmin(self.losses)) + 1
        if end < 3:
            raise ValueError("the loss never fell: lower start_lr or run more steps")
        slope = np.gradient(np.array(self.losses[:end]), np.log(self.lrs[:end]))
        return float(self.lrs[int(np.argmin(slope))])


def lr_find(model: nn.Module, data: CIFAR10Data, config: TrainConfig = TrainConfig(), device: str | None = None,
            start_lr: float = 1e-4, end_lr: float = 10.0, steps: int = 100, smoothing: float = 0.05,
            diverge: float = 4.0) -> LRFinderResult:
    """LR range test (Smith, "Cyclical Learning Rates for Training Neural Networks", 2017): train with the
    recipe's optimizer while the learning rate grows from start_lr to end_lr over `steps` batches; stop when
    the loss exceeds `diverge` times its best. The model's weights and mode are restored afterwards."""
    if not 0 < start_lr < end_lr or steps < 3:
        raise ValueError("need 0 < start_lr < end_lr and steps >= 3")
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    saved = {k: v.detach().clone() for k, v in model.state_dict().items()}
    was_training = model.training
    model.to(device)
    if config.channels_last:
        model.to(memory_format=torch.channels_last)
    train_batches, _ = make_batches(data, config.batch_size, device, config.flip, config.seed, config.on_device_data,
                                    cutout=config.cutout)
    optimizer = make_optimizer(model, config)
    dtype = amp_dtype(device, config.amp)
    autocast = autocast_for(device, dtype)
    step = make_step(model, optimizer, nn.CrossEntropyLoss(label_smoothing=config.label_smoothing), autocast,
                     config.channels_last)
    factor = (end_lr / start_lr) ** (1 / (steps - 1))
    result, avg, best = LRFinderResult([], []), 0.0, math.inf
    model.train()
    try:
        epoch = 0
        while len(result.lrs) < steps:
            epoch += 1
            train_batches.set_epoch(epoch)
            for x, y in train_batches:
                lr = start_lr * factor ** len(result.lrs)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                loss, _ = step(x, y)
                avg = smoothing * loss.item() + (1 - smoothing) * avg
                smoothed = avg / (1 - (1 - smoothing) ** (len(result.lrs) + 1))  # bias-corrected running mean
                result.lrs.append(lr)
                result.losses.append(smoothed)
                best = min(best, smoothed)
                if not math.isfinite(smoothed) or smoothed > diverge * best or len(result.lrs) >= steps:
                    return result
    finally:
        model.load_state_dict(saved)
        model.train(was_training)
    return result
