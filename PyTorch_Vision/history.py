"""The record of a run: per-epoch metrics (`History`), saved as history.json, its tables in Markdown, and how
training shows itself as it goes: a bar per epoch (a widget in a notebook that can show one), a line per epoch."""
from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import sys
from dataclasses import asdict, dataclass, field

from tqdm import tqdm

from .utils import atomic_write, markdown_table

PROGRESS = ("bar", "epoch", "none")  # how training shows itself: a bar and a line per epoch, the line, nothing

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
                ("training time, all epochs (summed across resumes)", f"{total / 60:.1f} min")]


def results_markdown(history: History, epochs: bool = True) -> str:
    """A run's results as Markdown: the headline figures (the README's results section), then, with `epochs`, one
    row per epoch (docs/RUN.md's)."""
    headline = markdown_table(("", ""), history.headline())
    return headline + "\n\n" + history.table() if epochs else headline


def in_notebook() -> bool:
    """True inside a Jupyter kernel (Jupyter, Colab, nbclient), where output can hold widgets."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    return any(cls.__name__ == "ZMQInteractiveShell" for cls in type(shell).__mro__)


def progress_bar(total: int, desc: str):
    """A tqdm bar that disappears when closed: a widget in a notebook whose kernel has ipywidgets, plain text
    elsewhere (tqdm.auto would warn in red instead when a notebook lacks ipywidgets)."""
    if in_notebook() and importlib.util.find_spec("ipywidgets") is not None:
        from tqdm.notebook import tqdm as notebook_tqdm
        return notebook_tqdm(total=total, desc=desc, leave=False)
    return tqdm(total=total, desc=desc, leave=False, file=sys.stdout, dynamic_ncols=True)


def epoch_line(history, i: int, epochs: int) -> str:
    """Epoch `i` of a History as one line: losses, accuracies, LR, seconds (and fp16 steps skipped, if any)."""
    return (f"epoch {history.epoch[i]:2d}/{epochs}  train loss {history.train_loss[i]:.4f} "
            f"acc {history.train_acc[i]:5.2f}%  test loss {history.test_loss[i]:.4f} acc {history.test_acc[i]:5.2f}%  "
            f"lr {history.lr[i]:.4f}  {history.epoch_seconds[i]:.1f} s"
            + (f"  ({history.skipped_steps[i]} fp16 steps skipped)" if history.skipped_steps[i] else ""))


class EpochLog:
    """fit's output, as `progress` asks: "bar" (a bar per epoch and a line per epoch), "epoch" (the line only) or
    "none"."""

    def __init__(self, progress: str, epochs: int):
        if progress not in PROGRESS:
            raise ValueError(f"progress must be one of {', '.join(PROGRESS)}, got {progress!r}")
        self.display, self.epochs = progress, epochs

    def write(self, text: str) -> None:
        if self.display != "none":
            tqdm.write(text, file=sys.stdout)

    def epoch(self, history, i: int = -1) -> None:
        self.write(epoch_line(history, i, self.epochs))

    @contextlib.contextmanager
    def bar(self, epoch: int, total: int):
        """The epoch's bar (None without bars), closed when the block ends."""
        bar = progress_bar(total, f"epoch {epoch}/{self.epochs}") if self.display == "bar" else None
        try:
            yield bar
        finally:
            if bar is not None:
                bar.close()
