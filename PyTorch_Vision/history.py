"""The record of a run: per-epoch metrics (`History`), saved as history.json, and its tables in Markdown."""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field

from .files import atomic_write
from .utils import markdown_table

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
    run: dict = field(default_factory=dict)  # what produced it: configuration, data, device, precision

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
        return cls(**{k: list(d[k]) for k in HISTORY_KEYS}, skipped_steps=skipped, run=dict(d.get("run", {})))

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

    def headline(self) -> list[tuple[str, str]]:
        """The headline figures as (what, value) rows: final and best test accuracy, time per epoch and in all."""
        if not len(self):
            raise ValueError("an empty history has no results: train at least one epoch")
        best = max(range(len(self)), key=self.test_acc.__getitem__)
        total = sum(self.epoch_seconds)
        return [(f"final test accuracy (epoch {self.epoch[-1]})", f"**{self.test_acc[-1]:.2f}%**"),
                ("best test accuracy", f"{self.test_acc[best]:.2f}% (epoch {self.epoch[best]})"),
                ("mean time per epoch (train + test)", f"{total / len(self):.1f} s"),
                ("total training time", f"{total / 60:.1f} min")]


def results_markdown(history: History, epochs: bool = True) -> str:
    """A run's results as Markdown: the headline figures (the README's results section), then, with `epochs`, one
    row per epoch (docs/RUN.md's)."""
    headline = markdown_table(("", ""), history.headline())
    return headline + "\n\n" + history.table() if epochs else headline
