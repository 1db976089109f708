"""What training shows as it goes: a bar per epoch (a widget in a notebook that can show one), a line per epoch,
and the lines that say how a run starts or resumes."""
from __future__ import annotations

import contextlib
import importlib.util
import sys

from tqdm import tqdm

DISPLAYS = ("bar", "epoch", "none")  # how training shows itself: a bar and a line per epoch, the line, nothing


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
    """fit's output, as `display` asks: "bar" (a bar per epoch and a line per epoch), "epoch" (the line only) or
    "none"."""

    def __init__(self, display: str, epochs: int):
        if display not in DISPLAYS:
            raise ValueError(f"progress must be one of {', '.join(DISPLAYS)}, got {display!r}")
        self.display, self.epochs = display, epochs

    def write(self, text: str) -> None:
        if self.display != "none":
            tqdm.write(text, file=sys.stdout)

    def epoch(self, history, i: int = -1) -> None:
        self.write(epoch_line(history, i, self.epochs))

    @contextlib.contextmanager
    def bar(self, epoch: int, total: int, done: int = 0):
        """The epoch's bar, from `done` batches on (None without bars); closed when the block ends."""
        bar = progress_bar(total, f"epoch {epoch}/{self.epochs}") if self.display == "bar" else None
        if bar is not None:
            bar.update(done)
        try:
            yield bar
        finally:
            if bar is not None:
                bar.close()
