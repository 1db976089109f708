"""Training: the step (SGD + Nesterov, mixed precision, channels_last), one epoch stepping the schedule of
schedule.py every batch, the evaluation after it, and `fit`, which loops over epochs and keeps the run's folder
(run_folder.py) so that an interrupted run resumes to the same result."""
from __future__ import annotations

import contextlib
import copy
import itertools
import math
import os
import re
import signal
import threading
import time
import warnings
from dataclasses import dataclass, replace

import torch
from torch import nn

from .checkpoint import CheckpointError
from .config import TrainConfig
from .batches import make_batches
from .data import CIFAR10Data
from .display import EpochLog
from .evaluation import Predictions, predict, train_mode
from .history import History
from .precision import FP32, Precision, choose_precision
from .run_folder import CHECKPOINT_SECONDS, EpochTally, RunFolder, recorded_precision
from .schedule import make_scheduler
from .utils import default_device

CHECK_EVERY = 16  # training batches between two looks at the running loss (each look waits for the device)


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """SGD with Nesterov momentum; weight decay on conv/linear weights only, not on BatchNorm or biases, unless
    `config.weight_decay_all` puts it on every parameter."""
    decay = [p for p in model.parameters() if p.ndim > 1 or config.weight_decay_all]
    no_decay = [p for p in model.parameters() if p.ndim <= 1 and not config.weight_decay_all]
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.SGD(groups, lr=config.max_lr, momentum=config.max_momentum, nesterov=True)


def make_criterion(config: TrainConfig) -> nn.Module:
    """The loss training minimises and evaluation reports: cross-entropy with the recipe's label smoothing."""
    return nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)


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
    with train_mode(model), torch.no_grad():
        for x, _ in batches:
            if seen >= images:
                break
            with precision.autocast():
                model(x.contiguous(memory_format=torch.channels_last) if channels_last else x)
            seen += len(x)
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum


@dataclass
class Trainer:
    """What training carries from one step to the next: the model and what steps it (optimizer, LR schedule,
    fp16 loss scaler, the weights' moving average), the loss, the precision, and the batches it draws from.
    `compiled`: torch.compile's model, which takes the batches of `full_batch` images (the rest run eagerly: each
    other size would cost a recompilation that takes longer than running it)."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    criterion: nn.Module
    precision: Precision = FP32
    scaler: torch.amp.GradScaler | None = None
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None
    ema: WeightAverage | None = None
    channels_last: bool = False
    compiled: nn.Module | None = None
    full_batch: int = 0
    train_batches: object = None  # batches.DeviceBatches or batches.LoaderBatches
    test_batches: object = None

    def step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One training step on (x, y): forward under the precision's autocast, loss in fp32, backward, the
        optimizer's step (through the GradScaler in fp16), the moving average, the schedule. Returns the loss and
        logits, detached, and whether GradScaler skipped the step for inf/NaN gradients (a bool tensor, always
        False without fp16); nothing is read back to the host."""
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        net = self.compiled if self.compiled is not None and len(y) == self.full_batch else self.model
        with self.precision.autocast():
            logits = net(x)
        loss = self.criterion(logits.float(), y)
        self.optimizer.zero_grad(set_to_none=True)
        skipped = torch.zeros_like(loss, dtype=torch.bool)
        if self.scaler is None:
            loss.backward()
            self.optimizer.step()
        else:
            scaled = self.scaler.scale(loss)
            before = _scale(self.scaler).clone()
            scaled.backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            skipped = _scale(self.scaler) < before  # GradScaler lowers the scale when it skips a step
        if self.ema is not None:
            self.ema.update(self.model)
        if self.scheduler is not None:
            # The schedule follows the batch count, skipped steps included, so a run ends on its planned LR; a
            # step GradScaler skipped loses one update, as in PyTorch's AMP recipe (and torch warns of exactly that)
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", re.escape("Detected call of `lr_scheduler.step()` before"))
                self.scheduler.step()
        return loss.detach(), logits.detach(), skipped

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def evaluated(self) -> nn.Module:
        """The model evaluation measures: the moving average where there is one."""
        return self.ema.module if self.ema is not None else self.model

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
                "scaler": self.scaler.state_dict() if self.scaler is not None else None,
                "ema": self.ema.state_dict() if self.ema is not None else None}

    def load_state_dict(self, ckpt: dict, path) -> None:
        try:
            self.model.load_state_dict(ckpt["model"])
        except RuntimeError as e:
            raise CheckpointError(f"checkpoint {path} does not fit this model ({str(e).splitlines()[0]}); "
                                  "resume with the model it was trained with") from None
        self.optimizer.load_state_dict(ckpt["optimizer"])
        if self.scheduler is not None:
            self.scheduler.load_state_dict(ckpt["scheduler"])
        if self.scaler is not None and ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        if self.ema is not None:
            self.ema.load_state_dict(ckpt["ema"])


def make_trainer(model: nn.Module, data: CIFAR10Data, config: TrainConfig, device: torch.device | str | None = None,
                 batch_size: int | None = None, precision: Precision | None = None, schedule: bool = True) -> Trainer:
    """Move `model` to `device` (default: the best available), in channels_last if configured, and build what
    trains it with `config`: batches (of `batch_size` if given), optimizer, the precision (unless given), loss,
    the OneCycle schedule (unless `schedule` is False: the LR range test sets the LR itself) and the moving
    average."""
    device = torch.device(device) if device is not None else default_device()
    batch_size = batch_size or config.batch_size
    model.to(device)
    if config.channels_last:
        model.to(memory_format=torch.channels_last)
    if precision is None:  # timed at the batch the run really has: at most the whole training set
        precision = choose_precision(device, config.precision, model, min(batch_size, len(data.train_labels)),
                                     config.channels_last)
    train_batches, test_batches = make_batches(data, batch_size, device, config.augmentation(), config.seed,
                                               config.on_device_data, hole_epochs=config.hole_epochs)
    optimizer = make_optimizer(model, config)
    return Trainer(model, optimizer, make_criterion(config), precision,
                   precision.grad_scaler(),
                   make_scheduler(optimizer, config, len(train_batches)) if schedule else None,
                   make_ema(model, config.ema), config.channels_last,
                   torch.compile(model) if config.compile else None, batch_size, train_batches, test_batches)


def _scale(scaler: torch.amp.GradScaler) -> torch.Tensor:
    """GradScaler's scale as the tensor on its device; get_scale() would wait for the device to return it."""
    return scaler._get_scale_async()


class WeightAverage:
    """An exponential moving average of a model's weights and BatchNorm statistics, `module` (Polyak & Juditsky
    1992; Page 2019 for short runs), updated with nothing read back to the host (torch's AveragedModel tests its
    counter on the device every step). Its state_dict is laid out as AveragedModel's ("module.*", "n_averaged")."""

    def __init__(self, model: nn.Module, decay: float):
        self.module, self.decay, self.updates = copy.deepcopy(model).requires_grad_(False), decay, 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """The first update copies `model`; each later one moves the average 1 - decay of the way to it (integer
        buffers, BatchNorm's batch counter, are copied)."""
        pairs = list(zip(self.module.state_dict().values(), model.state_dict().values()))
        lerped = [(a, b) for a, b in pairs if a.is_floating_point()] if self.updates else []
        copied = [(a, b) for a, b in pairs if not lerped or not a.is_floating_point()]
        if lerped:
            torch._foreach_lerp_([a for a, _ in lerped], [b for _, b in lerped], 1 - self.decay)
        for average, current in copied:
            average.copy_(current)
        self.updates += 1

    def state_dict(self) -> dict:
        return {**{"module." + k: v for k, v in self.module.state_dict().items()},
                "n_averaged": torch.tensor(self.updates)}

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict({k.removeprefix("module."): v for k, v in state.items() if k != "n_averaged"})
        self.updates = int(state["n_averaged"])


def make_ema(model: nn.Module, decay: float) -> WeightAverage | None:
    """An exponential moving average of `model`'s weights and BatchNorm statistics (None for decay 0)."""
    return WeightAverage(model, decay) if decay else None


def train_one_epoch(t: Trainer, tally: EpochTally, log: EpochLog, save_due=lambda: False, save=None,
                    stop=lambda: False, check_every: int = CHECK_EVERY) -> EpochTally:
    """Train on t.train_batches of epoch `tally.epoch` from batch `tally.batches` on (earlier ones are drawn and
    skipped, which replays the augmentation's random stream) and return the epoch's tally; stops early, between
    two batches, once `stop()` is true. The running sums stay on the device and are read back once every
    `check_every` batches (and when `save_due()`, then offered to `save` while finite). Raises FloatingPointError
    when the loss stops being finite or fp16 overflows on every step."""
    batches, p = t.train_batches, tally
    batches.set_epoch(p.epoch)
    t.model.train()
    start = time.perf_counter() - p.seconds
    loss_sum, correct, seen, skipped = (torch.tensor(float(v), device=t.device)
                                        for v in (p.loss_sum, p.correct, p.seen, p.skipped))
    done = p.batches
    with log.bar(p.epoch, len(batches), done) as bar:
        for x, y in itertools.islice(batches, done, None):
            lr = t.optimizer.param_groups[0]["lr"]
            loss, logits, step_skipped = t.step(x, y)
            counted = ~step_skipped | loss.isfinite()  # the loss of a step fp16 overflowed says nothing
            loss_sum += torch.where(counted, loss * len(y), 0.0)
            correct += ((logits.argmax(1) == y) & counted).sum()
            seen += len(y) * counted
            skipped += step_skipped
            done += 1
            if bar is not None:
                bar.update(1)
            last, stopping, saving = done == len(batches), stop(), save is not None and save_due()
            if done % check_every and not (last or stopping or saving):
                continue
            sums = [loss_sum, correct, seen, skipped] + ([_scale(t.scaler)] if t.scaler is not None else [])
            values = torch.stack(sums).tolist()  # the one host sync of a check
            p = replace(p, batches=done, loss_sum=values[0], correct=int(values[1]), seen=int(values[2]),
                        skipped=int(values[3]), lr=lr, seconds=time.perf_counter() - start)
            if len(values) > 4 and values[4] < 1:  # every overflow halves it: the run has diverged
                raise FloatingPointError(f"the fp16 loss or its gradients overflowed on every recent step "
                                         f"(GradScaler's scale fell to {values[4]:.2g})")
            if not math.isfinite(p.loss_sum):
                raise FloatingPointError(f"training loss became {p.loss_sum / max(p.seen, 1)} by batch "
                                         f"{done}/{len(batches)}")
            if bar is not None:
                seen = max(p.seen, 1)
                bar.set_postfix(loss=f"{p.loss_sum / seen:.3f}", acc=f"{100 * p.correct / seen:.1f}%")
            if saving and not last:
                save(p)
            if stopping:
                break
    if p.batches == len(batches) and not p.seen:
        raise FloatingPointError(f"every step overflowed fp16 (GradScaler skipped all {p.skipped})")
    return p


def evaluate(model: nn.Module, t: Trainer, epoch: int, bn_stats_images: int = 0) -> Predictions:
    """An epoch's test figures (Predictions without images): BatchNorm statistics first recomputed over the first
    `bn_stats_images` of this epoch's augmented batches, where that is not 0."""
    if bn_stats_images:
        t.train_batches.set_epoch(epoch)
        recompute_batchnorm(model, t.train_batches, bn_stats_images, t.precision, t.channels_last)
    return predict(model, t.test_batches, t.precision, t.channels_last, t.criterion, keep_images=False)


def fit(model: nn.Module, data: CIFAR10Data, config: TrainConfig = TrainConfig(),
        device: torch.device | str | None = None,
        out_dir: str | os.PathLike | None = None, resume: bool = False, progress: str = "bar",
        checkpoint_seconds: float = CHECKPOINT_SECONDS) -> History:
    """Train `model` on `data` with `config`; returns the History. With `out_dir`, writes history.json and
    checkpoint.pt there after every epoch, and checkpoint.pt also every `checkpoint_seconds` within an epoch
    (atomically); with `resume`, continues from the checkpoint to the same result as an uninterrupted run.
    `progress`: how training shows itself (display.DISPLAYS). With `config.ema`, every evaluation uses the
    weights' moving average, and `model` ends holding it; with `config.bn_stats_images`, the evaluated model's
    BatchNorm statistics are recomputed first."""
    log = EpochLog(progress, config.epochs)
    folder = RunFolder(out_dir, resume, checkpoint_seconds)
    device = torch.device(device) if device is not None else default_device()
    t = make_trainer(model, data, config, device, precision=recorded_precision(folder.saved_run, device, config))
    history, partial = folder.start(t, config, data, t.precision, len(t.train_batches))
    _announce(log, t, config, history, partial, folder)
    with stop_after_batch_on_interrupt() as stop_asked:
        for epoch in range(len(history) + 1, config.epochs + 1):
            start = partial if partial and partial.epoch == epoch else EpochTally(epoch)
            try:
                done = train_one_epoch(t, start, log, folder.save_due, lambda p: folder.save(t, history, p),
                                       stop_asked)
            except FloatingPointError as e:
                raise folder.diverged(str(e), epoch, t.precision, config.max_lr) from None
            if done.batches < len(t.train_batches):  # interrupted: keep this batch's state, then stop
                raise folder.stopped(t, history, done, len(t.train_batches))
            evaluated = time.perf_counter()
            test = evaluate(t.evaluated, t, epoch, config.bn_stats_images)
            history.append(epoch=epoch, train_loss=done.loss_sum / done.seen, train_acc=100 * done.correct / done.seen,
                           test_loss=test.loss, test_acc=test.accuracy, lr=done.lr, skipped_steps=done.skipped,
                           epoch_seconds=done.seconds + time.perf_counter() - evaluated)
            log.epoch(history)
            folder.save(t, history)
    if t.ema is not None:  # the model handed back is the one every evaluation measured
        model.load_state_dict(t.ema.module.state_dict())
    return history


def _announce(log: EpochLog, t: Trainer, config: TrainConfig, history: History, partial: EpochTally | None,
              folder: RunFolder) -> None:
    """The lines a run starts with: a short run's lower peak; a resumed run's earlier epochs and where it goes on;
    then, unless it is finished, where and in which precision it trains."""
    if folder.saved is None and history.run["peak_lr"] < config.max_lr:
        log.write(f"short run: a warm-up of {history.run['warmup_steps']:.1f} batches, under min_warmup_steps="
                  f"{config.min_warmup_steps}, so the LR peaks at {history.run['peak_lr']:.3g} instead of max_lr "
                  f"{config.max_lr}")
    if folder.saved is not None:
        for i in range(len(history)):  # so that a resumed run's output still has every epoch's line
            log.epoch(history, i)
        log.write(folder.describe_resume(history, partial, config.epochs, len(t.train_batches)))
    if not folder.finished:
        log.write(f"training on {history.run['segments'][-1]['device']} in {t.precision}")


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
