"""Training: the step (SGD + Nesterov, mixed precision, channels_last), one epoch stepping the schedule of
schedule.py every batch, the evaluation after it, and `fit`, which loops over epochs and keeps the run's folder
(run_folder.py) so that an interrupted run resumes to the same result."""
from __future__ import annotations

import contextlib
import itertools
import math
import os
import re
import signal
import threading
import time
import warnings
from dataclasses import asdict, dataclass, replace

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from .checkpoint import CheckpointError
from .config import TrainConfig
from .batches import make_batches
from .data import CIFAR10Data
from .evaluation import Predictions, eval_mode, predict
from .history import History
from .precision import FP32, Precision, choose_precision
from .progress import EpochLog
from .run_folder import EpochProgress, RunFolder, machine_record
from .schedule import make_scheduler, warmup_and_peak
from .utils import default_device


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """SGD with Nesterov momentum; weight decay on conv/linear weights only, not on BatchNorm or biases, unless
    `config.weight_decay_all` puts it on every parameter."""
    decay = [p for p in model.parameters() if p.ndim > 1 or config.weight_decay_all]
    no_decay = [p for p in model.parameters() if p.ndim <= 1 and not config.weight_decay_all]
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


def recompute_batchnorm(model: nn.Module, batches, images: int, precision: Precision = FP32,
                        channels_last: bool = False) -> None:
    """Set `model`'s BatchNorm statistics to plain averages over the first `images` images of `batches`, with the
    weights as they are now ("precise BN", Wu & Johnson 2021). BatchNorm's running averages also hold the
    statistics of earlier weights, far off in a run of few batches. Training is unaffected: it normalizes by
    each batch's own statistics. The model's train/eval mode and BatchNorm momentum are restored."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not norms or images <= 0:
        return
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over the batches seen
    seen = 0
    with eval_mode(model, training=True), torch.no_grad():
        for x, _ in batches:
            if seen >= images:
                break
            with precision.autocast():
                model(x.contiguous(memory_format=torch.channels_last) if channels_last else x)
            seen += len(x)
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum


@dataclass
class Setup:
    """What a training loop needs, built one way for `fit`, `lr_find` and `estimate_run`."""

    device: torch.device
    precision: Precision
    train_batches: object   # batches.LoaderBatches or batches.DeviceBatches
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
    if precision is None:  # timed at the batch the run really has: at most the whole training set
        precision = choose_precision(device, config.precision, model, min(batch_size, len(data.train_labels)),
                                     config.channels_last)
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


@dataclass
class TrainState:
    """What a checkpoint holds of a run in progress: the model and what steps it."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler | None
    ema: AveragedModel | None = None  # the weights' moving average, which evaluation then uses

    @property
    def evaluated(self) -> nn.Module:
        return self.ema.module if self.ema is not None else self.model

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict() if self.scaler is not None else None,
                "ema": self.ema.state_dict() if self.ema is not None else None}

    def load_state_dict(self, ckpt: dict, path) -> None:
        try:
            self.model.load_state_dict(ckpt["model"])
        except RuntimeError as e:
            raise CheckpointError(f"checkpoint {path} does not fit this model ({str(e).splitlines()[0]}); "
                                  "resume with the model it was trained with") from None
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        if self.scaler is not None and ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        if self.ema is not None:
            self.ema.load_state_dict(ckpt["ema"])


def make_ema(model: nn.Module, decay: float) -> AveragedModel | None:
    """An exponential moving average of `model`'s weights and BatchNorm statistics (None for decay 0)."""
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True) if decay else None


def train_one_epoch(state: TrainState, s: Setup, progress: EpochProgress, log: EpochLog, save=None,
                    stop=lambda: False) -> EpochProgress:
    """Train on s.train_batches of epoch `progress.epoch` from batch `progress.batches` on (earlier ones are drawn
    and skipped, which replays the augmentation's random stream); offers `save(progress)` the state after each
    batch while the loss is finite; returns early, between two batches, once `stop()` is true. Raises
    FloatingPointError when the loss stops being finite or every fp16 step overflowed."""
    batches, p = s.train_batches, progress
    batches.set_epoch(p.epoch)
    state.model.train()
    start = time.perf_counter() - p.seconds
    loss_sum = torch.tensor(p.loss_sum, device=s.device)
    correct = torch.tensor(p.correct, device=s.device)
    check_every = 16 if s.device.type == "cuda" and s.scaler is None else 1  # elsewhere a look costs nothing
    with log.bar(p.epoch, len(batches), p.batches) as bar:
        for x, y in itertools.islice(batches, p.batches, None):
            loss, logits, skipped = s.step(x, y)
            lr = _after_step(state, skipped)
            counted = not skipped or math.isfinite(loss.item())  # an overflowed fp16 loss says nothing of the model
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
            if save is not None and p.batches < len(batches) and math.isfinite(loss_sum.item()):
                save(replace(p, loss_sum=loss_sum.item(), correct=int(correct.item()),
                             seconds=time.perf_counter() - start))
            if stop():
                break
    p = replace(p, loss_sum=loss_sum.item(), correct=int(correct.item()), seconds=time.perf_counter() - start)
    if p.batches == len(batches) and not p.seen:
        raise FloatingPointError(f"every step overflowed fp16 (GradScaler skipped all {p.skipped})")
    if p.batches == len(batches) and not math.isfinite(p.loss_sum / p.seen):
        raise FloatingPointError(f"training loss became {p.loss_sum / p.seen}")
    return p


def _after_step(state: TrainState, skipped: bool) -> float:
    """The moving average and the schedule after a step; returns the LR the step used."""
    if state.ema is not None:
        state.ema.update_parameters(state.model)
    lr = state.optimizer.param_groups[0]["lr"]
    # The schedule follows the batch count, skipped steps included, so a run ends on its planned LR; a step
    # GradScaler skipped loses one update, as in PyTorch's AMP recipe (and torch warns about exactly that).
    with warnings.catch_warnings():
        if skipped:
            warnings.filterwarnings("ignore", re.escape("Detected call of `lr_scheduler.step()` before"))
        state.scheduler.step()
    return lr


def evaluate(model: nn.Module, s: Setup, config: TrainConfig, epoch: int) -> Predictions:
    """An epoch's test figures (Predictions without images): BatchNorm statistics first recomputed over this
    epoch's augmented batches, from the first, when `config.bn_stats_images` asks for it."""
    if config.bn_stats_images:
        s.train_batches.set_epoch(epoch)
        recompute_batchnorm(model, s.train_batches, config.bn_stats_images, s.precision, config.channels_last)
    return predict(model, s.test_batches, s.precision, config.channels_last, s.criterion, keep_images=False)


def fit(model: nn.Module, data: CIFAR10Data, config: TrainConfig = TrainConfig(),
        device: torch.device | str | None = None,
        out_dir: str | os.PathLike | None = None, resume: bool = False, progress: str = "bar",
        checkpoint_seconds: float = 600.0) -> History:
    """Train `model` on `data` with `config`; returns the History. With `out_dir`, writes history.json and
    checkpoint.pt there after every epoch, and checkpoint.pt also every `checkpoint_seconds` within an epoch
    (atomically); with `resume`, continues from the checkpoint to the same result as an uninterrupted run.
    `progress`: "bar" (a bar and a line per epoch), "epoch" (the line only) or "none". With `config.ema`, every
    evaluation uses the weights' moving average, and `model` ends holding it; with `config.bn_stats_images`, the
    evaluated model's BatchNorm statistics are recomputed first."""
    log = EpochLog(progress, config.epochs)
    folder = RunFolder(out_dir, resume, checkpoint_seconds)
    device = torch.device(device) if device is not None else default_device()
    s = prepare(model, data, config, device, precision=folder.recorded_precision(device, config))
    state = TrainState(model, s.optimizer, make_scheduler(s.optimizer, config, len(s.train_batches)), s.scaler,
                       make_ema(model, config.ema))
    history, partial = folder.start(state, config, data, _run_record(config, data, len(s.train_batches)),
                                    machine_record(s.device, s.precision))
    _announce(log, s, config, history, partial, folder)
    with stop_after_batch_on_interrupt() as stop_asked:
        for epoch in range(len(history) + 1, config.epochs + 1):
            start = partial if partial and partial.epoch == epoch else EpochProgress(epoch)
            try:
                done = train_one_epoch(state, s, start, log, lambda p: folder.save_if_due(state, history, p),
                                       stop_asked)
            except FloatingPointError as e:
                raise folder.diverged(str(e), epoch, s.precision, config.max_lr) from None
            if done.batches < len(s.train_batches):  # interrupted: keep this batch's state, then stop
                raise folder.stopped(state, history, done, len(s.train_batches))
            evaluated = time.perf_counter()
            test = evaluate(state.evaluated, s, config, epoch)
            history.append(epoch=epoch, train_loss=done.loss_sum / done.seen, train_acc=100 * done.correct / done.seen,
                           test_loss=test.loss, test_acc=test.accuracy, lr=done.lr, skipped_steps=done.skipped,
                           epoch_seconds=done.seconds + time.perf_counter() - evaluated)
            log.epoch(history)
            folder.save(state, history)
    if state.ema is not None:  # the model handed back is the one every evaluation measured
        model.load_state_dict(state.ema.module.state_dict())
    return history


def _run_record(config: TrainConfig, data: CIFAR10Data, batches_per_epoch: int) -> dict:
    """What history.json records of a run besides its machine: settings, data, the LR's peak."""
    _, peak = warmup_and_peak(config, config.epochs * batches_per_epoch)
    return {"config": asdict(config), "data": data.source, **data.fingerprint(), "peak_lr": peak}


def _announce(log: EpochLog, s: Setup, config: TrainConfig, history: History, partial: EpochProgress | None,
              folder: RunFolder) -> None:
    """The lines a run starts with: a short run's lower peak; a resumed run's earlier epochs and where it goes on;
    then, unless it is finished, where and in which precision it trains."""
    warmup, peak = warmup_and_peak(config, config.epochs * len(s.train_batches))
    if peak < config.max_lr and folder.saved is None:
        log.write(f"short run: a warm-up of {warmup:.1f} batches, under min_warmup_steps={config.min_warmup_steps}, "
                  f"so the LR peaks at {peak:.3g} instead of max_lr {config.max_lr}")
    if folder.saved is not None:
        for i in range(len(history)):  # so that a resumed run's output still has every epoch's line
            log.epoch(history, i)
        log.write(folder.describe_resume(history, partial, config.epochs, len(s.train_batches)))
    if not folder.finished:
        log.write(f"training on {history.run['segments'][-1]['device']} in {s.precision}")


@contextlib.contextmanager
def stop_after_batch_on_interrupt():
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
