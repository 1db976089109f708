"""The recipe as one dataclass, `TrainConfig`: every setting of a run, with its help and parser, checked when it
is made. The command line's options and the notebook's S11_<FIELD> overrides are built from its fields."""
from __future__ import annotations

from dataclasses import dataclass, fields

from .precision import PRECISIONS
from .settings import count, nonnegative_float, open_share, optional_switch, positive_float, positive_int, setting, \
    share, share_below_one, switch, whole_number
from .transforms import Augmentation


@dataclass(frozen=True)
class TrainConfig(Augmentation):
    """The recipe: the augmentation's switches (inherited from `Augmentation`) and everything else. Defaults are
    the 20-epoch ResNet18 recipe (why these values: docs/RECIPE.md)."""

    epochs: int = setting(20, "passes over the training data", positive_int)
    batch_size: int = setting(128, "images per step", positive_int)
    max_lr: float = setting(0.1, "the one-cycle schedule's peak LR", positive_float)
    max_momentum: float = setting(0.95, "SGD momentum at the start and end, cycled against the LR", share_below_one)
    base_momentum: float = setting(0.85, "SGD momentum at the LR's peak", share)
    weight_decay: float = setting(5e-4, "L2 on conv and linear weights (on every parameter with "
                                  "weight_decay_all)", nonnegative_float)
    weight_decay_all: bool = setting(False, "weight decay on BatchNorm's weights and on biases too, as airbench's "
                                     "ResNet-18 baseline does; off: conv and linear weights only", switch)
    label_smoothing: float = setting(0.1, "label smoothing of the cross-entropy loss", share_below_one)
    pct_start: float = setting(0.25, "share of the steps spent warming up to max_lr", open_share)
    min_warmup_steps: int = setting(100, "the LR climbs to max_lr over no fewer batches; a shorter run peaks "
                                    "lower, in proportion", positive_int)
    anneal: str = setting("cos", "shape of the warm-up and the annealing", choices=("cos", "linear"))
    div_factor: float = setting(25.0, "initial LR = max_lr / div_factor", positive_float)
    final_div_factor: float = setting(1e4, "final LR = initial LR / final_div_factor", positive_float)
    cutout_off_epochs: int = setting(0, "the last this many epochs train without the CutOut hole (regularise early, "
                                     "fit the plain images late); 0: the hole in every epoch", count)
    ema: float = setting(0.0, "decay per step of an average of the weights that evaluation uses (e.g. 0.999; "
                         "0: the weights themselves)", share_below_one)
    bn_stats_images: int = setting(2048, "BatchNorm statistics recomputed over this many training images before "
                                   "each evaluation (0: BatchNorm's running averages)", count)
    seed: int = setting(0, "seed of the weights, the batches and the augmentation", whole_number)
    precision: str = setting("auto", "auto: bf16 on GPUs of compute capability >= 8.0, fp16 + GradScaler on 7.x "
                             "(Colab's T4), fp32 on older GPUs; on a CPU with native bf16 the faster of bf16 and "
                             "fp32, timed (fp32 on other CPUs)", choices=PRECISIONS)
    channels_last: bool = setting(True, "channels_last memory format (faster convolutions)", switch)
    compile: bool = setting(False, "torch.compile the training step (on an H100 <= 8% faster per step, 22-25 s to "
                            "compile: it does not pay in 20 epochs)", switch)
    on_device_data: bool | None = setting(None, "data held and augmented as whole batches on the device (1), or "
                                          "the albumentations DataLoader (0); auto: batches", optional_switch)

    def __post_init__(self):
        super().__post_init__()  # checks every setting, these included
        if self.base_momentum > self.max_momentum:
            raise ValueError(f"base_momentum ({self.base_momentum}) must not exceed max_momentum "
                             f"({self.max_momentum}): the momentum cycles from max down to base and back")

    def augmentation(self) -> Augmentation:
        """The training augmentation this config asks for (in its first `hole_epochs` epochs)."""
        return Augmentation(**{f.name: getattr(self, f.name) for f in fields(Augmentation)})

    @property
    def hole_epochs(self) -> int:
        """How many epochs, from the first, train with the CutOut hole (where `cutout` asks for one)."""
        return max(self.epochs - self.cutout_off_epochs, 0)
