"""Training: the step (SGD + Nesterov, mixed precision, channels_last), the epoch loop stepping the schedule of
schedule.py every batch, and checkpoints during and after every epoch so that an interrupted run resumes to the
same result."""
from __future__ import annotations

import contextlib
import itertools
import math
import os
import re
import signal
import sys
import threading
import time
import warnings
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm import tqdm

from .checkpoint import CheckpointError, atomic_write, check_resumable, load_checkpoint, save_checkpoint
from .config import TrainConfig
from .data import CIFAR10Data, make_batches
from .evaluation import FP32, Predictions, predict
from .history import History
from .precision import Precision, choose_precision
from .schedule import make_scheduler, warmup_and_peak
from .utils import default_device, device_name, progress_bar


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """SGD with Nesterov momentum; weight decay on conv/linear weights only, not on BatchNorm or biases."""
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.SGD(groups, lr=config.max_lr, momentum=config.max_momentum, nesterov=True)


def make_step(model: nn.Module, optimizer: torch.optim.Optimizer, criterion: nn.Module,
              precision: Precision = FP32, channels_last: bool = False,
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


def _train_epoch(model, batches, step, optimizer, scheduler, bar, progress: EpochProgress, save=None,
                 save_every_s: float = math.inf, check_every: int = 1, stop=lambda: False,
                 ema: AveragedModel | None = None) -> EpochProgress:
    """Train on `batches` from batch `progress.batches` on (earlier ones are drawn and skipped, which replays the
    augmentation's random stream); calls `save(progress)` every `save_every_s` seconds while the loss is finite.
    Raises FloatingPointError when the loss sum is not finite, looking every `check_every` batches (a look
    waits for the device); returns early, between two batches, once `stop()` is true."""
    model.train()
    start = time.perf_counter() - progress.seconds
    loss_sum = torch.tensor(progress.loss_sum, device=next(model.parameters()).device)
    correct = torch.tensor(progress.correct, device=loss_sum.device)
    p, last_save = progress, time.perf_counter()
    if bar is not None:
        bar.update(p.batches)
    for x, y in itertools.islice(batches, p.batches, None):
        loss, logits, skipped = step(x, y)
        if ema is not None:
            ema.update_parameters(model)
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
        if p.batches % check_every == 0 and not math.isfinite(loss_sum.item()):
            raise FloatingPointError(f"training loss became {loss_sum.item() / max(p.seen, 1)} by batch "
                                     f"{p.batches}/{len(batches)}")
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
        if stop():
            break
    return replace(p, loss_sum=loss_sum.item(), correct=int(correct.item()), seconds=time.perf_counter() - start)


def recompute_batchnorm(model: nn.Module, batches, images: int, precision: Precision = FP32,
                        channels_last: bool = False) -> None:
    """Set `model`'s BatchNorm statistics to plain averages over the first `images` images of `batches`, with the
    weights as they are now ("precise BN", Wu & Johnson 2021). BatchNorm's running averages also hold the
    statistics of earlier weights, far off in a run of few batches. Training is unaffected: it normalizes by
    each batch's own statistics. The model's train/eval mode and BatchNorm momentum are restored."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not norms or images <= 0:
        return
    momenta, was_training = [m.momentum for m in norms], model.training
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over the batches seen
    model.train()
    seen = 0
    with torch.no_grad():
        for x, _ in batches:
            if seen >= images:
                break
            with precision.autocast():
                model(x.contiguous(memory_format=torch.channels_last) if channels_last else x)
            seen += len(x)
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    model.train(was_training)


@dataclass
class Setup:
    """What a training loop needs, built one way for `fit`, `lr_find` and `estimate_run`."""

    device: torch.device
    precision: Precision
    train_batches: object   # data.LoaderBatches or data.DeviceBatches
    test_batches: object
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler | None
    criterion: nn.Module
    step: object            # step(x, y) -> (loss, logits, skipped), from make_step


def prepare(model: nn.Module, data: CIFAR10Data, config: TrainConfig, device: torch.device | str | None = None,
            batch_size: int | None = None, precision: Precision | None = None) -> Setup:
    """Move `model` to `device` (default: the best available) in channels_last if configured, and build the
    batches, optimizer, precision (unless given), loss and training step of `config` (batches of `batch_size` if
    given)."""
    device = torch.device(device) if device is not None else default_device()
    batch_size = batch_size or config.batch_size
    model.to(device)
    if config.channels_last:
        model.to(memory_format=torch.channels_last)
    if precision is None:
        precision = choose_precision(device, config.precision, model, batch_size, config.channels_last)
    train_batches, test_batches = make_batches(data, batch_size, device, config.augmentation(),
                                               config.seed, config.on_device_data)
    optimizer = make_optimizer(model, config)
    scaler = precision.grad_scaler()
    criterion = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    step = make_step(model, optimizer, criterion, precision, config.channels_last, scaler)
    if config.compile:
        # only full batches run compiled: the epoch's smaller last batch and evaluation would each cost a
        # recompilation that takes longer than running them eagerly
        compiled = make_step(torch.compile(model), optimizer, criterion, precision, config.channels_last, scaler)
        step = _full_batches_through(compiled, step, batch_size)
    return Setup(device, precision, train_batches, test_batches, optimizer, scaler, criterion, step)


def fit(model: nn.Module, data: CIFAR10Data, config: TrainConfig = TrainConfig(),
        device: torch.device | str | None = None,
        out_dir: str | os.PathLike | None = None, resume: bool = False, progress: str = "bar",
        checkpoint_seconds: float = 600.0) -> History:
    """Train `model` on `data` with `config`; returns the History.

    With `out_dir`, writes history.json and checkpoint.pt there after every epoch, and checkpoint.pt also every
    `checkpoint_seconds` within an epoch (atomically); with `resume`, continues from the checkpoint to the same
    result as an uninterrupted run. `progress`: "bar" (a bar per epoch and a line per epoch), "epoch" (the line
    only) or "none". With `config.ema`, every evaluation uses the weights' moving average, and `model` ends
    holding it; with `config.bn_stats_images`, the evaluated model's BatchNorm statistics are recomputed first.
    """
    if progress not in ("bar", "epoch", "none"):
        raise ValueError(f"progress must be 'bar', 'epoch' or 'none', got {progress!r}")
    if not checkpoint_seconds >= 0:
        raise ValueError(f"checkpoint_seconds must be >= 0 (0: after every batch), got {checkpoint_seconds!r}")
    out = _output_folder(out_dir, resume)
    ckpt_path = out / "checkpoint.pt" if out else None
    ckpt = load_checkpoint(ckpt_path) if resume else None
    device = torch.device(device) if device is not None else default_device()

    recorded = recorded_precision(ckpt["history"].get("run", {}), device, config) if ckpt else None
    s = prepare(model, data, config, device, precision=recorded)
    optimizer, scaler, train_batches = s.optimizer, s.scaler, s.train_batches
    # the weights' exponential moving average (BatchNorm statistics included), which evaluation then uses
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(config.ema), use_buffers=True) \
        if config.ema else None
    scheduler = make_scheduler(optimizer, config, len(train_batches))
    warmup, peak = warmup_and_peak(config, config.epochs * len(train_batches))

    history = History(run={"config": asdict(config), "data": data.source, **data.fingerprint(),
                           **_where(s.device, s.precision), "peak_lr": peak})
    if progress != "none":
        tqdm.write(f"training on {device_name(s.device)} in {s.precision}", file=sys.stdout)
    if progress != "none" and peak < config.max_lr and not resume:
        tqdm.write(f"short run: a warm-up of {warmup:.1f} batches, under min_warmup_steps={config.min_warmup_steps}, "
                   f"so the LR peaks at {peak:.3g} instead of max_lr {config.max_lr}", file=sys.stdout)
    partial = None
    if resume:
        history, partial = _restore(ckpt, ckpt_path, model, optimizer, scheduler, scaler, ema, config, data)
        if progress != "none":
            for i in range(len(history)):  # so that a resumed run's output still has every epoch's line
                tqdm.write(_epoch_line(history, i, config.epochs), file=sys.stdout)
            where = f"in epoch {partial.epoch}/{config.epochs} at batch {partial.batches}/{len(train_batches)}" \
                if partial else f"after epoch {len(history)}/{config.epochs}"
            tqdm.write(f"resumed {ckpt_path} {where}", file=sys.stdout)
    # which epochs ran where, and in which precision: a resumed run may land on another machine
    first = {"from_epoch": partial.epoch, "from_batch": partial.batches} if partial else {"from_epoch": len(history) + 1}
    history.run["segments"] = history.run.get("segments", []) + [{**first, **_where(s.device, s.precision)}]
    if out is not None:  # find a full disk or a read-only folder now, not after the first epoch
        out.mkdir(parents=True, exist_ok=True)
        atomic_write(out / ".write-test", b"")
        (out / ".write-test").unlink()

    kept = (f"epoch {partial.epoch} at batch {partial.batches}" if partial else f"epoch {len(history)}") \
        if resume else None  # what the checkpoint on disk holds

    def save_state(partial: EpochProgress | None = None) -> None:
        save_checkpoint(ckpt_path, {
            "model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict() if scaler is not None else None, "history": history.to_dict(),
            "ema": ema.state_dict() if ema is not None else None,
            "config": asdict(config), "data": data.fingerprint(),
            "partial": asdict(partial) if partial is not None else None})  # what _restore reads back

    def save_partial(p: EpochProgress) -> None:
        nonlocal kept
        save_state(p)
        kept = f"epoch {p.epoch} at batch {p.batches}"

    check_every = 16 if s.device.type == "cuda" and scaler is None else 1  # elsewhere a look costs nothing
    with _stop_after_batch_on_interrupt() as stop_asked:
        for epoch in range(len(history) + 1, config.epochs + 1):
            train_batches.set_epoch(epoch)
            bar = progress_bar(len(train_batches), f"epoch {epoch}/{config.epochs}") if progress == "bar" else None

            def diverged(what: str) -> FloatingPointError:
                on_disk = f"the checkpoint of {kept} is kept in {out}" if kept else "no checkpoint was written"
                return FloatingPointError(f"{what} in epoch {epoch} ({s.precision}); {on_disk}. "
                                          f"Lower max_lr (now {config.max_lr}) or check the data.")
            try:
                done = _train_epoch(model, train_batches, s.step, optimizer, scheduler, bar,
                                    partial if partial and partial.epoch == epoch else EpochProgress(epoch),
                                    save_partial if out is not None else None, checkpoint_seconds, check_every,
                                    stop_asked, ema)
            except FloatingPointError as e:
                raise diverged(str(e)) from None
            finally:
                if bar is not None:
                    bar.close()
            if done.batches < len(train_batches):  # interrupted: keep this batch's state, then stop
                where = f"epoch {epoch} at batch {done.batches}/{len(train_batches)}"
                if out is None:
                    raise KeyboardInterrupt(f"stopped in {where}; nothing was saved (no out_dir)")
                save_partial(done)
                raise KeyboardInterrupt(f"stopped in {where}; its checkpoint is in {out}: resume with --resume "
                                        "(command line), resume=True (fit), or by running the notebook's training "
                                        "cell again")
            if not done.seen:
                raise diverged(f"every step overflowed fp16 (GradScaler skipped all {done.skipped})")
            train_loss = done.loss_sum / done.seen
            if not math.isfinite(train_loss):
                raise diverged(f"training loss became {train_loss}")
            start = time.perf_counter()
            test = _evaluate(ema.module if ema is not None else model, s, config, epoch)
            history.append(epoch=epoch, train_loss=train_loss, train_acc=100 * done.correct / done.seen,
                           test_loss=test.loss, test_acc=test.accuracy, lr=done.lr,
                           epoch_seconds=done.seconds + time.perf_counter() - start, skipped_steps=done.skipped)
            if progress != "none":
                tqdm.write(_epoch_line(history, -1, config.epochs), file=sys.stdout)
            if out is not None:
                save_state()
                history.save(out / "history.json")
                kept = f"epoch {epoch}"
    if ema is not None:  # the model handed back is the one every evaluation measured
        model.load_state_dict(ema.module.state_dict())
    return history


def _evaluate(model: nn.Module, s: Setup, config: TrainConfig, epoch: int) -> Predictions:
    """An epoch's test figures (Predictions without images): BatchNorm statistics first recomputed over this
    epoch's augmented batches, from the first, when `config.bn_stats_images` asks for it."""
    if config.bn_stats_images:
        s.train_batches.set_epoch(epoch)
        recompute_batchnorm(model, s.train_batches, config.bn_stats_images, s.precision, config.channels_last)
    return predict(model, s.test_batches, s.precision, config.channels_last, s.criterion, keep_images=False)


def _output_folder(out_dir: str | os.PathLike | None, resume: bool) -> Path | None:
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


def _where(device: torch.device, precision: Precision) -> dict:
    """What a run records of the machine it trains on: device, precision (with the rates it was chosen by), torch."""
    return {"device": device_name(device), "precision": precision.name, "precision_rates": dict(precision.rates),
            "torch": str(torch.__version__)}


def recorded_precision(run: dict, device: torch.device | str, config: TrainConfig) -> Precision | None:
    """The precision a run (its History's `run` record) last trained in, where that was on this machine: resumed
    there, or evaluated there, it keeps it. None for a new run, another machine or a precision set by hand."""
    last = (run.get("segments") or [{}])[-1]
    device = torch.device(device)
    if config.precision != "auto" or last.get("device") != device_name(device) or "precision" not in last:
        return None
    return Precision(last["precision"], device.type, tuple(last.get("precision_rates", {}).items()))


def _restore(ckpt: dict, path: Path, model: nn.Module, optimizer, scheduler, scaler, ema, config: TrainConfig,
             data: CIFAR10Data) -> tuple[History, EpochProgress | None]:
    """Load the state `fit` saved at `path` (read as `ckpt`) into model, optimizer, scheduler, scaler and ema, once
    it is shown to be this run's (same settings, same data); returns its History and, if saved mid-epoch, its
    progress."""
    check_resumable(ckpt, config, data.fingerprint(), path)
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as e:
        raise CheckpointError(f"checkpoint {path} does not fit this model ({str(e).splitlines()[0]}); "
                              "resume with the model it was trained with") from None
    optimizer.load_state_dict(ckpt["optimizer"])
    scheduler.load_state_dict(ckpt["scheduler"])
    if scaler is not None and ckpt.get("scaler"):
        scaler.load_state_dict(ckpt["scaler"])
    if ema is not None:
        ema.load_state_dict(ckpt["ema"])
    return History.from_dict(ckpt["history"]), EpochProgress(**ckpt["partial"]) if ckpt.get("partial") else None


@contextlib.contextmanager
def _stop_after_batch_on_interrupt():
    """While training, Ctrl-C (or a notebook's interrupt) asks the loop to stop after the batch in progress, so
    the checkpoint it leaves is consistent; a second Ctrl-C stops at once. Yields stop_asked() -> bool."""
    if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
        yield lambda: False
        return
    asked = []

    def ask(signum, frame):
        if asked:
            raise KeyboardInterrupt
        asked.append(signum)

    previous = signal.signal(signal.SIGINT, ask)
    try:
        yield lambda: bool(asked)
    finally:
        signal.signal(signal.SIGINT, previous)


def _epoch_line(history: History, i: int, epochs: int) -> str:
    return (f"epoch {history.epoch[i]:2d}/{epochs}  train loss {history.train_loss[i]:.4f} "
            f"acc {history.train_acc[i]:5.2f}%  test loss {history.test_loss[i]:.4f} acc {history.test_acc[i]:5.2f}%  "
            f"lr {history.lr[i]:.4f}  {history.epoch_seconds[i]:.1f} s"
            + (f"  ({history.skipped_steps[i]} fp16 steps skipped)" if history.skipped_steps[i] else ""))
