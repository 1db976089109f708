"""Training: SGD + Nesterov with a per-batch OneCycle schedule, mixed precision, channels_last, and
checkpoints during and after every epoch so that an interrupted run resumes to the same result."""
from __future__ import annotations

import io
import itertools
import json
import math
import os
import random
import re
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from .data import CIFAR10Data, make_batches
from .precision import PRECISIONS, Precision, choose_precision
from .utils import markdown_table, progress_bar


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
    precision: str = "auto"         # "auto" (what the hardware runs natively), "bf16", "fp16" or "fp32"
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
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
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
    skipped_steps: list[int] = field(default_factory=list)  # optimizer steps GradScaler skipped (fp16 overflow)

    def append(self, skipped_steps: int = 0, **row: float) -> None:
        for key in HISTORY_KEYS:
            getattr(self, key).append(row[key])
        self.skipped_steps.append(skipped_steps)

    def __len__(self) -> int:
        return len(self.epoch)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "History":
        missing = [k for k in HISTORY_KEYS if k not in d]
        if missing:
            raise ValueError(f"not a training history: keys {missing} are missing")
        skipped = list(d.get("skipped_steps", [0] * len(d["epoch"])))  # histories before fp16 support lack it
        return cls(**{k: list(d[k]) for k in HISTORY_KEYS}, skipped_steps=skipped)

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


def make_step(model: nn.Module, optimizer: torch.optim.Optimizer, criterion: nn.Module,
              precision: Precision = Precision("fp32", "cpu"), channels_last: bool = False,
              scaler: torch.amp.GradScaler | None = None):
    """The training step: forward under `precision`'s autocast, loss in fp32, backward, optimizer step (through
    `scaler` in fp16). Returns step(x, y) -> (loss, logits, skipped), loss and logits detached; `skipped` is True
    when GradScaler found inf/NaN gradients and left the weights as they were.

    Raises FloatingPointError once GradScaler's scale has fallen below 1: every overflow halves it, so by then
    the loss has overflowed fp16 about 17 steps running, unscaled, and the run has diverged."""
    def step(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, bool]:
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with precision.autocast():
            logits = model(x)
        loss = criterion(logits.float(), y)
        optimizer.zero_grad(set_to_none=True)
        if scaler is None:
            loss.backward()
            optimizer.step()
            return loss.detach(), logits.detach(), False
        before = scaler.get_scale()
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        scale = scaler.get_scale()
        if scale < 1:
            raise FloatingPointError(f"the fp16 loss or its gradients overflowed on every recent step (GradScaler's "
                                     f"scale fell to {scale:.2g})")
        return loss.detach(), logits.detach(), scale < before
    return step


def _full_batches_through(full_step, other_step, batch_size: int):
    """A step that sends batches of `batch_size` images to `full_step` and any other size to `other_step`."""
    def step(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, bool]:
        return (full_step if len(y) == batch_size else other_step)(x, y)
    return step


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
        loss, logits, skipped = step(x, y)
        lr = optimizer.param_groups[0]["lr"]
        # The schedule follows the batch count, skipped steps included, so a run ends on its planned LR; a step
        # GradScaler skipped loses one update, as in PyTorch's AMP recipe (and torch warns about exactly that).
        with warnings.catch_warnings():
            if skipped:
                warnings.filterwarnings("ignore", re.escape("Detected call of `lr_scheduler.step()` before"))
            scheduler.step()
        counted = not skipped or math.isfinite(loss.item())  # an overflowed fp16 loss says nothing about the model
        if counted:
            loss_sum += loss * len(y)
            correct += (logits.argmax(1) == y).sum()
        p = replace(p, batches=p.batches + 1, seen=p.seen + len(y) * counted, skipped=p.skipped + skipped, lr=lr)
        if bar is not None:
            bar.update(1)
            if p.batches % 10 == 1:
                bar.set_postfix(loss=f"{loss_sum.item() / max(p.seen, 1):.3f}",
                               acc=f"{100 * correct.item() / max(p.seen, 1):.1f}%")
        if save is not None and time.perf_counter() - last_save >= save_every_s and p.batches < len(batches) \
                and math.isfinite(loss_sum.item()):
            save(replace(p, loss_sum=loss_sum.item(), correct=int(correct.item()),
                         seconds=time.perf_counter() - start))
            last_save = time.perf_counter()
    return replace(p, loss_sum=loss_sum.item(), correct=int(correct.item()), seconds=time.perf_counter() - start)


@torch.no_grad()
def evaluate(model: nn.Module, batches, criterion=None, precision: Precision = Precision("fp32", "cpu"),
             channels_last: bool = False) -> tuple[float, float]:
    """Mean loss and accuracy (%) of `model` over `batches` of (x, y), in eval mode; restores the mode."""
    criterion = criterion or nn.CrossEntropyLoss()
    was_training = model.training
    model.eval()
    loss_sum, correct, seen = 0.0, 0, 0
    for x, y in batches:
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with precision.autocast():
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
    precision = choose_precision(device, config.precision)
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
    scaler = precision.grad_scaler()
    criterion = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    step = make_step(model, optimizer, criterion, precision, config.channels_last, scaler)
    if config.compile:
        # only full batches run compiled: the epoch's smaller last batch and evaluation would each cost a
        # recompilation that takes longer than running them eagerly
        compiled = make_step(torch.compile(model), optimizer, criterion, precision, config.channels_last, scaler)
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
        bar = progress_bar(len(train_batches), f"epoch {epoch}/{config.epochs}") if progress == "bar" else None

        def diverged(what: str) -> FloatingPointError:
            on_disk = f"the checkpoint of {kept} is kept in {out}" if kept else "no checkpoint was written"
            return FloatingPointError(f"{what} in epoch {epoch} ({precision}); {on_disk}. "
                                      f"Lower max_lr (now {config.max_lr}) or check the data.")
        try:
            done = _train_epoch(model, train_batches, step, optimizer, scheduler, bar,
                                partial if partial and partial.epoch == epoch else EpochProgress(epoch),
                                save_partial if out is not None else None, checkpoint_seconds)
        except FloatingPointError as e:
            raise diverged(str(e)) from None
        finally:
            if bar is not None:
                bar.close()
        if not done.seen:
            raise diverged(f"every step overflowed fp16 (GradScaler skipped all {done.skipped})")
        train_loss = done.loss_sum / done.seen
        if not math.isfinite(train_loss):
            raise diverged(f"training loss became {train_loss}")
        train_acc = 100 * done.correct / done.seen
        start = time.perf_counter()
        test_loss, test_acc = evaluate(model, test_batches, criterion, precision, config.channels_last)
        history.append(epoch=epoch, train_loss=train_loss, train_acc=train_acc, test_loss=test_loss,
                       test_acc=test_acc, lr=done.lr, epoch_seconds=done.seconds + time.perf_counter() - start,
                       skipped_steps=done.skipped)
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
            f"lr {history.lr[i]:.4f}  {history.epoch_seconds[i]:.1f} s"
            + (f"  ({history.skipped_steps[i]} fp16 steps skipped)" if history.skipped_steps[i] else ""))


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
    precision = choose_precision(device, config.precision)
    step = make_step(model, optimizer, nn.CrossEntropyLoss(label_smoothing=config.label_smoothing), precision,
                     config.channels_last, precision.grad_scaler())
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
                try:
                    loss, _, _ = step(x, y)
                except FloatingPointError:  # GradScaler's scale collapsed: the rate is far past the blow-up
                    return result
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
