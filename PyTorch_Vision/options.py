"""A run's options apart from its recipe, as one dataclass, `RunOptions`: where the data is, where the outputs go,
which device, how much of the data, resuming, checkpoints, progress. The command line's other options are made
from its fields (`--data-dir`, `--out`, ...), as TrainConfig's fields make the recipe's."""
from __future__ import annotations

from dataclasses import dataclass

from .display import DISPLAYS
from .run_folder import CHECKPOINT_SECONDS
from .settings import check_settings, optional, positive_float, positive_int, setting, switch, text


@dataclass(frozen=True)
class RunOptions:
    """Where a run reads, writes and trains, checked when made; the defaults are the command line's."""

    data_dir: str = setting("data", "CIFAR-10 folder: ImageFolder copy (train/, test/), cifar-10-batches-py, or "
                            "where to download it", text)
    out: str = setting("runs/resnet18", "folder for the outputs", text)
    device: str | None = setting(None, "cpu, cuda, cuda:N or mps (default: the best available)", optional(text))
    limit_train: int | None = setting(None, "use a fixed subset of N train images", optional(positive_int))
    limit_test: int | None = setting(None, "use a fixed subset of N test images", optional(positive_int))
    resume: bool = setting(False, "continue the run whose checkpoint.pt is in --out", switch)
    checkpoint_minutes: float = setting(CHECKPOINT_SECONDS / 60, "also checkpoint within an epoch this often, so "
                                        "an interruption loses at most that much", positive_float)
    progress: str = setting(DISPLAYS[0], "a bar and a line per epoch, the line only, or nothing",
                            choices=DISPLAYS)

    def __post_init__(self):
        check_settings(self)
