"""The recipe as one frozen dataclass, `TrainConfig` (why these values: docs/RECIPE.md). The command line's options
(`--batch-size`) and the notebook's overrides (`S11_BATCH_SIZE`) are made from its fields and their types."""
from __future__ import annotations

import argparse
import math
import os
import typing
from dataclasses import dataclass, field, fields, replace

from .utils import PRECISIONS

SWITCHES = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False, "off": False}
# what a number may be: (test, words for the error message)
RANGES = {
    "any": (lambda v: True, ""),
    ">0": (lambda v: v > 0, "positive"),
    ">=0": (lambda v: v >= 0, ">= 0"),
    "[0,1]": (lambda v: 0 <= v <= 1, "from 0 to 1"),
    "[0,1)": (lambda v: 0 <= v < 1, "from 0 up to (not including) 1"),
    "(0,1)": (lambda v: 0 < v < 1, "between 0 and 1 (both excluded)"),
}


def setting(default, help: str, range: str = "any", choices: tuple[str, ...] = ()):
    """A field with its help for --help, the range a number must lie in, or the texts it may be."""
    return field(default=default, metadata={"help": help, "range": range, "choices": choices})


@dataclass(frozen=True)
class TrainConfig:
    """Every setting of a run; the defaults are the 20-epoch recipe. Checked when made: a bad value raises
    ValueError in one line that says which and what it must be."""

    epochs: int = setting(20, "passes over the training data", ">0")
    batch_size: int = setting(128, "images per step", ">0")
    max_lr: float = setting(0.1, "the one-cycle schedule's peak LR", ">0")
    pct_start: float = setting(0.25, "fraction of the steps spent warming up to max_lr", "(0,1)")
    anneal: str = setting("cos", "shape of the warm-up and the annealing", choices=("cos", "linear"))
    div_factor: float = setting(25.0, "initial LR = max_lr / div_factor", ">0")
    final_div_factor: float = setting(1e4, "final LR = initial LR / final_div_factor", ">0")
    min_warmup_steps: int = setting(100, "the LR climbs to max_lr over no fewer batches; a shorter run peaks "
                                    "lower, in proportion", ">0")
    max_momentum: float = setting(0.95, "SGD momentum at the start and end, cycled against the LR", "[0,1)")
    base_momentum: float = setting(0.85, "SGD momentum at the LR's peak", "[0,1]")
    weight_decay: float = setting(5e-4, "L2 on conv and linear weights (not on BatchNorm or biases)", ">=0")
    label_smoothing: float = setting(0.1, "label smoothing of the cross-entropy loss", "[0,1)")
    flip: bool = setting(True, "horizontal flip of half of the images")
    cutout_p: float = setting(0.5, "fraction of the images that get one 16x16 CutOut square (0: none)", "[0,1]")
    bn_stats_images: int = setting(2048, "BatchNorm statistics recomputed over this many training images before "
                                   "each evaluation (0: BatchNorm's running averages)", ">=0")
    seed: int = setting(0, "seed of the weights, the batches and the augmentation")
    precision: str = setting("auto", "auto: bf16 on GPUs of compute capability >= 8.0, fp16 + GradScaler on 7.x "
                             "(Colab's T4); on a CPU with native bf16 the faster of bf16 and fp32, else fp32",
                             choices=PRECISIONS)
    channels_last: bool = setting(True, "channels_last memory format (faster convolutions)")
    sync_batchnorm: bool = setting(False, "under torchrun on GPUs, BatchNorm statistics over the whole global "
                                   "batch (SyncBatchNorm) instead of each process's part")
    on_device_data: bool | None = setting(None, "1: the data held and augmented as whole batches on the device; "
                                          "0: the albumentations DataLoader; auto: 1 on CUDA and the CPU")

    def __post_init__(self):
        for f in fields(self):
            check(f, getattr(self, f.name))
        if self.base_momentum > self.max_momentum:
            raise ValueError(f"base_momentum ({self.base_momentum}) must not exceed max_momentum "
                             f"({self.max_momentum}): the momentum cycles from max down to base and back")


def kind(f) -> type:
    """The type a field holds: int, float, bool or str (the optional in `bool | None` set aside)."""
    hint = typing.get_type_hints(TrainConfig)[f.name]
    return next(t for t in typing.get_args(hint) if t is not type(None)) if typing.get_args(hint) else hint


def expected(f) -> str:
    """What a field's value must be, in words: "a positive whole number", "one of cos, linear", ..."""
    if f.metadata["choices"]:
        return f"one of {', '.join(f.metadata['choices'])}"
    if kind(f) is bool:
        return "1 or 0" + (" or auto" if f.default is None else "")
    words = RANGES[f.metadata["range"]][1]
    noun = "whole number" if kind(f) is int else "number"
    return f"a {words} {noun}" if words == "positive" else f"a {noun} {words}".rstrip()


def check(f, value) -> None:
    """Raise ValueError("batch_size must be a positive whole number, got 0") unless `value` fits field `f`."""
    t = kind(f)
    if value is None and f.default is None:
        return
    if t is bool:
        fits = isinstance(value, bool)
    elif t is str:
        fits = isinstance(value, str) and value in f.metadata["choices"]
    else:
        fits = isinstance(value, (int, float) if t is float else int) and not isinstance(value, bool) \
            and math.isfinite(value) and RANGES[f.metadata["range"]][0](value)
    if not fits:
        what = ("True, False or None" if f.default is None else "True or False") if t is bool else expected(f)
        raise ValueError(f"{f.name} must be {what}, got {value!r}")


def parse(f, text: str):
    """A field's value from text ("256", "0.1", "1"/"0", "auto"); ValueError "must be ..., got 'text'"."""
    t, clean = kind(f), text.strip().lower()
    try:
        if f.default is None and clean in ("", "auto"):
            value = None
        elif t is bool:
            value = SWITCHES[clean]
        else:
            value = t(text.strip())
        check(f, value)
    except (ValueError, KeyError):
        raise ValueError(f"must be {expected(f)}, got {text!r}") from None
    return value


class SettingError(ValueError):
    """A setting's value cannot be used; in a notebook it shows as this one line, without a traceback."""

    def _render_traceback_(self) -> list[str]:  # IPython's hook for how an exception is shown
        return [f"SettingError: {self}"]


def config_from_env(base: TrainConfig = TrainConfig(), prefix: str = "S11_") -> TrainConfig:
    """`base` with each field overridden by its environment variable where one is set (S11_BATCH_SIZE=256,
    S11_FLIP=0). A bad value stops with one line naming the variable."""
    changes = {}
    for f in fields(base):
        name = prefix + f.name.upper()
        if name in os.environ:
            try:
                changes[f.name] = parse(f, os.environ[name])
            except ValueError as e:
                raise SettingError(f"{name} {e}: set it to a valid value (default {getattr(base, f.name)}) or "
                                   "unset it") from None
    try:
        return replace(base, **changes)
    except ValueError as e:
        raise SettingError(f"{e}: check {', '.join(prefix + k.upper() for k in changes)}") from None


def add_options(parser: argparse.ArgumentParser) -> None:
    """One option per field, with its help and check: --batch-size for batch_size, --flip/--no-flip for a switch."""
    for f in fields(TrainConfig):
        option, help = "--" + f.name.replace("_", "-"), f.metadata["help"].replace("%", "%%")
        if kind(f) is bool and f.default is not None:
            parser.add_argument(option, action=argparse.BooleanOptionalAction, default=f.default,
                                help=f"{help} (default: {'on' if f.default else 'off'})")
        else:
            def typed(text, f=f):
                try:
                    return parse(f, text)
                except ValueError as e:
                    raise argparse.ArgumentTypeError(str(e)) from None
            parser.add_argument(option, type=typed, default=f.default, help=f"{help} (default: {f.default})",
                                **({"choices": f.metadata["choices"]} if f.metadata["choices"] else {}))


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The TrainConfig the parsed options of `add_options` say."""
    return TrainConfig(**{f.name: getattr(args, f.name) for f in fields(TrainConfig)})
