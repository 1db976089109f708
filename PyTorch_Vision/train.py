"""Training: the step (SGD with Nesterov momentum on a OneCycle schedule, mixed precision, channels_last), one
epoch of steps and the evaluation after it, and `fit`, the epoch loop, which checkpoints after every epoch so that a
resumed run ends as an uninterrupted one would; under torchrun, one run across its processes (DDP)."""
from __future__ import annotations

import io
import math
import os
import re
import time
import warnings
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from .config import TrainConfig
from .data import CIFAR10Data, make_batches, shard
from .evaluation import Predictions, predict, train_mode
from .history import EpochLog, History
from .utils import atomic_write, autocast, choose_precision, default_device, device_name, precision_text, \
    resolve_device

CHECK_EVERY = 16  # batches between two reads of the running sums (each read waits for the device)
CHECKPOINT = "checkpoint.pt"


def rank_and_world() -> tuple[int, int]:
    """This process's rank and the number of processes training together: (0, 1) outside torchrun."""
    return (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)


def setup_distributed(device: str | None = None) -> torch.device:
    """Under torchrun (RANK set), join its processes, NCCL with one GPU each or gloo on the CPU, and return this
    process's device; without torchrun, the device named (None: the best available)."""
    if "RANK" not in os.environ:
        return resolve_device(device)
    device = resolve_device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda":
        device = resolve_device(f"cuda:{os.environ['LOCAL_RANK']}")
        torch.cuda.set_device(device)
    elif device.type != "cpu":
        raise ValueError(f"several processes train on CUDA GPUs or on the CPU, not on {device.type}: use --device "
                         "cuda or cpu")
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device


def check_split(batch_size: int, n_train: int, world: int) -> None:
    """Refuse a global batch, or an epoch's last batch, that `world` processes cannot share evenly."""
    last = n_train % batch_size if n_train % batch_size != 1 else 0  # a last batch of one image is dropped
    if batch_size % world or last % world:
        raise ValueError(f"batch_size {batch_size} cannot be split evenly over {world} processes"
                         + (f" (the last batch of each epoch holds {last} of the {n_train:,} training images)"
                            if not batch_size % world else "")
                         + f": choose a batch size that leaves every batch a multiple of {world} images")


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """SGD with Nesterov momentum; weight decay on conv and linear weights, not on BatchNorm or biases."""
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.SGD(groups, lr=config.max_lr, momentum=config.max_momentum, nesterov=True)


def make_criterion(config: TrainConfig) -> nn.Module:
    """The loss training minimises and evaluation reports: cross-entropy with the recipe's label smoothing."""
    return nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)


def warmup_and_peak(config: TrainConfig, total_steps: int) -> tuple[float, float]:
    """The warm-up (in batches) and peak LR: max_lr, or lower in proportion when the warm-up is shorter than
    min_warmup_steps (a fresh network blows up when the LR climbs within a few batches: docs/RECIPE.md)."""
    pct_start = min(max(config.pct_start, 2 / total_steps), 1 - 1 / total_steps)  # both phases >= one step
    warmup = pct_start * total_steps
    return warmup, config.max_lr * min(1.0, warmup / config.min_warmup_steps)


def make_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig, steps_per_epoch: int):
    """OneCycleLR stepped every batch: the LR warms up to its peak and anneals, the momentum moves the other way."""
    total = config.epochs * steps_per_epoch
    if total < 3:
        raise ValueError(f"a OneCycle schedule needs at least 3 training batches in all, this run has {total}: "
                         "use more epochs, more images or a smaller batch size")
    warmup, peak = warmup_and_peak(config, total)
    return torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=peak, total_steps=total, pct_start=warmup / total, div_factor=config.div_factor,
        final_div_factor=config.final_div_factor, anneal_strategy=config.anneal, base_momentum=config.base_momentum,
        max_momentum=config.max_momentum)


@dataclass
class Trainer:
    """What training carries from step to step: the model (DDP-wrapped on several processes), what steps it, the
    loss, the precision, the batches (each process trains on its `rank`'s part of every batch)."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    criterion: nn.Module
    scaler: torch.amp.GradScaler
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None  # None: a constant LR (tests, benchmarks)
    precision: str = "fp32"
    precision_rates: dict | None = None  # img/s of each precision, where they were timed to choose it
    channels_last: bool = False
    train_batches: object = None  # data.DeviceBatches or data.LoaderBatches
    test_batches: object = None
    rank: int = 0
    world: int = 1

    def step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One step on (x, y), reading nothing back from the device: returns the loss, the logits and whether fp16
        overflow made GradScaler skip the step (a bool tensor). The scaler passes everything through unless fp16."""
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(x.device, self.precision):
            logits = self.model(x)
        loss = self.criterion(logits.float(), y)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        before = self.scale().clone()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        skipped = self.scale() < before  # GradScaler halves its scale when it skips a step
        if self.scheduler is not None:
            # the schedule follows the batches, skipped steps included, so that a run ends on its planned LR
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", re.escape("Detected call of `lr_scheduler.step()` before"))
                self.scheduler.step()
        return loss.detach(), logits.detach(), skipped

    def scale(self) -> torch.Tensor:
        """GradScaler's scale as a tensor on the device (get_scale() would wait for the device); 1 unless fp16."""
        if self.scaler.is_enabled():
            return self.scaler._get_scale_async()
        return torch.ones((), device=self.device)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def raw_model(self) -> nn.Module:
        """The model itself, without DDP's wrapper: what is evaluated and checkpointed."""
        return self.model.module if isinstance(self.model, DistributedDataParallel) else self.model

    def state_dict(self) -> dict:
        return {"model": self.raw_model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
                "scaler": self.scaler.state_dict()}

    def load_state_dict(self, ckpt: dict, path) -> None:
        try:
            self.raw_model.load_state_dict(ckpt["model"])
        except RuntimeError as e:
            raise CheckpointError(f"checkpoint {path} does not fit this model ({str(e).splitlines()[0]}); "
                                  "resume with the model it was trained with") from None
        self.optimizer.load_state_dict(ckpt["optimizer"])
        if self.scheduler is not None:
            self.scheduler.load_state_dict(ckpt["scheduler"])
        if self.scaler.is_enabled() and ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])


def make_trainer(model: nn.Module, data: CIFAR10Data, config: TrainConfig, device: torch.device | str | None = None,
                 batch_size: int | None = None, precision: tuple[str, dict] | None = None) -> Trainer:
    """Move `model` to `device` and build what trains it with `config` (the precision timed unless given); under
    torchrun, wrapped in DDP."""
    device = torch.device(device) if device is not None else default_device()
    batch_size = batch_size or config.batch_size
    rank, world = rank_and_world()
    check_split(batch_size, len(data.train_labels), world)
    if config.sync_batchnorm and world > 1:
        if device.type != "cuda":
            raise ValueError("sync_batchnorm needs CUDA GPUs (NCCL): torch's SyncBatchNorm does not run on the CPU; "
                             "train without it")
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model.to(device)
    if config.channels_last:
        model.to(memory_format=torch.channels_last)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # inputs are always 32x32: let cuDNN time and keep its fastest kernels
    if precision is None and rank == 0:
        precision = choose_precision(device, config.precision, model, min(batch_size // world,
                                     len(data.train_labels)), config.channels_last)
    if world > 1:  # rank 0 times the precisions and every process trains in its choice
        chosen = [precision]
        dist.broadcast_object_list(chosen)
        precision = chosen[0]
    name, rates = precision
    train_batches, test_batches = make_batches(data, batch_size, device, config)
    optimizer = make_optimizer(model, config)
    if world > 1:
        model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    return Trainer(model, optimizer, make_criterion(config), torch.amp.GradScaler(device.type, enabled=name == "fp16"),
                   make_scheduler(optimizer, config, len(train_batches)),
                   name, rates, config.channels_last, train_batches, test_batches, rank, world)


def train_one_epoch(t: Trainer, epoch: int, log: EpochLog, check_every: int = CHECK_EVERY) -> dict:
    """Train one epoch; its figures. The sums stay on the device, read back once every `check_every` batches;
    FloatingPointError once the loss stops being finite or fp16 overflows on every step."""
    batches = t.train_batches
    batches.set_epoch(epoch)
    t.model.train()
    start = time.perf_counter()
    sums = torch.zeros(4, device=t.device)  # loss * images, correct, images counted, steps skipped
    with log.bar(epoch, len(batches)) as bar:
        for i, (x, y) in enumerate(shard(batches, t.rank, t.world), 1):
            lr = t.optimizer.param_groups[0]["lr"]
            loss, logits, skipped = t.step(x, y)
            counted = ~skipped | loss.isfinite()  # the loss of a step that overflowed fp16 says nothing
            sums += torch.stack([torch.where(counted, loss * len(y), 0.0), ((logits.argmax(1) == y) & counted).sum(),
                                 counted * len(y), skipped]).float()
            if bar is not None:
                bar.update(1)
            if i % check_every and i < len(batches):
                continue
            totals = torch.cat([sums, t.scale().view(1)])
            if t.world > 1:  # the sums of every process; each has the same scale and skipped steps
                dist.all_reduce(totals)
                totals[3:] /= t.world
            loss_sum, correct, seen, skips, scale = totals.tolist()  # one host read
            if scale < 1:  # each overflow halves it: the run has diverged
                raise FloatingPointError(f"the fp16 loss or its gradients overflowed on every recent step "
                                         f"(GradScaler's scale fell to {scale:.2g})")
            if not math.isfinite(loss_sum):
                raise FloatingPointError(f"training loss became {loss_sum / max(seen, 1)} by batch {i}/{len(batches)}")
            if bar is not None and seen:
                bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{100 * correct / seen:.1f}%")
    if not seen:
        raise FloatingPointError(f"every step overflowed fp16 (GradScaler skipped all {skips:.0f})")
    return {"train_loss": loss_sum / seen, "train_acc": 100 * correct / seen, "lr": lr, "skipped_steps": int(skips),
            "seconds": time.perf_counter() - start}


def recompute_batchnorm(model: nn.Module, batches, images: int, precision: str = "fp32",
                        channels_last: bool = False) -> None:
    """BatchNorm statistics as plain averages over the first `images` of `batches` with today's weights ("precise
    BN", Wu & Johnson 2021): the running averages also hold earlier weights'. Mode and momentum are restored."""
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
            with autocast(x.device, precision):
                model(x.contiguous(memory_format=torch.channels_last) if channels_last else x)
            seen += len(x)
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum


def evaluate(t: Trainer, epoch: int, bn_stats_images: int = 0) -> Predictions:
    """An epoch's test figures, BatchNorm statistics first recomputed over `bn_stats_images` of its (whole)
    batches: every process evaluates alike."""
    if bn_stats_images:
        t.train_batches.set_epoch(epoch)
        recompute_batchnorm(t.raw_model, t.train_batches, bn_stats_images, t.precision, t.channels_last)
    return predict(t.raw_model, t.test_batches, t.precision, t.channels_last, t.criterion, keep_images=False)


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable or belongs to another run; the message says what to do."""


def run_folder(out_dir: str | os.PathLike | None, resume: bool) -> Path | None:
    """The run's folder, refused before any work when it is a file or, unless resuming, holds another run."""
    if out_dir is None:
        if resume:
            raise ValueError("resume needs out_dir: the folder holding checkpoint.pt")
        return None
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out} is a file, not a folder: choose a folder for the run's outputs")
    if not resume and (out / CHECKPOINT).exists():
        raise CheckpointError(f"{out} already holds a run (checkpoint.pt); resume it (--resume / resume=True) "
                              "or choose another output folder: nothing was overwritten")
    return out


def settings_folder(root: str | os.PathLike, config: TrainConfig, data: CIFAR10Data) -> Path:
    """A folder under `root` named by what differs from the recipe ("recipe", "epochs=5,flip=False"): the same
    settings find their run again, other settings get their own."""
    changed = [f"{f.name}={getattr(config, f.name)}" for f in fields(config)
               if getattr(config, f.name) != f.default]
    if (len(data.train_labels), len(data.test_labels)) != (50_000, 10_000):
        changed.append(f"images={len(data.train_labels)}+{len(data.test_labels)}")
    return Path(root) / (",".join(changed) or "recipe")


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Read a checkpoint safely (weights_only); CheckpointError, saying what to do, if it cannot be used."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}: nothing to resume; start without --resume")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"checkpoint {path} cannot be read ({type(e).__name__}); it is corrupt or not a "
                              "checkpoint of this package: delete it, or start a new run elsewhere") from None
    if not isinstance(ckpt, dict) or "model" not in ckpt or "history" not in ckpt:
        raise CheckpointError(f"{path} is not a checkpoint of this package; start a new run elsewhere")
    if ckpt.get("partial"):
        raise CheckpointError(f"{path} was written within an epoch by an older version of this package; resume it "
                              "with that version, or start a new run elsewhere")
    return ckpt


def save_checkpoint(path: Path, t: Trainer, history: History, config: TrainConfig, data: CIFAR10Data) -> None:
    """checkpoint.pt (what `fit` resumes from) and history.json, each written whole or not at all."""
    buffer = io.BytesIO()
    torch.save({**t.state_dict(), "history": history.to_dict(), "config": asdict(config),
                "data": data.fingerprint()}, buffer)
    atomic_write(path / CHECKPOINT, buffer.getvalue())
    history.save(path / "history.json")


def check_resumable(ckpt: dict, config: TrainConfig, data: CIFAR10Data, path: Path) -> None:
    """Refuse to resume `ckpt` with other settings or data than it was trained with."""
    saved = ckpt.get("config", {})
    differ = [f"{k}: checkpoint {saved[k]!r} vs now {v!r}" for k, v in asdict(config).items()
              if k in saved and saved[k] != v]
    if ckpt.get("data") != data.fingerprint():
        differ.append(f"data: checkpoint {ckpt.get('data')} vs now {data.fingerprint()}")
    if differ:
        raise CheckpointError(f"checkpoint {path} is from a different run ({'; '.join(differ)}); resume with the "
                              "same settings and data, or start a new run in another folder")


def recorded_precision(run: dict | None, device: torch.device | str, config: TrainConfig) -> tuple | None:
    """(precision, rates) a run last trained in where that was this machine (a resumed run keeps it), else None."""
    last = ((run or {}).get("segments") or [{}])[-1]
    if config.precision != "auto" or last.get("device") != device_name(device) or "precision" not in last:
        return None
    return last["precision"], last.get("precision_rates", {})


def start(t: Trainer, config: TrainConfig, data: CIFAR10Data, out: Path | None, saved: dict | None,
          log: EpochLog) -> History:
    """The run's History, restored with the trainer from `saved` once shown to be this run's, else new; records
    where this stretch trains and checks that `out` can be written."""
    machine = {"device": device_name(t.device), "precision": t.precision, "precision_rates": t.precision_rates or {},
               "processes": t.world, "torch": str(torch.__version__)}
    if saved is not None:
        check_resumable(saved, config, data, out / CHECKPOINT)
        t.load_state_dict(saved, out / CHECKPOINT)
        history = History.from_dict(saved["history"])
        for i in range(len(history)):  # so that a resumed run's output still has every epoch's line
            log.epoch(history, i)
        log.write(f"resumed {out / CHECKPOINT} after epoch {len(history)}/{config.epochs}"
                  + (": finished, nothing left to train" if len(history) >= config.epochs else ""))
    else:
        warmup, peak = warmup_and_peak(config, config.epochs * len(t.train_batches))
        history = History(run={"config": asdict(config), "data": data.source, **data.fingerprint(),
                               "peak_lr": peak, "warmup_steps": warmup, **machine})
        if peak < config.max_lr:
            log.write(f"short run: a warm-up of {warmup:.1f} batches, under min_warmup_steps="
                      f"{config.min_warmup_steps}, so the LR peaks at {peak:.3g} instead of max_lr {config.max_lr}")
    if len(history) < config.epochs:
        history.run["segments"] = history.run.get("segments", []) + [{"from_epoch": len(history) + 1, **machine}]
        log.write(f"training on {machine['device']} in {precision_text(t.precision, t.precision_rates)}"
                  + (f", checkpoints in {out}" if out is not None else ""))
    if out is not None and t.rank == 0:  # find a full disk or a read-only folder now, not after the first epoch
        out.mkdir(parents=True, exist_ok=True)
        atomic_write(out / ".write-test", b"")
        (out / ".write-test").unlink()
    return history


def fit(model: nn.Module, data: CIFAR10Data, config: TrainConfig = TrainConfig(),
        device: torch.device | str | None = None, out_dir: str | os.PathLike | None = None, resume: bool = False,
        progress: str = "bar") -> History:
    """Train `model`; its History. With `out_dir`, checkpoint.pt and history.json after every epoch; `resume` goes
    on from there. `progress`: "bar", "epoch" or "none"."""
    log = EpochLog(progress if rank_and_world()[0] == 0 else "none", config.epochs)  # rank 0 alone prints
    out = run_folder(out_dir, resume)
    saved = load_checkpoint(out / CHECKPOINT) if resume else None
    device = torch.device(device) if device is not None else default_device()
    t = make_trainer(model, data, config, device,
                     precision=recorded_precision(saved and saved["history"].get("run"), device, config))
    history = start(t, config, data, out, saved, log)

    def kept() -> str:
        return f"the checkpoint of epoch {len(history)} is kept in {out}" if out and len(history) else \
            "no checkpoint was written"

    epoch = len(history) + 1
    try:
        for epoch in range(len(history) + 1, config.epochs + 1):
            trained = train_one_epoch(t, epoch, log)
            evaluated = time.perf_counter()
            test = evaluate(t, epoch, config.bn_stats_images)
            seconds = trained.pop("seconds") + time.perf_counter() - evaluated
            history.append(epoch=epoch, test_loss=test.loss, test_acc=test.accuracy, epoch_seconds=seconds, **trained)
            log.epoch(history)
            if out is not None and t.rank == 0:  # and writes
                save_checkpoint(out, t, history, config, data)
    except FloatingPointError as e:
        raise FloatingPointError(f"{e} in epoch {epoch} ({precision_text(t.precision)}); {kept()}. Lower max_lr "
                                 f"(now {config.max_lr}) or check the data.") from None
    except KeyboardInterrupt:
        raise KeyboardInterrupt(f"stopped in epoch {epoch}; {kept()}" + (
            ": resume with --resume (command line), resume=True (fit), or by running the notebook's training cell "
            "again" if out and len(history) else "")) from None
    return history
